/* gemm_harness.h: shared pieces of the decode-GEMM tests (test_cuda_gemv.c, test_cuda_skinny.c,
 * test_cuda_wide.c): random bf16 / f16 inputs with their device copies, a double-precision
 * reference over the rounded values, and the accuracy check (NaN count, relative L2, a
 * per-element first-order bound relative to sum |w x|). y [rows][N] f32, x [rows][K], W [N][K]
 * (dtype dt). */
#ifndef KILN_GEMM_HARNESS_H
#define KILN_GEMM_HARNESS_H
#include <math.h>
#include "backend/cuda/cuda_ops.h"
#include "cuda_test.h"
#include "util/alloc.h"

#define KG_POISON 0xffffffffu /* what kc_poison leaves in an f32 */

static inline uint32_t kg_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* want[t][n] = sum_k x[t][k] w[n][k], mag = sum |x w| (double, 4 partial sums), t < rows */
static inline void kg_reference(const float *x, const float *w, int rows, int N, int K, double *want, double *mag) {
    for (int t = 0; t < rows; t++)
        for (int n = 0; n < N; n++) {
            const float *a = x + (size_t)t * K, *b = w + (size_t)n * K;
            double s[4] = {0, 0, 0, 0}, m[4] = {0, 0, 0, 0};
            int k = 0;
            for (; k + 4 <= K; k += 4)
                for (int j = 0; j < 4; j++) {
                    double p = (double)a[k + j] * (double)b[k + j];
                    s[j] += p;
                    m[j] += fabs(p);
                }
            for (; k < K; k++) {
                double p = (double)a[k] * (double)b[k];
                s[0] += p;
                m[0] += fabs(p);
            }
            want[(size_t)t * N + n] = (s[0] + s[1]) + (s[2] + s[3]);
            mag[(size_t)t * N + n] = (m[0] + m[1]) + (m[2] + m[3]);
        }
}

/* one problem: host reference and device inputs / output */
typedef struct kg_problem {
    kiln_dtype dt;
    int rows, N, K;
    double *want, *mag; /* [rows][N] */
    void *dw, *dx;      /* device W [N][K], x [rows][K] (dt) */
    float *dy;          /* device y [rows][N] */
} kg_problem;

/* random W (scale 1/sqrt(K)) and x (scale 2), rounded to dt; the reference uses the rounded values */
static inline void kg_problem_init(kg_problem *p, kiln_dtype dt, int rows, int N, int K, unsigned long long *s) {
    size_t wn = (size_t)N * K, xn = (size_t)rows * K, yn = (size_t)rows * N;
    float *w = kiln_malloc(wn * 4), *x = kiln_malloc(xn * 4);
    uint16_t *wh = kiln_malloc(wn * 2), *xh = kiln_malloc(xn * 2);
    p->dt = dt;
    p->rows = rows;
    p->N = N;
    p->K = K;
    p->want = kiln_malloc(yn * sizeof(double));
    p->mag = kiln_malloc(yn * sizeof(double));
    kc_rand(w, wn, 1.0f / sqrtf((float)K), s);
    kc_rand(x, xn, 2.0f, s);
    kc_to_dt(dt, w, wh, wn);
    kc_to_dt(dt, x, xh, xn);
    kc_from_dt(dt, wh, w, wn);
    kc_from_dt(dt, xh, x, xn);
    kg_reference(x, w, rows, N, K, p->want, p->mag);
    p->dw = kc_dev(wn * 2);
    p->dx = kc_dev(xn * 2);
    p->dy = kc_dev(yn * 4);
    kc_put(p->dw, wh, wn * 2);
    kc_put(p->dx, xh, xn * 2);
    kiln_free(w); kiln_free(x); kiln_free(wh); kiln_free(xh);
}
static inline void kg_problem_free(kg_problem *p) {
    CU(cudaFree(p->dw)); CU(cudaFree(p->dx)); CU(cudaFree(p->dy));
    kiln_free(p->want); kiln_free(p->mag);
}

/* The first-order bound of the tensor-core kernels, relative to sum |w x|: a chain of 4 mmas,
 * each summing 17 terms aligned to the largest and truncated (<= 2^-23 each), then n_round f32
 * roundings in round to nearest (2^-24 each); 2x margin. */
static inline double kg_tc_bound(int n_round) {
    return (4.0 * 17.0 * ldexp(1.0, -23) + n_round * ldexp(1.0, -24)) * 2;
}

/* Accuracy of got [rows][N] against the reference: returns the relative L2 error; *nan = NaN
 * (unwritten) outputs, *over = elements off by more than bound x sum |w x|. */
static inline double kg_check(const kg_problem *p, const float *got, double bound, int *nan, int *over) {
    size_t yn = (size_t)p->rows * p->N;
    double num = 0, den = 0;
    *nan = *over = 0;
    for (size_t i = 0; i < yn; i++) {
        if (isnan(got[i])) { (*nan)++; continue; }
        double d = (double)got[i] - p->want[i];
        num += d * d;
        den += p->want[i] * p->want[i];
        if (fabs(d) > bound * p->mag[i] + 1e-30) {
            if (!*over)
                fprintf(stderr, "  elem %zu: got %.9g want %.9g (|wx| sum %.3g)\n", i, got[i], p->want[i], p->mag[i]);
            (*over)++;
        }
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* a kernel under test: y = x W^T for T rows, variant v (0 = its default) */
typedef cudaError_t (*kg_launch)(float *y, const void *x, const void *w, kiln_dtype dt, int T, int N, int K, int v);

/* Accuracy of f at T = p->rows rows and variant 0 (its default): y poisoned first; no NaN
 * (unwritten) output, relative L2 <= 1e-5 and every element within bound x sum |w x|. ref
 * receives y [rows][N] (the reference run of kg_check_rows). */
static inline void kg_check_accuracy(const kg_problem *p, kg_launch f, double bound, float *ref, const char *what) {
    int N = p->N, K = p->K, T = p->rows;
    size_t yn = (size_t)T * N;
    const char *nm = kiln_dtype_name(p->dt);
    kc_poison(p->dy, yn * 4);
    cudaError_t rc = f(p->dy, p->dx, p->dw, p->dt, T, N, K, 0);
    KT_CHECK(rc == cudaSuccess, "%s %s N=%d K=%d T=%d launch: %s", what, nm, N, K, T, cudaGetErrorString(rc));
    kc_get(ref, p->dy, yn * 4);
    int nan = 0, over = 0;
    double e = kg_check(p, ref, bound, &nan, &over);
    KT_CHECK(nan == 0, "%s %s N=%d K=%d T=%d: %d NaN (unwritten) outputs", what, nm, N, K, T, nan);
    KT_CHECK(e <= 1e-5, "%s %s N=%d K=%d T=%d: rel L2 %g", what, nm, N, K, T, e);
    KT_CHECK(over == 0, "%s %s N=%d K=%d T=%d: %d elements beyond the error bound", what, nm, N, K, T, over);
    printf("%s %-4s N=%-6d K=%-5d rel L2 %.3g\n", what, nm, N, K, e);
}

/* The refusals every decode GEMM shares, f at variant 0 on the caller's buffers dy [max_rows][64]
 * f32 (poisoned), dx [max_rows][64] and dw [64][64] bf16: T = 0 and max_rows + 1, N = 0 and -8,
 * K = 0, f32 and q8_0 weights, misaligned x, W and y, NULL y, x and W. Each must return
 * cudaErrorInvalidValue; kg_check_untouched then checks that none wrote. */
static inline void kg_check_refusals(kg_launch f, float *dy, const void *dx, const void *dw, int max_rows,
                                     const char *what) {
    const cudaError_t bad = cudaErrorInvalidValue;
    const kiln_dtype b16 = KILN_DT_BF16;
    KT_CHECK(f(dy, dx, dw, b16, 0, 64, 64, 0) == bad, "%s: T=0 accepted", what);
    KT_CHECK(f(dy, dx, dw, b16, max_rows + 1, 64, 64, 0) == bad, "%s: T=%d accepted", what, max_rows + 1);
    KT_CHECK(f(dy, dx, dw, b16, 1, 0, 64, 0) == bad, "%s: N=0 accepted", what);
    KT_CHECK(f(dy, dx, dw, b16, 1, -8, 64, 0) == bad, "%s: N=-8 accepted", what);
    KT_CHECK(f(dy, dx, dw, b16, 1, 64, 0, 0) == bad, "%s: K=0 accepted", what);
    KT_CHECK(f(dy, dx, dw, KILN_DT_F32, 1, 32, 64, 0) == bad, "%s: f32 weights accepted", what);
    KT_CHECK(f(dy, dx, dw, KILN_DT_Q8_0, 1, 32, 64, 0) == bad, "%s: q8_0 weights accepted", what);
    KT_CHECK(f(dy, (const uint16_t *)dx + 1, dw, b16, 1, 64, 64, 0) == bad, "%s: misaligned x accepted", what);
    KT_CHECK(f(dy, dx, (const uint16_t *)dw + 4, b16, 1, 63, 64, 0) == bad, "%s: misaligned W accepted", what);
    KT_CHECK(f((float *)((char *)dy + 2), dx, dw, b16, 1, 64, 64, 0) == bad, "%s: misaligned y accepted", what);
    KT_CHECK(f(NULL, dx, dw, b16, 1, 64, 64, 0) == bad, "%s: NULL y accepted", what);
    KT_CHECK(f(dy, NULL, dw, b16, 1, 64, 64, 0) == bad, "%s: NULL x accepted", what);
    KT_CHECK(f(dy, dx, NULL, b16, 1, 64, 64, 0) == bad, "%s: NULL W accepted", what);
}

/* dy [n] f32 still all poison after refused calls; no launch error left behind */
static inline void kg_check_untouched(const float *dy, int n, const char *what) {
    float *back = kiln_malloc((size_t)n * 4);
    kc_get(back, dy, (size_t)n * 4);
    int touched = 0;
    for (int i = 0; i < n; i++) touched += kg_f32_bits(back[i]) != KG_POISON;
    KT_CHECK(touched == 0, "%s: a refused call wrote %d outputs", what, touched);
    kiln_free(back);
    CU(cudaGetLastError());
}

/* Bit identity of a kernel whose rows do not depend on each other: for every T = 1..rows and
 * variant 0..n_var-1, rows < T equal ref (the T = rows run) bit for bit and rows >= T stay
 * poisoned; each row t computed alone (T = 1 on x + t K, default variant) equals row t of ref and
 * writes nothing past row 0. */
static inline void kg_check_rows(const kg_problem *p, const float *ref, kg_launch f, int n_var, const char *what) {
    int N = p->N, K = p->K, MR = p->rows;
    size_t yn = (size_t)MR * N, es = kc_dtsize(p->dt);
    const char *nm = kiln_dtype_name(p->dt);
    float *got = kiln_malloc(yn * 4);
    for (int T = 1; T <= MR; T++)
        for (int v = 0; v < n_var; v++) {
            kc_poison(p->dy, yn * 4);
            cudaError_t rc = f(p->dy, p->dx, p->dw, p->dt, T, N, K, v);
            KT_CHECK(rc == cudaSuccess, "%s %s N=%d K=%d T=%d v=%d launch: %s", what, nm, N, K, T, v,
                     cudaGetErrorString(rc));
            kc_get(got, p->dy, yn * 4);
            int diff = memcmp(got, ref, (size_t)T * N * 4) != 0, touched = 0;
            for (size_t i = (size_t)T * N; i < yn; i++) touched += kg_f32_bits(got[i]) != KG_POISON;
            KT_CHECK(!diff, "%s %s N=%d K=%d: T=%d v=%d rows differ from the T=%d run", what, nm, N, K, T, v, MR);
            KT_CHECK(!touched, "%s %s N=%d K=%d: T=%d v=%d wrote %d elements of rows >= T", what, nm, N, K, T, v,
                     touched);
        }
    for (int t = 0; t < MR; t++) {
        kc_poison(p->dy, yn * 4);
        KT_CHECK(f(p->dy, (const char *)p->dx + (size_t)t * K * es, p->dw, p->dt, 1, N, K, 0) == cudaSuccess,
                 "%s %s row %d alone launch", what, nm, t);
        kc_get(got, p->dy, yn * 4);
        int touched = 0;
        for (size_t i = (size_t)N; i < yn; i++) touched += kg_f32_bits(got[i]) != KG_POISON;
        KT_CHECK(memcmp(got, ref + (size_t)t * N, (size_t)N * 4) == 0,
                 "%s %s N=%d K=%d: row %d alone differs from row %d of T=%d", what, nm, N, K, t, t, MR);
        KT_CHECK(!touched, "%s %s N=%d K=%d: row %d alone wrote %d elements past row 0", what, nm, N, K, t, touched);
    }
    kiln_free(got);
}

/* a fused gate|up + SwiGLU kernel under test: act[t][j] = silu(g) u for T rows, variant v */
typedef cudaError_t (*kg_launch_glu)(void *act, kiln_dtype adt, const void *x, const void *w, kiln_dtype dt, int T,
                                     int F, int K, int v);

/* The fused kernel f against the unfused pair on problem p (W = [gate; up], N = 2F): p->dy must
 * hold the plain kernel's f32 output for all p->rows rows. For f32 / bf16 / f16 outputs, every
 * T = 1..rows and variant 0..n_var-1: the same bytes as kiln_cuda_swiglu over p->dy, rows >= T
 * untouched; the f32 output within 1e-5 relative L2 of silu(g) u of the double reference; and
 * the refusal of a q8_0 output and a misaligned one. */
static inline void kg_check_glu(const kg_problem *p, kg_launch_glu f, int n_var, const char *what) {
    int MR = p->rows, N = p->N, F = N / 2, K = p->K;
    const char *nm = kiln_dtype_name(p->dt);
    static const kiln_dtype adts[3] = {KILN_DT_F32, KILN_DT_BF16, KILN_DT_F16};
    size_t an = (size_t)MR * F;
    void *dref = kc_dev(an * 4), *dact = kc_dev(an * 4);
    unsigned char *ref = kiln_malloc(an * 4), *got = kiln_malloc(an * 4);
    for (int a = 0; a < 3; a++) {
        kiln_dtype adt = adts[a];
        size_t es = kc_dtsize(adt);
        CU(kiln_cuda_swiglu(dref, adt, p->dy, MR, F, 1, 0));
        kc_get(ref, dref, an * es);
        if (adt == KILN_DT_F32) { /* silu(g) u of the double reference */
            double num = 0, den = 0;
            for (int t = 0; t < MR; t++)
                for (int j = 0; j < F; j++) {
                    double g = p->want[(size_t)t * N + j], u = p->want[(size_t)t * N + F + j];
                    double want = g / (1.0 + exp(-g)) * u, d = ((const float *)ref)[(size_t)t * F + j] - want;
                    num += d * d;
                    den += want * want;
                }
            double e = den > 0 ? sqrt(num / den) : sqrt(num);
            KT_CHECK(e <= 1e-5, "%s %s F=%d K=%d: rel L2 %g against silu(g) u of the double reference", what, nm, F, K,
                     e);
            printf("%s %-4s F=%-6d K=%-5d rel L2 %.3g\n", what, nm, F, K, e);
        }
        for (int T = 1; T <= MR; T++)
            for (int v = 0; v < n_var; v++) {
                kc_poison(dact, an * 4);
                cudaError_t rc = f(dact, adt, p->dx, p->dw, p->dt, T, F, K, v);
                KT_CHECK(rc == cudaSuccess, "%s %s F=%d K=%d T=%d v=%d launch: %s", what, nm, F, K, T, v,
                         cudaGetErrorString(rc));
                kc_get(got, dact, an * es);
                int touched = 0;
                for (size_t i = (size_t)T * F * es; i < an * es; i++) touched += got[i] != 0xff;
                KT_CHECK(memcmp(got, ref, (size_t)T * F * es) == 0, "%s %s -> %s F=%d K=%d T=%d v=%d: differs from the "
                         "unfused pair", what, nm, kiln_dtype_name(adt), F, K, T, v);
                KT_CHECK(!touched, "%s %s F=%d K=%d T=%d v=%d: wrote %d bytes of rows >= T", what, nm, F, K, T, v,
                         touched);
            }
    }
    KT_CHECK(f(dact, KILN_DT_Q8_0, p->dx, p->dw, p->dt, 1, F, K, 0) == cudaErrorInvalidValue, "%s: q8_0 act accepted",
             what);
    KT_CHECK(f((char *)dact + 2, KILN_DT_BF16, p->dx, p->dw, p->dt, 1, F, K, 0) == cudaErrorInvalidValue,
             "%s: misaligned act accepted", what);
    CU(cudaFree(dref)); CU(cudaFree(dact));
    kiln_free(ref); kiln_free(got);
}
#endif
