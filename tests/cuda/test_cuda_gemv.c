/* test_cuda_gemv.c: kiln_cuda_gemv (gemv.cu), y[t][n] = sum_k x[t][k] W[n][k] for T <= 8 rows,
 * against a double-precision CPU sum over the same bf16 / f16-rounded inputs:
 *   - shapes N in {1, 7, 64, 5120} x K in {8, 64, 4096, 5120}, odd N (and K not a multiple of
 *     256), and the Devstral qkv shape 6144 x 5120; bf16 and f16 weights;
 *   - accuracy: relative L2 <= 1e-5 over the 8 x N block, and every element within a
 *     first-order f32 error bound (8 ceil(K/256) + 5 roundings of sum |w x|);
 *   - y poisoned (NaN) before every run: no NaN may come back, rows t >= T stay untouched;
 *   - determinism: row t has the same bits for T = 1..8, for every rows-per-warp variant
 *     (kiln_cuda_gemv_ex 1, 2, 4) and when computed alone (T = 1 on x + t K);
 *   - shapes and pointers it does not take return cudaErrorInvalidValue;
 *   - fused SwiGLU (kiln_cuda_gemv_glu): for F in {3, 1000, 4096}, f32 / bf16 / f16 output,
 *     T = 1..8: the same bits as kiln_cuda_gemv + kiln_cuda_swiglu, rows >= T untouched, the f32
 *     output within 1e-5 relative L2 of silu(g) u from the double reference, and its refusals.
 * KILN_GEMV_BENCH=1 adds timings: kiln_cuda_gemv (auto and each rows-per-warp) and
 * kiln_cuda_gemm_skinny (skinny.cu, tensor cores: auto and each variant) and, on the wide
 * shapes (gate|up, LM head), kiln_cuda_gemm_wide (skinny_wide.cu: the default and v2..v6, 1, and SwiGLU fused at v5 / v6) against
 * kiln_cuda_gemm_run (cuBLASLt, normal and batch-invariant) for the 5 Devstral bf16 shapes at
 * T = 1, 2, 4, 8, 16 (gemv only up to 8) and, cuBLASLt only, 32, 64, 128 (issue 24's batches): cudaEvent time of 20 calls after warmup, rotating over enough copies of W
 * (>= 256 MiB) that no call finds its weights in L2; us per call and W bytes / time.
 * (kiln_dtype_name and kiln_err_clear also pull dtype.c and error.c out of libkiln before
 * libkiln_cuda, whose gemm.c needs them: the static link order is kiln, kiln_cuda.) */
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/gemm.h"
#include "gemm_harness.h"
#include "util/error.h"

#define MR KILN_GEMV_MAX_ROWS

static cudaError_t launch_gemv(float *y, const void *x, const void *w, kiln_dtype dt, int T, int N, int K, int v) {
    static const int rpw[4] = {0, 1, 2, 4}; /* rows per warp: auto, 1, 2, 4 */
    return kiln_cuda_gemv_ex(y, x, w, dt, T, N, K, rpw[v], 0);
}

static void one(kiln_dtype dt, int N, int K, unsigned long long *s) {
    float *got8 = kiln_malloc((size_t)MR * N * 4);
    kg_problem pb;
    kg_problem_init(&pb, dt, MR, N, K, s);
    /* T = 8, rows per warp chosen by the launcher: accuracy. A lane sums 8 ceil(K / 256)
     * products in sequence, then 5 butterfly adds: each rounding is at most 2^-24 of a partial
     * sum, itself at most sum |w x| (first order; 2x margin) */
    kg_check_accuracy(&pb, launch_gemv, (8.0 * ((K + 255) / 256) + 6) * ldexp(1.0, -24) * 2, got8, "gemv");
    /* every T and rows-per-warp variant (auto, 1, 2, 4): bit identity, rows alone */
    kg_check_rows(&pb, got8, launch_gemv, 4, "gemv");
    kg_problem_free(&pb);
    kiln_free(got8);
}

static void invalid(void) {
    void *dw = kc_dev(64 * 64 * 2), *dx = kc_dev(MR * 64 * 2);
    float *dy = kc_dev(MR * 64 * 4);
    kc_poison(dy, MR * 64 * 4);
    const cudaError_t bad = cudaErrorInvalidValue;
    kg_check_refusals(launch_gemv, dy, dx, dw, MR, "gemv");
    KT_CHECK(kiln_cuda_gemv(dy, dx, dw, KILN_DT_BF16, 1, 64, 60, 0) == bad, "K=60 (not a multiple of 8) accepted");
    KT_CHECK(kiln_cuda_gemv_ex(dy, dx, dw, KILN_DT_BF16, 1, 64, 64, 3, 0) == bad, "3 rows per warp accepted");
    kg_check_untouched(dy, MR * 64, "gemv");
    CU(cudaFree(dw)); CU(cudaFree(dx)); CU(cudaFree(dy));
}

static cudaError_t launch_gemv_glu(void *act, kiln_dtype adt, const void *x, const void *w, kiln_dtype dt, int T,
                                   int F, int K, int v) {
    (void)v;
    return kiln_cuda_gemv_glu(act, adt, x, w, dt, T, F, K, 0);
}

/* Fused SwiGLU against kiln_cuda_gemv + kiln_cuda_swiglu on the same inputs: W = [gate; up] [2F][K]. */
static void glu(kiln_dtype dt, int F, int K, unsigned long long *s) {
    kg_problem pb;
    kg_problem_init(&pb, dt, MR, 2 * F, K, s);
    CU(kiln_cuda_gemv(pb.dy, pb.dx, pb.dw, dt, MR, 2 * F, K, 0));
    kg_check_glu(&pb, launch_gemv_glu, 1, "gemv glu");
    KT_CHECK(kiln_cuda_gemv_glu(pb.dy, KILN_DT_BF16, pb.dx, pb.dw, dt, MR + 1, F, K, 0) == cudaErrorInvalidValue,
             "gemv glu: T=%d accepted", MR + 1);
    KT_CHECK(kiln_cuda_gemv_glu(pb.dy, KILN_DT_BF16, pb.dx, pb.dw, KILN_DT_F32, 1, F, K, 0) == cudaErrorInvalidValue,
             "gemv glu: f32 weights accepted");
    kg_problem_free(&pb);
}

/* ---- KILN_GEMV_BENCH=1: timings against cuBLASLt ---- */

#define BMR 128 /* rows of the benchmark's x and y (cuBLASLt up to 128) */

typedef struct bench_op {
    int kind; /* 0: gemv (rows per warp in arg), 1: cuBLASLt, 2: skinny, 3: wide (variant in arg),
               * 4: wide with SwiGLU fused (variant in arg; N = 2F, bf16 out into y) */
    int arg;
    kiln_cuda_gemm_ctx *ctx;
    kiln_cuda_gemm *g;
} bench_op;

/* us per call: 3 warmup calls, then 20 timed, W rotating over `copies` buffers of wbytes */
static double time_op(const bench_op *op, float *dy, const void *dx, const char *dw, size_t wbytes, int copies, int T,
                      int N, int K, cudaEvent_t e0, cudaEvent_t e1) {
    kiln_error err;
    kiln_err_clear(&err);
    for (int i = -3; i < 20; i++) {
        if (i == 0) CU(cudaEventRecord(e0, 0));
        const void *w = dw + (size_t)((i + 3) % copies) * wbytes;
        if (op->kind != 1) {
            cudaError_t rc = op->kind == 0   ? kiln_cuda_gemv_ex(dy, dx, w, KILN_DT_BF16, T, N, K, op->arg, 0)
                             : op->kind == 2 ? kiln_cuda_gemm_skinny_ex(dy, dx, w, KILN_DT_BF16, T, N, K, op->arg, 0)
                             : op->kind == 3 ? kiln_cuda_gemm_wide_ex(dy, dx, w, KILN_DT_BF16, T, N, K, op->arg, 1, 0)
                                             : kiln_cuda_gemm_wide_glu(dy, KILN_DT_BF16, dx, w, KILN_DT_BF16, T, N / 2,
                                                                       K, op->arg, 1, 0);
            if (rc != cudaSuccess) { fprintf(stderr, "gemv/skinny/wide: %s\n", cudaGetErrorString(rc)); return NAN; }
        } else if (kiln_cuda_gemm_run(op->ctx, op->g, dy, dx, w, T, 0, &err)) {
            fprintf(stderr, "cuBLASLt: %s\n", err.msg);
            return NAN;
        }
    }
    CU(cudaEventRecord(e1, 0));
    CU(cudaEventSynchronize(e1));
    CU(cudaGetLastError());
    float ms = 0;
    CU(cudaEventElapsedTime(&ms, e0, e1));
    return ms * 1000.0 / 20;
}

/* wide_only: the wide shapes (gate|up, LM head) only (KILN_GEMV_BENCH=wide) */
static void bench(int wide_only) {
    static const struct { int N, K; const char *name; } sh[5] = {
        {6144, 5120, "qkv"}, {5120, 4096, "o"}, {65536, 5120, "gate|up"}, {5120, 32768, "down"}, {131072, 5120, "lm_head"}};
#define NCOL 18
    static const char *col[NCOL] = {"gemv",      "gemv R1",   "gemv R2", "gemv R4", "skinny",  "skinny v1",
                                    "skinny v2", "skinny v3", "wide",    "wide v2", "wide v3", "wide v4",
                                    "wide v5",   "wide v6",   "glu v5",  "glu v6",  "cuBLASLt",
                                    "Lt inv"};
    kiln_cuda_gemm_ctx ctx[2];
    for (int i = 0; i < 2; i++) {
        memset(&ctx[i], 0, sizeof ctx[i]);
        if (cublasLtCreate(&ctx[i].lt) != CUBLAS_STATUS_SUCCESS) { fprintf(stderr, "FAIL cublasLtCreate\n"); exit(1); }
        ctx[i].batch_invariant = i;
        ctx[i].ws_bytes = (size_t)32 << 20;
        ctx[i].workspace = kc_dev(ctx[i].ws_bytes);
    }
    cudaEvent_t e0, e1;
    CU(cudaEventCreate(&e0));
    CU(cudaEventCreate(&e1));
    printf("\nbench (bf16, us per call | GB/s of W read; W rotated over >= 256 MiB of copies)\n");
    printf("%-8s %-6s %-6s  T", "shape", "N", "K");
    for (int c = 0; c < NCOL; c++) printf(" | %-16s", col[c]);
    printf(" | best\n");
    for (int si = 0; si < 5; si++) {
        int N = sh[si].N, K = sh[si].K;
        if (wide_only && N < 65536) continue;
        size_t wbytes = (size_t)N * K * 2;
        int copies = (int)((((size_t)256 << 20) + wbytes - 1) / wbytes);
        if (copies < 1) copies = 1;
        char *dw = kc_dev(wbytes * copies);
        void *dx = kc_dev((size_t)BMR * K * 2);
        float *dy = kc_dev((size_t)BMR * N * 4);
        CU(kiln_cuda_fill_u32((uint32_t *)dw, 0x3c003c00u, (int64_t)(wbytes * copies / 4), 0)); /* bf16 2^-7 */
        CU(kiln_cuda_fill_u32((uint32_t *)dx, 0x3f803f80u, (int64_t)BMR * K / 2, 0));            /* bf16 1.0 */
        kiln_cuda_gemm g[2];
        kiln_error err = {0};
        int have[2];
        for (int i = 0; i < 2; i++) {
            have[i] = kiln_cuda_gemm_init(&ctx[i], &g[i], N, K, KILN_DT_BF16, BMR, &err) == 0;
            if (!have[i]) fprintf(stderr, "cuBLASLt init %s (inv=%d): %s\n", sh[si].name, i, err.msg);
        }
        static const int Ts[8] = {1, 2, 4, 8, 16, 32, 64, 128};
        for (int ti = 0; ti < 8; ti++) {
            int T = Ts[ti];
            bench_op ops[NCOL] = {{0, 0, NULL, NULL},     {0, 1, NULL, NULL},    {0, 2, NULL, NULL},
                                  {0, 4, NULL, NULL},     {2, 0, NULL, NULL},    {2, 1, NULL, NULL},
                                  {2, 2, NULL, NULL},     {2, 3, NULL, NULL},    {3, 0, NULL, NULL},
                                  {3, 2, NULL, NULL},     {3, 3, NULL, NULL},    {3, 4, NULL, NULL},
                                  {3, 5, NULL, NULL},     {3, 6, NULL, NULL},    {4, 5, NULL, NULL},
                                  {4, 6, NULL, NULL},     {1, 0, &ctx[0], &g[0]},
                                  {1, 0, &ctx[1], &g[1]}};
            printf("%-8s %-6d %-6d %2d", sh[si].name, N, K, T);
            double best = INFINITY;
            int bi = 0;
            for (int c = 0; c < NCOL; c++) {
                if ((c >= NCOL - 2 && !have[c - (NCOL - 2)]) || (ops[c].kind == 0 && T > MR) ||
                    (ops[c].kind == 2 && T > KILN_SKINNY_MAX_ROWS) || (ops[c].kind >= 3 && T > KILN_WIDE_MAX_ROWS) ||
                    (ops[c].kind >= 3 && N < 65536) || (ops[c].kind == 4 && N != 65536) ||
                    (wide_only && ops[c].kind == 2)) { /* wide: the wide shapes only; glu: gate|up */
                    printf(" | %-16s", "-");
                    continue;
                }
                double us = time_op(&ops[c], dy, dx, dw, wbytes, copies, T, N, K, e0, e1);
                printf(" | %7.1f %6.0f  ", us, (double)wbytes / (us * 1e-6) / 1e9);
                if (us < best) { best = us; bi = c; }
            }
            printf(" | %s\n", col[bi]);
        }
        for (int i = 0; i < 2; i++)
            if (have[i]) kiln_cuda_gemm_free(&g[i]);
        CU(cudaFree(dw)); CU(cudaFree(dx)); CU(cudaFree(dy));
    }
    CU(cudaEventDestroy(e0));
    CU(cudaEventDestroy(e1));
    for (int i = 0; i < 2; i++) {
        CU(cudaFree(ctx[i].workspace));
        cublasLtDestroy(ctx[i].lt);
    }
}

int main(void) {
    kc_require_gpu();
    unsigned long long s = kc_seed();
    invalid();
    static const int Ns[4] = {1, 7, 64, 5120}, Ks[4] = {8, 64, 4096, 5120};
    static const int odd[][2] = {{33, 136}, {1000, 1032}, {129, 4104}, {3, 520}, {6144, 5120}};
    kiln_dtype dts[2] = {KILN_DT_BF16, KILN_DT_F16};
    for (int d = 0; d < 2; d++) {
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) one(dts[d], Ns[i], Ks[j], &s);
        for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) one(dts[d], odd[i][0], odd[i][1], &s);
    }
    static const int gF[3] = {3, 1000, 4096}, gK[3] = {64, 5120, 1032};
    for (int i = 0; i < 3; i++) glu(KILN_DT_BF16, gF[i], gK[i], &s);
    glu(KILN_DT_F16, 1000, 5120, &s);
    const char *b = getenv("KILN_GEMV_BENCH");
    if (b && *b && strcmp(b, "0") != 0) bench(strcmp(b, "wide") == 0);
    return kt_done();
}
