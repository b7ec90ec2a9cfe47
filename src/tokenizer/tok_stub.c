#include "tokenizer/tok_internal.h"
#include "util/error.h"
int tok_load_hf(kiln_tokenizer *t, const char *path, const char *config_path, kiln_error *err) { return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "x"); }
int tok_load_tekken(kiln_tokenizer *t, const char *path, kiln_error *err) { return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "x"); }
