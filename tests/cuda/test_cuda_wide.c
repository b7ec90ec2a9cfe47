/* test_cuda_wide.c: kiln_cuda_gemm_wide (skinny_wide.cu: cp.async pipeline, 1, tensor cores),
 * y[t][n] = sum_k x[t][k] W[n][k] for T <= 16 rows, against a double-precision CPU sum over the
 * same bf16 / f16-rounded inputs:
 *   - bf16: N in {8, 128, 1000, 5120} x K in {64, 192, 4096, 5120} (one k-tile; K % 128 != 0,
 *     where the BK = 128 variants fall back), N = 40000 x K = 512 (more tiles than resident
 *     CTAs: several tiles per CTA, a partial last tile), N = 256 x K = 32768; f16: N in
 *     {8, 1000} x K in {64, 5120}, 40000 x 512;
 *   - accuracy: relative L2 <= 1e-5 over the 16 x N block, and every element within a
 *     first-order bound (4 chained mmas of 17 truncated terms, then K/64 f32 adds);
 *   - y poisoned (NaN) before every run: no NaN may come back, rows t >= T stay untouched;
 *   - determinism: row t has the same bits for T = 1..16 (both the T <= 8 and T > 8 kernels),
 *     for every variant (kiln_cuda_gemm_wide_ex 1..KILN_WIDE_VARIANTS, MT = 1 and 2) and alone
 *     (T = 1 on x + t K);
 *   - fused SwiGLU (kiln_cuda_gemm_wide_glu): for F in {3, 8, 1000, 20000} (a partial unit, one
 *     unit, partial tiles, several tiles per CTA), f32 / bf16 / f16 output, every T and variant:
 *     the same bits as kiln_cuda_gemm_wide + kiln_cuda_swiglu, rows >= T untouched, and the f32
 *     output within 1e-5 relative L2 of silu(g) u from the double reference;
 *   - shapes and pointers it does not take return cudaErrorInvalidValue and write nothing.
 * Timings: KILN_GEMV_BENCH=1 in test_cuda_gemv.c. */
#include "backend/cuda/cuda_ops.h"
#include "gemm_harness.h"

#define MR KILN_WIDE_MAX_ROWS

static cudaError_t launch_wide(float *y, const void *x, const void *w, kiln_dtype dt, int T, int N, int K, int v) {
    return kiln_cuda_gemm_wide_ex(y, x, w, dt, T, N, K, v, 1, 0);
}

static void one(kiln_dtype dt, int N, int K, unsigned long long *s) {
    float *ref = kiln_malloc((size_t)MR * N * 4);
    kg_problem pb;
    kg_problem_init(&pb, dt, MR, N, K, s);
    /* T = 16, the default variant: accuracy. Per element, first order: a chain of 4 mmas (17
     * truncated terms each), then K / 64 chain adds in round to nearest and the store
     * (kg_tc_bound) */
    kg_check_accuracy(&pb, launch_wide, kg_tc_bound(K / 64 + 1), ref, "wide");
    /* every T and variant (kiln_cuda_gemm_wide_ex 0..KILN_WIDE_VARIANTS): bit identity, rows alone */
    kg_check_rows(&pb, ref, launch_wide, KILN_WIDE_VARIANTS + 1, "wide");
    kg_problem_free(&pb);
    kiln_free(ref);
}

static void invalid(void) {
    void *dw = kc_dev(64 * 64 * 2), *dx = kc_dev(MR * 64 * 2);
    float *dy = kc_dev(MR * 64 * 4);
    kc_poison(dy, MR * 64 * 4);
    const cudaError_t bad = cudaErrorInvalidValue;
    const kiln_dtype b16 = KILN_DT_BF16;
    kg_check_refusals(launch_wide, dy, dx, dw, MR, "wide");
    KT_CHECK(kiln_cuda_gemm_wide(dy, dx, dw, b16, 1, 64, 60, 1, 0) == bad, "K=60 (not a multiple of 64) accepted");
    KT_CHECK(kiln_cuda_gemm_wide(dy, dx, dw, b16, 1, 32, 96, 1, 0) == bad, "K=96 (not a multiple of 64) accepted");
    KT_CHECK(kiln_cuda_gemm_wide(dy, dx, dw, b16, 1, 64, 32, 1, 0) == bad, "K=32 accepted");
    KT_CHECK(kiln_cuda_gemm_wide_ex(dy, dx, dw, b16, 1, 64, 64, KILN_WIDE_VARIANTS + 1, 1, 0) == bad,
             "variant %d accepted", KILN_WIDE_VARIANTS + 1);
    KT_CHECK(kiln_cuda_gemm_wide_ex(dy, dx, dw, b16, 1, 64, 64, -1, 1, 0) == bad, "variant -1 accepted");
    KT_CHECK(kiln_cuda_gemm_wide_glu(dy, KILN_DT_Q8_0, dx, dw, b16, 1, 32, 64, 0, 1, 0) == bad, "glu: q8_0 act accepted");
    KT_CHECK(kiln_cuda_gemm_wide_glu((char *)dy + 2, b16, dx, dw, b16, 1, 32, 64, 0, 1, 0) == bad,
             "glu: misaligned act accepted");
    KT_CHECK(kiln_cuda_gemm_wide_glu(dy, b16, dx, dw, b16, 0, 32, 64, 0, 1, 0) == bad, "glu: T=0 accepted");
    KT_CHECK(kiln_cuda_gemm_wide_glu(dy, b16, dx, dw, b16, 1, 32, 96, 0, 1, 0) == bad, "glu: K=96 accepted");
    KT_CHECK(kiln_cuda_gemm_wide_glu(dy, b16, dx, dw, b16, 1, 32, 64, KILN_WIDE_VARIANTS + 1, 1, 0) == bad,
             "glu: variant %d accepted", KILN_WIDE_VARIANTS + 1);
    KT_CHECK(kiln_cuda_gemm_wide_glu(NULL, b16, dx, dw, b16, 1, 32, 64, 0, 1, 0) == bad, "glu: NULL act accepted");
    kg_check_untouched(dy, MR * 64, "wide");
    CU(cudaFree(dw)); CU(cudaFree(dx)); CU(cudaFree(dy));
}

static cudaError_t launch_wide_glu(void *act, kiln_dtype adt, const void *x, const void *w, kiln_dtype dt, int T,
                                   int F, int K, int v) {
    return kiln_cuda_gemm_wide_glu(act, adt, x, w, dt, T, F, K, v, 1, 0);
}

/* Fused SwiGLU against kiln_cuda_gemm_wide + kiln_cuda_swiglu on the same inputs: W = [gate; up] [2F][K]. */
static void glu(kiln_dtype dt, int F, int K, unsigned long long *s) {
    kg_problem pb;
    kg_problem_init(&pb, dt, MR, 2 * F, K, s);
    CU(kiln_cuda_gemm_wide(pb.dy, pb.dx, pb.dw, dt, MR, 2 * F, K, 1, 0));
    kg_check_glu(&pb, launch_wide_glu, KILN_WIDE_VARIANTS + 1, "wide glu");
    kg_problem_free(&pb);
}

int main(void) {
    kc_require_gpu();
    unsigned long long s = kc_seed();
    invalid();
    static const int Ns[4] = {8, 128, 1000, 5120}, Ks[4] = {64, 192, 4096, 5120};
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) one(KILN_DT_BF16, Ns[i], Ks[j], &s);
    one(KILN_DT_BF16, 40000, 512, &s); /* > 2 x 132 tiles: several tiles per CTA, partial last tile */
    one(KILN_DT_BF16, 256, 32768, &s);
    static const int fN[2] = {8, 1000}, fK[2] = {64, 5120};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) one(KILN_DT_F16, fN[i], fK[j], &s);
    one(KILN_DT_F16, 40000, 512, &s);
    static const int gF[4] = {3, 8, 1000, 20000}, gK[4] = {64, 5120, 192, 512};
    for (int i = 0; i < 4; i++) glu(KILN_DT_BF16, gF[i], gK[i], &s);
    glu(KILN_DT_F16, 1000, 5120, &s);
    return kt_done();
}
