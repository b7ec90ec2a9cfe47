/* dummy_fill.cu: --load-format dummy on the device, and buffer poisoning.
 *
 * kiln_dummy_value (src/model/dummy.c, formula in model.h) for every element, bit-identical to
 * the host: integer hashing is exact; u = (x >> 40) * 2^-23 - 1 is exact in double (so an FMA
 * contraction changes nothing); sqrtf and the division are IEEE-rounded (nvcc's default
 * -prec-sqrt / -prec-div); the dtype rounding is round-to-nearest-even like util/fp16.h. */
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/cuda_dev.cuh"
#include "backend/cuda/qdecode.cuh"
#include "model/dummy_quant.h"
#include "util/dummy_hash.h"
#include "util/fp8.h"

static __global__ void dummy_kernel(void *dst, kiln_dtype dt, int64_t n, uint64_t key, int64_t cols) {
    float sc = cols > 0 ? __fsqrt_rn((float)cols) : 1.0f;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float u = kiln_dummy_u(key, i);
        float v = cols > 0 ? __fdiv_rn(u, sc) : 1.0f + u / 16.0f;
        kiln_st(dt, dst, i, v);
    }
}

extern "C" cudaError_t kiln_cuda_dummy_fill(void *dst, kiln_dtype dt, int64_t n, uint64_t seed, int tensor_index,
                                            int64_t cols, cudaStream_t st) {
    if (n <= 0) return cudaSuccess;
    if (dt != KILN_DT_F32 && dt != KILN_DT_F16 && dt != KILN_DT_BF16) return cudaErrorInvalidValue;
    uint64_t k = kiln_dummy_key(seed, tensor_index); /* per tensor, on the host */
    int64_t blocks = (n + 255) / 256;
    if (blocks > 65536) blocks = 65536;
    dummy_kernel<<<(unsigned)blocks, 256, 0, st>>>(dst, dt, n, k, cols);
    KILN_CUDA_CHECK_LAUNCH();
}

/* --dummy-quant: a GGUF-quantized tensor's bytes, kiln_dummy_qbyte (model/dummy_quant.h) each,
 * the same bits as the host's; 4 bytes per thread */
static __global__ void dummy_q_kernel(uint8_t *dst, kiln_dtype dt, int64_t nbytes, uint64_t key, int64_t cols) {
    for (int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * 4; i < nbytes;
         i += (int64_t)gridDim.x * blockDim.x * 4)
        for (int j = 0; j < 4 && i + j < nbytes; j++) dst[i + j] = kiln_dummy_qbyte(key, dt, i + j, cols);
}

extern "C" cudaError_t kiln_cuda_dummy_fill_q(void *dst, kiln_dtype dt, int64_t nbytes, uint64_t seed, int tensor_index,
                                              int64_t cols, cudaStream_t st) {
    if (nbytes <= 0) return cudaSuccess;
    if (!kiln_q_supported(dt)) return cudaErrorInvalidValue;
    uint64_t k = kiln_dummy_key(seed, tensor_index);
    int64_t blocks = (nbytes / 4 + 255) / 256;
    if (blocks > 65536) blocks = 65536;
    dummy_q_kernel<<<(unsigned)blocks, 256, 0, st>>>((uint8_t *)dst, dt, nbytes, k, cols);
    KILN_CUDA_CHECK_LAUNCH();
}

static __global__ void dummy_fp8_kernel(uint8_t *dst, int64_t n, uint64_t key, int64_t cols, float scale) {
    float sc = __fsqrt_rn((float)cols);
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = kiln_f32_to_e4m3(__fdiv_rn(__fdiv_rn(kiln_dummy_u(key, i), sc), scale));
}

extern "C" cudaError_t kiln_cuda_dummy_fill_fp8(uint8_t *dst, int64_t n, uint64_t seed, int tensor_index, int64_t cols,
                                                float scale, cudaStream_t st) {
    if (n <= 0) return cudaSuccess;
    if (cols <= 0 || !(scale > 0.0f)) return cudaErrorInvalidValue;
    uint64_t k = kiln_dummy_key(seed, tensor_index);
    int64_t blocks = (n + 255) / 256;
    if (blocks > 65536) blocks = 65536;
    dummy_fp8_kernel<<<(unsigned)blocks, 256, 0, st>>>(dst, n, k, cols, scale);
    KILN_CUDA_CHECK_LAUNCH();
}

static __global__ void fill_u32_kernel(uint32_t *dst, uint32_t bits, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = bits;
}

extern "C" cudaError_t kiln_cuda_fill_u32(uint32_t *dst, uint32_t bits, int64_t n, cudaStream_t st) {
    if (n <= 0) return cudaSuccess;
    int64_t blocks = (n + 255) / 256;
    if (blocks > 65536) blocks = 65536;
    fill_u32_kernel<<<(unsigned)blocks, 256, 0, st>>>(dst, bits, n);
    KILN_CUDA_CHECK_LAUNCH();
}
