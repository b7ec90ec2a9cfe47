/* fuzz_safetensors.c: the safetensors reader (format/safetensors.c) on arbitrary files: the
 * u64 header length, the JSON header, dtypes, shapes and data offsets. An accepted file's
 * tensors are touched at both ends (each must lie inside the mapping). */
#include "fuzz_common.h"
#include "format/safetensors.h"

int FUZZ_ENTRY(const uint8_t *data, size_t size);
int FUZZ_ENTRY(const uint8_t *data, size_t size) {
    const char *p = fz_write(fz_dir("safetensors"), "x.safetensors", data, size);
    kiln_safetensors st;
    kiln_error err = {0};
    memset(&st, 0, sizeof st);
    if (kiln_safetensors_open(&st, p, &err) == 0) {
        volatile uint8_t sink = 0;
        for (int i = 0; i < st.n_tensors; i++) {
            const kiln_tensor *t = &st.tensors[i];
            size_t nb = t->nbytes;
            if (nb) sink ^= ((const uint8_t *)t->data)[0] ^ ((const uint8_t *)t->data)[nb - 1];
        }
        (void)sink;
        kiln_safetensors_close(&st);
    }
    return 0;
}
