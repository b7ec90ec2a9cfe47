/* attention.c: causal GQA attention over the paged KV pool (see attention.h for the shapes).
 *
 * Work is split into items (row, KV head, group of query heads) handed to the pool's threads
 * as ranges; each item is computed by attn_row_kvhead alone, whose arithmetic does not depend
 * on the group size, so the split changes no bit. */
#include <math.h>
#include "backend/cpu/attention.h"
#include "util/error.h"

#define ATTN_SERIAL_MACS (1 << 16) /* below this many multiply-adds a call: no threads (as matmul.c) */

/* Ask for the cache lines of p[0 .. n) (floats) ahead of use. */
static inline void prefetch_rows(const float *p, size_t n) {
    for (size_t i = 0; i < n; i += 16) __builtin_prefetch(p + i, 0, 3);
}

/* One (row, KV head) pair: G query heads (gi0 .. gi0+G-1 of the GG that share the KV head,
 * all GG of them unless the step is too small to keep the threads busy) attend together over
 * positions 0..pos of the row's sequence (pos - window + 1 .. pos with a window): scores[i][j] = q_i . k_j / sqrt(hd) through the ISA's
 * qk kernel (each score's arithmetic depends only on k_j and q_i: not on G or the run), a
 * softmax per head, then
 * o_i = sum_j p_ij v_j in position order. Keys and values are visited in runs of consecutive
 * slots of one KV block (contiguous rows). Nothing depends on other rows.
 * scores: [G][max_model_len] of this thread. */
/* FP8 pool: run rows [nr][hd] of (layer, block, k|v, head) from slot off, decoded and scaled */
static const float *kv8_run(const kiln_cpu_attn_args *a, int64_t blk, int kv, int kvh, int off, int nr, float *buf) {
    const uint8_t *p = a->kv8 + kiln_kv_offset(a->layout, a->layer, blk, kv, kvh, off);
    const float *lut = a->kv8_lut + 256 * kv;
    for (int i = 0; i < nr * a->head_dim; i++) buf[i] = lut[p[i]];
    return buf;
}

static void attn_row_kvhead(const kiln_cpu_attn_args *a, int seq, int t, int kvh, int gi0, int G, float *scores,
                            float *kvbuf) {
    const kiln_kv_layout *L = a->layout;
    int hd = a->head_dim, bs = L->block_size, GG = a->n_heads / a->n_kv_heads;
    int pos = a->positions[t], n = pos + 1, stride = a->max_model_len;
    /* a window of w keys: positions lo .. pos (absolute indices into scores throughout) */
    int lo = a->window > 0 && n > a->window ? n - a->window : 0;
    const float *q = a->q + (size_t)t * a->n_heads * hd + (size_t)(kvh * GG + gi0) * hd;
    const int32_t *bt = a->block_table + (size_t)seq * a->max_blocks_per_seq;
    float scale = 1.0f / sqrtf((float)hd);
    for (int j0 = lo; j0 < n;) {
        int run = bs - j0 % bs < n - j0 ? bs - j0 % bs : n - j0;
        const float *kp = a->kv8 ? kv8_run(a, bt[j0 / bs], 0, kvh, j0 % bs, run, kvbuf)
                                 : a->kv + kiln_kv_offset(L, a->layer, bt[j0 / bs], 0, kvh, j0 % bs);
        if (a->prefetch && !a->kv8 && j0 + run < n) /* the next block's keys: hardware prefetch stops at pages */
            prefetch_rows(a->kv + kiln_kv_offset(L, a->layer, bt[(j0 + run) / bs], 0, kvh, 0),
                          (size_t)(n - j0 - run < bs ? n - j0 - run : bs) * hd);
        for (int i0 = 0; i0 < G; i0 += 4)
            a->k.qk(kp, run, q + (size_t)i0 * hd, G - i0 < 4 ? G - i0 : 4, hd, scores + (size_t)i0 * stride + j0,
                    (size_t)stride);
        j0 += run;
    }
    float *att = a->att + (size_t)t * a->n_heads * hd + (size_t)(kvh * GG + gi0) * hd;
    for (int i = 0; i < G; i++) {
        a->k.softmax(scores + (size_t)i * stride + lo, n - lo, scale);
        for (int d = 0; d < hd; d++) att[(size_t)i * hd + d] = 0.0f;
    }
    for (int j0 = lo; j0 < n;) {
        int run = bs - j0 % bs < n - j0 ? bs - j0 % bs : n - j0;
        const float *vp = a->kv8 ? kv8_run(a, bt[j0 / bs], 1, kvh, j0 % bs, run, kvbuf)
                                 : a->kv + kiln_kv_offset(L, a->layer, bt[j0 / bs], 1, kvh, j0 % bs);
        if (a->prefetch && !a->kv8 && j0 + run < n)
            prefetch_rows(a->kv + kiln_kv_offset(L, a->layer, bt[(j0 + run) / bs], 1, kvh, 0),
                          (size_t)(n - j0 - run < bs ? n - j0 - run : bs) * hd);
        if (a->k.pvg) a->k.pvg(att, (size_t)hd, scores + j0, (size_t)stride, G, vp, run, hd);
        else
            for (int i = 0; i < G; i++) a->k.pv(att + (size_t)i * hd, scores + (size_t)i * stride + j0, vp, run, hd);
        j0 += run;
    }
}

/* Work items (row, KV head, group of gs query heads), in row order; a task is a range of
 * items. gs is G, or 1 when there are too few (row, KV head) pairs for the threads (decode:
 * 3 KV heads on 2 threads would leave one idle half the time). Per score and per output the
 * arithmetic is the same whatever gs is, so this changes no bit. */
typedef struct attn_tasks {
    const kiln_cpu_attn_args *a;
    int gs, items, per_task;
    int reverse; /* many small tasks: claim the last rows' first */
} attn_tasks;

static void attn_task(void *arg, int task, int thread) {
    attn_tasks *A = arg;
    const kiln_cpu_attn_args *a = A->a;
    int KV = a->n_kv_heads, G = a->n_heads / KV, ng = G / A->gs;
    float *scores = a->scores + (size_t)thread * G * a->max_model_len;
    float *kvbuf = a->kvbuf ? a->kvbuf + (size_t)thread * a->layout->block_size * a->head_dim : NULL;
    /* tasks claimed in order run the last (longest: causal) rows first, so that the job ends
     * on short tasks (each item is independent: no bit changes) */
    int n_tasks = (A->items + A->per_task - 1) / A->per_task;
    if (A->reverse) task = n_tasks - 1 - task;
    int w0 = task * A->per_task, w1 = w0 + A->per_task < A->items ? w0 + A->per_task : A->items;
    int seq = 0;
    for (int w = w0; w < w1; w++) {
        int t = w / (KV * ng), kvh = (w / ng) % KV, gi = w % ng;
        while (t >= a->seq_q_start[seq + 1]) seq++;
        attn_row_kvhead(a, seq, t, kvh, gi * A->gs, A->gs, scores, kvbuf);
    }
}

int kiln_cpu_attention(kiln_cpu_ctx *ctx, const kiln_cpu_attn_args *a, kiln_error *err) {
    /* O(1) checks only: the engine's step was validated (kiln_backend_check_step) */
    if (!a || !a->layout || a->n_heads <= 0 || a->n_kv_heads <= 0 || a->n_heads % a->n_kv_heads ||
        a->head_dim <= 0 || a->layout->n_kv_heads != a->n_kv_heads || a->layout->head_dim != a->head_dim ||
        a->layout->block_size <= 0 || a->layer < 0 || a->layer >= a->layout->n_layers || a->n_tokens < 0 ||
        a->max_model_len <= 0 || a->window < 0 || !a->k.qk || !a->k.softmax || (!a->k.pv && !a->k.pvg))
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "cpu attention: inconsistent arguments");
    if (a->n_tokens == 0) return KILN_OK; /* an empty step */
    if ((a->kv8 ? !a->kvbuf || !a->kv8_lut || a->layout->dtype != KILN_KV_FP8_E4M3 : !a->kv) || !a->q || !a->att || !a->scores || !a->positions || !a->seq_q_start || !a->block_table ||
        a->n_seqs <= 0 || a->seq_q_start[a->n_seqs] != a->n_tokens)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "cpu attention: missing buffers or rows");
    int KV = a->n_kv_heads, G = a->n_heads / KV, nth = kiln_pool_size(ctx ? ctx->pool : NULL);
    attn_tasks A = {a, G, 0, 1, 0};
    int pairs = a->n_tokens * KV;
    if (pairs < 4 * nth) A.gs = 1;
    A.items = pairs * (G / A.gs);
    /* few items (decode): one contiguous range per thread, so that the heads of one KV head
     * mostly stay on one core (its K/V rows, read once into that core's L2); many: small
     * ranges claimed dynamically (causal rows differ in cost) */
    int want = A.items < 16 * nth ? nth : nth * 8;
    A.reverse = want > nth;
    A.per_task = (A.items + want - 1) / want;
    /* A small call (a tiny model's decode: stories260K's is ~33 K multiply-adds a layer at 260
     * positions) costs less than waking the pool and keeping its workers spinning: it runs on
     * the calling thread, as the matmul does below SERIAL_MACS. Tasks and items are the same
     * either way, so no bit changes. */
    double macs = 0;
    for (int i = 0; i < a->n_seqs; i++) {
        int q0 = a->seq_q_start[i], q1 = a->seq_q_start[i + 1];
        if (q1 > q0) macs += (double)(q1 - q0) * (a->positions[q1 - 1] + 1);
    }
    macs *= 2.0 * a->n_heads * a->head_dim; /* q.k and p.v per position and head */
    kiln_pool *pool = ctx && macs >= ATTN_SERIAL_MACS ? ctx->pool : NULL;
    kiln_pool_run_tasks(pool, (A.items + A.per_task - 1) / A.per_task, attn_task, &A);
    return KILN_OK;
}
