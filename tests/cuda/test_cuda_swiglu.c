/* test_cuda_swiglu.c: SwiGLU over the fused gate|up GEMM output (swiglu.cu) against
 * kiln_cpu_swiglu, f32 / f16 / bf16 outputs; the 16-byte kernel against the scalar one, byte for
 * byte; the variant with partial maxima (kiln_cuda_swiglu_pmax) and the FP8 quantization that
 * finishes from them (kiln_cuda_fp8_quant_pmax): the same bf16 bytes, and the codes and scales of
 * the CPU's activation quantization (util/fp8.h) of that output; the variant that writes the down
 * projection's int8 GEMV input (kiln_cuda_swiglu_i8, issue 16): its output byte for byte the
 * plain kernel's, its blocks bit for bit kiln_cuda_quantize_x's of that output (q8_check.h), with
 * an all-zero block in every row (gate zero over elements 0..31), odd block counts (n 96, 1056:
 * a CTA with lanes past the row); n % 32 != 0 refused. */
#include <math.h>
#include "util/fp8.h"
#include <string.h>
#include "backend/cpu/kernels.h"
#include "backend/cuda/cuda_ops.h"
#include "cuda_test.h"
#include "util/alloc.h"
#include "q8_check.h"

/* gdt: dtype of the gate|up input (f32, or bf16/f16 as cuBLASLt writes it at larger batches) */
static void one(kiln_dtype adt, kiln_dtype gdt, int T, int n, unsigned long long *s) {
    size_t tn = (size_t)T * n, as = kc_dtsize(adt), gs = kc_dtsize(gdt);
    float *gu = kiln_malloc(tn * 2 * 4), *g = kiln_malloc(tn * 4), *u = kiln_malloc(tn * 4);
    float *want = kiln_malloc(tn * 4), *got = kiln_malloc(tn * 4);
    void *oh = kiln_malloc(tn * as), *guh = kiln_malloc(tn * 2 * gs);
    kc_rand(gu, tn * 2, 6.0f, s);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < 32 && i < n; i++) gu[(size_t)t * 2 * n + i] = 0.0f; /* out zero: an all-zero int8 block */
    kc_to_dt(gdt, gu, guh, tn * 2);
    kc_from_dt(gdt, guh, gu, tn * 2); /* the reference sees the rounded inputs */
    for (int t = 0; t < T; t++)
        for (int i = 0; i < n; i++) {
            g[(size_t)t * n + i] = gu[(size_t)t * 2 * n + i];
            u[(size_t)t * n + i] = gu[(size_t)t * 2 * n + n + i];
        }
    kiln_cpu_swiglu(NULL, want, g, u, T, n);
    void *dgu = kc_dev(tn * 2 * gs);
    void *dout = kc_dev(tn * as);
    kc_put(dgu, guh, tn * 2 * gs);
    kc_poison(dout, tn * as);
    if (gdt == KILN_DT_F32) CU(kiln_cuda_swiglu(dout, adt, (const float *)dgu, T, n, 1, 0));
    else CU(kiln_cuda_swiglu_in(dout, adt, dgu, gdt, T, n, 1, 0));
    kc_get(oh, dout, tn * as);
    kc_from_dt(adt, oh, got, tn);
    double e = kt_rel_l2(got, want, tn);
    KT_CHECK(e <= kc_tol(adt), "swiglu %s<-%s T=%d n=%d: rel L2 %g", kc_dtname(adt), kc_dtname(gdt), T, n, e);
    printf("swiglu %-4s <- %-4s T=%-4d n=%-6d rel L2 %.3g\n", kc_dtname(adt), kc_dtname(gdt), T, n, e);
    /* the 16-byte kernel (n % 8 == 0, aligned) against the scalar one (the same input one element
     * off 16-byte alignment): the same bytes */
    if (n % 8 == 0) {
        unsigned char *dgu2 = kc_dev(tn * 2 * gs + gs), *ref = kiln_malloc(tn * as);
        kc_put(dgu2 + gs, guh, tn * 2 * gs);
        void *dout2 = kc_dev(tn * as + as);
        kc_poison(dout2, tn * as + as);
        CU(kiln_cuda_swiglu_in((unsigned char *)dout2 + as, adt, dgu2 + gs, gdt, T, n, 1, 0));
        kc_get(ref, (unsigned char *)dout2 + as, tn * as);
        KT_CHECK(memcmp(ref, oh, tn * as) == 0, "swiglu %s<-%s T=%d n=%d: the vector kernel's bytes differ from the "
                 "scalar kernel's", kc_dtname(adt), kc_dtname(gdt), T, n);
        CU(cudaFree(dgu2)); CU(cudaFree(dout2));
        kiln_free(ref);
    }
    if (n % 32 == 0) { /* the int8 variant */
        size_t nb = tn / 32;
        int8_t *dq = kc_dev(tn);
        float *dd = kc_dev(nb * 4), *dsm = kc_dev(nb * 8);
        unsigned char *o4 = kiln_malloc(tn * as);
        kc_poison(dout, tn * as);
        kc_poison(dq, tn);
        kc_poison(dd, nb * 4);
        kc_poison(dsm, nb * 8);
        CU(kiln_cuda_swiglu_i8(dout, adt, dgu, gdt, T, n, dq, dd, dsm, 1, 0));
        kc_get(o4, dout, tn * as);
        KT_CHECK(memcmp(o4, oh, tn * as) == 0, "swiglu i8 %s<-%s T=%d n=%d: output differs from the plain kernel's",
                 kc_dtname(adt), kc_dtname(gdt), T, n);
        int zero = 0, bad = kc_q8_diff(dout, adt, T, n, dq, dd, dsm, &zero);
        KT_CHECK(bad == 0, "swiglu i8 %s<-%s T=%d n=%d: %d int8 entries differ from kiln_cuda_quantize_x on the output",
                 kc_dtname(adt), kc_dtname(gdt), T, n, bad);
        KT_CHECK(zero >= T, "swiglu i8 T=%d n=%d: %d all-zero blocks, expected one a row", T, n, zero);
        printf("swiglu i8 %-4s <- %-4s T=%-4d n=%-6d output == plain, blocks == quantize_x (%d all-zero)\n",
               kc_dtname(adt), kc_dtname(gdt), T, n, zero);
        CU(cudaFree(dq)); CU(cudaFree(dd)); CU(cudaFree(dsm));
        kiln_free(o4);
    } else {
        KT_CHECK(kiln_cuda_swiglu_i8(dout, adt, dgu, gdt, T, n, (int8_t *)dout, (float *)dout, (float *)dout, 1, 0) ==
                     cudaErrorInvalidValue, "swiglu i8 n=%d (not a multiple of 32) taken", n);
    }
    if (n % 8 == 0 && adt == KILN_DT_BF16) {
        int P = kiln_cuda_swiglu_pmax_parts(n);
        float *dpm = kc_dev((size_t)T * P * 4), *dsa = kc_dev((size_t)T * 4), *sa = kiln_malloc((size_t)T * 4);
        float *pm = kiln_malloc((size_t)T * P * 4);
        uint8_t *dq = kc_dev(tn), *qh = kiln_malloc(tn), *qw = kiln_malloc(tn);
        unsigned char *o2 = kiln_malloc(tn * as);
        kc_poison(dout, tn * as);
        kc_poison(dq, tn);
        CU(kiln_cuda_swiglu_pmax(dout, dgu, gdt, T, n, dpm, NULL, NULL, 1, 0));
        CU(kiln_cuda_fp8_quant_pmax(dq, dsa, dout, dpm, P, T, n, 1, 0));
        kc_get(o2, dout, tn * as);
        kc_get(qh, dq, tn);
        kc_get(sa, dsa, (size_t)T * 4);
        kc_get(pm, dpm, (size_t)T * P * 4);
        KT_CHECK(memcmp(o2, oh, tn * as) == 0, "swiglu pmax T=%d n=%d: bf16 output differs", T, n);
        int bad = 0;
        for (int t = 0; t < T; t++) {
            float m = 0.0f, mp = 0.0f;
            for (int i = 0; i < n; i++) m = fabsf(got[(size_t)t * n + i]) > m ? fabsf(got[(size_t)t * n + i]) : m;
            for (int p = 0; p < P; p++) mp = pm[(size_t)t * P + p] > mp ? pm[(size_t)t * P + p] : mp;
            float sc = kiln_fp8_act_scale(m);
            bad += mp != m || sc != sa[t];
            for (int i = 0; i < n; i++) qw[(size_t)t * n + i] = kiln_f32_to_e4m3(got[(size_t)t * n + i] / sc);
        }
        KT_CHECK(bad == 0 && memcmp(qw, qh, tn) == 0, "swiglu pmax + fp8 quant T=%d n=%d <- %s: %d rows' max or scale "
                 "wrong, codes %s", T, n, kc_dtname(gdt), bad, memcmp(qw, qh, tn) ? "differ" : "equal");
        { /* FP8 sums scaled here == kiln_cuda_fp8_scale_rows first on their f32 values (bytes): cuBLASLt writes
           * them in f32, or in bf16 for gate|up (issue 17's prefill) */
            float *hs = kiln_malloc((size_t)T * 4), *hw = kiln_malloc((size_t)2 * n * 4);
            for (int t = 0; t < T; t++) hs[t] = ldexpf(1.0f + kt_randf(s), -3 + t % 5);
            for (int i = 0; i < 2 * n; i++) hw[i] = ldexpf(1.0f + kt_randf(s), -(i % 7));
            float *ds = kc_dev((size_t)T * 4), *dws = kc_dev((size_t)2 * n * 4), *dg2 = kc_dev(tn * 2 * 4);
            unsigned char *o3 = kiln_malloc(tn * as);
            kc_put(ds, hs, (size_t)T * 4);
            kc_put(dws, hw, (size_t)2 * n * 4);
            CU(kiln_cuda_swiglu_pmax(dout, dgu, gdt, T, n, dpm, ds, dws, 1, 0));
            kc_get(o3, dout, tn * as);
            kc_put(dg2, gu, tn * 2 * 4); /* gu: the f32 values of guh (exact) */
            CU(kiln_cuda_fp8_scale_rows(dg2, 2 * n, ds, dws, T, 2 * n, 0));
            CU(kiln_cuda_swiglu_pmax(dout, dg2, KILN_DT_F32, T, n, dpm, NULL, NULL, 1, 0));
            kc_get(o2, dout, tn * as);
            KT_CHECK(memcmp(o2, o3, tn * as) == 0, "swiglu pmax T=%d n=%d <- %s: gu scales differ from "
                     "kiln_cuda_fp8_scale_rows first", T, n, kc_dtname(gdt));
            CU(cudaFree(ds)); CU(cudaFree(dws)); CU(cudaFree(dg2));
            kiln_free(hs); kiln_free(hw); kiln_free(o3);
        }
        CU(cudaFree(dpm)); CU(cudaFree(dsa)); CU(cudaFree(dq));
        kiln_free(sa); kiln_free(pm); kiln_free(qh); kiln_free(qw); kiln_free(o2);
    }
    CU(cudaFree(dgu)); CU(cudaFree(dout));
    kiln_free(gu); kiln_free(g); kiln_free(u); kiln_free(want); kiln_free(got); kiln_free(oh); kiln_free(guh);
}

int main(void) {
    kc_require_gpu();
    unsigned long long s = kc_seed();
    kiln_dtype dts[3] = {KILN_DT_F32, KILN_DT_F16, KILN_DT_BF16};
    for (int i = 0; i < 3; i++) {
        one(dts[i], KILN_DT_F32, 1, 512, &s);
        one(dts[i], KILN_DT_F32, 13, 384, &s);
        one(dts[i], KILN_DT_F32, 4, 32768, &s);
        one(dts[i], KILN_DT_F32, 200, 1000, &s);
        one(dts[i], dts[i] == KILN_DT_F16 ? KILN_DT_F16 : KILN_DT_BF16, 37, 4096, &s);
        one(dts[i], dts[i] == KILN_DT_F16 ? KILN_DT_F16 : KILN_DT_BF16, 64, 32768, &s); /* a decode batch */
        one(dts[i], dts[i] == KILN_DT_F16 ? KILN_DT_F16 : KILN_DT_BF16, 3, 1001, &s);   /* n % 8 != 0: scalar */
        one(dts[i], KILN_DT_F32, 130, 1008, &s);
        one(dts[i], KILN_DT_F32, 5, 96, &s);                                              /* 3 blocks a row */
        one(dts[i], dts[i] == KILN_DT_F16 ? KILN_DT_F16 : KILN_DT_BF16, 3, 1056, &s);   /* 33 blocks a row */
        one(dts[i], KILN_DT_F32, 8, 5152, &s);
        one(dts[i], dts[i] == KILN_DT_F16 ? KILN_DT_F16 : KILN_DT_BF16, 2, 66560, &s); /* 66 partial maxima a row */
    }
    return kt_done();
}
