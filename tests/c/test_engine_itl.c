/* kiln-layer: engine (links only this layer and those below it) */
/* test_engine_itl.c: the chunked-prefill ITL policy (kiln_sched_options, scheduler.c) on the CPU
 * backend with a real tiny model (tinystories-656K).
 *
 * Short requests decode; long prompts arrive while they do (and a second wave of short ones
 * with them). With the policy on and a fixed calibration (learning off: deterministic budgets),
 * every step that carries decode rows holds at most the budget of prefill rows the cost model
 * allows for its decode rows (and at least the minimal chunk while a prompt waits), the long
 * prompts are still prefilled (in more steps), and steps without decode rows keep the whole token
 * budget. With the policy off, the same stream puts whole max_batch_tokens chunks beside the
 * decodes (what the policy prevents). The greedy output is identical on and off, with host
 * sampling and with the backend's sampler plus overlapped scheduling, and with the cost model
 * learning from the real step timings (then only the stats are checked: the fit saw every step).
 * Assertions are on step composition, never on wall time. */
#include <stdint.h>
#include <stdlib.h>
#include "engine/engine.h"
#include "engine/engine_internal.h"
#include "engine/step_cost.h"
#include "test.h"

#define NREQ 8
#define MAXO 64

static const char *g_model;

typedef struct run_out {
    int32_t ids[NREQ][MAXO];
    int n[NREQ];
    int steps, steps_with_prefill, steps_with_decode, max_pf_with_decode, max_pf_without_decode, violations, starved;
    kiln_engine_stats st;
} run_out;

/* the calibration: 1 ms per step, 0.1 ms per prefill row, 0.1 ms per decode row; 6 ms target:
 * with d decode rows a step may carry (6 - 1 - 0.1 d) / 0.1 = 50 - d prefill rows */
static const double FIXED = 1.0, TOK = 0.1, ROW = 0.1, TARGET = 6.0;
#define MIN_CHUNK 8
#define MBT 128

static kiln_engine *open_engine(int policy, int learn, int dev_overlap) {
    kiln_engine_options o;
    kiln_engine_options_default(&o);
    o.model_path = g_model;
    o.skip_tokenizer = 1;
    o.max_seqs = 8;
    o.max_model_len = 400;
    o.kv_memory_mb = 32;
    o.max_batch_tokens = MBT;
    o.enable_prefix_cache = -1;
    o.cpu.backend_sampling = dev_overlap;
    o.overlap = dev_overlap ? 0 : -1;
    if (policy) {
        o.sched.max_itl_ms = TARGET;
        o.sched.min_prefill_chunk = MIN_CHUNK;
        o.sched.cost_fixed_ms = FIXED;
        o.sched.cost_token_ms = TOK;
        o.sched.cost_row_ms = ROW;
        o.sched.cost_learn = learn ? 0 : -1;
    }
    kiln_engine *e = NULL;
    kiln_error err = {0};
    if (kiln_engine_open(&e, &o, &err)) fprintf(stderr, "open %s: %s\n", g_model, err.msg);
    return e;
}

static void prompt(int32_t *p, int n, int seed) {
    uint64_t s = 0x1234567u + (uint64_t)seed * 7919u;
    for (int i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = 3 + (int32_t)((s >> 33) % 2000);
    }
}

/* request i: (prompt length, max tokens, the step call before which it is added) */
static const int k_len[NREQ] = {6, 9, 5, 300, 7, 260, 8, 200};
static const int k_max[NREQ] = {48, 40, 56, 12, 30, 10, 20, 4};
static const int k_at[NREQ] = {0, 0, 1, 4, 4, 9, 14, 90}; /* the last one alone */

/* composition of steps[k]: prefill rows (sequences with more than one row) and decode rows */
static void composition(const kiln_engine *e, int k, int *np, int *nd) {
    const kiln_step *s = &e->steps[k];
    *np = *nd = 0;
    for (int i = 0; i < s->n_seqs; i++) {
        int n = s->seq_q_start[i + 1] - s->seq_q_start[i];
        if (n == 1) (*nd)++;
        else *np += n;
    }
}

static int run(int policy, int learn, int dev_overlap, run_out *out) {
    memset(out, 0, sizeof *out);
    kiln_engine *e = open_engine(policy, learn, dev_overlap);
    if (!e) return -1;
    static int32_t prompts[NREQ][320];
    uint64_t ids[NREQ];
    int added = 0, n_active = 1, call = 0, done[NREQ] = {0};
    kiln_error err = {0};
    while ((n_active > 0 || added < NREQ) && call < 2000) {
        while (added < NREQ && k_at[added] <= call) {
            kiln_request_params p;
            kiln_request_params_default(&p);
            prompt(prompts[added], k_len[added], added);
            p.prompt_ids = prompts[added];
            p.n_prompt = k_len[added];
            p.max_tokens = k_max[added];
            p.ignore_eos = 1;
            p.sampling.temperature = 0;
            if (kiln_engine_add_request(e, &p, &ids[added], &err)) {
                fprintf(stderr, "add: %s\n", err.msg);
                kiln_engine_close(e);
                return -1;
            }
            added++;
        }
        int waiting_prompt = e->n_waiting > 0;
        for (int i = 0; i < e->n_running; i++)
            waiting_prompt |= e->running[i]->n_computed + e->running[i]->n_sched < e->running[i]->n_tokens - 1;
        if (kiln_engine_step(e, &n_active, &err)) {
            fprintf(stderr, "step: %s\n", err.msg);
            kiln_engine_close(e);
            return -1;
        }
        call++;
        /* the step this call encoded: the plain step (steps[0]), or the one left in flight */
        int k = dev_overlap ? e->pending : 0;
        if (k >= 0 && e->steps[k].n_seqs > 0) {
            int np, nd;
            composition(e, k, &np, &nd);
            out->steps++;
            out->steps_with_prefill += np > 0;
            if (nd > 0) {
                out->steps_with_decode++;
                if (np > out->max_pf_with_decode) out->max_pf_with_decode = np;
                int allowed = kiln_step_cost_prefill_budget(&e->cost, nd, 0, 0, TARGET, MIN_CHUNK, MBT);
                if (policy && !learn && np > allowed) {
                    out->violations++;
                    fprintf(stderr, "step %d: %d prefill rows beside %d decode rows (budget %d)\n", call, np, nd, allowed);
                }
                /* a prompt was waiting for rows, the step had room, yet it got none */
                if (policy && waiting_prompt && np == 0 && nd < MBT && !dev_overlap) out->starved++;
            } else if (np > out->max_pf_without_decode) {
                out->max_pf_without_decode = np;
            }
        }
        for (int i = 0; i < added; i++) {
            if (done[i]) continue;
            kiln_output o;
            if (kiln_engine_poll(e, ids[i], &o, &err)) continue;
            for (int t = 0; t < o.n_new && out->n[i] < MAXO; t++) out->ids[i][out->n[i]++] = o.new_ids[t];
            if (o.finish != KILN_FINISH_NONE) done[i] = 1;
        }
    }
    kiln_engine_get_stats(e, &out->st);
    kiln_engine_close(e);
    return call < 2000 ? 0 : -1;
}

static int same(const run_out *a, const run_out *b) {
    for (int i = 0; i < NREQ; i++) {
        if (a->n[i] != b->n[i] || memcmp(a->ids[i], b->ids[i], sizeof(int32_t) * (size_t)a->n[i])) {
            fprintf(stderr, "request %d differs (%d vs %d tokens)\n", i, a->n[i], b->n[i]);
            return 0;
        }
    }
    return 1;
}

int main(void) {
    g_model = kt_shared("models/tinystories-656K");
    if (!kt_exists(kt_shared("models/tinystories-656K/model.safetensors")))
        KT_SKIP("tinystories-656K: fixture missing under %s", kt_shared(""));
    static run_out off, on, on_ov, off_ov, on_learn;
    KT_CHECK(run(0, 0, 0, &off) == 0, "policy off");
    KT_CHECK(run(1, 0, 0, &on) == 0, "policy on");
    for (int i = 0; i < NREQ; i++) KT_CHECK(off.n[i] == k_max[i], "request %d: %d tokens", i, off.n[i]);
    /* off: whole max_batch_tokens chunks beside the decodes (the stall the policy removes) */
    KT_CHECK(off.max_pf_with_decode > 50, "off: %d prefill rows beside decodes", off.max_pf_with_decode);
    KT_CHECK(off.st.sched_itl_limited_steps == 0 && off.st.sched_max_itl_ms == 0, "off: no policy stats");
    /* on: bounded chunks beside decodes, never above the model's budget, never starved */
    KT_CHECK(on.violations == 0, "on: %d steps over budget", on.violations);
    KT_CHECK(on.max_pf_with_decode <= 50 - 1 && on.max_pf_with_decode >= MIN_CHUNK, "on: max %d prefill rows beside decodes",
             on.max_pf_with_decode);
    KT_CHECK(on.max_pf_without_decode == MBT, "on: a prompt alone still takes the whole budget (%d rows)",
             on.max_pf_without_decode);
    KT_CHECK(on.starved == 0, "on: %d steps gave a waiting prompt no rows", on.starved);
    KT_CHECK(on.steps_with_prefill > off.steps_with_prefill, "on: prompts cut into more steps (%d vs %d)",
             on.steps_with_prefill, off.steps_with_prefill);
    KT_CHECK(on.st.sched_itl_limited_steps > 0, "on: limited steps counted");
    KT_CHECK(on.st.sched_mixed_steps > 0, "on: mixed steps counted");
    KT_CHECK(on.st.sched_max_itl_ms == TARGET, "on: target in stats");
    KT_CHECK(on.st.sched_cost_samples == 0 && on.st.sched_cost_fixed_ms == FIXED && on.st.sched_cost_token_ms == TOK,
             "on, learning off: the calibration stays");
    KT_CHECK(on.st.sched_prefill_budget > 0 && on.st.sched_prefill_budget <= 50, "on: budget %d", on.st.sched_prefill_budget);
    KT_CHECK(same(&off, &on), "greedy output identical with the policy on and off");
    /* the backend's sampler with overlapped scheduling */
    KT_CHECK(run(0, 0, 1, &off_ov) == 0, "overlap, policy off");
    KT_CHECK(run(1, 0, 1, &on_ov) == 0, "overlap, policy on");
    KT_CHECK(on_ov.st.overlapped_steps > 0, "overlap happened");
    KT_CHECK(on_ov.violations == 0, "overlap on: %d steps over budget", on_ov.violations);
    KT_CHECK(on_ov.max_pf_with_decode <= 49, "overlap on: %d prefill rows beside decodes", on_ov.max_pf_with_decode);
    KT_CHECK(same(&off, &off_ov) && same(&off, &on_ov), "greedy output identical with overlap, policy on and off");
    /* learning from the real step timings: only what does not depend on the clock */
    KT_CHECK(run(1, 1, 0, &on_learn) == 0, "policy on, learning");
    KT_CHECK(on_learn.st.sched_cost_samples == on_learn.st.steps, "every step timed (%llu of %llu)",
             (unsigned long long)on_learn.st.sched_cost_samples, (unsigned long long)on_learn.st.steps);
    KT_CHECK(on_learn.st.sched_cost_fixed_ms >= 0 && on_learn.st.sched_cost_token_ms >= 0 && on_learn.st.sched_cost_row_ms >= 0,
             "fit non-negative");
    KT_CHECK(on_learn.st.sched_last_step_ms > 0, "last step timed");
    KT_CHECK(same(&off, &on_learn), "greedy output identical with a learning policy");
    printf("off: %d steps (%d with prefill), max %d prefill rows beside decodes; on: %d steps (%d with prefill), "
           "max %d, %llu limited; overlap on: max %d; learned fit %.3g ms + %.3g ms/row + %.3g ms/decode\n",
           off.steps, off.steps_with_prefill, off.max_pf_with_decode, on.steps, on.steps_with_prefill, on.max_pf_with_decode,
           (unsigned long long)on.st.sched_itl_limited_steps, on_ov.max_pf_with_decode, on_learn.st.sched_cost_fixed_ms,
           on_learn.st.sched_cost_token_ms, on_learn.st.sched_cost_row_ms);
    return kt_done();
}
