/* gguf_model.c: kiln_model from a GGUF file (placeholder until the GGUF work lands). */
#include "model/loaders.h"
#include "util/error.h"
int kiln_load_gguf(kiln_model *m, const char *path, kiln_error *err) {
    (void)m;
    return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: GGUF models are not supported yet", path);
}
