/* fuzz_tok_exercise.h: what the tokenizer targets do with a tokenizer they got: encode a few
 * fixed texts (and optionally arbitrary bytes) with every flag combination, decode the ids
 * back whole and through the streaming detokenizer, and look at every piece of a small vocab. */
#ifndef KILN_FUZZ_TOK_EXERCISE_H
#define KILN_FUZZ_TOK_EXERCISE_H
#include "fuzz_common.h"
#include "tokenizer/detok.h"

static inline void fz_decode_ids(const kiln_tokenizer *t, const int32_t *ids, int n) {
    kiln_error err = {0};
    for (int skip = 0; skip < 2; skip++) {
        char *text = NULL;
        size_t len = 0;
        if (kiln_tokenizer_decode(t, ids, n, skip, &text, &len, &err) == 0) kiln_free(text);
        kiln_detok d;
        kiln_detok_init(&d, t, skip);
        const char *out;
        size_t ol;
        for (int i = 0; i < n; i++) kiln_detok_push(&d, ids[i], &out, &ol, &err);
        kiln_detok_flush(&d, &out, &ol, &err);
        kiln_detok_free(&d);
    }
}

static inline void fz_encode(const kiln_tokenizer *t, const char *text, size_t len, int flags) {
    int32_t *ids = NULL;
    int n = 0;
    kiln_error err = {0};
    if (kiln_tokenizer_encode(t, text, len, flags, &ids, &n, &err) == 0) {
        int vs = kiln_tokenizer_vocab_size(t);
        for (int i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= vs) {
                fprintf(stderr, "kiln fuzz: encode gave id %d outside the vocabulary (%d)\n", ids[i], vs);
                abort();
            }
        fz_decode_ids(t, ids, n);
        kiln_free(ids);
    }
}

static inline void fz_tok_exercise(const kiln_tokenizer *t) {
    static const char *texts[] = {"Hello world", " the ab\n\n  x", "caf\xc3\xa9 \xe2\x96\x81 <s>[INST]</s> 12345",
                                  "\xff\xfe\xc3", ""};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        for (int f = 0; f < 4; f++) fz_encode(t, texts[i], strlen(texts[i]), f);
    volatile size_t sink = 0;
    int vs = kiln_tokenizer_vocab_size(t);
    for (int32_t id = -1; id <= vs && id < 1024; id++) {
        size_t len = 0;
        const char *p = kiln_tok_piece(t, id, &len);
        if (p && len) sink += (unsigned char)p[len - 1];
        sink += (size_t)kiln_tok_is_special(t, id);
    }
    int n = 0;
    sink += (size_t)kiln_tok_strip_rule(t, &n) + (size_t)kiln_tok_strips_leading_space(t);
    sink += (size_t)kiln_tokenizer_bos(t) + (size_t)kiln_tokenizer_eos(t);
    sink += (size_t)kiln_tokenizer_token_id(t, "</s>");
    const char *tpl = kiln_tokenizer_chat_template(t);
    if (tpl) sink += strlen(tpl);
    sink += strlen(kiln_tokenizer_version(t));
    (void)sink;
}
#endif
