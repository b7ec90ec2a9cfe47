/* test_cuda_gemm.c: y = x W^T through cuBLASLt (gemm.c) against kiln_cpu_matmul on the same
 * dtype-rounded inputs: bf16 / f16 / f32 weights, row counts 1..300, the backend's shapes
 * (fused qkv, o, fused gate|up, down, LM head; tiny and Devstral widths). Batch-invariant mode:
 * the first row's bits are the same computed alone or with 1..max_rows-1 others. Load-time
 * tuning: the kept algorithm and its products (tuned). */
#include "backend/cpu/kernels.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/sync.h"
#include "cuda_test.h"
#include "util/alloc.h"

/* a [N][K] weight of dt over host bytes, for kiln_cpu_matmul */
static kiln_tensor host_matrix(kiln_dtype dt, int N, int K, const void *data) {
    kiln_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = dt;
    t.ndim = 2;
    t.shape[0] = N;
    t.shape[1] = K;
    t.data = data;
    t.nbytes = (size_t)N * K * kc_dtsize(dt);
    return t;
}

static void one(kiln_cuda_gemm_ctx *ctx, kiln_cpu_ctx *cc, kiln_dtype dt, int N, int K, int T, int max_rows,
                unsigned long long *s) {
    size_t es = kc_dtsize(dt), wn = (size_t)N * K, xn = (size_t)T * K, yn = (size_t)T * N;
    float *w = kiln_malloc(wn * 4), *x = kiln_malloc(xn * 4), *want = kiln_malloc(yn * 4), *got = kiln_malloc(yn * 4);
    void *wh = kiln_malloc(wn * es), *xh = kiln_malloc(xn * es);
    kc_rand(w, wn, 1.0f / sqrtf((float)K), s);
    kc_rand(x, xn, 2.0f, s);
    kc_to_dt(dt, w, wh, wn);
    kc_to_dt(dt, x, xh, xn);
    kc_round_dt(dt, x, xn); /* the CPU multiplies the same rounded activations */
    kiln_tensor t = host_matrix(dt, N, K, wh);
    kiln_error err = {0};
    KT_CHECK(kiln_cpu_matmul(cc, want, x, T, &t, &err) == 0, "cpu matmul: %s", err.msg);
    kiln_cuda_gemm g;
    int rc = kiln_cuda_gemm_init(ctx, &g, N, K, dt, max_rows, &err);
    KT_CHECK(rc == 0, "gemm init %s %dx%d: %s", kc_dtname(dt), N, K, err.msg);
    if (rc) return;
    void *dw = kc_dev(wn * es), *dx = kc_dev(xn * es);
    float *dy = kc_dev(yn * 4);
    kc_put(dw, wh, wn * es);
    kc_put(dx, xh, xn * es);
    kc_poison(dy, yn * 4);
    rc = kiln_cuda_gemm_run(ctx, &g, dy, dx, dw, T, 0, &err);
    KT_CHECK(rc == 0, "gemm run: %s", err.msg);
    kc_get(got, dy, yn * 4);
    double e = kt_rel_l2(got, want, yn);
    KT_CHECK(e <= kc_tol(dt), "gemm %s N=%d K=%d T=%d: rel L2 %g", kc_dtname(dt), N, K, T, e);
    printf("gemm %-4s N=%-6d K=%-5d T=%-4d inv=%d rel L2 %.3g\n", kc_dtname(dt), N, K, T, ctx->batch_invariant, e);
    if (ctx->batch_invariant && T > 1) { /* row 0 alone must give the same bits */
        float *row = kiln_malloc((size_t)N * 4);
        kc_poison(dy, yn * 4);
        rc = kiln_cuda_gemm_run(ctx, &g, dy, dx, dw, 1, 0, &err);
        kc_get(row, dy, (size_t)N * 4);
        KT_CHECK(rc == 0 && memcmp(row, got, (size_t)N * 4) == 0,
                 "gemm %s N=%d K=%d: batch-invariant row 0 differs between T=1 and T=%d", kc_dtname(dt), N, K, T);
        kiln_free(row);
    }
    kiln_cuda_gemm_free(&g);
    CU(cudaFree(dw)); CU(cudaFree(dx)); CU(cudaFree(dy));
    kiln_free(w); kiln_free(x); kiln_free(want); kiln_free(got); kiln_free(wh); kiln_free(xh);
}

/* Load-time tuning (kiln_cuda_gemm_tune): the algorithm kept for T is the heuristic's candidate
 * the record names, the products at T and at T - 3 (which takes T's algorithm when valid for it)
 * match the CPU, and a tuned row count is never slower than the heuristic's first as measured. */
static void tuned(kiln_cuda_gemm_ctx *ctx, kiln_cpu_ctx *cc, int N, int K, int T, unsigned long long *s) {
    kiln_dtype dt = KILN_DT_BF16;
    size_t wn = (size_t)N * K, xn = (size_t)T * K, yn = (size_t)T * N;
    float *w = kiln_malloc(wn * 4), *x = kiln_malloc(xn * 4), *want = kiln_malloc(yn * 4), *got = kiln_malloc(yn * 4);
    void *wh = kiln_malloc(wn * 2), *xh = kiln_malloc(xn * 2);
    kc_rand(w, wn, 1.0f / sqrtf((float)K), s);
    kc_rand(x, xn, 2.0f, s);
    kc_to_dt(dt, w, wh, wn);
    kc_to_dt(dt, x, xh, xn);
    kc_round_dt(dt, x, xn);
    kiln_tensor t = host_matrix(dt, N, K, wh);
    kiln_error err = {0};
    KT_CHECK(kiln_cpu_matmul(cc, want, x, T, &t, &err) == 0, "cpu matmul: %s", err.msg);
    kiln_cuda_gemm g;
    KT_CHECK(kiln_cuda_gemm_init(ctx, &g, N, K, dt, T, &err) == 0, "gemm init: %s", err.msg);
    void *dw = kc_dev(wn * 2), *dx = kc_dev(xn * 2);
    float *dy = kc_dev(yn * 4);
    kc_put(dw, wh, wn * 2);
    kc_put(dx, xh, xn * 2);
    const void *ws[2] = {dw, dw};
    kiln_cuda_gemm_tuning r;
    kiln_cuda_syncs sy;
    memset(&sy, 0, sizeof sy);
    int rc = kiln_cuda_gemm_tune(ctx, &g, T, 16, dy, dx, ws, 2, 0, &sy, &r, &err);
    KT_CHECK(rc == 0, "gemm tune: %s", err.msg);
    KT_CHECK(r.candidates >= 1 && r.pick >= 0 && r.pick < r.candidates && g.have[T] == 2 && g.n_tuned == 1,
             "tune N=%d K=%d T=%d: record candidates %d pick %d, have %d", N, K, T, r.candidates, r.pick, g.have[T]);
    KT_CHECK(r.timed && r.best_s > 0.0 && r.best_s <= r.first_s, "tune N=%d K=%d T=%d: first %g s, kept %g s", N, K, T,
             r.first_s, r.best_s);
    /* the heuristic's list as the tuner saw it: the kept algorithm is the record's pick */
    cublasLtMatmulDescOpaque_t op;
    cublasLtMatrixLayoutOpaque_t la, lb, lc;
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    cublasLtMatmulDescInit(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    cublasLtMatmulDescSetAttribute(&op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    cublasLtMatmulDescSetAttribute(&op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    cublasLtMatrixLayoutInit(&la, CUDA_R_16BF, (uint64_t)K, (uint64_t)N, K);
    cublasLtMatrixLayoutInit(&lb, CUDA_R_16BF, (uint64_t)K, (uint64_t)T, K);
    cublasLtMatrixLayoutInit(&lc, CUDA_R_32F, (uint64_t)N, (uint64_t)T, N);
    cublasLtMatmulPreferenceOpaque_t pref;
    cublasLtMatmulPreferenceInit(&pref);
    uint64_t wsb = ctx->ws_bytes;
    cublasLtMatmulPreferenceSetAttribute(&pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb);
    cublasLtMatmulHeuristicResult_t res[16];
    int n = 0;
    cublasLtMatmulAlgoGetHeuristic(ctx->lt, &op, &la, &lb, &lc, &lc, &pref, 16, res, &n);
    KT_CHECK(n == r.candidates && r.pick < n && memcmp(&g.algos[T], &res[r.pick].algo, sizeof res[0].algo) == 0,
             "tune N=%d K=%d T=%d: the kept algorithm is not the heuristic's #%d of %d", N, K, T, r.pick, n);
    int rows[2] = {T, T - 3};
    for (int i = 0; i < 2; i++) {
        kc_poison(dy, yn * 4);
        rc = kiln_cuda_gemm_run(ctx, &g, dy, dx, dw, rows[i], 0, &err);
        KT_CHECK(rc == 0, "gemm run: %s", err.msg);
        kc_get(got, dy, (size_t)rows[i] * N * 4);
        double e = kt_rel_l2(got, want, (size_t)rows[i] * N);
        KT_CHECK(e <= kc_tol(dt), "tuned gemm N=%d K=%d T=%d: rel L2 %g", N, K, rows[i], e);
    }
    /* T - 3 was not timed: it takes T's algorithm where cuBLASLt accepts that for T - 3, else the
     * heuristic's own first for T - 3 */
    lb = (cublasLtMatrixLayoutOpaque_t){0};
    cublasLtMatrixLayoutInit(&lb, CUDA_R_16BF, (uint64_t)K, (uint64_t)(T - 3), K);
    cublasLtMatrixLayoutInit(&lc, CUDA_R_32F, (uint64_t)N, (uint64_t)(T - 3), N);
    cublasLtMatmulAlgoGetHeuristic(ctx->lt, &op, &la, &lb, &lc, &lc, &pref, 1, res, &n);
    KT_CHECK(g.have[T - 3] == 1 && (memcmp(&g.algos[T - 3], &g.algos[T], sizeof res[0].algo) == 0 ||
                                    (n == 1 && memcmp(&g.algos[T - 3], &res[0].algo, sizeof res[0].algo) == 0)),
             "tune N=%d K=%d: %d rows took neither %d rows' tuned algorithm nor the heuristic's first", N, K, T - 3, T);
    printf("gemm tune bf16 N=%-5d K=%-5d T=%-4d: heuristic's first %.1f us, kept #%d of %d %.1f us; %d rows %s\n", N, K,
           T, r.first_s * 1e6, r.pick, r.candidates, r.best_s * 1e6, T - 3,
           memcmp(&g.algos[T - 3], &g.algos[T], sizeof res[0].algo) == 0 ? "the same" : "the heuristic's");
    kiln_cuda_gemm_free(&g);
    CU(cudaFree(dw)); CU(cudaFree(dx)); CU(cudaFree(dy));
    kiln_free(w); kiln_free(x); kiln_free(want); kiln_free(got); kiln_free(wh); kiln_free(xh);
}

int main(void) {
    kc_require_gpu();
    unsigned long long s = kc_seed();
    kiln_cpu_ctx cc = {.isa = kiln_isa_best(), .pool = NULL};
    kiln_error err = {0};
    if (kiln_pool_create(&cc.pool, 0, &err)) { fprintf(stderr, "pool: %s\n", err.msg); return 1; }
    kiln_dtype dts[3] = {KILN_DT_F32, KILN_DT_F16, KILN_DT_BF16};
    int shapes[][3] = {{384, 256, 1}, {256, 192, 7}, {1024, 256, 64}, {256, 512, 300}, {2048, 256, 3},
                       {6144, 5120, 5}, {5120, 4096, 2}, {65536, 5120, 1}, {5120, 32768, 3}, {131072, 5120, 2}};
    for (int inv = 0; inv < 2; inv++) {
        kiln_cuda_gemm_ctx ctx;
        memset(&ctx, 0, sizeof ctx);
        if (cublasLtCreate(&ctx.lt) != CUBLAS_STATUS_SUCCESS) { fprintf(stderr, "FAIL cublasLtCreate\n"); return 1; }
        ctx.batch_invariant = inv;
        ctx.ws_bytes = (size_t)32 << 20; /* both modes: invariance comes from the fixed algorithm */
        if (ctx.ws_bytes) ctx.workspace = kc_dev(ctx.ws_bytes);
        for (int i = 0; i < 3; i++)
            for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
                if (dts[i] == KILN_DT_F32 && shapes[k][0] * (size_t)shapes[k][1] > ((size_t)64 << 20)) continue;
                one(&ctx, &cc, dts[i], shapes[k][0], shapes[k][1], shapes[k][2], 320, &s);
            }
        if (!inv) {
            tuned(&ctx, &cc, 4096, 4096, 512, &s);
            tuned(&ctx, &cc, 5120, 4096, 64, &s);
            tuned(&ctx, &cc, 2048, 8192, 256, &s);
        }
        if (ctx.workspace) CU(cudaFree(ctx.workspace));
        cublasLtDestroy(ctx.lt);
    }
    kiln_pool_destroy(cc.pool);
    return kt_done();
}
