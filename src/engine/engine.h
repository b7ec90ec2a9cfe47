/* engine.h: library-internal accessors of an engine (CLI, bench, validate, tests). */
#ifndef KILN_ENGINE_ENGINE_H
#define KILN_ENGINE_ENGINE_H
#include "kiln.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

const kiln_model *kiln_engine_model(const kiln_engine *e);
const kiln_tokenizer *kiln_engine_tokenizer(const kiln_engine *e);

#endif
