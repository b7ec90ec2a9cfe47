/* test_cuda_embed.c: embedding gather (embed.cu) against the CPU's row conversion
 * (kiln_row_to_f32): exact for f32, f16 and bf16 tables; repeated and extreme ids; and with
 * prev_row (overlapped scheduling): every other row takes its id from the previous step's drawn
 * tokens instead of ids. */
#include "format/quant.h"
#include "backend/cpu/kernels.h"
#include "backend/cuda/cuda_ops.h"
#include "cuda_test.h"
#include "util/alloc.h"

static void one(kiln_dtype dt, int V, int D, int T, unsigned long long *s) {
    size_t es = kc_dtsize(dt);
    float *ef = kiln_malloc((size_t)V * D * 4), *want = kiln_malloc((size_t)T * D * 4), *got = kiln_malloc((size_t)T * D * 4);
    void *eh = kiln_malloc((size_t)V * D * es);
    int32_t *ids = kiln_malloc((size_t)T * 4);
    kc_rand(ef, (size_t)V * D, 2.0f, s);
    kc_to_dt(dt, ef, eh, (size_t)V * D);
    for (int t = 0; t < T; t++) ids[t] = t == 0 ? V - 1 : t == 1 ? 0 : (int)(kt_rand_u64(s) % (unsigned)V);
    for (int t = 0; t < T; t++)
        kiln_row_to_f32(dt, (const char *)eh + (size_t)ids[t] * D * es, D, want + (size_t)t * D);
    void *de = kc_dev((size_t)V * D * es);
    int32_t *dids = kc_dev((size_t)T * 4);
    float *dx = kc_dev((size_t)T * D * 4);
    kc_put(de, eh, (size_t)V * D * es);
    kc_put(dids, ids, (size_t)T * 4);
    kc_poison(dx, (size_t)T * D * 4);
    CU(kiln_cuda_embed(dx, de, dt, dids, NULL, NULL, T, D, 0));
    kc_get(got, dx, (size_t)T * D * 4);
    double e = kt_rel_l2(got, want, (size_t)T * D);
    KT_CHECK(e == 0.0, "embed %s V=%d D=%d T=%d: rel L2 %g (want exact)", kc_dtname(dt), V, D, T, e);
    printf("embed %-4s V=%-6d D=%-5d T=%-4d rel L2 %.3g\n", kc_dtname(dt), V, D, T, e);
    /* odd rows take prev_tok[t % 3] (3 draws of a previous step), even rows ids[t] */
    int32_t prev_tok[3], *prev_row = kiln_malloc((size_t)T * 4);
    for (int k = 0; k < 3; k++) prev_tok[k] = (int)(kt_rand_u64(s) % (unsigned)V);
    for (int t = 0; t < T; t++) {
        prev_row[t] = t % 2 ? t % 3 : -1;
        int id = t % 2 ? prev_tok[t % 3] : ids[t];
        kiln_row_to_f32(dt, (const char *)eh + (size_t)id * D * es, D, want + (size_t)t * D);
    }
    int32_t *dprev = kc_dev((size_t)T * 4), *dptok = kc_dev(sizeof prev_tok);
    kc_put(dprev, prev_row, (size_t)T * 4);
    kc_put(dptok, prev_tok, sizeof prev_tok);
    kc_poison(dx, (size_t)T * D * 4);
    CU(kiln_cuda_embed(dx, de, dt, dids, dprev, dptok, T, D, 0));
    kc_get(got, dx, (size_t)T * D * 4);
    e = kt_rel_l2(got, want, (size_t)T * D);
    KT_CHECK(e == 0.0, "embed %s V=%d D=%d T=%d with prev_row: rel L2 %g (want exact)", kc_dtname(dt), V, D, T, e);
    KT_CHECK(kiln_cuda_embed(dx, de, dt, dids, dprev, NULL, T, D, 0) == cudaErrorInvalidValue,
             "prev_row without prev_tok accepted");
    CU(cudaFree(dprev));
    CU(cudaFree(dptok));
    kiln_free(prev_row);
    CU(cudaFree(de));
    CU(cudaFree(dids));
    CU(cudaFree(dx));
    kiln_free(ef); kiln_free(want); kiln_free(got); kiln_free(eh); kiln_free(ids);
}

int main(void) {
    kc_require_gpu();
    unsigned long long s = kc_seed();
    kiln_dtype dts[3] = {KILN_DT_F32, KILN_DT_F16, KILN_DT_BF16};
    for (int i = 0; i < 3; i++) {
        one(dts[i], 2048, 256, 17, &s);
        one(dts[i], 100, 48, 3, &s);
        one(dts[i], 131072, 5120, 9, &s);
    }
    return kt_done();
}
