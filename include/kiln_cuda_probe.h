/* kiln_cuda_probe.h: the GPU's measured ceilings for benchmark floors (built with the CUDA
 * backend only, KILN_HAVE_CUDA). copy_gbs: device-to-device copy, bytes read + written per
 * second / 1e9; gemm_tflops: 8192^3 bf16 cuBLASLt GEMM rate. */
#ifndef KILN_CUDA_PROBE_H
#define KILN_CUDA_PROBE_H
#include "kiln.h"
int kiln_cuda_probe_floors(double *copy_gbs, double *gemm_tflops, kiln_error *err);
#endif
