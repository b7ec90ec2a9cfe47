/* constraint.c: constrained decoding in the engine (the grammar layer bound to the vocabulary).
 *
 * At the first compile, the tokenizer's non-special pieces become a token trie (kiln_token_trie,
 * once per engine, under gmu). kiln_engine_compile_grammar compiles a constraint on any thread; add_request gives
 * the request a matcher (its arena and mask cache allocated there, nothing later). When a
 * constrained row is sampled on the host, its mask is computed (or taken from the matcher's
 * cache), EOS and the request's stop ids are allowed only when the text so far is complete, and
 * the drawn token's bytes advance the matcher.
 *
 * Where the tokens are drawn matters: the mask of step n+1 depends on the token of step n. The
 * host sampler applies it to the host logits (e->gmask). A backend that draws the tokens itself
 * with masks (ops.masks: cuda, cpu with backend_sampling) gets each constrained row's mask with
 * the step (kiln_step.masks, one row per constrained draw, filled by the scheduler's
 * add_sampling through kiln_req_grammar_mask_into) and applies it after penalties, bias and
 * suppression, as the host sampler does. Overlapped scheduling encodes step n+1 before step n's
 * token is known, so it cannot build a constrained row's mask: while a constrained row has its
 * previous token in flight, the scheduler drains instead (stats.grammar_drains), which costs
 * the overlap of those steps, not a second wait. A backend that draws without masks refuses a
 * constrained request with KILN_ERR_UNSUPPORTED (open it with host_sampling = 1).
 *
 * Jump-forward (options.jump_forward): after a token, the bytes the grammar forces next (only one
 * continuation) are tokenized and all but the last of those tokens are appended as output at
 * once; the scheduler then computes them in one chunk with the next draw at its end, instead of
 * one step each. The last token is left to the model because it could merge with what follows
 * (a forced `{"name": "` ends in a quote the model may write as part of a longer piece). Tokens
 * whose pieces do not spell the forced bytes exactly are not forced.
 */
#include <stdatomic.h>
#include <string.h>
#include "engine/engine_internal.h"
#include "util/alloc.h"
#include "util/error.h"
#include "util/log.h"
#include "tokenizer/tokenizer.h"

#define GRAMMAR_CACHE_ENTRIES 64

/* A compiled constraint, shared: the engine's cache holds one reference, each request (and a
 * caller between compile and add_request) another. Its position tables are filled by the engine
 * thread only. */
struct kiln_grammar {
    kiln_gram g;
    kiln_gtables *tabs;
    atomic_int refs;
    int kind;
    char *text;
    size_t len;
};

int kiln_engine_grammar_init(kiln_engine *e, kiln_error *err) {
    if (pthread_mutex_init(&e->gmu, NULL)) return KILN_ERR(err, KILN_ERR_INTERNAL, "pthread_mutex_init failed");
    e->gmu_init = 1;
    return KILN_OK;
}

/* the trie, the walk scratch and the mask row, built by the first compile (under gmu): engines
 * that never constrain pay nothing at open (tekken's trie is 40-80 ms) */
static int build_trie(kiln_engine *e, kiln_error *err) {
    int V = kiln_tokenizer_vocab_size(e->tok);
    const char **pieces = kiln_malloc((size_t)V * sizeof *pieces);
    size_t *lens = kiln_malloc((size_t)V * sizeof *lens);
    uint8_t *skip = kiln_calloc((size_t)V, 1);
    int rc = KILN_OK;
    if (!pieces || !lens || !skip) rc = KILN_ERR(err, KILN_ERR_OOM, "out of memory for the token trie");
    for (int i = 0; !rc && i < V; i++) {
        pieces[i] = kiln_tok_piece(e->tok, i, &lens[i]);
        if (!pieces[i]) { pieces[i] = ""; lens[i] = 0; }
        skip[i] = (uint8_t)(kiln_tok_is_special(e->tok, i) != 0);
    }
    if (!rc) rc = kiln_token_trie_build(&e->trie, V, pieces, lens, skip, err);
    kiln_free(pieces);
    kiln_free(lens);
    kiln_free(skip);
    if (rc) return rc;
    size_t words = ((size_t)(e->model->cfg.vocab_size > V ? e->model->cfg.vocab_size : V) + 31) / 32 + 1;
    if ((rc = kiln_gscratch_create(&e->gscratch, e->trie.max_depth, err)) ||
        !(e->gmask = kiln_calloc(words, sizeof *e->gmask))) {
        kiln_gscratch_free(e->gscratch);
        e->gscratch = NULL;
        kiln_token_trie_free(&e->trie);
        return rc ? rc : KILN_ERR(err, KILN_ERR_OOM, "out of memory for the grammar mask");
    }
    e->has_trie = 1;
    return KILN_OK;
}

void kiln_engine_free_grammars(kiln_engine *e) {
    for (int i = 0; i < (int)(sizeof e->gcache / sizeof e->gcache[0]); i++) kiln_grammar_free(e->gcache[i]);
    if (e->gmu_init) pthread_mutex_destroy(&e->gmu);
    kiln_token_trie_free(&e->trie);
    kiln_gscratch_free(e->gscratch);
}

/* the cached grammar of (kind, text) with a new reference, or NULL */
static kiln_grammar *cache_get(kiln_engine *e, int kind, const char *text, size_t len) {
    kiln_grammar *hit = NULL;
    pthread_mutex_lock(&e->gmu);
    for (int i = 0; i < (int)(sizeof e->gcache / sizeof e->gcache[0]) && !hit; i++) {
        kiln_grammar *g = e->gcache[i];
        if (g && g->kind == kind && g->len == len && !memcmp(g->text, text, len)) {
            atomic_fetch_add(&g->refs, 1);
            hit = g;
            if (i > 0) { e->gcache[i] = e->gcache[0]; e->gcache[0] = g; } /* most recent first */
        }
    }
    pthread_mutex_unlock(&e->gmu);
    return hit;
}

/* keep g in the cache (one more reference), evicting the oldest entry */
static void cache_put(kiln_engine *e, kiln_grammar *g) {
    int n = (int)(sizeof e->gcache / sizeof e->gcache[0]);
    pthread_mutex_lock(&e->gmu);
    kiln_grammar *old = e->gcache[n - 1];
    memmove(e->gcache + 1, e->gcache, (size_t)(n - 1) * sizeof *e->gcache);
    e->gcache[0] = g;
    atomic_fetch_add(&g->refs, 1);
    pthread_mutex_unlock(&e->gmu);
    kiln_grammar_free(old);
}

int kiln_engine_compile_grammar(const kiln_engine *ce, kiln_constraint_kind kind, const char *text, size_t len,
                                kiln_grammar **out, kiln_error *err) {
    *out = NULL;
    if (!ce->tok || !ce->gmu_init) return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "constrained decoding needs the model's tokenizer");
    kiln_engine *e = (kiln_engine *)ce; /* the trie and the grammar cache are synchronised inside */
    pthread_mutex_lock(&e->gmu);
    int brc = e->has_trie ? KILN_OK : build_trie(e, err);
    pthread_mutex_unlock(&e->gmu);
    if (brc) return brc;
    if (!text) { text = ""; len = 0; }
    if ((*out = cache_get(e, kind, text, len))) return KILN_OK;
    kiln_grammar *g = kiln_calloc(1, sizeof *g);
    if (!g) return KILN_ERR(err, KILN_ERR_OOM, "out of memory");
    atomic_init(&g->refs, 1);
    g->kind = kind;
    g->len = len;
    g->text = kiln_malloc(len + 1);
    if (!g->text) { kiln_free(g); return KILN_ERR(err, KILN_ERR_OOM, "out of memory"); }
    memcpy(g->text, text, len);
    g->text[len] = 0;
    int rc;
    switch (kind) {
    case KILN_CONSTRAINT_JSON_SCHEMA: {
        char *t = kiln_malloc(len + 1);
        if (!t) { rc = KILN_ERR(err, KILN_ERR_OOM, "out of memory"); break; }
        memcpy(t, text, len);
        t[len] = 0;
        rc = kiln_gram_from_json_schema(&g->g, t, err);
        kiln_free(t);
        break;
    }
    case KILN_CONSTRAINT_JSON_OBJECT: {
        char *gb;
        rc = kiln_json_schema_to_gbnf(NULL, "", &gb, err);
        if (!rc) { rc = kiln_gram_from_gbnf(&g->g, gb, strlen(gb), err); kiln_free(gb); }
        break;
    }
    case KILN_CONSTRAINT_REGEX: rc = kiln_gram_from_regex(&g->g, text, len, err); break;
    case KILN_CONSTRAINT_CHOICE: rc = kiln_gram_from_choice(&g->g, text, len, err); break;
    case KILN_CONSTRAINT_GRAMMAR: rc = kiln_gram_from_gbnf(&g->g, text, len, err); break;
    default: rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "unknown constraint kind %d", (int)kind);
    }
    if (!rc) rc = kiln_gtables_create(&g->tabs, &g->g, &e->trie, err);
    if (rc) { kiln_gram_free(&g->g); kiln_free(g->text); kiln_free(g); return rc; }
    cache_put(e, g);
    *out = g;
    return KILN_OK;
}

void kiln_grammar_free(kiln_grammar *g) {
    if (!g || atomic_fetch_sub(&g->refs, 1) != 1) return;
    kiln_gram_free(&g->g);
    kiln_gtables_free(g->tabs);
    kiln_free(g->text);
    kiln_free(g);
}

/* for add_request: r gets its matcher */
int kiln_req_grammar_init(kiln_engine *e, kiln_req *r, kiln_grammar *g, kiln_error *err) {
    if (e->device_sample && !e->device_masks)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED,
                        "constrained decoding: the %s backend draws tokens without grammar masks: open the "
                        "engine with host_sampling = 1 (KILN_HOST_SAMPLING=1)", e->ops->name);
    if (e->strict && e->overlap && !e->warned_grammar_overlap) {
        /* strict mode: the fallback from overlapped scheduling is said, not silent */
        e->warned_grammar_overlap = 1;
        KILN_WARN("constrained decoding: steps with a constrained row are not overlapped (each waits for "
                  "the previous token before its mask is built; stats grammar_drains counts them)");
    }
    int rc = kiln_gmatch_create(&r->gm, &g->g, &e->trie, g->tabs, GRAMMAR_CACHE_ENTRIES, err);
    if (!rc) r->grammar = g;
    return rc;
}

int kiln_req_grammar_mask(kiln_engine *e, kiln_req *r, kiln_error *err) {
    return kiln_req_grammar_mask_into(e, r, e->gmask, err);
}

int kiln_req_grammar_mask_into(kiln_engine *e, kiln_req *r, uint32_t *out, kiln_error *err) {
    int words = (e->model->cfg.vocab_size + 31) / 32, tw = (e->trie.vocab + 31) / 32;
    if (tw > words) tw = words;
    for (int i = tw; i < words; i++) e->gmask[i] = 0;
    uint64_t c0, k0, c1, k1;
    kiln_gmatch_stats(r->gm, &c0, &k0);
    int rc = kiln_gmatch_mask(r->gm, e->gscratch, e->gmask, err);
    kiln_gmatch_stats(r->gm, &c1, &k1);
    e->stats.grammar_masks_computed += c1 - c0;
    e->stats.grammar_masks_cached += k1 - k0;
    if (rc) return rc;
    if (kiln_gmatch_accepting(r->gm)) {
        int V = e->model->cfg.vocab_size;
        for (int i = 0; i < e->model->cfg.n_eos; i++) {
            int id = e->model->cfg.eos_ids[i];
            if (id >= 0 && id < V) e->gmask[id >> 5] |= 1u << (id & 31);
        }
        for (int i = 0; i < r->n_stop_ids; i++) e->gmask[r->stop_ids[i] >> 5] |= 1u << (r->stop_ids[i] & 31);
    }
    /* the matcher writes the trie's words (the tokenizer's vocabulary may be the larger), the
     * step row holds the model's */
    if (out != e->gmask) memcpy(out, e->gmask, (size_t)words * sizeof *out);
    return KILN_OK;
}

void kiln_req_grammar_accept(kiln_engine *e, kiln_req *r, int32_t tok) {
    for (int i = 0; i < e->model->cfg.n_eos; i++) if (tok == e->model->cfg.eos_ids[i]) return;
    for (int i = 0; i < r->n_stop_ids; i++) if (tok == r->stop_ids[i]) return;
    size_t len = 0;
    const char *p = tok < e->trie.vocab ? kiln_tok_piece(e->tok, tok, &len) : NULL;
    kiln_error err;
    if (!p || kiln_gmatch_accept(r->gm, p, len, &err))
        KILN_WARN("request %llu: token %d does not continue its grammar (the mask allowed it)", (unsigned long long)r->id, tok);
}

#define JUMP_BYTES 96
#define JUMP_TOKENS 64

/* The longest token whose piece is a prefix of b[0..n) (the trie walked down b), or -1 */
static int32_t trie_longest(const kiln_token_trie *t, const uint8_t *b, int n, int *len) {
    int32_t best = -1, i = 0, end = t->n_nodes;
    *len = 0;
    for (int d = 1; d <= n && i < end; d++, i++) {
        while (i < end && t->byte[i] != b[d - 1]) i = t->skip[i]; /* the sibling with byte b[d - 1] */
        if (i >= end) break;
        if (t->tok_off[i + 1] > t->tok_off[i]) { best = t->toks[t->tok_off[i]]; *len = d; }
        end = t->skip[i]; /* its children follow it */
    }
    return best;
}

/* fb[0..nb) as tokens into ids (cap JUMP_TOKENS): the tokenizer's own encoding when its pieces
 * spell the bytes exactly (byte-level BPE, tekken), else longest pieces from the trie
 * (SentencePiece-style vocabularies prepend a space to a text's first word); returns the count */
static int forced_tokens(kiln_engine *e, const uint8_t *fb, int nb, int32_t *ids) {
    int32_t *enc = NULL;
    int n = 0, ok = 0;
    kiln_error err;
    if (!kiln_tokenizer_encode(e->tok, (const char *)fb, (size_t)nb, 0, &enc, &n, &err) && n <= JUMP_TOKENS) {
        size_t off = 0;
        ok = 1;
        for (int i = 0; i < n && ok; i++) {
            size_t len = 0;
            const char *p = enc[i] >= 0 && enc[i] < e->trie.vocab && !kiln_tok_is_special(e->tok, enc[i])
                                ? kiln_tok_piece(e->tok, enc[i], &len) : NULL;
            ok = p && len && off + len <= (size_t)nb && !memcmp(p, fb + off, len);
            off += len;
            ids[i] = enc[i];
        }
        ok = ok && off == (size_t)nb;
    }
    kiln_free(enc);
    if (ok) return n;
    n = 0;
    for (int off = 0; off < nb && n < JUMP_TOKENS;) {
        int len;
        int32_t id = trie_longest(&e->trie, fb + off, nb - off, &len);
        if (id < 0) break;
        ids[n++] = id;
        off += len;
    }
    return n;
}

int kiln_req_jump_forward(kiln_engine *e, kiln_req *r) {
    if (!r->gm || r->state != KILN_REQ_RUNNING || r->lp || r->sp.n_logprobs > 0) return 0;
    uint8_t fb[JUMP_BYTES];
    int32_t ids[JUMP_TOKENS];
    int nb = kiln_gmatch_forced(r->gm, fb, JUMP_BYTES);
    if (nb < 2) return 0; /* one byte is one token at most: nothing before the last to force */
    int n = forced_tokens(e, fb, nb, ids), done = 0;
    /* all but the last: it could merge with what the model writes next */
    for (int i = 0; i + 1 < n && r->state == KILN_REQ_RUNNING; i++) {
        kiln_req_grammar_accept(e, r, ids[i]);
        kiln_req_on_token(e, r, ids[i]);
        e->stats.grammar_forced_tokens++;
        done++;
    }
    return done;
}
