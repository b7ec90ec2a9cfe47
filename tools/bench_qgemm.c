/* bench_qgemm.c: kiln_cpu_matmul on quantized weights, f32 activations (cpu.act f32) against
 * W x A8 (cpu.act q8, qgemm.h; on AMX tiles where the CPU has them; on the weights packed once,
 * qpack.h, where the ISA has that kernel), per row count (not a test).
 *
 *   bench_qgemm [n_out n_in dtype threads isa]
 *   defaults:    1536  576  q4_1 1          best
 *
 * Each figure is the best of 7 timings of a loop of matmuls (other processes on a shared
 * machine inflate means; the best shows the kernel), in GMAC/s (rows x n_out x n_in per s). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "backend/cpu/kernels.h"
#include "backend/cpu/qgemm.h"
#include "backend/cpu/qpack.h"
#include "util/alloc.h"
#include "util/fp16.h"
#include "util/timeutil.h"

int main(int argc, char **argv) {
    int n_out = argc > 1 ? atoi(argv[1]) : 1536, n_in = argc > 2 ? atoi(argv[2]) : 576;
    const char *dts = argc > 3 ? argv[3] : "q4_1";
    int threads = argc > 4 ? atoi(argv[4]) : 1;
    const char *isas = argc > 5 ? argv[5] : NULL;
    kiln_dtype dt = KILN_DT_Q4_1;
    for (int i = 0; i < KILN_DT_COUNT; i++)
        if (!strcasecmp(dts, kiln_dtype_name((kiln_dtype)i))) dt = (kiln_dtype)i;
    kiln_isa isa = kiln_isa_best();
    for (int i = 0; isas && i < KILN_ISA_COUNT; i++)
        if (!strcmp(isas, kiln_isa_name((kiln_isa)i))) isa = (kiln_isa)i;
    kiln_error err = {0};
    kiln_pool *pool;
    if (kiln_pool_create(&pool, threads, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    size_t rb = kiln_dtype_row_bytes(dt, n_in), bytes = rb * n_out;
    uint8_t *d = kiln_malloc_aligned(bytes);
    unsigned s = 1;
    for (size_t i = 0; i < bytes; i++) d[i] = (uint8_t)((s = s * 1103515245u + 12345u) >> 16);
    const int kq = dt == KILN_DT_Q4_K || dt == KILN_DT_Q5_K || dt == KILN_DT_Q6_K;
    size_t bb = rb / (n_in / (kq ? 256 : 32)); /* sane f16 scales in every block */
    for (size_t i = 0; i + 4 <= bytes; i += bb) {
        uint16_t h = kiln_f32_to_f16(kq ? 0.0005f : 0.01f);
        memcpy(d + i + (dt == KILN_DT_Q6_K ? 208 : 0), &h, 2);
        if (dt == KILN_DT_Q4_1 || dt == KILN_DT_Q5_1 || dt == KILN_DT_Q4_K || dt == KILN_DT_Q5_K) memcpy(d + i + 2, &h, 2);
    }
    kiln_tensor w = {.dtype = dt, .ndim = 2, .shape = {n_out, n_in}, .data = d, .nbytes = bytes};
    snprintf(w.name, sizeof w.name, "bench");
    const int rows[] = {1, 2, 4, 8, 16, 32, 64, 512};
    int maxr = 512;
    float *x = kiln_malloc_aligned(sizeof(float) * maxr * n_in), *y = kiln_malloc_aligned(sizeof(float) * maxr * n_out);
    for (int i = 0; i < maxr * n_in; i++) x[i] = (float)(i % 13) / 13.0f - 0.4f;
    int nth = kiln_pool_size(pool);
    kiln_cpu_ctx ctx = {.isa = isa, .pool = pool, .panel_floats = 128u * 1024u, .xperm_floats = (size_t)maxr * n_in};
    ctx.panel = kiln_malloc_aligned(sizeof(float) * ctx.panel_floats * nth);
    ctx.xperm = kiln_malloc_aligned(sizeof(float) * ctx.xperm_floats);
    printf("matmul [%d][%d] %s threads=%d isa=%s: GMAC/s (best of 7)\n", n_out, n_in, kiln_dtype_name(dt), nth,
           kiln_isa_name(isa));
    const int amx = isa == KILN_ISA_AVX512 && kiln_cpu_has_amx(); /* the q8 product on AMX tiles too */
    kiln_cpu_packs *packs = NULL; /* and on the weights packed once (qpack.h), where the ISA has that kernel */
    int packed = 0;
    if (kiln_cpu_packs_create(&packs, isa, &err) || kiln_cpu_packs_add(packs, &w, pool, &packed, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    printf("%6s %10s %10s %8s %10s %10s\n", "rows", "f32", "q8", "q8/f32", amx ? "q8 amx" : "(no amx)",
           packed ? "q8 packed" : "(no pack)");
    for (size_t ri = 0; ri < sizeof rows / sizeof rows[0]; ri++) {
        int nr = rows[ri];
        double g[4] = {0, 0, 0, 0};
        for (int m = 0; m < 4; m++) {
            if ((m == 2 && !amx) || (m == 3 && !packed)) continue;
            ctx.act_q8 = m > 0;
            ctx.amx = m == 2;
            ctx.packs = m == 3 ? packs : NULL;
            double macs = (double)nr * n_out * n_in;
            int iters = (int)(2e8 / macs) + 1;
            double best = 1e30;
            for (int rep = 0; rep < 7; rep++) {
                double t0 = kiln_now();
                for (int k = 0; k < iters; k++)
                    if (kiln_cpu_matmul(&ctx, y, x, nr, &w, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
                double t = (kiln_now() - t0) / iters;
                best = t < best ? t : best;
            }
            g[m] = macs / best * 1e-9;
        }
        printf("%6d %10.2f %10.2f %8.2f %10.2f %10.2f\n", nr, g[0], g[1], g[1] / g[0], g[2], g[3]);
    }
    kiln_free_aligned(d);
    kiln_free_aligned(x);
    kiln_free_aligned(y);
    kiln_free_aligned(ctx.panel);
    kiln_free_aligned(ctx.xperm);
    kiln_cpu_packs_destroy(packs);
    kiln_pool_destroy(pool);
    return 0;
}
