/* matcher.c: the token trie, the byte-level matcher over parse stacks, and token masks.
 *
 * A stack is a chain of nodes (pos: an element of the grammar, parent: the node below, -1 at
 * the bottom) in the matcher's arena; the state is the list of its top nodes, each at a byte
 * class, plus `accepting` (some stack is empty: the text is a complete sentence). Advancing a
 * stack by a byte moves its top to the next element and expands: a rule reference pushes the
 * continuation (or, when the reference ends its alternative, reuses the parent: tail calls keep
 * right-recursive repetitions at constant depth) and enters every alternative; the end of an
 * alternative pops. Nodes are interned by (pos, parent), so equal stacks are one id and a step
 * reaches each stack once (norm).
 *
 * Arena use: nodes [0, n_nodes) hold the state; a token's bytes (accept) append above it, and
 * accept then compacts the arena to the nodes the new state reaches (parents always precede
 * their children, so one forward pass renumbers).
 *
 * Masks (kiln_gmatch_mask): the OR of the frame tables of the state's tops (kiln_gtables, filled
 * on first use by mask_walk.c's memoized trie walk) plus the walks of their exit subtrees from
 * the real stacks; see mask_walk.c. Whole masks are also cached per matcher by the serialized
 * state (each top's chain of positions), FNV-1a hashed; a state whose key is longer than KEY_CAP
 * is not cached. A state with more than 256 tops, or a grammar past MAX_POS frames, falls back
 * to one memoized walk of the whole trie from the full state.
 */
#include <stdlib.h>
#include <string.h>
#include "grammar/gram_build.h"
#include "grammar/mask_walk.h"
#include "util/alloc.h"
#include "util/error.h"

#define KEY_CAP 1024
#define ARENA_NODES (1 << 18)
#define LEVEL_TOPS (1 << 16)
#define MAX_EXPAND_DEPTH 4096

#define MAX_POS 4096
#define POS_HASH 8192 /* power of two, > 2 * MAX_POS */
#define FRAME_K 4     /* a table's frame: the top and its 3 nearest ancestors */
#define U_TMP (1 << 18)

typedef struct pos_entry {
    int32_t key[FRAME_K]; /* positions of the top and its ancestors */
    int key_len, truncated; /* truncated: the stack goes deeper (exits are resolved at run time) */
    uint32_t *A;  /* [words] tokens accepted inside the position's frame */
    int32_t *U;   /* [n_u] trie nodes where the frame exits with bytes left */
    int n_u;
} pos_entry;

typedef struct gnode {
    int32_t pos, parent;
} gnode;

struct kiln_gmatch {
    const kiln_gram *g;
    const kiln_token_trie *t;
    int words;          /* mask words: (vocab + 31) / 32 */
    gnode *nodes;       /* [ARENA_NODES] */
    int n_nodes;
    int32_t *tops;      /* [LEVEL_TOPS] state tops */
    int n_tops, accepting;
    int32_t *lv;        /* [LEVEL_TOPS] stacked levels of the walk / accept scratch */
    int32_t *remap;     /* [ARENA_NODES] compaction */
    int32_t *hc;        /* [hc_cap] node interning (intern) */
    int hc_cap, hc_used;
    uint32_t *seen;     /* [ARENA_NODES] stamp of the last step that reached the node (norm) */
    uint32_t stamp;
    /* cache: n_cache entries of (hash, key, mask) */
    int n_cache, next;
    uint64_t *c_hash;   /* [n_cache] 0: empty */
    int32_t *c_key;     /* [n_cache][KEY_CAP] */
    int32_t *c_len;     /* [n_cache] */
    uint32_t *c_mask;   /* [n_cache][words] */
    int32_t *key;       /* [KEY_CAP] */
    uint64_t n_computed, n_cached, n_walks;
    kiln_gtables *tabs; /* position tables (shared, or own_tabs) */
    int own_tabs;
    int32_t *u_tmp;     /* [U_TMP] */
};

struct kiln_gtables {
    pos_entry *pe;      /* [MAX_POS] */
    int n_pe;
    int32_t *pe_of;     /* [POS_HASH] index into pe by frame key, -1: empty */
    int words;
};

void kiln_gtables_free(kiln_gtables *t) {
    if (!t) return;
    for (int i = 0; i < t->n_pe; i++) { kiln_free(t->pe[i].A); kiln_free(t->pe[i].U); }
    kiln_free(t->pe);
    kiln_free(t->pe_of);
    kiln_free(t);
}

int kiln_gtables_create(kiln_gtables **out, const kiln_gram *g, const kiln_token_trie *trie, kiln_error *err) {
    kiln_gtables *t = kiln_calloc(1, sizeof *t);
    *out = NULL;
    if (!t) return KILN_ERR(err, KILN_ERR_OOM, "out of memory");
    t->words = trie ? (trie->vocab + 31) / 32 : 1;
    t->pe = kiln_calloc(MAX_POS, sizeof *t->pe);
    t->pe_of = kiln_malloc((size_t)POS_HASH * sizeof *t->pe_of);
    if (!t->pe || !t->pe_of) { kiln_gtables_free(t); return KILN_ERR(err, KILN_ERR_OOM, "out of memory"); }
    for (int i = 0; i < POS_HASH; i++) t->pe_of[i] = -1;
    (void)g;
    *out = t;
    return KILN_OK;
}

int kiln_gtables_count(const kiln_gtables *t) { return t->n_pe; }

/* ---- trie ---------------------------------------------------------------------------- */

typedef struct {
    const char *const *p;
    const size_t *l;
} trie_ctx;

static int cmp_piece(const void *a, const void *b, void *ctx) {
    const trie_ctx *c = ctx;
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    size_t li = c->l[i], lj = c->l[j], n = li < lj ? li : lj;
    int r = memcmp(c->p[i], c->p[j], n);
    if (r) return r;
    if (li != lj) return li < lj ? -1 : 1;
    return (i > j) - (i < j);
}

void kiln_token_trie_free(kiln_token_trie *t) {
    kiln_free(t->byte);
    kiln_free(t->depth);
    kiln_free(t->skip);
    kiln_free(t->tok_off);
    kiln_free(t->toks);
    memset(t, 0, sizeof *t);
}

int kiln_token_trie_build(kiln_token_trie *t, int vocab, const char *const *pieces, const size_t *lens,
                          const uint8_t *skipped, kiln_error *err) {
    memset(t, 0, sizeof *t);
    t->vocab = vocab;
    size_t total = 1;
    int n = 0;
    for (int i = 0; i < vocab; i++)
        if (lens[i] > 0 && lens[i] < 65535 && !(skipped && skipped[i])) { total += lens[i]; n++; }
    int32_t *ord = kiln_malloc(((size_t)n + 1) * sizeof *ord), *node_of = kiln_malloc(((size_t)n + 1) * sizeof *node_of);
    int32_t *path = NULL;
    t->byte = kiln_malloc(total);
    t->depth = kiln_malloc(total * sizeof *t->depth);
    t->skip = kiln_malloc(total * sizeof *t->skip);
    t->tok_off = kiln_calloc(total + 1, sizeof *t->tok_off);
    t->toks = kiln_malloc(((size_t)n + 1) * sizeof *t->toks);
    size_t maxlen = 0;
    for (int i = 0; i < vocab; i++) if (!(skipped && skipped[i]) && lens[i] < 65535 && lens[i] > maxlen) maxlen = lens[i];
    path = kiln_malloc((maxlen + 2) * sizeof *path);
    if (!ord || !node_of || !t->byte || !t->depth || !t->skip || !t->tok_off || !t->toks || !path) {
        kiln_free(ord); kiln_free(node_of); kiln_free(path); kiln_token_trie_free(t);
        return KILN_ERR(err, KILN_ERR_OOM, "out of memory building the token trie");
    }
    n = 0;
    for (int i = 0; i < vocab; i++)
        if (lens[i] > 0 && lens[i] < 65535 && !(skipped && skipped[i])) ord[n++] = i;
    trie_ctx c = {pieces, lens};
    qsort_r(ord, (size_t)n, sizeof *ord, cmp_piece, &c);
    int nn = 0;
    size_t plen = 0;
    const char *prev = NULL;
    for (int k = 0; k < n; k++) {
        const char *s = pieces[ord[k]];
        size_t l = lens[ord[k]], lcp = 0;
        while (prev && lcp < plen && lcp < l && prev[lcp] == s[lcp]) lcp++;
        for (size_t d = plen; d > lcp; d--) t->skip[path[d]] = nn;
        for (size_t d = lcp + 1; d <= l; d++) {
            t->byte[nn] = (uint8_t)s[d - 1];
            t->depth[nn] = (uint16_t)d;
            path[d] = nn++;
        }
        node_of[k] = path[l];
        t->tok_off[path[l] + 1]++;
        prev = s;
        plen = l;
    }
    for (size_t d = plen; d >= 1 && prev; d--) t->skip[path[d]] = nn;
    for (int i = 0; i < nn; i++) t->tok_off[i + 1] += t->tok_off[i];
    for (int k = 0; k < n; k++) t->toks[k] = ord[k]; /* sorted order == node preorder */
    (void)node_of;
    t->n_nodes = nn;
    t->n_toks = n;
    t->max_depth = (int)maxlen;
    kiln_free(ord);
    kiln_free(node_of);
    kiln_free(path);
    return KILN_OK;
}

/* ---- matcher ------------------------------------------------------------------------- */

void kiln_gmatch_free(kiln_gmatch *m) {
    if (!m) return;
    kiln_free(m->nodes); kiln_free(m->tops); kiln_free(m->lv);
    kiln_free(m->remap); kiln_free(m->hc); kiln_free(m->seen);
    kiln_free(m->c_hash); kiln_free(m->c_key); kiln_free(m->c_len); kiln_free(m->c_mask);
    kiln_free(m->key);
    if (m->own_tabs) kiln_gtables_free(m->tabs);
    kiln_free(m->u_tmp);
    kiln_free(m);
}

/* node interning: every stack node is unique by (pos, parent), so equal stacks share one id and a
 * step's dedup is one stamp compare. hc is open addressing over the arena's ids, -1 empty; an
 * entry whose id is not below n_nodes or whose node differs is stale (kiln_gmatch_forced drops
 * the nodes above its base): skipped, never reused, gone at the next rebuild (growth, compact). */
static uint32_t hc_hash(int32_t pos, int32_t parent) { return (uint32_t)kiln_gmix(kiln_gnode_key(pos, parent)); }

/* hc refilled from the arena's n_nodes: grown to 4 x n_nodes when it would be over half full,
 * shrunk when 16 x too large; 0, or -1 when growing runs out of memory */
static int hc_rebuild(kiln_gmatch *m) {
    int want = 1024;
    while (want < 4 * (m->n_nodes + 1)) want *= 2;
    if (2 * (m->n_nodes + 1) > m->hc_cap || want * 16 < m->hc_cap) {
        int32_t *h = kiln_malloc((size_t)want * sizeof *h);
        if (!h && 2 * (m->n_nodes + 1) > m->hc_cap) return -1;
        if (h) {
            kiln_free(m->hc);
            m->hc = h;
            m->hc_cap = want;
        }
    }
    memset(m->hc, 0xff, (size_t)m->hc_cap * sizeof *m->hc);
    for (int32_t id = 0; id < m->n_nodes; id++) {
        uint32_t h = hc_hash(m->nodes[id].pos, m->nodes[id].parent) & (uint32_t)(m->hc_cap - 1);
        while (m->hc[h] >= 0) h = (h + 1) & (uint32_t)(m->hc_cap - 1);
        m->hc[h] = id;
    }
    m->hc_used = m->n_nodes;
    return 0;
}

/* the node (pos, parent), created when new; -1 when the arena is full (or out of memory) */
static int32_t intern(kiln_gmatch *m, int32_t pos, int32_t parent) {
    uint32_t mask = (uint32_t)(m->hc_cap - 1), h = hc_hash(pos, parent) & mask;
    for (;; h = (h + 1) & mask) {
        int32_t id = m->hc[h];
        if (id < 0) break;
        if (id < m->n_nodes && m->nodes[id].pos == pos && m->nodes[id].parent == parent) return id;
    }
    if (m->n_nodes >= ARENA_NODES) return -1;
    if (2 * (m->hc_used + 1) > m->hc_cap) {
        if (hc_rebuild(m)) return -1;
        mask = (uint32_t)(m->hc_cap - 1);
        for (h = hc_hash(pos, parent) & mask; m->hc[h] >= 0; h = (h + 1) & mask) {}
    }
    int32_t id = m->n_nodes++;
    m->nodes[id].pos = pos;
    m->nodes[id].parent = parent;
    m->hc[h] = id;
    m->hc_used++;
    return id;
}

/* a new expansion stamp: seen[id] == stamp marks the stacks this step reached */
static void next_stamp(kiln_gmatch *m) {
    if (++m->stamp == 0) {
        memset(m->seen, 0, (size_t)ARENA_NODES * sizeof *m->seen);
        m->stamp = 1;
    }
}

/* expand the stack (pos, parent) into out[0 .. *n) (cap): 0, or -1 when the arena or level is
 * full. A node already reached in this step (a leaf already in out, or a rule reference already
 * expanded under the same parent) adds nothing: ambiguous grammars such as nested stars reach
 * the same stack many ways, and without the stamp their states grow with every byte. */
static int norm(kiln_gmatch *m, int32_t pos, int32_t parent, int32_t *out, int *n, int cap, int *acc, int depth) {
    const int32_t *el = m->g->elems;
    if (depth > MAX_EXPAND_DEPTH) return 0;
    for (;;) {
        int32_t e = el[pos];
        if (e == GB_END) {
            if (parent < 0) { *acc = 1; return 0; }
            pos = m->nodes[parent].pos;
            parent = m->nodes[parent].parent;
            continue;
        }
        int32_t id = intern(m, pos, parent);
        if (id < 0) return -1;
        if (m->seen[id] == m->stamp) return 0;
        m->seen[id] = m->stamp;
        if (e >= 0) {
            if (*n >= cap) return -1;
            out[(*n)++] = id;
            return 0;
        }
        int r = -e - 2;
        int32_t cont = parent;
        if (el[pos + 1] != GB_END && (cont = intern(m, pos + 1, parent)) < 0) return -1;
        for (int a = m->g->rule_alt[r]; a < m->g->rule_alt[r + 1]; a++)
            if (norm(m, m->g->alts[a], cont, out, n, cap, acc, depth + 1)) return -1;
        return 0;
    }
}

static int advance(kiln_gmatch *m, const int32_t *in, int n_in, uint8_t c, int32_t *out, int *n_out, int cap, int *acc) {
    *n_out = 0;
    *acc = 0;
    next_stamp(m);
    const int32_t *el = m->g->elems;
    for (int k = 0; k < n_in; k++) {
        const gnode *t = &m->nodes[in[k]];
        const uint32_t *cls = m->g->classes[el[t->pos]];
        if (!(cls[c >> 5] >> (c & 31) & 1)) continue;
        if (norm(m, t->pos + 1, t->parent, out, n_out, cap, acc, 0)) return -1;
    }
    return 0;
}

int kiln_gmatch_create(kiln_gmatch **out, const kiln_gram *g, const kiln_token_trie *t, kiln_gtables *tabs,
                       int cache_entries, kiln_error *err) {
    *out = NULL;
    kiln_gmatch *m = kiln_calloc(1, sizeof *m);
    if (!m) return KILN_ERR(err, KILN_ERR_OOM, "out of memory");
    m->g = g;
    m->t = t;
    m->words = t ? (t->vocab + 31) / 32 : 1;
    m->n_cache = cache_entries > 0 ? cache_entries : 0;
    m->nodes = kiln_malloc((size_t)ARENA_NODES * sizeof *m->nodes);
    m->tops = kiln_malloc((size_t)LEVEL_TOPS * sizeof *m->tops);
    m->lv = kiln_malloc((size_t)LEVEL_TOPS * sizeof *m->lv);
    m->remap = kiln_malloc((size_t)ARENA_NODES * sizeof *m->remap);
    m->key = kiln_malloc((size_t)KEY_CAP * sizeof *m->key);
    m->seen = kiln_calloc((size_t)ARENA_NODES, sizeof *m->seen);
    if (m->n_cache) {
        m->c_hash = kiln_calloc((size_t)m->n_cache, sizeof *m->c_hash);
        m->c_key = kiln_malloc((size_t)m->n_cache * KEY_CAP * sizeof *m->c_key);
        m->c_len = kiln_calloc((size_t)m->n_cache, sizeof *m->c_len);
        m->c_mask = kiln_malloc((size_t)m->n_cache * (size_t)m->words * sizeof *m->c_mask);
    }
    m->u_tmp = kiln_malloc((size_t)U_TMP * sizeof *m->u_tmp);
    m->tabs = tabs;
    if (!tabs && t) {
        kiln_error e2;
        if (kiln_gtables_create(&m->tabs, g, t, &e2) == KILN_OK) m->own_tabs = 1;
    }
    if (!m->nodes || !m->tops || !m->lv || !m->remap || !m->key || !m->seen || hc_rebuild(m) || (t && !m->tabs) ||
        !m->u_tmp ||
        (m->n_cache && (!m->c_hash || !m->c_key || !m->c_len || !m->c_mask))) {
        kiln_gmatch_free(m);
        return KILN_ERR(err, KILN_ERR_OOM, "out of memory for a grammar matcher");
    }
    /* the start state: root's alternatives expanded */
    int acc = 0;
    next_stamp(m);
    for (int a = g->rule_alt[g->root]; a < g->rule_alt[g->root + 1]; a++)
        if (norm(m, g->alts[a], -1, m->tops, &m->n_tops, LEVEL_TOPS, &acc, 0)) {
            kiln_gmatch_free(m);
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "grammar: the start state is too large");
        }
    m->accepting = acc;
    *out = m;
    return KILN_OK;
}

/* keep only the nodes the state's tops reach, renumbered (and reinterned); 0 or -1 (OOM) */
static int compact(kiln_gmatch *m) {
    for (int i = 0; i < m->n_nodes; i++) m->remap[i] = -1;
    for (int k = 0; k < m->n_tops; k++)
        for (int32_t x = m->tops[k]; x >= 0 && m->remap[x] == -1; x = m->nodes[x].parent) m->remap[x] = -2;
    int n = 0;
    for (int i = 0; i < m->n_nodes; i++) {
        if (m->remap[i] != -2) continue;
        int32_t p = m->nodes[i].parent;
        m->nodes[n].pos = m->nodes[i].pos;
        m->nodes[n].parent = p >= 0 ? m->remap[p] : -1;
        m->remap[i] = n++;
    }
    for (int k = 0; k < m->n_tops; k++) m->tops[k] = m->remap[m->tops[k]];
    m->n_nodes = n;
    return hc_rebuild(m);
}

int kiln_gmatch_forced(kiln_gmatch *m, uint8_t *out, int cap) {
    /* advance as accept does, in the arena above the state and the lv scratch, then forget it */
    const int32_t *el = m->g->elems;
    int base = m->n_nodes, n_cur = m->n_tops, acc = m->accepting, n = 0;
    int32_t *cur = m->tops, *bufs[2] = {m->lv, m->lv + LEVEL_TOPS / 2};
    while (n < cap && !acc && n_cur > 0) {
        uint32_t u[8] = {0};
        for (int k = 0; k < n_cur; k++) {
            const uint32_t *cls = m->g->classes[el[m->nodes[cur[k]].pos]];
            for (int w = 0; w < 8; w++) u[w] |= cls[w];
        }
        int bits = 0, c = -1;
        for (int w = 0; w < 8; w++)
            if (u[w]) {
                bits += __builtin_popcount(u[w]);
                c = w * 32 + __builtin_ctz(u[w]);
            }
        if (bits != 1) break;
        int32_t *nxt = bufs[n & 1];
        int n_out;
        if (advance(m, cur, n_cur, (uint8_t)c, nxt, &n_out, LEVEL_TOPS / 2, &acc)) break;
        out[n++] = (uint8_t)c;
        cur = nxt;
        n_cur = n_out;
    }
    m->n_nodes = base;
    return n;
}

int kiln_gmatch_accept(kiln_gmatch *m, const void *bytes, size_t n, kiln_error *err) {
    const uint8_t *b = bytes;
    int base = m->n_nodes;
    /* ping-pong between the two halves of lv */
    int32_t *cur = m->tops, *bufs[2] = {m->lv, m->lv + LEVEL_TOPS / 2};
    int n_cur = m->n_tops, acc = m->accepting;
    for (size_t i = 0; i < n; i++) {
        int32_t *out = bufs[i & 1];
        int n_out;
        if (advance(m, cur, n_cur, b[i], out, &n_out, LEVEL_TOPS / 2, &acc)) {
            m->n_nodes = base;
            return KILN_ERR(err, KILN_ERR_OOM, "grammar: the parse state outgrew its arena");
        }
        if (n_out == 0 && !(acc && i + 1 == n)) {
            m->n_nodes = base;
            return KILN_ERR(err, KILN_ERR_INVALID_ARG, "grammar: byte %zu (0x%02x) leaves the grammar", i, b[i]);
        }
        cur = out;
        n_cur = n_out;
    }
    if (n == 0) return KILN_OK;
    memcpy(m->tops, cur, (size_t)n_cur * sizeof *cur);
    m->n_tops = n_cur;
    m->accepting = acc;
    if (compact(m)) return KILN_ERR(err, KILN_ERR_OOM, "out of memory for a grammar matcher");
    return KILN_OK;
}

int kiln_gmatch_accepting(const kiln_gmatch *m) { return m->accepting; }
int kiln_gmatch_done(const kiln_gmatch *m) { return m->n_tops == 0; }

void kiln_gmatch_stats(const kiln_gmatch *m, uint64_t *computed, uint64_t *cached) {
    if (computed) *computed = m->n_computed;
    if (cached) *cached = m->n_cached;
}

/* the state as a key: each top's chain of positions, -1 between tops, the accept flag last;
 * its length, or -1 when longer than KEY_CAP */
static int make_key(const kiln_gmatch *m, int32_t *key) {
    int n = 0;
    for (int k = 0; k < m->n_tops; k++) {
        for (int32_t x = m->tops[k]; x >= 0; x = m->nodes[x].parent) {
            if (n >= KEY_CAP - 2) return -1;
            key[n++] = m->nodes[x].pos;
        }
        key[n++] = -1;
    }
    key[n++] = m->accepting;
    return n;
}

static uint64_t fnv(const int32_t *k, int n) {
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < n; i++) { h ^= (uint32_t)k[i]; h *= 1099511628211ull; }
    return h ? h : 1;
}

/* the table of top's frame (computed on first use), or NULL when the tables are full */
static pos_entry *entry(kiln_gmatch *m, kiln_gscratch *w, int32_t top, kiln_error *err, int *rc) {
    *rc = KILN_OK;
    kiln_gtables *tb = m->tabs;
    int32_t key[FRAME_K];
    int len = 0;
    int32_t x = top;
    for (; x >= 0 && len < FRAME_K; x = m->nodes[x].parent) key[len++] = m->nodes[x].pos;
    int truncated = x >= 0;
    uint64_t h = 1469598103934665603ull ^ (uint64_t)truncated;
    for (int k = 0; k < len; k++) { h ^= (uint32_t)key[k]; h *= 1099511628211ull; }
    uint32_t slot = (uint32_t)(h ^ (h >> 29)) & (POS_HASH - 1);
    for (;; slot = (slot + 1) & (POS_HASH - 1)) {
        int32_t i = tb->pe_of[slot];
        if (i < 0) break;
        pos_entry *e = &tb->pe[i];
        if (e->key_len == len && e->truncated == truncated && !memcmp(e->key, key, (size_t)len * sizeof *key)) return e;
    }
    if (tb->n_pe >= MAX_POS) return NULL;
    pos_entry *e = &tb->pe[tb->n_pe];
    e->A = kiln_calloc((size_t)m->words, sizeof *e->A);
    if (!e->A) { *rc = KILN_ERR(err, KILN_ERR_OOM, "out of memory for a grammar position table"); return NULL; }
    kiln_gscratch_reset(w);
    int nu = 0;
    int32_t s0 = kiln_gwalk_frame(w, key, len, truncated);
    *rc = kiln_gwalk(w, m->g, m->t, 0, m->t->n_nodes, 0, s0, e->A, m->u_tmp, U_TMP, &nu, err);
    if (*rc) { kiln_free(e->A); e->A = NULL; return NULL; }
    e->U = nu ? kiln_malloc((size_t)nu * sizeof *e->U) : NULL;
    if (nu && !e->U) { kiln_free(e->A); e->A = NULL; *rc = KILN_ERR(err, KILN_ERR_OOM, "out of memory"); return NULL; }
    if (nu) memcpy(e->U, m->u_tmp, (size_t)nu * sizeof *e->U);
    e->n_u = nu;
    memcpy(e->key, key, sizeof key);
    e->key_len = len;
    e->truncated = truncated;
    tb->pe_of[slot] = tb->n_pe++;
    m->n_walks++;
    return e;
}

int kiln_gmatch_mask(kiln_gmatch *m, kiln_gscratch *w, uint32_t *mask, kiln_error *err) {
    const kiln_token_trie *t = m->t;
    int kn = m->n_cache ? make_key(m, m->key) : -1;
    uint64_t h = kn > 0 ? fnv(m->key, kn) : 0;
    if (kn > 0)
        for (int c = 0; c < m->n_cache; c++)
            if (m->c_hash[c] == h && m->c_len[c] == kn && !memcmp(m->c_key + (size_t)c * KEY_CAP, m->key, (size_t)kn * sizeof *m->key)) {
                memcpy(mask, m->c_mask + (size_t)c * m->words, (size_t)m->words * sizeof *mask);
                m->n_cached++;
                return KILN_OK;
            }
    memset(mask, 0, (size_t)m->words * sizeof *mask);
    int rc = KILN_OK;
    /* 1. each top's position table (computed on first use) */
    pos_entry *es[256];
    int n_es = m->n_tops < 256 ? m->n_tops : 256, fallback = m->n_tops > 256;
    for (int k = 0; k < n_es && !rc && !fallback; k++) {
        es[k] = entry(m, w, m->tops[k], err, &rc);
        if (!es[k] && !rc) fallback = 1;
    }
    if (rc) return rc;
    kiln_gscratch_reset(w);
    if (fallback) { /* too many positions: walk the whole trie from the full state */
        int32_t *pos = m->u_tmp, *lens = m->u_tmp + LEVEL_TOPS, *chains = m->u_tmp + 2 * LEVEL_TOPS, nc = 0;
        for (int k = 0; k < m->n_tops; k++) {
            int32_t x = m->nodes[m->tops[k]].parent;
            int len = 0;
            for (int32_t y = x; y >= 0; y = m->nodes[y].parent) len++;
            if (nc + len > U_TMP - 2 * LEVEL_TOPS) return KILN_ERR(err, KILN_ERR_OOM, "grammar: state too deep");
            int q = nc + len;
            for (int32_t y = x; y >= 0; y = m->nodes[y].parent) chains[--q] = m->nodes[y].pos;
            nc += len;
            pos[k] = m->nodes[m->tops[k]].pos;
            lens[k] = len;
        }
        int32_t s0 = kiln_gwalk_state(w, m->g, pos, lens, chains, m->n_tops, 0);
        rc = kiln_gwalk(w, m->g, t, 0, t->n_nodes, 0, s0, mask, NULL, 0, NULL, err);
        if (rc) return rc;
        m->n_computed++;
    } else {
        /* 2. OR of the tables, then each exit subtree from the top's real continuation */
        for (int k = 0; k < n_es; k++) {
            int dup = 0;
            for (int j = 0; j < k; j++) dup |= es[j] == es[k];
            if (!dup) for (int i = 0; i < m->words; i++) mask[i] |= es[k]->A[i];
        }
        for (int k = 0; k < n_es && !rc; k++) {
            if (!es[k]->n_u || !es[k]->truncated) continue;
            int32_t par = m->tops[k]; /* the first ancestor below the frame: exits pop into it */
            for (int d = 0; d < FRAME_K; d++) par = m->nodes[par].parent;
            if (par < 0) continue;
            int len = 0;
            for (int32_t y = par; y >= 0; y = m->nodes[y].parent) len++;
            if (len > U_TMP) return KILN_ERR(err, KILN_ERR_OOM, "grammar: state too deep");
            int q = len;
            for (int32_t y = par; y >= 0; y = m->nodes[y].parent) m->u_tmp[--q] = m->nodes[y].pos;
            int32_t s = kiln_gwalk_pop(w, m->g, m->u_tmp, len);
            if (s == -1) continue;
            for (int j = 0; j < es[k]->n_u && !rc; j++) {
                int u = es[k]->U[j];
                rc = kiln_gwalk(w, m->g, t, u + 1, t->skip[u], t->depth[u], s, mask, NULL, 0, NULL, err);
            }
        }
        if (rc) return rc;
        m->n_computed++;
    }
    if (kn > 0) {
        int c = m->next;
        m->next = (m->next + 1) % m->n_cache;
        m->c_hash[c] = h;
        m->c_len[c] = kn;
        memcpy(m->c_key + (size_t)c * KEY_CAP, m->key, (size_t)kn * sizeof *m->key);
        memcpy(m->c_mask + (size_t)c * m->words, mask, (size_t)m->words * sizeof *mask);
    }
    return KILN_OK;
}
