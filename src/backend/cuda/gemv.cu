/* gemv.cu: memory-bound y = x W^T for small batches (decode), T <= KILN_GEMV_MAX_ROWS rows.
 *
 *   W: [N][K] row-major, bf16 or f16;  x: [T][K] same dtype;  y: [T][N] f32;  K % 8 == 0.
 * Devstral shapes (N x K): qkv 6144 x 5120, o 5120 x 4096, gate|up 65536 x 5120,
 * down 5120 x 32768, LM head 131072 x 5120: 46 GB of weights per decode step, so the step is
 * bound by streaming W once from HBM (H100: ~3.3 TB/s).
 *
 * Work split: a CTA of 8 warps; each warp owns R consecutive output rows n (R = 1, 2 or 4) and
 * the whole of K, so there is no cross-warp reduction, no atomics and no second kernel. K is cut
 * into C8 = K / 8 chunks of 8 elements (one 16-byte load); lane l of the warp takes the chunks
 * l, l + 32, l + 64, ... in ascending order. Per iteration a lane issues R x U loads of W
 * (R x U = 8: 128 bytes in flight per lane, ~64 KB per SM at 16 warps) before using any, with
 * L1::no_allocate and an L2 evict_first policy (W is read once per step), and reads x through
 * L1 (ld.global.nc; x is at most 8 x 32768 x 2 = 512 KB, shared by every CTA, stays in L2).
 * The x chunk of a step is loaded once per warp and used for its R rows, so x costs T / R times
 * W's bytes in L1 traffic and T / R conversions per W element: R grows with T.
 *
 * Arithmetic: bf16 -> f32 by bit shifts, f16 -> f32 by cvt; explicit fmaf (no contraction or
 * reassociation freedom): acc[r][t] += w[k] * x[t][k] for the lane's valid chunks in ascending
 * order, elements 0..7 within a chunk; then a xor-butterfly over the 32 lanes (offsets 16, 8,
 * 4, 2, 1). That order is a function of K only: the same bits for row t whatever T, R, N, the
 * grid, or which kernel variant ran (the T = 3 call runs the T = 4 kernel with row 3 unused).
 * __launch_bounds__(256, 2): at most 128 registers (ptxas -v, sm_90: 54..124, no spills), so at
 * least 16 warps per SM.
 * Tail chunks (c >= C8) are neither loaded nor accumulated (not added as zeros), so even the
 * sign of a zero result does not depend on R or U.
 * GLU (kiln_cuda_gemv_glu): R = 2 with the rows j and F + j of W = [gate; up] (N = F), and the
 * warp writes act[t][j] = silu(gate) up (kiln_silu_mul, as swiglu.cu) in the activation dtype:
 * the f32 gate|up block and the SwiGLU kernel go away.
 *
 * Limits: the unit of work is a warp's R whole rows, so N = 5120 gives 1280..5120 warps, about
 * 1.2 waves of resident warps at 2..4 CTAs per SM: the last wave runs with fewer bytes in flight.
 * The next step, if the benchmark shows it, is a split of K across the warps of a CTA chosen by
 * K alone (e.g. 4 slices for K = 32768) with a fixed-order shared-memory sum. No tensor cores:
 * mma.sync m16n8k16 (n = 8 = T) would cut the issue cost at T = 8, but its internal sum order
 * and rounding are unspecified. */
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/cuda_dev.cuh"

#define GEMV_WARPS 8 /* warps per CTA */


/* the 8 elements of a 16-byte chunk as f32, element 0 first (the low half of .x) */
template <bool BF>
static __device__ __forceinline__ void unpack8(uint4 v, float f[8]) {
    uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        if (BF) {
            f[2 * i] = __uint_as_float(u[i] << 16);
            f[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
        } else {
            __half2 h = *reinterpret_cast<const __half2 *>(&u[i]);
            float2 g = __half22float2(h);
            f[2 * i] = g.x;
            f[2 * i + 1] = g.y;
        }
    }
}

/* TP: rows of x the kernel holds (1, 2, 4, 8; rows >= T are skipped); R: output rows per warp;
 * U: chunks per lane per iteration (R * U loads of W in flight); GLU: rows j, N + j and the
 * SwiGLU product (R = 2; y = act [T][N] in ydt), else y = f32 [T][N]. */
template <int TP, int R, int U, bool BF, bool GLU>
static __global__ void __launch_bounds__(GEMV_WARPS * 32, 2)
gemv_kernel(void *__restrict__ y, kiln_dtype ydt, const uint4 *__restrict__ x, const uint4 *__restrict__ w, int T,
            int N, int C8) {
    const int lane = threadIdx.x & 31;
    /* the grid has ceil(N / (8 R)) CTAs (GLU: ceil(N / 8)), so n0 < N + 8 R fits an int */
    const int n0 = (int)(blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5)) * (GLU ? 1 : R);
    if (n0 >= N) return; /* whole warp */
    const uint4 *wr[R];
#pragma unroll
    for (int r = 0; r < R; r++) /* rows >= N: read, never stored */
        wr[r] = w + (int64_t)(GLU ? n0 + r * N : min(n0 + r, N - 1)) * C8;
    uint64_t pol;
    asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(pol));

    float acc[R][TP];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int t = 0; t < TP; t++) acc[r][t] = 0.0f;

    for (int base = 0; base < C8; base += 32 * U) {
        uint4 wv[R][U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            int c = base + 32 * u + lane;
#pragma unroll
            for (int r = 0; r < R; r++) wv[r][u] = kiln_ld_stream16(wr[r] + c, c < C8, pol);
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            int c = base + 32 * u + lane;
            if (c < C8) {
                float xf[TP][8];
#pragma unroll
                for (int t = 0; t < TP; t++) unpack8<BF>(kiln_ld_nc16(x + (int64_t)t * C8 + c, t < T), xf[t]);
#pragma unroll
                for (int r = 0; r < R; r++) {
                    float wf[8];
                    unpack8<BF>(wv[r][u], wf);
#pragma unroll
                    for (int t = 0; t < TP; t++)
#pragma unroll
                        for (int j = 0; j < 8; j++) acc[r][t] = fmaf(wf[j], xf[t][j], acc[r][t]);
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int t = 0; t < TP; t++)
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) acc[r][t] += __shfl_xor_sync(0xffffffffu, acc[r][t], o);
    /* every lane holds every sum; lane r * TP + t (mod 32) stores y[t][n0 + r] (GLU: lane t
     * stores act[t][n0]) */
    if (GLU) {
#pragma unroll
        for (int t = 0; t < TP; t++)
            if (lane == t && t < T) kiln_st(ydt, y, (int64_t)t * N + n0, kiln_silu_mul(acc[0][t], acc[R - 1][t]));
    } else {
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
            for (int t = 0; t < TP; t++)
                if (lane == ((r * TP + t) & 31) && t < T && n0 + r < N)
                    ((float *)y)[(int64_t)t * N + (n0 + r)] = acc[r][t];
    }
}

template <int TP, int R, bool BF, bool GLU>
static void launch(void *y, kiln_dtype ydt, const void *x, const void *w, int T, int N, int C8, cudaStream_t st) {
    int rows_per_cta = GEMV_WARPS * (GLU ? 1 : R); /* GLU: one output (two W rows) per warp */
    unsigned grid = (unsigned)(((int64_t)N + rows_per_cta - 1) / rows_per_cta);
    gemv_kernel<TP, R, 8 / R, BF, GLU><<<grid, GEMV_WARPS * 32, 0, st>>>(y, ydt, (const uint4 *)x, (const uint4 *)w, T,
                                                                         N, C8);
}

template <int TP, bool BF, bool GLU>
static void launch_r(void *y, kiln_dtype ydt, const void *x, const void *w, int T, int N, int C8, int R,
                     cudaStream_t st) {
    if (GLU) launch<TP, 2, BF, true>(y, ydt, x, w, T, N, C8, st); /* rows j and N + j */
    else if (R == 1) launch<TP, 1, BF, false>(y, ydt, x, w, T, N, C8, st);
    else if (R == 2) launch<TP, 2, BF, false>(y, ydt, x, w, T, N, C8, st);
    else launch<TP, 4, BF, false>(y, ydt, x, w, T, N, C8, st);
}

template <bool BF, bool GLU>
static void launch_t(void *y, kiln_dtype ydt, const void *x, const void *w, int T, int N, int C8, int R,
                     cudaStream_t st) {
    if (T == 1) launch_r<1, BF, GLU>(y, ydt, x, w, T, N, C8, R, st);
    else if (T == 2) launch_r<2, BF, GLU>(y, ydt, x, w, T, N, C8, R, st);
    else if (T <= 4) launch_r<4, BF, GLU>(y, ydt, x, w, T, N, C8, R, st);
    else launch_r<8, BF, GLU>(y, ydt, x, w, T, N, C8, R, st);
}

/* rows per warp by T (x traffic and conversions are T / R per W element), halved while the
 * grid would have fewer than 16 warps per SM (n_sm: the target's; measured on the H100, 132) */
extern "C" int kiln_cuda_gemv_pick_rows(int T, int N, int n_sm) {
    int R = T <= 2 ? 1 : T <= 4 ? 2 : 4;
    if (n_sm <= 0) n_sm = 132;
    while (R > 1 && (N + R - 1) / R < n_sm * 16) R >>= 1;
    return R;
}

/* the current device's SM count (a cached runtime attribute, no device work); 0 when unknown */
static int gemv_device_sms(void) {
    int dev = 0, n = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
        return 0;
    return n;
}

extern "C" cudaError_t kiln_cuda_gemv_ex(float *y, const void *x, const void *w, kiln_dtype wdt, int T, int N, int K,
                                         int rows_per_warp, cudaStream_t st) {
    if ((wdt != KILN_DT_BF16 && wdt != KILN_DT_F16) || T < 1 || T > KILN_GEMV_MAX_ROWS || N < 1 || K < 8 ||
        K % 8 != 0 || (rows_per_warp != 0 && rows_per_warp != 1 && rows_per_warp != 2 && rows_per_warp != 4) ||
        !y || !x || !w || ((uintptr_t)x & 15) || ((uintptr_t)w & 15) || ((uintptr_t)y & 3))
        return cudaErrorInvalidValue;
    int R = rows_per_warp ? rows_per_warp : kiln_cuda_gemv_pick_rows(T, N, gemv_device_sms());
    if (wdt == KILN_DT_BF16) launch_t<true, false>(y, KILN_DT_F32, x, w, T, N, K / 8, R, st);
    else launch_t<false, false>(y, KILN_DT_F32, x, w, T, N, K / 8, R, st);
    KILN_CUDA_CHECK_LAUNCH();
}

extern "C" cudaError_t kiln_cuda_gemv_glu(void *act, kiln_dtype adt, const void *x, const void *w, kiln_dtype wdt,
                                          int T, int F, int K, cudaStream_t st) {
    if ((wdt != KILN_DT_BF16 && wdt != KILN_DT_F16) || (adt != KILN_DT_F32 && adt != KILN_DT_BF16 &&
                                                        adt != KILN_DT_F16) || T < 1 || T > KILN_GEMV_MAX_ROWS ||
        F < 1 || F > (1 << 29) || K < 8 || K % 8 != 0 || !act || !x || !w || ((uintptr_t)x & 15) ||
        ((uintptr_t)w & 15) || ((uintptr_t)act & 3))
        return cudaErrorInvalidValue;
    if (wdt == KILN_DT_BF16) launch_t<true, true>(act, adt, x, w, T, F, K / 8, 2, st);
    else launch_t<false, true>(act, adt, x, w, T, F, K / 8, 2, st);
    KILN_CUDA_CHECK_LAUNCH();
}

extern "C" cudaError_t kiln_cuda_gemv(float *y, const void *x, const void *w, kiln_dtype wdt, int T, int N, int K,
                                      cudaStream_t st) {
    return kiln_cuda_gemv_ex(y, x, w, wdt, T, N, K, 0, st);
}
