/* quant_dot.c: GGUF quantized types on the CPU (placeholder until the GGUF work lands). */
#include "backend/cpu/kernels.h"
kiln_dot_fn kiln_cpu_dot_lookup_quant(kiln_dtype dt, kiln_isa isa) { (void)dt; (void)isa; return NULL; }
int kiln_cpu_dequant_row(kiln_dtype dt, const void *row, int64_t n, float *out) {
    (void)dt; (void)row; (void)n; (void)out;
    return -1;
}
