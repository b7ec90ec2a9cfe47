/* bench_cpu_attention.c: the CPU backend's attention (backend/cpu/attention.c) on a long
 * context, one query row at a time (q_block 1) against query blocks (q_block 2..32), same bits
 * (checked here too), best of N.
 *
 * Shape: the default model's (SmolLM2-135M: 9 heads, 3 KV heads, head_dim 64), one layer, a
 * paged f32 pool of 16-slot blocks; one sequence of CTX positions whose last T rows are the
 * step's queries (a prefill chunk at the end of a long prompt). GFLOP/s counts q.k and p.v
 * (4 flops per key, head and dimension).
 *
 *   bench_cpu_attention [CTX 4000] [T 256] [THREADS 2] [REPEAT 5] [ISA scalar|avx2|avx512 (best)] [f32|bf16] [SEQS 1]
 * SEQS > 1: that many sequences, each of CTX positions with T query rows, in blocks of their own
 * (T 1: a decode step of SEQS rows, whose K / V no longer stay in the caches).
 * bf16: cpu.attn "bf16" (AMX-BF16 tiles, q_block up to 16), its largest difference from the f32
 * kernels' result printed beside.
 * Not built by CMake (it needs the private src/ headers); after a CPU build in build-l:
 *   cc -O2 -std=c11 -D_GNU_SOURCE -Iinclude -Isrc bench/bench_cpu_attention.c build-l/libkiln_backend.a \
 *      build-l/libkiln_model.a build-l/libkiln_format.a build-l/libkiln_contract.a build-l/libkiln_util.a \
 *      -lpthread -lm -o build-l/bench_cpu_attention
 * (or link build-l/libkiln.a alone where it bundles them). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "backend/cpu/attention.h"
#include "util/alloc.h"
#include "util/error.h"
#include "util/threads.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv) {
    int ctx = argc > 1 ? atoi(argv[1]) : 4000, T = argc > 2 ? atoi(argv[2]) : 256;
    int nth = argc > 3 ? atoi(argv[3]) : 2, rep = argc > 4 ? atoi(argv[4]) : 5;
    const int H = 9, KV = 3, hd = 64, bs = 16, G = H / KV;
    if (ctx < 1 || T < 1 || T > ctx || nth < 1 || rep < 1) {
        fprintf(stderr, "usage: bench_cpu_attention [CTX] [T <= CTX] [THREADS] [REPEAT]\n");
        return 2;
    }
    int S = argc > 7 ? atoi(argv[7]) : 1;
    if (S < 1 || S > 64 || (size_t)S * T > 4096 * 4) {
        fprintf(stderr, "SEQS: 1..64, SEQS x T <= 16384\n");
        return 2;
    }
    int nb1 = (ctx + bs - 1) / bs, nb = S * nb1;
    kiln_kv_layout L = {.n_layers = 1, .n_kv_heads = KV, .head_dim = hd, .block_size = bs, .n_blocks = nb + 1,
                        .elem_bytes = 4};
    size_t n = (size_t)kiln_kv_elems(&L);
    float *kv = kiln_malloc_aligned(n * sizeof(float));
    unsigned s = 1;
    for (size_t i = 0; i < n; i++) kv[i] = (float)((s = s * 1103515245u + 12345u) >> 9) / 8388608.0f - 1.0f;
    int32_t *bt = malloc(sizeof(int32_t) * (size_t)nb), pos[4096 * 4], qs[65];
    for (int b = 0; b < nb; b++) bt[b] = 1 + (b * 7919) % nb; /* scattered blocks; seq i: bt + i * nb1 */
    for (int i = 0; i <= S; i++) qs[i] = i * T;
    for (int i = 0; i < S; i++)
        for (int t = 0; t < T; t++) pos[i * T + t] = ctx - T + t;
    T *= S;
    float *q = kiln_malloc_aligned((size_t)T * H * hd * sizeof(float));
    float *att = kiln_malloc_aligned((size_t)T * H * hd * sizeof(float));
    float *ref = malloc((size_t)T * H * hd * sizeof(float));
    for (size_t i = 0; i < (size_t)T * H * hd; i++) q[i] = (float)((s = s * 1103515245u + 12345u) >> 9) / 4194304.0f - 2.0f;
    float *scores = kiln_malloc_aligned(sizeof(float) * (size_t)nth * 32 * G * ctx);
    kiln_pool *pool = NULL;
    kiln_error err = {0};
    if (kiln_pool_create(&pool, nth, &err)) { fprintf(stderr, "pool: %s\n", err.msg); return 1; }
    kiln_cpu_ctx c = {.isa = kiln_isa_best(), .pool = pool};
    if (argc > 5 && kiln_isa_select(argv[5], &c.isa, &err)) { fprintf(stderr, "%s\n", err.msg); return 2; }
    kiln_cpu_attn_args a = {
        .kv = kv, .layout = &L, .layer = 0, .n_tokens = T, .n_seqs = S, .positions = pos, .seq_q_start = qs,
        .block_table = bt, .max_blocks_per_seq = nb1, .q = q, .att = att, .n_heads = H, .n_kv_heads = KV,
        .head_dim = hd, .scores = scores, .max_model_len = ctx,
    };
    if (kiln_cpu_attn_lookup(c.isa, &a.k)) return 1;
    float *f32 = NULL;
    if (argc > 6 && !strcmp(argv[6], "bf16")) {
        if (!kiln_cpu_has_amx_bf16()) { fprintf(stderr, "bf16: no AMX-BF16 here\n"); return 2; }
        a.q_block = 16;
        f32 = malloc((size_t)T * H * hd * sizeof(float));
        if (kiln_cpu_attention(&c, &a, &err)) { fprintf(stderr, "attention: %s\n", err.msg); return 1; }
        memcpy(f32, att, (size_t)T * H * hd * sizeof(float));
        a.amx_bytes = kiln_cpu_attn_amx_bytes(G, 16, hd, ctx);
        a.amx = kiln_malloc_aligned(a.amx_bytes * (size_t)nth);
    }
    double flops = 0;
    for (int t = 0; t < T; t++) flops += 4.0 * (pos[t] + 1) * H * hd; /* T: all sequences' rows */
    printf("attention, %s, %d threads: context %d, %d query rows, H %d KV %d hd %d (%.2f GFLOP a call)\n",
           kiln_isa_name(c.isa), nth, ctx, T, H, KV, hd, 1e-9 * flops);
    static const int qbs[] = {1, 2, 4, 8, 16, 32};
    for (int i = 0; i < (f32 ? 5 : 6); i++) {
        a.q_block = qbs[i];
        double best = 1e30;
        for (int r = 0; r < rep; r++) {
            double t0 = now();
            if (kiln_cpu_attention(&c, &a, &err)) { fprintf(stderr, "attention: %s\n", err.msg); return 1; }
            double dt = now() - t0;
            if (dt < best) best = dt;
        }
        if (i == 0) memcpy(ref, att, (size_t)T * H * hd * sizeof(float));
        int same = !memcmp(ref, att, (size_t)T * H * hd * sizeof(float));
        double dmax = 0, vmax = 0;
        for (size_t e = 0; f32 && e < (size_t)T * H * hd; e++) {
            double d = att[e] - f32[e];
            if (d < 0) d = -d;
            if (d > dmax) dmax = d;
            if (f32[e] > vmax) vmax = f32[e];
            if (-f32[e] > vmax) vmax = -f32[e];
        }
        printf("  q_block %2d: %8.2f ms  %6.1f GFLOP/s  %s", qbs[i], 1e3 * best, 1e-9 * flops / best,
               same ? "same bits as q_block 1" : "BITS DIFFER");
        if (f32) printf("  (bf16: largest |difference| from f32 %.3g, largest |f32| %.3g)", dmax, vmax);
        printf("\n");
    }
    kiln_pool_destroy(pool);
    kiln_free_aligned(kv);
    kiln_free_aligned(q);
    kiln_free_aligned(att);
    kiln_free_aligned(scores);
    kiln_free_aligned(a.amx);
    free(f32);
    free(ref);
    free(bt);
    return 0;
}
