/* kiln-layer: engine (links only this layer and those below it) */
/* test_spec_stat.c: speculative sampling leaves the output distribution unchanged (issue 20).
 *
 * Target: tinystories-656K, one prompt, temperature 1 with top_k 2 (two candidates a position,
 * so the joint of a few positions has few cells). Draft: the same model sampled at
 * draft_temperature TD, far enough from the target that the rejection branch really runs
 * (acceptance between 30% and 80%, checked and printed). K = 2 proposals, max_tokens K + 2: the
 * first token comes from the prefill, the next K + 1 (bonus included) from verification steps.
 * N seeded requests give N samples of the joint of the 4 output tokens (16 cells); their counts
 * are held against the exact joint distribution, computed from the target's logits of every
 * prefix (kiln_engine_prompt_logits: the top-2 softmax at temperature 1), by a chi-square test
 * at the 0.001 level. Also: plain sampling passes the same test (the control, fewer samples), and
 * the speculative counts fail it against the exact distribution with 2% of probability moved from the likeliest cell to
 * the second (the test's power to see a 2% shift, checked, not assumed). Any sample outside the
 * support (a token the target's top-2 excludes) fails at once. Seeded: the outcome is fixed.
 * Skips loudly without the model. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include "engine/engine.h"
#include "engine/engine_internal.h"
#include "test.h"
#include "util/alloc.h"

#define K 2
#define NPOS (K + 2)
#define NCELL (1 << NPOS)
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
/* sanitizer builds (CI's asan / tsan stages, unoptimised and ~20x slower here): the same paths on
 * fewer samples, for memory and race errors; the statistics are the release build's to check */
#define STAT_LIGHT 1
#define NSAMP 1000
#define NCONTROL 500
#else
#define STAT_LIGHT 0
#define NSAMP 20000   /* speculative samples: enough to see a 2% shift (checked below) */
#define NCONTROL 8000 /* plain samples, the control of the exact distribution */
#endif
#define TD 8.0f

static const char *g_model;
static int32_t g_prompt[64];
static int g_np;
/* the exact tree: cand[node][2] candidate ids and prob[node][2], nodes in breadth-first order
 * (node 0: the prompt; children of n: 2n+1, 2n+2) */
static int32_t g_cand[NCELL][2];
static double g_prob[NCELL][2];

static kiln_engine *open_engine(int draft) {
    kiln_engine_options o;
    kiln_engine_options_default(&o);
    o.model_path = g_model;
    o.tokenizer_path = kt_shared("models/tinystories-656K/tokenizer.json");
    o.max_seqs = 64;
    o.max_model_len = 64;
    o.kv_memory_mb = 64;
    o.max_batch_tokens = 1024;
    if (draft) {
        o.draft_model_path = g_model;
        o.spec.num_speculative_tokens = K;
        o.spec.draft_temperature = TD;
    }
    kiln_engine *e = NULL;
    kiln_error err = {0};
    if (kiln_engine_open(&e, &o, &err)) fprintf(stderr, "open: %s\n", err.msg);
    return e;
}

/* top-2 of the last row of logits(prefix), softmax at temperature 1 over them (kiln's order:
 * logit descending, id ascending on ties) */
static int tree(kiln_engine *e) {
    int V = e->model->cfg.vocab_size;
    float *lg = kiln_malloc((size_t)(g_np + NPOS) * V * sizeof(float));
    int32_t ids[128];
    if (!lg) return -1;
    for (int node = 0; node < NCELL - 1; node++) {
        /* the path to node: its depth and the tokens chosen on the way */
        int depth = 0, path[NPOS], n = node;
        while (n > 0) { path[depth++] = n; n = (n - 1) / 2; }
        memcpy(ids, g_prompt, (size_t)g_np * sizeof(int32_t));
        for (int d = 0; d < depth; d++) {
            int child = path[depth - 1 - d], parent = (child - 1) / 2;
            ids[g_np + d] = g_cand[parent][(child - 1) % 2];
        }
        kiln_error err = {0};
        if (kiln_engine_prompt_logits(e, ids, g_np + depth, lg, &err)) { fprintf(stderr, "%s\n", err.msg); kiln_free(lg); return -1; }
        const float *row = lg + (size_t)(g_np + depth - 1) * V;
        int a = -1, b = -1;
        for (int i = 0; i < V; i++) {
            if (a < 0 || row[i] > row[a]) { b = a; a = i; }
            else if (b < 0 || row[i] > row[b]) b = i;
        }
        g_cand[node][0] = a;
        g_cand[node][1] = b;
        double eb = exp((double)row[b] - row[a]);
        g_prob[node][0] = 1 / (1 + eb);
        g_prob[node][1] = eb / (1 + eb);
    }
    kiln_free(lg);
    return 0;
}

/* the cell of an output (its path through the tree), -1 outside the support */
static int cell_of(const int32_t *out) {
    int node = 0, cell = 0;
    for (int d = 0; d < NPOS; d++) {
        int c = out[d] == g_cand[node][0] ? 0 : out[d] == g_cand[node][1] ? 1 : -1;
        if (c < 0) return -1;
        cell = cell * 2 + c;
        node = 2 * node + 1 + c;
    }
    return cell;
}

static double cell_prob(int cell) {
    double p = 1;
    int node = 0;
    for (int d = NPOS - 1; d >= 0; d--) {
        int c = cell >> d & 1;
        p *= g_prob[node][c];
        node = 2 * node + 1 + c;
    }
    return p;
}

/* N seeded requests -> counts per cell; *outside: samples outside the support */
static int sample(kiln_engine *e, uint64_t seed0, int nsamp, long *counts, int *outside) {
    kiln_error err = {0};
    memset(counts, 0, NCELL * sizeof(long));
    *outside = 0;
    enum { BATCH = 256 };
    for (int s0 = 0; s0 < nsamp; s0 += BATCH) {
        uint64_t ids[BATCH];
        int n = nsamp - s0 < BATCH ? nsamp - s0 : BATCH;
        for (int i = 0; i < n; i++) {
            kiln_request_params p;
            kiln_request_params_default(&p);
            p.prompt_ids = g_prompt;
            p.n_prompt = g_np;
            p.max_tokens = NPOS;
            p.ignore_eos = 1;
            p.sampling.temperature = 1.0f;
            p.sampling.top_k = 2;
            p.sampling.has_seed = 1;
            p.sampling.seed = seed0 + (uint64_t)(s0 + i);
            if (kiln_engine_add_request(e, &p, &ids[i], &err)) { fprintf(stderr, "add: %s\n", err.msg); return -1; }
        }
        int active = 1;
        while (active)
            if (kiln_engine_step(e, &active, &err)) { fprintf(stderr, "step: %s\n", err.msg); return -1; }
        for (int i = 0; i < n; i++) {
            kiln_output o;
            if (kiln_engine_poll(e, ids[i], &o, &err) || o.n_new != NPOS) {
                fprintf(stderr, "poll: %d tokens %s\n", o.n_new, err.msg);
                return -1;
            }
            int c = cell_of(o.new_ids);
            if (c < 0) (*outside)++;
            else counts[c]++;
        }
    }
    return 0;
}

static double chi2(const long *counts, const double *p, int nsamp) {
    double x = 0;
    for (int c = 0; c < NCELL; c++) {
        double ex = p[c] * nsamp;
        if (ex > 0) x += (counts[c] - ex) * (counts[c] - ex) / ex;
        else if (counts[c] > 0) x = INFINITY;
    }
    return x;
}

int main(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s", kt_shared("models/tinystories-656K"));
    if (!kt_exists(path)) KT_SKIP("%s absent", path);
    g_model = path;
    kiln_engine *e = open_engine(0);
    if (!e) { KT_CHECK(0, "open %s", path); return kt_done(); }
    int32_t *ids = NULL;
    int n = 0;
    kiln_error err = {0};
    const char *text = "Once upon a time, there was a little";
    if (kiln_engine_tokenize(e, text, strlen(text), 1, &ids, &n, &err) || n > 48) {
        KT_CHECK(0, "tokenize: %s", err.msg);
        kiln_engine_close(e);
        return kt_done();
    }
    memcpy(g_prompt, ids, (size_t)n * sizeof(int32_t));
    g_np = n;
    kiln_free(ids);
    KT_CHECK(tree(e) == 0, "the exact distribution");
    double p[NCELL], shifted[NCELL];
    double tot = 0;
    for (int c = 0; c < NCELL; c++) tot += p[c] = cell_prob(c);
    KT_CHECK(fabs(tot - 1) < 1e-9, "cell probabilities sum to %.12f", tot);
    /* the alternative 2% away: mass from the likeliest cell to the second */
    int c1 = 0, c2 = -1;
    for (int c = 1; c < NCELL; c++) if (p[c] > p[c1]) c1 = c;
    for (int c = 0; c < NCELL; c++) if (c != c1 && (c2 < 0 || p[c] > p[c2])) c2 = c;
    memcpy(shifted, p, sizeof p);
    shifted[c1] -= 0.02;
    shifted[c2] += 0.02;
    /* the 0.001 critical value of chi-square with 15 degrees of freedom (Wilson-Hilferty) */
    double df = NCELL - 1, z = 3.0902;
    double crit = df * pow(1 - 2 / (9 * df) + z * sqrt(2 / (9 * df)), 3);
    long plain[NCELL], spec[NCELL];
    int out_plain = 0, out_spec = 0;
    KT_CHECK(sample(e, 1000, NCONTROL, plain, &out_plain) == 0, "plain sampling");
    kiln_engine_close(e);
    e = open_engine(1);
    if (!e) { KT_CHECK(0, "open with a draft model"); return kt_done(); }
    KT_CHECK(sample(e, 1000 + NCONTROL, NSAMP, spec, &out_spec) == 0, "speculative sampling");
    kiln_engine_stats st;
    kiln_engine_get_stats(e, &st);
    kiln_engine_close(e);
    double acc = st.spec_draft_tokens ? (double)st.spec_accepted_tokens / (double)st.spec_draft_tokens : 0;
    double x_plain = chi2(plain, p, NCONTROL), x_spec = chi2(spec, p, NSAMP), x_spec_shift = chi2(spec, shifted, NSAMP);
    printf("target top-2 at temperature 1, draft at temperature %.1f, K = %d, %d samples of %d tokens (%d cells)\n", (double)TD,
           K, NSAMP, NPOS, NCELL);
    printf("acceptance %.1f%% (%llu of %llu proposed tokens, %llu proposals)\n", 100 * acc,
           (unsigned long long)st.spec_accepted_tokens, (unsigned long long)st.spec_draft_tokens,
           (unsigned long long)st.spec_drafts);
    printf("chi-square (df %d, 0.001 critical %.2f): plain (%d samples) %.2f, speculative %.2f; speculative against the "
           "2%%-shifted distribution: %.2f\n", NCELL - 1, crit, NCONTROL, x_plain, x_spec, x_spec_shift);
    for (int c = 0; c < NCELL; c++)
        printf("  cell %2d: p %.5f  plain %6ld  spec %6ld\n", c, p[c], plain[c], spec[c]);
    KT_CHECK(out_plain == 0 && out_spec == 0, "samples outside the support: plain %d, speculative %d", out_plain, out_spec);
    if (STAT_LIGHT) {
        printf("sanitizer build: %d samples, the statistical checks are left to the release build\n", NSAMP);
        return kt_done();
    }
    KT_CHECK(acc >= 0.30 && acc <= 0.80, "acceptance %.3f outside [0.30, 0.80]: the rejection branch must run", acc);
    KT_CHECK(x_plain < crit, "plain sampling does not match the exact distribution: %.2f >= %.2f", x_plain, crit);
    KT_CHECK(x_spec < crit, "speculative sampling does not match the exact distribution: %.2f >= %.2f", x_spec, crit);
    KT_CHECK(x_spec_shift > crit, "the test cannot see a 2%% shift: %.2f <= %.2f", x_spec_shift, crit);
    return kt_done();
}
