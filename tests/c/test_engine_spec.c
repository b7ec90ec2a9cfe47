/* kiln-layer: engine (links only this layer and those below it) */
/* test_engine_spec.c: speculative decoding with the n-gram proposer (issue 20) on the CPU.
 *
 * The CPU backend is batch invariant, so speculation may not change a single bit of any
 * request's output. One set of requests (greedy with top-5 logprobs, seeded top-p, top-k +
 * min-p, repetition / presence / frequency penalties, logit bias, min_tokens suppressing a stop
 * id, a stop id and a stop string that fall inside runs the proposer gets right, max_tokens 3,
 * the context limit, prompts sharing a prefix for prefix-cache hits, a regex-constrained request,
 * requests opted out) on prompts that repeat themselves (so proposals are often right, and
 * often wrong) runs:
 *   A. plain decoding: the reference;
 *   B. --speculative ngram with K = 4 and K = 7 / min 1: token ids, logprobs, top-n, finish
 *      reasons and text identical to A; proposals made, some accepted and some rejected; fewer
 *      steps than A; one wait per step, no allocation in the step loop, no block left in use;
 *   C. B under a KV pool small enough to force preemptions;
 *   D. B with an abort in the middle (the aborted request's tokens a prefix of its full run);
 *   E. every request opted out (no_speculation): no proposal at all, same output.
 * Also: the proposer itself on hand-made sequences; the prefix cache after speculation (a
 * request whose prompt is a speculated request's prompt + output reuses its blocks and decodes
 * exactly as without the cache: a block registered with the KV of a rejected proposal would
 * change it); refusals by name (the backend's own sampler, an unknown method, a draft model).
 * Models: tinystories-656K (with tokenizer: text, stop strings, grammar) and
 * mistral-tiny-random (ids only) from KILN_SHARED; each skips loudly when missing.
 * tests/cuda/test_cuda_spec.c runs the same suite on the cuda backend (SPEC_TEST_CUDA): in
 * batch-invariant mode, where a row's bits do not depend on the step around it, with host
 * sampling in runs A..F (the reference too), so everything must again be bit-identical; and G:
 * plain and speculative runs with the backend's own sampler drawing every verification row. */
#include <stdint.h>
#include <stdlib.h>
#include "engine/engine.h"
#include "engine/engine_internal.h"
#include "test.h"
#include "util/alloc.h"

#define NR 14
#define MAXO 160
#define NTOP 5

typedef struct result {
    int32_t ids[MAXO];
    float lp[MAXO];
    kiln_token_logprob top[MAXO][NTOP];
    int n;
    kiln_finish fin;
    char text[8192];
    size_t tl;
} result;

typedef struct run_stats {
    kiln_engine_stats st;
    uint64_t allocs;
} run_stats;

static const char *g_model, *g_tok, *g_other; /* g_other: another model of the same vocabulary size */
static int g_vocab;

static const char *g_draft; /* open_spec's draft model (NULL: none) */

#ifdef SPEC_TEST_CUDA
static const int g_cuda = 1;
#else
static const int g_cuda = 0;
#endif
static int g_device; /* cuda: the backend's sampler draws (verification rows too) */

static kiln_engine *open_spec(const char *method, int k, int nmin, int kv_blocks) {
    kiln_engine_options o;
    kiln_engine_options_default(&o);
    if (g_cuda) {
        o.backend = "cuda";
        o.batch_invariant = 1;
        o.host_sampling = !g_device;
    }
    o.model_path = g_model;
    o.tokenizer_path = g_tok;
    o.skip_tokenizer = g_tok == NULL;
    o.max_seqs = 8;
    o.max_model_len = 160;
    o.kv_blocks = kv_blocks;
    o.kv_memory_mb = 32;
    o.max_batch_tokens = 48; /* chunked prefills; proposals compete for the budget */
    o.spec.method = method;
    o.spec.num_speculative_tokens = k;
    o.spec.ngram_min = nmin;
    o.draft_model_path = g_draft;
    kiln_engine *e = NULL;
    kiln_error err = {0};
    if (kiln_engine_open(&e, &o, &err)) fprintf(stderr, "open %s: %s\n", g_model, err.msg);
    return e;
}

static int poll_into(kiln_engine *e, uint64_t id, result *r, int *done) {
    kiln_output o;
    kiln_error err = {0};
    if (kiln_engine_poll(e, id, &o, &err)) { fprintf(stderr, "poll: %s\n", err.msg); return -1; }
    for (int k = 0; k < o.n_new && r->n < MAXO; k++) {
        r->lp[r->n] = o.logprobs ? o.logprobs[k] : 0;
        for (int j = 0; j < o.n_logprobs && j < NTOP; j++) r->top[r->n][j] = o.top[(size_t)k * o.n_logprobs + j];
        r->ids[r->n++] = o.new_ids[k];
    }
    if (r->tl + o.text_len < sizeof r->text) {
        memcpy(r->text + r->tl, o.text_delta, o.text_len);
        r->tl += o.text_len;
    }
    if (o.finish) { r->fin = o.finish; *done += 1; }
    return 0;
}

static const char *k_regex = "(once|one day|the) [a-z]+( [a-z]+)*\\.";

/* Requests added before step call add_at[i]; abort_idx aborted before call abort_at. Request
 * 13 (with a tokenizer) gets a regex grammar compiled for this engine. */
static int run(kiln_engine *e, kiln_request_params *ps, const int *add_at, int n, int abort_idx, int abort_at,
               result *res, run_stats *rs) {
    uint64_t ids[NR];
    int done = 0, call = 0, active = 1;
    kiln_error err = {0};
    memset(res, 0, sizeof(result) * (size_t)n);
    memset(rs, 0, sizeof *rs);
    kiln_engine_stats s0;
    kiln_engine_get_stats(e, &s0);
    while ((done < n || active) && call < 5000) {
        if (abort_idx >= 0 && call == abort_at &&
            (kiln_engine_abort(e, ids[abort_idx], &err) || poll_into(e, ids[abort_idx], &res[abort_idx], &done)))
            return -1;
        for (int i = 0; i < n; i++) {
            if (add_at[i] != call) continue;
            kiln_request_params p = ps[i];
            if (i == 13 && g_tok && !g_device && /* (grammars: host sampling only) */
                kiln_engine_compile_grammar(e, KILN_CONSTRAINT_REGEX, k_regex, strlen(k_regex), &p.grammar, &err)) {
                fprintf(stderr, "grammar: %s\n", err.msg);
                return -1;
            }
            if (kiln_engine_add_request(e, &p, &ids[i], &err)) {
                fprintf(stderr, "add %d: %s\n", i, err.msg);
                return -1;
            }
        }
        uint64_t a0 = kiln_alloc_count();
        if (kiln_engine_step(e, &active, &err)) { fprintf(stderr, "step: %s\n", err.msg); return -1; }
        rs->allocs += kiln_alloc_count() - a0;
        call++;
        for (int i = 0; i < n; i++)
            if (add_at[i] < call && !res[i].fin && poll_into(e, ids[i], &res[i], &done)) return -1;
    }
    kiln_engine_get_stats(e, &rs->st);
    rs->st.steps -= s0.steps;
    rs->st.syncs -= s0.syncs;
    rs->st.preemptions -= s0.preemptions;
    rs->st.prefix_cache_hits -= s0.prefix_cache_hits;
    rs->st.spec_drafts -= s0.spec_drafts;
    rs->st.spec_draft_tokens -= s0.spec_draft_tokens;
    rs->st.spec_accepted_tokens -= s0.spec_accepted_tokens;
    return call;
}

static int same(const result *a, const result *b, int n_top, char *why, size_t wl) {
    if (a->n != b->n) return snprintf(why, wl, "%d vs %d tokens", a->n, b->n), 0;
    for (int k = 0; k < a->n; k++) {
        if (a->ids[k] != b->ids[k]) return snprintf(why, wl, "token %d: id %d vs %d", k, a->ids[k], b->ids[k]), 0;
        if (memcmp(&a->lp[k], &b->lp[k], sizeof(float)) != 0)
            return snprintf(why, wl, "token %d: logprob %.9g vs %.9g", k, (double)a->lp[k], (double)b->lp[k]), 0;
        for (int j = 0; j < n_top; j++)
            if (a->top[k][j].id != b->top[k][j].id || memcmp(&a->top[k][j].logprob, &b->top[k][j].logprob, sizeof(float)))
                return snprintf(why, wl, "token %d: top %d differs", k, j), 0;
    }
    if (a->fin != b->fin) return snprintf(why, wl, "finish %d vs %d", a->fin, b->fin), 0;
    if (a->tl != b->tl || memcmp(a->text, b->text, a->tl) != 0) return snprintf(why, wl, "text differs"), 0;
    return 1;
}

static int32_t g_prompts[NR][64];
static int32_t g_bias_ids[2], g_stop_id[1], g_supp_id[1];
static int g_supp_at;
static float g_bias_vals[2] = {4.0f, -100.0f};
static char g_stop_str[16];
static const char *g_stops[1] = {g_stop_str};

/* a random run of n/2 ids, then the same run again (proposals find it) */
static void make_prompt(int32_t *p, int n, int seed) {
    p[0] = 1;
    unsigned long long s = (unsigned long long)seed * 7919 + 17;
    int half = n / 2;
    for (int i = 1; i < half; i++) p[i] = 3 + (int)(kt_rand_u64(&s) % (unsigned)(g_vocab - 3));
    for (int i = half; i < n; i++) p[i] = p[i - half + 1];
}

static void make_params(kiln_request_params *p, int i) {
    kiln_request_params_default(p);
    if (i < 10) {
        make_prompt(g_prompts[i], 12 + 3 * i, 100 + i);
        p->prompt_ids = g_prompts[i];
        p->n_prompt = 12 + 3 * i;
    } else { /* 10..13 share one 48-token prompt (prefix-cache hits), made by suite() */
        p->prompt_ids = g_prompts[10];
        p->n_prompt = 48;
    }
    p->max_tokens = 40 + 3 * i;
    p->ignore_eos = 1;
    kiln_sampling *sp = &p->sampling;
    sp->logprobs = 1;
    sp->has_seed = 1;
    sp->seed = 42 + (uint64_t)i;
    sp->temperature = 0;
    switch (i) {
    case 0: sp->n_logprobs = NTOP; break;
    case 1: sp->temperature = 0.8f; sp->top_p = 0.9f; break;
    case 2: sp->temperature = 1.0f; sp->top_k = 20; sp->min_p = 0.05f; sp->n_logprobs = 3; break;
    case 3:
        sp->temperature = 0.7f;
        sp->repetition_penalty = 1.3f;
        sp->presence_penalty = 0.5f;
        sp->frequency_penalty = 0.4f;
        sp->n_logprobs = 2;
        break;
    case 4:
        sp->temperature = 1.2f;
        sp->bias_ids = g_bias_ids;
        sp->bias_values = g_bias_vals;
        sp->n_bias = 2;
        p->no_speculation = 1; /* opted out, in a batch that speculates */
        break;
    case 5: /* greedy as request 0, a stop id first drawn at g_supp_at with min_tokens g_supp_at */
        p->prompt_ids = g_prompts[0];
        p->n_prompt = 12;
        p->stop_ids = g_supp_id;
        p->n_stop_ids = 1;
        p->min_tokens = g_supp_at;
        break;
    case 6: /* greedy as request 0 with a stop id it draws inside an accepted run */
        p->prompt_ids = g_prompts[0];
        p->n_prompt = 12;
        p->stop_ids = g_stop_id;
        p->n_stop_ids = 1;
        break;
    case 7: /* greedy as request 0 with a stop string from its text */
        p->prompt_ids = g_prompts[0];
        p->n_prompt = 12;
        if (g_tok) {
            p->stop_strings = g_stops;
            p->n_stop_strings = 1;
        }
        break;
    case 8: p->max_tokens = 3; sp->temperature = 0.9f; break;
    case 9: p->max_tokens = -1; sp->temperature = 0.6f; sp->frequency_penalty = -0.5f; break; /* to the context limit */
    case 13: /* greedy, constrained by a regex (with a tokenizer), EOS allowed */
        p->ignore_eos = 0;
        p->max_tokens = 60;
        break;
    default: /* 10..12: same long prompt, EOS allowed, seeded */
        p->ignore_eos = 0;
        sp->temperature = i == 12 ? 0.0f : 0.9f;
        sp->top_k = 50;
        sp->seed = 7;
        p->max_tokens = 60;
        break;
    }
}

static const int k_add_at[NR] = {0, 0, 0, 1, 1, 2, 3, 3, 4, 5, 0, 6, 11, 2};

static void check_run(const char *what, const result *ref, const result *got, const kiln_request_params *ps, int skip) {
    for (int i = 0; i < NR; i++) {
        if (i == skip) continue;
        char why[256] = "";
        KT_CHECK(same(&got[i], &ref[i], ps[i].sampling.n_logprobs, why, sizeof why), "%s: %s: request %d: %s", g_model,
                 what, i, why);
    }
}

static uint64_t g_allocs_a; /* allocations in run A's step loop (the grammar matcher's caches) */

static void check_stats(const char *what, const run_stats *rs) {
    KT_CHECK(rs->st.syncs == rs->st.steps && rs->st.steps > 0, "%s: %s: %llu syncs for %llu steps", g_model, what,
             (unsigned long long)rs->st.syncs, (unsigned long long)rs->st.steps);
    /* I7: speculation allocates nothing in the step loop (the constrained request's matcher
     * caches allocate as they do without it) */
    KT_CHECK(rs->allocs <= g_allocs_a, "%s: %s: I7: %llu allocations in the step loop (plain: %llu)", g_model, what,
             (unsigned long long)rs->allocs, (unsigned long long)g_allocs_a);
    KT_CHECK(rs->st.kv_blocks_used == 0, "%s: %s: %d blocks still used", g_model, what, rs->st.kv_blocks_used);
}

/* real: a trained model (its output repeats the prompt, proposals get accepted); the random
 * model's rarely are: only printed */
static void check_spec(const char *what, const run_stats *rs, int real) {
    const kiln_engine_stats *s = &rs->st;
    KT_CHECK(!real || (s->spec_drafts > 0 && s->spec_accepted_tokens > 0 && s->spec_accepted_tokens < s->spec_draft_tokens),
             "%s: %s: %llu proposals of %llu tokens, %llu accepted (want some accepted and some rejected)", g_model, what,
             (unsigned long long)s->spec_drafts, (unsigned long long)s->spec_draft_tokens,
             (unsigned long long)s->spec_accepted_tokens);
    uint64_t sum = 0;
    for (int j = 0; j < KILN_SPEC_MAX_TOKENS; j++) {
        sum += s->spec_accepted_per_pos[j];
        if (j > 0)
            KT_CHECK(s->spec_accepted_per_pos[j] <= s->spec_accepted_per_pos[j - 1],
                     "%s: %s: more accepted at position %d than at %d", g_model, what, j, j - 1);
    }
    (void)sum; /* per-position counts are cumulative over the engine's life; totals checked above */
    printf("%s: %s: %llu steps, %llu proposals, %llu tokens proposed, %llu accepted (%.1f%%), %llu preemptions\n", g_model,
           what, (unsigned long long)s->steps, (unsigned long long)s->spec_drafts, (unsigned long long)s->spec_draft_tokens,
           (unsigned long long)s->spec_accepted_tokens,
           s->spec_draft_tokens ? 100.0 * (double)s->spec_accepted_tokens / (double)s->spec_draft_tokens : 0.0,
           (unsigned long long)s->preemptions);
}

static result g_ref[NR], g_got[NR], g_solo[2];

static void test_proposer(void) {
    int32_t out[8];
    /* latest earlier occurrence of the longest suffix */
    int32_t a[] = {5, 6, 7, 8, 9, 5, 6, 7, 1, 2, 5, 6, 7};
    int n = kiln_spec_ngram_propose(a, 13, 1, 3, 4, out);
    KT_CHECK(n == 4 && out[0] == 1 && out[1] == 2 && out[2] == 5 && out[3] == 6, "ngram: latest occurrence: %d (%d %d %d)",
             n, out[0], out[1], out[2]);
    /* a longer match wins over a later shorter one */
    int32_t b[] = {4, 7, 1, 2, 3, 9, 7, 3, 8, 7};
    n = kiln_spec_ngram_propose(b, 10, 1, 2, 2, out); /* suffix "8 7": none; "7": latest at 6 -> 3 8 */
    KT_CHECK(n == 2 && out[0] == 3 && out[1] == 8, "ngram: one-token match: %d (%d %d)", n, out[0], out[1]);
    int32_t c[] = {4, 7, 1, 2, 3, 9, 7, 5, 4, 7};
    n = kiln_spec_ngram_propose(c, 10, 1, 2, 2, out); /* "4 7" at 0 (-> 1 2) beats "7" at 6 (-> 5 4) */
    KT_CHECK(n == 2 && out[0] == 1 && out[1] == 2, "ngram: longest match first: %d (%d %d)", n, out[0], out[1]);
    n = kiln_spec_ngram_propose(c, 10, 3, 3, 2, out); /* min 3: "9 4 7"... "5 4 7" never seen before */
    KT_CHECK(n == 0, "ngram: min length not met: %d", n);
    n = kiln_spec_ngram_propose(a, 13, 1, 3, 1, out);
    KT_CHECK(n == 1 && out[0] == 1, "ngram: k caps the proposal: %d", n);
    int32_t d[] = {3, 3, 3};
    n = kiln_spec_ngram_propose(d, 3, 1, 2, 4, out); /* "3 3" at 0 -> only one token follows it */
    KT_CHECK(n == 1 && out[0] == 3, "ngram: proposal cut at the end of the context: %d", n);
    KT_CHECK(kiln_spec_ngram_propose(d, 1, 1, 2, 4, out) == 0, "ngram: one token proposes nothing");
}

static void suite(void) {
    kiln_request_params ps[NR];
    run_stats rs;
    int zero = 0;
    make_params(&ps[0], 0);
    make_prompt(g_prompts[10], 48, 999);
    memcpy(g_prompts[10], g_prompts[0], 12 * sizeof(int32_t)); /* 10..13 share a prefix with 0 too */
    g_bias_ids[0] = 5 % g_vocab;
    g_bias_ids[1] = 7 % g_vocab;
    kiln_engine *e = open_spec(NULL, 0, 0, 0);
    if (!e) { KT_CHECK(0, "open %s", g_model); return; }
    if (run(e, &ps[0], &zero, 1, -1, 0, g_solo, &rs) < 0 || g_solo[0].n < 30) {
        KT_CHECK(0, "%s: reference run of request 0", g_model);
        kiln_engine_close(e);
        return;
    }
    g_stop_id[0] = g_solo[0].ids[22];
    const kiln_config *mc = &kiln_engine_model(e)->cfg;
    g_supp_at = -1;
    for (int k = 5; k < 25 && g_supp_at < 0; k++) {
        int ok = 1;
        for (int j = 0; j < k; j++) {
            ok &= g_solo[0].ids[j] != g_solo[0].ids[k];
            for (int q = 0; q < mc->n_eos; q++) ok &= g_solo[0].ids[j] != mc->eos_ids[q];
        }
        for (int q = 0; q < mc->n_eos; q++) ok &= g_solo[0].ids[k] != mc->eos_ids[q];
        if (ok) g_supp_at = k;
    }
    if (g_supp_at < 0) g_supp_at = 5;
    g_supp_id[0] = g_solo[0].ids[g_supp_at];
    if (g_tok) {
        size_t at = g_solo[0].tl > 60 ? 40 : g_solo[0].tl / 2;
        size_t len = g_solo[0].tl - at < 5 ? g_solo[0].tl - at : 5;
        memcpy(g_stop_str, g_solo[0].text + at, len);
        g_stop_str[len] = 0;
    }
    for (int i = 0; i < NR; i++) make_params(&ps[i], i);

    /* A: the reference, plain decoding */
    int calls = run(e, ps, k_add_at, NR, -1, 0, g_ref, &rs);
    KT_CHECK(calls > 0, "%s: run A failed", g_model);
    g_allocs_a = rs.allocs;
    KT_CHECK(g_tok || rs.allocs == 0, "%s: A: %llu allocations in the step loop", g_model, (unsigned long long)rs.allocs);
    check_stats("A plain", &rs);
    KT_CHECK(rs.st.spec_drafts == 0, "%s: A: proposals without speculation", g_model);
    KT_CHECK(rs.st.prefix_cache_hits > 0, "%s: A: no prefix cache hit", g_model);
    KT_CHECK(g_ref[6].fin == KILN_FINISH_STOP && g_ref[6].ids[g_ref[6].n - 1] == g_stop_id[0], "%s: stop id did not stop",
             g_model);
    if (g_tok) KT_CHECK(g_ref[7].fin == KILN_FINISH_STOP, "%s: the stop string '%s' did not stop", g_model, g_stop_str);
    KT_CHECK(g_ref[8].n == 3, "%s: max_tokens 3: %d tokens", g_model, g_ref[8].n);
    uint64_t steps_a = rs.st.steps;
    printf("%s: A: %llu steps\n", g_model, (unsigned long long)steps_a);
    kiln_engine_close(e);

    /* B: speculation, K = 4 (min 2) and K = 7 (min 1: more and worse proposals) */
    for (int v = 0; v < 2; v++) {
        e = open_spec("ngram", v ? 7 : 4, v ? 1 : 0, 0);
        if (!e) { KT_CHECK(0, "%s: open with speculation", g_model); continue; }
        const char *what = v ? "B ngram k7" : "B ngram k4";
        run(e, ps, k_add_at, NR, -1, 0, g_got, &rs);
        check_run(what, g_ref, g_got, ps, -1);
        check_stats(what, &rs);
        check_spec(what, &rs, g_tok != NULL);
        KT_CHECK(rs.st.spec_drafts > 0 || !v, "%s: %s: no proposal", g_model, what);
        KT_CHECK(rs.st.steps < steps_a || !g_tok, "%s: %s: %llu steps, plain %llu", g_model, what, (unsigned long long)rs.st.steps,
                 (unsigned long long)steps_a);
        KT_CHECK(rs.st.prefix_cache_hits > 0, "%s: %s: no prefix cache hit", g_model, what);
        if (v == 0) {
            /* the prefix cache after speculation: request 0's prompt + its first 40 output tokens
             * as a prompt (its blocks were registered while it speculated) decodes greedily as it
             * does on an engine without the cache */
            static int32_t p2[64 + MAXO];
            int np = 12 + 40;
            memcpy(p2, g_prompts[0], 12 * sizeof(int32_t));
            memcpy(p2 + 12, g_ref[0].ids, 40 * sizeof(int32_t));
            kiln_request_params q;
            kiln_request_params_default(&q);
            q.prompt_ids = p2;
            q.n_prompt = np;
            q.max_tokens = 30;
            q.ignore_eos = 1;
            q.sampling.temperature = 0;
            q.sampling.logprobs = 1;
            run(e, &q, &zero, 1, -1, 0, &g_solo[0], &rs);
            KT_CHECK(rs.st.prefix_cache_hits >= 48, "%s: prefix cache after speculation: %llu hits", g_model,
                     (unsigned long long)rs.st.prefix_cache_hits);
            kiln_engine *f = open_spec(NULL, 0, 0, 0);
            if (f) {
                kiln_request_params q2 = q;
                run(f, &q2, &zero, 1, -1, 0, &g_solo[1], &rs);
                char why[256] = "";
                KT_CHECK(same(&g_solo[0], &g_solo[1], 0, why, sizeof why), "%s: cached prefix after speculation: %s", g_model,
                         why);
                kiln_engine_close(f);
            }
        }
        kiln_engine_close(e);
    }

    /* C: preemption (a 14-block pool: 224 slots for requests of up to 160) */
    e = open_spec("ngram", 4, 0, 14);
    if (e) {
        run(e, ps, k_add_at, NR, -1, 0, g_got, &rs);
        check_run("C ngram + preemption", g_ref, g_got, ps, -1);
        check_stats("C ngram + preemption", &rs);
        check_spec("C ngram + preemption", &rs, g_tok != NULL);
        KT_CHECK(rs.st.preemptions > 0, "%s: C: no preemption", g_model);
        kiln_engine_close(e);
    }

    /* D: abort request 3 before call 9 */
    e = open_spec("ngram", 4, 0, 0);
    if (e) {
        run(e, ps, k_add_at, NR, 3, 9, g_got, &rs);
        check_run("D ngram + abort", g_ref, g_got, ps, 3);
        check_stats("D ngram + abort", &rs);
        const result *a = &g_got[3], *r = &g_ref[3];
        KT_CHECK(a->fin == KILN_FINISH_ABORT && a->n > 0 && a->n < r->n && memcmp(a->ids, r->ids, (size_t)a->n * 4) == 0,
                 "%s: D: aborted request: finish %d, %d tokens (full run %d)", g_model, a->fin, a->n, r->n);
        kiln_engine_close(e);
    }

    /* F: a draft model: the target itself, then another model of the same vocabulary; plain,
     * under preemption, with an abort (the target itself; the other model plain only). Greedy
     * requests decode exactly as plain; sampled ones
     * follow the rejection rule (same distribution, other draws): each run again gives the
     * same tokens (seeded), and every request ends as its limits say */
    const char *drafts[2] = {g_model, g_other};
    static result g_got2[NR];
    for (int dv = 0; dv < 2; dv++) {
        if (!drafts[dv] || !kt_exists(drafts[dv])) { fprintf(stderr, "SKIP draft %d: absent\n", dv); continue; }
        for (int mode = 0; mode < (dv ? 1 : 3); mode++) { /* the other model: plain only (CI time) */
            g_draft = drafts[dv];
            e = open_spec(NULL, 3, 0, mode == 1 ? 14 : 0);
            g_draft = NULL;
            char what[96];
            snprintf(what, sizeof what, "F draft %s%s", dv ? "other model" : "= target",
                     mode == 1 ? " + preemption" : mode == 2 ? " + abort" : "");
            if (!e) { KT_CHECK(0, "%s: %s: open", g_model, what); continue; }
            run(e, ps, k_add_at, NR, mode == 2 ? 3 : -1, 9, g_got, &rs);
            check_stats(what, &rs);
            for (int i = 0; i < NR; i++) {
                char why[256] = "";
                if (mode == 2 && i == 3) continue;
                if (ps[i].sampling.temperature == 0.0f)
                    KT_CHECK(same(&g_got[i], &g_ref[i], ps[i].sampling.n_logprobs, why, sizeof why), "%s: %s: request %d: %s",
                             g_model, what, i, why);
                else
                    KT_CHECK(g_got[i].fin == KILN_FINISH_LENGTH || g_got[i].fin == KILN_FINISH_STOP,
                             "%s: %s: request %d: finish %d", g_model, what, i, g_got[i].fin);
            }
            KT_CHECK(g_got[8].n == 3, "%s: %s: max_tokens 3: %d tokens", g_model, what, g_got[8].n);
            KT_CHECK(g_got[9].n == 160 - ps[9].n_prompt, "%s: %s: context limit: %d tokens", g_model, what, g_got[9].n);
            KT_CHECK(rs.st.spec_drafts > 0 && (dv || rs.st.spec_accepted_tokens > 0), "%s: %s: %llu proposals, %llu accepted",
                     g_model, what, (unsigned long long)rs.st.spec_drafts, (unsigned long long)rs.st.spec_accepted_tokens);
            check_spec(what, &rs, 0);
            if (mode == 1) KT_CHECK(rs.st.preemptions > 0, "%s: %s: no preemption", g_model, what);
            if (mode == 0) { /* seeded: the same again on a fresh engine */
                kiln_engine_close(e);
                g_draft = drafts[dv];
                e = open_spec(NULL, 3, 0, 0);
                g_draft = NULL;
                if (e) {
                    run(e, ps, k_add_at, NR, -1, 0, g_got2, &rs);
                    for (int i = 0; i < NR; i++) {
                        char why[256] = "";
                        KT_CHECK(same(&g_got2[i], &g_got[i], ps[i].sampling.n_logprobs, why, sizeof why),
                                 "%s: %s: request %d not reproducible: %s", g_model, what, i, why);
                    }
                }
            }
            kiln_engine_close(e);
        }
    }

    /* G (cuda): the backend's sampler draws, the verification rows too (each at its own output
     * position), for the requests it can verify (kiln_spec_device_ok: no penalties, no draft
     * rule, min_tokens reached; request 13 unconstrained here): plain and speculative runs with
     * device sampling give identical tokens, logprobs and top-n */
    if (g_cuda) {
        static result g_dref[NR];
        g_device = 1;
        e = open_spec(NULL, 0, 0, 0);
        if (e) {
            KT_CHECK(e->device_sample && e->overlap, "%s: G: plain cuda engine: device sampling %d, overlap %d", g_model,
                     e->device_sample, e->overlap);
            run(e, ps, k_add_at, NR, -1, 0, g_dref, &rs);
            check_stats("G plain, device sampling", &rs);
            kiln_engine_close(e);
        }
        /* v 2: a draft model (the target itself): greedy requests verified on the device, the
         * sampled and penalised ones decode plainly (their proposals dropped): all as plain */
        for (int v = 0; v < 3; v++) {
            if (v == 2) g_draft = g_model;
            e = v == 2 ? open_spec(NULL, 3, 0, 0) : open_spec("ngram", 4, 0, v ? 14 : 0);
            g_draft = NULL;
            const char *what = v == 2 ? "G draft = target, device sampling"
                               : v   ? "G ngram k4, device sampling + preemption"
                                     : "G ngram k4, device sampling";
            if (!e) { KT_CHECK(0, "%s: %s: open", g_model, what); continue; }
            KT_CHECK(e->device_sample && !e->overlap, "%s: %s: device sampling %d, overlap %d", g_model, what,
                     e->device_sample, e->overlap);
            run(e, ps, k_add_at, NR, -1, 0, g_got, &rs);
            check_run(what, g_dref, g_got, ps, -1);
            check_stats(what, &rs);
            check_spec(what, &rs, v < 2 && g_tok != NULL);
            if (v == 2)
                KT_CHECK(rs.st.spec_drafts > 0 && rs.st.spec_accepted_tokens > 0, "%s: %s: %llu proposals, %llu accepted",
                         g_model, what, (unsigned long long)rs.st.spec_drafts,
                         (unsigned long long)rs.st.spec_accepted_tokens);
            if (v == 1) KT_CHECK(rs.st.preemptions > 0, "%s: %s: no preemption", g_model, what);
            kiln_engine_close(e);
        }
        g_device = 0;
    }

    /* E: every request opted out */
    e = open_spec("ngram", 4, 0, 0);
    if (e) {
        kiln_request_params po[NR];
        for (int i = 0; i < NR; i++) { po[i] = ps[i]; po[i].no_speculation = 1; }
        run(e, po, k_add_at, NR, -1, 0, g_got, &rs);
        check_run("E opted out", g_ref, g_got, ps, -1);
        KT_CHECK(rs.st.spec_drafts == 0 && rs.st.steps == steps_a, "%s: E: %llu proposals, %llu steps (plain %llu)", g_model,
                 (unsigned long long)rs.st.spec_drafts, (unsigned long long)rs.st.steps, (unsigned long long)steps_a);
        kiln_engine_close(e);
    }
}

/* a backend that returns one logits row per sequence (ops.max_logits_per_seq 1) is refused by
 * name before anything runs */
static void test_backend_refusal(void) {
    kiln_backend_ops ops = *kiln_backend_cpu_ops();
    ops.name = "onerow";
    ops.max_logits_per_seq = 1;
    kiln_engine fake;
    memset(&fake, 0, sizeof fake);
    fake.ops = &ops;
    kiln_engine_options o;
    kiln_engine_options_default(&o);
    o.spec.method = "ngram";
    kiln_error err = {0};
    int rc = kiln_spec_init(&fake, &o, &err);
    KT_CHECK(rc == KILN_ERR_UNSUPPORTED && strstr(err.msg, "not supported by the onerow backend") && fake.spec_k == 0,
             "one logits row per sequence: %d %s", rc, err.msg);
    ops.max_logits_per_seq = 5; /* K = 4 needs 5 */
    rc = kiln_spec_init(&fake, &o, &err);
    KT_CHECK(rc == KILN_OK && fake.spec_k == 4, "five rows for K = 4: %d %s", rc, err.msg);
    o.spec.num_speculative_tokens = 5;
    rc = kiln_spec_init(&fake, &o, &err);
    KT_CHECK(rc == KILN_ERR_UNSUPPORTED, "five rows for K = 5: %d", rc);
    o.spec.method = NULL; /* off: nothing asked of the backend */
    KT_CHECK(kiln_spec_init(&fake, &o, &err) == KILN_OK && fake.spec_k == 0, "off: %s", err.msg);
}

static void test_refusals(void) {
    kiln_engine_options o;
    kiln_engine_options_default(&o);
    o.model_path = g_model;
    o.tokenizer_path = g_tok;
    o.skip_tokenizer = g_tok == NULL;
    o.max_model_len = 64;
    o.kv_memory_mb = 4;
    o.spec.method = "ngram";
    o.cpu.backend_sampling = 1;
    kiln_engine *e = NULL;
    kiln_error err = {0};
    int rc = kiln_engine_open(&e, &o, &err);
    KT_CHECK(rc == KILN_ERR_UNSUPPORTED && strstr(err.msg, "speculative"), "backend sampling + speculation: %d %s", rc,
             err.msg);
    kiln_engine_close(e);
    e = NULL;
    o.cpu.backend_sampling = 0;
    o.spec.method = "eagle";
    rc = kiln_engine_open(&e, &o, &err);
    KT_CHECK(rc == KILN_ERR_INVALID_ARG && strstr(err.msg, "eagle"), "unknown method: %d %s", rc, err.msg);
    kiln_engine_close(e);
    e = NULL;
    o.spec.method = "ngram";
    o.spec.num_speculative_tokens = KILN_SPEC_MAX_TOKENS + 1;
    rc = kiln_engine_open(&e, &o, &err);
    KT_CHECK(rc == KILN_ERR_INVALID_ARG, "K beyond the limit: %d %s", rc, err.msg);
    kiln_engine_close(e);
    e = NULL;
    o.spec.num_speculative_tokens = 0;
    o.draft_model_path = g_model;
    rc = kiln_engine_open(&e, &o, &err);
    KT_CHECK(rc == KILN_ERR_INVALID_ARG && strstr(err.msg, "one proposer"), "draft model + ngram: %d %s", rc, err.msg);
    kiln_engine_close(e);
    e = NULL;
    o.spec.method = NULL;
    o.draft_model_path = kt_shared("models/mistral-tiny-random-f16"); /* 1000 tokens, the target 2048 */
    if (kt_exists(o.draft_model_path)) {
        rc = kiln_engine_open(&e, &o, &err);
        KT_CHECK(rc == KILN_ERR_UNSUPPORTED && strstr(err.msg, "same vocabulary"), "draft vocabulary mismatch: %d %s", rc,
                 err.msg);
        kiln_engine_close(e);
        e = NULL;
    }
}

/* cuda: a speculating engine keeps the backend's sampler (ops.sample_rows) and turns overlapped
 * steps off (spec.c) */
static void test_cuda_sampling_mode(void) {
    kiln_engine_options o;
    kiln_engine_options_default(&o);
    o.backend = "cuda";
    o.model_path = g_model;
    o.skip_tokenizer = 1;
    o.max_model_len = 64;
    o.kv_memory_mb = 4;
    o.spec.method = "ngram";
    kiln_engine *e = NULL;
    kiln_error err = {0};
    int rc = kiln_engine_open(&e, &o, &err);
    KT_CHECK(rc == KILN_OK && e && e->spec_k == 4 && e->device_sample && !e->overlap,
             "cuda + speculation: rc %d (%s), device sampling %d, overlap %d", rc, err.msg, e ? e->device_sample : -1,
             e ? e->overlap : -1);
    kiln_engine_close(e);
}

int main(void) {
#ifdef SPEC_TEST_CUDA
    kc_require_gpu();
#endif
    test_proposer();
    test_backend_refusal();
    const char *models[2][2] = {
        {"models/tinystories-656K", "models/tinystories-656K/tokenizer.json"},
        {"models/mistral-tiny-random", NULL},
    };
    int ran = 0;
    for (int m = 0; m < 2; m++) {
        char path[1024];
        snprintf(path, sizeof path, "%s", kt_shared(models[m][0]));
        if (!kt_exists(path)) { fprintf(stderr, "SKIP model %s: absent\n", path); continue; }
        g_model = path;
        g_tok = models[m][1] ? kt_shared(models[m][1]) : NULL;
        static char other[1024];
        snprintf(other, sizeof other, "%s", kt_shared(models[1 - m][0]));
        g_other = other;
        kiln_engine *e = open_spec(NULL, 0, 0, 0);
        if (!e) { KT_CHECK(0, "open %s", path); continue; }
        g_vocab = e->model->cfg.vocab_size;
        kiln_engine_close(e);
        suite();
        if (m == 0 && !g_cuda) test_refusals();
        if (m == 0 && g_cuda) test_cuda_sampling_mode();
        ran++;
    }
    if (!ran) KT_SKIP("no model in %s", kt_shared("models"));
    return kt_done();
}
