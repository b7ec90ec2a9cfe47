/* target.c: the target of target.h, filled from the device and restricted to a forced
 * architecture's limits. The limits are NVIDIA's (CUDA C Programming Guide, "Compute
 * Capabilities", technical specifications per compute capability). */
#include <stdio.h>
#include <string.h>
#include <cuda_runtime_api.h>
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/sync.h"
#include "backend/cuda/target.h"
#include "util/error.h"

#ifndef KILN_CUDA_ARCHS_STR
#define KILN_CUDA_ARCHS_STR "unknown"
#endif

const char *kiln_cuda_build_archs(void) { return KILN_CUDA_ARCHS_STR; }

typedef struct arch_limits {
    int sm;
    size_t smem_per_block, smem_per_sm;
    int pdl, fp8_mma;
} arch_limits;

static const arch_limits k_arch[] = {
    {80, 163 * 1024, 164 * 1024, 0, 0},
    {86, 99 * 1024, 100 * 1024, 0, 0},
    {89, 99 * 1024, 100 * 1024, 0, 1},
    {90, 227 * 1024, 228 * 1024, 1, 1},
};

int kiln_cuda_target_force(kiln_cuda_target *t, int target_sm, kiln_error *err) {
    if (!target_sm) return KILN_OK;
    const arch_limits *a = NULL;
    for (size_t i = 0; i < sizeof k_arch / sizeof k_arch[0]; i++)
        if (k_arch[i].sm == target_sm) a = &k_arch[i];
    if (!a)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG,
                        "cuda backend: target sm_%d unknown (sm_80, sm_86, sm_89 or sm_90; 0 = the card's own)",
                        target_sm);
    int card_sm = t->card_major * 10 + t->card_minor;
    if (target_sm > card_sm)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED,
                        "cuda backend: target sm_%d is above the card: %s is sm_%d%d (a target may only restrict)",
                        target_sm, t->card, t->card_major, t->card_minor);
    t->cc_major = target_sm / 10;
    t->cc_minor = target_sm % 10;
    if (t->smem_per_block > a->smem_per_block) t->smem_per_block = a->smem_per_block;
    if (t->smem_per_sm > a->smem_per_sm) t->smem_per_sm = a->smem_per_sm;
    t->has_pdl = t->has_pdl && a->pdl;
    t->has_fp8_mma = t->has_fp8_mma && a->fp8_mma;
    t->has_wgmma = t->has_wgmma && target_sm == 90;
    t->forced = target_sm;
    return KILN_OK;
}

int kiln_cuda_target_smem_blocks(const kiln_cuda_target *t, size_t smem) {
    if (smem > t->smem_per_block) return 0;
    size_t per = smem + 1024; /* the driver reserves 1 KB of shared memory per block (sm_80+) */
    int n = (int)(t->smem_per_sm / per);
    return n > 0 ? n : 1;
}

int kiln_cuda_target_init(kiln_cuda_target *t, int dev, int target_sm, kiln_error *err) {
    memset(t, 0, sizeof *t);
    struct cudaDeviceProp p;
    cudaError_t e = cudaGetDeviceProperties(&p, dev);
    if (e != cudaSuccess) return kiln_cuda_error(err, e, "cudaGetDeviceProperties", __FILE__, __LINE__);
    snprintf(t->card, sizeof t->card, "%.127s", p.name);
    t->device = dev;
    t->card_major = t->cc_major = p.major;
    t->card_minor = t->cc_minor = p.minor;
    t->card_mem = p.totalGlobalMem;
    t->n_sm = p.multiProcessorCount;
    t->smem_per_block = p.sharedMemPerBlockOptin ? p.sharedMemPerBlockOptin : p.sharedMemPerBlock;
    t->smem_per_sm = p.sharedMemPerMultiprocessor;
    t->regs_per_sm = p.regsPerMultiprocessor;
    int cc = p.major * 10 + p.minor;
    t->has_pdl = cc >= 90;
    t->has_fp8_mma = cc >= 89;
    t->has_wgmma = cc == 90;
    if (cc < 80)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED,
                        "cuda backend: %s is sm_%d%d (compute capability %d.%d); kiln needs sm_80 (Ampere) or newer",
                        t->card, p.major, p.minor, p.major, p.minor);
    /* a kernel of this build on this card: no SASS for it and no PTX it can JIT -> refused */
    if ((e = cudaSetDevice(dev)) != cudaSuccess) return kiln_cuda_error(err, e, "cudaSetDevice", __FILE__, __LINE__);
    e = kiln_cuda_image_check(&t->code_ptx, &t->code_sass);
    if (e == cudaErrorNoKernelImageForDevice || e == cudaErrorUnsupportedPtxVersion ||
        e == cudaErrorInvalidKernelImage) {
        cudaGetLastError();
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED,
                        "cuda backend: %s (sm_%d%d, compute capability %d.%d) has no code in this build (%s): "
                        "its architectures are %s; rebuild with -DKILN_CUDA_ARCHS=release (README, Build)",
                        t->card, p.major, p.minor, p.major, p.minor, cudaGetErrorString(e), kiln_cuda_build_archs());
    }
    if (e != cudaSuccess) return kiln_cuda_error(err, e, "cudaFuncGetAttributes (kernel image check)", __FILE__, __LINE__);
    /* what the code the card runs was compiled for: griddepcontrol is compiled in from compute_90
     * only (cuda_dev.cuh), so a compute_80 PTX build on an H100 must not launch with PDL */
    if (t->code_ptx < 90) t->has_pdl = t->has_wgmma = 0;
    if (t->code_ptx < 89) t->has_fp8_mma = 0;
    return kiln_cuda_target_force(t, target_sm, err);
}
