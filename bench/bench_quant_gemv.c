/* bench_quant_gemv.c: decode-shaped benchmark of the quantized dot kernels on a GGUF model.
 *
 *   bench_quant_gemv MODEL.gguf [isa: scalar|avx2|avx512] [threads] [iters] [nr]
 *
 * One "token" = every layer matrix (q, k, v, o, gate, up, down) and the LM head, each as a
 * GEMV over all its rows (rows split evenly over the threads, nr activation rows per call),
 * i.e. the weight traffic of one decode step. Prints the achieved weight-read bandwidth next to
 * a plain streaming-read bandwidth measured with the same threads on a buffer larger than the
 * caches, and their ratio (the target: >= 70% at nr = 1).
 * Not built by CMake (it needs the private src/ headers); after `make`:
 *   cc -O2 -std=c11 -D_GNU_SOURCE -Iinclude -Isrc bench/bench_quant_gemv.c build/libkiln.a \
 *      -lpthread -lm -o build/bench_quant_gemv */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "backend/cpu/kernels.h"
#include "model/gguf.h"
#include "model/loaders.h"
#include "util/alloc.h"
#include "util/threads.h"
#include "util/timeutil.h"

typedef struct job {
    const kiln_tensor *w;
    kiln_dot_fn f;
    const float *x;
    float *y;
    int nr;
    /* bandwidth probe */
    const uint64_t *buf;
    size_t words;
    uint64_t sink[64];
} job;

static void gemv_part(void *ctx, int ith, int nth) {
    job *j = ctx;
    int64_t rows = j->w->shape[0], n = j->w->shape[1];
    size_t rb = kiln_dtype_row_bytes(j->w->dtype, n);
    int64_t r0 = rows * ith / nth, r1 = rows * (ith + 1) / nth;
    for (int64_t r = r0; r < r1; r++)
        j->f((const char *)j->w->data + (size_t)r * rb, j->x, (size_t)n, j->nr, (int)n, j->y + r,
             (size_t)rows);
}

static void read_part(void *ctx, int ith, int nth) {
    job *j = ctx;
    size_t w0 = j->words * ith / nth, w1 = j->words * (ith + 1) / nth;
    uint64_t a[8] = {0};
    for (size_t i = w0; i + 8 <= w1; i += 8)
        for (int k = 0; k < 8; k++) a[k] ^= j->buf[i + k];
    j->sink[ith] = a[0] ^ a[1] ^ a[2] ^ a[3] ^ a[4] ^ a[5] ^ a[6] ^ a[7];
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf [scalar|avx2|avx512] [threads] [iters] [nr]\n", argv[0]);
        return 2;
    }
    kiln_isa isa = KILN_ISA_AVX512;
    if (argc > 2) isa = !strcmp(argv[2], "scalar") ? KILN_ISA_SCALAR : !strcmp(argv[2], "avx2") ? KILN_ISA_AVX2 : KILN_ISA_AVX512;
    int nth = argc > 3 ? atoi(argv[3]) : 0, iters = argc > 4 ? atoi(argv[4]) : 20;
    int nr = argc > 5 ? atoi(argv[5]) : 1;
    kiln_model m = {0};
    kiln_error err = {0};
    if (kiln_load_gguf(&m, argv[1], &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    kiln_pool *pool;
    if (kiln_pool_create(&pool, nth, &err)) return 1;
    nth = kiln_pool_size(pool);
    int nmat = m.cfg.n_layers * 7 + 1;
    const kiln_tensor **mats = malloc(sizeof *mats * (size_t)nmat);
    int k = 0;
    for (int l = 0; l < m.cfg.n_layers; l++) {
        kiln_layer_weights *L = &m.layers[l];
        const kiln_tensor *t[7] = {L->wq, L->wk, L->wv, L->wo, L->w_gate, L->w_up, L->w_down};
        for (int i = 0; i < 7; i++) mats[k++] = t[i];
    }
    mats[k++] = m.lm_head;
    size_t bytes = 0;
    int64_t maxn = 0, maxrows = 0;
    for (int i = 0; i < nmat; i++) {
        bytes += mats[i]->nbytes;
        if (mats[i]->shape[1] > maxn) maxn = mats[i]->shape[1];
        if (mats[i]->shape[0] > maxrows) maxrows = mats[i]->shape[0];
    }
    float *x = malloc(sizeof(float) * (size_t)maxn * 4), *y = malloc(sizeof(float) * (size_t)maxrows * 4);
    for (int64_t i = 0; i < maxn * 4; i++) x[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
    job j = {0};
    j.x = x;
    j.y = y;
    j.nr = nr;
    double best = 1e9;
    for (int it = 0; it < iters; it++) {
        double t0 = kiln_now();
        for (int i = 0; i < nmat; i++) {
            j.w = mats[i];
            j.f = kiln_cpu_dot_lookup_quant(mats[i]->dtype, isa);
            if (!j.f) {
                fprintf(stderr, "no %d kernel for %s\n", (int)isa, kiln_dtype_name(mats[i]->dtype));
                return 1;
            }
            kiln_pool_run(pool, gemv_part, &j);
        }
        double dt = kiln_now() - t0;
        if (dt < best) best = dt;
    }
    /* streaming read bandwidth on 512 MiB */
    size_t words = (size_t)64 << 20;
    uint64_t *buf = malloc(words * 8);
    for (size_t i = 0; i < words; i++) buf[i] = i * 0x9E3779B97F4A7C15ULL;
    j.buf = buf;
    j.words = words;
    double bbest = 1e9;
    for (int it = 0; it < 5; it++) {
        double t0 = kiln_now();
        kiln_pool_run(pool, read_part, &j);
        double dt = kiln_now() - t0;
        if (dt < bbest) bbest = dt;
    }
    double gbs = (double)bytes / best / 1e9, mbw = (double)words * 8 / bbest / 1e9;
    printf("isa %d threads %d nr %d: %.1f MB of weights per token, best %.2f ms/token "
           "(%.1f tok/s), %.2f GB/s; streaming read %.2f GB/s; ratio %.0f%%  (sink %llx)\n",
           (int)isa, nth, nr, bytes / 1e6, best * 1e3, 1.0 / best, gbs, mbw, 100 * gbs / mbw,
           (unsigned long long)(j.sink[0] ^ j.sink[1]));
    free(buf);
    free(x);
    free(y);
    free(mats);
    kiln_pool_destroy(pool);
    kiln_free(m.tensors);
    kiln_free(m.layers);
    kiln_free(m.owned);
    kiln_gguf_close(m.gguf);
    return 0;
}
