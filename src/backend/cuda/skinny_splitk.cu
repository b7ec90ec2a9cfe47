/* skinny_splitk.cu: y = x W^T for decode batches of T <= 16 rows on NARROW matrices (few output
 * rows, long K), bf16 or f16: skinny_wide.cu's W-staged tensor-core pipeline with the work split
 * over N and K ("stream-K"), so every CTA streams the same number of W bytes.
 *
 *   W: [N][K] row-major (wdt);  x: [T][K] same dtype;  y: [T][N] f32;  K % 64 == 0.
 * Meant for Devstral's down (N = 5120, K = 32768, 335 MB), qkv (6144 x 5120) and o (5120 x
 * 4096): skinny_wide tiles only over N (128 output rows and all of K per tile), so N = 5120 gives
 * 40 tiles for 132 SMs x 2 CTAs.
 *
 * Work split. An item is (tile j of WD_BN = 128 output rows, k-tile kt of 64 k); items are
 * numbered tile-major, m = j nk + kt (nk = K / 64, total = ntiles nk). The grid has
 * G = min(SMs x CTAs per SM, total) CTAs; CTA b takes the contiguous items
 * [start(b), start(b + 1)), start(b) = floor(b total / G), as ONE cp.async pipeline (the next
 * tile's first k-tiles are in flight while the current one finishes). Its range covers a
 * "segment" (a run of consecutive k-tiles) of one or more tiles: every middle tile whole, the
 * first and last possibly in part. The CTAs holding items of tile j are owner(j nk) ..
 * owner(j nk + nk - 1), owner(m) = floor(((m + 1) G - 1) / total) (the largest b with
 * start(b) <= m); segment s of tile j is that of CTA owner(j nk) + s.
 *   - a tile whole in one CTA: y is written straight from the accumulators;
 *   - otherwise each segment's CTA stores its f32 partial (its accumulator fragments, [NT][4]
 *     per thread, thread-major: ws[slot][(4 nt + q) 256 + tid]) in its workspace slot 2b + 0
 *     (the segment on the CTA's first tile) or 2b + 1 (on its last tile; a CTA has at most two
 *     partial segments), __threadfence, then one thread increments counters[j]. The CTA that
 *     sees the count reach (segments - 1) is the last: it resets counters[j] to 0 (so the next
 *     call, also a graph replay, starts clean), and sums the partials IN SEGMENT ORDER,
 *     v = p_0; v += p_1; ... (its own from registers), and writes y. Nothing waits on another
 *     CTA (no spin), so residency does not matter.
 * Partials go through L2 only (st.global.cg / ld.global.cg). A CTA's segments, slots and the
 * order of the final sum are functions of (N, K, G) only.
 *
 * Pipeline and fragments: those of skinny_wide.cu (wstage.cuh), with BK = 64 (CH = 8): stage =
 * sW[128][8] + sX[8 NT][8] 16-byte chunks, XOR swizzle, cp.async.cg with an L2 evict_first
 * policy on W (optionally the .L2::256B prefetch hint), x rows >= T and W rows >= N
 * zero-filled; ldmatrix + mma.m16n8k16, each 64-k chain into a zeroed tmp tile then added to the
 * segment's accumulator (round to nearest).
 *
 * Arithmetic and determinism: y[t][n] = ((p_0 + p_1) + ...) over the segments of n's tile, p_s
 * = the sum of its 64-k chains in k order. Segment boundaries depend on N, K and the grid G
 * (the SM count and the variant's CTAs per SM), never on T, and a column of the mma depends only
 * on its own column of B: row t has the same bits for any T 1..16 and run to run. The bits DO
 * depend on the GPU's SM count and on the variant (not the same bits as skinny_wide, skinny.cu,
 * gemv.cu or cuBLASLt; a tile whole in one CTA gives skinny_wide's bits).
 *
 * Variants (all BK = 64; KB of shared memory per CTA for T > 8, half the x part for T <= 8):
 *   1: S = 6,  2 CTAs per SM, no prefetch hint   (108 KB per CTA)
 *   2: S = 6,  2 CTAs per SM, .L2::256B hint     (default; skinny_wide's v5)
 *   3: S = 12, 1 CTA per SM,  .L2::256B hint     (216 KB)
 *   4: S = 4,  3 CTAs per SM, .L2::256B hint     (72 KB)
 * Registers (ptxas -v, sm_90, no spills), T > 8 / T <= 8: v1, v2 70 / 66, v3 70 / 64, v4 70 / 56;
 * static shared memory 128 bytes (sk_last, padded) beside the dynamic stages.
 * Host side per call: two cudaFuncSetAttribute and a device-attribute query (SM count; no cached
 * state, no allocation). ws / counters: sized by kiln_cuda_gemm_splitk_ws_bytes /
 * kiln_cuda_gemm_splitk_counters on the same device, counters zeroed once by the caller; one call
 * at a time may use them (they are not per stream).
 */
#include <limits.h>
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/wstage.cuh"

#define SK_CH 8                            /* 16-byte chunks per row of a k-tile: BK = 64 */
#define SK_BK (SK_CH * 8)
#define SK_SLOT (2 * 4 * WD_WARPS * 32)    /* floats per workspace slot: [NT <= 2][4][256 threads] */
#define SK_MAX_MINB 3                      /* most CTAs per SM of any variant (sizes ws) */

/* first item of CTA b of G over total items */
static __host__ __device__ __forceinline__ int sk_start(int b, int total, int G) {
    return (int)((int64_t)b * total / G);
}
/* the CTA whose range holds item m: the largest b with sk_start(b) <= m */
static __device__ __forceinline__ int sk_owner(int m, int total, int G) {
    return (int)(((int64_t)(m + 1) * G - 1) / total);
}

/* NT: n-tiles of x rows (1: T <= 8, 2: T <= 16); S: stages; MINB: CTAs per SM; PF: L2 prefetch
 * hint on W copies. ws: [2 G][SK_SLOT] f32; counters: [ntiles], zero on entry and on exit. */
template <int NT, int S, int MINB, bool PF, bool BF>
static __global__ void __launch_bounds__(WD_WARPS * 32, MINB)
splitk_kernel(float *__restrict__ y, const uint16_t *__restrict__ x, const uint16_t *__restrict__ w, int T, int N,
              int K, int total, float *__restrict__ ws, int *__restrict__ counters) {
    extern __shared__ __align__(128) unsigned char sk_smem[];
    __shared__ int sk_last; /* this CTA arrived last for the tile it just finished */
    constexpr int CH = SK_CH;
    constexpr int SB = (WD_BN + NT * 8) * CH * 16; /* bytes per stage */
    const uint32_t sbase = (uint32_t)__cvta_generic_to_shared(sk_smem);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, gid = lane >> 2, tig = lane & 3;
    const int nk = K / SK_BK;
    const int G = (int)gridDim.x, b = (int)blockIdx.x;
    const int i0 = sk_start(b, total, G), count = sk_start(b + 1, total, G) - i0; /* >= 1: G <= total */
    uint64_t pol;
    asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(pol));

    /* loader position: item i0 + ld = (tile ld_n0 / 128, k-tile ld_kt) */
    int ld = 0, ld_kt = i0 % nk, ld_n0 = (i0 / nk) * WD_BN;
#pragma unroll
    for (int s = 0; s < S - 1; s++) {
        if (ld < count) {
            wd_load<NT, CH, PF>(sbase + s * SB, x, w, T, N, K, ld_n0, ld_kt, pol);
            if (++ld_kt == nk) { ld_kt = 0; ld_n0 += WD_BN; }
        }
        ld++;
        kiln_cp_commit();
    }

    const wd_frag f = wd_frag_offsets<NT, CH>(lane, warp);

    float acc[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
    int kt = i0 % nk, tile = i0 / nk, seg0 = i0, rs = 0; /* seg0: first item of the current segment */
    for (int it = 0; it < count; it++) {
        kiln_cp_wait<S - 2>(); /* item it has landed (this thread's copies) */
        __syncthreads();  /* ... every thread's, and every warp is done with item it - 1's stage */
        if (ld < count) {
            int s = rs == 0 ? S - 1 : rs - 1; /* (it + S - 1) % S */
            wd_load<NT, CH, PF>(sbase + s * SB, x, w, T, N, K, ld_n0, ld_kt, pol);
            if (++ld_kt == nk) { ld_kt = 0; ld_n0 += WD_BN; }
        }
        ld++;
        kiln_cp_commit();

        { /* one 64-k chain */
            float tmp[NT][4];
            wd_chain<NT, CH, BF>(sbase + rs * SB, f, 0, tmp);
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int q = 0; q < 4; q++) acc[nt][q] += tmp[nt][q];
        }
        rs = rs == S - 1 ? 0 : rs + 1;

        const int i = i0 + it;
        if (kt == nk - 1 || it == count - 1) { /* the segment [seg0, i] of tile `tile` ends */
            const int tfirst = tile * nk, tlast = tfirst + nk - 1, n0 = tile * WD_BN;
            bool wr_y = true; /* this CTA writes y for the tile (from acc or from the partials) */
            if (!(seg0 == tfirst && i == tlast)) { /* tile split over CTAs */
                float *mine = ws + ((int64_t)2 * b + (seg0 == i0 ? 0 : 1)) * SK_SLOT;
#pragma unroll
                for (int nt = 0; nt < NT; nt++)
#pragma unroll
                    for (int q = 0; q < 4; q++) __stcg(mine + (4 * nt + q) * (WD_WARPS * 32) + tid, acc[nt][q]);
                __threadfence(); /* the partial is visible device-wide before the count says so */
                __syncthreads();
                const int bf = sk_owner(tfirst, total, G), bl = sk_owner(tlast, total, G);
                if (tid == 0) {
                    int last = atomicAdd(&counters[tile], 1) == bl - bf;
                    if (last) {
                        counters[tile] = 0; /* every segment has arrived: clean for the next call */
                        __threadfence();    /* the others' partials are read after their counts */
                    }
                    sk_last = last;
                }
                __syncthreads();
                wr_y = sk_last != 0;
                if (wr_y) {
                    float v[NT][4];
                    for (int s = bf; s <= bl; s++) { /* segment order, not arrival order */
                        const float *p = ws + ((int64_t)2 * s + (sk_start(s, total, G) >= tfirst ? 0 : 1)) * SK_SLOT;
#pragma unroll
                        for (int nt = 0; nt < NT; nt++)
#pragma unroll
                            for (int q = 0; q < 4; q++) {
                                float u = s == b ? acc[nt][q] : __ldcg(p + (4 * nt + q) * (WD_WARPS * 32) + tid);
                                v[nt][q] = s == bf ? u : v[nt][q] + u;
                            }
                    }
#pragma unroll
                    for (int nt = 0; nt < NT; nt++)
#pragma unroll
                        for (int q = 0; q < 4; q++) acc[nt][q] = v[nt][q];
                }
            }
            /* c[nt][2hh + e] = y[8nt + 2tig + e][n0 + 16 warp + gid + 8hh] */
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int hh = 0; hh < 2; hh++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        int t = 8 * nt + 2 * tig + e, n = n0 + 16 * warp + gid + 8 * hh;
                        if (wr_y && t < T && n < N) y[(int64_t)t * N + n] = acc[nt][2 * hh + e];
                        acc[nt][2 * hh + e] = 0.0f;
                    }
            seg0 = i + 1;
        }
        if (++kt == nk) { kt = 0; tile++; }
    }
    kiln_cp_wait<0>(); /* no copy may still target shared memory when the CTA exits */
}

/* SM count of the current device */
static cudaError_t sk_sms(int *sms) {
    int dev = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e != cudaSuccess) return e;
    return cudaDeviceGetAttribute(sms, cudaDevAttrMultiProcessorCount, dev);
}
/* items (tile, k-tile); -1 when N or K is out of range or the count passes INT_MAX */
static int64_t sk_total(int N, int K) {
    if (N < 1 || N > (1 << 30) || K < SK_BK || K % SK_BK != 0) return -1;
    int64_t t = (((int64_t)N + WD_BN - 1) / WD_BN) * (K / SK_BK);
    return t > INT_MAX ? -1 : t;
}

template <int NT, int S, int MINB, bool PF, bool BF>
static cudaError_t sk_launch(float *y, const void *x, const void *w, int T, int N, int K, int total, float *ws,
                             int *counters, cudaStream_t st) {
    constexpr int SB = (WD_BN + NT * 8) * SK_CH * 16;
    const size_t smem = (size_t)S * SB;
    /* all of the unified L1 / shared memory as shared (the copies bypass L1): MINB CTAs fit */
    cudaError_t e = cudaFuncSetAttribute(splitk_kernel<NT, S, MINB, PF, BF>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
    e = cudaFuncSetAttribute(splitk_kernel<NT, S, MINB, PF, BF>, cudaFuncAttributePreferredSharedMemoryCarveout,
                             (int)cudaSharedmemCarveoutMaxShared);
    if (e != cudaSuccess) return e;
    int sms = 0;
    if ((e = sk_sms(&sms)) != cudaSuccess) return e;
    /* the grid depends on the SM count and MINB only, never on T (segment boundaries, bits) */
    int64_t g = (int64_t)sms * MINB;
    unsigned grid = (unsigned)(g < total ? g : total);
    splitk_kernel<NT, S, MINB, PF, BF><<<grid, WD_WARPS * 32, smem, st>>>(
        y, (const uint16_t *)x, (const uint16_t *)w, T, N, K, total, ws, counters);
    KILN_CUDA_CHECK_LAUNCH();
}

template <int NT, bool BF>
static cudaError_t sk_launch_v(float *y, const void *x, const void *w, int T, int N, int K, int total, float *ws,
                               int *counters, int v, cudaStream_t st) {
    switch (v) {
    case 1: return sk_launch<NT, 6, 2, false, BF>(y, x, w, T, N, K, total, ws, counters, st);
    case 3: return sk_launch<NT, 12, 1, true, BF>(y, x, w, T, N, K, total, ws, counters, st);
    case 4: return sk_launch<NT, 4, SK_MAX_MINB, true, BF>(y, x, w, T, N, K, total, ws, counters, st);
    default: return sk_launch<NT, 6, 2, true, BF>(y, x, w, T, N, K, total, ws, counters, st);
    }
}

extern "C" size_t kiln_cuda_gemm_splitk_ws_bytes(int N, int K) {
    int64_t total = sk_total(N, K);
    int sms = 0;
    if (total < 0 || sk_sms(&sms) != cudaSuccess || sms < 1) return 0;
    int64_t g = (int64_t)sms * SK_MAX_MINB;
    if (g > total) g = total;
    return (size_t)g * 2 * SK_SLOT * sizeof(float);
}

extern "C" int kiln_cuda_gemm_splitk_counters(int N) {
    return N < 1 || N > (1 << 30) ? 0 : (int)(((int64_t)N + WD_BN - 1) / WD_BN);
}

extern "C" cudaError_t kiln_cuda_gemm_splitk_ex(float *y, const void *x, const void *w, kiln_dtype wdt, int T, int N,
                                                int K, float *ws, int *counters, int variant, cudaStream_t st) {
    int64_t total = sk_total(N, K);
    if ((wdt != KILN_DT_BF16 && wdt != KILN_DT_F16) || T < 1 || T > KILN_SPLITK_MAX_ROWS || total < 0 ||
        variant < 0 || variant > 4 || !y || !x || !w || !ws || !counters || ((uintptr_t)x & 15) ||
        ((uintptr_t)w & 15) || ((uintptr_t)y & 3) || ((uintptr_t)ws & 3) || ((uintptr_t)counters & 3))
        return cudaErrorInvalidValue;
    int v = variant ? variant : 2;
    if (wdt == KILN_DT_BF16)
        return T <= 8 ? sk_launch_v<1, true>(y, x, w, T, N, K, (int)total, ws, counters, v, st)
                      : sk_launch_v<2, true>(y, x, w, T, N, K, (int)total, ws, counters, v, st);
    return T <= 8 ? sk_launch_v<1, false>(y, x, w, T, N, K, (int)total, ws, counters, v, st)
                  : sk_launch_v<2, false>(y, x, w, T, N, K, (int)total, ws, counters, v, st);
}

extern "C" cudaError_t kiln_cuda_gemm_splitk(float *y, const void *x, const void *w, kiln_dtype wdt, int T, int N,
                                             int K, float *ws, int *counters, cudaStream_t st) {
    return kiln_cuda_gemm_splitk_ex(y, x, w, wdt, T, N, K, ws, counters, 0, st);
}
