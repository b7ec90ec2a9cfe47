/* skinny_wide.cu: y = x W^T for decode batches of T <= 16 rows on WIDE matrices (many output
 * rows), bf16 or f16, a pure stream of W through a cp.async shared-memory pipeline.
 *
 *   W: [N][K] row-major (wdt);  x: [T][K] same dtype;  y: [T][N] f32;  K % 64 == 0.
 * Meant for Devstral's gate|up (N = 65536, K = 5120, 640 MiB) and LM head (131072 x 5120):
 * skinny.cu loads W straight into fragment registers (64 contiguous bytes per row and load),
 * which caps it at ~2.72 TB/s at 16 rows (register pressure); here the registers hold only the
 * accumulators and every byte of W is in flight in shared memory.
 *
 * Work split. A "tile" is BN = 128 consecutive output rows n0..n0+127 and ALL of K (no split-K:
 * N = 65536 gives 512 tiles). The grid is persistent: G = min(tiles, SMs x CTAs per SM) CTAs of
 * 8 warps; CTA b takes tiles b, b + G, b + 2G, ... Its loads run as ONE pipeline over the
 * sequence of (tile, k-tile) items, so the next tile's first k-tiles are in flight while the
 * current tile finishes (no pipeline fill per tile). Warp w owns the 16-row "unit" w, rows
 * n0 + 16w .. +15 of the tile.
 *
 * Fused SwiGLU (GLU, kiln_cuda_gemm_wide_glu): W = [gate; up] with F = N / 2 rows each, and the
 * output is act[t][j] = silu(gate_j . x_t) (up_j . x_t) in the activation dtype. Unit w of tile
 * b holds gate rows j .. j + 7 then up rows j .. j + 7, j = 64b + 8w, so the C fragment
 * of a lane holds gate (row gid) and up (row gid + 8) of the same j and t: the epilogue needs
 * no exchange, and the f32 gate|up block (T x 2F x 4 bytes) and the SwiGLU kernel go away.
 * Each gate / up sum has the same bits as the unfused kernel's, and kiln_silu_mul is swiglu.cu's.
 *
 * Pipeline. A k-tile is BK = 8 CH k (CH = 8 or 16 16-byte chunks per row: 128 or 256 bytes).
 * Stage s of S in shared memory (dynamic, bytes):
 *   sW[128][CH] 16-byte chunks  (W rows n0..n0+127, k kt BK .. +BK-1)       128 CH 16
 *   sX[8 NT][CH] 16-byte chunks (x rows 0..8NT-1, same k; rows t >= T zero)  8 NT CH 16
 * Chunk c of row r is stored at chunk (c ^ (r & 7)) of the row (XOR swizzle): the 8 row
 * addresses of every ldmatrix 8x8 matrix fall in 8 distinct bank groups. Copies are
 * cp.async.cg 16-byte (L1 bypassed); the 256 threads copy consecutive chunks, so a warp copies
 * 4 (CH = 8) or 2 (CH = 16) whole 128-byte line segments per instruction; W copies carry an L2
 * evict_first policy (read once per step), x copies do not (x stays in L2 for every CTA). W rows
 * >= N and x rows >= T are zero-filled (src-size 0), never read. Classic multistage loop: wait
 * for item i (cp.async.wait_group S-2), __syncthreads, issue item i + S - 1 into the stage item
 * i - 1 used, compute item i. S - 1 stages in flight per CTA.
 *
 * Fragments (mma.m16n8k16.row.col; gid = lane >> 2, tig = lane & 3; attention_prefill.cu has
 * the layouts): y^T (16 W rows x 8 x rows) = W (16 n x 16 k) * x^T (16 k x 8 t), A = W tile,
 * B = x^T, C = y^T, f32. For k-step ks (k 16ks .. +15 of the k-tile = chunks 2ks, 2ks+1):
 *   A: ldmatrix.x4, lane l gives row 16w + (l & 7) + 8((l >> 3) & 1), chunk 2ks + (l >> 4):
 *      matrices (rows 0-7, c), (rows 8-15, c), (rows 0-7, c+1), (rows 8-15, c+1) = a0..a3.
 *   B: x rows are B columns, k contiguous: a non-trans 8x8 of (t 0-7, chunk c) gives lane
 *      (t gid, k 2tig, +1) = b0 (chunk 2ks) or b1 (chunk 2ks + 1). NT = 2: ldmatrix.x4, lane l
 *      gives row (l & 7) + 8(l >> 4), chunk 2ks + ((l >> 3) & 1): b0, b1 of x rows 0-7, then of
 *      rows 8-15. NT = 1: ldmatrix.x2 (lanes 0-15) of rows 0-7.
 *   C: c[nt][2hh + e] = y[t = 8nt + 2tig + e][n = n0 + 16w + gid + 8hh].
 * (checked with a Python emulation of ldmatrix / mma / the swizzle, not committed.)
 *
 * Arithmetic and determinism. Chains of 4 k-steps (64 k, aligned to k = 0) run into a zeroed
 * f32 tile, which is then added to the accumulator (round to nearest): the tensor core
 * truncates inside each mma, so its chains stay short. Every choice is a function of K alone and
 * a column of D depends only on its own column of B: row t has the same bits for any T, N, grid
 * or variant, and computed alone (not the same bits as skinny.cu, gemv.cu or cuBLASLt).
 *
 * Variants (same bits; shared memory, CTAs per SM and bytes in flight per SM differ):
 *   1: CH = 8  (BK 64),  S = 6,  2 CTAs per SM: 6 x 18 KB = 108 KB per CTA, 180 KB in flight per SM
 *   2: CH = 16 (BK 128), S = 3,  2 CTAs per SM: 3 x 36 KB = 108 KB per CTA, 144 KB in flight
 *   3: CH = 8  (BK 64),  S = 12, 1 CTA per SM: 216 KB, 198 KB in flight
 *   4: CH = 16 (BK 128), S = 6,  1 CTA per SM: 216 KB, 180 KB in flight
 *   5: as 1, W copies with the .L2::256B prefetch hint (the next k-tile's line of each row too)
 *   6: as 2 with the prefetch hint: the default. In the Devstral step on the H100 (same call)
 *      the BK 128 variants gave batch-16 steps of 16.86-16.87 ms against 17.19 with v5, and a
 *      CUPTI trace put gate|up at 216.9 us per layer against 224.7 (of a BK 128 variant with two
 *      16-row units per warp, BN 256, which halves x's L2 traffic but gained nothing more: not
 *      kept); the isolated microbenchmark shows no difference (228 us at 16 rows).
 *   7: CH = 8 (BK 64), S = 5, 1 CTA per SM, prefetch hint: 5 x 18 KB = 90 KB, for the targets
 *      with 99 KB of shared memory per block (sm_86, sm_89: target.h), where 1..6 do not fit;
 *      the backend picks it there (kiln_cuda_gemm_wide_fit). Not measured on such a card.
 * (KB for T > 8; x stages are half as big for T <= 8.) Variants 2, 4 and 6 need K % 128 == 0
 * and run as 1, 3 and 5 otherwise. Registers (ptxas -v, sm_90, no spills), T > 8 / T <= 8: v1 and v5
 * 64 / 52, v2 91 / 76, v3 62 / 51, v4 92 / 76. Host side per call: two cudaFuncSetAttribute and
 * a device-attribute query (no cached state).
 */
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/cuda_dev.cuh"

#define WD_WARPS 8
#define WD_BN (16 * WD_WARPS) /* output rows per tile */

/* 16 bytes global -> shared, L2 policy pol; zeros when !ok (src-size 0, src not read); PF: with
 * the .L2::256B prefetch hint */
template <bool PF>
static __device__ __forceinline__ void wd_cp16_pol(uint32_t dst, const void *src, int ok, uint64_t pol) {
    if (PF)
        asm volatile("cp.async.cg.shared.global.L2::cache_hint.L2::256B [%0], [%1], 16, %2, %3;\n" ::"r"(dst),
                     "l"(src), "r"(ok ? 16 : 0), "l"(pol));
    else
        asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2, %3;\n" ::"r"(dst), "l"(src),
                     "r"(ok ? 16 : 0), "l"(pol));
}
static __device__ __forceinline__ void wd_cp16(uint32_t dst, const void *src, int ok) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src), "r"(ok ? 16 : 0));
}

/* W row of tile row r (0 .. BN - 1) of tile b, -1 past the matrix. N: output columns (F for GLU,
 * whose W has 2F rows: unit r / 16 = gate rows j .. j + 7, then up rows j .. j + 7). */
template <bool GLU>
static __device__ __forceinline__ int wd_row(int b, int r, int BN, int N) {
    if (!GLU) {
        int n = b * BN + r;
        return n < N ? n : -1;
    }
    int j = b * (BN / 2) + 8 * (r >> 4) + (r & 7);
    return j < N ? ((r & 8) ? N + j : j) : -1;
}

/* Issue the W copies of item (tile b, k-tile kt) into the stage at shared address st. */
template <int CH, bool PF, bool GLU>
static __device__ __forceinline__ void wd_load_w(uint32_t st, const uint16_t *__restrict__ w, int N, int K, int b,
                                                 int kt, uint64_t pol) {
    constexpr int BN = WD_BN;
    constexpr int RSTEP = 256 / CH;            /* rows between a thread's W chunks */
    constexpr int NW = BN * CH / 256;          /* W chunks per thread */
    const int tid = threadIdx.x, ch = tid % CH, r0 = tid / CH;
    const int k0 = kt * CH * 8 + ch * 8;       /* element offset of this thread's chunk in a row */
    const uint32_t sw = (uint32_t)(ch ^ (r0 & 7)) * 16; /* RSTEP % 8 == 0: every row r has r & 7 == r0 & 7 */
#pragma unroll
    for (int j = 0; j < NW; j++) {
        int r = r0 + j * RSTEP, n = wd_row<GLU>(b, r, BN, N), ok = n >= 0;
        const uint16_t *src = w + (int64_t)(ok ? n : 0) * K + k0;
        wd_cp16_pol<PF>(st + (uint32_t)r * CH * 16 + sw, src, ok, pol);
    }
}
/* ... and its x copies (x rows 0..8NT-1: one chunk per thread) */
template <int NT, int CH>
static __device__ __forceinline__ void wd_load_x(uint32_t st, const uint16_t *__restrict__ x, int T, int K, int kt) {
    const int tid = threadIdx.x, ch = tid % CH, t = tid / CH, ok = t < T;
    if (tid < NT * 8 * CH) {
        const uint16_t *src = x + (int64_t)(ok ? t : 0) * K + kt * CH * 8 + ch * 8;
        wd_cp16(st + WD_BN * CH * 16 + (uint32_t)t * CH * 16 + (uint32_t)(ch ^ (t & 7)) * 16, src, ok);
    }
}

/* NT: n-tiles of x rows (1: T <= 8, 2: T <= 16); CH: 16-byte chunks per row of a k-tile;
 * S: stages; MINB: CTAs per SM; PF: L2 prefetch hint on W copies; GLU: fused SwiGLU (y = act
 * [T][N] in ydt), else y = f32 [T][N] */
template <int NT, int CH, int S, int MINB, bool PF, bool BF, bool GLU>
static __global__ void __launch_bounds__(WD_WARPS * 32, MINB)
wide_kernel(void *__restrict__ y, kiln_dtype ydt, const uint16_t *__restrict__ x, const uint16_t *__restrict__ w,
            int T, int N, int K, int ntiles) {
    extern __shared__ __align__(128) unsigned char wd_smem[];
    constexpr int BN = WD_BN;
    constexpr int SB = (BN + NT * 8) * CH * 16; /* bytes per stage */
    constexpr int XOFF = BN * CH * 16;          /* x part of a stage */
    const uint32_t sbase = (uint32_t)__cvta_generic_to_shared(wd_smem);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gid = lane >> 2, tig = lane & 3;
    const int nk = K / (CH * 8);
    const int G = (int)gridDim.x, my_tiles = (ntiles - (int)blockIdx.x + G - 1) / G;
    const int total = my_tiles * nk; /* items of this CTA */
    uint64_t pol;
    asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(pol));
    kiln_pdl_trigger();

    /* loader position: item ld = (tile ld_b, k-tile ld_kt). The prologue's W copies go out
     * before the PDL wait (weights), its x copies (the previous kernel's output) after it; all
     * of the W copies land in the first commit group. */
    int ld = 0, ld_kt = 0, ld_b = (int)blockIdx.x;
#pragma unroll
    for (int s = 0; s < S - 1; s++)
        if (s < total) wd_load_w<CH, PF, GLU>(sbase + s * SB, w, N, K, ld_b + (s / nk) * G, s % nk, pol);
    kiln_pdl_wait();
#pragma unroll
    for (int s = 0; s < S - 1; s++) {
        if (ld < total) {
            wd_load_x<NT, CH>(sbase + s * SB, x, T, K, ld_kt);
            if (++ld_kt == nk) { ld_kt = 0; ld_b += G; }
        }
        ld++;
        kiln_cp_commit();
    }

    /* per-lane ldmatrix offsets within a stage (bytes) for chunk pair 2ks: A and B */
    const int ar = 16 * warp + (lane & 7) + 8 * ((lane >> 3) & 1), ac = lane >> 4;
    const int br = NT == 2 ? (lane & 7) + 8 * (lane >> 4) : (lane & 7), bc = (lane >> 3) & 1;
    const uint32_t a_row = (uint32_t)ar * CH * 16, b_row = XOFF + (uint32_t)br * CH * 16;
    const int asw = ar & 7, bsw = br & 7; /* == lane & 7 */

    float acc[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
    int kt = 0, b = (int)blockIdx.x, rs = 0;
    for (int it = 0; it < total; it++) {
        kiln_cp_wait<S - 2>(); /* item it has landed (this thread's copies) */
        __syncthreads();  /* ... every thread's, and every warp is done with item it - 1's stage */
        if (ld < total) {
            int s = rs == 0 ? S - 1 : rs - 1; /* (it + S - 1) % S */
            wd_load_w<CH, PF, GLU>(sbase + s * SB, w, N, K, ld_b, ld_kt, pol);
            wd_load_x<NT, CH>(sbase + s * SB, x, T, K, ld_kt);
            if (++ld_kt == nk) { ld_kt = 0; ld_b += G; }
        }
        ld++;
        kiln_cp_commit();

        const uint32_t st = sbase + rs * SB;
#pragma unroll
        for (int c0 = 0; c0 < CH / 8; c0++) { /* chains of 64 k: 4 k-steps */
            float tmp[NT][4];
#pragma unroll
            for (int nt = 0; nt < NT; nt++) tmp[nt][0] = tmp[nt][1] = tmp[nt][2] = tmp[nt][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < 4; kk++) {
                const int ks = 4 * c0 + kk;
                uint32_t a[4], bx[4];
                kiln_ldsm_x4(a, st + a_row + (uint32_t)((2 * ks + ac) ^ asw) * 16);
                if (NT == 2) kiln_ldsm_x4(bx, st + b_row + (uint32_t)((2 * ks + bc) ^ bsw) * 16);
                else kiln_ldsm_x2(bx, st + b_row + (uint32_t)((2 * ks + bc) ^ bsw) * 16);
#pragma unroll
                for (int nt = 0; nt < NT; nt++) kiln_mma16816<BF>(tmp[nt], a, bx[2 * nt], bx[2 * nt + 1]);
            }
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int i = 0; i < 4; i++) acc[nt][i] += tmp[nt][i];
        }
        rs = rs == S - 1 ? 0 : rs + 1;

        if (++kt == nk) { /* tile done: c[nt][2hh + e] = (tile W row 16 warp + gid + 8hh, x row 8nt + 2tig + e) */
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    int t = 8 * nt + 2 * tig + e;
                    if (GLU) { /* hh = 0: gate of j, hh = 1: up of j */
                        int j = b * (BN / 2) + 8 * warp + gid;
                        if (t < T && j < N)
                            kiln_st(ydt, y, (int64_t)t * N + j, kiln_silu_mul(acc[nt][e], acc[nt][2 + e]));
                    } else {
#pragma unroll
                        for (int hh = 0; hh < 2; hh++) {
                            int n = b * BN + 16 * warp + gid + 8 * hh;
                            if (t < T && n < N) ((float *)y)[(int64_t)t * N + n] = acc[nt][2 * hh + e];
                        }
                    }
                    acc[nt][e] = acc[nt][2 + e] = 0.0f;
                }
            kt = 0;
            b += G;
        }
    }
    kiln_cp_wait<0>(); /* no copy may still target shared memory when the CTA exits */
}

template <int NT, int CH, int S, int MINB, bool PF, bool BF, bool GLU>
static cudaError_t wd_launch(void *y, kiln_dtype ydt, const void *x, const void *w, int T, int N, int K,
                             int pdl, cudaStream_t st) {
    constexpr int SB = (WD_BN + NT * 8) * CH * 16;
    const size_t smem = (size_t)S * SB;
    /* all of the unified L1 / shared memory as shared (the copies bypass L1): MINB CTAs fit */
    cudaError_t e = cudaFuncSetAttribute(wide_kernel<NT, CH, S, MINB, PF, BF, GLU>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
    e = cudaFuncSetAttribute(wide_kernel<NT, CH, S, MINB, PF, BF, GLU>,
                             cudaFuncAttributePreferredSharedMemoryCarveout, (int)cudaSharedmemCarveoutMaxShared);
    if (e != cudaSuccess) return e;
    int dev = 0, sms = 0;
    if ((e = cudaGetDevice(&dev)) != cudaSuccess) return e;
    if ((e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev)) != cudaSuccess) return e;
    const int per_tile = GLU ? WD_BN / 2 : WD_BN; /* output columns per tile */
    int ntiles = (int)(((int64_t)N + per_tile - 1) / per_tile);
    int64_t g = (int64_t)sms * MINB;
    unsigned grid = (unsigned)(g < ntiles ? g : ntiles);
    kiln_launch(kiln_pdl_at(pdl, T),
                wide_kernel<NT, CH, S, MINB, PF, BF, GLU>, dim3(grid), dim3(WD_WARPS * 32), smem, st, y, ydt,
                (const uint16_t *)x, (const uint16_t *)w, T, N, K, ntiles);
    KILN_CUDA_CHECK_LAUNCH();
}

template <int NT, bool BF, bool GLU>
static cudaError_t wd_launch_v(void *y, kiln_dtype ydt, const void *x, const void *w, int T, int N, int K, int v,
                               int pdl, cudaStream_t st) {
    if (K % 128 != 0) v = v == 2 ? 1 : v == 4 ? 3 : v == 6 ? 5 : v; /* BK = 128 variants need K % 128 */
    switch (v) {
    case 2: return wd_launch<NT, 16, 3, 2, false, BF, GLU>(y, ydt, x, w, T, N, K, pdl, st);
    case 3: return wd_launch<NT, 8, 12, 1, false, BF, GLU>(y, ydt, x, w, T, N, K, pdl, st);
    case 4: return wd_launch<NT, 16, 6, 1, false, BF, GLU>(y, ydt, x, w, T, N, K, pdl, st);
    case 5: return wd_launch<NT, 8, 6, 2, true, BF, GLU>(y, ydt, x, w, T, N, K, pdl, st);
    case 6: return wd_launch<NT, 16, 3, 2, true, BF, GLU>(y, ydt, x, w, T, N, K, pdl, st);
    case 7: return wd_launch<NT, 8, 5, 1, true, BF, GLU>(y, ydt, x, w, T, N, K, pdl, st);
    default: return wd_launch<NT, 8, 6, 2, false, BF, GLU>(y, ydt, x, w, T, N, K, pdl, st);
    }
}

/* dynamic shared memory of variant v (1..KILN_WIDE_VARIANTS) at T rows and K (the BK 128
 * variants run as their BK 64 twins when K % 128 != 0) */
static size_t wd_smem_bytes(int v, int T, int K) {
    if (K % 128 != 0) v = v == 2 ? 1 : v == 4 ? 3 : v == 6 ? 5 : v;
    const int CH = v == 2 || v == 4 || v == 6 ? 16 : 8;
    const int S = v == 3 ? 12 : v == 4 ? 6 : v == 2 || v == 6 ? 3 : v == 7 ? 5 : 6;
    const int NT = T <= 8 ? 1 : 2;
    return (size_t)S * (WD_BN + NT * 8) * CH * 16;
}

extern "C" size_t kiln_cuda_gemm_wide_smem(int variant, int T, int K) {
    if (variant < 0 || variant > KILN_WIDE_VARIANTS) return 0;
    return wd_smem_bytes(variant ? variant : KILN_WIDE_DEFAULT_VARIANT, T, K);
}

extern "C" int kiln_cuda_gemm_wide_fit(int variant, int K, size_t smem_per_block) {
    int v = variant > 0 && variant <= KILN_WIDE_VARIANTS ? variant : KILN_WIDE_DEFAULT_VARIANT;
    if (wd_smem_bytes(v, KILN_WIDE_MAX_ROWS, K) <= smem_per_block) return v;
    if (wd_smem_bytes(KILN_WIDE_SMALL_VARIANT, KILN_WIDE_MAX_ROWS, K) <= smem_per_block) return KILN_WIDE_SMALL_VARIANT;
    return 0;
}

template <bool GLU>
static cudaError_t wd_dispatch(void *y, kiln_dtype ydt, const void *x, const void *w, kiln_dtype wdt, int T, int N,
                               int K, int variant, int pdl, cudaStream_t st) {
    int v = variant;
    if (!v) { /* the default where it fits the current device, else the small variant (sm_86 / sm_89) */
        int dev = 0, optin = 0;
        cudaError_t e = cudaGetDevice(&dev);
        if (e == cudaSuccess) e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
        if (e != cudaSuccess) return e;
        v = kiln_cuda_gemm_wide_fit(0, K, (size_t)optin);
        if (!v) return cudaErrorInvalidValue;
    }
    if (wdt == KILN_DT_BF16) return T <= 8 ? wd_launch_v<1, true, GLU>(y, ydt, x, w, T, N, K, v, pdl, st)
                                           : wd_launch_v<2, true, GLU>(y, ydt, x, w, T, N, K, v, pdl, st);
    return T <= 8 ? wd_launch_v<1, false, GLU>(y, ydt, x, w, T, N, K, v, pdl, st)
                  : wd_launch_v<2, false, GLU>(y, ydt, x, w, T, N, K, v, pdl, st);
}

static int wd_args_ok(const void *y, const void *x, const void *w, kiln_dtype wdt, int T, int N, int K, int variant) {
    return (wdt == KILN_DT_BF16 || wdt == KILN_DT_F16) && T >= 1 && T <= KILN_WIDE_MAX_ROWS && N >= 1 && K >= 64 &&
           K % 64 == 0 && N <= (1 << 30) && variant >= 0 && variant <= KILN_WIDE_VARIANTS && y && x && w &&
           !((uintptr_t)x & 15) && !((uintptr_t)w & 15);
}

extern "C" cudaError_t kiln_cuda_gemm_wide_ex(float *y, const void *x, const void *w, kiln_dtype wdt, int T, int N,
                                              int K, int variant, int pdl, cudaStream_t st) {
    if (!wd_args_ok(y, x, w, wdt, T, N, K, variant) || ((uintptr_t)y & 3)) return cudaErrorInvalidValue;
    return wd_dispatch<false>(y, KILN_DT_F32, x, w, wdt, T, N, K, variant, pdl, st);
}

extern "C" cudaError_t kiln_cuda_gemm_wide(float *y, const void *x, const void *w, kiln_dtype wdt, int T, int N, int K,
                                           int pdl, cudaStream_t st) {
    return kiln_cuda_gemm_wide_ex(y, x, w, wdt, T, N, K, 0, pdl, st);
}

extern "C" cudaError_t kiln_cuda_gemm_wide_glu(void *act, kiln_dtype adt, const void *x, const void *w, kiln_dtype wdt,
                                               int T, int F, int K, int variant, int pdl, cudaStream_t st) {
    if (!wd_args_ok(act, x, w, wdt, T, F, K, variant) || F > (1 << 29) ||
        (adt != KILN_DT_F32 && adt != KILN_DT_BF16 && adt != KILN_DT_F16) || ((uintptr_t)act & 3))
        return cudaErrorInvalidValue;
    return wd_dispatch<true>(act, adt, x, w, wdt, T, F, K, variant, pdl, st);
}
