/* fuzz_hf_config.c: Hugging Face config.json (model/hf.c kiln_hf_parse_config, then the config
 * sanity check). The input's first line break, if any, splits it: the text after it becomes the
 * generation_config.json beside config.json (read by the same call). */
#include "fuzz_common.h"
#include "model/loaders.h"

int FUZZ_ENTRY(const uint8_t *data, size_t size);
int FUZZ_ENTRY(const uint8_t *data, size_t size) {
    const char *dir = fz_dir("hf_config");
    const uint8_t *nl = memchr(data, '\n', size);
    size_t n1 = nl ? (size_t)(nl - data) : size;
    const char *p = fz_write(dir, "config.json", data, n1);
    char gen[1024];
    snprintf(gen, sizeof gen, "%s/generation_config.json", dir);
    if (nl) fz_write(dir, "generation_config.json", nl + 1, size - n1 - 1);
    else unlink(gen);
    kiln_config cfg;
    kiln_error err = {0};
    memset(&cfg, 0, sizeof cfg);
    if (kiln_hf_parse_config(&cfg, p, &err) == 0) kiln_config_check(&cfg, p, &err);
    return 0;
}
