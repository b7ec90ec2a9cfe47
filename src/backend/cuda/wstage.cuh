/* wstage.cuh: the W-staged tensor-core pieces shared by skinny_wide.cu (tiles over N, all of K)
 * and skinny_splitk.cu (stream-K: tiles over N and K): the cp.async copies of one (tile,
 * k-tile) item into a shared-memory stage, the per-lane ldmatrix offsets, and the compute of one
 * 64-k chain (4 mmas into a zeroed tmp tile, which the caller adds to its accumulator).
 *
 *   W: [N][K] row-major, bf16 / f16;  x: [T][K] same dtype, T <= 8 NT;  K % (8 CH) == 0.
 *   A tile is WD_BN = 128 output rows n0..n0+127; a k-tile is BK = 8 CH k (CH 16-byte chunks
 *   per row). A stage (bytes): sW[128][CH] chunks, then sX[8 NT][CH] chunks; chunk c of row r
 *   at chunk c ^ (r & 7) of the row (XOR swizzle). W rows >= N and x rows >= T are zero-filled.
 * skinny_wide.cu's header gives the fragment layouts (mma.m16n8k16: A = W, B = x^T, C = y^T):
 *   C: acc[nt][2hh + e] = y[t = 8nt + 2tig + e][n = n0 + 16 warp + gid + 8hh]
 *   (gid = lane >> 2, tig = lane & 3). Warp w owns rows n0 + 16w .. +15 of the tile. */
#ifndef KILN_CUDA_WSTAGE_CUH
#define KILN_CUDA_WSTAGE_CUH
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
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(ok ? 16 : 0));
}

/* Issue the copies of item (tile n0, k-tile kt) into the stage at shared address st
 * (256 threads; W copies with policy pol, x copies without). */
template <int NT, int CH, bool PF>
static __device__ __forceinline__ void wd_load(uint32_t st, const uint16_t *__restrict__ x,
                                               const uint16_t *__restrict__ w, int T, int N, int K, int n0, int kt,
                                               uint64_t pol) {
    constexpr int RSTEP = 256 / CH;            /* rows between a thread's W chunks */
    constexpr int NW = WD_BN * CH / 256;       /* W chunks per thread */
    const int tid = threadIdx.x, ch = tid % CH, r0 = tid / CH;
    const int k0 = kt * CH * 8 + ch * 8;       /* element offset of this thread's chunk in a row */
    const uint32_t sw = (uint32_t)(ch ^ (r0 & 7)) * 16; /* RSTEP % 8 == 0: every row r has r & 7 == r0 & 7 */
#pragma unroll
    for (int j = 0; j < NW; j++) {
        int r = r0 + j * RSTEP, n = n0 + r, ok = n < N;
        const uint16_t *src = w + (int64_t)(ok ? n : 0) * K + k0;
        wd_cp16_pol<PF>(st + (uint32_t)r * CH * 16 + sw, src, ok, pol);
    }
    if (tid < NT * 8 * CH) { /* x rows 0..8NT-1: one chunk per thread */
        int t = r0, ok = t < T;
        const uint16_t *src = x + (int64_t)(ok ? t : 0) * K + k0;
        wd_cp16(st + WD_BN * CH * 16 + (uint32_t)t * CH * 16 + sw, src, ok);
    }
}

/* per-lane ldmatrix offsets within a stage (bytes) for chunk pair 2ks: A and B */
struct wd_frag {
    uint32_t a_row, b_row; /* byte offsets of the lane's A / B row in a stage */
    int ac, bc;            /* chunk offsets (0 / 1) within the pair */
    int asw, bsw;          /* swizzles of those rows (== lane & 7) */
};
template <int NT, int CH>
static __device__ __forceinline__ wd_frag wd_frag_offsets(int lane, int warp) {
    constexpr int XOFF = WD_BN * CH * 16; /* x part of a stage */
    wd_frag f;
    const int ar = 16 * warp + (lane & 7) + 8 * ((lane >> 3) & 1);
    const int br = NT == 2 ? (lane & 7) + 8 * (lane >> 4) : (lane & 7);
    f.ac = lane >> 4;
    f.bc = (lane >> 3) & 1;
    f.a_row = (uint32_t)ar * CH * 16;
    f.b_row = XOFF + (uint32_t)br * CH * 16;
    f.asw = ar & 7;
    f.bsw = br & 7;
    return f;
}

/* tmp = the 64-k chain c0 of the stage at st (k-steps 4c0 .. 4c0 + 3, chunks 8c0 .. 8c0 + 7):
 * 4 mmas into a zeroed f32 tile (the tensor core truncates inside each mma, so chains stay
 * short); the caller adds tmp to its accumulator in round to nearest */
template <int NT, int CH, bool BF>
static __device__ __forceinline__ void wd_chain(uint32_t st, const wd_frag &f, int c0, float (&tmp)[NT][4]) {
#pragma unroll
    for (int nt = 0; nt < NT; nt++) tmp[nt][0] = tmp[nt][1] = tmp[nt][2] = tmp[nt][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
        const int ks = 4 * c0 + kk;
        uint32_t a[4], b[4];
        kiln_ldsm_x4(a, st + f.a_row + (uint32_t)((2 * ks + f.ac) ^ f.asw) * 16);
        if (NT == 2) kiln_ldsm_x4(b, st + f.b_row + (uint32_t)((2 * ks + f.bc) ^ f.bsw) * 16);
        else kiln_ldsm_x2(b, st + f.b_row + (uint32_t)((2 * ks + f.bc) ^ f.bsw) * 16);
#pragma unroll
        for (int nt = 0; nt < NT; nt++) kiln_mma16816<BF>(tmp[nt], a, b[2 * nt], b[2 * nt + 1]);
    }
}
#endif
