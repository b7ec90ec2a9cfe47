/* test_cuda_rmsnorm.c: the residual add fused with RMSNorm (rmsnorm.cu) against
 * kiln_cpu_rmsnorm on x + delta: f32 / f16 / bf16 outputs, the written-back residual (exact),
 * no-delta mode, and the gathered final-norm mode (rows, no write-back); the variant that also
 * writes the FP8 W8A8 input (kiln_cuda_add_rmsnorm_q8): its bf16 output byte for byte the plain
 * kernel's, its codes and scales those of the CPU's activation quantization (util/fp8.h) of that
 * output; the variant that writes the int8 GEMV input (kiln_cuda_add_rmsnorm_i8, issue 16): its
 * output byte for byte the plain kernel's, its blocks bit for bit kiln_cuda_quantize_x's of that
 * output (q8_check.h), with an all-zero block in every row (w zero over elements 32..63), on
 * shapes that take each of the kernel's 2 / 4 / 8 float4 a thread (D 96 .. 16416, odd block
 * counts); D % 32 != 0 refused. */
#include <math.h>
#include <string.h>
#include "backend/cpu/kernels.h"
#include "util/fp8.h"
#include "backend/cuda/cuda_ops.h"
#include "cuda_test.h"
#include "util/alloc.h"
#include "q8_check.h"

static void one(kiln_dtype adt, int T, int D, int with_delta, int gather, unsigned long long *s) {
    size_t n = (size_t)T * D, as = kc_dtsize(adt);
    float *x = kiln_malloc(n * 4), *dl = kiln_malloc(n * 4), *w = kiln_malloc((size_t)D * 4);
    float *v = kiln_malloc(n * 4), *want = kiln_malloc(n * 4), *got = kiln_malloc(n * 4), *xb = kiln_malloc(n * 4);
    void *oh = kiln_malloc(n * as);
    int32_t rows[4] = {T - 1, 0, T / 2, T - 1};
    int R = gather ? (T >= 4 ? 4 : 1) : T;
    if (gather && T < 4) rows[0] = T - 1;
    kc_rand(x, n, 3.0f, s);
    kc_rand(dl, n, 1.0f, s);
    for (int i = 0; i < D; i++) w[i] = 1.0f + kt_randf(s) * 0.5f;
    for (int i = 32; i < 64 && i < D; i++) w[i] = 0.0f; /* an all-zero block of the int8 variant */
    for (size_t i = 0; i < n; i++) v[i] = with_delta ? x[i] + dl[i] : x[i];
    for (int r = 0; r < R; r++) {
        int src = gather ? rows[r] : r;
        kiln_cpu_rmsnorm(NULL, want + (size_t)r * D, v + (size_t)src * D, w, 1, D, 1e-5f);
    }
    float *dx = kc_dev(n * 4), *ddl = kc_dev(n * 4), *dw = kc_dev((size_t)D * 4);
    void *dout = kc_dev(n * as);
    int32_t *drows = kc_dev(sizeof rows);
    kc_put(dx, x, n * 4);
    kc_put(ddl, dl, n * 4);
    kc_put(dw, w, (size_t)D * 4);
    kc_put(drows, rows, sizeof rows);
    kc_poison(dout, n * as);
    CU(kiln_cuda_add_rmsnorm(dx, with_delta ? ddl : NULL, gather ? drows : NULL, !gather, dw, dout, adt, R, D, 1e-5f, 1, 0));
    kc_get(oh, dout, (size_t)R * D * as);
    kc_from_dt(adt, oh, got, (size_t)R * D);
    double e = kt_rel_l2(got, want, (size_t)R * D);
    KT_CHECK(e <= kc_tol(adt), "rmsnorm %s T=%d D=%d delta=%d gather=%d: rel L2 %g", kc_dtname(adt), T, D, with_delta,
             gather, e);
    kc_get(xb, dx, n * 4);
    const float *xw = gather ? x : v; /* gather mode leaves x alone */
    KT_CHECK(memcmp(xb, xw, n * 4) == 0, "rmsnorm %s T=%d D=%d: residual written back wrong", kc_dtname(adt), T, D);
    printf("rmsnorm %-4s T=%-4d D=%-5d delta=%d gather=%d rel L2 %.3g\n", kc_dtname(adt), T, D, with_delta, gather, e);
    if (D % 32 == 0) { /* the int8 variant on the same inputs */
        size_t nb = n / 32;
        int8_t *dq = kc_dev(n);
        float *dd = kc_dev(nb * 4), *dsm = kc_dev(nb * 8), *xb2 = kiln_malloc(n * 4);
        void *oh3 = kiln_malloc(n * as);
        kc_put(dx, x, n * 4);
        kc_poison(dout, n * as);
        kc_poison(dq, n);
        kc_poison(dd, nb * 4);
        kc_poison(dsm, nb * 8);
        CU(kiln_cuda_add_rmsnorm_i8(dx, with_delta ? ddl : NULL, gather ? drows : NULL, !gather, dw, dout, adt, R, D,
                                    1e-5f, dq, dd, dsm, 1, 0));
        kc_get(oh3, dout, (size_t)R * D * as);
        kc_get(xb2, dx, n * 4);
        KT_CHECK(memcmp(oh3, oh, (size_t)R * D * as) == 0 && memcmp(xb2, xw, n * 4) == 0,
                 "rmsnorm i8 %s T=%d D=%d gather=%d: output or residual differs from the plain kernel's", kc_dtname(adt),
                 T, D, gather);
        int zero = 0, bad = kc_q8_diff(dout, adt, R, D, dq, dd, dsm, &zero);
        KT_CHECK(bad == 0, "rmsnorm i8 %s T=%d D=%d delta=%d gather=%d: %d int8 entries differ from "
                 "kiln_cuda_quantize_x on the output", kc_dtname(adt), T, D, with_delta, gather, bad);
        KT_CHECK(D < 64 || zero >= R, "rmsnorm i8 T=%d D=%d: %d all-zero blocks, expected one a row", T, D, zero);
        printf("rmsnorm i8 %-4s T=%-4d D=%-5d delta=%d gather=%d: output == plain, blocks == quantize_x (%d all-zero)\n",
               kc_dtname(adt), T, D, with_delta, gather, zero);
        CU(cudaFree(dq)); CU(cudaFree(dd)); CU(cudaFree(dsm));
        kiln_free(xb2); kiln_free(oh3);
    } else {
        KT_CHECK(kiln_cuda_add_rmsnorm_i8(dx, ddl, NULL, 1, dw, dout, adt, T, D, 1e-5f, (int8_t *)dout, dx, dx, 1, 0) ==
                     cudaErrorInvalidValue, "rmsnorm i8 D=%d (not a multiple of 32) taken", D);
    }
    if (adt == KILN_DT_BF16 && D % 4 == 0) { /* the q8 variant on the same inputs */
        uint8_t *dq = kc_dev(n), *qh = kiln_malloc(n), *qw = kiln_malloc(n);
        float *dsa = kc_dev((size_t)T * 4), sa[300], *ov = kiln_malloc(n * 4);
        void *oh2 = kiln_malloc(n * as);
        kc_put(dx, x, n * 4);
        kc_poison(dout, n * as);
        kc_poison(dq, n);
        CU(kiln_cuda_add_rmsnorm_q8(dx, with_delta ? ddl : NULL, gather ? drows : NULL, !gather, dw, dout, R, D, 1e-5f,
                                    dq, dsa, 0, 0.0f, NULL, NULL, 1, 0));
        kc_get(oh2, dout, (size_t)R * D * as);
        kc_get(qh, dq, (size_t)R * D);
        kc_get(sa, dsa, (size_t)R * 4);
        KT_CHECK(memcmp(oh2, oh, (size_t)R * D * as) == 0, "rmsnorm q8 T=%d D=%d: bf16 output differs", T, D);
        kc_from_dt(adt, oh2, ov, (size_t)R * D);
        int bad = 0;
        for (int r = 0; r < R; r++) {
            float m = 0.0f;
            for (int i = 0; i < D; i++) m = fabsf(ov[(size_t)r * D + i]) > m ? fabsf(ov[(size_t)r * D + i]) : m;
            float sc = kiln_fp8_act_scale(m);
            bad += sc != sa[r];
            for (int i = 0; i < D; i++) qw[(size_t)r * D + i] = kiln_f32_to_e4m3(ov[(size_t)r * D + i] / sc);
        }
        KT_CHECK(bad == 0 && memcmp(qw, qh, (size_t)R * D) == 0, "rmsnorm q8 T=%d D=%d gather=%d: %d scales, codes %s",
                 T, D, gather, bad, memcmp(qw, qh, (size_t)R * D) ? "differ" : "equal");
        if (with_delta) { /* delta's FP8 scales applied here == kiln_cuda_fp8_scale_rows first (bytes) */
            float *hs = kiln_malloc((size_t)T * 4), *hw = kiln_malloc((size_t)D * 4);
            for (int t = 0; t < T; t++) hs[t] = ldexpf(1.0f + kt_randf(s), -3 + t % 5);
            for (int i = 0; i < D; i++) hw[i] = ldexpf(1.0f + kt_randf(s), -(i % 7));
            float *ds = kc_dev((size_t)T * 4), *dws = kc_dev((size_t)D * 4), *dd2 = kc_dev(n * 4);
            uint8_t *dq2 = kc_dev(n), *q2 = kiln_malloc(n);
            float sa2[300];
            kc_put(ds, hs, (size_t)T * 4);
            kc_put(dws, hw, (size_t)D * 4);
            kc_put(dx, x, n * 4);
            CU(kiln_cuda_add_rmsnorm_q8(dx, ddl, gather ? drows : NULL, !gather, dw, dout, R, D, 1e-5f, dq2, dsa, 0, 0.0f,
                                        ds, dws, 1, 0));
            kc_get(oh2, dout, (size_t)R * D * as);
            kc_get(q2, dq2, (size_t)R * D);
            kc_get(sa2, dsa, (size_t)R * 4);
            kc_put(dd2, dl, n * 4);
            CU(kiln_cuda_fp8_scale_rows(dd2, D, ds, dws, T, D, 0));
            kc_put(dx, x, n * 4);
            CU(kiln_cuda_add_rmsnorm_q8(dx, dd2, gather ? drows : NULL, !gather, dw, dout, R, D, 1e-5f, dq, dsa, 0, 0.0f,
                                        NULL, NULL, 1, 0));
            kc_get(oh, dout, (size_t)R * D * as);
            kc_get(qh, dq, (size_t)R * D);
            kc_get(sa, dsa, (size_t)R * 4);
            KT_CHECK(!memcmp(oh2, oh, (size_t)R * D * as) && !memcmp(q2, qh, (size_t)R * D) && !memcmp(sa2, sa, (size_t)R * 4),
                     "rmsnorm q8 T=%d D=%d gather=%d: delta scales differ from kiln_cuda_fp8_scale_rows then add", T, D,
                     gather);
            CU(cudaFree(ds)); CU(cudaFree(dws)); CU(cudaFree(dd2)); CU(cudaFree(dq2));
            kiln_free(hs); kiln_free(hw); kiln_free(q2);
        }
        CU(cudaFree(dq)); CU(cudaFree(dsa));
        kiln_free(qh); kiln_free(qw); kiln_free(ov); kiln_free(oh2);
    }
    CU(cudaFree(dx)); CU(cudaFree(ddl)); CU(cudaFree(dw)); CU(cudaFree(dout)); CU(cudaFree(drows));
    kiln_free(x); kiln_free(dl); kiln_free(w); kiln_free(v); kiln_free(want); kiln_free(got); kiln_free(xb); kiln_free(oh);
}

int main(void) {
    kc_require_gpu();
    unsigned long long s = kc_seed();
    kiln_dtype dts[3] = {KILN_DT_F32, KILN_DT_F16, KILN_DT_BF16};
    /* 96 / 5152: odd block counts; 12320 / 16416: 4 and 8 float4 a thread (1024 threads) */
    int shapes[][2] = {{1, 64}, {7, 5120}, {33, 256}, {5, 130}, {300, 128}, {3, 96}, {2, 5152}, {1, 12320}, {4, 16416}};
    for (int i = 0; i < 3; i++)
        for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
            one(dts[i], shapes[k][0], shapes[k][1], 1, 0, &s);
            one(dts[i], shapes[k][0], shapes[k][1], 0, 0, &s);
            one(dts[i], shapes[k][0], shapes[k][1], 1, 1, &s);
        }
    return kt_done();
}
