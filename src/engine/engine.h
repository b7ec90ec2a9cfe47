/* engine.h: library-internal accessors of an engine (CLI, bench, validate, tests). */
#ifndef KILN_ENGINE_ENGINE_H
#define KILN_ENGINE_ENGINE_H
#include "kiln.h"
#include "step/step.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

const kiln_model *kiln_engine_model(const kiln_engine *e);
const kiln_tokenizer *kiln_engine_tokenizer(const kiln_engine *e);

/* The engine's sizing, for bench/validate reports (I2: backend_kv_bytes == kv_layout_bytes). */
typedef struct kiln_engine_info {
    const char *backend;          /* ops name */
    int strict;                   /* KILN_STRICT=1 was in effect at open */
    kiln_kv_layout kv_layout;     /* the pool layout the engine gave the backend */
    size_t kv_layout_bytes;       /* kiln_kv_elems(kv_layout) * kv_layout.elem_bytes */
    size_t backend_kv_bytes;      /* what the backend says it holds for KV (memory()) */
    size_t backend_scratch_bytes;
    int max_batch_tokens, max_seqs, max_model_len, block_size;
    int prefix_cache;
    const char *weight_dtype;     /* the layers' matrices (kiln_model_weight_dtype: "bf16", "f8_e4m3", ...) */
    char quantization[200];       /* the FP8 scheme (kiln_model_fp8_describe), "" when none */
} kiln_engine_info;
void kiln_engine_get_info(const kiln_engine *e, kiln_engine_info *info);



/* Logits of every prompt position, out[n][vocab]: the prompt runs through the backend one
 * token per step on a private sequence (its blocks are freed afterwards). For tests and
 * `kiln logits`; the engine must have no running requests. */
int kiln_engine_prompt_logits(kiln_engine *e, const int32_t *ids, int n, float *out, kiln_error *err);
#endif
