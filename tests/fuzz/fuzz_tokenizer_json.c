/* fuzz_tokenizer_json.c: HF tokenizer.json loading (tokenizer/tok_hf.c: model, added tokens,
 * normalizers, pre-tokenizers, post-processor, decoders), then encode / decode with what loaded.
 * The first byte picks the load option (raw or transformers' reading, which looks for a
 * tokenizer_config.json beside the file: bit 1 writes the fixed one below). */
#include "fuzz_tok_exercise.h"

int FUZZ_ENTRY(const uint8_t *data, size_t size);
int FUZZ_ENTRY(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    static const char cfg[] = "{\"tokenizer_class\":\"LlamaTokenizerFast\",\"add_bos_token\":true,"
                              "\"chat_template\":\"{{ messages }}\"}";
    const char *dir = fz_dir("tokenizer_json");
    char cp[1024];
    snprintf(cp, sizeof cp, "%s/tokenizer_config.json", dir);
    if (data[0] & 2) fz_write(dir, "tokenizer_config.json", cfg, strlen(cfg));
    else unlink(cp);
    const char *p = fz_write(dir, "tokenizer.json", data + 1, size - 1);
    kiln_tokenizer *t = NULL;
    kiln_error err = {0};
    if (kiln_tokenizer_load_ex(&t, p, (data[0] & 1) ? KILN_TOK_LOAD_RAW : 0, &err) == 0) {
        fz_tok_exercise(t);
        kiln_tokenizer_free(t);
    }
    return 0;
}
