/* tok_tekken.c: Mistral tekken.json (tiktoken-style byte-level BPE by rank).
 *
 * File: {"config": {pattern, default_vocab_size, default_num_special_tokens, version, ...},
 *        "vocab": [{rank, token_bytes (base64), token_str}, ...], "special_tokens": [...]?}.
 * As mistral-common's Tekkenizer: special tokens take ids [0, num_special) (the file's list, or
 * the fixed list mistral-common falls back to when absent, padded with "<SPECIAL_i>"); only
 * vocab ranks below default_vocab_size - num_special are kept, and id = rank + num_special.
 *
 * Encoding = tiktoken's: the text (made valid UTF-8 first) is cut into pieces by the file's
 * pattern. The pattern of every published file (kiln_tekken_pattern) is matched by hand in
 * tok_tekken_split.c with character classes generated from Unicode 16.0 (unicode_tables.c, by
 * scripts/gen_unicode_tables.py from the pinned PyPI unicodedata2), the Unicode version of the
 * reference's regex engine; Debian 12's PCRE2 has Unicode 14 and cut characters added in 15.0
 * to 16.0 differently. Any other pattern is compiled with PCRE2 (UTF + UCP, JIT), with a
 * warning that its classes follow the system's PCRE2. Each matched piece is one id when its bytes are a token, else its bytes are
 * merged pairwise by lowest rank (leftmost on ties). Merging works on token ids only: every part
 * of a piece is a token, so "is the concatenation of parts a and b a token" is a lookup of the
 * pair (a, b) in a table built at load from every two-token split of every token (no string
 * hashing while merging). Pieces up to 128 bytes merge in a stack array (tiktoken's linear
 * scan), longer ones through a binary heap in per-call scratch. Everything built at load is
 * read-only afterwards, and each call owns its scratch and PCRE2 match data, so one tokenizer
 * may encode from several threads at once. Special-token text is plain text unless
 * KILN_TOK_PARSE_SPECIAL. KILN_TOK_ADD_BOS prepends <s>. Decoding: token bytes; specials give
 * their text (or nothing with skip_special).
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "tokenizer/tok_hf.h" /* hf_regex_compile */
#include "tokenizer/tok_tekken_split.h"
#include "util/alloc.h"
#include "util/error.h"
#include "util/json.h"
#include "util/log.h"

#define OOM() KILN_ERR(err, KILN_ERR_OOM, "tokenizer: out of memory")

static const char *DEFAULT_SPECIALS[] = {
    "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]",
    "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]"};

typedef struct tekken {
    pcre2_code *re; /* NULL: the known pattern, cut by kiln_tekken_split_next */
    int n_special;
    int32_t byte_id[256]; /* id of each one-byte token */
    /* (a, b) -> id of the token spelled str(a) str(b), for every such pair of tokens: open
     * addressing over [1 << pair_bits] slots, linear probing from the key's Fibonacci hash.
     * A slot packs key and value in 64 bits: (a + 1) << 42 | b << 21 | id (0 = empty), so ids
     * must be < 2^21 - 1 (checked at load). */
    uint64_t *pair;
    int pair_bits;
} tekken;

static void tekken_free(void *p) {
    tekken *k = p;
    if (!k) return;
    if (k->re) pcre2_code_free(k->re);
    kiln_free(k->pair);
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

/* ---- the pair table ---- */
#define PAIR_ID_BITS 21
#define PAIR_MAX_VOCAB ((1 << PAIR_ID_BITS) - 1)
static inline uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t)(a + 1) << PAIR_ID_BITS | (uint64_t)b; }
static inline uint32_t pair_home(const tekken *k, uint64_t key) {
    return (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> (64 - k->pair_bits));
}
/* id of the token str(a) str(b), or INT32_MAX when there is none */
static inline int32_t pair_get(const tekken *k, int32_t a, int32_t b) {
    uint64_t key = pair_key(a, b);
    uint32_t mask = (1u << k->pair_bits) - 1;
    for (uint32_t i = pair_home(k, key);; i = (i + 1) & mask) {
        uint64_t e = k->pair[i];
        if (e >> PAIR_ID_BITS == key) return (int32_t)(e & PAIR_MAX_VOCAB);
        if (!e) return INT32_MAX;
    }
}
/* Every split of every token into two tokens: (left, right) -> token. A part of a piece being
 * merged is always a token (its ids are the vocab map's), so looking up the pair gives what
 * tiktoken's lookup of the concatenated bytes gives. */
static int build_pairs(kiln_tokenizer *t, tekken *k, kiln_error *err) {
    int32_t *tmp = NULL; /* (a, b, id) triples */
    size_t n = 0, cap = 0;
    for (int id = k->n_special; id < t->n_vocab; id++) {
        size_t len;
        const char *s = tok_str(t, id, &len);
        if (len < 2 || tok_strmap_get(&t->vocab, s, len) != id) continue; /* duplicate bytes */
        for (size_t c = 1; c < len; c++) {
            int32_t a = tok_strmap_get(&t->vocab, s, c), b;
            if (a < 0 || (b = tok_strmap_get(&t->vocab, s + c, len - c)) < 0) continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 1 << 16;
                int32_t *p = kiln_realloc(tmp, cap * 3 * sizeof *p);
                if (!p) {
                    kiln_free(tmp);
                    return OOM();
                }
                tmp = p;
            }
            tmp[3 * n] = a;
            tmp[3 * n + 1] = b;
            tmp[3 * n + 2] = id;
            n++;
        }
    }
    k->pair_bits = 4;
    while (((size_t)1 << k->pair_bits) < n * 2) k->pair_bits++; /* load <= 1/2 */
    uint32_t mask = (1u << k->pair_bits) - 1;
    k->pair = kiln_calloc((size_t)mask + 1, sizeof *k->pair);
    if (!k->pair) {
        kiln_free(tmp);
        return OOM();
    }
    for (size_t j = 0; j < n; j++) {
        uint64_t key = pair_key(tmp[3 * j], tmp[3 * j + 1]);
        uint32_t i = pair_home(k, key);
        while (k->pair[i]) i = (i + 1) & mask; /* each (a, b) is one string: no repeats */
        k->pair[i] = key << PAIR_ID_BITS | (uint64_t)tmp[3 * j + 2];
    }
    kiln_free(tmp);
    return KILN_OK;
}

/* ---- merging one piece ----
 * tiktoken's byte_pair_merge: start from the piece's bytes, merge the adjacent pair whose
 * merged token has the lowest rank (= lowest id), leftmost on ties, until no pair merges. */
static int ivec_reserve(tok_ivec *v, int extra) {
    if (v->n + extra <= v->cap) return 0;
    int cap = v->cap ? v->cap : 16;
    while (cap < v->n + extra) cap *= 2;
    int32_t *p = kiln_realloc(v->p, (size_t)cap * sizeof *p);
    if (!p) return -1;
    v->p = p;
    v->cap = cap;
    return 0;
}

/* Short pieces (the common case): parts in an array, a linear scan for the best pair, the
 * tail moved down one slot per merge: O(n * merges), on the stack, cache friendly.
 * id[i] = token of part i, rk[i] = token of parts i, i+1 merged (INT32_MAX: none). */
#define LINEAR_MAX 128
static void merge_linear(const tekken *k, const unsigned char *s, int n, int32_t *dst, int *dn) {
    int32_t id[LINEAR_MAX], rk[LINEAR_MAX];
    for (int i = 0; i < n; i++) id[i] = k->byte_id[s[i]];
    for (int i = 0; i + 1 < n; i++) rk[i] = pair_get(k, id[i], id[i + 1]);
    rk[n - 1] = INT32_MAX;
    int m = n;
    for (;;) {
        int best = 0;
        for (int i = 1; i < m - 1; i++)
            if (rk[i] < rk[best]) best = i;
        if (rk[best] == INT32_MAX) break;
        id[best] = rk[best];
        m--;
        memmove(id + best + 1, id + best + 2, (size_t)(m - best - 1) * sizeof *id);
        memmove(rk + best + 1, rk + best + 2, (size_t)(m - best - 1) * sizeof *rk);
        rk[best] = best + 1 < m ? pair_get(k, id[best], id[best + 1]) : INT32_MAX;
        if (best > 0) rk[best - 1] = pair_get(k, id[best - 1], id[best]);
    }
    memcpy(dst, id, (size_t)m * sizeof *id);
    *dn = m;
}

/* Long pieces: parts in a linked list over byte positions, candidate pairs in a binary min-heap
 * of (token << 32 | position of the left part): the lowest token first, leftmost on ties, as the
 * linear scan picks. pr[p] is the token of the live pair at p now (INT32_MAX: none), so an
 * entry whose pair has changed since it was pushed is recognised and skipped. O(n log n). */
typedef struct tek_scratch { /* per call, grown to the longest piece */
    int32_t *id, *next, *prev, *pr; /* [cap] */
    uint64_t *heap;                 /* [3 * cap]: n pairs + two per merge */
    size_t cap;
} tek_scratch;
static void scratch_free(tek_scratch *w) {
    kiln_free(w->id);
    kiln_free(w->heap);
    memset(w, 0, sizeof *w);
}
static int scratch_reserve(tek_scratch *w, size_t n) {
    if (n <= w->cap) return 0;
    scratch_free(w);
    w->id = kiln_malloc(n * 4 * sizeof *w->id);
    w->heap = kiln_malloc(n * 3 * sizeof *w->heap);
    if (!w->id || !w->heap) {
        scratch_free(w);
        return -1;
    }
    w->next = w->id + n;
    w->prev = w->next + n;
    w->pr = w->prev + n;
    w->cap = n;
    return 0;
}
static void heap_push(uint64_t *h, int *hn, uint64_t v) {
    int i = (*hn)++;
    while (i > 0) {
        int par = (i - 1) / 2;
        if (h[par] <= v) break;
        h[i] = h[par];
        i = par;
    }
    h[i] = v;
}
/* Pop the least entry: the hole at the root moves down along the lesser children to a leaf
 * (one compare per level), then the last entry moves up from there (usually not far). */
static uint64_t heap_pop(uint64_t *h, int *hn) {
    uint64_t top = h[0];
    int n = --*hn, i = 0;
    uint64_t last = h[n]; /* h[n] stays readable: the array has room for it */
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n) break;
        c += (c + 1 < n) & (h[c + 1] < h[c]);
        h[i] = h[c];
        i = c;
    }
    while (i > 0) {
        int par = (i - 1) / 2;
        if (h[par] <= last) break;
        h[i] = h[par];
        i = par;
    }
    h[i] = last;
    return top;
}
static void merge_heap(const tekken *k, tek_scratch *w, const unsigned char *s, int n, int32_t *dst, int *dn) {
    int32_t *id = w->id, *next = w->next, *prev = w->prev, *pr = w->pr;
    uint64_t *h = w->heap;
    int hn = 0;
    for (int i = 0; i < n; i++) {
        id[i] = k->byte_id[s[i]];
        next[i] = i + 1 < n ? i + 1 : -1;
        prev[i] = i - 1;
    }
    for (int i = 0; i < n; i++) {
        pr[i] = i + 1 < n ? pair_get(k, id[i], id[i + 1]) : INT32_MAX;
        if (pr[i] != INT32_MAX) heap_push(h, &hn, (uint64_t)pr[i] << 32 | (uint32_t)i);
    }
    while (hn) {
        uint64_t e = heap_pop(h, &hn);
        int p = (int)(uint32_t)e;
        int32_t tok = (int32_t)(e >> 32);
        if (pr[p] != tok) continue; /* stale */
        int r = next[p];            /* merge part r into part p */
        id[p] = tok;
        pr[r] = INT32_MAX;
        next[p] = next[r];
        if (next[p] >= 0) prev[next[p]] = p;
        pr[p] = next[p] >= 0 ? pair_get(k, tok, id[next[p]]) : INT32_MAX;
        if (pr[p] != INT32_MAX) heap_push(h, &hn, (uint64_t)pr[p] << 32 | (uint32_t)p);
        int q = prev[p];
        if (q >= 0) {
            pr[q] = pair_get(k, id[q], tok);
            if (pr[q] != INT32_MAX) heap_push(h, &hn, (uint64_t)pr[q] << 32 | (uint32_t)q);
        }
    }
    int m = 0;
    for (int i = 0; i >= 0; i = next[i]) dst[m++] = id[i];
    *dn = m;
}

static int encode_piece(const kiln_tokenizer *t, tek_scratch *w, const char *s, size_t n, tok_ivec *out,
                        kiln_error *err) {
    const tekken *k = t->impl;
    int32_t id = n == 1 ? k->byte_id[(unsigned char)s[0]] : tok_strmap_get(&t->vocab, s, n);
    if (id >= 0) return tok_ivec_push(out, id) ? OOM() : KILN_OK;
    if (n > (size_t)INT32_MAX / 4) return KILN_ERR(err, KILN_ERR_INVALID_ARG, "tekken: piece of %zu bytes", n);
    if (ivec_reserve(out, (int)n)) return OOM();
    int m;
    if (n <= LINEAR_MAX) {
        merge_linear(k, (const unsigned char *)s, (int)n, out->p + out->n, &m);
    } else {
        if (scratch_reserve(w, n)) return OOM();
        merge_heap(k, w, (const unsigned char *)s, (int)n, out->p + out->n, &m);
    }
    out->n += m;
    return KILN_OK;
}

static int encode_text(const kiln_tokenizer *t, tek_scratch *w, pcre2_match_data *md, const char *s, size_t n,
                       tok_ivec *out, kiln_error *err) {
    const tekken *k = t->impl;
    size_t pos = 0;
    int rc = KILN_OK;
    if (!k->re) { /* the known pattern: every position starts a non-empty piece */
        while (pos < n && rc == KILN_OK) {
            size_t end = kiln_tekken_split_next(s, n, pos);
            rc = encode_piece(t, w, s + pos, end - pos, out, err);
            pos = end;
        }
        return rc;
    }
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
        rc = encode_piece(t, w, s + ov[0], ov[1] - ov[0], out, err);
        pos = ov[1];
    }
    return rc;
}

static int tekken_encode(const kiln_tokenizer *t, const char *text, size_t len, int flags, tok_ivec *out,
                         kiln_error *err) {
    const tekken *k = t->impl;
    char *s;
    size_t n;
    if (tok_utf8_sanitize(text, len, &s, &n)) return OOM();
    tek_scratch w = {0};
    pcre2_match_data *md = k->re ? pcre2_match_data_create_from_pattern(k->re, NULL) : NULL;
    int rc = md || !k->re ? KILN_OK : OOM();
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
            rc = encode_text(t, &w, md, s + last, i - last, out, err);
            if (rc == KILN_OK && tok_ivec_push(out, best)) rc = OOM();
            i = last = i + bl;
        }
    }
    if (rc == KILN_OK) rc = encode_text(t, &w, md, s + last, n - last, out, err);
    if (md) pcre2_match_data_free(md);
    scratch_free(&w);
    kiln_free(s);
    return rc;
}

int tok_load_tekken(kiln_tokenizer *t, const char *path, kiln_error *err) {
    json_error_t je;
    json_t *root = json_load_file(path, JSON_ALLOW_NUL, &je); /* token_str "\u0000" */
    if (!root) return KILN_JSON_FAIL(err, &je, path, "%s: JSON error at line %d: %s", path, je.line, je.text);
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
    if (vsize > PAIR_MAX_VOCAB) {
        rc = KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: %lld tokens, more than kiln's tekken encoder takes (%d)",
                      path, (long long)vsize, PAIR_MAX_VOCAB);
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
        if ((k->byte_id[b] = tok_strmap_get(&t->vocab, &c, 1)) < 0) {
            rc = KILN_ERR(err, KILN_ERR_FORMAT, "%s: byte 0x%02x has no token", path, b);
            goto done;
        }
    }
    if ((rc = build_pairs(t, k, err))) goto done;
    size_t patn = json_string_length(json_object_get(cfg, "pattern")); /* may hold a NUL */
    if (patn != strlen(kiln_tekken_pattern) || memcmp(pat, kiln_tekken_pattern, patn) != 0) {
        KILN_WARN("%s: pre-tokenizer pattern is not the published tekken one; it is cut by PCRE2, "
                  "whose Unicode tables may differ from the reference's (16.0)", path);
        k->re = hf_regex_compile(pat, strlen(pat), path, err);
        if (!k->re) {
            rc = err->code;
            goto done;
        }
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
