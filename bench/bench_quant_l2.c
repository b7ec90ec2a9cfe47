/* bench_quant_l2.c: compute throughput of the quantized dot kernels on one thread with an
 * L2-resident weight matrix (~0.5 MB), per type, ISA and nr: GB/s of weights consumed. If this
 * is well above the per-core DRAM bandwidth, decode is memory-bound.
 *   cc -O2 -std=c11 -D_GNU_SOURCE -Iinclude -Isrc bench/bench_quant_l2.c build/libkiln.a -lm \
 *      -o build/bench_quant_l2 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "backend/cpu/kernels.h"
#include "util/fp16.h"
#include "util/timeutil.h"

int main(void) {
    const kiln_dtype types[] = {KILN_DT_Q8_0, KILN_DT_Q4_0, KILN_DT_Q4_1, KILN_DT_Q4_K, KILN_DT_Q5_K, KILN_DT_Q6_K};
    const int n = 1536;
    float *x = malloc(sizeof(float) * n * 4), y[4];
    for (int i = 0; i < n * 4; i++) x[i] = (float)(i % 97) / 97.0f;
    for (size_t t = 0; t < 6; t++) {
        size_t rb = kiln_dtype_row_bytes(types[t], n);
        int rows = (int)(512 * 1024 / rb);
        unsigned char *w = malloc(rb * rows);
        for (size_t i = 0; i < rb * rows; i++) w[i] = (unsigned char)(i * 131 + 7);
        for (int isa = 1; isa < 3; isa++) {
            kiln_dot_fn f = kiln_cpu_dot_lookup_quant(types[t], (kiln_isa)isa);
            printf("%-5s %-6s", kiln_dtype_name(types[t]), isa == 1 ? "avx2" : "avx512");
            for (int nr = 1; nr <= 4; nr++) {
                double best = 1e9;
                for (int rep = 0; rep < 30; rep++) {
                    double t0 = kiln_now();
                    for (int r = 0; r < rows; r++) f(w + (size_t)r * rb, x, n, nr, n, y, 1);
                    double dt = kiln_now() - t0;
                    if (dt < best) best = dt;
                }
                printf("  nr%d %6.1f GB/s", nr, rb * rows / best / 1e9);
            }
            printf("\n");
        }
        free(w);
    }
    free(x);
    return 0;
}
