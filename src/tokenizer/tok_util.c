/* tok_util.c: buffers, hash maps, UTF-8 helpers and the BPE merge loops shared by every
 * vocabulary kind.
 *
 * The merge loops keep the symbols of one word in a doubly linked list over an array and a
 * binary heap of candidate pairs ordered by (priority, position of the left symbol); stale
 * heap entries (a side merged since) are skipped when popped. Picking the best pair and
 * breaking ties leftmost gives exactly the result of the quadratic rescans of llama2.c's
 * encode and tiktoken's _byte_pair_merge, in O(n log n).
 */
#include "tokenizer/tok_internal.h"
#include <string.h>
#include "util/alloc.h"
#include "util/error.h"

int tok_ivec_push(tok_ivec *v, int32_t x) {
    if (v->n == v->cap) {
        int cap = v->cap ? v->cap * 2 : 16;
        int32_t *p = kiln_realloc(v->p, (size_t)cap * sizeof *p);
        if (!p) return -1;
        v->p = p;
        v->cap = cap;
    }
    v->p[v->n++] = x;
    return 0;
}
void tok_ivec_free(tok_ivec *v) {
    kiln_free(v->p);
    memset(v, 0, sizeof *v);
}

/* ---- string map ---- */
static inline uint64_t mix64(uint64_t h) { /* splitmix64 finaliser */
    h ^= h >> 30;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 27;
    h *= 0x94D049BB133111EBull;
    return h ^ (h >> 31);
}
uint64_t tok_hash_bytes(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    uint64_t h = 0x9E3779B97F4A7C15ull * (n + 1), w;
    while (n > 8) {
        memcpy(&w, u, 8);
        h = (h ^ w) * 0xFF51AFD7ED558CCDull;
        h ^= h >> 32;
        u += 8;
        n -= 8;
    }
    if (n >= 4) { /* two overlapping 4-byte reads cover 4..8 bytes */
        uint32_t lo, hi;
        memcpy(&lo, u, 4);
        memcpy(&hi, u + n - 4, 4);
        w = (uint64_t)lo | (uint64_t)hi << 32;
    } else if (n) { /* first, middle and last byte cover 1..3 bytes */
        w = (uint64_t)u[0] | (uint64_t)u[n / 2] << 8 | (uint64_t)u[n - 1] << 16;
    } else {
        w = 0;
    }
    return mix64(h ^ w);
}
int tok_strmap_init(tok_strmap *m, uint32_t expect) {
    memset(m, 0, sizeof *m);
    uint32_t cap = 16;
    while (cap < expect * 2 + 2) cap *= 2;
    m->cap = cap;
    m->slot = kiln_calloc(cap, sizeof *m->slot);
    if (!m->slot) {
        tok_strmap_free(m);
        return -1;
    }
    return 0;
}
/* slot holding key k, or the empty slot where it would go; h = tok_hash_bytes(k, n) */
static uint32_t strmap_find(const tok_strmap *m, const char *k, size_t n, uint64_t h) {
    uint32_t i = (uint32_t)h & (m->cap - 1), tag = (uint32_t)(h >> 32);
    for (;;) {
        const tok_strslot *e = &m->slot[i];
        if (!e->koff) return i;
        if (e->tag == tag && e->klen == n && memcmp(m->arena.p + e->koff - 1, k, n) == 0) return i;
        i = (i + 1) & (m->cap - 1);
    }
}
int tok_strmap_put(tok_strmap *m, const char *k, size_t n, int32_t v) {
    if ((m->n + 1) * 2 > m->cap) { /* grow */
        uint32_t cap = m->cap * 2;
        tok_strslot *g = kiln_calloc(cap, sizeof *g);
        if (!g) return -1;
        for (uint32_t i = 0; i < m->cap; i++) {
            const tok_strslot *e = &m->slot[i];
            if (!e->koff) continue;
            uint32_t j = (uint32_t)tok_hash_bytes(m->arena.p + e->koff - 1, e->klen) & (cap - 1);
            while (g[j].koff) j = (j + 1) & (cap - 1);
            g[j] = *e;
        }
        kiln_free(m->slot);
        m->slot = g;
        m->cap = cap;
    }
    uint64_t h = tok_hash_bytes(k, n);
    tok_strslot *e = &m->slot[strmap_find(m, k, n, h)];
    if (e->koff) {
        e->val = v;
        return 0;
    }
    size_t off = m->arena.len;
    if (kiln_buf_add(&m->arena, k, n) != 0) return -1;
    e->koff = (uint32_t)off + 1;
    e->klen = (uint32_t)n;
    e->val = v;
    e->tag = (uint32_t)(h >> 32);
    m->n++;
    return 0;
}
int32_t tok_strmap_get(const tok_strmap *m, const char *k, size_t n) {
    if (!m->cap) return -1;
    const tok_strslot *e = &m->slot[strmap_find(m, k, n, tok_hash_bytes(k, n))];
    return e->koff ? e->val : -1;
}
void tok_strmap_free(tok_strmap *m) {
    kiln_free(m->slot);
    kiln_buf_free(&m->arena);
    memset(m, 0, sizeof *m);
}

/* ---- pair map ---- */
static uint32_t pair_slot(const tok_pairmap *m, uint64_t key) {
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    uint32_t i = (uint32_t)(h >> 32) & (m->cap - 1);
    while (m->key[i] && m->key[i] != key) i = (i + 1) & (m->cap - 1);
    return i;
}
int tok_pairmap_init(tok_pairmap *m, uint32_t expect) {
    memset(m, 0, sizeof *m);
    uint32_t cap = 16;
    while (cap < expect * 2 + 2) cap *= 2;
    m->cap = cap;
    m->key = kiln_calloc(cap, sizeof *m->key);
    m->rank = kiln_calloc(cap, sizeof *m->rank);
    m->id = kiln_calloc(cap, sizeof *m->id);
    if (!m->key || !m->rank || !m->id) {
        tok_pairmap_free(m);
        return -1;
    }
    return 0;
}
int tok_pairmap_put(tok_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t id) {
    if ((m->n + 1) * 2 > m->cap) return -1; /* sized at init from the merge count */
    uint64_t key = ((uint64_t)(uint32_t)(a + 1) << 32) | (uint32_t)b;
    uint32_t i = pair_slot(m, key);
    if (m->key[i]) return 0; /* first (lowest rank) wins, as HF does */
    m->key[i] = key;
    m->rank[i] = rank;
    m->id[i] = id;
    m->n++;
    return 0;
}
int tok_pairmap_get(const tok_pairmap *m, int32_t a, int32_t b, int32_t *rank, int32_t *id) {
    uint64_t key = ((uint64_t)(uint32_t)(a + 1) << 32) | (uint32_t)b;
    uint32_t i = pair_slot(m, key);
    if (!m->key[i]) return 0;
    *rank = m->rank[i];
    *id = m->id[i];
    return 1;
}
void tok_pairmap_free(tok_pairmap *m) {
    kiln_free(m->key);
    kiln_free(m->rank);
    kiln_free(m->id);
    memset(m, 0, sizeof *m);
}

/* ---- UTF-8 ---- */
int tok_utf8_valid_len(const unsigned char *s, size_t n, int *bad) {
    unsigned c = s[0];
    int need;
    unsigned lo = 0x80, hi = 0xBF;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        *bad = 1;
        return 0;
    }
    for (int k = 1; k <= need; k++) {
        if ((size_t)k >= n) {
            *bad = k;
            return 0;
        }
        unsigned d = s[k];
        unsigned l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
        if (d < l || d > h) {
            *bad = k;
            return 0;
        }
    }
    return need + 1;
}
int tok_utf8_put(uint32_t cp, char *o) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}
uint32_t tok_utf8_cp(const unsigned char *s, int len) {
    switch (len) {
    case 1: return s[0];
    case 2: return ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
    case 3: return ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    default:
        return ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
               ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    }
}
int tok_utf8_sanitize(const char *s, size_t n, char **out, size_t *out_n) {
    kiln_buf b = {0};
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;
    if (kiln_buf_add(&b, "", 0) != 0) return -1;
    while (i < n) {
        int bad = 0, l = tok_utf8_valid_len(u + i, n - i, &bad);
        if (l > 0) {
            i += (size_t)l;
            run += (size_t)l;
            continue;
        }
        if (kiln_buf_add(&b, s + i - run, run) != 0 || kiln_buf_add(&b, "\xEF\xBF\xBD", 3) != 0) {
            kiln_buf_free(&b);
            return -1;
        }
        run = 0;
        i += (size_t)bad;
    }
    if (kiln_buf_add(&b, s + i - run, run) != 0) {
        kiln_buf_free(&b);
        return -1;
    }
    *out = b.p;
    *out_n = b.len;
    return 0;
}

/* ---- BPE merge loop ---- */
typedef struct heap_ent {
    double prio;
    int32_t left, right; /* positions */
    int32_t a, b;        /* ids at push time */
    int32_t id;          /* merged id */
} heap_ent;
typedef struct heap {
    heap_ent *e;
    int n, cap;
} heap;
static int heap_less(const heap_ent *x, const heap_ent *y) {
    return x->prio < y->prio || (x->prio == y->prio && x->left < y->left);
}
static int heap_push(heap *h, heap_ent v) {
    if (h->n == h->cap) {
        int cap = h->cap ? h->cap * 2 : 64;
        heap_ent *p = kiln_realloc(h->e, (size_t)cap * sizeof *p);
        if (!p) return -1;
        h->e = p;
        h->cap = cap;
    }
    int i = h->n++;
    while (i > 0) {
        int par = (i - 1) / 2;
        if (!heap_less(&v, &h->e[par])) break;
        h->e[i] = h->e[par];
        i = par;
    }
    h->e[i] = v;
    return 0;
}
static heap_ent heap_pop(heap *h) {
    heap_ent top = h->e[0], last = h->e[--h->n];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && heap_less(&h->e[c + 1], &h->e[c])) c++;
        if (!heap_less(&h->e[c], &last)) break;
        h->e[i] = h->e[c];
        i = c;
    }
    if (h->n) h->e[i] = last;
    return top;
}

/* pair -> (priority, id); returns 0 when the pair does not merge */
typedef int (*pair_fn)(const void *ctx, int32_t a, int32_t b, double *prio, int32_t *id);

static int merge_loop(const void *ctx, pair_fn fn, tok_ivec *ids, int start, kiln_error *err) {
    int n = ids->n - start;
    if (n < 2) return KILN_OK;
    int32_t *sym = ids->p + start;
    int32_t *next = kiln_malloc((size_t)n * sizeof *next * 2);
    heap h = {0};
    if (!next) return KILN_ERR(err, KILN_ERR_OOM, "tokenizer: out of memory");
    int32_t *prev = next + n;
    for (int i = 0; i < n; i++) {
        next[i] = i + 1 < n ? i + 1 : -1;
        prev[i] = i - 1;
    }
    int rc = KILN_OK;
    for (int i = 0; i + 1 < n; i++) {
        heap_ent e = {0, i, i + 1, sym[i], sym[i + 1], 0};
        if (fn(ctx, sym[i], sym[i + 1], &e.prio, &e.id) && heap_push(&h, e) != 0) goto oom;
    }
    while (h.n) {
        heap_ent e = heap_pop(&h);
        if (sym[e.left] != e.a || next[e.left] != e.right || sym[e.right] != e.b) continue;
        /* merge right into left */
        sym[e.left] = e.id;
        sym[e.right] = -1;
        int r = next[e.right];
        next[e.left] = r;
        if (r >= 0) prev[r] = e.left;
        int p = prev[e.left];
        if (p >= 0) {
            heap_ent q = {0, p, e.left, sym[p], e.id, 0};
            if (fn(ctx, q.a, q.b, &q.prio, &q.id) && heap_push(&h, q) != 0) goto oom;
        }
        if (r >= 0) {
            heap_ent q = {0, e.left, r, e.id, sym[r], 0};
            if (fn(ctx, q.a, q.b, &q.prio, &q.id) && heap_push(&h, q) != 0) goto oom;
        }
    }
    {
        int k = 0;
        for (int i = 0; i < n; i++)
            if (sym[i] >= 0) sym[k++] = sym[i];
        ids->n = start + k;
    }
    goto done;
oom:
    rc = KILN_ERR(err, KILN_ERR_OOM, "tokenizer: out of memory");
done:
    kiln_free(next);
    kiln_free(h.e);
    return rc;
}

typedef struct concat_ctx {
    const kiln_tokenizer *t; /* token strings */
    const tok_strmap *map;   /* concatenation -> id */
    int use_score;           /* priority = -score[id], else id (rank order) */
    char *scratch;
    size_t cap;
} concat_ctx;
static int concat_pair(const void *vctx, int32_t a, int32_t b, double *prio, int32_t *id) {
    concat_ctx *c = (concat_ctx *)vctx;
    size_t na, nb;
    const char *sa = tok_str(c->t, a, &na), *sb = tok_str(c->t, b, &nb);
    if (na + nb > c->cap) return 0; /* longer than any token */
    memcpy(c->scratch, sa, na);
    memcpy(c->scratch + na, sb, nb);
    int32_t m = tok_strmap_get(c->map, c->scratch, na + nb);
    if (m < 0) return 0;
    *id = m;
    *prio = c->use_score ? -(double)c->t->scores[m] : (double)m;
    return 1;
}
static int concat_merge(const kiln_tokenizer *t, const tok_strmap *map, int use_score,
                        tok_ivec *ids, int start, kiln_error *err) {
    concat_ctx c = {t, map, use_score, NULL, (size_t)t->max_tok_len};
    c.scratch = kiln_malloc(c.cap + 1);
    if (!c.scratch) return KILN_ERR(err, KILN_ERR_OOM, "tokenizer: out of memory");
    int rc = merge_loop(&c, concat_pair, ids, start, err);
    kiln_free(c.scratch);
    return rc;
}
int tok_bpe_score_merge(const kiln_tokenizer *t, tok_ivec *ids, kiln_error *err) {
    return concat_merge(t, &t->vocab, 1, ids, 0, err);
}

static int rank_pair(const void *vctx, int32_t a, int32_t b, double *prio, int32_t *id) {
    int32_t r;
    if (!tok_pairmap_get((const tok_pairmap *)vctx, a, b, &r, id)) return 0;
    *prio = (double)r;
    return 1;
}
int tok_bpe_rank_merge(const tok_pairmap *pm, tok_ivec *ids, int start, kiln_error *err) {
    return merge_loop(pm, rank_pair, ids, start, err);
}

/* ---- token tables ---- */
int tok_alloc_tables(kiln_tokenizer *t, int n, kiln_error *err) {
    t->n_vocab = n;
    t->str_off = kiln_calloc((size_t)n, sizeof *t->str_off);
    t->str_len = kiln_calloc((size_t)n, sizeof *t->str_len);
    t->dec_off = kiln_calloc((size_t)n, sizeof *t->dec_off);
    t->dec_len = kiln_calloc((size_t)n, sizeof *t->dec_len);
    t->special = kiln_calloc((size_t)n, 1);
    if (!t->str_off || !t->str_len || !t->dec_off || !t->dec_len || !t->special ||
        kiln_buf_add(&t->str, "", 0) != 0 || kiln_buf_add(&t->dec, "", 0) != 0)
        return KILN_ERR(err, KILN_ERR_OOM, "tokenizer: out of memory (%d tokens)", n);
    return KILN_OK;
}
int tok_set_token(kiln_tokenizer *t, int id, const char *s, size_t n, const char *dec, size_t dn,
                  kiln_error *err) {
    if (!dec) {
        dec = s;
        dn = n;
    }
    t->str_off[id] = (uint32_t)t->str.len;
    t->str_len[id] = (uint32_t)n;
    if (kiln_buf_add(&t->str, s, n) != 0) return KILN_ERR(err, KILN_ERR_OOM, "tokenizer: out of memory");
    t->dec_off[id] = (uint32_t)t->dec.len;
    t->dec_len[id] = (uint32_t)dn;
    if (kiln_buf_add(&t->dec, dec, dn) != 0) return KILN_ERR(err, KILN_ERR_OOM, "tokenizer: out of memory");
    if ((int)n > t->max_tok_len) t->max_tok_len = (int)n;
    return KILN_OK;
}
int tok_build_vocab_map(kiln_tokenizer *t, int first_wins, kiln_error *err) {
    if (tok_strmap_init(&t->vocab, (uint32_t)t->n_vocab) != 0)
        return KILN_ERR(err, KILN_ERR_OOM, "tokenizer: out of memory");
    for (int i = 0; i < t->n_vocab; i++) {
        size_t n;
        const char *s = tok_str(t, i, &n);
        if (first_wins && tok_strmap_get(&t->vocab, s, n) >= 0) continue;
        if (tok_strmap_put(&t->vocab, s, n, i) != 0)
            return KILN_ERR(err, KILN_ERR_OOM, "tokenizer: out of memory");
    }
    return KILN_OK;
}
