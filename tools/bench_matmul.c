/* bench_matmul.c: weight-streaming bandwidth of kiln_cpu_matmul (not a test).
 *
 *   bench_matmul [n_out n_in dtype nr threads isa iters]
 *   defaults:     2048  2048 bf16  1  0(all) best  200
 *
 * Prints GB/s of weight bytes per matmul (the decode roofline: weights stream once per
 * step) and the round-trip latency of an empty kiln_pool_run job. Several weight copies are
 * cycled so that small matrices are not served from the last-level cache only when asked
 * (KILN_BENCH_COPIES, default 1). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "backend/cpu/kernels.h"
#include "util/alloc.h"
#include "util/fp16.h"
#include "util/timeutil.h"

static void nop(void *ctx, int ith, int nth) { (void)ctx; (void)ith; (void)nth; }


int main(int argc, char **argv) {
    int n_out = argc > 1 ? atoi(argv[1]) : 2048, n_in = argc > 2 ? atoi(argv[2]) : 2048;
    const char *dts = argc > 3 ? argv[3] : "bf16";
    int nr = argc > 4 ? atoi(argv[4]) : 1, threads = argc > 5 ? atoi(argv[5]) : 0;
    const char *isas = argc > 6 ? argv[6] : NULL;
    int iters = argc > 7 ? atoi(argv[7]) : 200;
    int copies = getenv("KILN_BENCH_COPIES") ? atoi(getenv("KILN_BENCH_COPIES")) : 1;
    if (copies < 1) copies = 1;
    kiln_dtype dt = !strcmp(dts, "f32") ? KILN_DT_F32 : !strcmp(dts, "f16") ? KILN_DT_F16 : KILN_DT_BF16;
    kiln_isa isa = kiln_isa_best();
    for (int i = 0; isas && i < KILN_ISA_COUNT; i++)
        if (!strcmp(isas, kiln_isa_name((kiln_isa)i))) isa = (kiln_isa)i;
    kiln_error err = {0};
    kiln_pool *pool;
    if (kiln_pool_create(&pool, threads, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }

    size_t esz = dt == KILN_DT_F32 ? 4 : 2, bytes = (size_t)n_out * n_in * esz;
    kiln_tensor *w = calloc(copies, sizeof *w);
    for (int c = 0; c < copies; c++) {
        uint8_t *d = kiln_malloc_aligned(bytes);
        for (size_t i = 0; i < (size_t)n_out * n_in; i++) {
            float v = (float)((i * 2654435761u) % 2001) / 1000.0f - 1.0f;
            if (dt == KILN_DT_F32) ((float *)d)[i] = v;
            else ((uint16_t *)d)[i] = dt == KILN_DT_F16 ? kiln_f32_to_f16(v) : kiln_f32_to_bf16(v);
        }
        w[c] = (kiln_tensor){.dtype = dt, .ndim = 2, .shape = {n_out, n_in}, .data = d, .nbytes = bytes};
        snprintf(w[c].name, sizeof w[c].name, "bench");
    }
    float *x = kiln_malloc_aligned(sizeof(float) * nr * n_in), *y = kiln_malloc_aligned(sizeof(float) * nr * n_out);
    for (int i = 0; i < nr * n_in; i++) x[i] = (float)(i % 13) / 13.0f;
    kiln_cpu_ctx ctx = {.isa = isa, .pool = pool};
    for (int k = 0; k < 5; k++)
        if (kiln_cpu_matmul(&ctx, y, x, nr, &w[k % copies], &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    double t0 = kiln_now();
    for (int k = 0; k < iters; k++) kiln_cpu_matmul(&ctx, y, x, nr, &w[k % copies], &err);
    double dt_s = (kiln_now() - t0) / iters;
    printf("matmul [%d][%d] %s nr=%d threads=%d isa=%s copies=%d: %.1f us, %.2f GB/s of weights, %.2f GFLOP/s\n",
           n_out, n_in, kiln_dtype_name(dt), nr, kiln_pool_size(pool), kiln_isa_name(isa), copies, dt_s * 1e6,
           bytes / dt_s * 1e-9, 2.0 * nr * n_out * n_in / dt_s * 1e-9);
    /* pool round trip: best batch mean of 100 x 2000 jobs (other processes on the machine
     * inflate averages; the best batch shows what the pool itself costs) */
    double best = 1e9, sum = 0;
    for (int b = 0; b < 100; b++) {
        t0 = kiln_now();
        for (int k = 0; k < 2000; k++) kiln_pool_run(pool, nop, NULL);
        double m = (kiln_now() - t0) / 2000;
        sum += m;
        best = m < best ? m : best;
    }
    printf("empty kiln_pool_run: best %.0f ns, mean %.0f ns\n", best * 1e9, sum / 100 * 1e9);
    for (int c = 0; c < copies; c++) kiln_free_aligned((void *)w[c].data);
    free(w);
    kiln_free_aligned(x);
    kiln_free_aligned(y);
    kiln_pool_destroy(pool);
    return 0;
}
