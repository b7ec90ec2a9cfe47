/* test_cuda_fp8.c: the FP8 kernels of fp8.cu (and cuBLASLt FP8 through gemm.c) against the CPU
 * backend's FP8 linear (kiln_cpu_matmul, the reference of docs/fp8.md), on random inputs:
 *   - kiln_cuda_fp8_quant_x: codes and scales bit-equal to the host's kiln_fp8_act_scale /
 *     kiln_f32_to_e4m3(x / s), per row and per 128-column group, dynamic and static;
 *   - kiln_cuda_fp8_mma, W8A8 (sm_89+) and weight-only, per-tensor / per-channel / 128x128 block
 *     scales (magnitudes 2^-12 .. 2^4), N in {16, 37, 208}, K in {16, 80, 384, 1024, 1040, 5120}, T in
 *     {1, 3, 8, 9, 16, 17, 40, 64}, CTAs of 4 and 8 warps, K in 1, 2 and 4 parts where they apply
 *     (per-row scales, T <= 8 / parts, K % (64 parts) == 0): every element within tol * sum_k |x_k w_k| of the CPU's value
 *     (tol printed: the f32 sums in another order, and the MMA's own adds), written into a
 *     column slice (ldy = N + 3) with the other columns untouched; row 0 bit-identical at T = 1
 *     and T = 8 (one launch shape);
 *   - cuBLASLt FP8 on the codes (f32 sums) then kiln_cuda_fp8_scale_rows, T = 100, the same bound;
 *   - kiln_cuda_fp8_dequant: bf16 bit-equal to the host's rounding of e4m3(w) s;
 *   - refusals: W8A8 without FP8 MMA, K % 16, T beyond 64, misaligned pointers, block G mismatch.
 * KILN_FP8_BENCH=1 adds timings of the product and cuBLASLt for the Devstral shapes. */
#include <math.h>
#include <string.h>
#include "backend/cpu/kernels.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/gemm.h"
#include "cuda_test.h"
#include "format/tensor.h"
#include "util/alloc.h"
#include "util/fp16.h"
#include "util/fp8.h"

static int g_fp8_mma; /* the card has FP8 MMA (sm_89+) */
static double g_worst[2];  /* worst |err| / sum |x w| for W8A8, weight-only */

static uint8_t rand_code(unsigned long long *s) {
    for (;;) {
        uint8_t c = (uint8_t)(kt_rand_u64(s) >> 56);
        if ((c & 0x7f) != 0x7f) return c; /* not NaN */
    }
}
static float rand_scale(unsigned long long *s) { return ldexpf(1.0f + 0.5f * (kt_randf(s) + 1.0f), -12 + (int)(kt_rand_u64(s) % 17)); }

/* x [T][K] bf16-representable, rows of different magnitudes and a few outliers */
static void rand_x(float *x, int T, int K, unsigned long long *s) {
    for (int t = 0; t < T; t++) {
        float mag = ldexpf(1.0f, -6 + (int)(kt_rand_u64(s) % 10));
        for (int k = 0; k < K; k++) x[(size_t)t * K + k] = kt_randf(s) * mag * ((kt_rand_u64(s) % 97) == 0 ? 16.0f : 1.0f);
    }
    kc_round_dt(KILN_DT_BF16, x, (size_t)T * K);
}

static void check_quant_x(int T, int K, unsigned long long *s) {
    float *x = kiln_malloc((size_t)T * K * 4);
    rand_x(x, T, K, s);
    uint16_t *xb = kiln_malloc((size_t)T * K * 2);
    kc_to_dt(KILN_DT_BF16, x, xb, (size_t)T * K);
    void *dx = kc_dev((size_t)T * K * 2);
    uint8_t *dq = kc_dev((size_t)T * K), *hq = kiln_malloc((size_t)T * K);
    int gmax = (K + 95) / 96;
    float *ds = kc_dev((size_t)T * gmax * 4), *hs = kiln_malloc((size_t)T * gmax * 4);
    kc_put(dx, xb, (size_t)T * K * 2);
    void *dx32 = kc_dev((size_t)T * K * 4);
    kc_put(dx32, x, (size_t)T * K * 4);
    const int gss[3] = {K, 128, 96};
    for (int gi = 0; gi < 6; gi++) /* bf16 (the vector kernels), then f32 (the generic one) */
        for (int stat = 0; stat < 2; stat++) {
            int gs = gss[gi % 3], G = (K + gs - 1) / gs, bad = 0;
            float in = stat ? 0.0123f : 0.0f;
            kc_poison(dq, (size_t)T * K);
            CU(kiln_cuda_fp8_quant_x(dq, ds, gi < 3 ? dx : dx32, gi < 3 ? KILN_DT_BF16 : KILN_DT_F32, T, K, gs, stat, in, 0));
            kc_get(hq, dq, (size_t)T * K);
            kc_get(hs, ds, (size_t)T * G * 4);
            for (int t = 0; t < T; t++)
                for (int g = 0; g < G; g++) {
                    int k0 = g * gs, k1 = k0 + gs < K ? k0 + gs : K;
                    float amax = 0.0f;
                    for (int k = k0; k < k1; k++) amax = fmaxf(amax, fabsf(x[(size_t)t * K + k]));
                    float sc = stat ? in : kiln_fp8_act_scale(amax);
                    if (memcmp(&sc, &hs[t * G + g], 4)) bad++;
                    for (int k = k0; k < k1; k++)
                        if (hq[(size_t)t * K + k] != kiln_f32_to_e4m3(x[(size_t)t * K + k] / sc)) bad++;
                }
            KT_CHECK(bad == 0, "quant_x T=%d K=%d gs=%d static=%d: %d codes or scales differ from the host's", T, K, gs,
                     stat, bad);
        }
    cudaFree(dx); cudaFree(dx32); cudaFree(dq); cudaFree(ds);
    kiln_free(x); kiln_free(xb); kiln_free(hq); kiln_free(hs);
}

/* Every bf16 value of magnitude <= A in one row (A its maximum: the row's scale A / 448), for
 * several A: the codes of kiln_cuda_fp8_quant_x (whole row, and 128-column groups: many more
 * scales) and of kiln_cuda_fp8_quant_pmax (the scale from a partial maximum) against the host's
 * IEEE division, code for code: every rounding boundary of those scales. */
static void check_quant_all_bf16(void) {
    const float As[5] = {1.0f, 3.0f, 0.0123f, 300.0f, 19000.0f};
    const int T = 5, K = 2 * 0x4700;
    float *x = kiln_malloc((size_t)T * K * 4), *hs = kiln_malloc((size_t)T * K / 128 * 4), pm[5];
    uint16_t *xb = kiln_malloc((size_t)T * K * 2);
    uint8_t *hq = kiln_malloc((size_t)T * K);
    for (int t = 0; t < T; t++) {
        uint16_t top = kiln_f32_to_bf16(As[t]);
        for (int k = 0; k < K; k++) {
            uint16_t b = (uint16_t)(k / 2);
            xb[(size_t)t * K + k] = b <= top ? (uint16_t)(b | (k & 1 ? 0x8000u : 0u)) : 0;
            x[(size_t)t * K + k] = kiln_bf16_to_f32(xb[(size_t)t * K + k]);
        }
        pm[t] = kiln_bf16_to_f32(top);
    }
    void *dx = kc_dev((size_t)T * K * 2);
    uint8_t *dq = kc_dev((size_t)T * K);
    float *ds = kc_dev((size_t)T * K / 128 * 4), *dpm = kc_dev(sizeof pm);
    kc_put(dx, xb, (size_t)T * K * 2);
    kc_put(dpm, pm, sizeof pm);
    for (int mode = 0; mode < 3; mode++) { /* row, 128-column groups, partial maxima */
        int gs = mode == 1 ? 128 : K, G = K / gs, bad = 0;
        kc_poison(dq, (size_t)T * K);
        if (mode < 2) CU(kiln_cuda_fp8_quant_x(dq, ds, dx, KILN_DT_BF16, T, K, gs, 0, 0.0f, 0));
        else CU(kiln_cuda_fp8_quant_pmax(dq, ds, dx, dpm, 1, T, K, 1, 0));
        kc_get(hq, dq, (size_t)T * K);
        kc_get(hs, ds, (size_t)T * G * 4);
        for (int t = 0; t < T; t++)
            for (int g = 0; g < G; g++) {
                float amax = 0.0f;
                for (int k = g * gs; k < (g + 1) * gs; k++) amax = fmaxf(amax, fabsf(x[(size_t)t * K + k]));
                float sc = kiln_fp8_act_scale(amax);
                bad += memcmp(&sc, &hs[t * G + g], 4) != 0;
                for (int k = g * gs; k < (g + 1) * gs; k++)
                    bad += hq[(size_t)t * K + k] != kiln_f32_to_e4m3(x[(size_t)t * K + k] / sc);
            }
        KT_CHECK(bad == 0, "quant (%s) of every bf16 value: %d codes or scales differ from the host's division",
                 mode == 0 ? "row" : mode == 1 ? "groups of 128" : "partial maxima", bad);
    }
    printf("fp8 quant: every bf16 value below 5 maxima (row, 128-groups, partial maxima) == the host's division\n");
    cudaFree(dx); cudaFree(dq); cudaFree(ds); cudaFree(dpm);
    kiln_free(x); kiln_free(hs); kiln_free(xb); kiln_free(hq);
}

typedef struct fp8_case {
    int N, K;
    kiln_scale_kind kind;
    uint8_t *w;     /* host codes [N][K] */
    float *scale;   /* the checkpoint's scales (kiln_quant layout) */
    float *sw;      /* the backend's per-row scales [N][G] */
    int G;
    uint8_t *dw;
    float *dsw;
} fp8_case;

static void case_make(fp8_case *c, int N, int K, kiln_scale_kind kind, unsigned long long *s) {
    memset(c, 0, sizeof *c);
    c->N = N, c->K = K, c->kind = kind;
    c->w = kiln_malloc((size_t)N * K);
    for (size_t i = 0; i < (size_t)N * K; i++) c->w[i] = rand_code(s);
    int gb = (K + 127) / 128, rb = (N + 127) / 128;
    size_t ns = kind == KILN_SCALE_TENSOR ? 1 : kind == KILN_SCALE_CHANNEL ? (size_t)N : (size_t)rb * gb;
    c->scale = kiln_malloc(ns * 4);
    for (size_t i = 0; i < ns; i++) c->scale[i] = rand_scale(s);
    c->G = kind == KILN_SCALE_BLOCK ? gb : 1;
    c->sw = kiln_malloc((size_t)N * c->G * 4);
    for (int o = 0; o < N; o++)
        for (int g = 0; g < c->G; g++)
            c->sw[o * c->G + g] = kind == KILN_SCALE_TENSOR ? c->scale[0] : kind == KILN_SCALE_CHANNEL ? c->scale[o]
                                                                                                    : c->scale[(o / 128) * gb + g];
    c->dw = kc_dev((size_t)N * K + 16);
    c->dsw = kc_dev((size_t)N * c->G * 4);
    kc_put(c->dw, c->w, (size_t)N * K);
    kc_put(c->dsw, c->sw, (size_t)N * c->G * 4);
}
static void case_free(fp8_case *c) {
    cudaFree(c->dw); cudaFree(c->dsw);
    kiln_free(c->w); kiln_free(c->scale); kiln_free(c->sw);
}

/* the CPU backend's y [T][N] for this case (act: NONE, DYNAMIC or STATIC with input scale in) */
static void cpu_ref(const fp8_case *c, kiln_act_quant act, const float *in, const float *x, int T, float *y) {
    kiln_tensor t;
    memset(&t, 0, sizeof t);
    snprintf(t.name, sizeof t.name, "w");
    t.dtype = KILN_DT_F8_E4M3;
    t.ndim = 2;
    t.shape[0] = c->N, t.shape[1] = c->K;
    t.data = c->w;
    t.nbytes = (size_t)c->N * c->K;
    t.quant = (kiln_quant){.kind = c->kind, .act = act, .scale = c->scale, .block_out = 128, .block_in = 128,
                           .input_scale = act == KILN_ACT_STATIC ? in : NULL};
    kiln_cpu_ctx ctx = {.isa = KILN_ISA_SCALAR};
    ctx.panel_floats = 8 * (size_t)(c->K + c->G) + 64;
    ctx.panel = kiln_malloc(ctx.panel_floats * 4);
    kiln_error err;
    int rc = kiln_cpu_matmul(&ctx, y, x, T, &t, &err);
    KT_CHECK(rc == KILN_OK, "cpu reference: %s", err.msg);
    kiln_free(ctx.panel);
}

/* sum_k |x w| with the weights' scales (the scale of every bound) */
static double abs_sum(const fp8_case *c, const float *x, int t, int n) {
    double a = 0;
    for (int k = 0; k < c->K; k++)
        a += fabs((double)x[(size_t)t * c->K + k] * kiln_e4m3_to_f32(c->w[(size_t)n * c->K + k]) * c->sw[n * c->G + k / 128 % c->G]);
    return a;
}

static void check_mma(const fp8_case *c, int a8, kiln_act_quant act, int T, unsigned long long *s, float *row0) {
    int N = c->N, K = c->K, ldy = N + 3, G = c->G;
    float *x = kiln_malloc((size_t)T * K * 4), *yr = kiln_malloc((size_t)T * N * 4), *yg = kiln_malloc((size_t)T * ldy * 4);
    rand_x(x, T, K, s);
    float in = 0.0f;
    if (act == KILN_ACT_STATIC) { /* a static scale near the rows' own */
        float amax = 0.0f;
        for (size_t i = 0; i < (size_t)T * K; i++) amax = fmaxf(amax, fabsf(x[i]));
        in = amax / 300.0f;
    }
    cpu_ref(c, a8 ? act : KILN_ACT_NONE, &in, x, T, yr);
    uint16_t *xb = kiln_malloc((size_t)T * K * 2);
    kc_to_dt(KILN_DT_BF16, x, xb, (size_t)T * K);
    void *dx = kc_dev((size_t)T * K * 2);
    kc_put(dx, xb, (size_t)T * K * 2);
    uint8_t *dq = kc_dev((size_t)T * K);
    float *dsa = kc_dev((size_t)T * G * 4 + 4), *dy = kc_dev((size_t)T * ldy * 4);
    kc_poison(dy, (size_t)T * ldy * 4);
    if (a8) CU(kiln_cuda_fp8_quant_x(dq, dsa, dx, KILN_DT_BF16, T, K, G > 1 ? 128 : K, act == KILN_ACT_STATIC, in, 0));
    int warps = (T + N + K / 16) % 2 ? 4 : 8; /* both CTA shapes over the cases */
    /* parts 1 (and the auto choice, and every other valid count below) */
    for (int parts = 1; parts <= 4; parts *= 2) {
    if (parts > 1 && !(G == 1 && T <= 8 / parts && K % (64 * parts) == 0)) continue;
    kc_poison(dy, (size_t)T * ldy * 4);
    CU(kiln_cuda_fp8_mma(dy, ldy, c->dw, c->dsw, G, a8 ? (const void *)dq : dx, dsa, a8, T, N, K, T == 1 || T == 8 ? 8 : warps,
                         parts == 1 && !(T == 1 || T == 8) ? 0 : parts, 0, g_fp8_mma, 0));
    kc_get(yg, dy, (size_t)T * ldy * 4);
    double tol = a8 ? 2e-3 : 2e-5, worst = 0;
    int bad = 0, touched = 0;
    for (int t = 0; t < T; t++) {
        for (int n = 0; n < N; n++) {
            double a = abs_sum(c, x, t, n) * (a8 ? 1.2 : 1.0) + 1e-30;
            double e = fabs((double)yg[(size_t)t * ldy + n] - yr[(size_t)t * N + n]) / a;
            if (!(e <= tol)) {
                if (bad < 3) fprintf(stderr, "  t=%d n=%d gpu %.9g cpu %.9g (rel to sum|xw| %.3g)\n", t, n,
                                     yg[(size_t)t * ldy + n], yr[(size_t)t * N + n], e);
                bad++;
            }
            if (e > worst) worst = e;
        }
        for (int n = N; n < ldy; n++) {
            uint32_t u;
            memcpy(&u, &yg[(size_t)t * ldy + n], 4);
            touched += u != 0xffffffffu;
        }
    }
    if (worst > g_worst[!a8]) g_worst[!a8] = worst;
    KT_CHECK(bad == 0 && touched == 0, "fp8_mma %s %s N=%d K=%d T=%d parts %d: %d beyond %.0e sum|xw| (worst %.3g), %d "
             "columns outside the slice written", a8 ? "W8A8" : "W8A16", kiln_scale_kind_name(c->kind), N, K, T, parts,
             bad, tol, worst, touched);
    if (parts > 1) continue;
    if (row0) { /* T = 1 and T = 8 run one launch shape: row 0 must have the same bits */
        if (T == 1) memcpy(row0, yg, (size_t)N * 4);
        else KT_CHECK(!memcmp(row0, yg, (size_t)N * 4), "fp8_mma %s N=%d K=%d: row 0 differs between T = 1 and T = %d",
                      a8 ? "W8A8" : "W8A16", N, K, T);
    }
    }
    cudaFree(dx); cudaFree(dq); cudaFree(dsa); cudaFree(dy);
    kiln_free(x); kiln_free(yr); kiln_free(yg); kiln_free(xb);
}

static void check_lt(cublasLtHandle_t lt, void *ws, const fp8_case *c, unsigned long long *s) {
    int N = c->N, K = c->K, T = 100;
    kiln_cuda_gemm_ctx ctx = {.lt = lt, .workspace = ws, .ws_bytes = 32 << 20};
    kiln_cuda_gemm g;
    kiln_error err;
    int rc = kiln_cuda_gemm_init(&ctx, &g, N, K, KILN_DT_F8_E4M3, T, &err);
    KT_CHECK(rc == KILN_OK, "cuBLASLt FP8 %d x %d: %s", N, K, err.msg);
    if (rc) return;
    float *x = kiln_malloc((size_t)T * K * 4), *yr = kiln_malloc((size_t)T * N * 4), *yg = kiln_malloc((size_t)T * N * 4);
    rand_x(x, T, K, s);
    cpu_ref(c, KILN_ACT_DYNAMIC, NULL, x, T, yr);
    uint16_t *xb = kiln_malloc((size_t)T * K * 2);
    kc_to_dt(KILN_DT_BF16, x, xb, (size_t)T * K);
    void *dx = kc_dev((size_t)T * K * 2);
    kc_put(dx, xb, (size_t)T * K * 2);
    uint8_t *dq = kc_dev((size_t)T * K);
    float *dsa = kc_dev((size_t)T * 4), *dy = kc_dev((size_t)T * N * 4);
    kc_poison(dy, (size_t)T * N * 4);
    CU(kiln_cuda_fp8_quant_x(dq, dsa, dx, KILN_DT_BF16, T, K, K, 0, 0.0f, 0));
    rc = kiln_cuda_gemm_run(&ctx, &g, dy, dq, c->dw, T, 0, &err);
    KT_CHECK(rc == KILN_OK, "cuBLASLt FP8 run: %s", err.msg);
    CU(kiln_cuda_fp8_scale_rows(dy, N, dsa, c->dsw, T, N, 0));
    kc_get(yg, dy, (size_t)T * N * 4);
    double worst = 0;
    int bad = 0;
    for (int t = 0; t < T; t++)
        for (int n = 0; n < N; n++) {
            double e = fabs((double)yg[(size_t)t * N + n] - yr[(size_t)t * N + n]) / (abs_sum(c, x, t, n) * 1.2 + 1e-30);
            bad += !(e <= 2e-3);
            if (e > worst) worst = e;
        }
    fprintf(stderr, "cuBLASLt FP8 %s N=%d K=%d T=%d: worst %.3g of sum|xw|\n", kiln_scale_kind_name(c->kind), N, K, T,
            worst);
    KT_CHECK(bad == 0, "cuBLASLt FP8 %s N=%d K=%d: %d elements beyond 2e-3 sum|xw| (worst %.3g)",
             kiln_scale_kind_name(c->kind), N, K, bad, worst);
    kiln_cuda_gemm_free(&g);
    cudaFree(dx); cudaFree(dq); cudaFree(dsa); cudaFree(dy);
    kiln_free(x); kiln_free(yr); kiln_free(yg); kiln_free(xb);
}

static void check_dequant(const fp8_case *c) {
    size_t n = (size_t)c->N * c->K;
    uint16_t *d = kc_dev(n * 2), *h = kiln_malloc(n * 2);
    CU(kiln_cuda_fp8_dequant(d, KILN_DT_BF16, c->dw, c->dsw, c->G, c->N, c->K, 0));
    kc_get(h, d, n * 2);
    int bad = 0;
    for (int o = 0; o < c->N; o++)
        for (int k = 0; k < c->K; k++) {
            float v = kiln_e4m3_to_f32(c->w[(size_t)o * c->K + k]) * c->sw[o * c->G + (c->G > 1 ? k / 128 : 0)];
            bad += h[(size_t)o * c->K + k] != kiln_f32_to_bf16(v);
        }
    KT_CHECK(bad == 0, "fp8_dequant %s N=%d K=%d: %d values differ from the host's", kiln_scale_kind_name(c->kind), c->N,
             c->K, bad);
    cudaFree(d);
    kiln_free(h);
}

static void refusals(void) {
    void *p = kc_dev(1 << 16);
    float *y = p;
    KT_CHECK(kiln_cuda_fp8_mma(y, 16, p, p, 1, p, p, 1, 1, 16, 64, 0, 0, 0, 0, 0) == cudaErrorInvalidValue,
             "W8A8 without FP8 MMA refused");
    KT_CHECK(kiln_cuda_fp8_mma(y, 16, p, p, 1, p, p, 0, 1, 16, 40, 0, 0, 0, 1, 0) == cudaErrorInvalidValue, "K %% 16 refused");
    KT_CHECK(kiln_cuda_fp8_mma(y, 16, p, p, 1, p, p, 0, 65, 16, 64, 0, 0, 0, 1, 0) == cudaErrorInvalidValue, "T > 64 refused");
    KT_CHECK(kiln_cuda_fp8_mma(y, 16, (uint8_t *)p + 8, p, 1, p, p, 0, 1, 16, 64, 0, 0, 0, 1, 0) == cudaErrorInvalidValue,
             "misaligned W refused");
    KT_CHECK(kiln_cuda_fp8_mma(y, 16, p, p, 3, p, p, 0, 1, 16, 256, 0, 0, 0, 1, 0) == cudaErrorInvalidValue,
             "block groups not ceil(K / 128) refused");
    KT_CHECK(kiln_cuda_fp8_quant_x(p, y, p, KILN_DT_BF16, 1, 64, 64, 1, 0.0f, 0) == cudaErrorInvalidValue,
             "static activation scale 0 refused");
    KT_CHECK(kiln_cuda_fp8_mma(y, 16, p, p, 1, p, p, 0, 1, 16, 64, 6, 0, 0, 1, 0) == cudaErrorInvalidValue,
             "6 warps refused");
    KT_CHECK(kiln_cuda_fp8_mma(y, 16, p, p, 1, p, p, 0, 3, 16, 256, 0, 4, 0, 1, 0) == cudaErrorInvalidValue,
             "4 K parts at 3 rows refused");
    KT_CHECK(kiln_cuda_fp8_mma(y, 16, p, p, 1, p, p, 0, 1, 16, 192, 0, 2, 0, 1, 0) == cudaErrorInvalidValue,
             "2 K parts of K %% 128 != 0 refused");
    KT_CHECK(kiln_cuda_fp8_mma(y, 16, p, p, 1, p, p, 0, 1, 16, 256, 0, 3, 0, 1, 0) == cudaErrorInvalidValue,
             "3 K parts refused");
    CU(cudaGetLastError());
    cudaFree(p);
}

static double ms_since(cudaEvent_t a, cudaEvent_t b) {
    float ms = 0;
    CU(cudaEventSynchronize(b));
    CU(cudaEventElapsedTime(&ms, a, b));
    return ms;
}

/* Devstral's layer shapes: us per call of the product (W8A8 and weight-only) and of cuBLASLt FP8,
 * weight GB/s; W copies rotated past L2 */
static void bench(cublasLtHandle_t lt, void *ws) {
    const int shapes[4][2] = {{6144, 5120}, {5120, 4096}, {65536, 5120}, {5120, 32768}};
    const char *names[4] = {"qkv", "o", "gate|up", "down"};
    const int Ts[7] = {1, 2, 4, 8, 16, 32, 64};
    cudaEvent_t e0, e1;
    CU(cudaEventCreate(&e0));
    CU(cudaEventCreate(&e1));
    kiln_cuda_gemm_ctx ctx = {.lt = lt, .workspace = ws, .ws_bytes = 32 << 20};
    fprintf(stderr, "\nFP8 bench (us per call, weight GB/s; quant_x: us for x of T rows; pP wW: K in P parts, CTAs of W "
            "warps):\n%-8s %4s %16s %16s %16s %16s %8s %16s %16s %16s %16s %16s\n", "shape", "T", "W8A8 p1 w8",
            "W8A8 p1 w4", "W8A16 auto", "cuBLASLt FP8", "quant_x", "W8A8 auto", "W8A8 p2 w4", "W8A8 p4 w4", "W8A8 p2 w8",
            "W8A8 p4 w8");
    for (int si = 0; si < 4; si++) {
        int N = shapes[si][0], K = shapes[si][1];
        size_t wb = (size_t)N * K;
        int copies = (int)(400e6 / wb) + 1;
        if (copies > 8) copies = 8;
        uint8_t *w = kc_dev(wb * copies);
        CU(cudaMemset(w, 0x38, wb * copies)); /* code 0x38: 1.0 */
        float *sw = kc_dev((size_t)N * 4), *y = kc_dev((size_t)64 * N * 4), *sa = kc_dev(64 * 4);
        CU(kiln_cuda_fill_u32((uint32_t *)sw, 0x3c000000u, N, 0));
        CU(kiln_cuda_fill_u32((uint32_t *)sa, 0x3c000000u, 64, 0));
        uint8_t *xq = kc_dev((size_t)64 * K);
        CU(cudaMemset(xq, 0x30, (size_t)64 * K));
        uint16_t *xb = kc_dev((size_t)64 * K * 2);
        CU(cudaMemset(xb, 0x3c, (size_t)64 * K * 2));
        kiln_cuda_gemm g;
        kiln_error err;
        int have_lt = kiln_cuda_gemm_init(&ctx, &g, N, K, KILN_DT_F8_E4M3, 64, &err) == KILN_OK;
        if (!have_lt) fprintf(stderr, "cuBLASLt FP8 %d x %d: %s\n", N, K, err.msg);
        for (int ti = 0; ti < 7; ti++) {
            int T = Ts[ti], reps = 20;
            double us[10] = {0};
            for (int v = 0; v < 10; v++) {
                if (((v <= 1 || v >= 5) && !g_fp8_mma) || (v == 3 && !have_lt)) continue;
                if ((v == 6 || v == 8) && T > 4) continue;
                if ((v == 7 || v == 9) && T > 2) continue;
                for (int r = -2; r < reps; r++) {
                    if (r == 0) CU(cudaEventRecord(e0, 0));
                    uint8_t *wc = w + (size_t)((r + 2) % copies) * wb;
                    if (v == 0) CU(kiln_cuda_fp8_mma(y, N, wc, sw, 1, xq, sa, 1, T, N, K, 8, 1, 0, 1, 0));
                    else if (v == 1) CU(kiln_cuda_fp8_mma(y, N, wc, sw, 1, xq, sa, 1, T, N, K, 4, 1, 0, 1, 0));
                    else if (v == 2) CU(kiln_cuda_fp8_mma(y, N, wc, sw, 1, xb, sa, 0, T, N, K, 0, 0, 0, 1, 0));
                    else if (v >= 5) {
                        const int wv[5] = {0, 4, 4, 8, 8}, pv[5] = {0, 2, 4, 2, 4};
                        CU(kiln_cuda_fp8_mma(y, N, wc, sw, 1, xq, sa, 1, T, N, K, wv[v - 5], pv[v - 5], 132, 1, 0));
                    }
                    else if (v == 3) {
                        if (kiln_cuda_gemm_run(&ctx, &g, y, xq, wc, T, 0, &err)) fprintf(stderr, "lt: %s\n", err.msg);
                        CU(kiln_cuda_fp8_scale_rows(y, N, sa, sw, T, N, 0));
                    } else CU(kiln_cuda_fp8_quant_x(xq + (size_t)32 * K, sa, xb, KILN_DT_BF16, T < 32 ? T : 32, K, K, 0, 0.0f, 0));
                }
                CU(cudaEventRecord(e1, 0));
                us[v] = ms_since(e0, e1) * 1000.0 / reps;
            }
            fprintf(stderr, "%-8s %4d", names[si], T);
            for (int v = 0; v < 4; v++) fprintf(stderr, " %8.1f %6.0f ", us[v], us[v] ? wb / us[v] / 1e3 : 0);
            fprintf(stderr, " %7.1f", us[4]);
            for (int v = 5; v < 10; v++) fprintf(stderr, " %8.1f %6.0f ", us[v], us[v] ? wb / us[v] / 1e3 : 0);
            fprintf(stderr, "\n");
        }
        if (have_lt) kiln_cuda_gemm_free(&g);
        cudaFree(w); cudaFree(sw); cudaFree(y); cudaFree(sa); cudaFree(xq); cudaFree(xb);
    }
}

int main(void) {
    kc_require_gpu();
    unsigned long long s = kc_seed();
    struct cudaDeviceProp p;
    CU(cudaGetDeviceProperties(&p, 0));
    g_fp8_mma = p.major * 10 + p.minor >= 89;
    if (!g_fp8_mma) fprintf(stderr, "no FP8 MMA on this card: weight-only kernels only\n");
    check_quant_x(5, 1040, &s);
    check_quant_x(3, 5120, &s);
    check_quant_all_bf16();
    { /* the conversion the kernels use (the cvt instruction on sm_89+) == util/fp8.h, every f32 */
        unsigned long long *dbad = kc_dev(16), bad[2];
        CU(kiln_cuda_e4m3_check(dbad, 0));
        kc_get(bad, dbad, sizeof bad);
        KT_CHECK(bad[0] == 0, "e4m3 conversion: %llu non-NaN f32 values convert differently from util/fp8.h (first "
                 "0x%08llx)", bad[0], bad[1]);
        printf("e4m3 conversion of every non-NaN f32 (%s) == util/fp8.h: %llu differ\n",
               g_fp8_mma ? "cvt.rn.satfinite.e4m3x2" : "bit arithmetic", bad[0]);
        cudaFree(dbad);
    }
    cublasLtHandle_t lt;
    KT_CHECK(cublasLtCreate(&lt) == CUBLAS_STATUS_SUCCESS, "cublasLtCreate");
    void *ws = kc_dev(32 << 20);
    const int Ns[3] = {16, 37, 208}, Ks[6] = {16, 80, 384, 1024, 1040, 5120}, Ts[8] = {1, 3, 8, 9, 16, 17, 40, 64};
    const kiln_scale_kind kinds[3] = {KILN_SCALE_TENSOR, KILN_SCALE_CHANNEL, KILN_SCALE_BLOCK};
    for (int ki = 0; ki < 3; ki++)
        for (int ni = 0; ni < 3; ni++)
            for (int kk = 0; kk < 6; kk++) {
                fp8_case c;
                case_make(&c, Ns[ni], Ks[kk], kinds[ki], &s);
                float *row0 = kiln_malloc((size_t)c.N * 4);
                for (int a8 = g_fp8_mma; a8 >= 0; a8--) {
                    unsigned long long s_pair = kt_rand_u64(&s); /* T = 1 and T = 8 share x row 0 */
                    for (int ti = 0; ti < 8; ti++) {
                        int T = Ts[ti];
                        kiln_act_quant act = a8 && ti == 3 ? KILN_ACT_STATIC : KILN_ACT_DYNAMIC;
                        unsigned long long s2 = s_pair;
                        check_mma(&c, a8, act, T, T == 1 || T == 8 ? &s2 : &s, T == 1 || T == 8 ? row0 : NULL);
                    }
                }
                check_dequant(&c);
                if (g_fp8_mma && kinds[ki] != KILN_SCALE_BLOCK && kk >= 2 && ni == 2) check_lt(lt, ws, &c, &s);
                kiln_free(row0);
                case_free(&c);
            }
    fprintf(stderr, "worst |gpu - cpu| / sum|x w|: W8A8 %.3g (bound 2e-3), weight-only %.3g (bound 2e-5)\n", g_worst[0],
            g_worst[1]);
    refusals();
    const char *b = getenv("KILN_FP8_BENCH");
    if (b && *b == '1') bench(lt, ws);
    cudaFree(ws);
    cublasLtDestroy(lt);
    return kt_done();
}
