/* test_cuda_moe.c: the mixture-of-experts FFN on the GPU (moe.cu, cuda_moe.c) against the CPU's
 * (src/backend/cpu/moe.c):
 *   - kernel level, random inputs, T = 1, 2, 3, 7, 16, 33, 64 rows: the routing (each row's
 *     experts equal to a float64 top-k of the same rounded inputs, except rows whose k-th and
 *     (k+1)-th logits are within 1e-4: near-ties), the permutation (each expert's rows
 *     contiguous, in pair order, offsets = the counts) and the FFN output within kc_tol of
 *     kiln_cpu_moe_ffn on the same bf16 / f16 / f32 weights; uniform routing and skewed routing
 *     (one expert in nearly every row, two experts never chosen: empty groups); each on the
 *     CUDA-core expert kernel, the tensor-core GEMM (forced, tc = 2) and the decode kernel (tiles
 *     of 16 and 32 rows; a row's bits alone = among the others); routing from xn or, as the
 *     backend does, from rmsnorm(residual) recomputed in f32;
 *   - model level, the tiny Mixtral fixtures (tests/fixtures/families/mixtral{,-native,.gguf}, 4
 *     experts, top 2, bf16 / f32): prompt logits on cuda within 3e-2 relative L2 of the cpu's per
 *     row (test_cuda_step's bound), all but at most 1 row in 8 (routing near-ties: see
 *     model_case); 64 requests decoding together (steps of 1..64 decode rows as they start
 *     and finish) give the cpu's greedy ids up to the first near-tie (cpu's top-2 logprobs
 *     within 0.05), all but at most 1 request in 8, with CUDA graphs on and off; in
 *     batch-invariant mode a request's ids and logprobs bit-identical alone and among the 64 (I6);
 *     the same fixture's config as --load-format
 *     dummy (experts filled on the device) against the cpu's host-filled dummy. */
#include <math.h>
#include <stdlib.h>
#include "backend/cpu/moe.h"
#include "backend/cuda/moe.h"
#include "cuda_test.h"
#include "engine/engine.h"
#include "util/alloc.h"

#define FIX "tests/fixtures/families/mixtral"

typedef struct moe_case {
    int D, F, E, K;
    kiln_dtype dt;
    int skew; /* 1: expert 0 nearly always chosen, experts E-1, E-2 never */
    int rf32; /* 1: route from rmsnorm(x_res) * w in f32 (the backend's way), xn = its rounding */
} moe_case;

static void fill_rounded(kiln_dtype dt, float *f, void *h, size_t n, float scale, unsigned long long *s) {
    kc_rand(f, n, scale, s);
    kc_to_dt(dt, f, h, n);
    kc_from_dt(dt, h, f, n);
}

/* tc (moe.h): 3 the CUDA-core expert kernel, 2 the tensor-core GEMM (where the shape allows it),
 * 0 the decode kernel (batch-invariant mode's choice: tiles of 16 rows below 8 rows per expert on
 * average, else 32), 4 the decode kernel's 32-row tiles; f32: CUDA cores whatever tc says.
 * Decode kernel: also row 0 computed alone (tiles of 16) has the same bits as among the T rows. */
static void kernel_case(const moe_case *mc, int T, int tc, unsigned long long *s) {
    int D = mc->D, F = mc->F, E = mc->E, K = mc->K, P = T * K;
    size_t as = kc_dtsize(mc->dt);
    size_t nx = (size_t)T * D, nr = (size_t)E * D, ngu = (size_t)E * 2 * F * D, nd = (size_t)E * D * F;
    float *x = kiln_malloc(nx * 4), *rt = kiln_malloc(nr * 4), *gu = kiln_malloc(ngu * 4), *dn = kiln_malloc(nd * 4);
    void *xh = kiln_malloc(nx * as), *rh = kiln_malloc(nr * as), *guh = kiln_malloc(ngu * as), *dh = kiln_malloc(nd * as);
    fill_rounded(mc->dt, x, xh, nx, 1.0f, s);
    fill_rounded(mc->dt, rt, rh, nr, 1.0f / sqrtf((float)D), s);
    fill_rounded(mc->dt, gu, guh, ngu, 2.0f / sqrtf((float)D), s);
    fill_rounded(mc->dt, dn, dh, nd, 2.0f / sqrtf((float)F), s);
    float *xres = NULL, *nwv = NULL;
    if (mc->rf32) { /* x = rmsnorm(xres) * nwv in f32 (what the CPU routes and runs on), xh its rounding */
        xres = kiln_malloc(nx * 4);
        nwv = kiln_malloc((size_t)D * 4);
        kc_rand(xres, nx, 1.0f, s);
        kc_rand(nwv, (size_t)D, 0.5f, s);
        for (int i = 0; i < D; i++) nwv[i] += 1.0f;
        for (int t = 0; mc->skew && t < T; t++) xres[(size_t)t * D] = 8.0f;
        for (int t = 0; t < T; t++) {
            const float *v = xres + (size_t)t * D;
            float ss = 0.0f;
            for (int i = 0; i < D; i++) ss += v[i] * v[i];
            float inv = 1.0f / sqrtf(ss / (float)D + 1e-5f);
            for (int i = 0; i < D; i++) x[(size_t)t * D + i] = nwv[i] * (v[i] * inv);
        }
        kc_to_dt(mc->dt, x, xh, nx);
    }
    if (mc->skew) { /* column 0 of x is large and the router's column 0 a per-expert bias */
        if (!mc->rf32) {
            for (int t = 0; t < T; t++) x[(size_t)t * D] = 4.0f;
            kc_to_dt(mc->dt, x, xh, nx);
        }
        for (int e = 0; e < E; e++) rt[(size_t)e * D] = e == 0 ? 2.0f : e >= E - 2 ? -3.0f : 0.0f;
        kc_to_dt(mc->dt, rt, rh, nr);
    }
    /* the CPU reference on the same rounded weights (as host tensors of dtype dt) */
    kiln_tensor router = {.dtype = mc->dt, .ndim = 2, .shape = {E, D}, .data = rh, .nbytes = nr * as};
    snprintf(router.name, sizeof router.name, "router");
    kiln_tensor *ex = kiln_calloc((size_t)3 * E, sizeof *ex);
    for (int e = 0; e < E; e++) {
        kiln_tensor *g = &ex[3 * e];
        size_t gb = (size_t)F * D * as;
        g[0] = (kiln_tensor){.dtype = mc->dt, .ndim = 2, .shape = {F, D}, .data = (char *)guh + 2 * gb * e, .nbytes = gb};
        g[1] = (kiln_tensor){.dtype = mc->dt, .ndim = 2, .shape = {F, D}, .data = (char *)guh + 2 * gb * e + gb, .nbytes = gb};
        g[2] = (kiln_tensor){.dtype = mc->dt, .ndim = 2, .shape = {D, F}, .data = (char *)dh + gb * e, .nbytes = gb};
        for (int j = 0; j < 3; j++) snprintf(g[j].name, sizeof g[j].name, "expert%d.%d", e, j);
    }
    kiln_layer_weights lw;
    memset(&lw, 0, sizeof lw);
    lw.router = &router;
    lw.experts = ex;
    kiln_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.dim = D, cfg.hidden_dim = F, cfg.n_experts = E, cfg.n_experts_used = K;
    float *want = kiln_malloc(nx * 4), *got = kiln_malloc(nx * 4);
    float *cg = kiln_malloc((size_t)T * F * 4), *cu = kiln_malloc((size_t)T * F * 4);
    float *cs = kiln_malloc(kiln_cpu_moe_scratch_floats(T, D, E, K) * 4);
    kiln_cpu_ctx cpu = {.isa = kiln_isa_best(), .pool = NULL};
    kiln_error err = {0};
    KT_CHECK(kiln_cpu_moe_ffn(&cpu, &lw, &cfg, T, x, want, cg, cu, cs, &err) == 0, "cpu moe: %s", err.msg);
    /* the GPU */
    size_t bi, bw, ba, by;
    kiln_cuda_moe_scratch_bytes(T, D, F, E, K, mc->dt, &bi, &bw, &ba, &by);
    kiln_cuda_moe_args a = {.T = T, .D = D, .F = F, .E = E, .K = K, .dt = mc->dt, .tc = tc};
    int b16 = mc->dt != KILN_DT_F32, on_tc = tc == 2 && b16 && D % 32 == 0 && F % 32 == 0;
    int on_sk = b16 && (tc == 0 || tc == 4), sk_rows = tc == 4 || P >= KILN_MOE_SK32_MIN_ROWS * E ? 32 : 16;
    int tr = on_tc ? KILN_MOE_TC_TILE_ROWS : on_sk ? sk_rows : KILN_MOE_TILE_ROWS;
    const char *path = on_tc ? "tc  " : !on_sk ? "cuda" : sk_rows == 16 ? "sk16" : "sk32";
    void *dx = kc_dev(nx * as), *dr = kc_dev(nr * as), *dgu = kc_dev(ngu * as), *dd = kc_dev(nd * as);
    kc_put(dx, xh, nx * as); kc_put(dr, rh, nr * as); kc_put(dgu, guh, ngu * as); kc_put(dd, dh, nd * as);
    a.xn = dx, a.router = dr, a.w_gu = dgu, a.w_down = dd;
    float *dxres = NULL, *dnw = NULL;
    if (mc->rf32) {
        dxres = kc_dev(nx * 4);
        dnw = kc_dev((size_t)D * 4);
        kc_put(dxres, xres, nx * 4);
        kc_put(dnw, nwv, (size_t)D * 4);
        a.x_res = dxres, a.norm_w = dnw, a.eps = 1e-5f;
    }
    a.out = kc_dev(nx * 4);
    a.idx = kc_dev(bi), a.wts = kc_dev(bw), a.act = kc_dev(ba), a.y = kc_dev(by);
    kc_poison(a.out, nx * 4); kc_poison(a.idx, bi); kc_poison(a.wts, bw); kc_poison(a.act, ba); kc_poison(a.y, by);
    CU(kiln_cuda_moe_ffn(&a, 0));
    int32_t *idx = kiln_malloc(bi);
    kc_get(got, a.out, nx * 4);
    kc_get(idx, a.idx, bi);
    const int32_t *sel = idx, *pos = sel + P, *src = pos + P, *offs = src + P, *toff = offs + E + 1;
    const int32_t *toff16 = toff + E + 1, *toff32 = toff16 + E + 1;
    /* routing against a float64 top-k; near-ties (gap < 1e-4) may go either way */
    int bad_sel = 0, ties = 0, *cnt = kiln_calloc((size_t)E, sizeof(int));
    unsigned char *tie = kiln_calloc((size_t)T, 1);
    for (int t = 0; t < T; t++) {
        double lg[KILN_MOE_MAX_EXPERTS];
        int taken[KILN_MOE_MAX_EXPERTS] = {0}, ref[KILN_MOE_MAX_USED];
        for (int e = 0; e < E; e++) {
            double v = 0;
            for (int i = 0; i < D; i++) v += (double)x[(size_t)t * D + i] * rt[(size_t)e * D + i];
            lg[e] = v;
        }
        for (int j = 0; j <= K && j < E; j++) {
            int b = -1;
            for (int e = 0; e < E; e++) if (!taken[e] && (b < 0 || lg[e] > lg[b])) b = e;
            taken[b] = 1;
            if (j < K) ref[j] = b;
            else if (lg[ref[K - 1]] - lg[b] < 1e-4) tie[t] = 1;
        }
        for (int j = 1; j < K; j++) if (lg[ref[j - 1]] - lg[ref[j]] < 1e-4) tie[t] = 1;
        ties += tie[t];
        for (int j = 0; j < K; j++) {
            if (!tie[t] && sel[(size_t)t * K + j] != ref[j]) bad_sel++;
            int e = sel[(size_t)t * K + j];
            if (e >= 0 && e < E) cnt[e]++;
        }
    }
    KT_CHECK(bad_sel == 0, "moe T=%d E=%d K=%d: %d routing choices differ from the float64 top-k", T, E, K, bad_sel);
    /* permutation: offsets = counts, each pair once, rows of an expert in pair order */
    int bad_perm = 0, empty = 0, tiles = 0;
    for (int e = 0; e < E; e++) {
        bad_perm += offs[e + 1] - offs[e] != cnt[e];
        empty += cnt[e] == 0;
        bad_perm += toff[e + 1] - toff[e] != (cnt[e] + KILN_MOE_TILE_ROWS - 1) / KILN_MOE_TILE_ROWS;
        bad_perm += toff16[e + 1] - toff16[e] != (cnt[e] + KILN_MOE_TC_TILE_ROWS - 1) / KILN_MOE_TC_TILE_ROWS;
        bad_perm += toff32[e + 1] - toff32[e] != (cnt[e] + 31) / 32;
        tiles += (cnt[e] + tr - 1) / tr;
    }
    bad_perm += offs[0] != 0 || offs[E] != P || toff[0] != 0 || toff16[0] != 0 || toff32[0] != 0;
    int last_p = -1, last_e = -1;
    int32_t *pair_at = kiln_malloc((size_t)P * 4);
    for (int i = 0; i < P; i++) pair_at[i] = -1;
    for (int p = 0; p < P; p++) {
        if (pos[p] < 0 || pos[p] >= P || pair_at[pos[p]] >= 0) { bad_perm++; continue; }
        pair_at[pos[p]] = p;
    }
    for (int i = 0; i < P && !bad_perm; i++) {
        int p = pair_at[i], e = sel[p];
        bad_perm += src[i] != p / K || i < offs[e] || i >= offs[e + 1];
        if (e == last_e) bad_perm += p < last_p; /* stable */
        last_e = e, last_p = p;
    }
    KT_CHECK(bad_perm == 0, "moe T=%d E=%d K=%d: permutation wrong (%d faults)", T, E, K, bad_perm);
    /* the output, rows with near-ties left out */
    double num = 0, den = 0;
    for (int t = 0; t < T; t++) {
        if (tie[t]) continue;
        for (int i = 0; i < D; i++) {
            double d = (double)got[(size_t)t * D + i] - want[(size_t)t * D + i];
            num += d * d;
            den += (double)want[(size_t)t * D + i] * want[(size_t)t * D + i];
        }
    }
    double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    KT_CHECK(rel <= kc_tol(mc->dt), "moe %s T=%d E=%d K=%d%s %s: rel L2 %g vs cpu", kc_dtname(mc->dt), T, E, K,
             mc->skew ? " skewed" : "", path, rel);
    int nan = 0;
    for (size_t i = 0; i < nx; i++) nan += isnan(got[i]);
    KT_CHECK(nan == 0, "moe T=%d: %d outputs unwritten (NaN)", T, nan);
    if (on_sk && T > 1) { /* row 0 alone (tiles of 16 rows): the same bits as among the T rows */
        float *alone = kiln_malloc((size_t)D * 4);
        kiln_cuda_moe_args a1 = a;
        a1.T = 1, a1.tc = 0, a1.out = kc_dev((size_t)D * 4);
        CU(kiln_cuda_moe_ffn(&a1, 0));
        kc_get(alone, a1.out, (size_t)D * 4);
        KT_CHECK(memcmp(alone, got, (size_t)D * 4) == 0, "moe %s T=%d %s: row 0 alone differs from row 0 among %d rows",
                 kc_dtname(mc->dt), T, path, T);
        CU(cudaFree(a1.out));
        kiln_free(alone);
    }
    printf("moe %-4s D=%d F=%d E=%d K=%d T=%-3d%s %s%s: %d tiles, %d empty experts, %d near-ties, rel L2 vs cpu "
           "%.3g\n", kc_dtname(mc->dt), D, F, E, K, T, mc->skew ? " skewed" : "       ", path,
           mc->rf32 ? " f32-route" : "", tiles, empty, ties, rel);
    CU(cudaFree(dx)); CU(cudaFree(dr)); CU(cudaFree(dgu)); CU(cudaFree(dd)); CU(cudaFree(a.out));
    CU(cudaFree(a.idx)); CU(cudaFree(a.wts)); CU(cudaFree(a.act)); CU(cudaFree(a.y));
    if (dxres) CU(cudaFree(dxres));
    if (dnw) CU(cudaFree(dnw));
    kiln_free(xres); kiln_free(nwv);
    kiln_free(x); kiln_free(rt); kiln_free(gu); kiln_free(dn); kiln_free(xh); kiln_free(rh); kiln_free(guh);
    kiln_free(dh); kiln_free(ex); kiln_free(want); kiln_free(got); kiln_free(cg); kiln_free(cu); kiln_free(cs);
    kiln_free(idx); kiln_free(cnt); kiln_free(tie); kiln_free(pair_at);
}

/* ---- model level --------------------------------------------------------------------------- */

static int g_invariant; /* open engines in batch-invariant mode (I6) */

static kiln_engine *open_engine_at(const char *model, const char *backend, int graphs, kiln_error *err) {
    kiln_engine_options o;
    kiln_engine_options_default(&o);
    o.batch_invariant = g_invariant;
    o.model_path = model;
    o.backend = backend;
    o.skip_tokenizer = 1;
    o.max_seqs = 64;
    o.kv_memory_mb = 64;
    o.max_model_len = 128;
    o.max_batch_tokens = 512;
    if (!graphs) o.cuda.graphs = 0;
    kc_target_from_env(&o.cuda);
    kiln_engine *e = NULL;
    if (kiln_engine_open(&e, &o, err)) return NULL;
    return e;
}

/* --load-format dummy on a Mixtral config: the cuda engine fills the experts on the device
 * (host_data = 0: cuda_weights.c put_moe, seeded by the expert's index in m->tensors), the cpu
 * engine on the host from the same formula; prompt logits must agree */
static void dummy_case(void) {
    const char *cfg = FIX "/config.json";
    if (!kt_exists(cfg)) return;
    kiln_engine *pe[2] = {NULL, NULL};
    static const char *be[2] = {"cpu", "cuda"};
    kiln_error err = {0};
    for (int i = 0; i < 2; i++) {
        kiln_engine_options o;
        kiln_engine_options_default(&o);
        o.model_path = cfg;
        o.backend = be[i];
        o.load_dummy = 1;
        o.skip_tokenizer = 1;
        o.max_seqs = 4;
        o.kv_memory_mb = 16;
        o.max_model_len = 128;
        kc_target_from_env(&o.cuda);
        if (kiln_engine_open(&pe[i], &o, &err)) pe[i] = NULL;
        KT_CHECK(pe[i] != NULL, "dummy mixtral on %s: %s", be[i], err.msg);
    }
    if (pe[0] && pe[1]) {
        int32_t ids[20];
        for (int i = 0; i < 20; i++) ids[i] = 1 + (i * 37) % 90;
        int V = kiln_engine_model(pe[0])->cfg.vocab_size;
        float *l0 = kiln_malloc((size_t)20 * V * 4), *l1 = kiln_malloc((size_t)20 * V * 4);
        int r0 = kiln_engine_prompt_logits(pe[0], ids, 20, l0, &err);
        KT_CHECK(r0 == 0, "cpu dummy prompt_logits: %s", err.msg);
        int r1 = kiln_engine_prompt_logits(pe[1], ids, 20, l1, &err);
        KT_CHECK(r1 == 0, "cuda dummy prompt_logits: %s", err.msg);
        if (!r0 && !r1) {
            double e = kt_rel_l2(l1, l0, (size_t)20 * V);
            KT_CHECK(e <= 2e-2, "dummy mixtral: cuda (device-filled experts) vs cpu rel L2 %g", e);
            printf("dummy mixtral (experts filled on the device): cuda vs cpu prompt logits rel L2 %.3g\n", e);
        }
        kiln_free(l0);
        kiln_free(l1);
    }
    kiln_engine_close(pe[0]);
    kiln_engine_close(pe[1]);
}

static kiln_engine *open_engine(const char *backend, int graphs, kiln_error *err) {
    return open_engine_at(FIX, backend, graphs, err);
}

#define NREQ 64
#define NEW 12
typedef struct gen {
    int32_t ids[NEW];
    float gap[NEW]; /* top-1 minus top-2 logprob */
    float lp[NEW];  /* logprob of the drawn token */
    int n;
} gen;

/* NREQ greedy requests, request r added at step r / 8 (so the decode batch grows 8 at a time
 * to 64 rows and shrinks as they finish) */
static int run_n(kiln_engine *e, int32_t (*prompts)[24], const int *np, int nreq, gen *out) {
    kiln_error err = {0};
    uint64_t id[NREQ];
    int added = 0, active = 1, guard = 0, done = 0;
    memset(out, 0, sizeof(gen) * (size_t)nreq);
    while ((added < nreq || active > 0) && guard++ < 10000) {
        for (int k = 0; k < 8 && added < nreq; k++, added++) {
            kiln_request_params p;
            kiln_request_params_default(&p);
            p.prompt_ids = prompts[added];
            p.n_prompt = np[added];
            p.max_tokens = NEW;
            p.ignore_eos = 1;
            p.sampling.temperature = 0;
            p.sampling.logprobs = 1;
            p.sampling.n_logprobs = 2;
            if (kiln_engine_add_request(e, &p, &id[added], &err)) { fprintf(stderr, "add: %s\n", err.msg); return -1; }
        }
        if (kiln_engine_step(e, &active, &err)) { fprintf(stderr, "step: %s\n", err.msg); return -1; }
        for (int r = 0; r < added; r++) {
            kiln_output o;
            if (kiln_engine_poll(e, id[r], &o, &err)) continue;
            for (int i = 0; i < o.n_new && out[r].n < NEW; i++) {
                out[r].gap[out[r].n] = o.n_logprobs >= 2 ? o.top[i * o.n_logprobs].logprob -
                                                               o.top[i * o.n_logprobs + 1].logprob : 1e9f;
                out[r].lp[out[r].n] = o.logprobs ? o.logprobs[i] : 0.0f;
                out[r].ids[out[r].n++] = o.new_ids[i];
            }
            if (o.finish != KILN_FINISH_NONE) done++;
        }
    }
    (void)done;
    return 0;
}

static int run_batch(kiln_engine *e, int32_t (*prompts)[24], const int *np, gen *out) {
    return run_n(e, prompts, np, NREQ, out);
}

/* I6 with experts: in batch-invariant mode (the CUDA-core expert kernel whatever the batch) a
 * request's ids and logprobs are bit-identical alone and inside the 64-request batch */
static void invariant_case(int32_t (*prompts)[24], const int *np) {
    kiln_error err = {0};
    g_invariant = 1;
    kiln_engine *g = open_engine("cuda", 1, &err);
    g_invariant = 0;
    KT_CHECK(g != NULL, "open mixtral on cuda, batch-invariant: %s", err.msg);
    if (!g) return;
    static gen batch[NREQ], solo[3];
    int same = 0;
    if (run_batch(g, prompts, np, batch) == 0) {
        for (int r = 0; r < 3; r++) {
            int rr = r * 21; /* requests 0, 21, 42 */
            if (run_n(g, &prompts[rr], &np[rr], 1, &solo[r])) break;
            int eq = solo[r].n == batch[rr].n && !memcmp(solo[r].ids, batch[rr].ids, sizeof solo[r].ids) &&
                     !memcmp(solo[r].lp, batch[rr].lp, sizeof solo[r].lp);
            KT_CHECK(eq, "I6: mixtral request %d differs alone and in the batch (batch-invariant mode)", rr);
            same += eq;
        }
    } else {
        KT_CHECK(0, "batch-invariant generation failed");
    }
    printf("mixtral batch-invariant: %d of 3 requests bit-identical (ids, logprobs) alone and among 64\n", same);
    kiln_engine_close(g);
}

static void model_case(void) {
    if (!kt_exists(FIX "/config.json")) {
        fprintf(stderr, "SKIP model level: fixture %s missing (tests/fixtures/make_families.py)\n", FIX);
        return;
    }
    kiln_error err = {0};
    kiln_engine *c = open_engine("cpu", 1, &err);
    KT_CHECK(c != NULL, "open mixtral on cpu: %s", err.msg);
    kiln_engine *g = open_engine("cuda", 1, &err);
    KT_CHECK(g != NULL, "open mixtral on cuda: %s", err.msg);
    kiln_engine *g0 = open_engine("cuda", 0, &err);
    KT_CHECK(g0 != NULL, "open mixtral on cuda without graphs: %s", err.msg);
    if (!c || !g || !g0) goto done;
    int V = kiln_engine_model(c)->cfg.vocab_size;
    unsigned long long s = 1234;
    static int32_t prompts[NREQ][24];
    int np[NREQ];
    for (int r = 0; r < NREQ; r++) {
        np[r] = 3 + (int)(kt_rand_u64(&s) % 20);
        prompts[r][0] = 1;
        for (int i = 1; i < np[r]; i++) prompts[r][i] = 3 + (int)(kt_rand_u64(&s) % (uint64_t)(V - 3));
    }
    /* prompt logits: the HF layout (bf16), Mistral-native (bf16) and GGUF (f32, 3-D expert
     * tensors sliced per expert) */
    static const char *fx[] = {FIX, FIX "-native", FIX ".gguf"};
    for (int f = 0; f < 3; f++) {
        kiln_engine *pc = f ? NULL : c, *pg = f ? NULL : g;
        if (f) {
            if (!kt_exists(fx[f])) { fprintf(stderr, "SKIP %s: fixture missing\n", fx[f]); continue; }
            pc = open_engine_at(fx[f], "cpu", 1, &err);
            KT_CHECK(pc != NULL, "open %s on cpu: %s", fx[f], err.msg);
            pg = open_engine_at(fx[f], "cuda", 1, &err);
            KT_CHECK(pg != NULL, "open %s on cuda: %s", fx[f], err.msg);
        }
        /* per row (token): within 3e-2 (test_cuda_step's per-row bound for bf16 activations and
         * KV). A token whose router logits sit within rounding of a tie may take another expert
         * on one backend than on the other (the GPU's residual stream differs from the CPU's by
         * bf16 rounding): such a row, and rows after it, may differ by more. At most 1 row in 8
         * may; a wrong kernel moves nearly every row. */
        double worst = 0, sum = 0;
        int rows = 0, over = 0;
        for (int r = 0; pc && pg && r < 8; r++) {
            float *lg = kiln_malloc((size_t)np[r] * V * 4), *lc = kiln_malloc((size_t)np[r] * V * 4);
            int rg = kiln_engine_prompt_logits(pg, prompts[r], np[r], lg, &err);
            KT_CHECK(rg == 0, "cuda prompt_logits: %s", err.msg);
            int rc = kiln_engine_prompt_logits(pc, prompts[r], np[r], lc, &err);
            KT_CHECK(rc == 0, "cpu prompt_logits: %s", err.msg);
            for (int i = 0; !rg && !rc && i < np[r]; i++) {
                double e = kt_rel_l2(lg + (size_t)i * V, lc + (size_t)i * V, (size_t)V);
                if (!(e <= worst)) worst = e;
                over += !(e <= 3e-2);
                sum += e;
                rows++;
            }
            kiln_free(lg);
            kiln_free(lc);
        }
        KT_CHECK(rows > 0 && over * 8 <= rows, "%s prompt logits: %d of %d rows beyond 3e-2 of the cpu (worst %g)", fx[f],
                 over, rows, worst);
        printf("%s prompt logits (8 prompts, %d rows): cuda vs cpu rel L2 mean %.3g, worst %.3g, %d rows beyond 3e-2 "
               "(routing near-ties)\n", fx[f], rows, rows ? sum / rows : 0.0, worst, over);
        if (f) {
            kiln_engine_close(pc);
            kiln_engine_close(pg);
        }
    }
    /* 64 requests, batch growing to 64 decode rows */
    static gen oc[NREQ], og[NREQ], og0[NREQ];
    if (run_batch(c, prompts, np, oc) || run_batch(g, prompts, np, og) || run_batch(g0, prompts, np, og0)) {
        KT_CHECK(0, "mixtral batch generation failed");
        goto done;
    }
    invariant_case(prompts, np);
    int same_graphs = 0;
    for (int r = 0; r < NREQ; r++) same_graphs += !memcmp(og[r].ids, og0[r].ids, sizeof og[r].ids);
    printf("mixtral: %d of %d requests give the same ids with and without CUDA graphs\n", same_graphs, NREQ);
    for (int v = 0; v < 2; v++) {
        gen *o = v ? og0 : og;
        int equal = 0, tied = 0, bad = 0;
        for (int r = 0; r < NREQ; r++) {
            KT_CHECK(o[r].n == NEW && oc[r].n == NEW, "request %d: %d / %d tokens", r, o[r].n, oc[r].n);
            int i = 0;
            while (i < NEW && o[r].ids[i] == oc[r].ids[i]) i++;
            if (i == NEW) equal++;
            else if (oc[r].gap[i] < 0.05f) tied++; /* a near-tie: the rest may differ */
            else {
                bad++;
                fprintf(stderr, "request %d: cuda%s id %d != cpu %d at token %d (cpu top-2 gap %.3g)\n", r,
                        v ? " (no graphs)" : "", o[r].ids[i], oc[r].ids[i], i, oc[r].gap[i]);
            }
        }
        /* a routing near-tie (see above) can change a token where the output distribution has no
         * near-tie: at most 1 request in 8 may differ so */
        KT_CHECK(bad * 8 <= NREQ, "mixtral batch%s: %d of %d requests differ from the cpu before a near-tie",
                 v ? " (no graphs)" : "", bad, NREQ);
        printf("mixtral %d requests, decode batches up to 64 rows%s: %d equal to the cpu, %d equal up to a near-tie, "
               "%d differ earlier (routing near-ties)\n", NREQ, v ? " (no graphs)" : "", equal, tied, bad);
    }
done:
    kiln_engine_close(c);
    kiln_engine_close(g);
    kiln_engine_close(g0);
}

int main(void) {
    kc_require_gpu();
    unsigned long long s = kc_seed();
    static const int Ts[] = {1, 2, 3, 7, 16, 33, 64};
    moe_case mix = {256, 384, 8, 2, KILN_DT_BF16, 0, 0}, skew = {256, 384, 8, 2, KILN_DT_BF16, 1, 1};
    moe_case k3 = {128, 200, 6, 3, KILN_DT_BF16, 1, 0}, f16 = {256, 128, 8, 2, KILN_DT_F16, 0, 1};
    moe_case f32 = {64, 96, 4, 2, KILN_DT_F32, 1, 1}, k1 = {96, 64, 5, 1, KILN_DT_BF16, 0, 1};
    /* 1056: part-filled blocks (tc: 64 / 128 columns, CUDA cores: 16 / 32) */
    moe_case tcm = {1056, 1056, 8, 2, KILN_DT_BF16, 0, 1};
    /* the CUDA-core kernel, the tensor-core GEMM, the decode kernel (16 or 32 rows by T), its
     * 32-row tiles forced */
    static const int tcs[] = {3, 2, 0, 4};
    for (int j = 0; j < 4; j++)
        for (size_t i = 0; i < sizeof Ts / sizeof Ts[0]; i++) {
            kernel_case(&mix, Ts[i], tcs[j], &s);
            kernel_case(&skew, Ts[i], tcs[j], &s);
            kernel_case(&k3, Ts[i], tcs[j], &s); /* F = 200: never on the tensor-core GEMM (K % 32) */
        }
    for (int j = 0; j < 4; j++) {
        kernel_case(&f16, 33, tcs[j], &s);
        kernel_case(&k1, 7, tcs[j], &s);
        kernel_case(&mix, 700, tcs[j], &s); /* more pairs than the sort's 1024-thread chunk */
        kernel_case(&tcm, 64, tcs[j], &s);
    }
    kernel_case(&f32, 16, 2, &s); /* f32: CUDA cores whatever tc says */
    if (getenv("KILN_TEST_MOE_KERNELS_ONLY")) { /* scripts/cuda_check.sh's compute-sanitizer pass */
        fprintf(stderr, "SKIP model-level cases (KILN_TEST_MOE_KERNELS_ONLY)\n");
        return kt_done();
    }
    model_case();
    dummy_case();
    return kt_done();
}
