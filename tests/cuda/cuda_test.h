/* cuda_test.h: helpers for the GPU tests (tests/cuda, built with -DKILN_CUDA_TESTS=ON).
 * Tests call the CUDA runtime directly (only src/backend/cuda must use the sync wrappers);
 * any CUDA error fails the test at once with the statement and line. A machine without a GPU
 * skips (exit 77). Device buffers are poisoned with 0xFF bytes (NaN in f32, f16 and bf16)
 * before every run, so an element a kernel fails to write shows up as NaN. */
#ifndef KILN_CUDA_TEST_H
#define KILN_CUDA_TEST_H
#include <cuda_runtime_api.h>
#include <stdint.h>
#include <time.h>
#include "format/dtype.h"
#include "kiln.h"
#include "test.h"
#include "util/fp16.h"

#define CU(call)                                                                                    \
    do {                                                                                            \
        cudaError_t e_ = (call);                                                                    \
        if (e_ != cudaSuccess) {                                                                    \
            fprintf(stderr, "FAIL %s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            exit(1);                                                                                \
        }                                                                                           \
    } while (0)

static inline void kc_require_gpu(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n <= 0) KT_SKIP("no CUDA device");
    struct cudaDeviceProp p;
    CU(cudaGetDeviceProperties(&p, 0));
    fprintf(stderr, "device: %s (sm_%d%d)\n", p.name, p.major, p.minor);
}
/* KILN_CUDA_TARGET=sm_86 (or 86; "card" / unset: the card's own) -> kiln_cuda_options.target_sm,
 * as the kiln command maps it (src/cli/env.c): every GPU test that creates the backend or an
 * engine runs with the forced target's kernel choices (scripts/cuda_check.sh --target sm_86). */
static inline void kc_target_from_env(kiln_cuda_options *o) {
    const char *v = getenv("KILN_CUDA_TARGET");
    if (!v || !*v || !strcmp(v, "card")) return;
    const char *d = !strncmp(v, "sm_", 3) ? v + 3 : !strncmp(v, "sm", 2) ? v + 2 : v;
    o->target_sm = atoi(d);
    fprintf(stderr, "target: sm_%d (KILN_CUDA_TARGET)\n", o->target_sm);
}
static inline void *kc_dev(size_t n) {
    void *p = NULL;
    CU(cudaMalloc(&p, n ? n : 16));
    return p;
}
static inline void kc_put(void *d, const void *h, size_t n) { CU(cudaMemcpy(d, h, n, cudaMemcpyHostToDevice)); }
static inline void kc_get(void *h, const void *d, size_t n) {
    CU(cudaDeviceSynchronize());
    CU(cudaMemcpy(h, d, n, cudaMemcpyDeviceToHost));
}
static inline void kc_poison(void *d, size_t n) { CU(cudaMemset(d, 0xff, n)); }
static inline size_t kc_dtsize(kiln_dtype dt) { return dt == KILN_DT_F32 ? 4 : 2; }
static inline const char *kc_dtname(kiln_dtype dt) {
    return dt == KILN_DT_F32 ? "f32" : dt == KILN_DT_F16 ? "f16" : "bf16";
}
/* f32 -> dtype (host), and back */
static inline void kc_to_dt(kiln_dtype dt, const float *src, void *dst, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (dt == KILN_DT_F32) ((float *)dst)[i] = src[i];
        else if (dt == KILN_DT_F16) ((uint16_t *)dst)[i] = kiln_f32_to_f16(src[i]);
        else ((uint16_t *)dst)[i] = kiln_f32_to_bf16(src[i]);
    }
}
static inline void kc_from_dt(kiln_dtype dt, const void *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (dt == KILN_DT_F32) dst[i] = ((const float *)src)[i];
        else if (dt == KILN_DT_F16) dst[i] = kiln_f16_to_f32(((const uint16_t *)src)[i]);
        else dst[i] = kiln_bf16_to_f32(((const uint16_t *)src)[i]);
    }
}
/* round through dtype in place (what the GPU sees as input) */
static inline void kc_round_dt(kiln_dtype dt, float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (dt == KILN_DT_F16) x[i] = kiln_f16_to_f32(kiln_f32_to_f16(x[i]));
        else if (dt == KILN_DT_BF16) x[i] = kiln_bf16_to_f32(kiln_f32_to_bf16(x[i]));
    }
}
/* the tolerance of the brief: 1e-5 relative L2 for f32 outputs, 1e-2 for 16-bit ones */
static inline double kc_tol(kiln_dtype dt) { return dt == KILN_DT_F32 ? 1e-5 : 1e-2; }
static inline void kc_rand(float *x, size_t n, float scale, unsigned long long *s) {
    for (size_t i = 0; i < n; i++) x[i] = kt_randf(s) * scale;
}
static inline unsigned long long kc_seed(void) {
    /* fresh inputs on every run; the seed is printed so a failure can be replayed */
    const char *e = getenv("KILN_TEST_SEED");
    unsigned long long s = e ? strtoull(e, NULL, 10) : (unsigned long long)time(NULL) * 2654435761ULL + 1;
    if (!s) s = 1;
    fprintf(stderr, "seed %llu (KILN_TEST_SEED replays)\n", s);
    return s;
}
#endif
