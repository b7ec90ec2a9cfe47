/* fuzz_tekken.c: Mistral tekken.json loading (tokenizer/tok_tekken.c: config, base64 vocab,
 * special tokens, the PCRE2 pre-tokenizer pattern), then encode / decode with what loaded. */
#include "fuzz_tok_exercise.h"

int FUZZ_ENTRY(const uint8_t *data, size_t size);
int FUZZ_ENTRY(const uint8_t *data, size_t size) {
    const char *p = fz_write(fz_dir("tekken"), "tekken.json", data, size);
    kiln_tokenizer *t = NULL;
    kiln_error err = {0};
    if (kiln_tokenizer_load(&t, p, &err) == 0) {
        fz_tok_exercise(t);
        kiln_tokenizer_free(t);
    }
    return 0;
}
