/* model_st.c: a safetensors file's tensors and mapping moved into a model (HF shards and the
 * Mistral-native consolidated file share this; the container is parsed by format/safetensors). */
#include <string.h>
#include "format/safetensors.h"
#include "model/loaders.h"
#include "util/alloc.h"
#include "util/error.h"

int kiln_model_add_safetensors(kiln_model *m, const char *path, kiln_error *err) {
    kiln_safetensors st;
    int rc = kiln_safetensors_open(&st, path, err);
    if (rc) return rc;
    for (int i = 0; i < st.n_tensors; i++) {
        if (kiln_model_find(m, st.tensors[i].name)) {
            rc = KILN_ERR(err, KILN_ERR_FORMAT, "%s: tensor %s is already defined by another file",
                          path, st.tensors[i].name);
            kiln_safetensors_close(&st);
            return rc;
        }
    }
    kiln_tensor *nt = kiln_realloc(m->tensors, (size_t)(m->n_tensors + st.n_tensors + 1) * sizeof *nt);
    if (!nt) {
        kiln_safetensors_close(&st);
        return KILN_ERR(err, KILN_ERR_OOM, "%s: out of memory", path);
    }
    m->tensors = nt;
    kiln_mapfile *nf = kiln_realloc(m->files, (size_t)(m->n_files + 1) * sizeof *nf);
    if (!nf) {
        kiln_safetensors_close(&st);
        return KILN_ERR(err, KILN_ERR_OOM, "%s: out of memory", path);
    }
    m->files = nf;
    memcpy(m->tensors + m->n_tensors, st.tensors, (size_t)st.n_tensors * sizeof *nt);
    m->n_tensors += st.n_tensors;
    m->files[m->n_files++] = st.map; /* ownership of the mapping moves to m */
    kiln_free(st.tensors);
    return KILN_OK;
}
