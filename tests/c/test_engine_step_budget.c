/* kiln-layer: engine (links only this layer and those below it) */
/* test_engine_step_budget.c: the step budget (kiln_sched_options.max_step_ms, scheduler.c) and
 * the step cost model's attention term, on the CPU backend with a real tiny model
 * (tinystories-656K).
 *
 * Two short requests decode; a long prompt (350 tokens) arrives while they do, and a third short
 * request arrives while that prompt is being prefilled. With a fixed calibration (learning off:
 * deterministic budgets) and the step budget on:
 *   - every step's predicted time (fixed + rows + attention's keys) is under the target, unless
 *     its prefill is the minimal chunk;
 *   - the decoding requests get a token at every step while the long prompt is prefilled;
 *   - the long prompt's chunks shrink as its context grows (attention is counted: the first
 *     chunk is several times the last full one), and it is never taken in max_batch_tokens rows;
 *   - the request that arrives mid-prefill gets its first token within a few steps, long before
 *     the long prompt's prefill ends;
 *   - the greedy output is identical with the budget on and off;
 *   - learning from the real timings, a step's prefill rows never exceed 4x the most of any
 *     earlier step (from 32: the probe), and the output is still identical.
 * With the budget off, the same stream puts whole max_batch_tokens chunks in one step.
 * Assertions are on step composition, never on wall time. */
#include <stdint.h>
#include <stdlib.h>
#include "engine/engine.h"
#include "engine/engine_internal.h"
#include "engine/step_cost.h"
#include "test.h"

#define NREQ 4
#define MAXO 48
#define MBT 128
#define MIN_CHUNK 4
#define LONG 2 /* the long prompt's request */
#define LATE 3 /* the request that arrives mid-prefill */

/* calibration: 1 ms a step, 0.05 ms a prefill row, 0.1 ms a decode row, 2 ms per 1,024 keys;
 * 8 ms a step: at context 0 a chunk of ~60 rows fits, at context 300 ~10 */
static const double FIXED = 1.0, TOK = 0.05, ROW = 0.1, KKEY = 2.0, TARGET = 8.0;

static const int k_len[NREQ] = {6, 8, 350, 5};
static const int k_max[NREQ] = {40, 40, 4, 12};
static const int k_at[NREQ] = {0, 0, 3, 6}; /* added in this order */

static const char *g_model;

typedef struct run_out {
    int32_t ids[NREQ][MAXO];
    int n[NREQ];
    int steps, over_budget, starved_decode, max_pf, probe_violations;
    int chunk_first, chunk_last_full, n_long_chunks;
    int late_added_call, late_first_call, long_prefilled_call;
    kiln_engine_stats st;
} run_out;

static kiln_engine *open_engine(int budget, int learn) {
    kiln_engine_options o;
    kiln_engine_options_default(&o);
    o.model_path = g_model;
    o.skip_tokenizer = 1;
    o.max_seqs = 8;
    o.max_model_len = 400;
    o.kv_memory_mb = 32;
    o.max_batch_tokens = MBT;
    o.enable_prefix_cache = -1;
    o.overlap = -1;
    if (budget) {
        o.sched.max_step_ms = TARGET;
        o.sched.min_prefill_chunk = MIN_CHUNK;
        if (!learn) {
            o.sched.cost_fixed_ms = FIXED;
            o.sched.cost_token_ms = TOK;
            o.sched.cost_row_ms = ROW;
            o.sched.cost_kkey_ms = KKEY;
        }
        o.sched.cost_learn = learn ? 0 : -1;
    }
    kiln_engine *e = NULL;
    kiln_error err = {0};
    if (kiln_engine_open(&e, &o, &err)) fprintf(stderr, "open %s: %s\n", g_model, err.msg);
    return e;
}

static void prompt(int32_t *p, int n, int seed) {
    uint64_t s = 0x9876543u + (uint64_t)seed * 104729u;
    for (int i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = 3 + (int32_t)((s >> 33) % 2000);
    }
}

static int run(int budget, int learn, run_out *out) {
    memset(out, 0, sizeof *out);
    out->late_first_call = out->long_prefilled_call = out->chunk_first = -1;
    kiln_engine *e = open_engine(budget, learn);
    if (!e) return -1;
    static int32_t prompts[NREQ][400];
    uint64_t ids[NREQ];
    int added = 0, n_active = 1, call = 0, done[NREQ] = {0}, pf_seen = 0;
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
            if (added == LATE) out->late_added_call = call;
            added++;
        }
        /* requests decoding before this step (one row to compute): each must get its token */
        int decoding[NREQ] = {0};
        for (int i = 0; i < e->n_running; i++) {
            kiln_req *r = e->running[i];
            for (int j = 0; j < added; j++)
                if (r->id == ids[j]) decoding[j] = r->n_tokens - r->n_computed == 1;
        }
        int long_base = -1; /* the long prompt's next row, if it is prefilling */
        for (int i = 0; i < e->n_running; i++)
            if (e->running[i]->id == ids[LONG] && e->running[i]->n_computed < e->running[i]->n_prompt)
                long_base = e->running[i]->n_computed;
        if (added > LONG && long_base < 0 && out->long_prefilled_call < 0 && e->n_waiting > 0 &&
            e->waiting[0]->id == ids[LONG])
            long_base = 0;
        if (kiln_engine_step(e, &n_active, &err)) {
            fprintf(stderr, "step: %s\n", err.msg);
            kiln_engine_close(e);
            return -1;
        }
        call++;
        const kiln_step *s = &e->steps[0];
        if (s->n_seqs > 0) {
            int np = 0, nd = 0, long_rows = 0;
            for (int i = 0; i < s->n_seqs; i++) {
                int n = s->seq_q_start[i + 1] - s->seq_q_start[i];
                if (n == 1) nd++;
                else np += n;
                if (e->step_reqs[0][i]->id == ids[LONG] && n > 1) long_rows = n;
            }
            out->steps++;
            if (np > out->max_pf) out->max_pf = np;
            if (budget && !learn && np > MIN_CHUNK &&
                kiln_step_cost_predict(&e->cost, np, nd, e->step_kk[0]) > TARGET + 1e-9) {
                out->over_budget++;
                fprintf(stderr, "step %d: %d prefill + %d decode rows, %.1f k keys: %.2f ms > %.2f\n", call, np, nd,
                        e->step_kk[0], kiln_step_cost_predict(&e->cost, np, nd, e->step_kk[0]), TARGET);
            }
            if (budget && learn) {
                int probe = 4 * pf_seen > 32 ? 4 * pf_seen : 32;
                if (np > probe) {
                    out->probe_violations++;
                    fprintf(stderr, "learning: step %d has %d prefill rows, probe %d\n", call, np, probe);
                }
                if (np > pf_seen) pf_seen = np;
            }
            if (long_rows > 0) {
                if (out->chunk_first < 0) out->chunk_first = long_rows;
                /* a full chunk: not the prompt's last one */
                if (long_base >= 0 && long_base + long_rows < k_len[LONG]) out->chunk_last_full = long_rows;
                out->n_long_chunks++;
            }
        }
        for (int i = 0; i < added; i++) {
            if (done[i]) continue;
            kiln_output o;
            if (kiln_engine_poll(e, ids[i], &o, &err)) continue;
            if (decoding[i] && o.n_new < 1 && o.finish == KILN_FINISH_NONE) {
                out->starved_decode++;
                fprintf(stderr, "step %d: request %d was decoding and got no token\n", call, i);
            }
            for (int t = 0; t < o.n_new && out->n[i] < MAXO; t++) out->ids[i][out->n[i]++] = o.new_ids[t];
            if (i == LATE && o.n_new > 0 && out->late_first_call < 0) out->late_first_call = call;
            if (i == LONG && o.n_new > 0 && out->long_prefilled_call < 0) out->long_prefilled_call = call;
            if (o.finish != KILN_FINISH_NONE) done[i] = 1;
        }
    }
    kiln_engine_get_stats(e, &out->st);
    kiln_engine_close(e);
    return call < 2000 ? 0 : -1;
}

static int same(const run_out *a, const run_out *b) {
    for (int i = 0; i < NREQ; i++)
        if (a->n[i] != b->n[i] || memcmp(a->ids[i], b->ids[i], sizeof(int32_t) * (size_t)a->n[i])) {
            fprintf(stderr, "request %d differs (%d vs %d tokens)\n", i, a->n[i], b->n[i]);
            return 0;
        }
    return 1;
}

int main(void) {
    /* the model alone: chunks at context 0 and 300 under the calibration (what the runs expect) */
    kiln_step_cost c;
    double prior[3] = {FIXED, TOK, ROW};
    kiln_step_cost_init(&c, prior, KKEY, 0, 0);
    int b0 = kiln_step_cost_prefill_budget(&c, 2, kiln_step_cost_kkeys(20, 2) , 0, TARGET, MIN_CHUNK, MBT);
    int b300 = kiln_step_cost_prefill_budget(&c, 2, kiln_step_cost_kkeys(20, 2), 300, TARGET, MIN_CHUNK, MBT);
    KT_CHECK(b0 >= 50 && b0 <= 70 && b300 >= 6 && b300 <= 14, "budgets at context 0 and 300: %d, %d", b0, b300);

    g_model = kt_shared("models/tinystories-656K");
    if (!kt_exists(kt_shared("models/tinystories-656K/model.safetensors")))
        KT_SKIP("tinystories-656K: fixture missing under %s", kt_shared(""));
    static run_out off, on, learn;
    KT_CHECK(run(0, 0, &off) == 0, "budget off");
    KT_CHECK(run(1, 0, &on) == 0, "budget on");
    for (int i = 0; i < NREQ; i++) KT_CHECK(off.n[i] == k_max[i], "request %d: %d tokens", i, off.n[i]);
    KT_CHECK(off.max_pf >= MBT - 2, "off: a step of max_batch_tokens prefill rows (%d, beside 2 decode rows)", off.max_pf);
    KT_CHECK(off.st.sched_step_limited_steps == 0 && off.st.sched_max_step_ms == 0, "off: no budget stats");

    KT_CHECK(on.over_budget == 0, "on: %d steps over the target", on.over_budget);
    KT_CHECK(on.max_pf < MBT && on.max_pf <= b0 + 1, "on: at most %d prefill rows a step (budget at context 0: %d)",
             on.max_pf, b0);
    KT_CHECK(on.starved_decode == 0, "on: %d decode rows left out while the prompt was prefilled", on.starved_decode);
    KT_CHECK(on.n_long_chunks >= 8, "on: the long prompt in %d chunks", on.n_long_chunks);
    KT_CHECK(on.chunk_first >= 3 * on.chunk_last_full && on.chunk_last_full >= MIN_CHUNK,
             "on: chunks shrink with the context (first %d, last full %d)", on.chunk_first, on.chunk_last_full);
    KT_CHECK(on.late_first_call > 0 && on.late_first_call - on.late_added_call <= 3 &&
                 on.late_first_call < on.long_prefilled_call,
             "on: the request added at call %d drew its first token at call %d, the long prompt's prefill ended at %d",
             on.late_added_call, on.late_first_call, on.long_prefilled_call);
    KT_CHECK(on.st.sched_step_limited_steps > 0, "on: limited steps counted");
    KT_CHECK(on.st.sched_max_step_ms == TARGET && on.st.sched_cost_kkey_ms == KKEY, "on: target and calibration in stats");
    KT_CHECK(same(&off, &on), "greedy output identical with the budget on and off");

    KT_CHECK(run(1, 1, &learn) == 0, "budget on, learning");
    KT_CHECK(learn.probe_violations == 0, "learning: %d steps past the probe", learn.probe_violations);
    KT_CHECK(learn.starved_decode == 0, "learning: %d decode rows left out", learn.starved_decode);
    KT_CHECK(learn.st.sched_cost_samples == learn.st.steps, "learning: every step timed");
    KT_CHECK(learn.st.sched_cost_kkey_ms >= 0, "learning: fit non-negative");
    KT_CHECK(same(&off, &learn), "greedy output identical with a learning budget");
    printf("off: %d steps, max %d prefill rows; on: %d steps, max %d, long prompt in %d chunks (%d .. %d rows), "
           "late request's first token %d steps after it came (prefill ended %d later); learning: %d steps, fit %.3g ms + "
           "%.3g ms/row + %.3g ms/decode + %.3g ms/1024 keys\n",
           off.steps, off.max_pf, on.steps, on.max_pf, on.n_long_chunks, on.chunk_first, on.chunk_last_full,
           on.late_first_call - on.late_added_call, on.long_prefilled_call - on.late_first_call, learn.steps,
           learn.st.sched_cost_fixed_ms, learn.st.sched_cost_token_ms, learn.st.sched_cost_row_ms,
           learn.st.sched_cost_kkey_ms);
    return kt_done();
}
