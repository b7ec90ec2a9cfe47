/* probe.c: the GPU's two ceilings, measured once for `kiln bench` / `kiln validate` floors
 * (METHOD.md: "measure the two ceilings once on the device machine").
 *   copy bandwidth: a 1 GiB device-to-device copy, bytes read + written over the time, best of 10;
 *   bf16 GEMM rate: an 8192 x 8192 x 8192 cuBLASLt product (bf16 in, f32 accumulate) on random
 *   data, best of 10.
 * Runs outside any engine step; its waits and allocations go through sync.c like every other. */
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/sync.h"
#include "util/error.h"
#include "kiln_cuda_probe.h"

int kiln_cuda_probe_floors(double *copy_gbs, double *gemm_tflops, kiln_error *err) {
    kiln_cuda_syncs sy = {0};
    cudaStream_t st = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    void *a = NULL, *b = NULL, *c = NULL, *ws = NULL;
    cublasLtHandle_t lt = NULL;
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, lc = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    int rc = KILN_OK;
    const size_t bytes = (size_t)1 << 30, n = 8192, ws_bytes = (size_t)32 << 20;
    *copy_gbs = *gemm_tflops = 0;
#define TRY(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) { rc = kiln_cuda_error(err, e_, #call, __FILE__, __LINE__); goto done; } } while (0)
#define TRYB(call) do { if ((call) != CUBLAS_STATUS_SUCCESS) { rc = KILN_ERR(err, KILN_ERR_BACKEND, "probe: %s failed", #call); goto done; } } while (0)
    TRY(cudaStreamCreate(&st));
    TRY(cudaEventCreate(&e0));
    TRY(cudaEventCreate(&e1));
    if ((rc = kiln_cuda_malloc(&sy, &a, bytes, "probe buffer", err)) || (rc = kiln_cuda_malloc(&sy, &b, bytes, "probe buffer", err)) ||
        (rc = kiln_cuda_malloc(&sy, &c, n * n * 4, "probe buffer", err)) || (rc = kiln_cuda_malloc(&sy, &ws, ws_bytes, "probe workspace", err)))
        goto done;
    /* random-ish data (never time zeros): the dummy-weight filler */
    TRY(kiln_cuda_dummy_fill(a, KILN_DT_BF16, (int64_t)(bytes / 2), 7, 0, 8192, st));
    TRY(kiln_cuda_dummy_fill(b, KILN_DT_BF16, (int64_t)(bytes / 2), 7, 1, 8192, st));
    float best = 1e30f, ms;
    for (int i = 0; i < 13; i++) {
        TRY(cudaEventRecord(e0, st));
        TRY(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, st));
        TRY(cudaEventRecord(e1, st));
        if ((rc = kiln_cuda_event_sync(&sy, e1, err))) goto done;
        TRY(cudaEventElapsedTime(&ms, e0, e1));
        if (i >= 3 && ms < best) best = ms;
    }
    *copy_gbs = 2.0 * (double)bytes / (best * 1e-3) / 1e9;
    /* GEMM: C[n][n] f32 = A[n][n] bf16 x B[n][n] bf16 (the first 128 MiB of each buffer) */
    TRYB(cublasLtCreate(&lt));
    TRYB(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    TRYB(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, n, n, n));
    TRYB(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, n, n, n));
    TRYB(cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, n, n, n));
    TRYB(cublasLtMatmulPreferenceCreate(&pref));
    TRYB(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof ws_bytes));
    cublasLtMatmulHeuristicResult_t h;
    int found = 0;
    TRYB(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, 1, &h, &found));
    if (!found) { rc = KILN_ERR(err, KILN_ERR_BACKEND, "probe: no cuBLASLt algorithm for the 8192^3 bf16 GEMM"); goto done; }
    const float one = 1.0f, zero = 0.0f;
    best = 1e30f;
    for (int i = 0; i < 13; i++) {
        TRY(cudaEventRecord(e0, st));
        TRYB(cublasLtMatmul(lt, op, &one, a, la, b, lb, &zero, c, lc, c, lc, &h.algo, ws, ws_bytes, st));
        TRY(cudaEventRecord(e1, st));
        if ((rc = kiln_cuda_event_sync(&sy, e1, err))) goto done;
        TRY(cudaEventElapsedTime(&ms, e0, e1));
        if (i >= 3 && ms < best) best = ms;
    }
    *gemm_tflops = 2.0 * (double)n * n * n / (best * 1e-3) / 1e12;
done:
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (lc) cublasLtMatrixLayoutDestroy(lc);
    if (op) cublasLtMatmulDescDestroy(op);
    if (lt) cublasLtDestroy(lt);
    kiln_cuda_free(&sy, a, bytes);
    kiln_cuda_free(&sy, b, bytes);
    kiln_cuda_free(&sy, c, n * n * 4);
    kiln_cuda_free(&sy, ws, ws_bytes);
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    if (st) cudaStreamDestroy(st);
    return rc;
#undef TRY
#undef TRYB
}
