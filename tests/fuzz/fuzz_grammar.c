/* fuzz_grammar.c: the grammar layer on request-controlled text: GBNF, regex, choice and JSON
 * Schema compilation (src/grammar), then a matcher over a small fixed vocabulary fed the rest of
 * the input byte by byte, with a token mask at every step (the frame tables and walks).
 *
 * Input: byte 0 = kind (0 GBNF, 1 regex, 2 JSON Schema, 3 choice; mod 4); then the source up to
 * the first NUL; then the bytes to match. */
#include "fuzz_common.h"
#include "grammar/grammar.h"

int FUZZ_ENTRY(const uint8_t *data, size_t size);
int FUZZ_ENTRY(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int kind = data[0] & 3;
    const char *src = (const char *)data + 1;
    const uint8_t *nul = memchr(data + 1, 0, size - 1);
    size_t src_len = nul ? (size_t)(nul - data - 1) : size - 1;
    const uint8_t *in = nul ? nul + 1 : data + size;
    size_t in_len = nul ? size - (size_t)(nul - data) - 1 : 0;
    kiln_gram g;
    kiln_error err;
    int rc;
    if (kind == 0) rc = kiln_gram_from_gbnf(&g, src, src_len, &err);
    else if (kind == 1) rc = kiln_gram_from_regex(&g, src, src_len, &err);
    else if (kind == 3) rc = kiln_gram_from_choice(&g, src, src_len, &err);
    else {
        char *s = malloc(src_len + 1);
        if (!s) abort();
        memcpy(s, src, src_len);
        s[src_len] = 0;
        rc = kiln_gram_from_json_schema(&g, s, &err);
        free(s);
    }
    if (rc) return 0;
    static const char *const V[] = {"<s>", "{", "}", "\"", "a", "ab", "\"a", "b\"", ",", ":", " ", "1", "12", "-", "\xc3\xa9",
                                    "\xc3", "\xa9", "true", "[", "]", "\\", "null", "x", "0.5", "\n", "{\"", "\":"};
    enum { NV = sizeof V / sizeof V[0] };
    size_t lens[NV];
    uint8_t skip[NV] = {1};
    for (int i = 0; i < NV; i++) lens[i] = strlen(V[i]);
    kiln_token_trie t;
    kiln_gscratch *ws = NULL;
    kiln_gmatch *m = NULL;
    if (kiln_token_trie_build(&t, NV, V, lens, skip, &err)) abort();
    if (kiln_gscratch_create(&ws, t.max_depth, &err) || kiln_gmatch_create(&m, &g, &t, NULL, 4, &err)) {
        kiln_gscratch_free(ws);
        kiln_token_trie_free(&t);
        kiln_gram_free(&g);
        return 0;
    }
    uint32_t mask[2];
    for (size_t i = 0; i <= in_len && i < 64; i++) {
        if (kiln_gmatch_mask(m, ws, mask, &err)) break;
        if (i == in_len || kiln_gmatch_accept(m, in + i, 1, &err)) break;
        (void)kiln_gmatch_accepting(m);
    }
    kiln_gmatch_free(m);
    kiln_gscratch_free(ws);
    kiln_token_trie_free(&t);
    kiln_gram_free(&g);
    return 0;
}
