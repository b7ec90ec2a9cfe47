/* attention.cu: causal GQA attention over the paged bf16 KV pool for a ragged batch, split over
 * the context (flash-decoding) so that short batches still fill the chip.
 *
 * Pass 1, attention_split_kernel, grid (T rows, KV heads, max_splits): one block serves all G
 * query heads that share a KV head (GQA: K/V are read once for the group). The context of row t
 * (n = pos[t] + 1 positions) is cut into ns = min(max_splits, ceil(n / min_w)) windows of
 * w = ceil(n / ns) rounded up to 16 positions (kiln_att_window); block z covers [z w, min((z+1) w, n))
 * and exits if that is empty. The windows depend only on the row's own position, so a decode
 * at 512 context gets ~16 windows x KV heads blocks (fills the chip at batch 1) and a row's
 * reduction order never depends on the batch. Tiles of 16
 * positions of K and V are staged in shared memory (f32), read through the sequence's block
 * table (block = table[j / bs], offset j % bs). Warp w serves heads g = w, w + 4, ...; lane l owns
 * dims l, l + 32, ...; per tile: the 16 scores (q . k_j) / sqrt(hd) by one recursive-halving
 * exchange across the warp, then the online softmax update for the tile (running max m, sum l,
 * unnormalised accumulator acc) in f32. The window's (m, l, acc) go
 * to scratch.
 * Pass 2, attention_combine_kernel, grid (T, H): merges the windows of a row in window order.
 * Windows depend only on pos[t], min_w and max_splits. The backend passes a max_splits that
 * shrinks as the batch grows (fewer, longer windows once the batch fills the chip) except in
 * batch-invariant mode, where it is fixed (16), so a row's result is the same in any batch (I6).
 * scratch: [T][H][max_splits][hd + 2] f32.
 * Sliding windows (kiln_cuda_kv.window > 0, per layer): a row's keys are lo .. p with
 * lo = max(0, p - window + 1) (att_first_key, the CPU's convention); the windows above cut
 * those n = p + 1 - lo positions instead of 0 .. p (block z covers [lo + z w, ...)), so no key
 * below lo and no block-table entry of a block wholly below it (released by the engine: the
 * null block 0) is ever read; the combine counts the windows from the same n. */
#include <math.h>
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/cuda_dev.cuh"
#include "util/fp8.h"

#define ATT_WARPS 4
#define ATT_MAX_HD 256

#define ATT_TILE 16

/* The first key a query at position p sees: 0, or p - window + 1 with a sliding window (the CPU's
 * attention.c: keys max(0, p - window + 1) .. p). Every pass-1 kernel cuts that range into its
 * windows (so keys below it, whose blocks the engine may have released, are never read), and
 * the combine counts the windows the same way. */
static __device__ __forceinline__ int att_first_key(int p, int window) {
    return window > 0 && p + 1 > window ? p + 1 - window : 0;
}
#define ATT_MAX_HPW 4 /* heads per warp: G <= 16 */
/* Compile-time shape of one instantiation: PL = dims per lane (hd <= 32 PL), HPW = heads per
 * warp (G <= 4 HPW); registers are sized for these, so hd 128 with G 4 (Devstral) keeps a small
 * footprint and many blocks per SM. ATT_CH: 16-byte chunks per thread per tile. */
#define ATT_PER_LANE PL
#define ATT_CH (PL / 2 > 0 ? PL / 2 : 1)

/* F8: the pool holds e4m3 codes; K and V are decoded into the f32 tiles as code * k_scale
 * (v_scale), the CPU's arithmetic (docs/fp8.md) */
template <int PL, int HPW, bool F8>
static __global__ void __launch_bounds__(ATT_WARPS * 32)
attention_split_kernel(float *scratch, const float *q, int q_stride, const void *pool, const int32_t *pos,
                       const int32_t *row_seq, const int32_t *block_table, int max_blocks, int T, int H, int KV, int hd,
                       int bs, int min_w, int max_splits, int rows_per_block, float scale, float k_scale,
                       float v_scale, int window) {
    __shared__ float s_k[ATT_TILE][32 * PL];
    __shared__ float s_v[ATT_TILE][32 * PL];
    kiln_pdl_trigger();
    kiln_pdl_wait(); /* PDL: q, the pool and the scratch are the step's */
    int kvh = blockIdx.y, z = blockIdx.z;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int G = H / KV;
    int64_t head_tile = (int64_t)bs * hd, kv_stride = (int64_t)KV * head_tile;
    int t_first = blockIdx.x * rows_per_block, t_last = min(t_first + rows_per_block, T);
    /* one row per block (rows_per_block = 1): its (row, head) slots are warp w's w, w + 4, ... */
    for (int ts = t_first; ts < t_last;) {
        int seq = row_seq[ts], te = ts + 1;
        int p_max = pos[ts];
        int lo = att_first_key(p_max, window);
        int split_w = kiln_att_window(p_max + 1 - lo, min_w, max_splits, ATT_TILE);
        int j_begin = lo + z * split_w;
        if (j_begin > p_max) { ts = te; continue; } /* the window lies beyond the row */
        int j_end_max = min(j_begin + split_w, p_max + 1);
        const int32_t *bt = block_table + (int64_t)seq * max_blocks;
        int n_slots = (te - ts) * G;

        float qv[HPW][ATT_PER_LANE], acc[HPW][ATT_PER_LANE], m[HPW], l[HPW];
        int j_end[HPW];
#pragma unroll
        for (int k = 0; k < HPW; k++) {
            int qi = warp + ATT_WARPS * k;
            int r = ts + qi / G, g = qi % G;
            int ok = qi < n_slots && pos[min(r, te - 1)] >= j_begin;
            j_end[k] = ok ? min(j_begin + split_w, pos[r] + 1) : j_begin; /* empty for inactive slots */
            const float *qr = q + (int64_t)min(r, te - 1) * q_stride + (int64_t)(kvh * G + g) * hd;
#pragma unroll
            for (int e = 0; e < ATT_PER_LANE; e++) {
                int d = lane + 32 * e;
                qv[k][e] = (ok && d < hd) ? qr[d] : 0.0f;
                acc[k][e] = 0.0f;
            }
            m[k] = -INFINITY;
            l[k] = 0.0f;
        }
        /* K/V tiles of 16 positions staged in shared memory (f32). Software pipeline: the next
         * tile's 16-byte chunks are loaded into registers (block id read by each thread from the
         * cached block table) while the current tile is computed, so the two dependent memory
         * round trips per tile overlap the arithmetic. */
        int cpr = hd / 8, nch = ATT_TILE * cpr;
        uint4 kr[ATT_CH], vr[ATT_CH];
#define ATT_LOAD_TILE(J0)                                                                              \
    _Pragma("unroll") for (int i = 0; i < ATT_CH; i++) {                                               \
        int c = threadIdx.x + i * ATT_WARPS * 32;                                                      \
        kr[i] = vr[i] = make_uint4(0, 0, 0, 0);                                                        \
        int jj = c / cpr, j = (J0) + jj;                                                               \
        if (c < nch && j < j_end_max) {                                                                \
            int d0 = (c - jj * cpr) * 8;                                                               \
            int64_t blk = bt[j / bs];                                                                  \
            int64_t ix = (blk * 2 * KV + kvh) * head_tile + (int64_t)(j % bs) * hd + d0;                \
            if (F8) {                                                                                  \
                uint2 a = *(const uint2 *)((const uint8_t *)pool + ix);                                \
                uint2 b = *(const uint2 *)((const uint8_t *)pool + ix + kv_stride);                    \
                kr[i] = make_uint4(a.x, a.y, 0, 0);                                                    \
                vr[i] = make_uint4(b.x, b.y, 0, 0);                                                    \
            } else {                                                                                   \
                kr[i] = *(const uint4 *)((const uint16_t *)pool + ix);                                 \
                vr[i] = *(const uint4 *)((const uint16_t *)pool + ix + kv_stride);                     \
            }                                                                                          \
        }                                                                                              \
    }
        ATT_LOAD_TILE(j_begin)
        for (int j0 = j_begin; j0 < j_end_max; j0 += ATT_TILE) {
            __syncthreads(); /* the previous tile's compute is done with shared memory */
#pragma unroll
            for (int i = 0; i < ATT_CH; i++) {
                int c = threadIdx.x + i * ATT_WARPS * 32;
                if (c < nch) {
                    int jj = c / cpr, d0 = (c - jj * cpr) * 8;
                    const uint16_t *kh = (const uint16_t *)&kr[i], *vh = (const uint16_t *)&vr[i];
                    const uint8_t *k8 = (const uint8_t *)&kr[i], *v8 = (const uint8_t *)&vr[i];
#pragma unroll
                    for (int u = 0; u < 8; u++) {
                        s_k[jj][d0 + u] = F8 ? kiln_e4m3_to_f32(k8[u]) * k_scale : kiln_bf16_bits_to_f32(kh[u]);
                        s_v[jj][d0 + u] = F8 ? kiln_e4m3_to_f32(v8[u]) * v_scale : kiln_bf16_bits_to_f32(vh[u]);
                    }
                }
            }
            __syncthreads();
            if (j0 + ATT_TILE < j_end_max) ATT_LOAD_TILE(j0 + ATT_TILE)
#pragma unroll
            for (int k = 0; k < HPW; k++) {
                int nk = min(ATT_TILE, j_end[k] - j0); /* this row's positions in the tile */
                if (nk <= 0) continue; /* done or inactive (a fully masked tile would change nothing) */
                /* scores of the tile's 16 positions at once: each lane sums its dims for every
                 * position, then a recursive-halving exchange (offsets 16, 8, 4, 2, 1) leaves the
                 * full dot of position (lane >> 1) in lanes 2j and 2j+1; the tree is fixed */
                float part[ATT_TILE];
#pragma unroll
                for (int jj = 0; jj < ATT_TILE; jj++) {
                    float a = 0.0f;
#pragma unroll
                    for (int e = 0; e < ATT_PER_LANE; e++) {
                        int d = lane + 32 * e;
                        if (d < hd) a += qv[k][e] * s_k[jj][d];
                    }
                    part[jj] = a;
                }
#pragma unroll
                for (int half = ATT_TILE / 2, off = 16; half >= 1; half /= 2, off /= 2) {
                    int hi = (lane & off) != 0;
#pragma unroll
                    for (int i = 0; i < half; i++) {
                        float mine = hi ? part[i + half] : part[i];
                        float other = hi ? part[i] : part[i + half];
                        part[i] = mine + __shfl_xor_sync(0xffffffffu, other, off);
                    }
                }
                float s = part[0] + __shfl_xor_sync(0xffffffffu, part[0], 1);
                int jpos = lane >> 1;
                s = jpos < nk ? s * scale : -INFINITY;
                float mx = s;
#pragma unroll
                for (int off = 2; off < 32; off *= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
                float mn = fmaxf(m[k], mx);
                float corr = expf(m[k] - mn); /* m = -inf the first time: 0 */
                float pj = jpos < nk ? expf(s - mn) : 0.0f;
                float ps = pj;
#pragma unroll
                for (int off = 2; off < 32; off *= 2) ps += __shfl_xor_sync(0xffffffffu, ps, off);
                l[k] = l[k] * corr + ps;
#pragma unroll
                for (int e = 0; e < ATT_PER_LANE; e++) acc[k][e] *= corr;
#pragma unroll
                for (int jj = 0; jj < ATT_TILE; jj++) {
                    float p = __shfl_sync(0xffffffffu, pj, 2 * jj);
                    if (jj >= nk) break; /* only this row's positions: the sum is the same in any group */
#pragma unroll
                    for (int e = 0; e < ATT_PER_LANE; e++) {
                        int d = lane + 32 * e;
                        if (d < hd) acc[k][e] += p * s_v[jj][d];
                    }
                }
                m[k] = mn;
            }
        }
#pragma unroll
        for (int k = 0; k < HPW; k++) {
            int qi = warp + ATT_WARPS * k;
            if (j_end[k] <= j_begin) continue;
            int r = ts + qi / G, g = qi % G;
            float *o = scratch + (((int64_t)r * H + kvh * G + g) * max_splits + z) * (hd + 2);
#pragma unroll
            for (int e = 0; e < ATT_PER_LANE; e++) {
                int d = lane + 32 * e;
                if (d < hd) o[d] = acc[k][e];
            }
            if (lane == 0) {
                o[hd] = m[k];
                o[hd + 1] = l[k];
            }
        }
        ts = te;
    }
}

/* Pass 1 for hd 64 / 128 / 256 and G <= 8 (attention_stream_kernel): same grid, windows and
 * scratch as attention_split_kernel, but K and V go straight from the pool into registers.
 * A position's K row (hd bf16) is read by LP = hd / 8 lanes, 16 bytes each, so a warp covers
 * PPW = 32 / LP positions per load and the 4 warps 4 PPW consecutive positions; U = 4 such steps
 * are loaded before any is used (16 x 16-byte loads in flight per lane). Each lane group keeps its
 * own online-softmax state (m, l, acc[G][8 dims]) for the G heads over the positions it saw;
 * the states of the 4 PPW groups are merged in shared memory in a fixed order at the end.
 * Scores: per head, the 8-dim partial dot of each lane, summed by an xor tree over the LP lanes
 * (fixed), times 1/sqrt(hd). Nothing depends on other rows: I6 holds. */
template <int HD, int G>
static __global__ void __launch_bounds__(ATT_WARPS * 32, G <= 4 ? 4 : 2)
attention_stream_kernel(float *scratch, const float *q, int q_stride, const uint16_t *pool, const int32_t *pos,
                        const int32_t *row_seq, const int32_t *block_table, int max_blocks, int H, int KV, int bs,
                        int min_w, int max_splits, float scale, int window) {
    constexpr int LP = HD / 8, PPW = 32 / LP, NG = ATT_WARPS * PPW, U = 4;
    __shared__ float s_m[NG][G], s_l[NG][G];
    __shared__ float s_acc[NG][G][HD];
    kiln_pdl_trigger();
    kiln_pdl_wait(); /* PDL: q, the pool and the scratch are the step's */
    int t = blockIdx.x, kvh = blockIdx.y, z = blockIdx.z;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int sub = lane / LP, d0 = (lane % LP) * 8, grp = warp * PPW + sub;
    int p = pos[t];
    int lo = att_first_key(p, window);
    int w = kiln_att_window(p + 1 - lo, min_w, max_splits, ATT_TILE);
    int j_begin = lo + z * w;
    if (j_begin > p) return; /* uniform over the block */
    int j_end = min(j_begin + w, p + 1);
    const int32_t *bt = block_table + (int64_t)row_seq[t] * max_blocks;
    int64_t head_tile = (int64_t)bs * HD, kv_stride = (int64_t)KV * head_tile;
    float qv[G][8], acc[G][8], m[G], l[G];
#pragma unroll
    for (int g = 0; g < G; g++) {
        const float4 *qr = (const float4 *)(q + (int64_t)t * q_stride + (int64_t)(kvh * G + g) * HD + d0);
        float4 a = qr[0], b = qr[1];
        qv[g][0] = a.x; qv[g][1] = a.y; qv[g][2] = a.z; qv[g][3] = a.w;
        qv[g][4] = b.x; qv[g][5] = b.y; qv[g][6] = b.z; qv[g][7] = b.w;
#pragma unroll
        for (int e = 0; e < 8; e++) acc[g][e] = 0.0f;
        m[g] = -INFINITY;
        l[g] = 0.0f;
    }
    for (int base = j_begin; base < j_end; base += U * NG) {
        uint4 kr[U], vr[U];
        bool ok[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            int j = base + u * NG + grp;
            ok[u] = j < j_end;
            kr[u] = vr[u] = make_uint4(0, 0, 0, 0);
            if (ok[u]) {
                int64_t blk = bt[j / bs];
                const uint16_t *kp = pool + (blk * 2 * KV + kvh) * head_tile + (int64_t)(j % bs) * HD + d0;
                kr[u] = *(const uint4 *)kp;
                vr[u] = *(const uint4 *)(kp + kv_stride);
            }
        }
        float sc[U][G];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const uint16_t *kh = (const uint16_t *)&kr[u];
            float kf[8];
#pragma unroll
            for (int e = 0; e < 8; e++) kf[e] = kiln_bf16_bits_to_f32(kh[e]);
#pragma unroll
            for (int g = 0; g < G; g++) {
                float a = 0.0f;
#pragma unroll
                for (int e = 0; e < 8; e++) a += qv[g][e] * kf[e];
#pragma unroll
                for (int off = LP / 2; off > 0; off >>= 1) a += __shfl_xor_sync(0xffffffffu, a, off);
                sc[u][g] = ok[u] ? a * scale : -INFINITY;
            }
        }
#pragma unroll
        for (int g = 0; g < G; g++) {
            float mx = sc[0][g];
#pragma unroll
            for (int u = 1; u < U; u++) mx = fmaxf(mx, sc[u][g]);
            float mn = fmaxf(m[g], mx);
            if (mn == -INFINITY) continue; /* nothing seen yet by this group */
            float corr = expf(m[g] - mn); /* m = -inf the first time: 0 */
            l[g] *= corr;
#pragma unroll
            for (int e = 0; e < 8; e++) acc[g][e] *= corr;
#pragma unroll
            for (int u = 0; u < U; u++) {
                float pu = ok[u] ? expf(sc[u][g] - mn) : 0.0f;
                const uint16_t *vh = (const uint16_t *)&vr[u];
                l[g] += pu;
#pragma unroll
                for (int e = 0; e < 8; e++) acc[g][e] += pu * kiln_bf16_bits_to_f32(vh[e]);
            }
            m[g] = mn;
        }
    }
    /* merge the NG groups' states (fixed order) into the window's (acc, m, l) per head */
#pragma unroll
    for (int g = 0; g < G; g++) {
        if (lane % LP == 0) {
            s_m[grp][g] = m[g];
            s_l[grp][g] = l[g];
        }
#pragma unroll
        for (int e = 0; e < 8; e++) s_acc[grp][g][d0 + e] = acc[g][e];
    }
    __syncthreads();
    for (int i = threadIdx.x; i < G * HD; i += blockDim.x) {
        int g = i / HD, d = i % HD;
        float M = -INFINITY;
#pragma unroll
        for (int k = 0; k < NG; k++) M = fmaxf(M, s_m[k][g]);
        float A = 0.0f, L = 0.0f;
#pragma unroll
        for (int k = 0; k < NG; k++) {
            float f = s_m[k][g] == -INFINITY ? 0.0f : expf(s_m[k][g] - M);
            A += s_acc[k][g][d] * f;
            L += s_l[k][g] * f;
        }
        float *o = scratch + (((int64_t)t * H + kvh * G + g) * max_splits + z) * (HD + 2);
        o[d] = A;
        if (d == 0) {
            o[HD] = M;
            o[HD + 1] = L;
        }
    }
}

/* Pass 2: one block per (row, head). Warp 0 reads the windows' (m, l) in parallel (lane z =
 * window z; at most 64 windows), reduces the max and the weighted sum by fixed xor trees and
 * leaves the weights f_z = exp(m_z - M) in shared memory; then each thread sums its dims over the
 * windows in window order. The order depends only on the row's window count.
 * xq (may be NULL; then hd % 32 == 0 and blockDim.x == hd, so each thread has one dim and a warp
 * 32 consecutive dims: one block of out's row): also the int8 GEMV blocks of the stored values
 * (kiln_q8_block, one element a lane: kiln_cuda_quantize_x's bits). */
static __global__ void attention_combine_kernel(void *out, kiln_dtype adt, const float *scratch, const int32_t *pos,
                                                int H, int hd, int min_w, int max_splits, int wr, int window,
                                                int8_t *xq, float *xd, float *xs) {
    __shared__ float s_f[64];
    __shared__ float s_invl;
    kiln_pdl_trigger();
    kiln_pdl_wait(); /* PDL: q, the pool and the scratch are the step's */
    int t = blockIdx.x, h = blockIdx.y;
    int n = pos[t] + 1 - att_first_key(pos[t], window); /* the positions the windows cut */
    int ns = (n - 1) / kiln_att_window(n, min_w, max_splits, wr) + 1;
    const float *base = scratch + ((int64_t)t * H + h) * max_splits * (hd + 2);
    if (threadIdx.x < 32) {
        int lane = threadIdx.x;
        float m0 = lane < ns ? base[(int64_t)lane * (hd + 2) + hd] : -INFINITY;
        float m1 = lane + 32 < ns ? base[(int64_t)(lane + 32) * (hd + 2) + hd] : -INFINITY;
        float l0 = lane < ns ? base[(int64_t)lane * (hd + 2) + hd + 1] : 0.0f;
        float l1 = lane + 32 < ns ? base[(int64_t)(lane + 32) * (hd + 2) + hd + 1] : 0.0f;
        float M = fmaxf(m0, m1);
        for (int o = 16; o > 0; o >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, o));
        float f0 = lane < ns ? expf(m0 - M) : 0.0f, f1 = lane + 32 < ns ? expf(m1 - M) : 0.0f;
        float L = l0 * f0 + l1 * f1;
        for (int o = 16; o > 0; o >>= 1) L += __shfl_xor_sync(0xffffffffu, L, o);
        s_f[lane] = f0;
        s_f[lane + 32] = f1;
        if (lane == 0) s_invl = 1.0f / L;
    }
    __syncthreads();
    float invL = s_invl;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float o = 0.0f;
#pragma unroll 4
        for (int z = 0; z < ns; z++) o += base[(int64_t)z * (hd + 2) + d] * s_f[z];
        int64_t i = (int64_t)t * H * hd + (int64_t)h * hd + d;
        float v = o * invL;
        kiln_st(adt, out, i, v);
        if (xq) { /* uniform over the block */
            float r = kiln_round_to(adt, v);
            kiln_q8_block<1>(&r, true, xq, xd, xs, i);
        }
    }
}

/* Resident blocks per SM of the pass-1 kernel kiln_cuda_attention launches for (hd, G): the
 * backend sizes the split so a decode batch is one wave. A host query, no device work: the
 * device's occupancy, capped by the target's shared memory per SM (t may be NULL: the device). */
extern "C" int kiln_cuda_attention_blocks_per_sm(int hd, int G, const kiln_cuda_target *t) {
    int n = 0;
    cudaError_t e = cudaErrorInvalidValue;
    struct cudaFuncAttributes fa;
#define ATT_OCC(HDV, GV)                                                                               \
    do {                                                                                               \
        e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, attention_stream_kernel<HDV, GV>, ATT_WARPS * 32, 0); \
        if (e == cudaSuccess && t && cudaFuncGetAttributes(&fa, attention_stream_kernel<HDV, GV>) == cudaSuccess) { \
            int m = kiln_cuda_target_smem_blocks(t, fa.sharedSizeBytes);                               \
            if (m < n) n = m;                                                                          \
        }                                                                                              \
    } while (0)
    if (hd == 128 && G == 4) ATT_OCC(128, 4);
    else if (hd == 128 && G == 1) ATT_OCC(128, 1);
    else if (hd == 128 && G == 2) ATT_OCC(128, 2);
    else if (hd == 128 && G == 8) ATT_OCC(128, 8);
    else if (hd == 64 && G == 4) ATT_OCC(64, 4);
    else if (hd == 64 && G == 1) ATT_OCC(64, 1);
#undef ATT_OCC
    return e == cudaSuccess && n > 0 ? n : 4;
}

/* A kernel of this build on the current device: cudaErrorNoKernelImageForDevice (or
 * cudaErrorUnsupportedPtxVersion) when the build has neither SASS for the card nor PTX it can
 * JIT (target.c refuses the card with the build's architectures). */
extern "C" cudaError_t kiln_cuda_image_check(int *ptx_version, int *binary_version) {
    struct cudaFuncAttributes fa;
    cudaError_t e = cudaFuncGetAttributes(&fa, attention_combine_kernel);
    if (e == cudaSuccess) {
        *ptx_version = fa.ptxVersion;       /* the virtual architecture the code came from (80, 90) */
        *binary_version = fa.binaryVersion; /* the SASS it runs as (90: sm_90a, or JIT on sm_90) */
    }
    return e;
}

/* The minimum window (32 positions: a block does at least two tiles) and at most 16 windows per
 * row (the scratch is [T][H][16][hd + 2]), whatever the context length. */
extern "C" int kiln_cuda_attention_split_width(int *max_splits) {
    if (max_splits) *max_splits = 16;
    return 32;
}

extern "C" cudaError_t kiln_cuda_attention(void *out, kiln_dtype adt, const float *q, int q_stride,
                                           const uint16_t *pool_layer, const int32_t *pos, const int32_t *row_seq,
                                           const int32_t *block_table, int max_blocks, int T, int H, int KV, int hd,
                                           int block_size, int split_w, int max_splits, float *scratch,
                                           int pdl, cudaStream_t st) {
    kiln_cuda_kv kv = {(void *)pool_layer, 0, 1.0f, 1.0f, 0};
    return kiln_cuda_attention_ex(out, adt, q, q_stride, &kv, pos, row_seq, block_table, max_blocks, T, H, KV, hd,
                                  block_size, split_w, max_splits, scratch, NULL, pdl, st);
}

extern "C" cudaError_t kiln_cuda_attention_ex(void *out, kiln_dtype adt, const float *q, int q_stride,
                                              const kiln_cuda_kv *kv, const int32_t *pos, const int32_t *row_seq,
                                              const int32_t *block_table, int max_blocks, int T, int H, int KV, int hd,
                                              int block_size, int split_w, int max_splits, float *scratch,
                                              const kiln_cuda_q8_blocks *q8, int pdl, cudaStream_t st) {
    if (T <= 0) return cudaSuccess;
    if (!kv || !(kv->k_scale > 0.0f) || !(kv->v_scale > 0.0f) || kv->window < 0) return cudaErrorInvalidValue;
    const void *pool_layer = kv->pool;
    float ks = kv->k_scale, vs = kv->v_scale;
    if (hd <= 0 || hd > ATT_MAX_HD || hd % 8 || KV <= 0 || H % KV || H / KV > ATT_WARPS * ATT_MAX_HPW || H > 65535 ||
        KV > 65535 || split_w < ATT_TILE || max_splits < 1 || max_splits > 64 || (q8 && hd % 32))
        return cudaErrorInvalidValue;
    float scale = 1.0f / sqrtf((float)hd);
    /* one row per block: every row has its own windows (they depend on its position) */
    dim3 g1((unsigned)T, (unsigned)KV, (unsigned)max_splits);
    int G = H / KV, pl = hd <= 32 ? 1 : hd <= 64 ? 2 : hd <= 128 ? 4 : 8, hpw = G <= 4 ? 1 : G <= 8 ? 2 : 4;
    /* the FP8 pool on the split kernel only (the stream kernel reads bf16) */
    int stream = !kv->f8 && (hd == 64 || hd == 128 || hd == 256) && (G == 1 || G == 2 || G == 4 || G == 8) &&
                 q_stride % 4 == 0;
#define ATT_STREAM(HDV, GV)                                                                            \
    kiln_launch(kiln_pdl_at(pdl, T), attention_stream_kernel<HDV, GV>, g1, dim3(ATT_WARPS * 32), 0, st, scratch, \
                q, q_stride, (const uint16_t *)pool_layer, pos, row_seq, block_table, max_blocks, H, KV, block_size, \
                split_w, max_splits, scale, kv->window)
#define ATT_STREAM_G(HDV)                                                                              \
    do {                                                                                               \
        if (G == 1) ATT_STREAM(HDV, 1);                                                                \
        else if (G == 2) ATT_STREAM(HDV, 2);                                                           \
        else if (G == 4) ATT_STREAM(HDV, 4);                                                           \
        else ATT_STREAM(HDV, 8);                                                                       \
    } while (0)
#define ATT_LAUNCH(PLV, HPWV)                                                                          \
    do {                                                                                               \
        if (kv->f8)                                                                                    \
            kiln_launch(kiln_pdl_at(pdl, T), attention_split_kernel<PLV, HPWV, true>, g1,     \
                        dim3(ATT_WARPS * 32), 0, st, scratch, q, q_stride, pool_layer, pos, row_seq,   \
                        block_table, max_blocks, T, H, KV, hd, block_size, split_w, max_splits, 1, scale, ks, vs, kv->window); \
        else                                                                                           \
            kiln_launch(kiln_pdl_at(pdl, T), attention_split_kernel<PLV, HPWV, false>, g1,    \
                        dim3(ATT_WARPS * 32), 0, st, scratch, q, q_stride, pool_layer, pos, row_seq,   \
                        block_table, max_blocks, T, H, KV, hd, block_size, split_w, max_splits, 1, scale, ks, vs, kv->window); \
    } while (0)
#define ATT_LAUNCH_PL(PLV)                                                                             \
    do {                                                                                               \
        if (hpw == 1) ATT_LAUNCH(PLV, 1);                                                              \
        else if (hpw == 2) ATT_LAUNCH(PLV, 2);                                                         \
        else ATT_LAUNCH(PLV, 4);                                                                       \
    } while (0)
    if (stream && hd == 64) ATT_STREAM_G(64);
    else if (stream && hd == 128) ATT_STREAM_G(128);
    else if (stream) ATT_STREAM_G(256);
    else if (pl == 1) ATT_LAUNCH_PL(1);
    else if (pl == 2) ATT_LAUNCH_PL(2);
    else if (pl == 4) ATT_LAUNCH_PL(4);
    else ATT_LAUNCH_PL(8);
#undef ATT_LAUNCH_PL
#undef ATT_LAUNCH
#undef ATT_STREAM_G
#undef ATT_STREAM
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    return kiln_cuda_attention_combine_win(out, adt, scratch, pos, T, H, hd, split_w, max_splits, ATT_TILE, kv->window,
                                           q8, pdl, st);
}

/* Pass 2 alone, for pass-1 kernels elsewhere (the tensor-core decode split of
 * attention_prefill.cu, windows rounded to wr positions). */
extern "C" cudaError_t kiln_cuda_attention_combine(void *out, kiln_dtype adt, const float *scratch, const int32_t *pos,
                                                   int T, int H, int hd, int min_w, int max_splits, int wr,
                                                   int pdl, cudaStream_t st) {
    return kiln_cuda_attention_combine_win(out, adt, scratch, pos, T, H, hd, min_w, max_splits, wr, 0, NULL, pdl, st);
}

extern "C" cudaError_t kiln_cuda_attention_combine_win(void *out, kiln_dtype adt, const float *scratch,
                                                       const int32_t *pos, int T, int H, int hd, int min_w,
                                                       int max_splits, int wr, int window,
                                                       const kiln_cuda_q8_blocks *q8, int pdl, cudaStream_t st) {
    if (T <= 0) return cudaSuccess;
    if (hd <= 0 || hd > ATT_MAX_HD || H <= 0 || H > 65535 || min_w < 1 || wr < 1 || max_splits < 1 || max_splits > 64 ||
        window < 0 || (q8 && (hd % 32 || !q8->xq || !q8->xd || !q8->xs)))
        return cudaErrorInvalidValue;
    dim3 g2((unsigned)T, (unsigned)H);
    int threads = hd < 32 ? 32 : (hd + 31) / 32 * 32;
    kiln_launch(kiln_pdl_at(pdl, T),
                attention_combine_kernel, g2, dim3(threads), 0, st, out, adt, scratch, pos, H, hd, min_w, max_splits,
                wr, window, q8 ? q8->xq : NULL, q8 ? q8->xd : NULL, q8 ? q8->xs : NULL);
    KILN_CUDA_CHECK_LAUNCH();
}
