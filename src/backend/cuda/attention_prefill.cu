/* attention_prefill.cu: causal GQA attention for the rows of prefill chunks on tensor cores
 * (FlashAttention-2 style: mma.sync m16n8k16 bf16 -> f32, online softmax in registers), and
 * for large decode batches split over the context (attention_decode_kernel, at the end).
 *
 * Work unit. One CTA (4 warps, 128 threads) serves one query tile of one KV head: the tile is a
 * run of n <= R rows of one sequence with consecutive positions (tiles[b] = {first row, n}),
 * R = KILN_PREFILL_QROWS / G for G = H / KV query heads per KV head. The CTA's 64 "query rows"
 * qi (the M dimension of the mma) are (head g, row r) with qi = g * R + r: for G = 4 (Devstral),
 * R = 16 and warp w is head kvh * G + w for the tile's 16 rows; for G = 1, R = 64 and warp w is
 * rows 16w..16w+15; for G = 8, R = 8 and warp w holds heads 2w, 2w+1 x 8 rows. Padding query
 * rows (r >= n) duplicate row n - 1 and are never written. K and V of the group are read into
 * shared memory once for all G heads. grid = (n_tiles, KV), tiles taken in reverse order (the
 * last tiles of a sequence have the longest contexts: they start first).
 *
 * Per warp, registers (lane = 4 gid + tig; the warp's query rows are gid and gid + 8):
 *   qa[HD/16][4]  Q as A fragments (bf16x2), Q read once from f32 global, rounded to bf16
 *   s[8][4]       S = Q K^T of the key tile (16 rows x 64 keys, f32); then P in place
 *   o[HD/8][4]    O accumulator (16 rows x HD, f32), unnormalised
 *   m[2], l[2]    running max (log2 domain) and this lane's partial sum of each row
 * Key tiles of PF_BC = 64 positions j0 = 0, 64, ... up to the tile's last position p_last, in
 * shared memory as sk/sv[64][HD] bf16, double-buffered, the first two issued before Q is read
 * (cp.async 16-byte copies, read through
 * the block table: position j -> block bt[j / bs], slot j % bs; positions > p_last are zeroed,
 * never read: the pool past a context may hold anything). The 16-byte chunk c of key row j is
 * stored at chunk (c ^ (j & 7)) of the row (XOR swizzle): the 8 rows of every ldmatrix 8x8
 * matrix fall in 8 distinct bank groups. Scores are scaled by log2(e) / sqrt(hd) and
 * exponentiated with ex2.approx; positions > pos[row] are -inf (only on tiles that reach past
 * the warp's smallest position). A warp skips key tiles that lie wholly past its rows.
 *
 * Fragment layouts of mma.m16n8k16.row.col (gid = lane >> 2, tig = lane & 3):
 *   A 16x16 (row-major): reg0 = (row gid,   cols 2tig, 2tig+1)   reg1 = (row gid+8, cols 2tig..)
 *                        reg2 = (row gid,   cols 2tig+8, +9)     reg3 = (row gid+8, cols 2tig+8..)
 *   B 16x8 (k x n, "col"): reg0 = (k 2tig, 2tig+1; n gid)       reg1 = (k 2tig+8, +9; n gid)
 *   C 16x8 f32: c0, c1 = (row gid, cols 2tig, 2tig+1)           c2, c3 = (row gid+8, same cols)
 *   (in a bf16x2 register the lower column is the lower half)
 *   ldmatrix.x4: lanes 8i..8i+7 give the 8 row addresses of matrix i -> register i; lane l gets
 *   (row l/4, cols 2(l%4), +1) of each matrix; with .trans it gets (rows 2(l%4), +1; col l/4).
 *   S: B = K^T, K rows are keys: a non-trans 8x8 of (keys n0..n0+7, dims d..d+7) gives lane
 *      (key gid, dims 2tig..) = B reg for (k = dims, n = key). One x4 = keys of one n-tile x
 *      32 dims = the two B registers of two k-steps.
 *   P.V: A = P straight from the C layout of S (n-tiles 2kk, 2kk+1 = the 16 keys of k-step kk);
 *      B = V (k = key, n = dim) from V rows by .trans: an 8x8 of (keys k0..k0+7, dims d..d+7)
 *      gives lane (keys 2tig, +1; dim gid). One x4 = 16 keys x 16 dims = B of two n-tiles.
 * Each row's arithmetic (key tiles aligned to position 0, reductions within its quad in a
 * fixed order) depends only on its own position and context, not on the tile or the batch;
 * skipping a wholly masked key tile gives the same bits as running it (corr = 1, p = 0).
 * Sliding windows (kiln_cuda_kv.window > 0): a row at p sees keys p - window + 1 .. p. The
 * prefill CTA's key tiles stay aligned to position 0 but start at the tile holding the tile's
 * first row's first key j_lo; positions below j_lo are zero-filled, never read (their blocks may
 * be released), and each row masks the keys below its own first key (pf_softmax's lo; a row with
 * nothing unmasked yet keeps m = -inf without NaN). The decode kernel cuts lo .. p into its
 * windows, key tiles starting at lo + z w (not multiples of PF_BC), so it needs no lower mask.
 */
#include <math.h>
#include <string.h>
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/cuda_dev.cuh"

#define PF_BC 64 /* key positions per shared-memory tile */
#define PF_THREADS 128

/* an FP8 pool runs the kernels' MMAs in f16 (BF false): the codes' values are exact in f16 and
 * one conversion a pair, q and P rounded to f16 instead of bf16 (q of attention is far below
 * f16's 65504; P <= 1) */
static __device__ __forceinline__ uint32_t pf_pack_f16(float lo, float hi) {
    __half2 v = __floats2half2_rn(lo, hi);
    return *(const uint32_t *)&v;
}
template <bool BF>
static __device__ __forceinline__ uint32_t pf_pack(float lo, float hi) {
    if (BF) {
        __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
        return *(const uint32_t *)&v;
    }
    return pf_pack_f16(lo, hi);
}
/* two e4m3 codes (bits 0-15 of v, code 0 low) as an f16x2, exactly: sm_89+ converts in hardware;
 * below, the code's bits in an f16 are its value times 2^-8 (subnormals included) */
static __device__ __forceinline__ uint32_t pf_f8x2_to_f16x2(uint32_t v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
    uint32_t r;
    uint16_t a = (uint16_t)v;
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(r) : "h"(a));
    return r;
#else
    uint32_t u = __byte_perm(v, 0, 0x4140);
    uint32_t h = ((u & 0x00800080u) << 8) | ((u & 0x007f007fu) << 7);
    __half2 hv = __hmul2(*reinterpret_cast<__half2 *>(&h), __floats2half2_rn(256.0f, 256.0f));
    return *reinterpret_cast<uint32_t *>(&hv);
#endif
}
static __device__ __forceinline__ uint32_t pf_pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi); /* .x (low half) = lo */
    return *(const uint32_t *)&v;
}
static __device__ __forceinline__ float pf_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
static __device__ __forceinline__ void pf_cp16(uint32_t dst, const void *src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src));
}

/* Stage key tile [j0, j0 + PF_BC) of KV head kvh: K at sk, V at sk + PF_BC * HD (shared
 * addresses, bf16 [PF_BC][HD] swizzled). Positions < j_lo (out of a sliding window: their
 * blocks may be released, the table entry is never read) or > p_last are zero-filled. Position
 * j's block is bt[j / bs - b0] (b0 = 0: the sequence's table; the decode kernel passes a copy
 * of its window's entries in shared memory, which starts at block b0). */
template <int HD, bool F8>
static __device__ __forceinline__ void pf_load_tile(uint32_t sk, const void *pool, const int32_t *bt, int b0, int bs,
                                                    int KV, int kvh, int j0, int j_lo, int p_last) {
    constexpr int CH = HD / 8;                     /* 16-byte chunks per key row */
    constexpr int N = PF_BC * CH / PF_THREADS;     /* chunks per thread (of K, and of V) */
    const int64_t head_tile = (int64_t)bs * HD, kv_stride = (int64_t)KV * head_tile;
    const uint32_t sv = sk + PF_BC * HD * 2;
#pragma unroll
    for (int i = 0; i < N; i++) {
        int c = threadIdx.x + i * PF_THREADS, jj = c / CH, ch = c % CH, j = j0 + jj;
        uint32_t so = (uint32_t)(jj * CH + (ch ^ (jj & 7))) * 16; /* bytes */
        if (j <= p_last && j >= j_lo) {
            int64_t blk = bt[j / bs - b0];
            int64_t ix = (blk * 2 * KV + kvh) * head_tile + (int64_t)(j % bs) * HD + ch * 8;
            if (F8) { /* 8 codes each, copied raw into the upper half (pf_convert decodes them) */
                uint32_t ro = PF_BC * HD + (uint32_t)c * 8;
                const uint8_t *kp = (const uint8_t *)pool + ix;
                asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"(sk + ro), "l"(kp));
                asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"(sv + ro), "l"(kp + kv_stride));
            } else {
                const uint16_t *kp = (const uint16_t *)pool + ix;
                pf_cp16(sk + so, kp);
                pf_cp16(sv + so, kp + kv_stride);
            }
        } else if (F8) { /* zero codes: the raw area may overlap other chunks' bf16 places */
            uint32_t ro = PF_BC * HD + (uint32_t)c * 8;
            asm volatile("st.shared.v2.u32 [%0], {%1,%1};\n" ::"r"(sk + ro), "r"(0));
            asm volatile("st.shared.v2.u32 [%0], {%1,%1};\n" ::"r"(sv + ro), "r"(0));
        } else {
            asm volatile("st.shared.v4.u32 [%0], {%1,%1,%1,%1};\n" ::"r"(sk + so), "r"(0));
            asm volatile("st.shared.v4.u32 [%0], {%1,%1,%1,%1};\n" ::"r"(sv + so), "r"(0));
        }
    }
}

/* FP8 pool: after pf_wait, the landed codes of the tile at sk (the upper halves of the K and V
 * buffers, chunk c at PF_BC HD + 8 c) are decoded to the f16 values of the codes (exact) at their
 * swizzled places; every thread reads its chunks before any writes (the places overlap the raw
 * area). Costs two barriers a tile; the loads stay asynchronous (cp.async). */
template <int HD>
static __device__ __forceinline__ void pf_convert(uint32_t sk) {
    constexpr int CH = HD / 8, N = PF_BC * CH / PF_THREADS;
    const uint32_t sv = sk + PF_BC * HD * 2;
    uint2 kr[N], vr[N];
#pragma unroll
    for (int i = 0; i < N; i++) {
        uint32_t ro = PF_BC * HD + (uint32_t)(threadIdx.x + i * PF_THREADS) * 8;
        asm volatile("ld.shared.v2.u32 {%0,%1}, [%2];\n" : "=r"(kr[i].x), "=r"(kr[i].y) : "r"(sk + ro));
        asm volatile("ld.shared.v2.u32 {%0,%1}, [%2];\n" : "=r"(vr[i].x), "=r"(vr[i].y) : "r"(sv + ro));
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < N; i++) {
        int c = threadIdx.x + i * PF_THREADS, jj = c / CH, ch = c % CH;
        uint32_t so = (uint32_t)(jj * CH + (ch ^ (jj & 7))) * 16;
        asm volatile("st.shared.v4.u32 [%0], {%1,%2,%3,%4};\n" ::"r"(sk + so), "r"(pf_f8x2_to_f16x2(kr[i].x)),
                     "r"(pf_f8x2_to_f16x2(kr[i].x >> 16)), "r"(pf_f8x2_to_f16x2(kr[i].y)),
                     "r"(pf_f8x2_to_f16x2(kr[i].y >> 16)));
        asm volatile("st.shared.v4.u32 [%0], {%1,%2,%3,%4};\n" ::"r"(sv + so), "r"(pf_f8x2_to_f16x2(vr[i].x)),
                     "r"(pf_f8x2_to_f16x2(vr[i].x >> 16)), "r"(pf_f8x2_to_f16x2(vr[i].y)),
                     "r"(pf_f8x2_to_f16x2(vr[i].y >> 16)));
    }
    __syncthreads();
}

/* Issue key tiles 0 and 1 (when n_kt > 1) into the two buffers, each its own group: tile k
 * covers positions jb + k PF_BC .. + PF_BC - 1, of which j_lo .. j_stop are read. */
template <int HD, bool F8>
static __device__ __forceinline__ void pf_start(uint32_t s_base, uint32_t buf_bytes, const void *pool,
                                                const int32_t *bt, int b0, int bs, int KV, int kvh, int jb, int j_lo,
                                                int j_stop, int n_kt) {
    pf_load_tile<HD, F8>(s_base, pool, bt, b0, bs, KV, kvh, jb, j_lo, j_stop);
    kiln_cp_commit();
    if (n_kt > 1) {
        pf_load_tile<HD, F8>(s_base + buf_bytes, pool, bt, b0, bs, KV, kvh, jb + PF_BC, j_lo, j_stop);
        kiln_cp_commit();
    }
}

/* Wait until tile kt (of n_kt; tile kt + 1 may still be in flight) has landed for every thread. */
static __device__ __forceinline__ void pf_wait(int kt, int n_kt) {
    if (kt + 1 < n_kt) kiln_cp_wait<1>();
    else kiln_cp_wait<0>();
    __syncthreads();
}

/* After tile kt: once every warp is done with its buffer (kt & 1), refill it with tile kt + 2. */
template <int HD, bool F8>
static __device__ __forceinline__ void pf_refill(uint32_t s_base, uint32_t buf_bytes, const void *pool,
                                                 const int32_t *bt, int b0, int bs, int KV, int kvh, int jb, int j_lo,
                                                 int j_stop, int kt, int n_kt) {
    __syncthreads();
    if (kt + 2 < n_kt) {
        pf_load_tile<HD, F8>(s_base + (kt & 1) * buf_bytes, pool, bt, b0, bs, KV, kvh, jb + (kt + 2) * PF_BC, j_lo,
                             j_stop);
        kiln_cp_commit();
    }
}

/* Q as A fragments (bf16x2): q0, q1 = f32 rows gid and gid + 8, already offset by 2 tig. */
template <int KS, bool BF>
static __device__ __forceinline__ void pf_load_q(uint32_t (*qa)[4], const float *q0, const float *q1) {
#pragma unroll
    for (int ks = 0; ks < KS; ks++) {
        float2 x00 = *(const float2 *)(q0 + ks * 16), x01 = *(const float2 *)(q0 + ks * 16 + 8);
        float2 x10 = *(const float2 *)(q1 + ks * 16), x11 = *(const float2 *)(q1 + ks * 16 + 8);
        qa[ks][0] = pf_pack<BF>(x00.x, x00.y); /* row gid,   dims 16ks + 2tig, +1 */
        qa[ks][1] = pf_pack<BF>(x10.x, x10.y); /* row gid+8, same dims */
        qa[ks][2] = pf_pack<BF>(x01.x, x01.y); /* row gid,   dims 16ks + 8 + 2tig, +1 */
        qa[ks][3] = pf_pack<BF>(x11.x, x11.y); /* row gid+8 */
    }
}

/* S = Q K^T over NT n-tiles of 8 keys: key rows k0 + 8nt .. +7 of the staged tile sk. */
template <int HD, int NT, bool BF>
static __device__ __forceinline__ void pf_scores(float (*s)[4], const uint32_t (*qa)[4], uint32_t sk, int k0,
                                                 int lane) {
    constexpr int CH = HD / 8, KS = HD / 16;
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
        for (int kp = 0; kp < KS / 2; kp++) {
            /* matrix i = lane >> 3: keys k0 + 8nt .. +7 (row lane & 7), dims 32kp + 8i .. +7 */
            int key = k0 + nt * 8 + (lane & 7), c = 4 * kp + (lane >> 3);
            uint32_t b[4];
            kiln_ldsm_x4(b, sk + (uint32_t)(key * CH + (c ^ (key & 7))) * 16);
            kiln_mma16816<BF>(s[nt], qa[2 * kp], b[0], b[1]);
            kiln_mma16816<BF>(s[nt], qa[2 * kp + 1], b[2], b[3]);
        }
    }
}

/* The online-softmax state of a warp's rows gid, gid + 8: O (DT n-tiles) = 0, m = -inf, l = 0. */
template <int DT>
static __device__ __forceinline__ void pf_state_init(float (*o)[4], float *m, float *l) {
#pragma unroll
    for (int d = 0; d < DT; d++) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
    m[0] = m[1] = -INFINITY;
    l[0] = l[1] = 0.0f;
}

/* Online softmax of row hh (0: row gid, 1: row gid + 8) over its NT x 8 scores, which lie in
 * the 4 lanes of its quad (s[nt][2hh + e] is key j0 + 8nt + 2tig + e): scale by sl2 (log2
 * domain), keys > lim are -inf when mask, keys < lo always (a sliding window; 0 without), then
 * m, l and O (DT n-tiles) are rescaled and the scores become P. A row whose keys so far are all
 * masked (a window's tiles before its first key) keeps m = -inf, l = 0, O = 0: the exponentials
 * are then taken against 0 instead of -inf (no NaN), which gives the bits of skipping the tile. */
template <int NT, int DT>
static __device__ __forceinline__ void pf_softmax(float (*s)[4], float (*o)[4], float *m, float *l, int hh, float sl2,
                                                  int mask, int j0, int lim, int lo, int tig) {
    float mx = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            float v = s[nt][2 * hh + e] * sl2;
            int j = j0 + nt * 8 + 2 * tig + e;
            if ((mask && j > lim) || j < lo) v = -INFINITY;
            s[nt][2 * hh + e] = v;
            mx = fmaxf(mx, v);
        }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    float m_old = m[hh], mn = fmaxf(m_old, mx);
    m[hh] = mn;
    if (mn == -INFINITY) mn = 0.0f; /* nothing unmasked yet: corr = p = 0 */
    float corr = pf_exp2(m_old - mn);
    float ls = 0.0f;
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            float p = pf_exp2(s[nt][2 * hh + e] - mn);
            s[nt][2 * hh + e] = p;
            ls += p;
        }
    l[hh] = l[hh] * corr + ls;
#pragma unroll
    for (int d = 0; d < DT; d++) {
        o[d][2 * hh] *= corr;
        o[d][2 * hh + 1] *= corr;
    }
}

/* O += P V for one k-step of 16 keys: P from the C layout of n-tiles s0 (keys 0-7) and s1
 * (keys 8-15), V rows k0 .. k0 + 15 of the staged tile sv by .trans. */
template <int HD, bool BF>
static __device__ __forceinline__ void pf_pv(float (*o)[4], const float *s0, const float *s1, uint32_t sv, int k0,
                                             int lane) {
    constexpr int CH = HD / 8;
    uint32_t pa[4];
    pa[0] = pf_pack<BF>(s0[0], s0[1]); /* row gid,   keys 2tig, +1 */
    pa[1] = pf_pack<BF>(s0[2], s0[3]); /* row gid+8, keys 2tig, +1 */
    pa[2] = pf_pack<BF>(s1[0], s1[1]); /* row gid,   keys 8 + 2tig, +1 */
    pa[3] = pf_pack<BF>(s1[2], s1[3]); /* row gid+8 */
#pragma unroll
    for (int dp = 0; dp < HD / 16; dp++) {
        /* matrix i = lane >> 3: keys k0 + 8(i & 1) + (lane & 7), dims 16dp + 8(i >> 1) .. +7;
         * registers 0, 1 = B of dim n-tile 2dp, registers 2, 3 = n-tile 2dp + 1 */
        int key = k0 + (lane & 7) + ((lane >> 3) & 1) * 8, c = 2 * dp + (lane >> 4);
        uint32_t b[4];
        kiln_ldsm_x4_t(b, sv + (uint32_t)(key * CH + (c ^ (key & 7))) * 16);
        kiln_mma16816<BF>(o[2 * dp], pa, b[0], b[1]);
        kiln_mma16816<BF>(o[2 * dp + 1], pa, b[2], b[3]);
    }
}

template <int HD, bool F8>
static __global__ void __launch_bounds__(PF_THREADS)
attention_prefill_kernel(void *out, kiln_dtype adt, const float *q, int q_stride, const void *pool,
                         const int32_t *pos, const int32_t *row_seq, const int32_t *block_table, int max_blocks, int H,
                         int KV, int bs, const int32_t *tiles, int n_tiles, float sl2, float vs, int window) {
    extern __shared__ __align__(128) uint16_t pf_smem[]; /* [2 buffers][K | V][PF_BC][HD] bf16, swizzled */
    kiln_pdl_trigger();
    kiln_pdl_wait(); /* PDL: q, the pool and the scratch are the step's */
    constexpr int KS = HD / 16, NT = PF_BC / 8, DT = HD / 8;
    const int tile = n_tiles - 1 - (int)blockIdx.x, kvh = blockIdx.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gid = lane >> 2, tig = lane & 3;
    const int first = tiles[2 * tile], n = tiles[2 * tile + 1];
    const int G = H / KV, R = KILN_PREFILL_QROWS / G;
    const int p_last = pos[first + n - 1];
    /* keys: the whole context, or with a window from the first row's first key (j_lo) on, in
     * tiles aligned to position 0 (rows with later first keys mask the keys below theirs) */
    const int j_lo = window > 0 ? max(pos[first] - window + 1, 0) : 0;
    const int j_first = j_lo / PF_BC * PF_BC, j_stop = p_last;
    const int32_t *bt = block_table + (int64_t)row_seq[first] * max_blocks;
    const uint32_t s_base = (uint32_t)__cvta_generic_to_shared(pf_smem);
    const uint32_t buf_bytes = 2 * PF_BC * HD * 2;

    /* start loading the first two key tiles (both buffers) while Q is read */
    const int kt0 = j_first / PF_BC, n_kt = j_stop / PF_BC + 1 - kt0;
    pf_start<HD, F8>(s_base, buf_bytes, pool, bt, 0, bs, KV, kvh, j_first, j_lo, j_stop, n_kt);

    /* this lane's two query rows: qi = 16 warp + gid + 8 hh -> head g = qi / R, row r = qi % R */
    int prow[2], trow[2], hrow[2], valid[2];
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        int qi = 16 * warp + gid + 8 * hh, g = qi / R, r = qi % R, rr = min(r, n - 1);
        valid[hh] = r < n;
        trow[hh] = first + rr;
        hrow[hh] = kvh * G + g;
        prow[hh] = pos[first + rr];
    }
    const int warp_max = __reduce_max_sync(0xffffffffu, max(prow[0], prow[1]));
    const int warp_min = __reduce_min_sync(0xffffffffu, min(prow[0], prow[1]));
    /* with a window: the first key of each row (keys below are masked), and of the warp's last row */
    int plo[2] = {window > 0 ? prow[0] - window + 1 : 0, window > 0 ? prow[1] - window + 1 : 0};
    const int warp_lo = window > 0 ? warp_min - window + 1 : 0; /* tiles wholly below: skipped */
    uint32_t qa[KS][4];
    pf_load_q<KS, !F8>(qa, q + (int64_t)trow[0] * q_stride + (int64_t)hrow[0] * HD + 2 * tig,
                  q + (int64_t)trow[1] * q_stride + (int64_t)hrow[1] * HD + 2 * tig);
    float o[DT][4], m[2], l[2];
    pf_state_init<DT>(o, m, l);

    for (int kt = 0; kt < n_kt; kt++) { /* key tile kt0 + kt, buffer kt & 1; tile kt + 1 is in flight */
        pf_wait(kt, n_kt);
        if (F8) pf_convert<HD>(s_base + (kt & 1) * buf_bytes); /* uniform: every thread */
        const int j0 = (kt0 + kt) * PF_BC;
        if (j0 <= warp_max && j0 + PF_BC > warp_lo) {
            const uint32_t sk = s_base + (kt & 1) * buf_bytes, sv = sk + PF_BC * HD * 2;
            float s[NT][4]; /* S = Q K^T: 16 query rows x 64 keys */
            pf_scores<HD, NT, !F8>(s, qa, sk, 0, lane);
            /* without a window key 0 lies in the first tile, which every warp runs (m finite
             * from then on); with one, a row's first tiles may be wholly masked (pf_softmax keeps
             * its state at zero). Upper masks only on tiles past the warp's smallest position. */
            const int diag = j0 + PF_BC - 1 > warp_min;
#pragma unroll
            for (int hh = 0; hh < 2; hh++) pf_softmax<NT, DT>(s, o, m, l, hh, sl2, diag, j0, prow[hh], plo[hh], tig);
#pragma unroll
            for (int kk = 0; kk < PF_BC / 16; kk++) /* keys 16kk .. +15 */
                pf_pv<HD, !F8>(o, s[2 * kk], s[2 * kk + 1], sv, 16 * kk, lane);
        }
        pf_refill<HD, F8>(s_base, buf_bytes, pool, bt, 0, bs, KV, kvh, j_first, j_lo, j_stop, kt, n_kt);
    }

    /* finish: the row sum over the quad (fixed order), O / l, rows < n only */
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        float L = l[hh];
        L += __shfl_xor_sync(0xffffffffu, L, 1);
        L += __shfl_xor_sync(0xffffffffu, L, 2);
        float inv = 1.0f / L;
        if (F8) inv *= vs; /* V's scale (K's is in sl2) */
        if (!valid[hh]) continue;
        int64_t base = ((int64_t)trow[hh] * H + hrow[hh]) * HD + 2 * tig;
#pragma unroll
        for (int d = 0; d < DT; d++) {
            float a = o[d][2 * hh] * inv, b = o[d][2 * hh + 1] * inv;
            int64_t i = base + d * 8;
            if (adt == KILN_DT_F32) *(float2 *)((float *)out + i) = make_float2(a, b);
            else if (adt == KILN_DT_BF16) *(uint32_t *)((uint16_t *)out + i) = pf_pack_bf16(a, b);
            else {
                kiln_st(adt, out, i, a);
                kiln_st(adt, out, i + 1, b);
            }
        }
    }
}

extern "C" int kiln_cuda_prefill_tile_rows(int H, int KV) {
    if (KV <= 0 || H <= 0 || H % KV) return 0;
    int G = H / KV;
    if (G > KILN_PREFILL_QROWS || KILN_PREFILL_QROWS % G) return 0;
    return KILN_PREFILL_QROWS / G;
}

extern "C" int kiln_cuda_prefill_tiles(const int32_t *seq_q_start, int n_seqs, int min_rows, int tile_rows,
                                       int32_t *tiles, int max_tiles, unsigned char *covered) {
    int nt = 0, T = n_seqs > 0 ? seq_q_start[n_seqs] : 0;
    if (covered && T > 0) memset(covered, 0, (size_t)T);
    if (tile_rows < 1) return 0;
    if (min_rows < 1) min_rows = 1;
    for (int s = 0; s < n_seqs; s++) {
        int a = seq_q_start[s], b = seq_q_start[s + 1];
        if (b - a < min_rows) continue;
        int need = (b - a + tile_rows - 1) / tile_rows;
        if (nt + need > max_tiles) continue; /* whole sequences only */
        for (int t = a; t < b; t += tile_rows, nt++) {
            tiles[2 * nt] = t;
            tiles[2 * nt + 1] = b - t < tile_rows ? b - t : tile_rows;
        }
        if (covered) memset(covered + a, 1, (size_t)(b - a));
    }
    return nt;
}

/* The end of both decode kernels: the 4 warps' states of each head (red[warp][head][HD + 2] f32:
 * O, then m in the log2 domain and l) merged in warp order, M = max m_w, L = sum l_w 2^(m_w - M),
 * acc = sum O_w 2^(m_w - M), and the window's (acc, m in natural-log units, L) written to
 * scratch [T][H][max_splits][HD + 2] for kiln_cuda_attention_combine. */
template <int HD, bool F8, int RW = 16>
static __device__ __forceinline__ void pf_dec_merge(const float *red, int G, int t, int H, int kvh, int max_splits,
                                                    int z, float *scratch, float vs) {
    /* RW: rows of red a warp (16, or 8 for the FP8 register kernel, which keeps only G <= 8) */
    for (int i = threadIdx.x; i < G * (HD + 1); i += PF_THREADS) {
        int row = i / (HD + 1), d = i % (HD + 1); /* d == HD: the (m, l) pair */
        float M = -INFINITY;
#pragma unroll
        for (int ww = 0; ww < 4; ww++) M = fmaxf(M, red[((int64_t)ww * RW + row) * (HD + 2) + HD]);
        float acc = 0.0f;
#pragma unroll
        for (int ww = 0; ww < 4; ww++) {
            const float *r = red + ((int64_t)ww * RW + row) * (HD + 2);
            float f = pf_exp2(r[HD] - M); /* 0 for a warp that ran no key (m = -inf) */
            acc += (d < HD ? r[d] : r[HD + 1]) * f;
        }
        float *sc = scratch + (((int64_t)t * H + kvh * G + row) * max_splits + z) * (HD + 2);
        if (d < HD) sc[d] = F8 ? acc * vs : acc; /* V's scale (K's is in sl2) */
        else {
            sc[HD] = M * 0.6931471805599453f;
            sc[HD + 1] = acc;
        }
    }
}

#define PF_SMEM(HD) ((size_t)2 * 2 * PF_BC * (HD) * 2) /* 2 buffers x (K, V) x [PF_BC][HD] bf16 */

/* Decode on tensor cores, split over the context (kiln_cuda_attention_decode_tc): every row is
 * one query position. grid (T rows, KV heads, max_splits windows), 4 warps, the key tiles staged
 * as above (two buffers of PF_BC = 64 positions, the first two issued before Q is read). The
 * window of block z is the split kernel's (kiln_att_window with min_w, max_splits, rounded to
 * PF_BC), so windows end on tile boundaries.
 *
 * Unlike the prefill tiles, the 16 M rows of the MMA are the G query heads of the group (row i =
 * head kvh G + min(i, G - 1); rows >= G are copies, never stored), so one warp's MMAs serve the
 * whole group, and the 4 warps split each key tile instead: warp w takes keys 16w .. 16w + 15
 * and keeps its own online-softmax state (m, l, O) over the window (per key tile and warp: S =
 * 2 n-tiles x HD / 16 k-steps, P.V = HD / 8 n-tiles x 1 k-step; 1/4 of the MMAs of the prefill
 * kernel's one-row tiles, where each warp ran all 64 keys for 16 rows of one head). A warp's
 * slice that lies wholly past the window's last key is skipped (m stays -inf, l and O 0). At the
 * end the 4 states of each head are merged in shared memory in warp order, M = max m_w,
 * L = sum l_w 2^(m_w - M), acc = sum O_w 2^(m_w - M), and the window's unnormalised (acc, m, l)
 * go to scratch [T][H][max_splits][HD + 2] (m in natural-log units) for
 * kiln_cuda_attention_combine. A row's bits depend only on its own position, context and
 * max_splits, not on the batch. */
template <int HD, bool F8>
static __global__ void __launch_bounds__(PF_THREADS)
attention_decode_kernel(const float *q, int q_stride, const void *pool, const int32_t *pos,
                        const int32_t *row_seq, const int32_t *block_table, int max_blocks, int H, int KV, int bs,
                        float sl2, float *scratch, int min_w, int max_splits, float vs, int window) {
    extern __shared__ __align__(128) uint16_t pf_smem[]; /* [2 buffers][K | V][PF_BC][HD] bf16; then the merge */
    kiln_pdl_trigger();
    kiln_pdl_wait(); /* PDL: q, the pool and the scratch are the step's */
    constexpr int KS = HD / 16, DT = HD / 8;
    const int t = blockIdx.x, kvh = blockIdx.y, z = blockIdx.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gid = lane >> 2, tig = lane & 3;
    const int G = H / KV, p = pos[t], nctx = p + 1;
    /* a window: the windows cut lo .. p instead of 0 .. p (key tiles then start at lo + z w,
     * not on multiples of PF_BC; keys below lo are never read) */
    const int lo = window > 0 && nctx > window ? nctx - window : 0;
    const int w = kiln_att_window(nctx - lo, min_w, max_splits, PF_BC), j_first = lo + z * w;
    if (j_first > p) return; /* uniform over the block, before any barrier or copy */
    const int j_stop = min(j_first + w, nctx) - 1;
    const int32_t *bt = block_table + (int64_t)row_seq[t] * max_blocks;
    const uint32_t s_base = (uint32_t)__cvta_generic_to_shared(pf_smem);
    const uint32_t buf_bytes = 2 * PF_BC * HD * 2;
    const int n_kt = (j_stop - j_first) / PF_BC + 1;
    pf_start<HD, F8>(s_base, buf_bytes, pool, bt, 0, bs, KV, kvh, j_first, j_first, j_stop, n_kt);

    /* Q of rows gid and gid + 8 (heads h0, h1) as A fragments, rounded to bf16 */
    const int h0 = kvh * G + min(gid, G - 1), h1 = kvh * G + min(gid + 8, G - 1);
    uint32_t qa[KS][4];
    pf_load_q<KS, !F8>(qa, q + (int64_t)t * q_stride + (int64_t)h0 * HD + 2 * tig,
                  q + (int64_t)t * q_stride + (int64_t)h1 * HD + 2 * tig);
    float o[DT][4], m[2], l[2];
    pf_state_init<DT>(o, m, l);

    for (int kt = 0; kt < n_kt; kt++) { /* key tile kt, buffer kt & 1; tile kt + 1 is in flight */
        pf_wait(kt, n_kt);
        if (F8) pf_convert<HD>(s_base + (kt & 1) * buf_bytes); /* uniform: every thread */
        const int j0 = j_first + kt * PF_BC + 16 * warp; /* this warp's first key */
        if (j0 <= j_stop) { /* key j0 is unmasked: m is finite */
            const uint32_t sk = s_base + (kt & 1) * buf_bytes, sv = sk + PF_BC * HD * 2;
            float s[2][4]; /* S = Q K^T: 16 rows x this warp's 16 keys */
            pf_scores<HD, 2, !F8>(s, qa, sk, 16 * warp, lane);
#pragma unroll
            for (int hh = 0; hh < 2; hh++) pf_softmax<2, DT>(s, o, m, l, hh, sl2, 1, j0, j_stop, 0, tig);
            pf_pv<HD, !F8>(o, s[0], s[1], sv, 16 * warp, lane);
        }
        pf_refill<HD, F8>(s_base, buf_bytes, pool, bt, 0, bs, KV, kvh, j_first, j_first, j_stop, kt, n_kt);
    }

    /* merge the 4 warps' states: red[warp][row][HD + 2] f32 over the (now idle) tile buffers */
    float *red = (float *)pf_smem;
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        float L = l[hh];
        L += __shfl_xor_sync(0xffffffffu, L, 1);
        L += __shfl_xor_sync(0xffffffffu, L, 2);
        int row = gid + 8 * hh;
        if (row >= G) continue;
        float *r = red + ((int64_t)warp * 16 + row) * (HD + 2);
#pragma unroll
        for (int d = 0; d < DT; d++) *(float2 *)(r + d * 8 + 2 * tig) = make_float2(o[d][2 * hh], o[d][2 * hh + 1]);
        if (tig == 0) {
            r[HD] = m[hh];
            r[HD + 1] = L;
        }
    }
    __syncthreads();
    pf_dec_merge<HD, F8>(red, G, t, H, kvh, max_splits, z, scratch, vs);
}

/* The same decode with the MMA's roles swapped (attention_decode_t_kernel, G <= 8, the bf16 pool): keys and
 * head dims are the M rows, the G query heads the N columns. Why: with G = 4 (Devstral) the
 * kernel above fills 4 of its 16 M rows, so half its MMAs and three quarters of its softmax
 * work are padding, and its O accumulator is 16 x HD per warp (168 registers). At 32-128 decode
 * rows it ran at ~2.5 TB/s (H200, Nsight Compute at batch 64: 3 CTAs per SM, 0.39 instructions a
 * cycle per scheduler, 61 % of cycles with no eligible warp). Halving the MMAs here gained only
 * 3-6 % of the kernel's time (55.9 -> 54.5 us at b64, 95.4 -> 89.9 at b128): it is bound by the
 * latency of its two-tile pipeline, not by issue. Here, per warp and 16 keys of a tile:
 *   S^T (16 keys x 8 heads) = K (16 x HD, A: ldmatrix of the key rows) . Q^T (B: q in registers,
 *       qb[HD/16][2] = (dims 16ks + 2tig, +1 | + 8; head gid)): HD / 16 MMAs;
 *   online softmax per head (column): a head's 16 scores lie in the 8 lanes of one tig (keys
 *       gid, gid + 8), reduced by xor 4, 8, 16; each lane keeps m, l of heads 2tig, 2tig + 1;
 *   P^T goes through 256 bytes of shared memory per warp (P[key][head] bf16/f16: two 32-bit
 *       stores a lane, then ldmatrix.x2.trans gives the B fragments (keys 2tig.., head gid));
 *   O^T (HD x 8 heads) += V^T (A: ldmatrix.trans of the value rows) . P^T: HD / 16 MMAs.
 * Heads gid >= G are copies of head G - 1 (never stored). The pipeline (key tiles, windows,
 * scratch, merge order) is the kernel above's; the bits differ from it (the MMAs' sums are
 * grouped differently) but, as there, depend only on the row's own position and context. */
#define PF_DEC_BT 1024 /* block ids of a window staged in shared memory (16,384 positions at bs 16) */

/* The block ids of a decode window (positions j_first .. j_stop) copied to s_bt [PF_DEC_BT] when
 * they fit: the loads then find their blocks without a dependent global load. Returns the table
 * to read position j's block from, at index j / bs - *bofs (s_bt from block *bofs, else the
 * sequence's bt from 0). Block-uniform (a barrier). */
static __device__ __forceinline__ const int32_t *pf_stage_bt(int32_t *s_bt, const int32_t *bt, int j_first,
                                                             int j_stop, int bs, int *bofs) {
    const int b0 = j_first / bs, nb = j_stop / bs - b0 + 1;
    *bofs = 0;
    if (nb > PF_DEC_BT) return bt;
    for (int i = threadIdx.x; i < nb; i += PF_THREADS) s_bt[i] = bt[b0 + i];
    __syncthreads();
    *bofs = b0;
    return s_bt;
}

/* The online softmax of the transposed decode kernels over a warp's 16 keys j0 .. j0 + 15:
 * c = S^T (keys gid, gid + 8 (c[0, 1], c[2, 3]) x heads 2tig, 2tig + 1), scaled by sl2 (log2
 * domain), keys past j_stop -inf; a head's 16 scores lie in the 8 lanes of one tig (xor 4, 8, 16).
 * m, l: this lane's heads 2tig + e (l: its two keys, lanes summed at the end); O^T (KS n-tiles,
 * C columns = heads) rescaled; c becomes P. Key j0 is unmasked, so m stays finite. */
template <int KS>
static __device__ __forceinline__ void pf_t_softmax(float *c, float (*o)[4], float *m, float *l, float sl2, int j0,
                                                    int j_stop, int gid) {
    float corr[2];
#pragma unroll
    for (int e = 0; e < 2; e++) {
        float v0 = c[e] * sl2, v1 = c[2 + e] * sl2;
        if (j0 + gid > j_stop) v0 = -INFINITY;
        if (j0 + gid + 8 > j_stop) v1 = -INFINITY;
        float mx = fmaxf(v0, v1);
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 4));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 8));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 16));
        float mn = fmaxf(m[e], mx);
        corr[e] = pf_exp2(m[e] - mn);
        m[e] = mn;
        c[e] = pf_exp2(v0 - mn);
        c[2 + e] = pf_exp2(v1 - mn);
        l[e] = l[e] * corr[e] + (c[e] + c[2 + e]);
    }
#pragma unroll
    for (int mt = 0; mt < KS; mt++) {
        o[mt][0] *= corr[0], o[mt][1] *= corr[1], o[mt][2] *= corr[0], o[mt][3] *= corr[1];
    }
}

/* A warp's state of the transposed decode kernels into red[warp * RW + head][HD + 2] (O, then m
 * and the lanes' summed l) for pf_dec_merge. O^T's M row gid + 8h of n-tile mt is head dim
 * 16 mt + gid + 8h, or with F8R (attention_decode_f8r_kernel's order) (HD / 8) gid + 2 mt + h. */
template <int HD, int RW, bool F8R>
static __device__ __forceinline__ void pf_t_state(float *red, const float (*o)[4], const float *m, const float *l,
                                                  int warp, int gid, int tig, int G) {
#pragma unroll
    for (int e = 0; e < 2; e++) {
        float L = l[e];
        L += __shfl_xor_sync(0xffffffffu, L, 4);
        L += __shfl_xor_sync(0xffffffffu, L, 8);
        L += __shfl_xor_sync(0xffffffffu, L, 16);
        int head = 2 * tig + e;
        if (head >= G) continue;
        float *r = red + ((int64_t)warp * RW + head) * (HD + 2);
#pragma unroll
        for (int mt = 0; mt < HD / 16; mt++) {
            r[F8R ? (HD / 8) * gid + 2 * mt : 16 * mt + gid] = o[mt][e];
            r[F8R ? (HD / 8) * gid + 2 * mt + 1 : 16 * mt + gid + 8] = o[mt][2 + e];
        }
        if (gid == 0) {
            r[HD] = m[e];
            r[HD + 1] = L;
        }
    }
}

template <int HD>
static __global__ void __launch_bounds__(PF_THREADS)
attention_decode_t_kernel(const float *q, int q_stride, const void *pool, const int32_t *pos,
                          const int32_t *row_seq, const int32_t *block_table, int max_blocks, int H, int KV, int bs,
                          float sl2, float *scratch, int min_w, int max_splits, float vs, int window) {
    extern __shared__ __align__(128) uint16_t pf_smem[]; /* tile buffers | [4 warps][16 keys][8 heads] P */
    kiln_pdl_trigger();
    kiln_pdl_wait(); /* PDL: q, the pool and the scratch are the step's */
    constexpr int KS = HD / 16, CH = HD / 8;
    constexpr bool BF = true; /* the bf16 pool (an FP8 pool: attention_decode_f8r_kernel) */
    const int t = blockIdx.x, kvh = blockIdx.y, z = blockIdx.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gid = lane >> 2, tig = lane & 3;
    const int G = H / KV, p = pos[t], nctx = p + 1;
    const int lo = window > 0 && nctx > window ? nctx - window : 0;
    const int w = kiln_att_window(nctx - lo, min_w, max_splits, PF_BC), j_first = lo + z * w;
    if (j_first > p) return; /* uniform over the block, before any barrier or copy */
    const int j_stop = min(j_first + w, nctx) - 1;
    const int32_t *bt = block_table + (int64_t)row_seq[t] * max_blocks;
    const uint32_t s_base = (uint32_t)__cvta_generic_to_shared(pf_smem);
    const uint32_t buf_bytes = 2 * PF_BC * HD * 2;
    const uint32_t s_p = s_base + 2 * buf_bytes + (uint32_t)warp * 256; /* this warp's P [16 keys][8 heads] */
    const int n_kt = (j_stop - j_first) / PF_BC + 1;
    /* the window's block-table entries in shared memory (when they fit), read once here: the
     * tile loads then find their blocks without a dependent global load before each copy */
    __shared__ int32_t s_bt[PF_DEC_BT];
    int bofs = 0;
    const int32_t *btp = pf_stage_bt(s_bt, bt, j_first, j_stop, bs, &bofs);
    pf_start<HD, false>(s_base, buf_bytes, pool, btp, bofs, bs, KV, kvh, j_first, j_first, j_stop, n_kt);

    /* Q^T as B fragments: head gid (a copy of head G - 1 past G), dims 16ks + 2tig, +1 and + 8 */
    const float *qh = q + (int64_t)t * q_stride + (int64_t)(kvh * G + min(gid, G - 1)) * HD + 2 * tig;
    uint32_t qb[KS][2];
#pragma unroll
    for (int ks = 0; ks < KS; ks++) {
        float2 x0 = *(const float2 *)(qh + 16 * ks), x1 = *(const float2 *)(qh + 16 * ks + 8);
        qb[ks][0] = pf_pack<BF>(x0.x, x0.y);
        qb[ks][1] = pf_pack<BF>(x1.x, x1.y);
    }
    /* O^T: o[mt][e] = (dim 16mt + gid + 8(e >> 1), head 2tig + (e & 1)); m, l of heads 2tig + e */
    float o[KS][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
#pragma unroll
    for (int mt = 0; mt < KS; mt++) o[mt][0] = o[mt][1] = o[mt][2] = o[mt][3] = 0.0f;

    for (int kt = 0; kt < n_kt; kt++) { /* key tile kt, buffer kt & 1; tile kt + 1 is in flight */
        pf_wait(kt, n_kt);
        const int k0 = 16 * warp, j0 = j_first + kt * PF_BC + k0; /* this warp's first key */
        if (j0 <= j_stop) { /* key j0 is unmasked: m is finite */
            const uint32_t sk = s_base + (kt & 1) * buf_bytes, sv = sk + PF_BC * HD * 2;
            float c[4] = {0.0f, 0.0f, 0.0f, 0.0f}; /* S^T: (key gid + 8(e >> 1), head 2tig + (e & 1)) */
#pragma unroll
            for (int ks = 0; ks < KS; ks++) {
                /* matrix i = lane >> 3: keys k0 + 8(i & 1) + (lane & 7), dims 16ks + 8(i >> 1) */
                int key = k0 + (lane & 7) + 8 * ((lane >> 3) & 1), ch = 2 * ks + (lane >> 4);
                uint32_t a[4];
                kiln_ldsm_x4(a, sk + (uint32_t)(key * CH + (ch ^ (key & 7))) * 16);
                kiln_mma16816<BF>(c, a, qb[ks][0], qb[ks][1]);
            }
            pf_t_softmax<KS>(c, o, m, l, sl2, j0, j_stop, gid);
            /* P[key][head] (16 bytes a key row): keys gid and gid + 8, heads 2tig, 2tig + 1 */
            __syncwarp();
            asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(s_p + (uint32_t)(gid * 16 + tig * 4)),
                         "r"(pf_pack<BF>(c[0], c[1])));
            asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(s_p + (uint32_t)((gid + 8) * 16 + tig * 4)),
                         "r"(pf_pack<BF>(c[2], c[3])));
            __syncwarp();
            uint32_t pb[2]; /* .trans of (keys 0-7 | 8-15, heads 0-7): (keys 2tig, +1 (+8); head gid) */
            asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
                         : "=r"(pb[0]), "=r"(pb[1])
                         : "r"(s_p + (uint32_t)((lane & 15) * 16)));
#pragma unroll
            for (int mt = 0; mt < KS; mt++) {
                /* matrix i = lane >> 3: keys k0 + 8(i >> 1) + (lane & 7), dims 16mt + 8(i & 1) */
                int key = k0 + (lane & 7) + 8 * (lane >> 4), ch = 2 * mt + ((lane >> 3) & 1);
                uint32_t a[4];
                kiln_ldsm_x4_t(a, sv + (uint32_t)(key * CH + (ch ^ (key & 7))) * 16);
                kiln_mma16816<BF>(o[mt], a, pb[0], pb[1]);
            }
        }
        pf_refill<HD, false>(s_base, buf_bytes, pool, btp, bofs, bs, KV, kvh, j_first, j_first, j_stop, kt, n_kt);
    }

    /* the 4 warps' states into red[warp][head][HD + 2] f32 (the idle tile buffers), then merged
     * as the kernel above does */
    float *red = (float *)pf_smem;
    pf_t_state<HD, 16, false>(red, o, m, l, warp, gid, tig, G);
    __syncthreads();
    pf_dec_merge<HD, false>(red, G, t, H, kvh, max_splits, z, scratch, vs);
}
/* The FP8 pool's decode for G <= 8 (attention_decode_f8r_kernel): the codes go from global
 * memory straight into registers and are converted there, no shared-memory tiles. Why: the
 * kernel above stages a tile's codes in shared memory and decodes them to f16 there (two barriers
 * and a shared-memory round trip a tile); at batch 64 x 4,096 context (H200) that made the FP8
 * pool 0.95x the bf16 pool's step although it reads half the bytes. In decode every key of a
 * window is used by one warp only (the G heads of the group are the MMA's N columns), so
 * nothing is shared between warps and the staging buys nothing.
 *
 * Same grid, windows, online softmax, merge and scratch as attention_decode_t_kernel; warp w
 * takes keys j_first + 64 kt + 16 w .. + 15 for kt = 0, 1, ..., the next 16 keys' codes loaded
 * (into registers, predicated: keys past the window read nothing and are zero) while this
 * 16's are used. The contraction order is free as long as both operands follow it, so:
 *   S^T = K . Q^T: the k index of k-step ks, (2tig + e, 2tig + 8 + e) for e = 0, 1, is the head
 *       dims 16 (tig + 4 (ks >> 2)) + 4 (ks & 3) + (e, 2 + e): lane (gid, tig) reads 16-byte
 *       chunks tig + 4c (c < HD / 64) of keys gid and gid + 8 (a warp's load covers 64
 *       contiguous bytes of 8 key rows), and each 32-bit word of a chunk is one k-step's A
 *       registers: low half -> (key, k 2tig..), high half -> (key, k 2tig + 8..); q (B) is read
 *       in the same order.
 *   O^T = V^T . P^T: the k index (keys) 2tig + e -> key 4tig + e, 2tig + 8 + e -> 4tig + 2 + e
 *       (P^T's B fragments come through ldmatrix.trans from the rows of those keys), and the M
 *       rows (head dims) of n-tile mt, gid + 8h, are dims (HD / 8) gid + 2 mt + h: lane (gid,
 *       tig) reads dims (HD / 8) gid .. + HD / 8 - 1 of keys 4tig .. 4tig + 3 (a warp's load
 *       covers 4 whole key rows), and one byte_perm of two keys' words gives the (dim, key pair)
 *       halves of two A registers.
 * e4m3 -> f16 is exact (cvt.rn.f16x2.e4m3x2 on sm_89+, the bit trick below it). Registers per
 * lane for one 16-key step: HD / 16 words of K and HD / 32 of V for each of its keys (32 at
 * HD = 128), twice (the step in use and the one in flight). Held to 128 registers (4 CTAs an SM,
 * 16 bytes of stack at HD = 128): batch 64 x 8 KV heads is then one wave on 132 SMs; H100, FP8
 * weights, batch 64 at 2,048 context: 14.34 ms a step against 14.75 at 144 registers (3 an SM,
 * 3 windows a row) and 17.20 with the shared-memory kernel. */
template <int HD>
struct f8r_codes {
    uint32_t k[2][HD / 16]; /* keys gid, gid + 8: chunk c's words at 4c .. 4c + 3 */
    uint32_t v[4][HD / 32]; /* keys 4tig + i: dims (HD / 8) gid .. */
};

/* two f16x2 of the four codes of w: lo = codes 0, 1, hi = codes 2, 3 */
static __device__ __forceinline__ void f8r_cvt4(uint32_t w, uint32_t &lo, uint32_t &hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
    asm("{\n\t.reg .b16 l, h;\n\tmov.b32 {l, h}, %2;\n\t"
        "cvt.rn.f16x2.e4m3x2 %0, l;\n\tcvt.rn.f16x2.e4m3x2 %1, h;\n\t}"
        : "=r"(lo), "=r"(hi)
        : "r"(w));
#else
    lo = pf_f8x2_to_f16x2(w);
    hi = pf_f8x2_to_f16x2(w >> 16);
#endif
}

/* N (2 or 4) words at p, streamed past L1; zero when !ok */
template <int N>
static __device__ __forceinline__ void f8r_ld(uint32_t *r, const uint8_t *p, int ok) {
    if (N == 4)
        asm volatile("{\n\t.reg .pred q;\n\tsetp.ne.b32 q, %5, 0;\n\t"
                     "mov.b32 %0, 0;\n\tmov.b32 %1, 0;\n\tmov.b32 %2, 0;\n\tmov.b32 %3, 0;\n\t"
                     "@q ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n\t}"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "l"(p), "r"(ok));
    else
        asm volatile("{\n\t.reg .pred q;\n\tsetp.ne.b32 q, %3, 0;\n\t"
                     "mov.b32 %0, 0;\n\tmov.b32 %1, 0;\n\t"
                     "@q ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];\n\t}"
                     : "=r"(r[0]), "=r"(r[1])
                     : "l"(p), "r"(ok));
}

/* The K row of key j0 + u of KV head kvh (V's is kv_stride further) when j0 + u <= j_stop, else
 * the pool's base (not read). bq, rq: j0 = bq bs + rq (the warp's 16 keys cross a block edge at
 * most once when bs >= 16). */
template <int HD>
static __device__ __forceinline__ const uint8_t *f8r_row(const uint8_t *pool, const int32_t *btp, int bofs, int bs,
                                                         int KV, int kvh, int bq, int rq, int u, int ok) {
    if (!ok) return pool;
    int s = rq + u, bi = bq;
    if (s >= bs) {
        bi += s / bs;
        s %= bs;
    }
    int64_t blk = btp[bi - bofs];
    return pool + ((blk * 2 * KV + kvh) * bs + s) * (int64_t)HD;
}

template <int HD>
static __device__ __forceinline__ void f8r_load(f8r_codes<HD> &r, const uint8_t *pool, const int32_t *btp, int bofs,
                                                int bs, int KV, int kvh, int j0, int j_stop, int gid, int tig) {
    const int64_t kv_stride = (int64_t)KV * bs * HD;
    const int bq = j0 / bs, rq = j0 - bq * bs;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        int u = gid + 8 * h, ok = j0 + u <= j_stop;
        const uint8_t *row = f8r_row<HD>(pool, btp, bofs, bs, KV, kvh, bq, rq, u, ok);
#pragma unroll
        for (int c = 0; c < HD / 64; c++) f8r_ld<4>(&r.k[h][4 * c], row + 16 * (tig + 4 * c), ok);
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int u = 4 * tig + i, ok = j0 + u <= j_stop;
        const uint8_t *row = f8r_row<HD>(pool, btp, bofs, bs, KV, kvh, bq, rq, u, ok);
        f8r_ld<HD / 32>(r.v[i], row + kv_stride + (HD / 8) * gid, ok);
    }
}

template <int HD>
static __global__ void __launch_bounds__(PF_THREADS, 4)
attention_decode_f8r_kernel(const float *q, int q_stride, const void *pool_v, const int32_t *pos,
                            const int32_t *row_seq, const int32_t *block_table, int max_blocks, int H, int KV, int bs,
                            float sl2, float *scratch, int min_w, int max_splits, float vs, int window) {
    __shared__ int32_t s_bt[PF_DEC_BT];
    __shared__ __align__(16) uint16_t s_pt[4][16 * 8]; /* each warp's P [16 keys][8 heads] f16 */
    __shared__ float red[4 * 8 * (HD + 2)];            /* [warp][head][HD + 2] for the merge */
    kiln_pdl_trigger();
    kiln_pdl_wait(); /* PDL: q, the pool and the scratch are the step's */
    constexpr int KS = HD / 16;
    const uint8_t *pool = (const uint8_t *)pool_v;
    const int t = blockIdx.x, kvh = blockIdx.y, z = blockIdx.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gid = lane >> 2, tig = lane & 3;
    const int G = H / KV, p = pos[t], nctx = p + 1;
    const int lo = window > 0 && nctx > window ? nctx - window : 0;
    const int w = kiln_att_window(nctx - lo, min_w, max_splits, PF_BC), j_first = lo + z * w;
    if (j_first > p) return; /* uniform over the block, before any barrier */
    const int j_stop = min(j_first + w, nctx) - 1;
    const int32_t *bt = block_table + (int64_t)row_seq[t] * max_blocks;
    int bofs = 0;
    const int32_t *btp = pf_stage_bt(s_bt, bt, j_first, j_stop, bs, &bofs);
    int j0 = j_first + 16 * warp; /* this warp's first key; then + PF_BC a step */
    f8r_codes<HD> cur, nxt;
    if (j0 <= j_stop) f8r_load<HD>(cur, pool, btp, bofs, bs, KV, kvh, j0, j_stop, gid, tig);

    /* Q^T as B fragments in the k order above: head gid (a copy of head G - 1 past G) */
    const float *qh = q + (int64_t)t * q_stride + (int64_t)(kvh * G + min(gid, G - 1)) * HD;
    uint32_t qb[KS][2];
#pragma unroll
    for (int ks = 0; ks < KS; ks++) {
        const float *qd = qh + 16 * (tig + 4 * (ks >> 2)) + 4 * (ks & 3);
        float2 x0 = *(const float2 *)qd, x1 = *(const float2 *)(qd + 2);
        qb[ks][0] = pf_pack_f16(x0.x, x0.y);
        qb[ks][1] = pf_pack_f16(x1.x, x1.y);
    }
    /* O^T: o[mt][e] = (dim (HD / 8) gid + 2 mt + (e >> 1), head 2tig + (e & 1)); m, l of heads 2tig + e */
    float o[KS][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
#pragma unroll
    for (int mt = 0; mt < KS; mt++) o[mt][0] = o[mt][1] = o[mt][2] = o[mt][3] = 0.0f;
    const uint32_t s_p = (uint32_t)__cvta_generic_to_shared(s_pt[warp]);
    /* ldmatrix.trans row of lane l < 16 (k index l): the key 4 (l' >> 1) + (l & 1) (+ 2 for l >= 8) */
    const int pl = lane & 15, pkey = 4 * ((pl & 7) >> 1) + (pl & 1) + (pl >> 3) * 2;

    for (; j0 <= j_stop; j0 += PF_BC) { /* warp-uniform; key j0 is unmasked: m is finite */
        if (j0 + PF_BC <= j_stop) f8r_load<HD>(nxt, pool, btp, bofs, bs, KV, kvh, j0 + PF_BC, j_stop, gid, tig);
        float c[4] = {0.0f, 0.0f, 0.0f, 0.0f}; /* S^T: (key gid + 8(e >> 1), head 2tig + (e & 1)) */
#pragma unroll
        for (int ks = 0; ks < KS; ks++) {
            uint32_t a0, a1, a2, a3;
            f8r_cvt4(cur.k[0][ks], a0, a2);
            f8r_cvt4(cur.k[1][ks], a1, a3);
            kiln_mma16816<false>(c, a0, a1, a2, a3, qb[ks][0], qb[ks][1]);
        }
        pf_t_softmax<KS>(c, o, m, l, sl2, j0, j_stop, gid);
        /* P[key][head] (16 bytes a key row): keys gid and gid + 8, heads 2tig, 2tig + 1 */
        __syncwarp();
        asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(s_p + (uint32_t)(gid * 16 + tig * 4)),
                     "r"(pf_pack_f16(c[0], c[1])));
        asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(s_p + (uint32_t)((gid + 8) * 16 + tig * 4)),
                     "r"(pf_pack_f16(c[2], c[3])));
        __syncwarp();
        uint32_t pb[2]; /* (keys 4tig, 4tig + 1; head gid), (keys 4tig + 2, 4tig + 3; head gid) */
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
                     : "=r"(pb[0]), "=r"(pb[1])
                     : "r"(s_p + (uint32_t)(pkey * 16)));
#pragma unroll
        for (int mt = 0; mt < KS; mt++) {
            /* dims 2mt, 2mt + 1 of this lane's HD / 8 are bytes 2 (mt & 1), +1 of word mt >> 1 */
            const int u = mt >> 1;
            const uint32_t sel = (mt & 1) ? 0x7362u : 0x5140u;
            uint32_t x01 = __byte_perm(cur.v[0][u], cur.v[1][u], sel); /* (d, k0) (d, k1) (d+1, k0) (d+1, k1) */
            uint32_t x23 = __byte_perm(cur.v[2][u], cur.v[3][u], sel);
            uint32_t a0, a1, a2, a3;
            f8r_cvt4(x01, a0, a1);
            f8r_cvt4(x23, a2, a3);
            kiln_mma16816<false>(o[mt], a0, a1, a2, a3, pb[0], pb[1]);
        }
        cur = nxt;
    }

    /* the 4 warps' states into red[warp][head][HD + 2] f32, then merged as above */
    pf_t_state<HD, 8, true>(red, o, m, l, warp, gid, tig, G);
    __syncthreads();
    pf_dec_merge<HD, true, 8>(red, G, t, H, kvh, max_splits, z, scratch, vs);
}

#define PF_SMEM_T(HD) (PF_SMEM(HD) + 4 * 256) /* the tile buffers and each warp's P (dynamic) */

template <int HD, bool F8>
static cudaError_t pf_launch(void *out, kiln_dtype adt, const float *q, int q_stride, const kiln_cuda_kv *kv,
                             const int32_t *pos, const int32_t *row_seq, const int32_t *block_table, int max_blocks,
                             int H, int KV, int bs, const int32_t *tiles, int n_tiles, int pdl, cudaStream_t st) {
    size_t smem = PF_SMEM(HD);
    cudaError_t e = cudaFuncSetAttribute(attention_prefill_kernel<HD, F8>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)smem);
    if (e != cudaSuccess) return e;
    float sl2 = 1.4426950408889634f / sqrtf((float)HD) * (F8 ? kv->k_scale : 1.0f);
    dim3 grid((unsigned)n_tiles, (unsigned)KV, 1u);
    kiln_launch(pdl != 0, attention_prefill_kernel<HD, F8>, grid, dim3(PF_THREADS), smem, st, out, adt, q, q_stride,
                (const void *)kv->pool, pos, row_seq, block_table, max_blocks, H, KV, bs, tiles, n_tiles, sl2,
                kv->v_scale, kv->window);
    KILN_CUDA_CHECK_LAUNCH();
}

typedef void (*dec_kern_fn)(const float *, int, const void *, const int32_t *, const int32_t *, const int32_t *, int,
                            int, int, int, float, float *, int, int, float, int);
/* The decode kernel for G heads a group on a bf16 (F8 false) or FP8 pool, and its dynamic shared
 * memory: the heads as the MMA's N columns where they fit (G <= 8; an FP8 pool's codes converted
 * in registers, no tiles), else as its M rows. dec_launch and dec_occupancy both ask here. */
template <int HD, bool F8>
static dec_kern_fn dec_kernel(int G, size_t *smem) {
    if (G > 8) {
        *smem = PF_SMEM(HD);
        return attention_decode_kernel<HD, F8>;
    }
    *smem = F8 ? 0 : PF_SMEM_T(HD);
    return F8 ? attention_decode_f8r_kernel<HD> : attention_decode_t_kernel<HD>;
}

/* grid (T rows, KV, max_splits), the windows' partial states into scratch */
template <int HD, bool F8>
static cudaError_t dec_launch(const float *q, int q_stride, const kiln_cuda_kv *kv, const int32_t *pos,
                              const int32_t *row_seq, const int32_t *block_table, int max_blocks, int T, int H, int KV,
                              int bs, float *scratch, int min_w, int max_splits, int pdl, cudaStream_t st) {
    size_t smem = 0;
    dec_kern_fn kern = dec_kernel<HD, F8>(H / KV, &smem);
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
    float sl2 = 1.4426950408889634f / sqrtf((float)HD) * (F8 ? kv->k_scale : 1.0f);
    dim3 grid((unsigned)T, (unsigned)KV, (unsigned)max_splits);
    kiln_launch(kiln_pdl_at(pdl, T), kern, grid, dim3(PF_THREADS), smem, st, q, q_stride,
                (const void *)kv->pool, pos, row_seq, block_table, max_blocks, H, KV, bs, sl2, scratch, min_w,
                max_splits, kv->v_scale, kv->window);
    KILN_CUDA_CHECK_LAUNCH();
}

extern "C" cudaError_t kiln_cuda_attention_prefill(void *out, kiln_dtype adt, const float *q, int q_stride,
                                                   const uint16_t *pool_layer, const int32_t *pos,
                                                   const int32_t *row_seq, const int32_t *block_table, int max_blocks,
                                                   int H, int KV, int hd, int block_size, const int32_t *tiles,
                                                   int n_tiles, int pdl, cudaStream_t st) {
    kiln_cuda_kv kv = {(void *)pool_layer, 0, 1.0f, 1.0f, 0};
    return kiln_cuda_attention_prefill_ex(out, adt, q, q_stride, &kv, pos, row_seq, block_table, max_blocks, H, KV, hd,
                                          block_size, tiles, n_tiles, pdl, st);
}

extern "C" cudaError_t kiln_cuda_attention_prefill_ex(void *out, kiln_dtype adt, const float *q, int q_stride,
                                                      const kiln_cuda_kv *kv, const int32_t *pos,
                                                      const int32_t *row_seq, const int32_t *block_table,
                                                      int max_blocks, int H, int KV, int hd, int block_size,
                                                      const int32_t *tiles, int n_tiles, int pdl, cudaStream_t st) {
    if (!kv || !(kv->k_scale > 0.0f) || !(kv->v_scale > 0.0f)) return cudaErrorInvalidValue;
    const void *pool_layer = kv->pool;
    if (kiln_cuda_prefill_tile_rows(H, KV) == 0 || KV > 65535 || block_size <= 0 || q_stride % 2 ||
        ((uintptr_t)q & 7) || ((uintptr_t)pool_layer & 15) || (adt != KILN_DT_F32 && adt != KILN_DT_BF16 &&
                                                                adt != KILN_DT_F16))
        return cudaErrorInvalidValue;
    if (hd != 64 && hd != 128) return cudaErrorInvalidValue;
    if (n_tiles <= 0) return cudaSuccess;
#define PF_L(HDV, F8V) pf_launch<HDV, F8V>(out, adt, q, q_stride, kv, pos, row_seq, block_table, max_blocks, H, KV, \
                                         block_size, tiles, n_tiles, pdl, st)
    if (hd == 64) return kv->f8 ? PF_L(64, true) : PF_L(64, false);
    return kv->f8 ? PF_L(128, true) : PF_L(128, false);
#undef PF_L
}

extern "C" size_t kiln_cuda_attention_tc_smem(int hd) { return hd == 64 || hd == 128 ? PF_SMEM(hd) : 0; }

/* the occupancy of the kernel dec_launch runs for G heads a group (f8: an FP8 pool) */
template <int HD>
static cudaError_t dec_occupancy(int *n, int G, int f8, size_t *smem_out) {
    size_t smem = 0;
    dec_kern_fn kern = f8 ? dec_kernel<HD, true>(G, &smem) : dec_kernel<HD, false>(G, &smem);
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e == cudaSuccess) e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(n, kern, PF_THREADS, smem);
    cudaFuncAttributes fa;
    if (e == cudaSuccess) e = cudaFuncGetAttributes(&fa, kern);
    *smem_out = smem + (e == cudaSuccess ? fa.sharedSizeBytes : 0);
    return e;
}

extern "C" int kiln_cuda_attention_decode_tc_blocks_per_sm(int hd, int G, int f8, const kiln_cuda_target *t) {
    int n = 0;
    size_t smem = 0;
    cudaError_t e = hd == 64    ? dec_occupancy<64>(&n, G, f8, &smem)
                    : hd == 128 ? dec_occupancy<128>(&n, G, f8, &smem)
                                : cudaErrorInvalidValue;
    if (e == cudaSuccess && n > 0 && t) { /* capped by the target's shared memory per SM */
        int m = kiln_cuda_target_smem_blocks(t, smem);
        if (m < n) n = m;
    }
    return e == cudaSuccess && n > 0 ? n : 1;
}

/* Windows per row for the split decode passes (cuda_forward.c; pure, so the graphs of a bucket
 * and the tests agree): n = rows x KV heads CTAs a window, C resident CTAs on the chip, cap the
 * most windows. Up to a wave, as many windows as fill it (C / n). When n alone exceeds a wave,
 * whole windows leave the last wave part empty (n = 512: batch 64 x 8 KV heads, on C = 396 slots:
 * 3 a SM x 132 SMs, runs two waves of equal length, the second 29 % full: 65 % of the slots
 * busy), so the count is the smallest s <= 8 whose waves keep >= 90 % of the slots busy,
 * n s / (C ceil(n s / C)) (s = 3 there: 4 waves, 97 %), else the busiest s <= 8. */
extern "C" int kiln_cuda_wave_splits(int64_t n, int64_t C, int cap) {
    if (cap < 1) cap = 1;
    if (n < 1 || C < 1) return 1;
    int64_t s = C / n;
    if (s < 1) {
        double best = -1.0;
        for (int k = 1; k <= cap && k <= 8; k++) {
            int64_t waves = (n * k + C - 1) / C;
            double busy = (double)(n * k) / (double)(C * waves);
            if (busy > best) best = busy, s = k;
            if (busy >= 0.9) break;
        }
    }
    return (int)(s > cap ? cap : s);
}

extern "C" cudaError_t kiln_cuda_attention_decode_tc(void *out, kiln_dtype adt, const float *q, int q_stride,
                                                     const uint16_t *pool_layer, const int32_t *pos,
                                                     const int32_t *row_seq, const int32_t *block_table, int max_blocks,
                                                     int T, int H, int KV, int hd, int block_size, int min_w,
                                                     int max_splits, float *scratch, int pdl, cudaStream_t st) {
    kiln_cuda_kv kv = {(void *)pool_layer, 0, 1.0f, 1.0f, 0};
    return kiln_cuda_attention_decode_tc_ex(out, adt, q, q_stride, &kv, pos, row_seq, block_table, max_blocks, T, H, KV,
                                            hd, block_size, min_w, max_splits, scratch, NULL, pdl, st);
}

extern "C" cudaError_t kiln_cuda_attention_decode_tc_ex(void *out, kiln_dtype adt, const float *q, int q_stride,
                                                        const kiln_cuda_kv *kv, const int32_t *pos,
                                                        const int32_t *row_seq, const int32_t *block_table,
                                                        int max_blocks, int T, int H, int KV, int hd, int block_size,
                                                        int min_w, int max_splits, float *scratch,
                                                        const kiln_cuda_q8_blocks *q8, int pdl, cudaStream_t st) {
    if (!kv || !(kv->k_scale > 0.0f) || !(kv->v_scale > 0.0f)) return cudaErrorInvalidValue;
    const void *pool_layer = kv->pool;
    if (kiln_cuda_prefill_tile_rows(H, KV) == 0 || H / KV > 16 || KV > 65535 || block_size <= 0 || q_stride % 2 ||
        ((uintptr_t)q & 7) || ((uintptr_t)pool_layer & 15) || !scratch || min_w < 1 || max_splits < 1 ||
        max_splits > 64 || (adt != KILN_DT_F32 && adt != KILN_DT_BF16 && adt != KILN_DT_F16))
        return cudaErrorInvalidValue;
    if (hd != 64 && hd != 128) return cudaErrorInvalidValue;
    if (T <= 0) return cudaSuccess;
#define DEC_L(HDV, F8V) dec_launch<HDV, F8V>(q, q_stride, kv, pos, row_seq, block_table, max_blocks, T, H, KV, \
                                          block_size, scratch, min_w, max_splits, pdl, st)
    cudaError_t e = hd == 64 ? (kv->f8 ? DEC_L(64, true) : DEC_L(64, false))
                             : (kv->f8 ? DEC_L(128, true) : DEC_L(128, false));
#undef DEC_L
    if (e != cudaSuccess) return e;
    return kiln_cuda_attention_combine_win(out, adt, scratch, pos, T, H, hd, min_w, max_splits, PF_BC, kv->window, q8,
                                           pdl, st);
}
