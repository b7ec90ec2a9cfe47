/* target.h: the GPU architecture the CUDA backend sizes its launches for and chooses its
 * kernels by (issue 16: one build for every NVIDIA GPU since Ampere).
 *
 * A target is filled from the device (cudaGetDeviceProperties), then, when forced
 * (kiln_cuda_options.target_sm, KILN_CUDA_TARGET=sm_86 through the kiln command), restricted to
 * that architecture's limits, so an H200 runs the choices an A100 / RTX 30xx / L4 would get:
 *
 *   sm   smem per block (opt-in)  smem per SM  PDL  FP8 MMA
 *   80   163 KB                   164 KB       no   no
 *   86    99 KB                   100 KB       no   no
 *   89    99 KB                   100 KB       no   yes
 *   90   227 KB                   228 KB       yes  yes      (wgmma: the card is sm_90 itself)
 *
 * The SM count and the registers stay the card's. A target above the card is refused. The
 * features also need the code the card runs to have them: a compute_80 PTX build JIT-compiled
 * on an H100 has no griddepcontrol, so no PDL there. The
 * backend keeps one (cuda_backend.target); every launch-sizing or kernel-choice decision reads
 * it, never the device or a constant. Plain C: included by the .c files and cuda_ops.h. */
#ifndef KILN_CUDA_TARGET_H
#define KILN_CUDA_TARGET_H
#include <stddef.h>
#include "kiln.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kiln_cuda_target {
    int cc_major, cc_minor;   /* the architecture sized for: the card's, or the forced one's */
    int n_sm;                 /* streaming multiprocessors (always the card's) */
    size_t smem_per_block;    /* shared memory a block may use (static + dynamic), the opt-in max */
    size_t smem_per_sm;       /* shared memory per SM (resident blocks: 1 KB reserved per block) */
    int regs_per_sm;          /* 32-bit registers per SM */
    int has_pdl;              /* programmatic dependent launch (griddepcontrol): sm_90+ */
    int has_fp8_mma;          /* FP8 (e4m3 / e5m2) tensor-core MMA: sm_89+ */
    int has_wgmma;            /* wgmma (sm_90a code): the card is sm_90 and sized as such */
    char card[128];           /* the device's name */
    int forced;               /* 0: the card's own limits; else the forced sm (80, 86, 89, 90) */
    int card_major, card_minor; /* the card's compute capability */
    size_t card_mem;          /* the card's global memory, bytes */
    int device;               /* the CUDA device ordinal */
    int code_ptx, code_sass;  /* this build's code for the card: the PTX architecture it was compiled
                               * from (80 for a compute_80 PTX build, 90 for sm_90a SASS) and the
                               * SASS it runs as (cudaFuncGetAttributes ptxVersion / binaryVersion);
                               * has_pdl / has_fp8_mma / has_wgmma need the code to have them too */
} kiln_cuda_target;

/* Fill t from device dev, then restrict it to target_sm (0: the card's own; 80, 86, 89 or 90).
 * Refuses (KILN_ERR_UNSUPPORTED, message naming the card and its compute capability): a card
 * older than sm_80; a card for which this build has no code (cudaErrorNoKernelImageForDevice /
 * cudaErrorUnsupportedPtxVersion on a kernel: the message names the build's architectures);
 * a target_sm that is unknown (KILN_ERR_INVALID_ARG) or above the card. */
int kiln_cuda_target_init(kiln_cuda_target *t, int dev, int target_sm, kiln_error *err);
/* Restrict a filled target to target_sm (the second half of kiln_cuda_target_init; no CUDA
 * call, so host tests can run it on a made-up card). 0 leaves t as it is. */
int kiln_cuda_target_force(kiln_cuda_target *t, int target_sm, kiln_error *err);
/* Resident blocks per SM that the target's shared memory allows for blocks of smem bytes
 * (static + dynamic); 0 when one block does not fit (smem > smem_per_block). */
int kiln_cuda_target_smem_blocks(const kiln_cuda_target *t, size_t smem);
/* The architectures this build carries, CMake's list space-separated ("80-real 86-real 89-real 90a-real 90-virtual") */
const char *kiln_cuda_build_archs(void);

#ifdef __cplusplus
}
#endif
#endif
