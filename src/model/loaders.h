/* loaders.h: the per-format loaders behind kiln_model_load (model.c dispatches by path).
 * Each fills an already-zeroed kiln_model (cfg, tensors, files, role pointers) or returns an
 * error naming the file and the problem; kiln_model_free releases whatever was filled. */
#ifndef KILN_MODEL_LOADERS_H
#define KILN_MODEL_LOADERS_H
#include "model/model.h"

int kiln_load_hf(kiln_model *m, const char *dir, kiln_error *err);        /* config.json + safetensors */
int kiln_load_mistral(kiln_model *m, const char *dir, kiln_error *err);   /* params.json + consolidated */
int kiln_load_llama2c(kiln_model *m, const char *path, kiln_error *err);  /* llama2.c .bin */
int kiln_load_gguf(kiln_model *m, const char *path, kiln_error *err);     /* GGUF (gguf_model.c) */
/* Open a safetensors file and move its tensors and mapping into m (appended to m->tensors and
 * m->files). Names already present in m are refused (duplicate tensor). */
int kiln_model_add_safetensors(kiln_model *m, const char *path, kiln_error *err);
/* Resolve tok_embd / lm_head / layers from tensor names after a loader filled m->tensors;
 * checks every shape against cfg. Shared by the loaders. */
int kiln_model_bind(kiln_model *m, kiln_error *err);
/* A multimodal checkpoint's language model: tensors whose names start with from are renamed to
 * start with to instead, or (to == NULL) dropped from m->tensors and counted in m->n_skipped /
 * skipped_params / skipped_what. The list ends with {NULL, NULL}. */
typedef struct kiln_prefix_map { const char *from, *to; } kiln_prefix_map;
void kiln_model_take_text(kiln_model *m, const kiln_prefix_map *map);
/* Parse a Hugging Face config.json (+ generation_config.json beside it when present) into cfg;
 * refuses what kiln cannot run (architecture, rope scaling, sliding window, biases, act). */
int kiln_hf_parse_config(kiln_config *cfg, const char *config_path, kiln_error *err);
/* Sanity of a filled config (positive sizes, heads divisible, ids within the vocabulary). */
int kiln_config_check(const kiln_config *cfg, const char *what, kiln_error *err);

/* FP8 (model/fp8.c). Parse a quantization_config (HF "fp8" or compressed-tensors; NULL or
 * JSON null: none) / params.json quantization (Mistral) into m->fp8; anything else is refused
 * naming the field and its value. */
int kiln_fp8_parse_hf(kiln_model *m, const void *json_quantization_config, const char *path, kiln_error *err);
int kiln_fp8_parse_mistral(kiln_model *m, const void *json_quantization, const char *path, kiln_error *err);
/* After a loader filled m->tensors: every F8_E4M3 tensor gets its kiln_quant (scales copied to
 * m->fp8_scales as f32, checked: shapes, finite and positive) and every layer its KV scales.
 * Called by kiln_model_bind before the roles are checked. */
int kiln_fp8_bind(kiln_model *m, kiln_error *err);
/* After the roles are bound: every layer's KV cache scales (k_scale / v_scale) when present. */
int kiln_fp8_bind_kv(kiln_model *m, kiln_error *err);
void kiln_fp8_free(kiln_model *m);

#endif
