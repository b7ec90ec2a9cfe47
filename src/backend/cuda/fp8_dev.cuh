/* fp8_dev.cuh: the activation codes of the FP8 W8A8 path as the kernels write them: e4m3 of
 * x / s (IEEE division, round to nearest even, saturating: util/fp8.h), four or eight values a
 * call, byte i of the result holding value i (fp8.cu's quantization passes, rmsnorm.cu's fused
 * codes). */
#ifndef KILN_CUDA_FP8_DEV_CUH
#define KILN_CUDA_FP8_DEV_CUH
#include <stdint.h>
#include "util/fp8.h"

static __device__ __forceinline__ uint32_t kiln_e4m3_div4(float a, float b, float c, float d, float s) {
    return (uint32_t)kiln_f32_to_e4m3(__fdiv_rn(a, s)) | (uint32_t)kiln_f32_to_e4m3(__fdiv_rn(b, s)) << 8 |
           (uint32_t)kiln_f32_to_e4m3(__fdiv_rn(c, s)) << 16 | (uint32_t)kiln_f32_to_e4m3(__fdiv_rn(d, s)) << 24;
}

/* eight bf16 values (16 bytes, value i in bits 16 (i % 2) of word i / 2) */
static __device__ __forceinline__ uint2 kiln_e4m3_div8_bf16(uint4 v, float s) {
#define KILN_BF_LO(u) __uint_as_float((u) << 16)
#define KILN_BF_HI(u) __uint_as_float((u) & 0xffff0000u)
    uint2 r = make_uint2(kiln_e4m3_div4(KILN_BF_LO(v.x), KILN_BF_HI(v.x), KILN_BF_LO(v.y), KILN_BF_HI(v.y), s),
                         kiln_e4m3_div4(KILN_BF_LO(v.z), KILN_BF_HI(v.z), KILN_BF_LO(v.w), KILN_BF_HI(v.w), s));
#undef KILN_BF_LO
#undef KILN_BF_HI
    return r;
}
#endif
