/* fuzz_params_json.c: Mistral-native params.json through the folder loader (kiln_model_load:
 * model/mistral.c), beside a fixed consolidated.safetensors that holds one small tensor (the
 * binding step then refuses the folder, after the whole params parse and config check). */
#include "fuzz_model_dir.h"
#include "model/model.h"

int FUZZ_ENTRY(const uint8_t *data, size_t size);
int FUZZ_ENTRY(const uint8_t *data, size_t size) {
    static int ready;
    const char *dir = fz_dir("params_json");
    if (!ready) {
        fz_write_st(dir, "consolidated.safetensors", "norm.weight");
        ready = 1;
    }
    fz_write(dir, "params.json", data, size);
    kiln_model *m = NULL;
    kiln_error err = {0};
    if (kiln_model_load(&m, dir, &err) == 0) kiln_model_free(m);
    return 0;
}
