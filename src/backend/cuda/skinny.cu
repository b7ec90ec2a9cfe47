/* skinny.cu: memory-bound y = x W^T on tensor cores for decode batches of T <= 16 rows.
 *
 *   W: [N][K] row-major, bf16 or f16;  x: [T][K] same dtype;  y: [T][N] f32;  K % 8 == 0.
 * Devstral shapes (N x K): qkv 6144 x 5120, o 5120 x 4096, gate|up 65536 x 5120,
 * down 5120 x 32768, LM head 131072 x 5120: the decode step streams 46 GB of weights. gemv.cu
 * multiplies each W element by T x values on CUDA cores (issue-bound from T = 4); here
 * mma.sync m16n8k16 does the multiply, so the kernel is a pure stream of W for any T <= 16.
 *
 * The product, transposed: y^T (16 W rows x 8 x rows) = W (16 x 16 k) * x^T (16 k x 8 t), so
 * A = W tile (M = 16 output rows n), B = x^T (N = 8 rows t of x), C/D = y^T tile, f32.
 * T <= 8 runs one n-tile of x rows (NT = 1), T <= 16 two (NT = 2: rows 0..7, 8..15). Rows
 * t >= T of x are zeros (never loaded); column t of D depends only on column t of B, so the
 * NT = 1 and NT = 2 kernels give row t the same bits.
 *
 * Work split. A "group" is 16 consecutive output rows n0..n0+15; a CTA has 8 warps; K is cut
 * into KS slices (KS = 1, 2, 4 or 8 from K alone: K / 512 rounded down to a power of two, at
 * most 8), and warp w of the CTA takes slice w % KS of group 8 / KS * blockIdx.x + w / KS. So
 * N = 5120 (320 groups) still gives 2560 warps at K >= 4096. The KS partial sums of a group
 * are added in shared memory in slice order 0, 1, .., KS-1 by the slice-0 warp. No atomics,
 * no second kernel.
 *
 * K walk. K is read in "quad chunks" of 32 k (Q = ceil(K / 32)); slice s takes quad chunks
 * [s Q / KS, (s + 1) Q / KS), U = 2 or 4 per iteration. In quad chunk q, lane l (gid = l / 4,
 * tig = l % 4) loads with one 16-byte load each
 *   W[n0 + gid][32q + 8tig .. +7] -> wa,  W[n0 + gid + 8][same] -> wb,  x[8nt + gid][same] -> xv
 * (each load instruction reads 64 contiguous bytes of 8 rows; the 4 chunks of an iteration 256
 * bytes of a row). W loads skip L1 and carry an L2 evict_first policy (read once per step);
 * x goes through L1 (shared by every CTA). A tail chunk past K, a row n >= N or t >= T is not
 * loaded: zeros. A uint4 holds elements e = 0..7 as registers u[e / 2] (lower k = lower half).
 *
 * Fragment layouts of mma.m16n8k16.row.col (PTX ISA; attention_prefill.cu uses the same):
 *   A 16x16: a0 = (row gid, cols 2tig, +1)  a1 = (row gid+8, cols 2tig, +1)
 *            a2 = (row gid, cols 2tig+8, +9) a3 = (row gid+8, cols 2tig+8, +9)
 *   B 16x8:  b0 = (k 2tig, +1; col gid)  b1 = (k 2tig+8, +9; col gid)
 *   C 16x8:  c0, c1 = (row gid, cols 2tig, +1)  c2, c3 = (row gid+8, cols 2tig, +1)
 * The mma's 16 k "slots" need not be 16 consecutive k: A and B only have to agree. Quad chunk
 * q is two k-steps h = 0, 1 with slot j of step h <-> k = 32q + 8tig + 4h + (j & 1) + 2 (j >= 8)
 * for j in {2tig, 2tig+1, 2tig+8, 2tig+9}; so, with no shuffles:
 *   a0 = wa.u[2h]  a1 = wb.u[2h]  a2 = wa.u[2h+1]  a3 = wb.u[2h+1]
 *   b0 = xv.u[2h]  b1 = xv.u[2h+1]
 * (step 0 covers k offsets 0-3, 8-11, 16-19, 24-27 of the chunk, step 1 the other 16) and
 *   c[nt][2hh + e] = y[t = 8nt + 2tig + e][n = n0 + gid + 8hh].
 * (checked with a Python emulation of these layouts, not committed.)
 *
 * Arithmetic and determinism. The warp chains the mmas of SK_CHAIN = 2 quad chunks (4 k-steps,
 * ascending k-step order) into a zeroed f32 tile, then adds that tile to its accumulator with an
 * ordinary f32 add (round to nearest): the tensor core rounds (truncates) inside each mma, so
 * its chains stay 4 mmas long and the long sum is in round-to-nearest. Chains start at the
 * slice start qa + 2j whatever U is. Every choice (KS, slice and chain bounds, slot <-> k map)
 * is a function of K alone, and a D element depends only on its own A row, B column and C
 * element: row t has the same bits for any T, N, grid or variant, and alone.
 * Registers (ptxas -v, sm_90, no spills): variant 1 (U = 4, 2 CTAs per SM) 92 (T <= 8) / 120
 * (T > 8); variant 2 (3 CTAs per SM) 80 / 80; variant 3 (T <= 8: U = 2, 4 CTAs per SM) 56.
 * The variant changes only occupancy and bytes in flight, never the bits (see pick_variant).
 */
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/cuda_dev.cuh"

#define SK_WARPS 8 /* warps per CTA */
#define SK_CHAIN 2 /* quad chunks (32 k) per mma chain: 4 k-steps into one zeroed tile */



static __device__ __forceinline__ uint32_t sk_u(const uint4 &v, int i) {
    return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w; /* i is a compile-time constant after unrolling */
}

/* NT: n-tiles of x rows (1: T <= 8, 2: T <= 16); U: quad chunks loaded per iteration (a
 * multiple of SK_CHAIN; 2 U 16-byte W loads in flight per lane); MINB: CTAs per SM the
 * register budget is cut for; KS: K slices per group (1, 2, 4, 8) */
template <int NT, int U, int MINB, bool BF>
static __global__ void __launch_bounds__(SK_WARPS * 32, MINB)
skinny_kernel(float *__restrict__ y, const uint4 *__restrict__ x, const uint4 *__restrict__ w, int T, int N, int C8,
              int KS) {
    __shared__ float red[SK_WARPS][NT * 4][32]; /* partial tiles, lane-minor (no bank conflicts) */
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gid = lane >> 2, tig = lane & 3;
    const int s = warp & (KS - 1);
    const int n0 = ((int)blockIdx.x * (SK_WARPS / KS) + warp / KS) * 16; /* grid: n0 < N + 128 */
    const int Q = (C8 + 3) >> 2;                                         /* quad chunks of 32 k */
    const int qa = (int)((int64_t)s * Q / KS), qb = (int)((int64_t)(s + 1) * Q / KS);
    const int ra = n0 + gid, rb = ra + 8;
    const uint4 *wa_p = w + (int64_t)min(ra, N - 1) * C8 + tig; /* rows >= N: never loaded */
    const uint4 *wb_p = w + (int64_t)min(rb, N - 1) * C8 + tig;
    const int oka = ra < N, okb = rb < N;
    const uint4 *x_p[NT];
    int okx[NT];
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        int t = 8 * nt + gid;
        x_p[nt] = x + (int64_t)min(t, T - 1) * C8 + tig;
        okx[nt] = t < T;
    }
    uint64_t pol;
    asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(pol));

    float acc[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;

    if (n0 < N) { /* warp-uniform */
        for (int q = qa; q < qb; q += U) {
            uint4 wa[U], wb[U], xv[NT][U];
#pragma unroll
            for (int u = 0; u < U; u++) {
                int c = 4 * (q + u), ok = q + u < qb && c + tig < C8; /* c + tig: this lane's uint4 in the row */
                wa[u] = kiln_ld_stream16(wa_p + c, ok & oka, pol);
                wb[u] = kiln_ld_stream16(wb_p + c, ok & okb, pol);
            }
#pragma unroll
            for (int u = 0; u < U; u++) {
                int c = 4 * (q + u), ok = q + u < qb && c + tig < C8;
#pragma unroll
                for (int nt = 0; nt < NT; nt++) xv[nt][u] = kiln_ld_nc16(x_p[nt] + c, ok & okx[nt]);
            }
            /* chains of SK_CHAIN quad chunks (aligned to qa, so independent of U) into a zeroed
             * tile, each added to acc */
#pragma unroll
            for (int u0 = 0; u0 < U; u0 += SK_CHAIN) {
                float tmp[NT][4];
#pragma unroll
                for (int nt = 0; nt < NT; nt++) tmp[nt][0] = tmp[nt][1] = tmp[nt][2] = tmp[nt][3] = 0.0f;
#pragma unroll
                for (int u = u0; u < u0 + SK_CHAIN; u++) {
                    if (q + u < qb) { /* warp-uniform: chunks past the slice are skipped, not added as zeros */
#pragma unroll
                        for (int h = 0; h < 2; h++)
#pragma unroll
                            for (int nt = 0; nt < NT; nt++)
                                kiln_mma16816<BF>(tmp[nt], sk_u(wa[u], 2 * h), sk_u(wb[u], 2 * h), sk_u(wa[u], 2 * h + 1),
                                           sk_u(wb[u], 2 * h + 1), sk_u(xv[nt][u], 2 * h),
                                           sk_u(xv[nt][u], 2 * h + 1));
                    }
                }
                if (q + u0 < qb) {
#pragma unroll
                    for (int nt = 0; nt < NT; nt++)
#pragma unroll
                        for (int i = 0; i < 4; i++) acc[nt][i] += tmp[nt][i];
                }
            }
        }
    }

    if (KS > 1) { /* fixed-order sum of the group's slices: slice 0 + 1 + ... + KS-1 */
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int i = 0; i < 4; i++) red[warp][nt * 4 + i][lane] = acc[nt][i];
        __syncthreads();
        if (s != 0) return;
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                float v = acc[nt][i];
                for (int j = 1; j < KS; j++) v += red[warp + j][nt * 4 + i][lane];
                acc[nt][i] = v;
            }
    }
    if (n0 >= N) return;
    /* c[nt][2hh + e] = y[t = 8nt + 2tig + e][n = n0 + gid + 8hh] */
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int hh = 0; hh < 2; hh++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int t = 8 * nt + 2 * tig + e, n = n0 + gid + 8 * hh;
                if (t < T && n < N) y[(int64_t)t * N + n] = acc[nt][2 * hh + e];
            }
}

/* K slices per group, from K alone: slices of >= 512 k (16 quad chunks), a power of two <= 8 */
static int k_slices(int C8) {
    int Q = (C8 + 3) / 4, ks = 1;
    while (ks < SK_WARPS && Q / (2 * ks) >= 16) ks *= 2;
    return ks;
}

/* Variants (same bits; they differ in registers, hence CTAs per SM, and bytes in flight):
 *   1: U = 4, 2 CTAs per SM (16 warps x 128 bytes of W in flight per lane = 64 KB per SM)
 *   2: 3 CTAs per SM (T <= 8: U = 4, 96 KB; T > 8: U = 2, 48 KB)
 *   3: T <= 8: U = 2, 4 CTAs per SM (32 warps x 64 bytes = 64 KB per SM); T > 8: as 2
 * Auto: the fewest-register variant that is still >= 64 KB per SM when the grid is small
 * (< 3 waves at 2 CTAs per SM of the target's n_sm SMs, 132 on the H100: the last wave would
 * run part-empty), else 1. */
extern "C" int kiln_cuda_skinny_pick_variant(int T, int N, int K, int n_sm) {
    int gpc = SK_WARPS / k_slices(K / 8);
    int64_t ctas = (((int64_t)N + 15) / 16 + gpc - 1) / gpc;
    if (n_sm <= 0) n_sm = 132;
    if (ctas >= 3 * 2 * (int64_t)n_sm) return 1;
    return T <= 8 ? 2 : 3;
}

template <int NT, int U, int MINB, bool BF>
static void sk_launch(float *y, const void *x, const void *w, int T, int N, int C8, cudaStream_t st) {
    int ks = k_slices(C8), groups_per_cta = SK_WARPS / ks;
    int64_t groups = ((int64_t)N + 15) / 16;
    unsigned grid = (unsigned)((groups + groups_per_cta - 1) / groups_per_cta);
    skinny_kernel<NT, U, MINB, BF><<<grid, SK_WARPS * 32, 0, st>>>(y, (const uint4 *)x, (const uint4 *)w, T, N, C8, ks);
}

template <bool BF>
static void sk_launch_v(float *y, const void *x, const void *w, int T, int N, int C8, int v, cudaStream_t st) {
    if (T <= 8) {
        if (v == 1) sk_launch<1, 4, 2, BF>(y, x, w, T, N, C8, st);
        else if (v == 2) sk_launch<1, 4, 3, BF>(y, x, w, T, N, C8, st);
        else sk_launch<1, 2, 4, BF>(y, x, w, T, N, C8, st);
    } else {
        if (v == 1) sk_launch<2, 4, 2, BF>(y, x, w, T, N, C8, st);
        else if (v == 2) sk_launch<2, 2, 3, BF>(y, x, w, T, N, C8, st);
        else sk_launch<2, 2, 3, BF>(y, x, w, T, N, C8, st); /* U = 2 at 4 CTAs per SM spills */
    }
}

extern "C" cudaError_t kiln_cuda_gemm_skinny_ex(float *y, const void *x, const void *w, kiln_dtype wdt, int T, int N,
                                                int K, int variant, cudaStream_t st) {
    if ((wdt != KILN_DT_BF16 && wdt != KILN_DT_F16) || T < 1 || T > KILN_SKINNY_MAX_ROWS || N < 1 || K < 8 ||
        K % 8 != 0 || N > (1 << 30) || variant < 0 || variant > 3 || !y || !x || !w || ((uintptr_t)x & 15) ||
        ((uintptr_t)w & 15) || ((uintptr_t)y & 3))
        return cudaErrorInvalidValue;
    int v = variant;
    if (!v) { /* the current device's SM count (a cached runtime attribute) */
        int dev = 0, sms = 0;
        if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev))
            sms = 0;
        v = kiln_cuda_skinny_pick_variant(T, N, K, sms);
    }
    if (wdt == KILN_DT_BF16) sk_launch_v<true>(y, x, w, T, N, K / 8, v, st);
    else sk_launch_v<false>(y, x, w, T, N, K / 8, v, st);
    KILN_CUDA_CHECK_LAUNCH();
}

extern "C" cudaError_t kiln_cuda_gemm_skinny(float *y, const void *x, const void *w, kiln_dtype wdt, int T, int N,
                                             int K, cudaStream_t st) {
    return kiln_cuda_gemm_skinny_ex(y, x, w, wdt, T, N, K, 0, st);
}
