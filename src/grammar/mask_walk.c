/* mask_walk.c: the fast token-mask computation of the matcher (matcher.c keeps the state).
 *
 * Two ideas, both standard in grammar engines (xgrammar's adaptive token mask cache):
 *
 * 1. Memoized walk. The trie walk's state at a node is a set of parse stacks; stacks are
 *    hash-consed nodes (pos, parent) in the scratch arena, so a set is identified by its sorted
 *    top ids plus two flags (acc: a stack emptied; esc: a stack popped past the start of a
 *    position walk, below). Sets get dense ids and transitions (set, byte) -> set are memoized,
 *    so a trie node costs one hash lookup instead of a stack expansion.
 *
 * 2. Per-position tables. The tokens a top at grammar position p accepts without popping below
 *    the top's own frame do not depend on the rest of its stack. For each p reached, a walk from
 *    the single stack (p, ESC) once computes A_p (tokens accepted inside the frame, or that end
 *    exactly where the frame completes) and U_p (trie nodes where the frame completed with bytes
 *    still to come). At run time a state's mask is the OR of A_p over its tops, plus, for each
 *    u in U_p, a memoized walk of u's subtree from the top's real continuation (its parent
 *    popped and expanded). The union over tops is the state's mask (tops are alternatives).
 *
 * Scratch (kiln_gscratch) is one per engine: tables with generation stamps, reset in O(1) per
 * mask. A table that fills up fails the mask with KILN_ERR_OOM (never an unconstrained mask).
 */
#include <stdlib.h>
#include <string.h>
#include "grammar/gram_build.h"
#include "grammar/mask_walk.h"
#include "util/alloc.h"
#include "util/error.h"

#define NODE_CAP (1 << 18)
#define NH_CAP (1 << 19)   /* node hash (power of two) */
#define ST_CAP (1 << 15)   /* states */
#define STT_CAP (1 << 19)  /* state tops pool */
#define SH_CAP (1 << 16)   /* state hash */
#define TH_CAP (1 << 19)   /* transition hash */
#define TMP_CAP (1 << 14)
#define ROW_CAP 8192       /* dense transition rows (256 entries each) */
#define MAX_DEPTH_EXPAND 4096

struct kiln_gscratch {
    int32_t *npos, *npar;  /* [NODE_CAP] hash-consed nodes */
    int n_nodes;
    uint64_t *nh_key; int32_t *nh_val; uint32_t *nh_gen;      /* [NH_CAP] */
    int32_t *st_off, *st_n; uint8_t *st_fl;                   /* [ST_CAP] */
    int n_st;
    int32_t *st_tops; int n_st_tops;                          /* [STT_CAP] */
    uint64_t *sh_key; int32_t *sh_val; uint32_t *sh_gen;      /* [SH_CAP] */
    uint64_t *th_key; int32_t *th_val; uint32_t *th_gen;      /* [TH_CAP] */
    int32_t *tmp;                                             /* [TMP_CAP] */
    int32_t *st_row;                                          /* [ST_CAP] row of a state, -1: none */
    int32_t *rows; int n_rows;                                /* [ROW_CAP][256]: -3 unknown */
    int32_t *lv; int lv_cap;                                  /* sid per trie depth */
    uint32_t gen;
    int full;
};

void kiln_gscratch_free(kiln_gscratch *w) {
    if (!w) return;
    kiln_free(w->npos); kiln_free(w->npar); kiln_free(w->nh_key); kiln_free(w->nh_val); kiln_free(w->nh_gen);
    kiln_free(w->st_off); kiln_free(w->st_n); kiln_free(w->st_fl); kiln_free(w->st_tops);
    kiln_free(w->sh_key); kiln_free(w->sh_val); kiln_free(w->sh_gen);
    kiln_free(w->th_key); kiln_free(w->th_val); kiln_free(w->th_gen); kiln_free(w->tmp); kiln_free(w->lv);
    kiln_free(w->st_row); kiln_free(w->rows);
    kiln_free(w);
}

int kiln_gscratch_create(kiln_gscratch **out, int max_depth, kiln_error *err) {
    kiln_gscratch *w = kiln_calloc(1, sizeof *w);
    *out = NULL;
    if (!w) return KILN_ERR(err, KILN_ERR_OOM, "out of memory");
    w->npos = kiln_malloc(NODE_CAP * sizeof(int32_t)); w->npar = kiln_malloc(NODE_CAP * sizeof(int32_t));
    w->nh_key = kiln_malloc(NH_CAP * sizeof(uint64_t)); w->nh_val = kiln_malloc(NH_CAP * sizeof(int32_t));
    w->nh_gen = kiln_calloc(NH_CAP, sizeof(uint32_t));
    w->st_off = kiln_malloc(ST_CAP * sizeof(int32_t)); w->st_n = kiln_malloc(ST_CAP * sizeof(int32_t));
    w->st_fl = kiln_malloc(ST_CAP); w->st_tops = kiln_malloc(STT_CAP * sizeof(int32_t));
    w->sh_key = kiln_malloc(SH_CAP * sizeof(uint64_t)); w->sh_val = kiln_malloc(SH_CAP * sizeof(int32_t));
    w->sh_gen = kiln_calloc(SH_CAP, sizeof(uint32_t));
    w->th_key = kiln_malloc(TH_CAP * sizeof(uint64_t)); w->th_val = kiln_malloc(TH_CAP * sizeof(int32_t));
    w->th_gen = kiln_calloc(TH_CAP, sizeof(uint32_t));
    w->tmp = kiln_malloc(TMP_CAP * sizeof(int32_t));
    w->st_row = kiln_malloc(ST_CAP * sizeof(int32_t));
    w->rows = kiln_malloc((size_t)ROW_CAP * 256 * sizeof(int32_t));
    w->lv_cap = max_depth + 2;
    w->lv = kiln_malloc((size_t)w->lv_cap * sizeof(int32_t));
    if (!w->npos || !w->npar || !w->nh_key || !w->nh_val || !w->nh_gen || !w->st_off || !w->st_n || !w->st_fl ||
        !w->st_tops || !w->sh_key || !w->sh_val || !w->sh_gen || !w->th_key || !w->th_val || !w->th_gen || !w->tmp || !w->lv || !w->st_row || !w->rows) {
        kiln_gscratch_free(w);
        return KILN_ERR(err, KILN_ERR_OOM, "out of memory for the grammar scratch");
    }
    *out = w;
    return KILN_OK;
}

void kiln_gscratch_reset(kiln_gscratch *w) {
    w->gen++;
    if (w->gen == 0) { /* wrapped: clear the stamps */
        memset(w->nh_gen, 0, NH_CAP * sizeof(uint32_t));
        memset(w->sh_gen, 0, SH_CAP * sizeof(uint32_t));
        memset(w->th_gen, 0, TH_CAP * sizeof(uint32_t));
        w->gen = 1;
    }
    w->n_nodes = w->n_st = w->n_st_tops = w->n_rows = 0;
    w->full = 0;
}

/* the node (pos, parent), created when new; -1 when the arena is full */
static int32_t node(kiln_gscratch *w, int32_t pos, int32_t parent) {
    uint64_t k = kiln_gnode_key(pos, parent);
    uint32_t h = (uint32_t)kiln_gmix(k) & (NH_CAP - 1);
    for (;;) {
        if (w->nh_gen[h] != w->gen) break;
        if (w->nh_key[h] == k) return w->nh_val[h];
        h = (h + 1) & (NH_CAP - 1);
    }
    if (w->n_nodes >= NODE_CAP || w->n_nodes >= NH_CAP / 2) { w->full = 1; return -1; }
    int32_t id = w->n_nodes++;
    w->npos[id] = pos;
    w->npar[id] = parent;
    w->nh_gen[h] = w->gen;
    w->nh_key[h] = k;
    w->nh_val[h] = id;
    return id;
}

#define FL_ACC 1
#define FL_ESC 2

/* expand (pos, parent) into out (dedup by id); *fl gets FL_ACC / FL_ESC on pops past the bottom */
static void norm(kiln_gscratch *w, const kiln_gram *g, int32_t pos, int32_t parent, int32_t *out, int *n, int *fl, int depth) {
    if (depth > MAX_DEPTH_EXPAND || w->full) return;
    for (;;) {
        int32_t e = g->elems[pos];
        if (e >= 0) {
            int32_t id = node(w, pos, parent);
            if (id < 0) return;
            for (int k = 0; k < *n; k++) if (out[k] == id) return;
            if (*n >= TMP_CAP) { w->full = 1; return; }
            out[(*n)++] = id;
            return;
        }
        if (e == GB_END) {
            if (parent == -1) { *fl |= FL_ACC; return; }
            if (parent == KILN_GWALK_ESC) { *fl |= FL_ESC; return; }
            pos = w->npos[parent];
            parent = w->npar[parent];
            continue;
        }
        int r = -e - 2;
        int32_t cont = parent;
        if (g->elems[pos + 1] != GB_END && (cont = node(w, pos + 1, parent)) < 0) return;
        for (int a = g->rule_alt[r]; a < g->rule_alt[r + 1]; a++) norm(w, g, g->alts[a], cont, out, n, fl, depth + 1);
        return;
    }
}

static void sort_ids(int32_t *a, int n) {
    for (int i = 1; i < n; i++) {
        int32_t x = a[i];
        int j = i - 1;
        while (j >= 0 && a[j] > x) { a[j + 1] = a[j]; j--; }
        a[j + 1] = x;
    }
}

/* the id of the set (tops[0..n), fl); -1 for the dead set; -2 when a table is full */
static int32_t state(kiln_gscratch *w, int32_t *tops, int n, int fl) {
    if (n == 0 && fl == 0) return -1;
    sort_ids(tops, n);
    uint64_t k = (uint64_t)fl * 0x9E3779B97F4A7C15ull + (uint64_t)n;
    for (int i = 0; i < n; i++) k = kiln_gmix(k ^ (uint64_t)(uint32_t)tops[i]) + (uint64_t)i;
    uint32_t h = (uint32_t)k & (SH_CAP - 1);
    for (;;) {
        if (w->sh_gen[h] != w->gen) break;
        if (w->sh_key[h] == k) {
            int32_t s = w->sh_val[h];
            if (w->st_n[s] == n && w->st_fl[s] == fl && !memcmp(w->st_tops + w->st_off[s], tops, (size_t)n * sizeof *tops)) return s;
        }
        h = (h + 1) & (SH_CAP - 1);
    }
    if (w->n_st >= ST_CAP || w->n_st >= SH_CAP / 2 || w->n_st_tops + n > STT_CAP) { w->full = 1; return -2; }
    int32_t s = w->n_st++;
    w->st_row[s] = -1;
    if (w->n_rows < ROW_CAP) {
        w->st_row[s] = w->n_rows;
        int32_t *row = w->rows + (size_t)w->n_rows++ * 256;
        for (int i = 0; i < 256; i++) row[i] = -3;
    }
    w->st_off[s] = w->n_st_tops;
    w->st_n[s] = n;
    w->st_fl[s] = (uint8_t)fl;
    memcpy(w->st_tops + w->n_st_tops, tops, (size_t)n * sizeof *tops);
    w->n_st_tops += n;
    w->sh_gen[h] = w->gen;
    w->sh_key[h] = k;
    w->sh_val[h] = s;
    return s;
}

/* (s, byte) -> state id (-1 dead, -2 full) */
static int32_t trans_slow(kiln_gscratch *w, const kiln_gram *g, int32_t s, uint8_t c);
static inline int32_t trans(kiln_gscratch *w, const kiln_gram *g, int32_t s, uint8_t c) {
    int32_t r = w->st_row[s];
    if (r >= 0) {
        int32_t v = w->rows[(size_t)r * 256 + c];
        if (v != -3) return v;
        v = trans_slow(w, g, s, c);
        if (v != -2) w->rows[(size_t)r * 256 + c] = v;
        return v;
    }
    return trans_slow(w, g, s, c);
}

static int32_t trans_slow(kiln_gscratch *w, const kiln_gram *g, int32_t s, uint8_t c) {
    uint64_t k = (uint64_t)(uint32_t)s << 8 | c;
    uint32_t h = (uint32_t)kiln_gmix(k + 0x1234567) & (TH_CAP - 1);
    for (;;) {
        if (w->th_gen[h] != w->gen) break;
        if (w->th_key[h] == k) return w->th_val[h];
        h = (h + 1) & (TH_CAP - 1);
    }
    int n = 0, fl = 0;
    int32_t *out = w->tmp;
    int off = w->st_off[s], cnt = w->st_n[s];
    for (int i = 0; i < cnt; i++) {
        int32_t t = w->st_tops[off + i];
        int32_t p = w->npos[t];
        const uint32_t *cls = g->classes[g->elems[p]];
        if (cls[c >> 5] >> (c & 31) & 1) norm(w, g, p + 1, w->npar[t], out, &n, &fl, 0);
    }
    if (w->full) return -2;
    int32_t r = state(w, out, n, fl);
    if (r == -2) return -2;
    w->th_gen[h] = w->gen;
    w->th_key[h] = k;
    w->th_val[h] = r;
    return r;
}

int32_t kiln_gwalk_state(kiln_gscratch *w, const kiln_gram *g, const int32_t *pos, const int32_t *parent_chain_len,
                         const int32_t *chains, int n_tops, int flags) {
    (void)g;
    int32_t *tops = w->tmp;
    int n = 0;
    const int32_t *c = chains;
    for (int t = 0; t < n_tops; t++) {
        /* chains: each top's positions from the bottom up; build bottom-up */
        int32_t parent = -1;
        int len = parent_chain_len[t];
        for (int k = 0; k < len; k++) {
            parent = node(w, c[k], parent);
            if (parent < 0) return -2;
        }
        c += len;
        int32_t id = node(w, pos[t], parent);
        if (id < 0) return -2;
        int dup = 0;
        for (int k = 0; k < n; k++) dup |= tops[k] == id;
        if (!dup) tops[n++] = id;
    }
    return state(w, tops, n, flags);
}

int32_t kiln_gwalk_frame(kiln_gscratch *w, const int32_t *key, int len, int truncated) {
    int32_t parent = truncated ? KILN_GWALK_ESC : -1;
    for (int k = len - 1; k >= 1; k--)
        if ((parent = node(w, key[k], parent)) < 0) return -2;
    int32_t id = node(w, key[0], parent);
    if (id < 0) return -2;
    return state(w, &id, 1, 0);
}

int32_t kiln_gwalk_pop(kiln_gscratch *w, const kiln_gram *g, const int32_t *chain, int len) {
    /* chain: the parent's positions from the bottom up (len >= 1): its node, then expand it */
    int32_t parent = -1;
    for (int k = 0; k < len - 1; k++) {
        parent = node(w, chain[k], parent);
        if (parent < 0) return -2;
    }
    int n = 0, fl = 0;
    norm(w, g, chain[len - 1], parent, w->tmp, &n, &fl, 0);
    if (w->full) return -2;
    return state(w, w->tmp, n, fl);
}

int kiln_gwalk(kiln_gscratch *w, const kiln_gram *g, const kiln_token_trie *t, int i0, int i1, int d0, int32_t s0,
               uint32_t *mask, int32_t *u_out, int u_cap, int *n_u, kiln_error *err) {
    if (s0 < 0) return s0 == -2 ? KILN_ERR(err, KILN_ERR_OOM, "grammar: the walk scratch is full") : KILN_OK;
    int32_t *lv = w->lv;
    lv[d0] = s0;
    const int32_t *off = t->tok_off, *toks = t->toks;
    for (int i = i0; i < i1;) {
        int d = t->depth[i];
        int32_t s = trans(w, g, lv[d - 1], t->byte[i]);
        if (s == -2) return KILN_ERR(err, KILN_ERR_OOM, "grammar: the walk scratch is full");
        if (s < 0) { i = t->skip[i]; continue; }
        for (int j = off[i]; j < off[i + 1]; j++) mask[toks[j] >> 5] |= 1u << (toks[j] & 31);
        if ((w->st_fl[s] & FL_ESC) && u_out) {
            if (*n_u >= u_cap) return KILN_ERR(err, KILN_ERR_OOM, "grammar: too many frame exits in a position walk");
            if (t->skip[i] > i + 1) u_out[(*n_u)++] = i;
        }
        if (w->st_n[s] == 0) { i = t->skip[i]; continue; }
        lv[d] = s;
        i++;
    }
    return KILN_OK;
}
