/* gemm.c: cuBLASLt matmuls of the CUDA backend (see gemm.h). Descriptors are initialised in
 * caller-provided opaque structs (cublasLt*Init), so a GEMM allocates nothing on the host. */
#include <string.h>
#include "backend/cuda/gemm.h"
#include "backend/cuda/sync.h"
#include "util/alloc.h"
#include "util/error.h"

int kiln_cublas_error(kiln_error *err, cublasStatus_t s, const char *stmt, const char *file, int line) {
    return kiln_err_set(err, s == CUBLAS_STATUS_ALLOC_FAILED ? KILN_ERR_OOM : KILN_ERR_BACKEND, file, line,
                        "cuBLASLt %s (%d) in %s", cublasGetStatusString(s), (int)s, stmt);
}

static cudaDataType cuda_type(kiln_dtype dt) {
    return dt == KILN_DT_F32 ? CUDA_R_32F : dt == KILN_DT_F16 ? CUDA_R_16F : dt == KILN_DT_F8_E4M3 ? CUDA_R_8F_E4M3 : CUDA_R_16BF;
}

typedef struct gemm_desc {
    cublasLtMatmulDescOpaque_t op;
    cublasLtMatrixLayoutOpaque_t a, b, c;
} gemm_desc;

/* FP8 (wdt f8_e4m3, x the activation codes): the plain product of the codes, f32 (or bf16) out (cuBLASLt's
 * outer-vector scales are refused on sm_90 by this cuBLAS: "unsupported value", H200 2026-12-04);
 * the caller applies sa[t] sw[n] after (kiln_cuda_fp8_scale_rows). */
static int desc_init(gemm_desc *d, const kiln_cuda_gemm *g, int T, kiln_error *err) {
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    cudaDataType ty = cuda_type(g->wdt);
    KILN_CUBLAS_TRY(err, cublasLtMatmulDescInit(&d->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    KILN_CUBLAS_TRY(err, cublasLtMatmulDescSetAttribute(&d->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    KILN_CUBLAS_TRY(err, cublasLtMatmulDescSetAttribute(&d->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    KILN_CUBLAS_TRY(err, cublasLtMatrixLayoutInit(&d->a, ty, (uint64_t)g->K, (uint64_t)g->N, g->K));
    KILN_CUBLAS_TRY(err, cublasLtMatrixLayoutInit(&d->b, ty, (uint64_t)g->K, (uint64_t)T, g->K));
    KILN_CUBLAS_TRY(err, cublasLtMatrixLayoutInit(&d->c, cuda_type(g->ydt), (uint64_t)g->N, (uint64_t)T, g->N));
    return KILN_OK;
}

/* Up to cap heuristic results for T rows with the given workspace and reduction mask. */
static int heuristic(const kiln_cuda_gemm_ctx *ctx, const kiln_cuda_gemm *g, int T, size_t ws, int no_split,
                     cublasLtMatmulHeuristicResult_t *res, int cap, int *n, kiln_error *err) {
    gemm_desc d;
    int rc = desc_init(&d, g, T, err);
    if (rc) return rc;
    cublasLtMatmulPreferenceOpaque_t pref;
    KILN_CUBLAS_TRY(err, cublasLtMatmulPreferenceInit(&pref));
    uint64_t wsb = ws;
    KILN_CUBLAS_TRY(err, cublasLtMatmulPreferenceSetAttribute(&pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb,
                                                              sizeof wsb));
    if (no_split) {
        uint32_t mask = CUBLASLT_REDUCTION_SCHEME_NONE;
        KILN_CUBLAS_TRY(err, cublasLtMatmulPreferenceSetAttribute(&pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                                                  &mask, sizeof mask));
    }
    *n = 0;
    cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(ctx->lt, &d.op, &d.a, &d.b, &d.c, &d.c, &pref, cap, res, n);
    if (s != CUBLAS_STATUS_SUCCESS || *n <= 0)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED,
                        "cuBLASLt: no algorithm for a %s GEMM of %d x %d (N x K) with %d rows (%s)",
                        kiln_dtype_name(g->wdt), g->N, g->K, T, cublasGetStatusString(s));
    return KILN_OK;
}

/* algorithm a runs T rows of g within ws bytes of workspace */
static int algo_ok(const kiln_cuda_gemm_ctx *ctx, const kiln_cuda_gemm *g, const cublasLtMatmulAlgo_t *a, int T,
                   size_t ws) {
    gemm_desc d;
    kiln_error e2;
    if (desc_init(&d, g, T, &e2)) return 0;
    cublasLtMatmulHeuristicResult_t r;
    if (cublasLtMatmulAlgoCheck(ctx->lt, &d.op, &d.a, &d.b, &d.c, &d.c, a, &r) != CUBLAS_STATUS_SUCCESS) return 0;
    return r.workspaceSize <= ws;
}

/* ... and without split-K (batch-invariant mode) */
static int algo_valid(const kiln_cuda_gemm_ctx *ctx, const kiln_cuda_gemm *g, const cublasLtMatmulAlgo_t *a, int T,
                      size_t ws) {
    if (!algo_ok(ctx, g, a, T, ws)) return 0;
    uint32_t splitk = 1;
    size_t got = 0;
    if (cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof splitk, &got) ==
            CUBLAS_STATUS_SUCCESS &&
        splitk > 1)
        return 0;
    return 1;
}

/* The split-K-free algorithm valid for 1..max_rows rows, chosen by the heuristic at max_rows. */
static int find_fixed(const kiln_cuda_gemm_ctx *ctx, kiln_cuda_gemm *g, int max_rows, kiln_error *err) {
    kiln_dtype wdt = g->wdt;
    int N = g->N, K = g->K;
    /* one algorithm for every row count: no split-K and no reduction scheme, so a row's
     * reduction order never depends on the batch. Ask the heuristic at several row counts,
     * first without workspace, then with (large-N shapes such as a 131072-row LM head
     * have no workspace-free kernel). */
    cublasLtMatmulHeuristicResult_t res[16];
    size_t wss[2] = {0, ctx->ws_bytes};
    int qs[3] = {max_rows, 1, max_rows > 64 ? 64 : max_rows};
    for (int w = 0; w < 2 && !g->has_fixed; w++)
        for (int q = 0; q < 3 && !g->has_fixed; q++) {
            int n = 0;
            kiln_error e2;
            if (heuristic(ctx, g, qs[q], wss[w], 1, res, 16, &n, &e2)) continue;
            for (int i = 0; i < n && !g->has_fixed; i++)
                if (algo_valid(ctx, g, &res[i].algo, 1, wss[w]) && algo_valid(ctx, g, &res[i].algo, max_rows, wss[w])) {
                    g->fixed = res[i].algo;
                    g->has_fixed = 1;
                }
        }
    /* none offered: take the heuristic's algorithms for the largest row count and force
     * split-K off (SPLITK_NUM 1, no reduction scheme) on them */
    for (int w = 0; w < 2 && !g->has_fixed; w++) {
        int n = 0;
        kiln_error e2;
        if (heuristic(ctx, g, max_rows, wss[w], 0, res, 16, &n, &e2)) continue;
        for (int i = 0; i < n && !g->has_fixed; i++) {
            cublasLtMatmulAlgo_t a = res[i].algo;
            uint32_t one = 1, none = CUBLASLT_REDUCTION_SCHEME_NONE;
            if (cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &one, sizeof one) !=
                    CUBLAS_STATUS_SUCCESS ||
                cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &none, sizeof none) !=
                    CUBLAS_STATUS_SUCCESS)
                continue;
            if (algo_valid(ctx, g, &a, 1, wss[w]) && algo_valid(ctx, g, &a, max_rows, wss[w])) {
                g->fixed = a;
                g->has_fixed = 1;
            }
        }
    }
    if (!g->has_fixed)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED,
                        "cuBLASLt: no split-K-free algorithm valid for 1..%d rows of a %s %d x %d GEMM "
                        "(KILN_BATCH_INVARIANT=1)", max_rows, kiln_dtype_name(wdt), N, K);
    return KILN_OK;
}

int kiln_cuda_gemm_init(const kiln_cuda_gemm_ctx *ctx, kiln_cuda_gemm *g, int N, int K, kiln_dtype wdt, int max_rows,
                        kiln_error *err) {
    return kiln_cuda_gemm_init_out(ctx, g, N, K, wdt, KILN_DT_F32, max_rows, err);
}

int kiln_cuda_gemm_init_out(const kiln_cuda_gemm_ctx *ctx, kiln_cuda_gemm *g, int N, int K, kiln_dtype wdt,
                            kiln_dtype ydt, int max_rows, kiln_error *err) {
    memset(g, 0, sizeof *g);
    if (wdt != KILN_DT_F32 && wdt != KILN_DT_F16 && wdt != KILN_DT_BF16 && wdt != KILN_DT_F8_E4M3)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cuda: no GEMM for %s weights", kiln_dtype_name(wdt));
    /* FP8: cuBLASLt writes the codes' sums in f32 or bf16 (gate|up, whose 2F-wide output SwiGLU
     * reads back: half the bytes in prefill) */
    if (ydt != KILN_DT_F32 && ydt != wdt && !(wdt == KILN_DT_F8_E4M3 && ydt == KILN_DT_BF16))
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cuda: GEMM output %s for %s weights", kiln_dtype_name(ydt),
                        kiln_dtype_name(wdt));
    g->ydt = ydt;
    g->N = N;
    g->K = K;
    g->wdt = wdt;
    g->max_rows = max_rows;
    if (ctx->batch_invariant) return find_fixed(ctx, g, g->max_rows, err);
    g->algos = kiln_calloc((size_t)max_rows + 1, sizeof *g->algos);
    g->have = kiln_calloc((size_t)max_rows + 1, 1);
    if (!g->algos || !g->have) return KILN_ERR(err, KILN_ERR_OOM, "cuda: out of memory for the GEMM algorithm table");
    /* the two extremes now, so that an unsupported shape is refused at load (I3) */
    cublasLtMatmulHeuristicResult_t r;
    int n = 0, rows[2] = {1, max_rows};
    for (int i = 0; i < 2; i++) {
        int rc = heuristic(ctx, g, rows[i], ctx->ws_bytes, 0, &r, 1, &n, err);
        if (rc) return rc;
        g->algos[rows[i]] = r.algo;
        g->have[rows[i]] = 1;
    }
    return KILN_OK;
}

void kiln_cuda_gemm_free(kiln_cuda_gemm *g) {
    kiln_free(g->algos);
    kiln_free(g->have);
    g->algos = NULL;
    g->have = NULL;
}

/* The algorithm for T rows in normal mode, cached in g->algos[T]: a tuned one (have == 2) when
 * kiln_cuda_gemm_tune timed T, else the one tuned for the nearest tuned row count in [T, 2T]
 * when it is valid for T (so a 1,000-row prefill step takes what was measured at 1,024), else
 * the heuristic's first. Host work once per T. */
static int algo_for(const kiln_cuda_gemm_ctx *ctx, kiln_cuda_gemm *g, int T, kiln_error *err) {
    if (g->have[T]) return KILN_OK;
    if (g->n_tuned) {
        int hi = 2 * T < g->max_rows ? 2 * T : g->max_rows;
        for (int u = T + 1; u <= hi; u++)
            if (g->have[u] == 2) {
                if (algo_ok(ctx, g, &g->algos[u], T, ctx->ws_bytes)) {
                    g->algos[T] = g->algos[u];
                    g->have[T] = 1;
                    return KILN_OK;
                }
                break;
            }
    }
    cublasLtMatmulHeuristicResult_t r;
    int n = 0;
    int rc = heuristic(ctx, g, T, ctx->ws_bytes, 0, &r, 1, &n, err);
    if (rc) return rc;
    g->algos[T] = r.algo;
    g->have[T] = 1;
    return KILN_OK;
}

static int enqueue(const kiln_cuda_gemm_ctx *ctx, const kiln_cuda_gemm *g, const cublasLtMatmulAlgo_t *algo, void *y,
                   const void *x, const void *w, int T, cudaStream_t st, kiln_error *err) {
    gemm_desc d;
    int rc = desc_init(&d, g, T, err);
    if (rc) return rc;
    const float alpha = 1.0f, beta = 0.0f;
    KILN_CUBLAS_TRY(err, cublasLtMatmul(ctx->lt, &d.op, &alpha, w, &d.a, x, &d.b, &beta, y, &d.c, y, &d.c, algo,
                                        ctx->workspace, ctx->ws_bytes, st));
    return KILN_OK;
}

int kiln_cuda_gemm_run(const kiln_cuda_gemm_ctx *ctx, kiln_cuda_gemm *g, void *y, const void *x, const void *w, int T,
                       cudaStream_t st, kiln_error *err) {
    if (T <= 0) return KILN_OK;
    if (T > g->max_rows)
        return KILN_ERR(err, KILN_ERR_RANGE, "cuda GEMM: %d rows beyond the %d it was sized for", T, g->max_rows);
    const cublasLtMatmulAlgo_t *algo;
    if (ctx->batch_invariant || T <= g->fixed_upto) {
        algo = &g->fixed;
    } else {
        int rc = algo_for(ctx, g, T, err);
        if (rc) return rc;
        algo = &g->algos[T];
    }
    return enqueue(ctx, g, algo, y, x, w, T, st, err);
}

/* Seconds of one pass (a GEMM on each of the nw weights) of algorithm a, reps passes timed
 * after one untimed pass; < 0 when a launch fails. */
static double time_passes(const kiln_cuda_gemm_ctx *ctx, const kiln_cuda_gemm *g, const cublasLtMatmulAlgo_t *a,
                          void *y, const void *x, const void *const *w, int nw, int T, int reps, cudaStream_t st,
                          kiln_cuda_syncs *sy, cudaEvent_t ev0, cudaEvent_t ev1) {
    kiln_error e2;
    for (int i = 0; i < nw; i++)
        if (enqueue(ctx, g, a, y, x, w[i], T, st, &e2)) return -1.0;
    if (cudaEventRecord(ev0, st) != cudaSuccess) return -1.0;
    for (int r = 0; r < reps; r++)
        for (int i = 0; i < nw; i++)
            if (enqueue(ctx, g, a, y, x, w[i], T, st, &e2)) return -1.0;
    float ms = 0.0f;
    if (cudaEventRecord(ev1, st) != cudaSuccess || kiln_cuda_event_sync(sy, ev1, &e2) != KILN_OK ||
        cudaEventElapsedTime(&ms, ev0, ev1) != cudaSuccess)
        return -1.0;
    return ms * 1e-3 / reps;
}

int kiln_cuda_gemm_tune(const kiln_cuda_gemm_ctx *ctx, kiln_cuda_gemm *g, int T, int cands, void *y, const void *x,
                        const void *const *w, int nw, cudaStream_t st, kiln_cuda_syncs *sy, kiln_cuda_gemm_tuning *out,
                        kiln_error *err) {
    memset(out, 0, sizeof *out);
    if (ctx->batch_invariant || T <= g->fixed_upto || T > g->max_rows || T <= 0 || nw <= 0 || cands < 1) return KILN_OK;
    cublasLtMatmulHeuristicResult_t res[KILN_GEMM_TUNE_MAX];
    if (cands > KILN_GEMM_TUNE_MAX) cands = KILN_GEMM_TUNE_MAX;
    int n = 0, rc = heuristic(ctx, g, T, ctx->ws_bytes, 0, res, cands, &n, err);
    if (rc) return rc;
    cudaEvent_t ev[2];
    if (cudaEventCreate(&ev[0]) != cudaSuccess) return KILN_ERR(err, KILN_ERR_BACKEND, "cuda GEMM tuning: cudaEventCreate failed");
    if (cudaEventCreate(&ev[1]) != cudaSuccess) {
        cudaEventDestroy(ev[0]);
        return KILN_ERR(err, KILN_ERR_BACKEND, "cuda GEMM tuning: cudaEventCreate failed");
    }
    /* passes enough for ~0.3 ms a measurement (at most 16), sized on the heuristic's first */
    int reps = 1;
    double t0 = time_passes(ctx, g, &res[0].algo, y, x, w, nw, T, 1, st, sy, ev[0], ev[1]);
    if (t0 > 0.0 && t0 < 0.3e-3) reps = (int)(0.3e-3 / t0) + 1;
    if (reps > 16) reps = 16;
    double best[KILN_GEMM_TUNE_MAX];
    for (int i = 0; i < n; i++) best[i] = -1.0;
    if (t0 > 0.0 && t0 / nw >= KILN_GEMM_TUNE_MIN_S) /* below, launches dominate: nothing to gain */
        for (int round = 0; round < 2; round++) /* interleaved twice: the minimum of each */
            for (int i = 0; i < n; i++) {
                if (round && best[i] < 0.0) continue;
                double t = time_passes(ctx, g, &res[i].algo, y, x, w, nw, T, reps, st, sy, ev[0], ev[1]);
                if (t > 0.0 && (best[i] < 0.0 || t < best[i])) best[i] = t;
            }
    cudaEventDestroy(ev[0]);
    cudaEventDestroy(ev[1]);
    cudaGetLastError(); /* a candidate that failed to launch leaves nothing behind */
    int pick = 0;
    for (int i = 1; i < n; i++)
        if (best[i] > 0.0 && (best[pick] < 0.0 || best[i] < best[pick])) pick = i;
    /* the heuristic's first unless another is clearly faster: a choice that flips between runs
     * on noise would change bits between processes for nothing */
    if (pick && best[0] > 0.0 && best[pick] > best[0] * (1.0 - KILN_GEMM_TUNE_MARGIN)) pick = 0;
    out->candidates = n;
    out->pick = pick;
    out->first_s = best[0] > 0.0 ? best[0] / nw : t0 / nw;
    out->best_s = best[pick] > 0.0 ? best[pick] / nw : out->first_s;
    out->timed = best[0] > 0.0;
    g->algos[T] = res[pick].algo;
    g->have[T] = 2;
    g->n_tuned++;
    return KILN_OK;
}

int kiln_cuda_gemm_fixed_upto(const kiln_cuda_gemm_ctx *ctx, kiln_cuda_gemm *g, int rows, kiln_error *err) {
    if (ctx->batch_invariant || rows <= 0) return KILN_OK;
    if (rows > g->max_rows) rows = g->max_rows;
    if (!g->has_fixed) {
        int rc = find_fixed(ctx, g, rows, err);
        if (rc) return rc;
    }
    g->fixed_upto = rows;
    return KILN_OK;
}
