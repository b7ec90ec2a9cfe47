/* test_cuda_engine_sample.c: sampling on the GPU through the whole engine (cuda backend).
 *
 * 1. Device vs host: the same batch of requests (greedy + logprobs/top-n; temperature with top-p,
 *    top-k + min-p, penalties, logit bias, min_tokens suppression of EOS) run once with the
 *    tokens drawn on the device (sample.cu, penalty tables on the device) and once with
 *    KILN_HOST_SAMPLING=1 (the engine's CPU sampler on the same backend's host logits). The
 *    backend computes the same logits bits in both runs (same batch, same kernels), so the
 *    tokens must be equal and the logprobs equal within 1e-4 (device log-softmax vs host).
 *    Both runs launch kernel by kernel (KILN_CUDA_GRAPHS=0): a decode graph pads the batch to a
 *    bucket, which may change a default-mode GEMM's algorithm and so the logits' last bits.
 * 2. Batch invariance (KILN_BATCH_INVARIANT=1): each seeded request alone gives the same tokens
 *    and bit-identical logprobs as inside the batch, and again under a KV pool small enough to
 *    force preemptions (the penalty tables are reloaded from the recomputed sequence); and the
 *    batch with graphs (the default: decode graphs, and piecewise graphs for the prefill and
 *    mixed steps) equals the batch launched kernel by kernel, and the batch with overlapped
 *    scheduling (the default) equals it without (KILN_OVERLAP=0), and the decode graphs with the
 *    L2 prefetch branches (each mode) equal them without.
 * Models: tinystories-656K (f32) and mistral-tiny-random (bf16) from KILN_SHARED. */
#include <stdlib.h>
#include "cuda_test.h"
#include "engine/engine.h"
#include "backend/cuda/sync.h"
#include "engine/engine_internal.h"

#define NR 6
#define MAXO 48

typedef struct run_out {
    int32_t ids[NR][MAXO];
    float lp[NR][MAXO];
    int32_t top[NR][MAXO][5];
    int n[NR];
    uint64_t preemptions;
} run_out;

static kiln_engine *open_engine(const char *model, int kv_blocks) {
    kiln_engine_options o;
    kiln_engine_options_default(&o);
    o.model_path = model;
    o.backend = "cuda";
    o.skip_tokenizer = 1;
    o.max_seqs = 8;
    o.max_model_len = 256;
    o.kv_blocks = kv_blocks;
    o.kv_memory_mb = 64;
    o.max_batch_tokens = 256;
    o.enable_prefix_cache = -1;
    /* the switches this test flips in the environment, mapped as the kiln command does
     * (src/cli/env.c): the library reads options, not the environment */
    const char *v;
    if ((v = getenv("KILN_CUDA_GRAPHS")) && !strcmp(v, "0")) o.cuda.graphs = 0;
    if ((v = getenv("KILN_BATCH_INVARIANT")) && !strcmp(v, "1")) o.batch_invariant = 1;
    if ((v = getenv("KILN_HOST_SAMPLING")) && !strcmp(v, "1")) o.host_sampling = 1;
    if ((v = getenv("KILN_OVERLAP")) && !strcmp(v, "0")) o.overlap = -1;
    if ((v = getenv("KILN_CUDA_L2PF_MB"))) o.cuda.l2_prefetch_mb = atoi(v);
    if ((v = getenv("KILN_CUDA_L2PF_MODE"))) o.cuda.l2_prefetch_mode = atoi(v);
    kc_target_from_env(&o.cuda);
    kiln_engine *e = NULL;
    kiln_error err = {0};
    if (kiln_engine_open(&e, &o, &err)) fprintf(stderr, "open %s: %s\n", model, err.msg);
    return e;
}

static int32_t g_prompt[NR][40];
static int32_t g_bias_ids[2];
static float g_bias_vals[2] = {4.0f, -100.0f};

static void make_params(kiln_request_params *p, int i, int vocab) {
    kiln_request_params_default(p);
    unsigned long long s = 1000 + (unsigned long long)i * 77;
    int np = 12 + 5 * i;
    g_prompt[i][0] = 1;
    for (int k = 1; k < np; k++) g_prompt[i][k] = 3 + (int)(kt_rand_u64(&s) % (unsigned)(vocab - 3));
    p->prompt_ids = g_prompt[i];
    p->n_prompt = np;
    p->max_tokens = 32 + i;
    p->ignore_eos = 1;
    kiln_sampling *sp = &p->sampling;
    sp->logprobs = 1;
    sp->has_seed = 1;
    sp->seed = 42 + (uint64_t)i;
    switch (i) {
    case 0: sp->temperature = 0; sp->n_logprobs = 5; break;
    case 1: sp->temperature = 0.8f; sp->top_p = 0.9f; break;
    case 2: sp->temperature = 1.0f; sp->top_k = 20; sp->min_p = 0.05f; sp->n_logprobs = 3; break;
    case 3: sp->temperature = 0.7f; sp->repetition_penalty = 1.3f; sp->presence_penalty = 0.5f; sp->frequency_penalty = 0.4f; break;
    case 4:
        sp->temperature = 1.2f;
        g_bias_ids[0] = 5 % vocab;
        g_bias_ids[1] = 7 % vocab;
        sp->bias_ids = g_bias_ids;
        sp->bias_values = g_bias_vals;
        sp->n_bias = 2;
        sp->frequency_penalty = -0.5f;
        break;
    default: /* EOS allowed but suppressed for the first 20 tokens */
        sp->temperature = 0.9f;
        p->ignore_eos = 0;
        p->min_tokens = 20;
        sp->repetition_penalty = 0.8f;
        break;
    }
}

/* run the requests in `which` (all added at once) to completion */
static int run(kiln_engine *e, const int *which, int n, int vocab, run_out *o) {
    uint64_t ids[NR];
    kiln_error err = {0};
    for (int j = 0; j < n; j++) {
        kiln_request_params p;
        make_params(&p, which[j], vocab);
        if (kiln_engine_add_request(e, &p, &ids[j], &err)) { fprintf(stderr, "add: %s\n", err.msg); return 0; }
        o->n[which[j]] = 0;
    }
    int done = 0, steps = 0;
    int fin[NR] = {0};
    while (done < n && steps++ < 10000) {
        int active;
        if (kiln_engine_step(e, &active, &err)) { fprintf(stderr, "step: %s\n", err.msg); return 0; }
        for (int j = 0; j < n; j++) {
            if (fin[j]) continue;
            kiln_output out;
            if (kiln_engine_poll(e, ids[j], &out, &err)) return 0;
            int r = which[j];
            for (int k = 0; k < out.n_new && o->n[r] < MAXO; k++) {
                o->ids[r][o->n[r]] = out.new_ids[k];
                o->lp[r][o->n[r]] = out.logprobs ? out.logprobs[k] : 0;
                for (int q = 0; q < 5; q++)
                    o->top[r][o->n[r]][q] = q < out.n_logprobs && out.top ? out.top[(size_t)k * out.n_logprobs + q].id : -1;
                o->n[r]++;
            }
            if (out.finish) { fin[j] = 1; done++; }
        }
    }
    kiln_engine_stats st;
    kiln_engine_get_stats(e, &st);
    o->preemptions += st.preemptions;
    return done == n;
}

static void compare(const char *what, const run_out *a, const run_out *b, float tol) {
    for (int r = 0; r < NR; r++) {
        int same_n = a->n[r] == b->n[r], first = -1;
        float worst = 0;
        for (int k = 0; k < a->n[r] && k < b->n[r]; k++) {
            if (first < 0 && (a->ids[r][k] != b->ids[r][k] || memcmp(a->top[r][k], b->top[r][k], sizeof a->top[r][k])))
                first = k;
            float d = fabsf(a->lp[r][k] - b->lp[r][k]);
            if (first < 0 && d > worst) worst = d;
        }
        KT_CHECK(same_n && first < 0 && worst <= tol, "%s: request %d: %d vs %d tokens, first difference at %d, "
                 "max |logprob diff| %g (tol %g)", what, r, a->n[r], b->n[r], first, (double)worst, (double)tol);
        printf("%s: request %d: %d tokens equal, max |logprob diff| %.3g\n", what, r, a->n[r], (double)worst);
    }
}

static int one_model(const char *dir) {
    char model[1024];
    snprintf(model, sizeof model, "%s", kt_shared(dir));
    if (access(model, F_OK) != 0) {
        printf("SKIP %s: not found\n", model);
        return 0;
    }
    int all[NR] = {0, 1, 2, 3, 4, 5};
    static run_out dev, host, inv_batch, inv_solo, inv_small, inv_nograph, inv_noover;
    memset(&dev, 0, sizeof dev);
    memset(&host, 0, sizeof host);
    memset(&inv_batch, 0, sizeof inv_batch);
    memset(&inv_solo, 0, sizeof inv_solo);
    memset(&inv_small, 0, sizeof inv_small);
    memset(&inv_nograph, 0, sizeof inv_nograph);
    memset(&inv_noover, 0, sizeof inv_noover);

    unsetenv("KILN_BATCH_INVARIANT");
    unsetenv("KILN_HOST_SAMPLING");
    setenv("KILN_CUDA_GRAPHS", "0", 1);
    kiln_engine *e = open_engine(model, 0);
    KT_CHECK(e != NULL, "open %s", model);
    if (!e) return 1;
    int vocab = kiln_engine_model(e)->cfg.vocab_size;
    KT_CHECK(e->device_sample == 1, "%s: the cuda backend samples on the device by default", dir);
    KT_CHECK(run(e, all, NR, vocab, &dev), "%s: device-sampled run", dir);
    kiln_engine_close(e);

    setenv("KILN_HOST_SAMPLING", "1", 1);
    e = open_engine(model, 0);
    KT_CHECK(e && e->device_sample == 0, "%s: KILN_HOST_SAMPLING=1 samples on the host", dir);
    KT_CHECK(e && run(e, all, NR, vocab, &host), "%s: host-sampled run", dir);
    kiln_engine_close(e);
    unsetenv("KILN_HOST_SAMPLING");
    compare("device vs host sampler", &dev, &host, 1e-4f);
    unsetenv("KILN_CUDA_GRAPHS");
    /* the min_tokens request must not stop before 20 tokens, the bias pushes id 7 out */
    KT_CHECK(dev.n[5] >= 20, "%s: min_tokens 20 gave %d tokens", dir, dev.n[5]);
    for (int k = 0; k < dev.n[4]; k++) KT_CHECK(dev.ids[4][k] != g_bias_ids[1], "%s: biased-out id sampled", dir);

    setenv("KILN_BATCH_INVARIANT", "1", 1);
    e = open_engine(model, 0);
    KT_CHECK(e && run(e, all, NR, vocab, &inv_batch), "%s: invariant batch", dir);
    for (int i = 0; i < NR && e; i++) KT_CHECK(run(e, &all[i], 1, vocab, &inv_solo), "%s: solo %d", dir, i);
    uint64_t osteps = e ? e->stats.overlapped_steps : 0;
    KT_CHECK(osteps > 0 && e->stats.syncs == e->stats.steps, "%s: %llu overlapped steps, %llu syncs for %llu steps", dir,
             (unsigned long long)osteps, (unsigned long long)(e ? e->stats.syncs : 0),
             (unsigned long long)(e ? e->stats.steps : 0));
    uint64_t gsteps = e ? kiln_backend_cuda_graph_steps(e->backend) : 0;
    uint64_t psteps = e ? kiln_backend_cuda_piece_steps(e->backend) : 0;
    KT_CHECK(gsteps > 0, "%s: decode steps replayed from graphs (%llu)", dir, (unsigned long long)gsteps);
    KT_CHECK(psteps > 0, "%s: prefill steps through the piecewise graphs (%llu)", dir, (unsigned long long)psteps);
    printf("%s: %llu decode steps replayed from graphs, %llu steps through the piecewise graphs\n", dir,
           (unsigned long long)gsteps, (unsigned long long)psteps);
    kiln_engine_close(e);
    compare("alone vs in a batch (KILN_BATCH_INVARIANT=1)", &inv_solo, &inv_batch, 0.0f);
    /* a pool of 12 blocks of 16 for six sequences of up to 77 tokens: preemption and recompute */
    e = open_engine(model, 13);
    KT_CHECK(e && run(e, all, NR, vocab, &inv_small), "%s: small pool", dir);
    kiln_engine_close(e);
    KT_CHECK(inv_small.preemptions > 0, "%s: the small pool preempted (%llu)", dir, (unsigned long long)inv_small.preemptions);
    printf("%s: %llu preemptions in the small pool\n", dir, (unsigned long long)inv_small.preemptions);
    compare("after preemption vs batch (KILN_BATCH_INVARIANT=1)", &inv_small, &inv_batch, 0.0f);
    setenv("KILN_CUDA_GRAPHS", "0", 1);
    e = open_engine(model, 0);
    KT_CHECK(e && run(e, all, NR, vocab, &inv_nograph), "%s: invariant batch without graphs", dir);
    kiln_engine_close(e);
    unsetenv("KILN_CUDA_GRAPHS");
    compare("decode + piecewise graphs vs kernel by kernel (KILN_BATCH_INVARIANT=1)", &inv_batch, &inv_nograph, 0.0f);
    /* overlapped scheduling (the default: the next step's input tokens come from the device) vs
     * a host round trip per step */
    setenv("KILN_OVERLAP", "0", 1);
    e = open_engine(model, 0);
    KT_CHECK(e && run(e, all, NR, vocab, &inv_noover), "%s: invariant batch without overlap", dir);
    KT_CHECK(e && e->stats.overlapped_steps == 0, "%s: KILN_OVERLAP=0 still overlapped", dir);
    kiln_engine_close(e);
    unsetenv("KILN_OVERLAP");
    compare("overlapped vs not (KILN_BATCH_INVARIANT=1)", &inv_batch, &inv_noover, 0.0f);
    /* the L2 prefetch branches of the decode graphs: a hint, the same bits in every mode */
    setenv("KILN_CUDA_L2PF_MB", "64", 1);
    for (int mode = 1; mode <= 3; mode++) {
        static run_out inv_pf;
        memset(&inv_pf, 0, sizeof inv_pf);
        char ms[8], what[96];
        snprintf(ms, sizeof ms, "%d", mode);
        setenv("KILN_CUDA_L2PF_MODE", ms, 1);
        e = open_engine(model, 0);
        KT_CHECK(e && run(e, all, NR, vocab, &inv_pf), "%s: invariant batch with L2 prefetch mode %d", dir, mode);
        uint64_t forks = e ? kiln_backend_cuda_l2pf_forks(e->backend) : 0;
        KT_CHECK(forks > 0, "%s: L2 prefetch mode %d: %llu prefetches captured", dir, mode, (unsigned long long)forks);
        kiln_engine_close(e);
        snprintf(what, sizeof what, "L2 prefetch mode %d vs none (KILN_BATCH_INVARIANT=1)", mode);
        compare(what, &inv_batch, &inv_pf, 0.0f);
    }
    unsetenv("KILN_CUDA_L2PF_MB");
    unsetenv("KILN_CUDA_L2PF_MODE");
    unsetenv("KILN_BATCH_INVARIANT");
    return 1;
}

int main(void) {
    kc_require_gpu();
    int found = one_model("models/tinystories-656K") + one_model("models/mistral-tiny-random");
    if (!found) KT_SKIP("no test model under KILN_SHARED");
    return kt_done();
}
