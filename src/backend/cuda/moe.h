/* moe.h: the mixture-of-experts FFN on the GPU (moe.cu), Mixtral's top-k routing.
 *
 * For T rows xn [T][D] (the FFN's normed input, dtype adt), E experts of hidden size F, k used per
 * row, P = T k (row, slot) pairs:
 *   route    logits[t][e] = xn[t] . router[e] (f32; xn recomputed in f32 from the residual when given);  sel[t][j] = the k largest, descending
 *            (ties: the lower expert id);  w[t][j] = softmax of the k selected logits (double,
 *            rounded once to f32): src/backend/cpu/moe.c's rule, so both backends pick the same
 *            experts wherever the logits are not within rounding of each other
 *   sort     a stable counting sort of the P pairs by expert: offs[e] .. offs[e + 1] are expert e's
 *            rows of the permuted order, pos[t k + j] the permuted row of pair (t, j), src[i]
 *            the token of permuted row i; row tiles of R (KILN_MOE_TILE_ROWS) rows per expert,
 *            toff[e] .. toff[e + 1] expert e's tiles (toff16, toff32: of 16 and 32 rows, the
 *            tensor-core GEMM's and the decode kernel's tiles)
 *   gate|up  act[i][f] = silu(xn[src[i]] . gate_e[f]) * (xn[src[i]] . up_e[f])   (adt)
 *   down     y[i][n] = act[i] . down_e[n]                                      (f32)
 *   combine  out[t][n] = sum over t's experts in id order of w[t][j] y[pos[t k + j]][n]   (f32)
 * The grouped GEMMs are one launch each: a block takes one row tile (its expert found from toff
 * on the device; blocks past the last tile exit) and a group of output columns, so the grids
 * depend only on T (sized for the worst case, ceil(P / R) + E tiles) and nothing waits on the
 * host: the whole FFN is CUDA-graph capturable. Every output element is a fixed-order f32
 * reduction over K that depends only on K, so a row's result does not depend on its neighbours
 * (I5, I6) on one path; the three paths differ in rounding, and the path is chosen by the step's
 * rows (tc), so batch-invariant mode keeps one (the decode kernel for 16-bit weights, whose bits
 * do not depend on its tile size). CUDA cores: weights read with 16-byte loads, each weight
 * vector used for up to R rows (f32 weights); decode kernel (few rows per expert): each routed
 * expert's weights streamed once per tile of 16 or 32 rows as the A operand of mma.sync, split
 * over output columns and K (fixed-order sum), written like skinny.cu; tensor-core GEMM (prefill):
 * mma.sync on fragments loaded from global memory, tiles of 16 rows.
 * Limits: E <= KILN_MOE_MAX_EXPERTS, k <= KILN_MOE_MAX_USED, D and F multiples of 8, dense
 * f32 / f16 / bf16 weights of one dtype with the activations. */
#ifndef KILN_CUDA_MOE_H
#define KILN_CUDA_MOE_H
#include <stddef.h>
#include <stdint.h>
#include <cuda_runtime_api.h>
#include "format/dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KILN_MOE_MAX_EXPERTS 256
#define KILN_MOE_MAX_USED 64
#define KILN_MOE_TILE_ROWS 8     /* rows per tile of the CUDA-core expert kernel */
#define KILN_MOE_TC_TILE_ROWS 16 /* ... of the tensor-core one */
#define KILN_MOE_TC_MIN_ROWS 64  /* the tensor-core GEMM from this many rows per expert on average */
#define KILN_MOE_SK32_MIN_ROWS 8 /* the decode kernel's tiles of 32 rows (not 16) from this many */

typedef struct kiln_cuda_moe_args {
    int T, D, F, E, K;     /* rows, model dim, expert hidden size, experts, experts per row */
    kiln_dtype dt;         /* xn, weights and act: f32, f16 or bf16 */
    int tc;                /* which expert kernel (f32 dt: always the CUDA-core one):
                            * 1: 16-bit dt: the decode kernel below KILN_MOE_TC_MIN_ROWS T k / E
                            *    rows per expert on average, the tensor-core GEMM from there (D and
                            *    F multiples of 32);
                            * 0: batch-invariant mode (the path must not depend on the batch):
                            *    16-bit dt: the decode kernel at every size;
                            * 2: the tensor-core GEMM where the shape allows it, 3: the CUDA-core
                            *    kernel, 4: the decode kernel's 32-row tiles (tests) */
    const void *xn;        /* [T][D] */
    /* routing input: rmsnorm(x_res) * norm_w recomputed in f32 when x_res is given (the residual
     * after the add, the layer's FFN norm: the CPU routes on f32 normed rows, and a bf16 xn would
     * move router logits by ~2^-9 and flip near-ties more often), else xn itself */
    const float *x_res;    /* [T][D] f32, or NULL */
    const float *norm_w;   /* [D] f32 */
    float eps;
    const void *router;    /* [E][D] */
    const void *w_gu;      /* [E][2F][D]: expert e's gate rows, then its up rows */
    const void *w_down;    /* [E][D][F] */
    float *out;            /* [T][D] f32, overwritten */
    /* scratch (kiln_cuda_moe_scratch_bytes for the largest T) */
    int32_t *idx;          /* [3 T K + 4 (E + 1)]: sel, pos, src, offs, toff, toff16, toff32 */
    float *wts;            /* [T K] */
    void *act;             /* [T K][F] dt */
    float *y;              /* [T K][D] f32 */
} kiln_cuda_moe_args;

/* bytes of idx, wts, act and y for up to max_rows rows */
void kiln_cuda_moe_scratch_bytes(int max_rows, int D, int F, int E, int K, kiln_dtype dt, size_t *idx, size_t *wts,
                                 size_t *act, size_t *y);
/* the whole FFN (route, sort, gate|up, down, combine): five launches on st, nothing waits */
cudaError_t kiln_cuda_moe_ffn(const kiln_cuda_moe_args *a, cudaStream_t st);

#ifdef __cplusplus
}
#endif
#endif
