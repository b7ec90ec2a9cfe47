/* cuda_dev.cuh: device helpers shared by the kernels: dtype loads/stores and a block sum with a
 * fixed reduction order (warp shuffles, then warp partials in order). */
#ifndef KILN_CUDA_DEV_CUH
#define KILN_CUDA_DEV_CUH
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "format/dtype.h"
#include "util/fp8.h"

/* Programmatic dependent launch (sm_90). A kernel launched by kiln_launch may start while the
 * kernel before it in the stream still runs, so the next kernel's prologue (launch, index math,
 * its first weight loads) overlaps this one's tail. kiln_pdl_wait() blocks until that earlier
 * kernel has completed and its writes are visible; a kernel launched this way must call it
 * before it reads anything an earlier kernel of the step wrote, and before it writes anything
 * (the earlier kernel may still read it). Only weights (never written during a step) and the
 * step descriptor (copied before the step's first kernel) may be read before it. The chain is
 * transitive: every such kernel waits before it can complete. kiln_pdl_trigger() lets the next
 * kernel be scheduled (it then waits in its own kiln_pdl_wait). Both are no-ops in a kernel
 * launched without the attribute.
 * griddepcontrol exists from sm_90: below it (the sm_80 / 86 / 89 code and the compute_80 PTX of
 * a release build) both are no-ops, and the backend never asks for PDL there (target.h has_pdl). */
static __device__ __forceinline__ void kiln_pdl_wait(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
static __device__ __forceinline__ void kiln_pdl_trigger(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::);
#endif
}

/* Launch k<<<grid, block, smem, st>>>(args), with programmatic stream serialization when pdl
 * (the kernel must follow the kiln_pdl_wait rule). The launchers of cuda_ops.h take `pdl` as
 * the fewest rows of a step that launch this way (0 never, 1 always; the backend passes
 * kiln_cuda_options.pdl_min_rows, or 0 when KILN_CUDA_PDL=0; the graphs capture launches once)
 * and pass kiln_pdl_at(pdl, rows) here: on the H100 (Devstral shape, bf16, same call) PDL took
 * batch 4 / 8 / 16 from 16.59 / 16.80 / 17.23 ms to 16.37 / 16.61 / 17.01, where cuBLASLt and
 * the wide kernel leave 0.3-0.6 us between kernels, but batch 1 / 2 from 16.23 / 16.65 to
 * 16.80 / 17.60: their GEMV chains have 0.08 us gaps in the graphs, and each release of a
 * waiting kernel cost more than that. */
static inline bool kiln_pdl_at(int pdl, int T) { return pdl > 0 && T >= pdl; }
template <typename... P, typename... A>
static cudaError_t kiln_launch(bool pdl, void (*k)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                               A... args) {
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cudaLaunchAttribute at{};
    at.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at.val.programmaticStreamSerializationAllowed = 1;
    if (pdl) {
        cfg.attrs = &at;
        cfg.numAttrs = 1;
    }
    return cudaLaunchKernelEx(&cfg, k, ((P)args)...);
}

/* element i of a f32/f16/bf16 array as f32 (exact) */
static __device__ __forceinline__ float kiln_ld(kiln_dtype dt, const void *p, int64_t i) {
    if (dt == KILN_DT_F32) return ((const float *)p)[i];
    if (dt == KILN_DT_F16) return __half2float(((const __half *)p)[i]);
    return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
}
/* store v rounded to nearest even */
static __device__ __forceinline__ void kiln_st(kiln_dtype dt, void *p, int64_t i, float v) {
    if (dt == KILN_DT_F32) ((float *)p)[i] = v;
    else if (dt == KILN_DT_F16) ((__half *)p)[i] = __float2half_rn(v);
    else ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
}
/* v rounded to dt as kiln_st stores it, back as f32 (what kiln_ld then reads) */
static __device__ __forceinline__ float kiln_round_to(kiln_dtype dt, float v) {
    if (dt == KILN_DT_F32) return v;
    if (dt == KILN_DT_F16) return __half2float(__float2half_rn(v));
    return __bfloat162float(__float2bfloat16_rn(v));
}

/* The int8 GEMV's input blocks (qlinear.cu's kiln_cuda_qgemv_q8): x [T][K] (K % 32 == 0) as
 * xq [T][K] int8, xd [T][K / 32] and xs [T][K / 16], per 32-element block
 *   d = amax / 127,  q = rint(v 127 / amax) (0 where amax is 0),  xs[half h] = d * sum of its 16 q.
 * The one formula of kiln_cuda_quantize_x and of the producers that write the blocks beside
 * their own output (RMSNorm, SwiGLU, attention's combine: issue 16): a block is held by 32 / E
 * consecutive lanes of a warp (an aligned group), E consecutive elements a lane; v: the lane's
 * values as the producer stored them (kiln_round_to); e0: the index of its first element in
 * [T][K] (a multiple of E).
 * Every lane of the warp must call it (shuffles); a lane with !ok (its whole group must be)
 * stores nothing. max, the integer sums and every rounding are independent of E, so the
 * blocks have the same bits for any E. */
template <int E>
static __device__ __forceinline__ void kiln_q8_block(const float *v, bool ok, int8_t *xq, float *xd, float *xs,
                                                     int64_t e0) {
    static_assert(E == 1 || E == 4 || E == 8, "kiln_q8_block: 1, 4 or 8 elements a lane");
    constexpr int L = 32 / E; /* lanes a block */
    float amax = fabsf(v[0]);
#pragma unroll
    for (int e = 1; e < E; e++) amax = fmaxf(amax, fabsf(v[e]));
#pragma unroll
    for (int o = L / 2; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    float d = amax / 127.0f, id = amax > 0.0f ? 127.0f / amax : 0.0f;
    int q[E], sq = 0;
#pragma unroll
    for (int e = 0; e < E; e++) {
        q[e] = __float2int_rn(v[e] * id);
        sq += q[e];
    }
#pragma unroll
    for (int o = L / 4; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, o); /* within each half */
    if (!ok) return;
    if (E == 1) {
        xq[e0] = (int8_t)q[0];
    } else {
        uint32_t w[E >= 4 ? E / 4 : 1];
#pragma unroll
        for (int j = 0; j < E / 4; j++)
            w[j] = (uint32_t)(q[4 * j] & 0xff) | (uint32_t)(q[4 * j + 1] & 0xff) << 8 |
                   (uint32_t)(q[4 * j + 2] & 0xff) << 16 | (uint32_t)(q[4 * j + 3] & 0xff) << 24;
        if (E == 4) *(uint32_t *)(xq + e0) = w[0];
        else *(uint2 *)(xq + e0) = make_uint2(w[0], w[E / 4 - 1]);
    }
    if ((e0 & 31) == 0) xd[e0 >> 5] = d;
    if ((e0 & 15) == 0) xs[e0 >> 4] = d * (float)sq;
}

static __device__ __forceinline__ float kiln_bf16_bits_to_f32(uint16_t b) {
    return __uint_as_float((uint32_t)b << 16);
}
static __device__ __forceinline__ uint16_t kiln_f32_to_bf16_bits(float v) {
    __nv_bfloat16 h = __float2bfloat16_rn(v);
    return *(const uint16_t *)&h;
}

static __device__ __forceinline__ float kiln_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
/* Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the result.
 * `red` is __shared__ float[32]. Fixed order: xor-tree in each warp, then warps 0..n-1. */
static __device__ __forceinline__ float kiln_block_sum(float v, float *red) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = kiln_warp_sum(v);
    __syncthreads(); /* red may be in use by a previous call */
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float s = 0.0f;
    for (int i = 0; i < nw; i++) s += red[i];
    return s;
}

/* the largest v over the block (every thread gets it; red: 32 floats, as kiln_block_sum) */
static __device__ __forceinline__ float kiln_block_max(float v, float *red) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads(); /* red may be in use by a previous call */
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float m = red[0];
    for (int i = 1; i < nw; i++) m = fmaxf(m, red[i]);
    return m;
}

/* 16 bytes of a weight stream: not kept in L1, L2 policy pol (evict-first); zero when !ok */
static __device__ __forceinline__ uint4 kiln_ld_stream16(const uint4 *p, int ok, uint64_t pol) {
    uint4 v;
    asm("{\n\t.reg .pred q;\n\t"
        "setp.ne.b32 q, %5, 0;\n\t"
        "mov.b32 %0, 0;\n\tmov.b32 %1, 0;\n\tmov.b32 %2, 0;\n\tmov.b32 %3, 0;\n\t"
        "@q ld.global.nc.L1::no_allocate.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %6;\n\t}"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p), "r"(ok), "l"(pol));
    return v;
}
/* 16 read-only bytes through L1; zero when !ok */
static __device__ __forceinline__ uint4 kiln_ld_nc16(const uint4 *p, int ok) {
    uint4 v;
    asm("{\n\t.reg .pred q;\n\t"
        "setp.ne.b32 q, %5, 0;\n\t"
        "mov.b32 %0, 0;\n\tmov.b32 %1, 0;\n\tmov.b32 %2, 0;\n\tmov.b32 %3, 0;\n\t"
        "@q ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];\n\t}"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p), "r"(ok));
    return v;
}

/* ---- tensor-core and async-copy PTX (sm_80+; used by attention_prefill, skinny, skinny_wide) ---- */
/* d += a b for one mma m16n8k16, f32 accumulators; BF: bf16 inputs, else f16. a: the 4 A
 * registers, b0/b1: the 2 B registers, in the PTX fragment layout. */
template <bool BF>
static __device__ __forceinline__ void kiln_mma16816(float *d, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                                     uint32_t b0, uint32_t b1) {
    if (BF)
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%0,%1,%2,%3};\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    else
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%0,%1,%2,%3};\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
/* the same with the A registers in an array */
template <bool BF>
static __device__ __forceinline__ void kiln_mma16816(float *d, const uint32_t *a, uint32_t b0, uint32_t b1) {
    kiln_mma16816<BF>(d, a[0], a[1], a[2], a[3], b0, b1);
}
static __device__ __forceinline__ void kiln_ldsm_x4(uint32_t *r, uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
static __device__ __forceinline__ void kiln_ldsm_x4_t(uint32_t *r, uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
static __device__ __forceinline__ void kiln_ldsm_x2(uint32_t *r, uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(addr));
}
static __device__ __forceinline__ void kiln_cp_commit(void) { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
static __device__ __forceinline__ void kiln_cp_wait(void) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

/* Split attention: the window width of a row with n = pos + 1 context positions cut into at
 * most max_splits windows of at least min_w positions, rounded up to a multiple of wr (the
 * split kernel's 16-position tile, the tensor-core kernel's 64-position key tile); window z
 * covers [z w, min((z + 1) w, n)). Pass 1 and the merge must agree on it. */
static __device__ __forceinline__ int kiln_att_window(int n, int min_w, int max_splits, int wr) {
    int ns = (n + min_w - 1) / min_w;
    if (ns > max_splits) ns = max_splits;
    int w = (n + ns - 1) / ns;
    return (w + wr - 1) / wr * wr;
}

/* SwiGLU's product silu(g) u = g / (1 + e^-g) u, as the CPU (expf, IEEE division): swiglu.cu and
 * the fused gate|up epilogue of skinny_wide.cu share it, so the two paths give the same bits. */
static __device__ __forceinline__ float kiln_silu_mul(float g, float u) { return g / (1.0f + expf(-g)) * u; }

/* two e4m3 codes (bits 0-7 and 8-15 of v) as a bf16x2 (code 0 in the low half), exactly: the
 * code's bits placed in an f16 (sign to bit 15, exponent and mantissa to bits 7-13) are its value
 * times 2^-8 for every code, subnormals included (both formats' subnormals line up), so one
 * f16x2 multiply by 256 gives the value; f16 -> f32 is exact, and the f32 value has at most 4
 * significant bits, so its upper half is the bf16. */
static __device__ __forceinline__ uint32_t kiln_f8x2_to_bf16x2(uint32_t v) {
    uint32_t u = __byte_perm(v, 0, 0x4140); /* code 0 in bits 0-7, code 1 in bits 16-23 */
    uint32_t h = ((u & 0x00800080u) << 8) | ((u & 0x007f007fu) << 7);
    __half2 hv = __hmul2(*reinterpret_cast<__half2 *>(&h), __floats2half2_rn(256.0f, 256.0f));
    float2 f = __half22float2(hv);
    return __byte_perm(__float_as_uint(f.x), __float_as_uint(f.y), 0x7632);
}

/* The e4m3 codes of (a, b), a's in the low byte: kiln_f32_to_e4m3's bytes (util/fp8.h: round to
 * nearest even, +-448 for |x| >= 448, subnormal codes, zero below 2^-10). sm_89+: one
 * cvt.rn.satfinite.e4m3x2.f32 for both (the same bytes for every f32 but NaN, whose code may
 * lose its sign: kiln_cuda_e4m3_check walks all 2^32 in test_cuda_fp8); below, util/fp8.h's
 * bit arithmetic (costly: fp8_quant_pmax with three of them a value and no division took 62 us
 * against 35 with one and the division, 512 x 32768, H100, eighteenth session's perf notes). */
static __device__ __forceinline__ uint32_t kiln_e4m3x2(float a, float b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
    uint16_t r;
    asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(r) : "f"(b), "f"(a));
    return r;
#else
    return (uint32_t)kiln_f32_to_e4m3(a) | (uint32_t)kiln_f32_to_e4m3(b) << 8;
#endif
}

#define KILN_CUDA_CHECK_LAUNCH() return cudaGetLastError()
#endif
