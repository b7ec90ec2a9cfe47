/* fuzz_shard_index.c: model.safetensors.index.json (model/hf.c load_sharded) through the folder
 * loader, beside a fixed tiny config.json and two shards (a.safetensors: model.norm.weight,
 * b.safetensors: lm_head.weight). Shard names in the index are arbitrary text: only files of
 * the folder may be opened. */
#include "fuzz_model_dir.h"
#include "model/model.h"

int FUZZ_ENTRY(const uint8_t *data, size_t size);
int FUZZ_ENTRY(const uint8_t *data, size_t size) {
    static int ready;
    const char *dir = fz_dir("shard_index");
    if (!ready) {
        fz_write(dir, "config.json", FZ_TINY_CONFIG, strlen(FZ_TINY_CONFIG));
        fz_write_st(dir, "a.safetensors", "model.norm.weight");
        fz_write_st(dir, "b.safetensors", "lm_head.weight");
        fz_write_st(dir, "empty.safetensors", NULL);
        ready = 1;
    }
    fz_write(dir, "model.safetensors.index.json", data, size);
    kiln_model *m = NULL;
    kiln_error err = {0};
    if (kiln_model_load(&m, dir, &err) == 0) kiln_model_free(m);
    return 0;
}
