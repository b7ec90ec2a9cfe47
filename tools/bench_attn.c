/* bench_attn.c: single-thread cost of the CPU attention kernels of one (row, KV head) pair
 * (not a test).
 *
 *   bench_attn [ctx G hd iters]
 *   defaults:   576 3 64 20000
 *
 * Per ISA: ns per call of qk (ctx keys in 16-key runs, as the KV blocks come), softmax (G
 * heads) and pvg / pv (ctx values), with K and V hot in cache (the compute side only: decode
 * also waits on memory). */
#include <stdio.h>
#include <stdlib.h>
#include "backend/cpu/kernels.h"
#include "util/alloc.h"
#include "util/timeutil.h"

int main(int argc, char **argv) {
    int ctx = argc > 1 ? atoi(argv[1]) : 576, G = argc > 2 ? atoi(argv[2]) : 3;
    int hd = argc > 3 ? atoi(argv[3]) : 64, iters = argc > 4 ? atoi(argv[4]) : 20000;
    if (ctx < 1 || G < 1 || G > 4 || hd < 1 || iters < 1) return 2;
    float *k = kiln_malloc_aligned(sizeof(float) * ctx * hd), *v = kiln_malloc_aligned(sizeof(float) * ctx * hd);
    float *q = kiln_malloc_aligned(sizeof(float) * G * hd), *o = kiln_malloc_aligned(sizeof(float) * G * hd);
    float *s = kiln_malloc_aligned(sizeof(float) * G * ctx);
    unsigned x = 1;
    for (int i = 0; i < ctx * hd; i++) {
        x = x * 1664525u + 1013904223u;
        k[i] = (float)(x >> 8) / 16777216.0f - 0.5f;
        v[i] = -k[i];
    }
    for (int i = 0; i < G * hd; i++) q[i] = 0.01f * (float)(i % 17);
    for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
        kiln_attn_kernels ak;
        if (!kiln_isa_supported((kiln_isa)isa) || kiln_cpu_attn_lookup((kiln_isa)isa, &ak)) continue;
        double t[3] = {0, 0, 0};
        float sink = 0;
        for (int it = 0; it < iters; it++) {
            double t0 = kiln_now();
            for (int j0 = 0; j0 < ctx; j0 += 16)
                ak.qk(k + (size_t)j0 * hd, ctx - j0 < 16 ? ctx - j0 : 16, q, G, hd, s + j0, (size_t)ctx);
            double t1 = kiln_now();
            for (int i = 0; i < G; i++) ak.softmax(s + (size_t)i * ctx, ctx, 0.125f);
            double t2 = kiln_now();
            for (int i = 0; i < G * hd; i++) o[i] = 0.0f;
            for (int j0 = 0; j0 < ctx; j0 += 16) {
                int run = ctx - j0 < 16 ? ctx - j0 : 16;
                if (ak.pvg) ak.pvg(o, (size_t)hd, s + j0, (size_t)ctx, G, v + (size_t)j0 * hd, run, hd);
                else
                    for (int i = 0; i < G; i++) ak.pv(o + (size_t)i * hd, s + (size_t)i * ctx + j0, v + (size_t)j0 * hd, run, hd);
            }
            double t3 = kiln_now();
            t[0] += t1 - t0;
            t[1] += t2 - t1;
            t[2] += t3 - t2;
            sink += o[0];
        }
        printf("%-6s ctx %d G %d hd %d: qk %.0f ns (%.2f ns/score), softmax %.0f ns, pv %.0f ns (%.2f ns/value/head)%s\n",
               kiln_isa_name((kiln_isa)isa), ctx, G, hd, 1e9 * t[0] / iters, 1e9 * t[0] / iters / (G * ctx),
               1e9 * t[1] / iters, 1e9 * t[2] / iters, 1e9 * t[2] / iters / (G * ctx), sink == 12345.f ? "!" : "");
    }
    kiln_free_aligned(k);
    kiln_free_aligned(v);
    kiln_free_aligned(q);
    kiln_free_aligned(o);
    kiln_free_aligned(s);
    return 0;
}
