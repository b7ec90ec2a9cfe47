/* engine.h: library-internal accessors of an engine (CLI, bench, validate, tests). */
#ifndef KILN_ENGINE_ENGINE_H
#define KILN_ENGINE_ENGINE_H
#include "kiln.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

const kiln_model *kiln_engine_model(const kiln_engine *e);
const kiln_tokenizer *kiln_engine_tokenizer(const kiln_engine *e);



/* Logits of every prompt position, out[n][vocab]: the prompt runs through the backend one
 * token per step on a private sequence (its blocks are freed afterwards). For tests and
 * `kiln logits`; the engine must have no running requests. */
int kiln_engine_prompt_logits(kiln_engine *e, const int32_t *ids, int n, float *out, kiln_error *err);
#endif
