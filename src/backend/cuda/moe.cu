/* moe.cu: the mixture-of-experts FFN's kernels (moe.h has the math and the data layout).
 *
 *   moe_route_kernel    grid T, 1024 threads: up to 8 warps per expert's router dot product (f32,
 *                   strided K slices summed in a fixed order; the normed row recomputed in f32
 *                   from the residual when given), then
 *                   one thread's top-k and softmax, as src/backend/cpu/moe.c
 *   moe_sort_kernel     one block of 1024 threads: histogram, prefix sums (offs, toff), then a
 *                   stable placement of the pairs in chunks of 1024 (warp match + per-warp
 *                   counts in shared memory), so the permutation is the same on every run
 *   moe_expert_kernel   the grouped GEMM (gate|up with SwiGLU, or down): block = one row tile of
 *                   one expert x a column group; 8 warps, each holding 4 weight rows and
 *                   R x 4 f32 accumulators, lanes striding K in 16-byte vectors
 *   moe_expert_sk_kernel  the decode kernel (bf16 / f16): block = one row tile of 16 or 32 rows
 *                   of one expert x a column block; each warp streams 16 weight rows (a K slice)
 *                   once as mma.sync's A operand, the slices summed in a fixed order
 *   moe_expert_tc_kernel  the same on tensor cores (mma.sync m16n8k16, bf16 / f16) for tiles of
 *                   16 rows, in steps with many rows per expert (prefill; moe.h)
 *   moe_combine_kernel  grid T: the weighted sum of a row's expert outputs, in expert id order
 * No kernel here is launched with PDL: the kernels after them (add_rmsnorm) wait for the whole
 * grid before reading (cuda_dev.cuh kiln_pdl_wait), which a plain launch also satisfies. */
#include "backend/cuda/moe.h"
#include "backend/cuda/cuda_dev.cuh"

#define R KILN_MOE_TILE_ROWS
#define TCR KILN_MOE_TC_TILE_ROWS
#define EXPERT_WARPS 8
#define TC_WARPS 4
#define ROUTE_THREADS 1024 /* moe_route_kernel: 32 warps */
#define ROUTE_MAX_WPE 8     /* at most 8 warps (K slices) per expert */

/* 8 elements of a dense array from element i (i % 8 == 0; 16-byte aligned rows) as f32 */
static __device__ __forceinline__ void ld8(kiln_dtype dt, const void *p, int64_t i, float *v) {
    if (dt == KILN_DT_F32) {
        const float4 *q = (const float4 *)((const float *)p + i);
        float4 a = __ldg(q), b = __ldg(q + 1);
        v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
        return;
    }
    uint4 u = __ldg((const uint4 *)((const uint16_t *)p + i));
    uint32_t w[4] = {u.x, u.y, u.z, u.w};
    for (int k = 0; k < 4; k++) {
        if (dt == KILN_DT_BF16) {
            v[2 * k] = __uint_as_float(w[k] << 16);
            v[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
        } else {
            __half2 h = *(const __half2 *)&w[k];
            float2 f = __half22float2(h);
            v[2 * k] = f.x, v[2 * k + 1] = f.y;
        }
    }
}

/* ---- routing ---------------------------------------------------------------------------------- */

static __global__ void __launch_bounds__(ROUTE_THREADS) moe_route_kernel(const void *xn, const float *xres, const float *nw, float eps,
                                        const void *router, kiln_dtype dt, int D, int E, int K, int32_t *sel,
                                        float *wts) {
    __shared__ float lg[KILN_MOE_MAX_EXPERTS];
    __shared__ float part[KILN_MOE_MAX_EXPERTS][ROUTE_MAX_WPE]; /* [expert][K slice] partial dots */
    __shared__ float red[32];
    int t = blockIdx.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw_ = blockDim.x >> 5;
    const int64_t xo = (int64_t)t * D;
    float inv = 0.0f;
    if (xres) { /* the normed row in f32, as the CPU's rmsnorm: w * (x * (1 / sqrt(mean(x^2) + eps))) */
        float ss = 0.0f;
        for (int i = threadIdx.x; i < D; i += blockDim.x) ss = fmaf(xres[xo + i], xres[xo + i], ss);
        ss = kiln_block_sum(ss, red);
        inv = 1.0f / sqrtf(ss / (float)D + eps);
    }
    /* wpe warps per expert, each a strided K slice, so that a few experts still keep every warp's
     * loads in flight (8 experts at T = 1 were one latency-bound warp each: ~19 us a layer); wpe
     * depends only on E and the block size, so a row's sums keep one fixed order */
    int wpe = nw_ / E < 1 ? 1 : nw_ / E > ROUTE_MAX_WPE ? ROUTE_MAX_WPE : nw_ / E;
    int groups = nw_ / wpe, g = warp / wpe, sub = warp % wpe;
    for (int e = g; g < groups && e < E; e += groups) {
        const int64_t wo = (int64_t)e * D;
        float s = 0.0f;
#pragma unroll 2
        for (int i = (sub * 32 + lane) * 8; i < D; i += 256 * wpe) {
            float a[8], b[8];
            if (xres)
                for (int k = 0; k < 8; k++) a[k] = nw[i + k] * (xres[xo + i + k] * inv);
            else
                ld8(dt, xn, xo + i, a);
            ld8(dt, router, wo + i, b);
            for (int k = 0; k < 8; k++) s = fmaf(a[k], b[k], s);
        }
        s = kiln_warp_sum(s);
        if (lane == 0) part[e][sub] = s;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x) { /* the slices in order */
        float s = 0.0f;
        for (int j = 0; j < wpe; j++) s += part[e][j];
        lg[e] = s;
    }
    __syncthreads();
    if (threadIdx.x != 0) return;
    int32_t s[KILN_MOE_MAX_USED];
    for (int j = 0; j < K; j++) { /* the largest not yet taken, lower id on ties (NaN: never larger) */
        int best = -1;
        for (int e = 0; e < E; e++) {
            int taken = 0;
            for (int i = 0; i < j; i++) taken |= s[i] == e;
            if (!taken && (best < 0 || lg[e] > lg[best])) best = e;
        }
        s[j] = best;
    }
    double mx = lg[s[0]], sum = 0.0, ex[KILN_MOE_MAX_USED];
    for (int j = 0; j < K; j++) sum += ex[j] = exp((double)lg[s[j]] - mx);
    for (int j = 0; j < K; j++) {
        sel[(int64_t)t * K + j] = s[j];
        wts[(int64_t)t * K + j] = (float)(ex[j] / sum);
    }
}

/* ---- counting sort by expert ---------------------------------------------------------------- */

static __global__ void __launch_bounds__(1024) moe_sort_kernel(const int32_t *sel, int P, int K, int E, int32_t *pos,
                                                               int32_t *src, int32_t *offs, int32_t *toff,
                                                               int32_t *toff16, int32_t *toff32) {
    __shared__ int cnt[KILN_MOE_MAX_EXPERTS], cur[KILN_MOE_MAX_EXPERTS];
    __shared__ int wc[32][KILN_MOE_MAX_EXPERTS + 1]; /* per warp, pairs of each expert in the chunk */
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    for (int e = tid; e < E; e += blockDim.x) cnt[e] = 0;
    __syncthreads();
    for (int p = tid; p < P; p += blockDim.x) atomicAdd(&cnt[sel[p]], 1);
    __syncthreads();
    if (tid == 0) {
        int o = 0, to = 0, to16 = 0, to32 = 0;
        for (int e = 0; e < E; e++) {
            offs[e] = o;
            toff[e] = to;
            toff16[e] = to16;
            toff32[e] = to32;
            cur[e] = o;
            o += cnt[e];
            to += (cnt[e] + R - 1) / R;
            to16 += (cnt[e] + TCR - 1) / TCR;
            to32 += (cnt[e] + 31) / 32;
        }
        offs[E] = o;
        toff[E] = to;
        toff16[E] = to16;
        toff32[E] = to32;
    }
    __syncthreads();
    unsigned lt = (1u << lane) - 1u;
    for (int base = 0; base < P; base += blockDim.x) {
        for (int i = tid; i < 32 * E; i += blockDim.x) wc[i / E][i % E] = 0;
        __syncthreads();
        int p = base + tid, ok = p < P, e = ok ? sel[p] : E; /* E: the idle threads' own group */
        unsigned m = __match_any_sync(0xffffffffu, e);
        int rank = __popc(m & lt);
        if (ok && rank == 0) wc[warp][e] = __popc(m);
        __syncthreads();
        if (ok) {
            int b = cur[e];
            for (int w = 0; w < warp; w++) b += wc[w][e];
            pos[p] = b + rank;
            src[b + rank] = p / K;
        }
        __syncthreads();
        for (int x = tid; x < E; x += blockDim.x) {
            int s = 0;
            for (int w = 0; w < 32; w++) s += wc[w][x];
            cur[x] += s;
        }
        __syncthreads();
    }
}

/* ---- grouped expert GEMM ---------------------------------------------------------------------- */

/* glu = 1: x rows xn[src[i]] ([*][K = D]), w = w_gu ([E][2F][D]), column f of this launch reads
 *          gate row f and up row F + f, out = act[i][f] = silu(g) u in dt ([P][F]); a warp takes
 *          2 columns (4 weight rows).
 * glu = 0: x rows act[i] ([P][K = F]), w = w_down ([E][D][F]), out = y[i][n] f32 ([P][D]); a
 *          warp takes 4 columns.
 * N: output columns (F or D). */
static __global__ void __launch_bounds__(EXPERT_WARPS * 32)
    moe_expert_kernel(const void *x, const int32_t *src, const void *w, kiln_dtype dt, int K, int N, int glu,
                  const int32_t *offs, const int32_t *toff, int E, void *out) {
    int tile = blockIdx.x;
    if (tile >= toff[E]) return; /* past the last tile of this step's routing */
    int e = 0;
    while (toff[e + 1] <= tile) e++; /* toff is non-decreasing; tile < toff[E] */
    int r0 = offs[e] + (tile - toff[e]) * R, nr = offs[e + 1] - r0;
    if (nr > R) nr = R;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int cols = glu ? 2 : 4;
    int c0 = (blockIdx.y * EXPERT_WARPS + warp) * cols;
    if (c0 >= N) return;
    /* the warp's 4 weight rows (a row past N repeats a valid one; its result is not stored) */
    int64_t wrow[4];
    int64_t ebase = (int64_t)e * (glu ? 2 * (int64_t)N : (int64_t)N) * K;
    for (int q = 0; q < 4; q++) {
        int c = glu ? c0 + (q & 1) : c0 + q;
        if (c >= N) c = N - 1;
        int64_t row = glu && q >= 2 ? (int64_t)N + c : c;
        wrow[q] = ebase + row * K;
    }
    int64_t xrow[R];
    for (int r = 0; r < R; r++) {
        int i = r0 + (r < nr ? r : 0);
        xrow[r] = (int64_t)(glu ? src[i] : i) * K;
    }
    float acc[R][4];
    for (int r = 0; r < R; r++)
        for (int q = 0; q < 4; q++) acc[r][q] = 0.0f;
    for (int k = lane * 8; k < K; k += 256) {
        float wv[4][8];
        for (int q = 0; q < 4; q++) ld8(dt, w, wrow[q] + k, wv[q]);
        for (int r = 0; r < R; r++) {
            if (r >= nr) break;
            float xv[8];
            ld8(dt, x, xrow[r] + k, xv);
            for (int q = 0; q < 4; q++)
                for (int j = 0; j < 8; j++) acc[r][q] = fmaf(xv[j], wv[q][j], acc[r][q]);
        }
    }
    for (int r = 0; r < R; r++) {
        if (r >= nr) break;
        float v[4];
        for (int q = 0; q < 4; q++) v[q] = kiln_warp_sum(acc[r][q]);
        if (lane != 0) continue;
        int64_t o = (int64_t)(r0 + r) * N;
        if (glu) {
            for (int q = 0; q < 2; q++)
                if (c0 + q < N) kiln_st(dt, out, o + c0 + q, kiln_silu_mul(v[q], v[q + 2]));
        } else {
            for (int q = 0; q < 4; q++)
                if (c0 + q < N) ((float *)out)[o + c0 + q] = v[q];
        }
    }
}

/* ---- grouped expert GEMM on tensor cores (16-bit dtypes) ------------------------------------- */

/* The same products as moe_expert_kernel for tiles of up to 16 rows, with mma.sync m16n8k16
 * (f32 accumulators), fragments loaded straight from global memory with 16-byte loads (A rows
 * through L1, shared by the block's warps; weights read once per tile). Per warp: 16 rows x 4
 * n-blocks of 8 weight rows, i.e. glu: 16 output columns (gate n-blocks 0, 1 and up n-blocks 2,
 * 3 of the same columns), down: 32 columns. K % 32 == 0.
 * Fragment layouts (PTX m16n8k16.row.col, g = lane / 4, q = lane % 4; skinny.cu has them in
 * full): A a0 = (row g, k slots 2q, 2q+1), a1 = (row g+8, same), a2 / a3 = (slots 2q+8, 2q+9);
 * B b0 = (slots 2q, 2q+1; column g), b1 = (slots 2q+8, 2q+9); C c0, c1 = (row g, columns 2q,
 * 2q+1), c2, c3 = (row g+8, same). The 16 slots need not be 16 consecutive k, A and B only have
 * to agree: in a chunk of 32 k, lane (g, q) loads k0 + 8q .. + 7 of its rows (uint4 u[0..3], two
 * k per register), and step h = 0, 1 maps slots 2q, 2q+1 to k0 + 8q + 4h + 0, 1 (u[2h]) and
 * slots 2q+8, 2q+9 to k0 + 8q + 4h + 2, 3 (u[2h+1]). */
static __device__ __forceinline__ uint32_t u4at(const uint4 &v, int i) {
    return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

template <bool BF>
static __global__ void __launch_bounds__(TC_WARPS * 32)
    moe_expert_tc_kernel(const void *x, const int32_t *src, const void *w, int K, int N, int glu, const int32_t *offs,
                         const int32_t *toff16, int E, void *out, kiln_dtype odt) {
    int tile = blockIdx.x;
    if (tile >= toff16[E]) return;
    int e = 0;
    while (toff16[e + 1] <= tile) e++;
    int r0 = offs[e] + (tile - toff16[e]) * TCR, nr = offs[e + 1] - r0;
    if (nr > TCR) nr = TCR;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, q = lane & 3;
    int cols = glu ? 16 : 32;
    int c0 = (blockIdx.y * TC_WARPS + warp) * cols;
    if (c0 >= N) return;
    const uint16_t *W = (const uint16_t *)w + (int64_t)e * (glu ? 2 * (int64_t)N : (int64_t)N) * K;
    const uint4 *brow[4];
    for (int j = 0; j < 4; j++) {
        int c = (glu ? c0 + (j & 1) * 8 : c0 + j * 8) + g;
        if (c >= N) c = N - 1; /* read a valid row; its column is not stored */
        int64_t row = glu && j >= 2 ? (int64_t)N + c : c;
        brow[j] = (const uint4 *)(W + row * K + 8 * q);
    }
    int ra = g < nr ? g : 0, rb = g + 8 < nr ? g + 8 : 0; /* rows past the tile read row 0, not stored */
    const uint16_t *X = (const uint16_t *)x;
    const uint4 *a0p = (const uint4 *)(X + (int64_t)(glu ? src[r0 + ra] : r0 + ra) * K + 8 * q);
    const uint4 *a1p = (const uint4 *)(X + (int64_t)(glu ? src[r0 + rb] : r0 + rb) * K + 8 * q);
    float acc[4][4];
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
        for (int i = 0; i < 4; i++) acc[j][i] = 0.0f;
    for (int k = 0; k < K / 8; k += 4) { /* k in uint4 units: 32 elements per iteration */
        uint4 xa = __ldg(a0p + k), xb = __ldg(a1p + k), wv[4];
#pragma unroll
        for (int j = 0; j < 4; j++) wv[j] = __ldg(brow[j] + k);
#pragma unroll
        for (int h = 0; h < 2; h++) {
            uint32_t a[4] = {u4at(xa, 2 * h), u4at(xb, 2 * h), u4at(xa, 2 * h + 1), u4at(xb, 2 * h + 1)};
#pragma unroll
            for (int j = 0; j < 4; j++) kiln_mma16816<BF>(acc[j], a, u4at(wv[j], 2 * h), u4at(wv[j], 2 * h + 1));
        }
    }
#pragma unroll
    for (int h = 0; h < 2; h++) { /* h = 0: row g (acc[.][0..1]), 1: row g + 8 (acc[.][2..3]) */
        int r = g + 8 * h;
        if (r >= nr) continue;
        int64_t o = (int64_t)(r0 + r) * N;
#pragma unroll
        for (int j = 0; j < (glu ? 2 : 4); j++)
#pragma unroll
            for (int i = 0; i < 2; i++) {
                int c = c0 + 8 * j + 2 * q + i;
                if (c >= N) continue;
                if (glu) kiln_st(odt, out, o + c, kiln_silu_mul(acc[j][2 * h + i], acc[j + 2][2 * h + i]));
                else ((float *)out)[o + c] = acc[j][2 * h + i];
            }
    }
}

/* ---- decode expert kernel: each routed expert's weights streamed once, on tensor cores ------- */

/* For steps with few rows per expert (decode): the same products as moe_expert_kernel, written
 * like skinny.cu (read it for the fragment layouts): the weights are the mma's A operand (16
 * weight rows per warp), the tile's x rows its B operand (n-tiles of 8 rows: NT = 2 for tiles of
 * 16 rows, 4 for 32), so a warp's loads are a pure stream of its 16 weight rows (16-byte loads
 * that skip L1 with an L2 evict_first policy, 2 U per lane in flight) and x rows past the tile's
 * nr are never loaded. Work split: a "group" is 16 weight rows (glu: gate rows j .. j + 7 then up
 * rows j .. j + 7 of columns j = 8 grp .. + 7, so a lane's C fragment holds gate and up of the
 * same (row, column) and SwiGLU needs no exchange; down: output columns 16 grp .. + 15); K is cut
 * into KS slices (skinny.cu's k_slices: from K alone), warp w of a block takes slice w % KS of
 * group blockIdx.y (8 / KS) + w / KS, and the slices are added in shared memory in slice order.
 * Grid: (row tiles of this step's worst case, column blocks); a block finds its expert from
 * toffn (tiles of 8 NT rows) and blocks past the last tile exit at once, so an expert with no
 * rows costs nothing and the grid depends only on T.
 * Bits: chains of SK_CHAIN quad chunks (aligned to the slice start) into a zeroed tile, added
 * to the accumulator in f32; every choice depends on K alone and a column of D only on its own
 * column of B: a row gets the same bits in tiles of 16 or 32 rows, alone or among any others. */
#define SKE_WARPS 8
#define SKE_CHAIN 2
#ifndef SKE_MIN_SLICE_Q
#define SKE_MIN_SLICE_Q 64 /* quad chunks (32 k) per K slice at least: 2048 k */
#endif

/* the expert whose tiles hold tile: #{j in 1 .. E - 1 : toffn[j] <= tile} (toffn is
 * non-decreasing and tile < toffn[E]), every toffn[j] loaded at once by the warp's lanes: one
 * load latency before the weight stream can start, not E dependent ones */
static __device__ __forceinline__ int ske_expert_of(const int32_t *toffn, int E, int tile) {
    int lane = threadIdx.x & 31, e = 0;
    for (int j0 = 1; j0 < E; j0 += 32) {
        int j = j0 + lane, v = j < E && toffn[j] <= tile;
        e += __popc(__ballot_sync(0xffffffffu, v));
    }
    return e;
}

#ifndef SKE_U32
#define SKE_U32 4 /* quad chunks per iteration of the 32-row tiles (16-row tiles: 4 too) */
#endif

static __device__ __forceinline__ uint32_t ske_u(const uint4 &v, int i) {
    return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

template <int NT, int U, bool BF>
static __global__ void __launch_bounds__(SKE_WARPS * 32, 2)
    moe_expert_sk_kernel(const void *x, const int32_t *src, const void *w, int K, int N, int glu, const int32_t *offs,
                         const int32_t *toffn, int E, int KS, void *out, kiln_dtype odt) {
    __shared__ float red[SKE_WARPS][NT * 4][32]; /* partial tiles, lane-minor */
    constexpr int TR = 8 * NT;
    int tile = blockIdx.x, e = ske_expert_of(toffn, E, tile); /* loads issued with toffn[E]'s */
    if (tile >= toffn[E]) return; /* block-uniform: past the last tile of this step's routing */
    int r0 = offs[e] + (tile - toffn[e]) * TR, nr = offs[e + 1] - r0;
    if (nr > TR) nr = TR;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gid = lane >> 2, tig = lane & 3;
    const int s = warp & (KS - 1);
    const int grp = (int)blockIdx.y * (SKE_WARPS / KS) + warp / KS;
    const int C8 = K / 8, Q = (C8 + 3) >> 2; /* 16-byte chunks per row, quad chunks of 32 k */
    const int qa = (int)((int64_t)s * Q / KS), qb = (int)((int64_t)(s + 1) * Q / KS);
    int ra, rb, oka, okb, live;
    if (glu) { /* gate row j, up row N + j */
        int j = 8 * grp + gid;
        ra = j, rb = N + j, oka = okb = j < N, live = 8 * grp < N;
    } else {
        ra = 16 * grp + gid, rb = ra + 8, oka = ra < N, okb = rb < N, live = 16 * grp < N;
    }
    const uint16_t *W = (const uint16_t *)w + (int64_t)e * (glu ? 2 * (int64_t)N : (int64_t)N) * K;
    const uint4 *wa_p = (const uint4 *)(W + (int64_t)(oka ? ra : 0) * K) + tig; /* rows >= N: never loaded */
    const uint4 *wb_p = (const uint4 *)(W + (int64_t)(okb ? rb : 0) * K) + tig;
    const uint4 *x_p[NT];
    int okx[NT];
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        int t = 8 * nt + gid, i = r0 + (t < nr ? t : 0); /* rows past the tile: never loaded */
        x_p[nt] = (const uint4 *)((const uint16_t *)x + (int64_t)(glu ? src[i] : i) * K) + tig;
        okx[nt] = t < nr;
    }
    uint64_t pol;
    asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(pol));
    float acc[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
    if (live) { /* warp-uniform */
        for (int q = qa; q < qb; q += U) {
            uint4 wa[U], wb[U], xv[NT][U];
#pragma unroll
            for (int u = 0; u < U; u++) {
                int c = 4 * (q + u), ok = q + u < qb && c + tig < C8;
                wa[u] = kiln_ld_stream16(wa_p + c, ok & oka, pol);
                wb[u] = kiln_ld_stream16(wb_p + c, ok & okb, pol);
            }
#pragma unroll
            for (int u = 0; u < U; u++) {
                int c = 4 * (q + u), ok = q + u < qb && c + tig < C8;
#pragma unroll
                for (int nt = 0; nt < NT; nt++) xv[nt][u] = kiln_ld_nc16(x_p[nt] + c, ok & okx[nt]);
            }
#pragma unroll
            for (int u0 = 0; u0 < U; u0 += SKE_CHAIN) {
                float tmp[NT][4];
#pragma unroll
                for (int nt = 0; nt < NT; nt++) tmp[nt][0] = tmp[nt][1] = tmp[nt][2] = tmp[nt][3] = 0.0f;
#pragma unroll
                for (int u = u0; u < u0 + SKE_CHAIN; u++) {
                    if (q + u < qb) {
#pragma unroll
                        for (int h = 0; h < 2; h++)
#pragma unroll
                            for (int nt = 0; nt < NT; nt++)
                                kiln_mma16816<BF>(tmp[nt], ske_u(wa[u], 2 * h), ske_u(wb[u], 2 * h),
                                                  ske_u(wa[u], 2 * h + 1), ske_u(wb[u], 2 * h + 1),
                                                  ske_u(xv[nt][u], 2 * h), ske_u(xv[nt][u], 2 * h + 1));
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
    if (KS > 1) { /* fixed-order sum of the group's slices: 0 + 1 + ... + KS - 1 */
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
    if (!live) return;
    /* c[nt][2 hh + i] = (row t = 8 nt + 2 tig + i of the tile, weight row gid + 8 hh of the group) */
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int i = 0; i < 2; i++) {
            int t = 8 * nt + 2 * tig + i;
            if (t >= nr) continue;
            int64_t o = (int64_t)(r0 + t) * N;
            if (glu) {
                if (oka) kiln_st(odt, out, o + ra, kiln_silu_mul(acc[nt][i], acc[nt][2 + i]));
            } else {
                if (oka) ((float *)out)[o + ra] = acc[nt][i];
                if (okb) ((float *)out)[o + rb] = acc[nt][2 + i];
            }
        }
}

/* K slices per group, from K alone: slices of >= 32 SKE_MIN_SLICE_Q k, a power of two <= 8.
 * skinny.cu takes 512 k; here longer slices pay: a block's start (the expert lookup, then the
 * rows' offsets and tokens) is amortised over more weights, and the 8 / KS warps of a block
 * that share a slice share its x fragments through L1. Mixtral-8x7B shape on the H200 (decode
 * B = 1 / 16 / 64, % of floor): 512 k 69 / 82 / 60, 1024 k 71 / 86 / 68, 2048 k 69 / 87 / 74. */
static int ske_k_slices(int K) {
    int Q = (K / 8 + 3) / 4, ks = 1;
    while (ks < SKE_WARPS && Q / (2 * ks) >= SKE_MIN_SLICE_Q) ks *= 2;
    return ks;
}

template <int NT, int U, bool BF>
static void ske_launch(const kiln_cuda_moe_args *a, const int32_t *src, const int32_t *offs, const int32_t *toffn,
                       int tiles, cudaStream_t st) {
    for (int glu = 1; glu >= 0; glu--) {
        int K = glu ? a->D : a->F, N = glu ? a->F : a->D, ks = ske_k_slices(K), gpb = SKE_WARPS / ks;
        int groups = glu ? (N + 7) / 8 : (N + 15) / 16;
        dim3 g((unsigned)tiles, (unsigned)((groups + gpb - 1) / gpb));
        moe_expert_sk_kernel<NT, U, BF><<<g, SKE_WARPS * 32, 0, st>>>(glu ? a->xn : a->act, src,
                                                                      glu ? a->w_gu : a->w_down, K, N, glu, offs,
                                                                      toffn, a->E, ks, glu ? a->act : (void *)a->y,
                                                                      a->dt);
    }
}

/* ---- combine ---------------------------------------------------------------------------------- */

static __global__ void moe_combine_kernel(const float *y, const int32_t *sel, const int32_t *pos, const float *wts, int K,
                                      int D, float *out) {
    __shared__ int ord_pos[KILN_MOE_MAX_USED];
    __shared__ float ord_w[KILN_MOE_MAX_USED];
    int t = blockIdx.x;
    if (threadIdx.x == 0) { /* the row's slots in expert id order (the CPU's summation order) */
        int32_t j_of[KILN_MOE_MAX_USED];
        for (int j = 0; j < K; j++) j_of[j] = j;
        for (int a = 1; a < K; a++)
            for (int b = a; b > 0 && sel[(int64_t)t * K + j_of[b]] < sel[(int64_t)t * K + j_of[b - 1]]; b--) {
                int32_t tmp = j_of[b];
                j_of[b] = j_of[b - 1];
                j_of[b - 1] = tmp;
            }
        for (int j = 0; j < K; j++) {
            ord_pos[j] = pos[(int64_t)t * K + j_of[j]];
            ord_w[j] = wts[(int64_t)t * K + j_of[j]];
        }
    }
    __syncthreads();
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float s = 0.0f;
        for (int j = 0; j < K; j++) s += ord_w[j] * y[(int64_t)ord_pos[j] * D + d];
        out[(int64_t)t * D + d] = s;
    }
}

/* ---- launch ------------------------------------------------------------------------------------ */

extern "C" void kiln_cuda_moe_scratch_bytes(int max_rows, int D, int F, int E, int K, kiln_dtype dt, size_t *idx,
                                            size_t *wts, size_t *act, size_t *y) {
    size_t P = (size_t)max_rows * (size_t)K;
    *idx = (3 * P + 4 * ((size_t)E + 1)) * sizeof(int32_t);
    *wts = P * sizeof(float);
    *act = P * (size_t)F * (dt == KILN_DT_F32 ? 4 : 2);
    *y = P * (size_t)D * sizeof(float);
}

extern "C" cudaError_t kiln_cuda_moe_ffn(const kiln_cuda_moe_args *a, cudaStream_t st) {
    if (a->T <= 0) return cudaSuccess;
    if (a->E < 1 || a->E > KILN_MOE_MAX_EXPERTS || a->K < 1 || a->K > KILN_MOE_MAX_USED || a->K > a->E ||
        a->D % 8 || a->F % 8)
        return cudaErrorInvalidValue;
    int P = a->T * a->K;
    int32_t *sel = a->idx, *pos = sel + P, *src = pos + P, *offs = src + P, *toff = offs + a->E + 1;
    int32_t *toff16 = toff + a->E + 1, *toff32 = toff16 + a->E + 1;
    moe_route_kernel<<<a->T, ROUTE_THREADS, 0, st>>>(a->xn, a->x_res, a->norm_w, a->eps, a->router, a->dt, a->D, a->E, a->K,
                                           sel, a->wts);
    moe_sort_kernel<<<1, 1024, 0, st>>>(sel, P, a->K, a->E, pos, src, offs, toff, toff16, toff32);
    /* the expert kernel (moe.h, tc): 16-bit weights take the decode kernel (tiles of 16 rows
     * below KILN_MOE_SK32_MIN_ROWS rows per expert on average, else of 32) up to
     * KILN_MOE_TC_MIN_ROWS rows per expert on average, the tensor-core GEMM from there (tc == 1,
     * D and F multiples of 32); in batch-invariant mode (tc == 0) the decode kernel at every
     * size (its bits do not depend on the tile size); f32 weights CUDA cores */
    int b16 = a->dt != KILN_DT_F32, tc_ok = b16 && a->D % 32 == 0 && a->F % 32 == 0;
    int path; /* 0 CUDA cores, 1 tensor-core GEMM, 2 decode kernel, tiles of 16, 3 of 32 */
    if (!b16 || a->tc == 3) path = 0;
    else if (a->tc == 2) path = tc_ok ? 1 : 0;
    else if (a->tc == 4) path = 3;
    else if (a->tc == 1 && tc_ok && P >= KILN_MOE_TC_MIN_ROWS * a->E) path = 1;
    else path = P < KILN_MOE_SK32_MIN_ROWS * a->E ? 2 : 3;
    int tr = path == 0 ? R : path == 3 ? 32 : TCR;
    /* tiles: sum over experts of ceil(n_e / tr) <= ceil(P / tr) + E - 1, and <= P */
    int tiles = (P + tr - 1) / tr + a->E - 1;
    if (tiles > P) tiles = P;
    if (path >= 2) {
        int bf = a->dt == KILN_DT_BF16;
        if (path == 2 && bf) ske_launch<2, 4, true>(a, src, offs, toff16, tiles, st);
        else if (path == 2) ske_launch<2, 4, false>(a, src, offs, toff16, tiles, st);
        else if (bf) ske_launch<4, SKE_U32, true>(a, src, offs, toff32, tiles, st);
        else ske_launch<4, SKE_U32, false>(a, src, offs, toff32, tiles, st);
    } else if (path == 1) {
        int cpb_gu = TC_WARPS * 16, cpb_d = TC_WARPS * 32; /* columns per block */
        dim3 g_gu((unsigned)tiles, (unsigned)((a->F + cpb_gu - 1) / cpb_gu));
        dim3 g_d((unsigned)tiles, (unsigned)((a->D + cpb_d - 1) / cpb_d));
        if (a->dt == KILN_DT_BF16) {
            moe_expert_tc_kernel<true><<<g_gu, TC_WARPS * 32, 0, st>>>(a->xn, src, a->w_gu, a->D, a->F, 1, offs, toff16,
                                                                       a->E, a->act, a->dt);
            moe_expert_tc_kernel<true><<<g_d, TC_WARPS * 32, 0, st>>>(a->act, src, a->w_down, a->F, a->D, 0, offs,
                                                                      toff16, a->E, a->y, a->dt);
        } else {
            moe_expert_tc_kernel<false><<<g_gu, TC_WARPS * 32, 0, st>>>(a->xn, src, a->w_gu, a->D, a->F, 1, offs,
                                                                        toff16, a->E, a->act, a->dt);
            moe_expert_tc_kernel<false><<<g_d, TC_WARPS * 32, 0, st>>>(a->act, src, a->w_down, a->F, a->D, 0, offs,
                                                                       toff16, a->E, a->y, a->dt);
        }
    } else {
        int cpb_gu = EXPERT_WARPS * 2, cpb_d = EXPERT_WARPS * 4; /* columns per block */
        dim3 g_gu((unsigned)tiles, (unsigned)((a->F + cpb_gu - 1) / cpb_gu));
        dim3 g_d((unsigned)tiles, (unsigned)((a->D + cpb_d - 1) / cpb_d));
        moe_expert_kernel<<<g_gu, EXPERT_WARPS * 32, 0, st>>>(a->xn, src, a->w_gu, a->dt, a->D, a->F, 1, offs, toff,
                                                              a->E, a->act);
        moe_expert_kernel<<<g_d, EXPERT_WARPS * 32, 0, st>>>(a->act, src, a->w_down, a->dt, a->F, a->D, 0, offs, toff,
                                                             a->E, a->y);
    }
    moe_combine_kernel<<<a->T, 256, 0, st>>>(a->y, sel, pos, a->wts, a->K, a->D, a->out);
    KILN_CUDA_CHECK_LAUNCH();
}
