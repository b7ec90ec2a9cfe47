/* q8_check.h: the int8 GEMV blocks a producer writes beside its output (kiln_cuda_add_rmsnorm_i8,
 * kiln_cuda_swiglu_i8: issue 16) against kiln_cuda_quantize_x run on that stored output, bit for
 * bit: the codes xq [T][K], the scales xd [T][K / 32] and the half sums xs [T][K / 16]. */
#ifndef KILN_Q8_CHECK_H
#define KILN_Q8_CHECK_H
#include <string.h>
#include "backend/cuda/cuda_ops.h"
#include "cuda_test.h"
#include "util/alloc.h"

/* The number of entries (codes, scales, sums) that differ; *zero: the blocks whose scale is 0 (an
 * all-zero block, the amax == 0 case). dq / dd / ds: the producer's device buffers. */
static inline int kc_q8_diff(const void *dout, kiln_dtype adt, int T, int K, const int8_t *dq, const float *dd,
                             const float *ds, int *zero) {
    size_t n = (size_t)T * K, nb = n / 32;
    int8_t *rq = kc_dev(n), *hq = kiln_malloc(n), *wq = kiln_malloc(n);
    float *rd = kc_dev(nb * 4), *rs = kc_dev(nb * 8);
    uint32_t *hd = kiln_malloc(nb * 4), *wd = kiln_malloc(nb * 4), *hs = kiln_malloc(nb * 8), *ws = kiln_malloc(nb * 8);
    kc_poison(rq, n);
    kc_poison(rd, nb * 4);
    kc_poison(rs, nb * 8);
    CU(kiln_cuda_quantize_x(rq, rd, rs, dout, adt, T, K, 0));
    kc_get(wq, rq, n);
    kc_get(wd, rd, nb * 4);
    kc_get(ws, rs, nb * 8);
    kc_get(hq, dq, n);
    kc_get(hd, dd, nb * 4);
    kc_get(hs, ds, nb * 8);
    int bad = 0;
    *zero = 0;
    for (size_t i = 0; i < n; i++) bad += hq[i] != wq[i];
    for (size_t b = 0; b < nb; b++) {
        bad += hd[b] != wd[b]; /* bits: 0xffffffff (the poison) never equals a written scale */
        bad += (hs[2 * b] != ws[2 * b]) + (hs[2 * b + 1] != ws[2 * b + 1]);
        *zero += wd[b] == 0;
    }
    CU(cudaFree(rq)); CU(cudaFree(rd)); CU(cudaFree(rs));
    kiln_free(hq); kiln_free(wq); kiln_free(hd); kiln_free(wd); kiln_free(hs); kiln_free(ws);
    return bad;
}
#endif
