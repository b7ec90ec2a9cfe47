/* backend.c: backend registry and the step-descriptor check every backend runs (I2, through
 * step/step_check.c). */
#include "backend/backend.h"
#include <string.h>
#include "util/error.h"

#ifndef KILN_HAVE_CUDA
const kiln_backend_ops *kiln_backend_cuda_ops(void) { return NULL; }
#endif

int kiln_backend_check_step(const kiln_backend_config *c, int vocab, int min_rows, const kiln_step *s,
                            kiln_error *err) {
    kiln_step_limits lim = {
        .max_tokens = c->max_tokens,
        .max_seqs = c->max_seqs,
        .max_blocks_per_seq = c->max_blocks_per_seq,
        .max_model_len = c->max_model_len,
        .vocab = vocab,
        .kv = c->kv,
        .min_rows = min_rows,
        .max_logits_per_seq = c->max_logits_per_seq,
    };
    return kiln_step_check(&lim, s, err);
}

const kiln_backend_ops *kiln_backend_find(const char *name) {
    if (!name || !*name || strcmp(name, "cpu") == 0) return kiln_backend_cpu_ops();
    if (strcmp(name, "cuda") == 0) return kiln_backend_cuda_ops();
    return NULL;
}
