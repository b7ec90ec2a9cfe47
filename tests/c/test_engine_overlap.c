/* kiln-layer: engine (links only this layer and those below it) */
/* test_engine_overlap.c: overlapped (async) scheduling and the CPU backend's sampler.
 *
 * One set of requests (greedy + top-5 logprobs, seeded top-p, top-k + min-p, repetition /
 * presence / frequency penalties, logit bias, min_tokens suppressing a stop id, stop ids, stop
 * strings, small max_tokens, EOS, the context limit, repeated prompts for prefix-cache hits,
 * requests added while steps are in flight) runs on real tiny models:
 *   A. host sampling (the engine's sampler over host logits), no overlap: the reference;
 *   B. cpu.backend_sampling (the backend draws, per-slot penalty tables), overlap off;
 *   C. cpu.backend_sampling with overlap (step n+1 encoded before step n's wait, its input
 *      tokens taken from step n's draws inside the backend);
 *   D. C under a KV pool small enough to force preemptions (the drain rule);
 *   E. A and C with an abort in the middle.
 * Every run must give the same token ids, bit-identical logprobs and top-n, finish reasons and
 * text as A (the CPU backend is batch invariant, so scheduling differences cannot excuse any
 * difference). Also: overlap really happened (stats.overlapped_steps > 0, and 0 without it),
 * one wait per step call (syncs == steps), no allocation in the step loop (I7), no step left
 * in flight once n_active reaches 0, prompt_logits and close with a step left in flight, and
 * the backend refuses bad prev_row values and out-of-range sampling rows / penalty loads.
 * Models: tinystories-656K (with its tokenizer: text and stop strings) and
 * mistral-tiny-random (bf16, ids only) from KILN_SHARED; each skips loudly when missing. */
#include <stdint.h>
#include <stdlib.h>
#include "engine/engine.h"
#include "engine/engine_internal.h"
#include "test.h"
#include "util/alloc.h"

#define NR 13
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
    uint64_t allocs, drains;
    int left_in_flight; /* a step in flight after n_active reached 0 */
} run_stats;

enum { HOST = 0, DEV = 1, DEV_OVERLAP = 2 };

static const char *g_model, *g_tok;
static int g_vocab;

static kiln_engine *open_mode(int mode, int kv_blocks) {
    kiln_engine_options o;
    kiln_engine_options_default(&o);
    o.cpu.backend_sampling = mode != HOST;
    o.model_path = g_model;
    o.tokenizer_path = g_tok;
    o.skip_tokenizer = g_tok == NULL;
    o.max_seqs = 8;
    o.max_model_len = 160;
    o.kv_blocks = kv_blocks;
    o.kv_memory_mb = 32;
    o.max_batch_tokens = 48; /* chunked prefills */
    o.enable_prefix_cache = 1;
    o.overlap = mode == DEV_OVERLAP ? 0 : -1;
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

/* Run the requests (request i added before step call add_at[i]; abort_idx aborted before call
 * abort_at) until every one finished and n_active is 0; drain = 0 stops calling as soon as all
 * are finished (a step may stay in flight). Returns the number of step calls, -1 on error. */
static int run(kiln_engine *e, const kiln_request_params *ps, const int *add_at, int n, int abort_idx, int abort_at,
               int drain, result *res, run_stats *rs) {
    uint64_t ids[NR];
    int done = 0, call = 0, active = 1;
    kiln_error err = {0};
    memset(res, 0, sizeof(result) * (size_t)n);
    memset(rs, 0, sizeof *rs);
    uint64_t d0 = e->n_drains;
    kiln_engine_stats s0;
    kiln_engine_get_stats(e, &s0);
    while ((done < n || (drain && active)) && call < 5000) {
        if (abort_idx >= 0 && call == abort_at) {
            /* abort while its row is in flight, report it at once, and add requests right after
             * (add_request releases reported requests: not while a step in flight names it) */
            if (kiln_engine_abort(e, ids[abort_idx], &err) || poll_into(e, ids[abort_idx], &res[abort_idx], &done)) return -1;
        }
        for (int i = 0; i < n; i++)
            if (add_at[i] == call && kiln_engine_add_request(e, &ps[i], &ids[i], &err)) {
                fprintf(stderr, "add %d: %s\n", i, err.msg);
                return -1;
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
    rs->st.overlapped_steps -= s0.overlapped_steps;
    rs->st.preemptions -= s0.preemptions;
    rs->st.prefix_cache_hits -= s0.prefix_cache_hits;
    rs->drains = e->n_drains - d0;
    rs->left_in_flight = e->pending >= 0;
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
                return snprintf(why, wl, "token %d: top %d differs (%d %.9g vs %d %.9g)", k, j, a->top[k][j].id,
                                (double)a->top[k][j].logprob, b->top[k][j].id, (double)b->top[k][j].logprob), 0;
    }
    if (a->fin != b->fin) return snprintf(why, wl, "finish %d vs %d", a->fin, b->fin), 0;
    if (a->tl != b->tl || memcmp(a->text, b->text, a->tl) != 0) return snprintf(why, wl, "text differs"), 0;
    return 1;
}

static int32_t g_prompts[NR][64];
static int32_t g_bias_ids[2], g_stop_id[1], g_supp_id[1];
static int g_supp_at; /* request 5: min_tokens = g_supp_at, where request 0 draws g_supp_id first */
static float g_bias_vals[2] = {4.0f, -100.0f};
static char g_stop_str[16];
static const char *g_stops[1] = {g_stop_str};

static void make_prompt(int32_t *p, int n, int seed) {
    p[0] = 1;
    unsigned long long s = (unsigned long long)seed * 7919 + 17;
    for (int i = 1; i < n; i++) p[i] = 3 + (int)(kt_rand_u64(&s) % (unsigned)(g_vocab - 3));
}

/* request i of the set; stop id / string / suppressed id come from a reference run of request 0 */
static void make_params(kiln_request_params *p, int i) {
    kiln_request_params_default(p);
    if (i < 10) { /* 10..12 share one 40-token prompt (prefix-cache hits), made by suite() */
        make_prompt(g_prompts[i], 9 + 3 * i, 100 + i);
        p->prompt_ids = g_prompts[i];
        p->n_prompt = 9 + 3 * i;
    } else {
        p->prompt_ids = g_prompts[10];
        p->n_prompt = 40;
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
        break;
    case 5: /* greedy as request 0 with a stop id first drawn at g_supp_at, min_tokens g_supp_at:
             * suppressed (with EOS) before, allowed exactly there, so it stops after g_supp_at + 1 */
        p->prompt_ids = g_prompts[0];
        p->n_prompt = 9;
        p->stop_ids = g_supp_id;
        p->n_stop_ids = 1;
        p->min_tokens = g_supp_at;
        break;
    case 6: /* greedy as request 0 with a stop id it draws */
        p->prompt_ids = g_prompts[0];
        p->n_prompt = 9;
        p->stop_ids = g_stop_id;
        p->n_stop_ids = 1;
        break;
    case 7: /* greedy as request 0 with a stop string from its text */
        p->prompt_ids = g_prompts[0];
        p->n_prompt = 9;
        if (g_tok) {
            p->stop_strings = g_stops;
            p->n_stop_strings = 1;
        }
        break;
    case 8: p->max_tokens = 3; sp->temperature = 0.9f; break;
    case 9: p->max_tokens = -1; sp->temperature = 0.6f; sp->frequency_penalty = -0.5f; break; /* to the context limit */
    default: /* 10..12: same long prompt, EOS allowed, seeded */
        p->ignore_eos = 0;
        sp->temperature = 0.9f;
        sp->top_k = 50;
        sp->seed = 7;
        p->max_tokens = 60;
        break;
    }
}

static const int k_add_at[NR] = {0, 0, 0, 1, 1, 2, 3, 3, 4, 5, 0, 6, 11};

static void check_run(const char *what, const result *ref, const result *got, const kiln_request_params *ps, int skip) {
    for (int i = 0; i < NR; i++) {
        if (i == skip) continue;
        char why[256] = "";
        KT_CHECK(same(&got[i], &ref[i], ps[i].sampling.n_logprobs, why, sizeof why), "%s: %s: request %d: %s", g_model, what,
                 i, why);
    }
}

static void check_stats(const char *what, const run_stats *rs, int overlap) {
    KT_CHECK(rs->st.syncs == rs->st.steps && rs->st.steps > 0, "%s: %s: %llu syncs for %llu steps", g_model, what,
             (unsigned long long)rs->st.syncs, (unsigned long long)rs->st.steps);
    if (overlap)
        KT_CHECK(rs->st.overlapped_steps > 0, "%s: %s: no step was overlapped", g_model, what);
    else
        KT_CHECK(rs->st.overlapped_steps == 0, "%s: %s: %llu overlapped steps without overlap", g_model, what,
                 (unsigned long long)rs->st.overlapped_steps);
    KT_CHECK(rs->allocs == 0, "%s: %s: I7: %llu allocations in the step loop", g_model, what, (unsigned long long)rs->allocs);
    KT_CHECK(!rs->left_in_flight, "%s: %s: a step is still in flight at n_active 0", g_model, what);
    KT_CHECK(rs->st.kv_blocks_used == 0, "%s: %s: %d blocks still used", g_model, what, rs->st.kv_blocks_used);
}

static result g_ref[NR], g_got[NR], g_solo[1];

static void suite(void) {
    kiln_request_params ps[NR];
    run_stats rs;
    int zero = 0;
    /* derive the stop id / string / suppressed id from request 0's greedy output */
    make_params(&ps[0], 0);
    make_prompt(g_prompts[10], 40, 999);
    memcpy(g_prompts[10], g_prompts[0], 9 * sizeof(int32_t)); /* 10..12 share a prefix with 0 too */
    g_bias_ids[0] = 5 % g_vocab;
    g_bias_ids[1] = 7 % g_vocab;
    kiln_engine *e = open_mode(HOST, 0);
    if (!e) { KT_CHECK(0, "open %s", g_model); return; }
    if (run(e, &ps[0], &zero, 1, -1, 0, 1, g_solo, &rs) < 0 || g_solo[0].n < 20) {
        KT_CHECK(0, "%s: reference run of request 0", g_model);
        kiln_engine_close(e);
        return;
    }
    g_stop_id[0] = g_solo[0].ids[12];
    /* the min_tokens boundary: an id first drawn at k (5 <= k < 20), no EOS before it */
    const kiln_config *mc = &kiln_engine_model(e)->cfg;
    g_supp_at = -1;
    for (int k = 5; k < 20 && g_supp_at < 0; k++) {
        int ok = 1;
        for (int j = 0; j < k; j++) {
            ok &= g_solo[0].ids[j] != g_solo[0].ids[k];
            for (int q = 0; q < mc->n_eos; q++) ok &= g_solo[0].ids[j] != mc->eos_ids[q];
        }
        for (int q = 0; q < mc->n_eos; q++) ok &= g_solo[0].ids[k] != mc->eos_ids[q];
        if (ok) g_supp_at = k;
    }
    KT_CHECK(g_supp_at > 0, "%s: no id for the min_tokens boundary in request 0's output", g_model);
    if (g_supp_at < 0) g_supp_at = 5;
    g_supp_id[0] = g_solo[0].ids[g_supp_at];
    if (g_tok) {
        size_t at = g_solo[0].tl > 40 ? 20 : g_solo[0].tl / 2;
        size_t len = g_solo[0].tl - at < 6 ? g_solo[0].tl - at : 6;
        memcpy(g_stop_str, g_solo[0].text + at, len);
        g_stop_str[len] = 0;
        KT_CHECK(len > 0, "%s: request 0 has no text for a stop string", g_model);
    }
    for (int i = 0; i < NR; i++) make_params(&ps[i], i);

    /* A: the reference */
    int calls = run(e, ps, k_add_at, NR, -1, 0, 1, g_ref, &rs);
    KT_CHECK(calls > 0, "%s: run A failed", g_model);
    check_stats("A host", &rs, 0);
    KT_CHECK(g_ref[6].fin == KILN_FINISH_STOP && g_ref[6].n <= 13 && g_ref[6].ids[g_ref[6].n - 1] == g_stop_id[0],
             "%s: the stop id did not stop request 6 (%d tokens, finish %d)", g_model, g_ref[6].n, g_ref[6].fin);
    if (g_tok)
        KT_CHECK(g_ref[7].fin == KILN_FINISH_STOP && strstr(g_ref[7].text, g_stop_str) == NULL,
                 "%s: the stop string '%s' did not stop request 7 (finish %d)", g_model, g_stop_str, g_ref[7].fin);
    KT_CHECK(g_ref[8].n == 3 && g_ref[8].fin == KILN_FINISH_LENGTH, "%s: max_tokens 3: %d tokens", g_model, g_ref[8].n);
    KT_CHECK(g_ref[9].fin == KILN_FINISH_LENGTH && g_ref[9].n == 160 - ps[9].n_prompt, "%s: context limit: %d tokens",
             g_model, g_ref[9].n);
    KT_CHECK(g_ref[5].n == g_supp_at + 1 && g_ref[5].fin == KILN_FINISH_STOP, "%s: min_tokens %d: %d tokens, finish %d",
             g_model, g_supp_at, g_ref[5].n, g_ref[5].fin);
    KT_CHECK(rs.st.prefix_cache_hits > 0, "%s: no prefix cache hit", g_model);
    printf("%s: A: %d calls, %llu steps, prefix hits %llu\n", g_model, calls, (unsigned long long)rs.st.steps,
           (unsigned long long)rs.st.prefix_cache_hits);
    kiln_engine_close(e);

    /* B: the backend draws, no overlap */
    e = open_mode(DEV, 0);
    KT_CHECK(e && e->device_sample && !e->overlap, "%s: B: backend sampling without overlap", g_model);
    if (e) {
        run(e, ps, k_add_at, NR, -1, 0, 1, g_got, &rs);
        check_run("B cpu-sample", g_ref, g_got, ps, -1);
        check_stats("B cpu-sample", &rs, 0);
        kiln_engine_close(e);
    }

    /* C: overlap; then again on the same engine (prefix cache warm), leaving a step in flight
     * for prompt_logits and close */
    e = open_mode(DEV_OVERLAP, 0);
    KT_CHECK(e && e->device_sample && e->overlap, "%s: C: overlap is off", g_model);
    if (e) {
        calls = run(e, ps, k_add_at, NR, -1, 0, 1, g_got, &rs);
        check_run("C overlap", g_ref, g_got, ps, -1);
        check_stats("C overlap", &rs, 1);
        KT_CHECK(rs.st.prefix_cache_hits > 0, "%s: C: no prefix cache hit", g_model);
        printf("%s: C: %d calls, %llu steps, %llu overlapped\n", g_model, calls, (unsigned long long)rs.st.steps,
               (unsigned long long)rs.st.overlapped_steps);
        /* requests 6 and 7 (ids only: 6 twice) end by a stop id / string, the last of them with
         * a row in flight */
        int second = g_tok ? 7 : 6;
        kiln_request_params p2[2] = {ps[6], ps[second]};
        int at2[2] = {0, 0};
        run(e, p2, at2, 2, -1, 0, 0, g_got, &rs);
        char why[256] = "";
        KT_CHECK(same(&g_got[0], &g_ref[6], 0, why, sizeof why) && same(&g_got[1], &g_ref[second], 0, why, sizeof why),
                 "%s: C2: %s", g_model, why);
        KT_CHECK(rs.left_in_flight, "%s: C2: expected a step left in flight after a stop", g_model);
        /* prompt_logits with that step in flight == on a fresh engine */
        int np = ps[1].n_prompt;
        float *l1 = kiln_malloc((size_t)np * g_vocab * sizeof(float)), *l2 = kiln_malloc((size_t)np * g_vocab * sizeof(float));
        kiln_error err = {0};
        int rc = kiln_engine_prompt_logits(e, ps[1].prompt_ids, np, l1, &err);
        KT_CHECK(rc == 0 && e->pending < 0, "%s: prompt_logits with a step in flight: %s", g_model, err.msg);
        kiln_engine_stats st;
        kiln_engine_get_stats(e, &st);
        KT_CHECK(st.kv_blocks_used == 0, "%s: %d blocks used after the drain", g_model, st.kv_blocks_used);
        kiln_engine *f = open_mode(HOST, 0);
        if (f && l1 && l2) {
            rc = kiln_engine_prompt_logits(f, ps[1].prompt_ids, np, l2, &err);
            KT_CHECK(rc == 0 && memcmp(l1, l2, (size_t)np * g_vocab * sizeof(float)) == 0, "%s: prompt_logits differ", g_model);
        }
        kiln_engine_close(f);
        kiln_free(l1);
        kiln_free(l2);
        /* a request that ends by length leaves no step in flight (its last token is known to
         * end it when the next step is built) */
        run(e, &ps[8], &zero, 1, -1, 0, 0, g_got, &rs);
        KT_CHECK(same(&g_got[0], &g_ref[8], 0, why, sizeof why) && !rs.left_in_flight && rs.st.steps == (uint64_t)ps[8].max_tokens,
                 "%s: C4: max_tokens: %s, in flight %d, %llu steps", g_model, why, rs.left_in_flight,
                 (unsigned long long)rs.st.steps);
        /* close with a step in flight */
        run(e, p2, at2, 2, -1, 0, 0, g_got, &rs);
        KT_CHECK(rs.left_in_flight, "%s: C3: expected a step left in flight", g_model);
        kiln_engine_close(e);
    }

    /* D: preemption under overlap (a 14-block pool: 224 slots for requests of up to 160) */
    e = open_mode(DEV_OVERLAP, 14);
    if (e) {
        run(e, ps, k_add_at, NR, -1, 0, 1, g_got, &rs);
        check_run("D overlap + preemption", g_ref, g_got, ps, -1);
        check_stats("D overlap + preemption", &rs, 1);
        KT_CHECK(rs.st.preemptions > 0 && rs.drains > 0, "%s: D: %llu preemptions, %llu drains", g_model,
                 (unsigned long long)rs.st.preemptions, (unsigned long long)rs.drains);
        printf("%s: D: %llu preemptions, %llu drains, %llu overlapped of %llu steps\n", g_model,
               (unsigned long long)rs.st.preemptions, (unsigned long long)rs.drains,
               (unsigned long long)rs.st.overlapped_steps, (unsigned long long)rs.st.steps);
        kiln_engine_close(e);
    }

    /* E: abort request 3 before call 11 (request 12 is added right after): its tokens are a
     * prefix of its full run, the rest equal */
    for (int mode = HOST; mode <= DEV_OVERLAP; mode += 2) {
        e = open_mode(mode, 0);
        if (!e) continue;
        run(e, ps, k_add_at, NR, 3, 11, 1, g_got, &rs);
        const char *what = mode == HOST ? "E abort host" : "E abort overlap";
        check_run(what, g_ref, g_got, ps, 3);
        check_stats(what, &rs, mode == DEV_OVERLAP);
        const result *a = &g_got[3], *r = &g_ref[3];
        KT_CHECK(a->fin == KILN_FINISH_ABORT && a->n > 0 && a->n < r->n && memcmp(a->ids, r->ids, (size_t)a->n * 4) == 0 &&
                     memcmp(a->lp, r->lp, (size_t)a->n * 4) == 0,
                 "%s: %s: aborted request: finish %d, %d tokens (full run %d)", g_model, what, a->fin, a->n, r->n);
        kiln_engine_close(e);
    }

    /* the backend refuses bad prev_row values */
    e = open_mode(DEV_OVERLAP, 0);
    if (e) {
        kiln_step *s = &e->steps[0];
        kiln_error err = {0};
        s->n_tokens = s->n_seqs = 1;
        s->token_ids[0] = 0;
        s->positions[0] = 0;
        s->slot_mapping[0] = 16;
        s->seq_q_start[0] = 0;
        s->seq_q_start[1] = 1;
        s->seq_ctx_len[0] = 1;
        s->block_table[0] = 1;
        s->seq_logits[0] = 0;
        s->device_sample = 1;
        s->n_pen = 0;
        s->n_prev = 1;
        s->prev_row[0] = e->max_seqs;
        KT_CHECK(e->ops->encode_step(e->backend, s, &err) == KILN_ERR_RANGE, "prev_row beyond max_seqs accepted");
        s->prev_row[0] = 0;
        s->device_sample = 0;
        KT_CHECK(e->ops->encode_step(e->backend, s, &err) == KILN_ERR_RANGE, "prev_row without device sampling accepted");
        s->device_sample = 1;
        KT_CHECK(e->ops->encode_step(e->backend, s, &err) == KILN_ERR_RANGE, "prev_row with no previous step accepted");
        s->prev_row[0] = -1;
        KT_CHECK(e->ops->encode_step(e->backend, s, &err) == KILN_ERR_RANGE, "n_prev 1 with no prev row accepted");
        s->prev_row[0] = 0;
        s->n_prev = 0; /* not used: prev_row ignored */
        KT_CHECK(e->ops->encode_step(e->backend, s, &err) == KILN_OK, "plain step refused: %s", err.msg);
        s->n_prev = 1; /* the previous step drew no token */
        KT_CHECK(e->ops->encode_step(e->backend, s, &err) == KILN_ERR_RANGE, "prev_row into a step without draws accepted");
        kiln_step_result res;
        KT_CHECK(e->ops->finish_step(e->backend, &res, &err) == KILN_OK, "finish: %s", err.msg);
        s->n_prev = 0;
        /* the sampling rows and penalty loads a sampler reads (kiln_backend_check_step) */
        int V = e->model->cfg.vocab_size;
        s->seq_logits[0] = 1;
        memset(&s->sampling[0], 0, sizeof s->sampling[0]);
        s->sampling[0].pen_slot = -1;
        s->sampling[0].n_logprobs = KILN_STEP_MAX_TOP + 1;
        KT_CHECK(e->ops->encode_step(e->backend, s, &err) == KILN_ERR_RANGE, "top-n beyond %d accepted", KILN_STEP_MAX_TOP);
        s->sampling[0].n_logprobs = 0;
        s->sampling[0].pen_slot = e->max_seqs;
        KT_CHECK(e->ops->encode_step(e->backend, s, &err) == KILN_ERR_RANGE, "penalty slot beyond max_seqs accepted");
        s->sampling[0].pen_slot = 0;
        s->n_pen = 1;
        s->pen_slot[0] = 0;
        s->pen_start[0] = 0;
        s->pen_start[1] = 1;
        s->pen_n_prompt[0] = 0;
        s->pen_tokens[0] = V;
        KT_CHECK(e->ops->encode_step(e->backend, s, &err) == KILN_ERR_RANGE, "penalty token outside the vocab accepted");
        s->pen_tokens[0] = 1;
        s->pen_start[1] = s->cap_pen_tokens + 1;
        KT_CHECK(e->ops->encode_step(e->backend, s, &err) == KILN_ERR_RANGE, "penalty load beyond its buffer accepted");
        s->pen_start[1] = 1;
        KT_CHECK(e->ops->encode_step(e->backend, s, &err) == KILN_OK, "valid sampled step refused: %s", err.msg);
        KT_CHECK(e->ops->finish_step(e->backend, &res, &err) == KILN_OK, "finish: %s", err.msg);
        s->n_pen = 0;
        s->seq_logits[0] = 0;
        kiln_engine_close(e);
    }
}

int main(void) {
    const char *tiny = kt_shared("models/tinystories-656K");
    const char *mistral = kt_shared("models/mistral-tiny-random");
    int any = 0;
    if (kt_exists(kt_shared("models/tinystories-656K/model.safetensors"))) {
        g_model = tiny;
        g_tok = kt_shared("models/tinystories-656K/tokenizer.json");
        g_vocab = 2048;
        suite();
        any = 1;
    } else {
        fprintf(stderr, "SKIP tinystories-656K: fixture missing under %s\n", kt_shared(""));
    }
    if (kt_exists(kt_shared("models/mistral-tiny-random/model.safetensors"))) {
        kiln_engine_options o;
        kiln_engine_options_default(&o);
        g_model = mistral;
        g_tok = NULL;
        kiln_engine *e = NULL;
        kiln_error err = {0};
        o.model_path = mistral;
        o.skip_tokenizer = 1;
        o.kv_memory_mb = 8;
        o.max_seqs = 1;
        o.max_model_len = 160;
        if (kiln_engine_open(&e, &o, &err) == 0) {
            g_vocab = kiln_engine_model(e)->cfg.vocab_size;
            kiln_engine_close(e);
            suite();
            any = 1;
        } else {
            KT_CHECK(0, "open %s: %s", mistral, err.msg);
        }
    } else {
        fprintf(stderr, "SKIP mistral-tiny-random: fixture missing under %s\n", kt_shared(""));
    }
    if (!any) KT_SKIP("no model fixture under %s", kt_shared(""));
    return kt_done();
}
