/* moe.h: the CPU mixture-of-experts FFN (moe.c has the formulas); the reference a GPU grouped
 * expert GEMM is tested against. */
#ifndef KILN_CPU_MOE_H
#define KILN_CPU_MOE_H
#include "backend/cpu/kernels.h"
#include "model/model.h"

/* floats of scratch kiln_cpu_moe_ffn needs for max_rows rows */
size_t kiln_cpu_moe_scratch_floats(int max_rows, int dim, int n_experts, int n_used);
/* out [T][D] = the MoE FFN of xn [T][D] for layer weights w (w->router, w->experts);
 * gate, up: [T][hidden] scratch (the dense FFN's), scratch: kiln_cpu_moe_scratch_floats(T, ...). */
int kiln_cpu_moe_ffn(kiln_cpu_ctx *c, const kiln_layer_weights *w, const kiln_config *mc, int T, const float *xn,
                     float *out, float *gate, float *up, float *scratch, kiln_error *err);

#endif
