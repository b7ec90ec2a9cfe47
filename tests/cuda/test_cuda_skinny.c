/* test_cuda_skinny.c: kiln_cuda_gemm_skinny (skinny.cu, tensor cores), y[t][n] = sum_k x[t][k]
 * W[n][k] for T <= 16 rows, against a double-precision CPU sum over the same bf16 / f16-rounded
 * inputs:
 *   - bf16: N in {8, 64, 5120, 6144} x K in {16, 64, 4096, 5120, 32768} (K slices 1 and 8);
 *     f16: N in {8, 5120} x K in {16, 4096, 32768}; both: odd N and K not a multiple of 32
 *     (tail quad chunks) or slice counts 2 and 4: (1, 8), (7, 136), (33, 1032), (1000, 2056),
 *     (129, 4104), (3, 520);
 *   - accuracy: relative L2 <= 1e-5 over the 16 x N block, and every element within a
 *     first-order bound (4 chained mmas of 17 truncated terms, then ceil(K/64) + 8 f32 adds);
 *   - y poisoned (NaN) before every run: no NaN may come back, rows t >= T stay untouched;
 *   - determinism: row t has the same bits for T = 1..16 (both the T <= 8 and T > 8 kernels),
 *     for every variant (kiln_cuda_gemm_skinny_ex 1, 2, 3) and alone (T = 1 on x + t K);
 *   - shapes and pointers it does not take return cudaErrorInvalidValue and write nothing.
 * Timings: KILN_GEMV_BENCH=1 in test_cuda_gemv.c. */
#include "backend/cuda/cuda_ops.h"
#include "gemm_harness.h"

#define MR KILN_SKINNY_MAX_ROWS

static cudaError_t launch_skinny(float *y, const void *x, const void *w, kiln_dtype dt, int T, int N, int K, int v) {
    return kiln_cuda_gemm_skinny_ex(y, x, w, dt, T, N, K, v, 0);
}

static void one(kiln_dtype dt, int N, int K, unsigned long long *s) {
    float *ref = kiln_malloc((size_t)MR * N * 4);
    kg_problem pb;
    kg_problem_init(&pb, dt, MR, N, K, s);
    /* T = 16, variant chosen by the launcher: accuracy. Per element, first order: a chain of 4
     * mmas, each summing 17 terms (16 products and the accumulator) aligned to the largest and
     * truncated, then ceil(K / 64) chain adds and <= 8 slice adds in round to nearest
     * (kg_tc_bound) */
    kg_check_accuracy(&pb, launch_skinny, kg_tc_bound((K + 63) / 64 + 8), ref, "skinny");
    /* every T and variant (kiln_cuda_gemm_skinny_ex 0..3): bit identity, rows alone */
    kg_check_rows(&pb, ref, launch_skinny, 4, "skinny");
    kg_problem_free(&pb);
    kiln_free(ref);
}

static void invalid(void) {
    void *dw = kc_dev(64 * 64 * 2), *dx = kc_dev(MR * 64 * 2);
    float *dy = kc_dev(MR * 64 * 4);
    kc_poison(dy, MR * 64 * 4);
    const cudaError_t bad = cudaErrorInvalidValue;
    const kiln_dtype b16 = KILN_DT_BF16;
    kg_check_refusals(launch_skinny, dy, dx, dw, MR, "skinny");
    KT_CHECK(kiln_cuda_gemm_skinny(dy, dx, dw, b16, 1, 64, 60, 0) == bad, "K=60 (not a multiple of 8) accepted");
    KT_CHECK(kiln_cuda_gemm_skinny(dy, dx, dw, b16, 1, 64, 4, 0) == bad, "K=4 accepted");
    KT_CHECK(kiln_cuda_gemm_skinny_ex(dy, dx, dw, b16, 1, 64, 64, 4, 0) == bad, "variant 4 accepted");
    KT_CHECK(kiln_cuda_gemm_skinny_ex(dy, dx, dw, b16, 1, 64, 64, -1, 0) == bad, "variant -1 accepted");
    kg_check_untouched(dy, MR * 64, "skinny");
    CU(cudaFree(dw)); CU(cudaFree(dx)); CU(cudaFree(dy));
}

int main(void) {
    kc_require_gpu();
    unsigned long long s = kc_seed();
    invalid();
    static const int Ns[4] = {8, 64, 5120, 6144}, Ks[5] = {16, 64, 4096, 5120, 32768};
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 5; j++) one(KILN_DT_BF16, Ns[i], Ks[j], &s);
    static const int fN[2] = {8, 5120}, fK[3] = {16, 4096, 32768};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++) one(KILN_DT_F16, fN[i], fK[j], &s);
    static const int odd[][2] = {{1, 8}, {7, 136}, {33, 1032}, {1000, 2056}, {129, 4104}, {3, 520}};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        one(KILN_DT_BF16, odd[i][0], odd[i][1], &s);
        one(KILN_DT_F16, odd[i][0], odd[i][1], &s);
    }
    return kt_done();
}
