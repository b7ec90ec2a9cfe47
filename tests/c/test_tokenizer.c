/* kiln-layer: tokenizer (links only this layer and those below it) */
/* test_tokenizer.c: tokenizers against oracles nobody here wrote.
 *   - tinystories-656K tokenizer.json: HF goldens (reference/tinystories_tokenizer_golden.json)
 *     and the transformers prompt ids + greedy text of reference/tinystories_reference.json;
 *   - stories260K tok512.bin: decode of the published greedy sample's ids equals its text;
 *   - llama2_tokenizer.bin: ids SentencePiece gives for a few strings;
 *   - the streaming detokenizer equals one-shot decode, holds back partial UTF-8, and turns
 *     bytes that never complete into U+FFFD;
 *   - invalid UTF-8 input: defined result, no crash.
 * Missing fixtures skip (exit 77) with the reason. */
#include <jansson.h>
#include "test.h"
#include "tokenizer/detok.h"
#include "tokenizer/tokenizer.h"
#include "util/alloc.h"

static int32_t *json_ids(json_t *arr, int *n) {
    *n = (int)json_array_size(arr);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(*n + 1));
    for (int i = 0; i < *n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(arr, (size_t)i));
    return ids;
}
static int ids_eq(const int32_t *a, int na, const int32_t *b, int nb) {
    return na == nb && (na == 0 || memcmp(a, b, sizeof(int32_t) * (size_t)na) == 0);
}
static void print_ids(const char *what, const int32_t *a, int n) {
    fprintf(stderr, "  %s:", what);
    for (int i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", a[i]);
    fprintf(stderr, "%s\n", n > 40 ? " ..." : "");
}

/* stream ids through the detokenizer; result malloc'd */
static char *stream(const kiln_tokenizer *t, const int32_t *ids, int n, int skip, size_t *len) {
    kiln_detok d;
    kiln_error err = {0};
    kiln_detok_init(&d, t, skip);
    size_t cap = 1024, l = 0;
    char *o = malloc(cap);
    for (int i = 0; i <= n; i++) {
        const char *s;
        size_t sl;
        int rc = i < n ? kiln_detok_push(&d, ids[i], &s, &sl, &err) : kiln_detok_flush(&d, &s, &sl, &err);
        if (rc) {
            fprintf(stderr, "detok error: %s\n", err.msg);
            sl = 0;
        }
        while (l + sl + 1 > cap) o = realloc(o, cap *= 2);
        memcpy(o + l, s, sl);
        l += sl;
    }
    o[l] = 0;
    kiln_detok_free(&d);
    *len = l;
    return o;
}

static void check_stream_eq_decode(const kiln_tokenizer *t, const int32_t *ids, int n, const char *what) {
    for (int skip = 0; skip <= 1; skip++) {
        char *one;
        size_t ol, sl;
        kiln_error err = {0};
        int rc = kiln_tokenizer_decode(t, ids, n, skip, &one, &ol, &err);
        KT_CHECK(rc == 0, "%s: decode: %s", what, err.msg);
        if (rc) continue;
        char *st = stream(t, ids, n, skip, &sl);
        KT_CHECK(sl == ol && memcmp(st, one, ol) == 0, "%s (skip_special=%d): stream \"%s\" != decode \"%s\"",
                 what, skip, st, one);
        free(st);
        kiln_free(one);
    }
}

static void test_tinystories(void) {
    const char *dir = kt_shared("models/tinystories-656K");
    const char *gpath = kt_shared("models/tinystories-656K/reference/tinystories_tokenizer_golden.json");
    const char *rpath = kt_shared("models/tinystories-656K/reference/tinystories_reference.json");
    if (!kt_exists(gpath) || !kt_exists(rpath)) KT_SKIP("tinystories fixtures missing under %s", dir);
    kiln_tokenizer *t;
    kiln_error err = {0};
    int rc = kiln_tokenizer_load(&t, dir, &err);
    KT_CHECK(rc == 0, "load %s: %s", dir, err.msg);
    if (rc) return;
    KT_CHECK(kiln_tokenizer_kind(t) == KILN_TOK_KIND_HF, "kind");
    KT_CHECK(kiln_tokenizer_bos(t) == 1 && kiln_tokenizer_eos(t) == 2, "bos %d eos %d", kiln_tokenizer_bos(t),
             kiln_tokenizer_eos(t));
    json_error_t je;
    json_t *g = json_load_file(gpath, 0, &je), *r = json_load_file(rpath, 0, &je);
    KT_CHECK(g && r, "golden JSON parse");
    size_t i;
    json_t *c;
    int ncase = 0;
    json_array_foreach(g, i, c) {
        const char *text = json_string_value(json_object_get(c, "text"));
        int ne;
        int32_t *exp = json_ids(json_object_get(c, "ids"), &ne), *got;
        int ng;
        rc = kiln_tokenizer_encode(t, text, strlen(text), KILN_TOK_ADD_BOS | KILN_TOK_PARSE_SPECIAL, &got, &ng, &err);
        KT_CHECK(rc == 0 && ids_eq(got, ng, exp, ne), "golden %zu \"%.40s\"", i, text);
        if (rc == 0 && !ids_eq(got, ng, exp, ne)) {
            print_ids("got", got, ng);
            print_ids("expected", exp, ne);
        }
        if (rc == 0) kiln_free(got);
        free(exp);
        ncase++;
    }
    KT_CHECK(ncase >= 10, "only %d golden cases", ncase);
    json_array_foreach(json_object_get(r, "cases"), i, c) {
        const char *text = json_string_value(json_object_get(c, "text"));
        int ne, ng, ngr;
        int32_t *exp = json_ids(json_object_get(c, "prompt_ids"), &ne), *got;
        rc = kiln_tokenizer_encode(t, text, strlen(text), KILN_TOK_ADD_BOS, &got, &ng, &err);
        KT_CHECK(rc == 0 && ids_eq(got, ng, exp, ne), "reference prompt %zu \"%s\"", i, text);
        if (rc == 0) kiln_free(got);
        free(exp);
        /* transformers' decode of the greedy ids (special tokens kept) */
        int32_t *gr = json_ids(json_object_get(c, "greedy_ids"), &ngr);
        const char *gt = json_string_value(json_object_get(c, "greedy_text"));
        char *dec;
        size_t dl;
        rc = kiln_tokenizer_decode(t, gr, ngr, 0, &dec, &dl, &err);
        KT_CHECK(rc == 0 && gt && dl == strlen(gt) && memcmp(dec, gt, dl) == 0,
                 "greedy_text %zu:\n  got      \"%s\"\n  expected \"%s\"", i, rc ? "" : dec, gt ? gt : "");
        if (rc == 0) kiln_free(dec);
        check_stream_eq_decode(t, gr, ngr, "tinystories greedy");
        free(gr);
    }
    json_decref(g);
    json_decref(r);
    kiln_tokenizer_free(t);
}

static void test_stories260k(void) {
    const char *tp = kt_shared("models/stories260K/tok512.bin");
    const char *gp = kt_shared("models/stories260K/golden_greedy_stories260K.json");
    if (!kt_exists(tp) || !kt_exists(gp)) KT_SKIP("stories260K fixtures missing (%s)", tp);
    kiln_tokenizer *t;
    kiln_error err = {0};
    int rc = kiln_tokenizer_load(&t, tp, &err);
    KT_CHECK(rc == 0, "load %s: %s", tp, err.msg);
    if (rc) return;
    KT_CHECK(kiln_tokenizer_vocab_size(t) == 512, "vocab %d", kiln_tokenizer_vocab_size(t));
    json_error_t je;
    json_t *g = json_load_file(gp, 0, &je);
    int np, ng;
    int32_t *p = json_ids(json_object_get(g, "prompt_ids"), &np);
    int32_t *gen = json_ids(json_object_get(g, "generated_ids"), &ng);
    const char *text = json_string_value(json_object_get(g, "text"));
    int32_t *all = malloc(sizeof(int32_t) * (size_t)(np + ng));
    memcpy(all, p, sizeof(int32_t) * (size_t)np);
    memcpy(all + np, gen, sizeof(int32_t) * (size_t)ng);
    char *dec;
    size_t dl;
    rc = kiln_tokenizer_decode(t, all, np + ng, 1, &dec, &dl, &err);
    KT_CHECK(rc == 0 && text && dl == strlen(text) && memcmp(dec, text, dl) == 0,
             "stories260K decode:\n  got      \"%s\"\n  expected \"%s\"", rc ? "" : dec, text ? text : "");
    if (rc == 0) kiln_free(dec);
    check_stream_eq_decode(t, all, np + ng, "stories260K greedy");
    /* encoding the published text back and decoding it round-trips */
    int32_t *ids;
    int n;
    rc = kiln_tokenizer_encode(t, text, strlen(text), KILN_TOK_ADD_BOS, &ids, &n, &err);
    KT_CHECK(rc == 0 && n > 1 && ids[0] == 1, "encode");
    if (rc == 0) {
        rc = kiln_tokenizer_decode(t, ids, n, 1, &dec, &dl, &err);
        KT_CHECK(rc == 0 && dl == strlen(text) && memcmp(dec, text, dl) == 0, "round trip");
        if (rc == 0) kiln_free(dec);
        kiln_free(ids);
    }
    free(all);
    free(p);
    free(gen);
    json_decref(g);
    kiln_tokenizer_free(t);
}

static void test_llama2(void) {
    const char *tp = kt_shared("models/stories260K/llama2_tokenizer.bin");
    if (!kt_exists(tp)) KT_SKIP("%s missing", tp);
    kiln_tokenizer *t;
    kiln_error err = {0};
    int rc = kiln_tokenizer_load(&t, tp, &err);
    KT_CHECK(rc == 0, "load %s: %s", tp, err.msg);
    if (rc) return;
    KT_CHECK(kiln_tokenizer_vocab_size(t) == 32000, "vocab %d", kiln_tokenizer_vocab_size(t));
    /* ids from sentencepiece on llama2_tokenizer.model (the Llama 2 tokenizer) */
    static const struct {
        const char *text;
        int32_t ids[16];
        int n;
    } cases[] = {
        {"Hello world", {1, 15043, 3186}, 3},
        {"Hello world héllo 日本語 😀", {1, 15043, 3186, 298, 3610, 417, 29871, 30325, 30346, 30968, 29871, 243, 162, 155, 131}, 15},
        {"", {1}, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int32_t *ids;
        int n;
        rc = kiln_tokenizer_encode(t, cases[i].text, strlen(cases[i].text), KILN_TOK_ADD_BOS, &ids, &n, &err);
        KT_CHECK(rc == 0 && ids_eq(ids, n, cases[i].ids, cases[i].n), "llama2 \"%s\"", cases[i].text);
        if (rc == 0) kiln_free(ids);
    }
    /* detok: the 4 byte tokens of U+1F600 release nothing until the last one */
    {
        kiln_detok d;
        const char *s;
        size_t sl;
        kiln_detok_init(&d, t, 1);
        int32_t emoji[4] = {0xF0 + 3, 0x9F + 3, 0x98 + 3, 0x80 + 3};
        kiln_detok_push(&d, 1, &s, &sl, &err);
        for (int i = 0; i < 3; i++) {
            rc = kiln_detok_push(&d, emoji[i], &s, &sl, &err);
            KT_CHECK(rc == 0 && sl == 0, "partial UTF-8 byte %d released %zu bytes", i, sl);
        }
        rc = kiln_detok_push(&d, emoji[3], &s, &sl, &err);
        KT_CHECK(rc == 0 && sl == 4 && memcmp(s, "\xF0\x9F\x98\x80", 4) == 0, "emoji completes");
        /* a lead byte that never completes: U+FFFD once the next token shows it cannot */
        kiln_detok_push(&d, 0xE6 + 3, &s, &sl, &err);
        KT_CHECK(sl == 0, "lead byte held");
        int32_t hello = 15043;
        rc = kiln_detok_push(&d, hello, &s, &sl, &err);
        KT_CHECK(rc == 0 && sl == 3 + 6 && memcmp(s, "\xEF\xBF\xBD Hello", 9) == 0, "FFFD then ' Hello' (%zu)", sl);
        /* held at flush */
        kiln_detok_push(&d, 0xF0 + 3, &s, &sl, &err);
        kiln_detok_push(&d, 0x9F + 3, &s, &sl, &err);
        rc = kiln_detok_flush(&d, &s, &sl, &err);
        KT_CHECK(rc == 0 && sl == 3 && memcmp(s, "\xEF\xBF\xBD", 3) == 0, "incomplete at flush -> U+FFFD");
        rc = kiln_detok_push(&d, 99999, &s, &sl, &err);
        KT_CHECK(rc == KILN_ERR_RANGE, "out-of-range id refused");
        kiln_detok_free(&d);
        /* one-shot decode agrees: a lone continuation byte and a truncated sequence */
        int32_t bad[] = {1, 0x80 + 3, 15043, 0xE6 + 3, 0x97 + 3};
        check_stream_eq_decode(t, bad, 5, "invalid byte tokens");
        char *dec;
        size_t dl;
        rc = kiln_tokenizer_decode(t, bad, 5, 1, &dec, &dl, &err);
        KT_CHECK(rc == 0 && dl == 3 + 6 + 3 && memcmp(dec, "\xEF\xBF\xBD Hello\xEF\xBF\xBD", dl) == 0,
                 "decode of invalid bytes");
        if (rc == 0) kiln_free(dec);
    }
    kiln_tokenizer_free(t);
}

static void test_invalid_utf8(void) {
    const char *paths[] = {kt_shared("models/tinystories-656K"), kt_shared("models/stories260K/tok512.bin"),
                           kt_shared("models/stories260K/llama2_tokenizer.bin")};
    static const char *inputs[] = {"\xff", "a\x80" "b", "\xe6\x97", "\xf0\x9f\x98", "\xc0\xaf", "\xed\xa0\x80",
                                   "ok\xf4\x90\x80\x80!", ""};
    for (size_t p = 0; p < 3; p++) {
        if (!kt_exists(paths[p])) continue;
        kiln_tokenizer *t;
        kiln_error err = {0};
        if (kiln_tokenizer_load(&t, paths[p], &err) != 0) {
            KT_CHECK(0, "load %s: %s", paths[p], err.msg);
            continue;
        }
        for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++) {
            int32_t *ids;
            int n;
            int rc = kiln_tokenizer_encode(t, inputs[i], strlen(inputs[i]), KILN_TOK_ADD_BOS, &ids, &n, &err);
            KT_CHECK(rc == 0, "%s: invalid input %zu: %s", paths[p], i, err.msg);
            if (rc) continue;
            char *dec;
            size_t dl;
            rc = kiln_tokenizer_decode(t, ids, n, 1, &dec, &dl, &err);
            KT_CHECK(rc == 0, "decode");
            if (rc == 0) kiln_free(dec);
            kiln_free(ids);
        }
        int32_t oob = 1 << 30;
        char *dec;
        size_t dl;
        KT_CHECK(kiln_tokenizer_decode(t, &oob, 1, 0, &dec, &dl, &err) == KILN_ERR_RANGE, "decode oob id");
        kiln_tokenizer_free(t);
    }
    kiln_tokenizer *t;
    kiln_error err = {0};
    KT_CHECK(kiln_tokenizer_load(&t, "/nonexistent/tokenizer.json", &err) != 0, "missing file fails");
    KT_CHECK(kiln_tokenizer_load(&t, "x.gguf", &err) != 0, "gguf unsupported");
}

int main(void) {
    if (!kt_exists(kt_shared("models"))) KT_SKIP("shared models folder missing: %s", kt_shared("models"));
    test_tinystories();
    test_stories260k();
    test_llama2();
    test_invalid_utf8();
    return kt_done();
}
