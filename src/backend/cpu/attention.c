/* attention.c: causal GQA attention over the paged KV pool (see attention.h for the shapes).
 *
 * Work is split into items (query block, KV head, group of query heads) handed to the pool's
 * threads as ranges; a query block is up to q_block consecutive rows of one sequence sharing
 * every read of a K/V run. Each item is computed by attn_block_kvhead alone, whose arithmetic
 * per (row, head) depends on neither the group size nor the block, so the split changes no
 * bit (tests/c/test_cpu_attention.c compares every block size with 1, bit for bit). */
#include <math.h>
#include "backend/cpu/attention.h"
#include "util/error.h"

#define ATTN_SERIAL_MACS (1 << 16) /* below this many multiply-adds a call: no threads (as matmul.c) */

/* Ask for the cache lines of p[0 .. n) (bytes) ahead of use. */
static inline void prefetch_bytes(const void *p, size_t n) {
    for (size_t i = 0; i < n; i += 64) __builtin_prefetch((const char *)p + i, 0, 3);
}
/* the first nr rows of the next block's K or V tile (f32 or 16-bit pool) */
static inline void prefetch_next(const kiln_cpu_attn_args *a, int64_t blk, int kv, int kvh, int nr) {
    int64_t o = kiln_kv_offset(a->layout, a->layer, blk, kv, kvh, 0);
    size_t n = (size_t)nr * a->head_dim;
    if (a->kv16) prefetch_bytes(a->kv16 + o, n * sizeof(uint16_t));
    else prefetch_bytes(a->kv + o, n * sizeof(float));
}

/* One item: rows t0 .. t0+nr-1 (consecutive rows of sequence seq, a query block) and KV head
 * kvh; query heads gi0 .. gi0+G-1 of the GG that share the KV head (all GG unless the step is
 * too small to keep the threads busy). Row r at position p_r attends to positions lo_r .. p_r
 * (lo_r = 0, or p_r - window + 1 with a window): scores[r][i][j] = q_ri . k_j / sqrt(hd) through
 * the ISA's qk kernel, a softmax per (row, head), then o_ri = sum_j p_rij v_j in position order.
 *
 * Why blocked: the block's keys and values are visited once, in runs of consecutive slots of one
 * KV block (contiguous [run][hd], a few KB: it stays in L1 while all nr rows use it), instead of
 * once per row; over a long context (4,000 positions: 1 MB of keys and 1 MB of values a KV head
 * and layer) the per-row walk was bound by L2/L3 reads, the blocked one by the arithmetic.
 * Bits: each row takes from a run exactly the sub-run it took when rows were done one by one
 * (its own [lo_r, p_r] clipped to the run; runs are cut at KV block boundaries either way), the
 * qk kernel's score depends only on k_j and q_ri (kernels.h), the softmax on the row's own
 * scores, and P.V is one fma chain per output element in position order whatever the runs: a
 * row's result does not depend on nr or on the other rows of its block.
 * scores: [nr][G][max_model_len] of this thread (row r, head i at (r * G + i) * max_model_len). */
/* FP8 pool: run rows [nr][hd] of (layer, block, k|v, head) from slot off, decoded and scaled */
static const float *kv8_run(const kiln_cpu_attn_args *a, int64_t blk, int kv, int kvh, int off, int nr, float *buf) {
    const uint8_t *p = a->kv8 + kiln_kv_offset(a->layout, a->layer, blk, kv, kvh, off);
    const float *lut = a->kv8_lut + 256 * kv;
    for (int i = 0; i < nr * a->head_dim; i++) buf[i] = lut[p[i]];
    return buf;
}

/* 16-bit pool: run rows [nr][hd] of (layer, block, k|v, head) from slot off, widened */
static const float *kv16_run(const kiln_cpu_attn_args *a, int64_t blk, int kv, int kvh, int off, int nr, float *buf) {
    a->k.widen(a->kv16 + kiln_kv_offset(a->layout, a->layer, blk, kv, kvh, off), buf, nr * a->head_dim,
               a->layout->dtype == KILN_KV_BF16);
    return buf;
}


static void attn_block_kvhead(const kiln_cpu_attn_args *a, int seq, int t0, int nr, int kvh, int gi0, int G,
                              float *scores, float *kvbuf) {
    const kiln_kv_layout *L = a->layout;
    int hd = a->head_dim, bs = L->block_size, GG = a->n_heads / a->n_kv_heads;
    size_t stride = (size_t)a->max_model_len, rstride = (size_t)a->n_heads * hd;
    const int32_t *bt = a->block_table + (size_t)seq * a->max_blocks_per_seq;
    float scale = 1.0f / sqrtf((float)hd);
    /* the block's span of keys: the union of its rows' ranges */
    int jlo = a->max_model_len, jhi = 0;
    for (int r = 0; r < nr; r++) {
        int lo, n;
        kiln_cpu_attn_row_range(a, a->positions[t0 + r], &lo, &n);
        if (lo < jlo) jlo = lo;
        if (n > jhi) jhi = n;
    }
    const float *q0 = a->q + (size_t)t0 * rstride + (size_t)(kvh * GG + gi0) * hd;
    for (int j0 = jlo; j0 < jhi;) {
        int run = bs - j0 % bs < jhi - j0 ? bs - j0 % bs : jhi - j0;
        /* a 16-bit pool: read in place by one row (decode) where the ISA has the kernels (k16);
         * a block of rows (prefill) widens each run once and reuses it from L1 (same bits) */
        const uint16_t *k16 = a->kv16 && a->k.qk16 && nr == 1 && hd <= 256 ? a->kv16 + kiln_kv_offset(L, a->layer, bt[j0 / bs], 0, kvh, j0 % bs) : NULL;
        const float *kp = k16       ? NULL
                          : a->kv8  ? kv8_run(a, bt[j0 / bs], 0, kvh, j0 % bs, run, kvbuf)
                          : a->kv16 ? kv16_run(a, bt[j0 / bs], 0, kvh, j0 % bs, run, kvbuf)
                                    : a->kv + kiln_kv_offset(L, a->layer, bt[j0 / bs], 0, kvh, j0 % bs);
        if (a->prefetch && !a->kv8 && j0 + run < jhi) /* the next block's keys: hardware prefetch stops at pages */
            prefetch_next(a, bt[(j0 + run) / bs], 0, kvh, jhi - j0 - run < bs ? jhi - j0 - run : bs);
        for (int r = 0; r < nr; r++) {
            int lo, n;
            kiln_cpu_attn_row_range(a, a->positions[t0 + r], &lo, &n);
            int j1 = j0 > lo ? j0 : lo, j2 = j0 + run < n ? j0 + run : n;
            if (j1 >= j2) continue;
            const float *q = q0 + (size_t)r * rstride;
            float *sr = scores + (size_t)r * G * stride;
            for (int i0 = 0; i0 < G; i0 += 4) {
                if (k16)
                    a->k.qk16(k16 + (size_t)(j1 - j0) * hd, a->layout->dtype == KILN_KV_BF16, j2 - j1, q + (size_t)i0 * hd,
                              G - i0 < 4 ? G - i0 : 4, hd, sr + (size_t)i0 * stride + j1, stride);
                else
                    a->k.qk(kp + (size_t)(j1 - j0) * hd, j2 - j1, q + (size_t)i0 * hd, G - i0 < 4 ? G - i0 : 4, hd,
                            sr + (size_t)i0 * stride + j1, stride);
            }
        }
        j0 += run;
    }
    for (int r = 0; r < nr; r++) {
        int lo, n;
        kiln_cpu_attn_row_range(a, a->positions[t0 + r], &lo, &n);
        float *att = a->att + (size_t)(t0 + r) * rstride + (size_t)(kvh * GG + gi0) * hd;
        float *sr = scores + (size_t)r * G * stride;
        for (int i = 0; i < G; i++) {
            a->k.softmax(sr + (size_t)i * stride + lo, n - lo, scale);
            for (int d = 0; d < hd; d++) att[(size_t)i * hd + d] = 0.0f;
        }
    }
    for (int j0 = jlo; j0 < jhi;) {
        int run = bs - j0 % bs < jhi - j0 ? bs - j0 % bs : jhi - j0;
        const uint16_t *v16 = a->kv16 && a->k.pvg16 && nr == 1 && hd <= 256 ? a->kv16 + kiln_kv_offset(L, a->layer, bt[j0 / bs], 1, kvh, j0 % bs) : NULL;
        const float *vp = v16       ? NULL
                          : a->kv8  ? kv8_run(a, bt[j0 / bs], 1, kvh, j0 % bs, run, kvbuf)
                          : a->kv16 ? kv16_run(a, bt[j0 / bs], 1, kvh, j0 % bs, run, kvbuf)
                                    : a->kv + kiln_kv_offset(L, a->layer, bt[j0 / bs], 1, kvh, j0 % bs);
        if (a->prefetch && !a->kv8 && j0 + run < jhi)
            prefetch_next(a, bt[(j0 + run) / bs], 1, kvh, jhi - j0 - run < bs ? jhi - j0 - run : bs);
        for (int r = 0; r < nr; r++) {
            int lo, n;
            kiln_cpu_attn_row_range(a, a->positions[t0 + r], &lo, &n);
            int j1 = j0 > lo ? j0 : lo, j2 = j0 + run < n ? j0 + run : n;
            if (j1 >= j2) continue;
            float *att = a->att + (size_t)(t0 + r) * rstride + (size_t)(kvh * GG + gi0) * hd;
            const float *sr = scores + (size_t)r * G * stride + j1;
            if (v16) {
                a->k.pvg16(att, (size_t)hd, sr, stride, G, v16 + (size_t)(j1 - j0) * hd, a->layout->dtype == KILN_KV_BF16,
                           j2 - j1, hd);
                continue;
            }
            const float *vr = vp + (size_t)(j1 - j0) * hd;
            if (a->k.pvg) a->k.pvg(att, (size_t)hd, sr, stride, G, vr, j2 - j1, hd);
            else
                for (int i = 0; i < G; i++) a->k.pv(att + (size_t)i * hd, sr + (size_t)i * stride, vr, j2 - j1, hd);
        }
        j0 += run;
    }
}

/* Work items (query block, KV head, group of gs query heads), blocks in row order (a sequence's
 * rows cut into blocks of qb consecutive rows, the last one shorter); a task is a range of
 * items. gs is G, or 1 when there are too few (block, KV head) pairs for the threads (decode:
 * 3 KV heads on 2 threads would leave one idle half the time). Per score and per output the
 * arithmetic is the same whatever gs and qb are, so neither changes a bit. */
typedef struct attn_tasks {
    const kiln_cpu_attn_args *a;
    int gs, qb, items, per_task;
    int reverse; /* many small tasks: claim the last rows' first */
} attn_tasks;

/* query blocks of qb rows over the step's sequences */
static int count_blocks(const kiln_cpu_attn_args *a, int qb) {
    int nb = 0;
    for (int i = 0; i < a->n_seqs; i++) nb += (a->seq_q_start[i + 1] - a->seq_q_start[i] + qb - 1) / qb;
    return nb;
}

static void attn_task(void *arg, int task, int thread) {
    attn_tasks *A = arg;
    const kiln_cpu_attn_args *a = A->a;
    int KV = a->n_kv_heads, G = a->n_heads / KV, ng = G / A->gs, qb = A->qb;
    float *scores = a->scores + (size_t)thread * qb * G * a->max_model_len;
    float *kvbuf = a->kvbuf ? a->kvbuf + (size_t)thread * a->layout->block_size * a->head_dim : NULL;
    /* tasks claimed in order run the last (longest: causal) rows first, so that the job ends
     * on short tasks (each item is independent: no bit changes) */
    int n_tasks = (A->items + A->per_task - 1) / A->per_task;
    if (A->reverse) task = n_tasks - 1 - task;
    int w0 = task * A->per_task, w1 = w0 + A->per_task < A->items ? w0 + A->per_task : A->items;
    /* the cursor: sequence seq, whose first block is block number b_seq */
    int seq = 0, b_seq = 0;
    for (int w = w0; w < w1; w++) {
        int b = w / (KV * ng), kvh = (w / ng) % KV, gi = w % ng;
        for (;;) {
            int len = a->seq_q_start[seq + 1] - a->seq_q_start[seq], nb = (len + qb - 1) / qb;
            if (b < b_seq + nb) break;
            b_seq += nb;
            seq++;
        }
        int t0 = a->seq_q_start[seq] + (b - b_seq) * qb, t1 = a->seq_q_start[seq + 1];
        attn_block_kvhead(a, seq, t0, t1 - t0 < qb ? t1 - t0 : qb, kvh, gi * A->gs, A->gs, scores, kvbuf);
    }
}

/* A small call (a tiny model's decode: stories260K's is ~33 K multiply-adds a layer at 260
 * positions) costs less than waking the pool and keeping its workers spinning: it runs on the
 * calling thread, as the matmul does below SERIAL_MACS. Tasks and items are the same either
 * way, so no bit changes. The pool to run a call's tasks on, or NULL. */
static kiln_pool *attn_pool(kiln_cpu_ctx *ctx, const kiln_cpu_attn_args *a) {
    double macs = 0;
    for (int i = 0; i < a->n_seqs; i++) {
        int q0 = a->seq_q_start[i], q1 = a->seq_q_start[i + 1];
        if (q1 > q0) macs += (double)(q1 - q0) * (a->positions[q1 - 1] + 1);
    }
    macs *= 2.0 * a->n_heads * a->head_dim; /* q.k and p.v per position and head */
    return ctx && macs >= ATTN_SERIAL_MACS ? ctx->pool : NULL;
}

#ifdef KILN_X86
/* cpu.attn "bf16" (attention_amx.c): items (sequence, KV head, a run of up to nbi consecutive
 * query blocks), so that a thread converts a sequence's keys and values once for several blocks
 * (at a 4,000-token context their reads were most of the time with one block an item); items in
 * reverse order (the last rows, the longest, first). A row's bits do not depend on the items. */
typedef struct amx_tasks {
    const kiln_cpu_attn_args *a;
    int qb, nbi, items;
} amx_tasks;

static void amx_task(void *arg, int task, int thread) {
    amx_tasks *A = arg;
    const kiln_cpu_attn_args *a = A->a;
    int KV = a->n_kv_heads, G = a->n_heads / KV, w = A->items - 1 - task, run = A->qb * A->nbi;
    for (int seq = 0; seq < a->n_seqs; seq++) {
        int q0 = a->seq_q_start[seq], len = a->seq_q_start[seq + 1] - q0, nc = (len + run - 1) / run;
        if (w >= nc * KV) {
            w -= nc * KV;
            continue;
        }
        int c = w / KV, kvh = w % KV, t0 = q0 + c * run, t1 = t0 + run < q0 + len ? t0 + run : q0 + len;
        kiln_cpu_attn_amx_rows(a, seq, t0, t1, A->qb, kvh, a->scores + (size_t)thread * a->q_block * G * a->max_model_len,
                               (char *)a->amx + (size_t)thread * a->amx_bytes);
        return;
    }
}

static void attention_amx(kiln_cpu_ctx *ctx, const kiln_cpu_attn_args *a) {
    int KV = a->n_kv_heads, nth = kiln_pool_size(ctx ? ctx->pool : NULL);
    amx_tasks A = {a, a->q_block > 1 ? a->q_block : 1, 1, 0};
    /* ~6 items a thread: enough to balance causal rows of very different cost */
    A.nbi = count_blocks(a, A.qb) * KV / (6 * nth);
    if (A.nbi < 1) A.nbi = 1;
    for (int i = 0; i < a->n_seqs; i++) {
        int run = A.qb * A.nbi, len = a->seq_q_start[i + 1] - a->seq_q_start[i];
        A.items += (len + run - 1) / run * KV;
    }
    kiln_pool_run_tasks(attn_pool(ctx, a), A.items, amx_task, &A);
}
#endif

#ifndef KILN_X86
/* no tile kernel in this build (kiln_cpu_has_amx_bf16 is 0): nothing to size */
size_t kiln_cpu_attn_amx_bytes(int G, int q_block, int head_dim, int max_model_len) {
    (void)G, (void)q_block, (void)head_dim, (void)max_model_len;
    return 0;
}
#endif

int kiln_cpu_attn_q_block(int G, int max_model_len) {
    size_t row = (size_t)(G > 0 ? G : 1) * (size_t)(max_model_len > 0 ? max_model_len : 1) * sizeof(float);
    size_t n = ((size_t)4 << 20) / row;
    return n >= KILN_CPU_ATTN_Q_BLOCK ? KILN_CPU_ATTN_Q_BLOCK : n < 1 ? 1 : (int)n;
}

int kiln_cpu_attention(kiln_cpu_ctx *ctx, const kiln_cpu_attn_args *a, kiln_error *err) {
    /* O(1) checks only: the engine's step was validated (kiln_backend_check_step) */
    if (!a || !a->layout || a->n_heads <= 0 || a->n_kv_heads <= 0 || a->n_heads % a->n_kv_heads ||
        a->head_dim <= 0 || a->layout->n_kv_heads != a->n_kv_heads || a->layout->head_dim != a->head_dim ||
        a->layout->block_size <= 0 || a->layer < 0 || a->layer >= a->layout->n_layers || a->n_tokens < 0 ||
        a->max_model_len <= 0 || a->window < 0 || !a->k.qk || !a->k.softmax || (!a->k.pv && !a->k.pvg))
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "cpu attention: inconsistent arguments");
    if (a->n_tokens == 0) return KILN_OK; /* an empty step */
#ifdef KILN_X86
    if (a->amx) {
        if (!KILN_CPU_ATTN_AMX_HD_OK(a->head_dim) || a->q_block > KILN_CPU_ATTN_Q_BLOCK ||
            a->amx_bytes < kiln_cpu_attn_amx_bytes(a->n_heads / a->n_kv_heads, a->q_block, a->head_dim, a->max_model_len))
            return KILN_ERR(err, KILN_ERR_INVALID_ARG, "cpu attention: bf16 tiles: head_dim %d or scratch unsupported",
                            a->head_dim);
        attention_amx(ctx, a);
        return KILN_OK;
    }
#else
    if (a->amx) return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cpu attention: bf16 tiles need an x86-64 build");
#endif
    if ((a->kv8    ? !a->kvbuf || !a->kv8_lut || a->layout->dtype != KILN_KV_FP8_E4M3
         : a->kv16 ? !a->kvbuf || !a->k.widen || (a->layout->dtype != KILN_KV_F16 && a->layout->dtype != KILN_KV_BF16)
                   : !a->kv) || !a->q || !a->att || !a->scores || !a->positions || !a->seq_q_start || !a->block_table ||
        a->n_seqs <= 0 || a->seq_q_start[a->n_seqs] != a->n_tokens)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "cpu attention: missing buffers or rows");
    int KV = a->n_kv_heads, G = a->n_heads / KV, nth = kiln_pool_size(ctx ? ctx->pool : NULL);
    /* query blocks: as many rows as the scores scratch holds (q_block), fewer while that would
     * leave the threads too few items (a short chunk, a step of decode rows: 1 row per block) */
    int qb = a->q_block > 1 ? a->q_block : 1;
    /* first smaller blocks (down to 4 rows), keeping a KV head's query heads together: a short
     * chunk of a long prompt (the 20-40 rows a step that the ITL policy gives it beside
     * decodes) then still reads each key and value run once for all G heads, where splitting
     * the heads (gs = 1) reads the whole context G times (measured: a 4,000-token prompt in
     * 24-row chunks, attention ~2x the time of 64-row chunks) */
    while (qb > 4 && count_blocks(a, qb) * KV < 4 * nth) qb /= 2;
    int pairs = count_blocks(a, qb) * KV;
    if (pairs < 4 * nth) /* still too few (decode, tiny chunks): as before, heads split too */
        while (qb > 1 && count_blocks(a, qb) * KV * G < 8 * nth) qb /= 2;
    attn_tasks A = {a, G, qb, 0, 1, 0};
    pairs = count_blocks(a, qb) * KV;
    if (pairs < 4 * nth) A.gs = 1;
    A.items = pairs * (G / A.gs);
    /* few items of one decode row each: one contiguous range per thread, so that the heads of
     * one KV head mostly stay on one core (its K/V rows, read once into that core's L2); many,
     * or a step with a chunk (a chunk's block over thousands of positions beside decode rows
     * of a few: items of very different cost, where halves left one thread idle for most of
     * the attention), small ranges claimed dynamically, the last (longest: causal) rows first */
    int rows_only = a->n_tokens == a->n_seqs;
    int want = A.items < 16 * nth && rows_only ? nth : A.items < 8 * nth ? A.items : 8 * nth;
    A.reverse = want > nth;
    A.per_task = (A.items + want - 1) / want;
    kiln_pool_run_tasks(attn_pool(ctx, a), (A.items + A.per_task - 1) / A.per_task, attn_task, &A);
    return KILN_OK;
}
