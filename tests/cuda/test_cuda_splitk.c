/* test_cuda_splitk.c: kiln_cuda_gemm_splitk (skinny_splitk.cu: stream-K split of the W-staged
 * tensor-core GEMM), y[t][n] = sum_k x[t][k] W[n][k] for T <= 16 rows, against a double-precision
 * CPU sum over the same bf16 / f16-rounded inputs (gemm_harness.h):
 *   - bf16: the Devstral narrow shapes down 5120 x 32768, qkv 6144 x 5120, o 5120 x 4096; odd
 *     shapes N in {8, 129, 1000} x K in {64 (one k-tile: every tile whole in one CTA), 1024},
 *     129 x 4160 and 1000 x 4160 (65 k-tiles: tiles split over many CTAs, ragged segments),
 *     40000 x 512 (more tiles than CTAs); f16: 5120 x 4096, 1000 x 4160, 8 x 64;
 *   - accuracy for every variant (0..4) at T = 16: relative L2 <= 1e-5 over the 16 x N block and
 *     every element within the first-order bound (4 truncating mmas per 64-k chain, then at most
 *     K / 64 + 1 f32 adds: chain and segment sums);
 *   - y poisoned (NaN) before every call: no NaN may come back (every element of rows < T
 *     written), rows t >= T stay untouched; the workspace is poisoned once before the first call
 *     (its contents need no initialisation);
 *   - bits: for each variant, rows t < T of every T = 1..16 identical to that variant's T = 16
 *     run (both the T <= 8 and T > 8 kernels; segment boundaries never depend on T); two T = 16
 *     calls identical (determinism, counters reset); variants 1 and 2 (same grid, prefetch hint
 *     only) identical; row t alone (T = 1 on x + t K) identical to row t of T = 16;
 *   - a CUDA graph of 3 calls, replayed twice: every call identical to the plain run (the
 *     counters come back to zero inside the graph);
 *   - the counters are all zero after the calls;
 *   - shapes and pointers it does not take (K % 64 != 0 such as 1032, T 0 / 17, bad dtype,
 *     misalignment, NULL workspace or counters, variant 5) return cudaErrorInvalidValue and
 *     write nothing.
 * Timings: KILN_GEMV_BENCH=1 in test_cuda_gemv.c ("splitk" column). */
#include "backend/cuda/cuda_ops.h"
#include "gemm_harness.h"

#define MR KILN_SPLITK_MAX_ROWS
#define NVAR 5 /* variants 0..4 */

/* the workspace and counters of one shape (counters zeroed once, as the caller must) */
typedef struct sk_ws {
    float *ws;
    int *counters;
    int nc;
} sk_ws;
static void sk_ws_init(sk_ws *s, int N, int K) {
    size_t wb = kiln_cuda_gemm_splitk_ws_bytes(N, K);
    s->nc = kiln_cuda_gemm_splitk_counters(N);
    KT_CHECK(wb > 0 && s->nc > 0, "splitk N=%d K=%d: ws %zu bytes, %d counters", N, K, wb, s->nc);
    s->ws = kc_dev(wb);
    s->counters = kc_dev((size_t)s->nc * sizeof(int));
    kc_poison(s->ws, wb); /* NaN: a partial read before it is written would show */
    CU(cudaMemset(s->counters, 0, (size_t)s->nc * sizeof(int)));
}
static void sk_ws_free(sk_ws *s) {
    CU(cudaFree(s->ws));
    CU(cudaFree(s->counters));
}
static int counters_nonzero(const sk_ws *s) {
    int *c = kiln_malloc((size_t)s->nc * sizeof(int)), bad = 0;
    kc_get(c, s->counters, (size_t)s->nc * sizeof(int));
    for (int i = 0; i < s->nc; i++) bad += c[i] != 0;
    kiln_free(c);
    return bad;
}

static void one(kiln_dtype dt, int N, int K, unsigned long long *s) {
    size_t yn = (size_t)MR * N;
    float *ref[NVAR], *got = kiln_malloc(yn * 4);
    kg_problem pb;
    kg_problem_init(&pb, dt, MR, N, K, s);
    sk_ws sw;
    sk_ws_init(&sw, N, K);
    const char *nm = kiln_dtype_name(dt);
    cudaError_t rc;

    /* T = 16 for every variant: accuracy; a second call gives the same bits */
    for (int v = 0; v < NVAR; v++) {
        ref[v] = kiln_malloc(yn * 4);
        kc_poison(pb.dy, yn * 4);
        rc = kiln_cuda_gemm_splitk_ex(pb.dy, pb.dx, pb.dw, dt, MR, N, K, sw.ws, sw.counters, v, 0);
        KT_CHECK(rc == cudaSuccess, "splitk %s N=%d K=%d T=16 v=%d launch: %s", nm, N, K, v, cudaGetErrorString(rc));
        kc_get(ref[v], pb.dy, yn * 4);
        int nan = 0, over = 0;
        double e = kg_check(&pb, ref[v], K / 64 + 1, &nan, &over);
        KT_CHECK(nan == 0, "splitk %s N=%d K=%d T=16 v=%d: %d NaN (unwritten) outputs", nm, N, K, v, nan);
        KT_CHECK(e <= 1e-5, "splitk %s N=%d K=%d T=16 v=%d: rel L2 %g", nm, N, K, v, e);
        KT_CHECK(over == 0, "splitk %s N=%d K=%d T=16 v=%d: %d elements beyond the error bound", nm, N, K, v, over);
        if (v == 0) printf("splitk %-4s N=%-6d K=%-5d rel L2 %.3g\n", nm, N, K, e);

        kc_poison(pb.dy, yn * 4);
        rc = kiln_cuda_gemm_splitk_ex(pb.dy, pb.dx, pb.dw, dt, MR, N, K, sw.ws, sw.counters, v, 0);
        KT_CHECK(rc == cudaSuccess, "splitk %s N=%d K=%d T=16 v=%d second launch", nm, N, K, v);
        kc_get(got, pb.dy, yn * 4);
        KT_CHECK(memcmp(got, ref[v], yn * 4) == 0, "splitk %s N=%d K=%d v=%d: two T=16 calls differ", nm, N, K, v);
    }
    KT_CHECK(memcmp(ref[0], ref[2], yn * 4) == 0, "splitk %s N=%d K=%d: default differs from variant 2", nm, N, K);
    KT_CHECK(memcmp(ref[1], ref[2], yn * 4) == 0, "splitk %s N=%d K=%d: variants 1 and 2 (same grid) differ", nm, N,
             K);

    /* every T and variant: rows < T bit-identical to the variant's T = 16 run, rows >= T untouched */
    for (int T = 1; T <= MR; T++)
        for (int v = 0; v < NVAR; v++) {
            kc_poison(pb.dy, yn * 4);
            rc = kiln_cuda_gemm_splitk_ex(pb.dy, pb.dx, pb.dw, dt, T, N, K, sw.ws, sw.counters, v, 0);
            KT_CHECK(rc == cudaSuccess, "splitk %s N=%d K=%d T=%d v=%d launch: %s", nm, N, K, T, v,
                     cudaGetErrorString(rc));
            kc_get(got, pb.dy, yn * 4);
            int diff = memcmp(got, ref[v], (size_t)T * N * 4) != 0, touched = 0;
            for (size_t i = (size_t)T * N; i < yn; i++) touched += kg_f32_bits(got[i]) != KG_POISON;
            KT_CHECK(!diff, "splitk %s N=%d K=%d: T=%d v=%d rows differ from the T=16 run", nm, N, K, T, v);
            KT_CHECK(!touched, "splitk %s N=%d K=%d: T=%d v=%d wrote %d elements of rows >= T", nm, N, K, T, v,
                     touched);
        }
    /* row t alone (T = 1 on x + t K) */
    for (int t = 0; t < MR; t++) {
        kc_poison(pb.dy, yn * 4);
        KT_CHECK(kiln_cuda_gemm_splitk(pb.dy, (const uint16_t *)pb.dx + (size_t)t * K, pb.dw, dt, 1, N, K, sw.ws,
                                       sw.counters, 0) == cudaSuccess,
                 "splitk %s row %d alone launch", nm, t);
        kc_get(got, pb.dy, yn * 4);
        int touched = 0;
        for (size_t i = (size_t)N; i < yn; i++) touched += kg_f32_bits(got[i]) != KG_POISON;
        KT_CHECK(memcmp(got, ref[0] + (size_t)t * N, (size_t)N * 4) == 0,
                 "splitk %s N=%d K=%d: row %d alone differs from row %d of T=16", nm, N, K, t, t);
        KT_CHECK(!touched, "splitk %s N=%d K=%d: row %d alone wrote %d elements past row 0", nm, N, K, t, touched);
    }

    /* a CUDA graph of 3 calls (outputs y0, y1, y2), replayed twice */
    {
        cudaStream_t st;
        cudaGraph_t g;
        cudaGraphExec_t ge;
        float *dy3 = kc_dev(3 * yn * 4);
        CU(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
        CU(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
        for (int c = 0; c < 3; c++)
            rc = kiln_cuda_gemm_splitk(dy3 + c * yn, pb.dx, pb.dw, dt, MR, N, K, sw.ws, sw.counters, st);
        CU(cudaStreamEndCapture(st, &g));
        KT_CHECK(rc == cudaSuccess, "splitk %s N=%d K=%d: launch in capture: %s", nm, N, K, cudaGetErrorString(rc));
        CU(cudaGraphInstantiate(&ge, g, 0));
        for (int r = 0; r < 2; r++) {
            kc_poison(dy3, 3 * yn * 4);
            CU(cudaGraphLaunch(ge, st));
            CU(cudaStreamSynchronize(st));
            for (int c = 0; c < 3; c++) {
                kc_get(got, dy3 + c * yn, yn * 4);
                KT_CHECK(memcmp(got, ref[0], yn * 4) == 0, "splitk %s N=%d K=%d: graph replay %d call %d differs", nm,
                         N, K, r, c);
            }
        }
        CU(cudaGraphExecDestroy(ge));
        CU(cudaGraphDestroy(g));
        CU(cudaStreamDestroy(st));
        CU(cudaFree(dy3));
    }
    int nz = counters_nonzero(&sw);
    KT_CHECK(nz == 0, "splitk %s N=%d K=%d: %d of %d counters nonzero after the calls", nm, N, K, nz, sw.nc);

    sk_ws_free(&sw);
    kg_problem_free(&pb);
    for (int v = 0; v < NVAR; v++) kiln_free(ref[v]);
    kiln_free(got);
}

static void invalid(void) {
    void *dw = kc_dev(64 * 1088 * 2), *dx = kc_dev(MR * 1088 * 2);
    float *dy = kc_dev(MR * 64 * 4);
    sk_ws sw;
    sk_ws_init(&sw, 64, 1024);
    kc_poison(dy, MR * 64 * 4);
    const cudaError_t bad = cudaErrorInvalidValue;
    const kiln_dtype b16 = KILN_DT_BF16;
    float *ws = sw.ws;
    int *cn = sw.counters;
    KT_CHECK(kiln_cuda_gemm_splitk(dy, dx, dw, b16, 0, 64, 64, ws, cn, 0) == bad, "T=0 accepted");
    KT_CHECK(kiln_cuda_gemm_splitk(dy, dx, dw, b16, MR + 1, 64, 64, ws, cn, 0) == bad, "T=17 accepted");
    KT_CHECK(kiln_cuda_gemm_splitk(dy, dx, dw, b16, 1, 0, 64, ws, cn, 0) == bad, "N=0 accepted");
    KT_CHECK(kiln_cuda_gemm_splitk(dy, dx, dw, b16, 1, -8, 64, ws, cn, 0) == bad, "N=-8 accepted");
    KT_CHECK(kiln_cuda_gemm_splitk(dy, dx, dw, b16, 1, 64, 0, ws, cn, 0) == bad, "K=0 accepted");
    KT_CHECK(kiln_cuda_gemm_splitk(dy, dx, dw, b16, 1, 64, 32, ws, cn, 0) == bad, "K=32 accepted");
    KT_CHECK(kiln_cuda_gemm_splitk(dy, dx, dw, b16, 1, 64, 96, ws, cn, 0) == bad, "K=96 (not a multiple of 64) accepted");
    KT_CHECK(kiln_cuda_gemm_splitk(dy, dx, dw, b16, 1, 64, 1032, ws, cn, 0) == bad,
             "K=1032 (not a multiple of 64) accepted");
    KT_CHECK(kiln_cuda_gemm_splitk(dy, dx, dw, KILN_DT_F32, 1, 32, 64, ws, cn, 0) == bad, "f32 weights accepted");
    KT_CHECK(kiln_cuda_gemm_splitk(dy, dx, dw, KILN_DT_Q8_0, 1, 32, 64, ws, cn, 0) == bad, "q8_0 weights accepted");
    KT_CHECK(kiln_cuda_gemm_splitk(dy, (const uint16_t *)dx + 1, dw, b16, 1, 64, 64, ws, cn, 0) == bad,
             "misaligned x accepted");
    KT_CHECK(kiln_cuda_gemm_splitk(dy, dx, (const uint16_t *)dw + 4, b16, 1, 63, 64, ws, cn, 0) == bad,
             "misaligned W accepted");
    KT_CHECK(kiln_cuda_gemm_splitk((float *)((char *)dy + 2), dx, dw, b16, 1, 64, 64, ws, cn, 0) == bad,
             "misaligned y accepted");
    KT_CHECK(kiln_cuda_gemm_splitk(dy, dx, dw, b16, 1, 64, 64, (float *)((char *)ws + 2), cn, 0) == bad,
             "misaligned ws accepted");
    KT_CHECK(kiln_cuda_gemm_splitk(dy, dx, dw, b16, 1, 64, 64, ws, (int *)((char *)cn + 2), 0) == bad,
             "misaligned counters accepted");
    KT_CHECK(kiln_cuda_gemm_splitk(NULL, dx, dw, b16, 1, 64, 64, ws, cn, 0) == bad, "NULL y accepted");
    KT_CHECK(kiln_cuda_gemm_splitk(dy, NULL, dw, b16, 1, 64, 64, ws, cn, 0) == bad, "NULL x accepted");
    KT_CHECK(kiln_cuda_gemm_splitk(dy, dx, NULL, b16, 1, 64, 64, ws, cn, 0) == bad, "NULL W accepted");
    KT_CHECK(kiln_cuda_gemm_splitk(dy, dx, dw, b16, 1, 64, 64, NULL, cn, 0) == bad, "NULL ws accepted");
    KT_CHECK(kiln_cuda_gemm_splitk(dy, dx, dw, b16, 1, 64, 64, ws, NULL, 0) == bad, "NULL counters accepted");
    KT_CHECK(kiln_cuda_gemm_splitk_ex(dy, dx, dw, b16, 1, 64, 64, ws, cn, 5, 0) == bad, "variant 5 accepted");
    KT_CHECK(kiln_cuda_gemm_splitk_ex(dy, dx, dw, b16, 1, 64, 64, ws, cn, -1, 0) == bad, "variant -1 accepted");
    KT_CHECK(kiln_cuda_gemm_splitk_ws_bytes(64, 1032) == 0, "ws_bytes for K=1032 not 0");
    KT_CHECK(kiln_cuda_gemm_splitk_ws_bytes(0, 64) == 0, "ws_bytes for N=0 not 0");
    KT_CHECK(kiln_cuda_gemm_splitk_counters(0) == 0, "counters for N=0 not 0");
    KT_CHECK(kiln_cuda_gemm_splitk_counters(129) == 2, "counters for N=129 not 2");
    float back[MR * 64];
    kc_get(back, dy, sizeof back);
    int touched = 0;
    for (int i = 0; i < MR * 64; i++) touched += kg_f32_bits(back[i]) != KG_POISON;
    KT_CHECK(touched == 0, "a refused call wrote %d outputs", touched);
    KT_CHECK(counters_nonzero(&sw) == 0, "a refused call touched the counters");
    CU(cudaGetLastError());
    sk_ws_free(&sw);
    CU(cudaFree(dw)); CU(cudaFree(dx)); CU(cudaFree(dy));
}

int main(void) {
    kc_require_gpu();
    unsigned long long s = kc_seed();
    invalid();
    static const int sh[][2] = {{5120, 32768}, {6144, 5120}, {5120, 4096}, {8, 64},     {129, 64},
                                {1000, 64},    {8, 1024},    {129, 1024},  {1000, 1024}, {129, 4160},
                                {1000, 4160},  {40000, 512}};
    for (size_t i = 0; i < sizeof sh / sizeof sh[0]; i++) one(KILN_DT_BF16, sh[i][0], sh[i][1], &s);
    static const int fsh[][2] = {{5120, 4096}, {1000, 4160}, {8, 64}};
    for (size_t i = 0; i < sizeof fsh / sizeof fsh[0]; i++) one(KILN_DT_F16, fsh[i][0], fsh[i][1], &s);
    return kt_done();
}
