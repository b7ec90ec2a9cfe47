/* gemm.h: y = x W^T through cuBLASLt, f32 accumulation, one object per weight shape.
 *
 *   W: [N][K] row-major (PyTorch layout) of dtype wdt (bf16, f16 or f32; or f8_e4m3 codes with x
 *   e4m3 codes too: y = the f32 sums of the codes' products, unscaled, ydt f32);
 *   x: [T][K] of the same dtype;  y: [T][N] f32 (or ydt, see kiln_cuda_gemm_init_out).
 * In cuBLAS's column-major terms: y^T (N x T, ld N) = op_T(W stored K x N, ld K) * x^T (K x T).
 * Compute type CUBLAS_COMPUTE_32F (f32 weights: true f32, no TF32).
 *
 * Algorithm choice: normally the heuristic's first choice for each row count T, with a 32 MiB
 * workspace, cached per T in a table allocated at create (the first step with a new T asks the
 * heuristic on the host; no device work, no waits), or the fastest of its first few measured
 * at load for the row counts steps use (kiln_cuda_gemm_tune, kiln_cuda_options.gemm_tune). Batch-invariant mode (KILN_BATCH_INVARIANT=1):
 * one algorithm per shape, chosen at create with workspace 0 and reduction scheme NONE (no
 * split-K), checked valid for T = 1 and T = max_rows, used for every T, so a row's bits do not
 * depend on the batch. */
#ifndef KILN_CUDA_GEMM_H
#define KILN_CUDA_GEMM_H
#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include "kiln.h"
#include "format/dtype.h"

typedef struct kiln_cuda_gemm_ctx {
    cublasLtHandle_t lt;
    void *workspace; /* device, ws_bytes (0 in batch-invariant mode) */
    size_t ws_bytes;
    int batch_invariant;
} kiln_cuda_gemm_ctx;

typedef struct kiln_cuda_gemm {
    int N, K, max_rows;
    kiln_dtype wdt;
    kiln_dtype ydt; /* output dtype: f32 (default) or the weights' 16-bit type */
    cublasLtMatmulAlgo_t *algos; /* [max_rows + 1], filled lazily (normal mode) */
    unsigned char *have;         /* [max_rows + 1] */
    cublasLtMatmulAlgo_t fixed;  /* batch-invariant mode */
    int has_fixed;
    int fixed_upto;              /* normal mode: row counts <= this use `fixed` too */
    int n_tuned;                 /* row counts kiln_cuda_gemm_tune timed (have[T] == 2) */
} kiln_cuda_gemm;

/* What kiln_cuda_gemm_tune measured for one row count (seconds a GEMM). */
typedef struct kiln_cuda_gemm_tuning {
    int candidates; /* the heuristic's algorithms timed */
    int pick;       /* the one kept: its rank in the heuristic's list (0: the first) */
    int timed;      /* 0: too short to time (launch-bound), the first kept */
    double first_s, best_s;
} kiln_cuda_gemm_tuning;

#define KILN_GEMM_TUNE_MAX 16        /* candidates at most */
#define KILN_GEMM_TUNE_MARGIN 0.03   /* another algorithm replaces the first only when this much faster */
#define KILN_GEMM_TUNE_MIN_S 8e-6    /* GEMMs shorter than this are not tuned (launch-bound) */

/* A cuBLAS status as a kiln error. */
int kiln_cublas_error(kiln_error *err, cublasStatus_t s, const char *stmt, const char *file, int line);
#define KILN_CUBLAS_TRY(err, call)                                                                 \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS) return kiln_cublas_error((err), s_, #call, __FILE__, __LINE__); \
    } while (0)

int kiln_cuda_gemm_init(const kiln_cuda_gemm_ctx *ctx, kiln_cuda_gemm *g, int N, int K, kiln_dtype wdt, int max_rows,
                        kiln_error *err);
/* the same with output dtype ydt (f32, or wdt when wdt is 16-bit: y rounded once from the f32
 * accumulator) */
int kiln_cuda_gemm_init_out(const kiln_cuda_gemm_ctx *ctx, kiln_cuda_gemm *g, int N, int K, kiln_dtype wdt,
                            kiln_dtype ydt, int max_rows, kiln_error *err);
void kiln_cuda_gemm_free(kiln_cuda_gemm *g);
/* Normal mode: use the batch-invariant mode's split-K-free algorithm for row counts <= rows
 * (H100, Devstral down projection N 5120 x K 32768 at 1..16 rows: 114-118 us against 124-127 us
 * for the heuristic's split-K first choice). */
int kiln_cuda_gemm_fixed_upto(const kiln_cuda_gemm_ctx *ctx, kiln_cuda_gemm *g, int rows, kiln_error *err);
/* Normal mode, load time: time the heuristic's first cands algorithms for T rows (two interleaved
 * rounds, each a pass of one GEMM on each of the nw weights w[] so that L2 holds none of them,
 * as a step's layers run) and keep the fastest for T (and for row counts in [T/2, T) not tuned
 * themselves). x: [T][K] and y: [T][N] device scratch of g's dtypes. Waits for the stream through
 * sy's counted wrapper (sync.h: not for use inside a step or a capture). A no-op in batch-invariant mode and for T <= fixed_upto. */
struct kiln_cuda_syncs;
int kiln_cuda_gemm_tune(const kiln_cuda_gemm_ctx *ctx, kiln_cuda_gemm *g, int T, int cands, void *y, const void *x,
                        const void *const *w, int nw, cudaStream_t st, struct kiln_cuda_syncs *sy,
                        kiln_cuda_gemm_tuning *out, kiln_error *err);
/* Enqueue y = x W^T for T rows (1 <= T <= max_rows) on st. */
int kiln_cuda_gemm_run(const kiln_cuda_gemm_ctx *ctx, kiln_cuda_gemm *g, void *y, const void *x, const void *w, int T,
                       cudaStream_t st, kiln_error *err);

#endif
