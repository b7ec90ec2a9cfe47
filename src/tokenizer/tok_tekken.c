/* tok_tekken.c: Mistral tekken.json (tiktoken-style byte-level BPE by rank).
 *
 * File: {"config": {pattern, default_vocab_size, default_num_special_tokens, version, ...},
 *        "vocab": [{rank, token_bytes (base64), token_str}, ...], "special_tokens": [...]?}.
 * As mistral-common's Tekkenizer: special tokens take ids [0, num_special) (the file's list, or
 * the fixed list mistral-common falls back to when absent, padded with "<SPECIAL_i>"); only
 * vocab ranks below default_vocab_size - num_special are kept, and id = rank + num_special.
 *
 * Encoding = tiktoken's: the text (made valid UTF-8 first) is cut by the PCRE2 pattern
 * (UTF + UCP, JIT); each matched piece is one id when its bytes are a token, else its bytes are
 * merged pairwise by lowest rank (leftmost on ties). Special-token text is plain text unless
 * KILN_TOK_PARSE_SPECIAL. KILN_TOK_ADD_BOS prepends <s>. Decoding: token bytes; specials give
 * their text (or nothing with skip_special).
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "tokenizer/tok_hf.h" /* hf_regex_compile */
#include "util/alloc.h"
#include "util/error.h"

#define OOM() KILN_ERR(err, KILN_ERR_OOM, "tokenizer: out of memory")

static const char *DEFAULT_SPECIALS[] = {
    "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]",
    "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]"};

typedef struct tekken {
    pcre2_code *re;
    int n_special;
} tekken;

static void tekken_free(void *p) {
    tekken *k = p;
    if (!k) return;
    if (k->re) pcre2_code_free(k->re);
    kiln_free(k);
}

static int b64val(int c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}
/* base64 -> bytes in out (cap >= 3/4 len); returns the length or -1 */
static int b64_decode(const char *s, size_t n, unsigned char *out) {
    int len = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '=') break;
        int v = b64val((unsigned char)s[i]);
        if (v < 0) return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[len++] = (unsigned char)(acc >> bits);
        }
    }
    return len;
}

/* tiktoken's byte_pair_merge for short pieces, on the stack: boundaries pos[0..k], rank[i] =
 * id of bytes pos[i]..pos[i+2] (ids are ordered as ranks) or INT32_MAX; merge the lowest,
 * leftmost on ties, and refresh its two neighbours. O(n^2) but allocation-free. */
#define SHORT_PIECE 256
static int32_t span_id(const kiln_tokenizer *t, const char *s, const int *pos, int k, int i) {
    if (i + 2 > k) return INT32_MAX;
    int32_t id = tok_strmap_get(&t->vocab, s + pos[i], (size_t)(pos[i + 2] - pos[i]));
    return id < 0 ? INT32_MAX : id;
}
static int merge_short(const kiln_tokenizer *t, const char *s, size_t n, tok_ivec *out, kiln_error *err) {
    int pos[SHORT_PIECE + 1];
    int32_t rank[SHORT_PIECE];
    int k = (int)n; /* number of parts */
    for (int i = 0; i <= k; i++) pos[i] = i;
    for (int i = 0; i + 1 < k; i++) rank[i] = span_id(t, s, pos, k, i);
    while (k > 1) {
        int best = -1;
        int32_t br = INT32_MAX;
        for (int i = 0; i + 1 < k; i++)
            if (rank[i] < br) {
                br = rank[i];
                best = i;
            }
        if (best < 0) break;
        for (int i = best + 1; i < k; i++) pos[i] = pos[i + 1]; /* drop boundary best+1 */
        for (int i = best + 1; i + 1 < k; i++) rank[i] = rank[i + 1];
        k--;
        if (best + 1 < k) rank[best] = span_id(t, s, pos, k, best);
        if (best > 0) rank[best - 1] = span_id(t, s, pos, k, best - 1);
    }
    for (int i = 0; i < k; i++) {
        int32_t id = tok_strmap_get(&t->vocab, s + pos[i], (size_t)(pos[i + 1] - pos[i]));
        if (id < 0) return KILN_ERR(err, KILN_ERR_FORMAT, "tekken: piece without a token");
        if (tok_ivec_push(out, id)) return OOM();
    }
    return KILN_OK;
}

static int encode_piece(const kiln_tokenizer *t, const char *s, size_t n, tok_ivec *out, kiln_error *err) {
    int32_t id = tok_strmap_get(&t->vocab, s, n);
    if (id >= 0) return tok_ivec_push(out, id) ? OOM() : KILN_OK;
    if (n <= SHORT_PIECE) return merge_short(t, s, n, out, err);
    int start = out->n;
    for (size_t i = 0; i < n; i++) {
        int32_t b = tok_strmap_get(&t->vocab, s + i, 1);
        if (b < 0) return KILN_ERR(err, KILN_ERR_FORMAT, "tekken: byte 0x%02x has no token", (unsigned char)s[i]);
        if (tok_ivec_push(out, b)) return OOM();
    }
    return tok_bpe_concat_rank_merge(t, &t->vocab, out, start, err);
}

static int encode_text(const kiln_tokenizer *t, const char *s, size_t n, tok_ivec *out, kiln_error *err) {
    const tekken *k = t->impl;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(k->re, NULL);
    if (!md) return OOM();
    size_t pos = 0;
    int rc = KILN_OK;
    while (pos < n && rc == KILN_OK) {
        int r = pcre2_match(k->re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
        if (r == PCRE2_ERROR_NOMATCH) break;
        if (r < 0) {
            rc = KILN_ERR(err, KILN_ERR_INTERNAL, "tekken: regex match failed (%d)", r);
            break;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        if (ov[1] == ov[0]) { /* empty match: step one character */
            pos = ov[0] + 1;
            while (pos < n && ((unsigned char)s[pos] & 0xC0) == 0x80) pos++;
            continue;
        }
        rc = encode_piece(t, s + ov[0], ov[1] - ov[0], out, err);
        pos = ov[1];
    }
    pcre2_match_data_free(md);
    return rc;
}

static int tekken_encode(const kiln_tokenizer *t, const char *text, size_t len, int flags, tok_ivec *out,
                         kiln_error *err) {
    const tekken *k = t->impl;
    char *s;
    size_t n;
    if (tok_utf8_sanitize(text, len, &s, &n)) return OOM();
    int rc = KILN_OK;
    if ((flags & KILN_TOK_ADD_BOS) && t->bos >= 0 && tok_ivec_push(out, t->bos)) rc = OOM();
    size_t last = 0, i = 0;
    if (flags & KILN_TOK_PARSE_SPECIAL) {
        while (i < n && rc == KILN_OK) {
            int best = -1;
            size_t bl = 0;
            if (s[i] == '<' || s[i] == '[') /* every special token starts with one of these */
                for (int id = 0; id < k->n_special; id++) {
                    size_t l;
                    const char *sp = tok_str(t, id, &l);
                    if (l > bl && l <= n - i && sp[0] == s[i] && memcmp(sp, s + i, l) == 0) {
                        best = id;
                        bl = l;
                    }
                }
            if (best < 0) {
                i++;
                continue;
            }
            rc = encode_text(t, s + last, i - last, out, err);
            if (rc == KILN_OK && tok_ivec_push(out, best)) rc = OOM();
            i = last = i + bl;
        }
    }
    if (rc == KILN_OK) rc = encode_text(t, s + last, n - last, out, err);
    kiln_free(s);
    return rc;
}

int tok_load_tekken(kiln_tokenizer *t, const char *path, kiln_error *err) {
    json_error_t je;
    json_t *root = json_load_file(path, JSON_ALLOW_NUL, &je); /* token_str "\u0000" */
    if (!root) return KILN_ERR(err, KILN_ERR_FORMAT, "%s: JSON error at line %d: %s", path, je.line, je.text);
    int rc = KILN_OK;
    json_t *cfg = json_object_get(root, "config"), *vocab = json_object_get(root, "vocab");
    json_t *specials = json_object_get(root, "special_tokens");
    const char *pat = json_string_value(json_object_get(cfg, "pattern"));
    json_int_t vsize = json_integer_value(json_object_get(cfg, "default_vocab_size"));
    json_int_t nspec = json_integer_value(json_object_get(cfg, "default_num_special_tokens"));
    tekken *k = kiln_calloc(1, sizeof *k);
    unsigned char *buf = NULL;
    if (!k) {
        rc = OOM();
        goto done;
    }
    t->impl = k;
    t->impl_free = tekken_free;
    if (!pat || !json_is_array(vocab) || vsize <= 0 || nspec <= 0 || nspec >= vsize || vsize > (1 << 24)) {
        rc = KILN_ERR(err, KILN_ERR_FORMAT,
                      "%s: not a tekken file (needs config.pattern, default_vocab_size, "
                      "default_num_special_tokens and a vocab list)", path);
        goto done;
    }
    json_int_t inner = vsize - nspec;
    if ((json_int_t)json_array_size(vocab) < inner) {
        rc = KILN_ERR(err, KILN_ERR_FORMAT, "%s: vocab has %zu entries, fewer than %lld", path,
                      json_array_size(vocab), (long long)inner);
        goto done;
    }
    k->n_special = (int)nspec;
    if ((rc = tok_alloc_tables(t, (int)vsize, err))) goto done;
    if (tok_strmap_init(&t->vocab, (uint32_t)inner)) {
        rc = OOM();
        goto done;
    }
    /* special tokens */
    int n_listed = 0;
    if (json_is_array(specials)) {
        size_t i;
        json_t *v;
        json_array_foreach(specials, i, v) {
            json_int_t r = json_integer_value(json_object_get(v, "rank"));
            const char *s = json_string_value(json_object_get(v, "token_str"));
            if (!s || r != (json_int_t)i || r >= nspec) {
                rc = KILN_ERR(err, KILN_ERR_FORMAT, "%s: special token %zu is malformed", path, i);
                goto done;
            }
            if ((rc = tok_set_token(t, (int)i, s, strlen(s), NULL, 0, err))) goto done;
            n_listed++;
        }
    } else {
        for (int i = 0; i < 20 && i < nspec; i++, n_listed++)
            if ((rc = tok_set_token(t, i, DEFAULT_SPECIALS[i], strlen(DEFAULT_SPECIALS[i]), NULL, 0, err)))
                goto done;
    }
    for (int i = n_listed; i < nspec; i++) {
        char s[32];
        int l = snprintf(s, sizeof s, "<SPECIAL_%d>", i);
        if ((rc = tok_set_token(t, i, s, (size_t)l, NULL, 0, err))) goto done;
    }
    for (int i = 0; i < nspec; i++) t->special[i] = 1;
    /* the kept vocabulary */
    buf = kiln_malloc(1 << 16);
    if (!buf) {
        rc = OOM();
        goto done;
    }
    for (json_int_t r = 0; r < inner; r++) {
        json_t *v = json_array_get(vocab, (size_t)r);
        json_t *b64 = json_object_get(v, "token_bytes");
        size_t bl = json_string_length(b64);
        int n;
        if (json_integer_value(json_object_get(v, "rank")) != r || !json_is_string(b64) || bl > 80000 ||
            (n = b64_decode(json_string_value(b64), bl, buf)) < 0) {
            rc = KILN_ERR(err, KILN_ERR_FORMAT, "%s: vocab entry %lld is malformed", path, (long long)r);
            goto done;
        }
        int id = (int)(r + nspec);
        if ((rc = tok_set_token(t, id, (const char *)buf, (size_t)n, NULL, 0, err))) goto done;
        if (tok_strmap_get(&t->vocab, (const char *)buf, (size_t)n) < 0 &&
            tok_strmap_put(&t->vocab, (const char *)buf, (size_t)n, id)) {
            rc = OOM();
            goto done;
        }
    }
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        if (tok_strmap_get(&t->vocab, &c, 1) < 0) {
            rc = KILN_ERR(err, KILN_ERR_FORMAT, "%s: byte 0x%02x has no token", path, b);
            goto done;
        }
    }
    k->re = hf_regex_compile(pat, strlen(pat), path, err);
    if (!k->re) {
        rc = err->code;
        goto done;
    }
    t->kind = KILN_TOK_KIND_TEKKEN;
    const char *ver = json_string_value(json_object_get(cfg, "version"));
    snprintf(t->version, sizeof t->version, "%s", ver ? ver : "");
    t->encode = tekken_encode;
    t->strip_mode = TOK_STRIP_NONE;
    t->bos = 1;
    t->eos = 2;
    for (int i = 0; i < nspec; i++) { /* by name when the list says otherwise */
        size_t l;
        const char *s = tok_str(t, i, &l);
        if (l == 3 && !memcmp(s, "<s>", 3)) t->bos = i;
        if (l == 4 && !memcmp(s, "</s>", 4)) t->eos = i;
    }
done:
    kiln_free(buf);
    json_decref(root);
    return rc;
}
