/* cpu_tp.c: N simulated tensor-parallel ranks on the CPU backend (design in cpu_tp.h).
 *
 * Per step (T rows, D = dim, rank r: Hr = H / N query heads, KVr KV heads, Fr = hidden / N FFN
 * columns, Vr vocabulary rows; the kernels are cpu_backend.c's):
 *   per layer:  xn = rmsnorm(x)                                       (replicated)
 *               for r: q[T][Hr*hd], k, v[T][KVr*hd] = xn Wqkv_r^T (+ bias_r); q / k norms; RoPE;
 *                      k, v -> rank r's pool; att[T][Hr*hd] = attention over rank r's heads;
 *                      part[T][D] = att Wo_r^T;  red (+)= part          (the all-reduce)
 *               x += red;  xn = rmsnorm(x)
 *               for r: gate[T][Fr] = silu(xn Wg_r^T) * xn Wu_r^T;  part = gate Wd_r^T;  red (+)= part
 *               x += red
 *   logits: xn[n][D] = rmsnorm(rows that asked); for r: lg[n][Vr] = xn Wlm_r^T -> columns
 *           [vocab0_r, vocab0_r + Vr) of logits[n][V]                    (the gather)
 * All buffers are allocated in create (I7). */
#include <string.h>
#include "backend/cpu/cpu_tp.h"
#include "model/tp.h"
#include "util/alloc.h"
#include "util/error.h"
#include "util/fp8.h"
#include "util/threads.h"

struct kiln_cpu_tp {
    const kiln_model *m;
    int n;                       /* ranks */
    int max_model_len;           /* the attention scores' row stride (backend config) */
    kiln_tp_shard *shard[KILN_TP_MAX];
    kiln_kv_layout layout[KILN_TP_MAX]; /* the engine's layout with the rank's n_kv_heads */
    float *kv[KILN_TP_MAX];      /* rank r's KV pool, kiln_kv_elems(&layout[r]) floats */
    uint8_t *kv8[KILN_TP_MAX];   /* or, FP8 KV cache, its E4M3 pool (one byte an element) */
    float *kv_scale;             /* FP8: [n_layers][2] k and v scales, as cpu_backend.c (every rank's) */
    float *kv_lut;               /* FP8: [n_layers][2][256] decoded code x scale */
    float *kvbuf;                /* FP8: [pool threads][block_size * head_dim] attention's decoded run */
    size_t kv_bytes, scratch_bytes;
    /* one rank's scratch (every rank has the same shapes), [max_tokens][...] */
    float *q, *k, *v, *att, *gate, *up;
    float *part, *red;           /* [max_tokens][dim]: a rank's partial product; their sum */
    float *lg;                   /* [logits_rows][max Vr] a rank's logits */
};

void kiln_cpu_tp_destroy(kiln_cpu_tp *tp) {
    if (!tp) return;
    for (int r = 0; r < tp->n; r++) {
        kiln_tp_shard_free(tp->shard[r]);
        kiln_free_aligned(tp->kv[r]);
        kiln_free_aligned(tp->kv8[r]);
    }
    kiln_free(tp->kv_scale);
    kiln_free(tp->kv_lut);
    kiln_free_aligned(tp->kvbuf);
    float *bufs[] = {tp->q, tp->k, tp->v, tp->att, tp->gate, tp->up, tp->part, tp->red, tp->lg};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) kiln_free_aligned(bufs[i]);
    kiln_free(tp);
}

void kiln_cpu_tp_memory(const kiln_cpu_tp *tp, size_t *kv_bytes, size_t *scratch_bytes) {
    if (kv_bytes) *kv_bytes = tp->kv_bytes;
    if (scratch_bytes) *scratch_bytes = tp->scratch_bytes;
}

static float *tp_alloc(size_t n, size_t *total) {
    *total += n * sizeof(float);
    return kiln_malloc_aligned(n * sizeof(float));
}

int kiln_cpu_tp_create(kiln_cpu_tp **out, const kiln_model *m, const kiln_backend_config *bc, int n_threads,
                       size_t logits_rows, kiln_error *err) {
    *out = NULL;
    const kiln_config *mc = &m->cfg;
    const int fp8 = bc->kv.dtype == KILN_KV_FP8_E4M3;
    if (bc->kv.dtype != KILN_KV_F32 && !fp8)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cpu backend: tensor parallelism (%d simulated ranks) with a %s KV "
                        "cache is not supported (f32, fp8)", bc->tp_size, kiln_kv_dtype_name(bc->kv.dtype));
    int rc = kiln_tp_check_model(m, bc->tp_size, err);
    if (rc) return rc;
    kiln_cpu_tp *tp = kiln_calloc(1, sizeof *tp);
    if (!tp) return KILN_ERR(err, KILN_ERR_OOM, "cpu backend: out of memory");
    tp->m = m;
    tp->n = bc->tp_size;
    tp->max_model_len = bc->max_model_len;
    for (int r = 0; r < tp->n; r++) {
        if ((rc = kiln_tp_shard_create(&tp->shard[r], m, tp->n, r, err))) goto fail;
        tp->scratch_bytes += tp->shard[r]->owned_bytes;
        tp->layout[r] = bc->kv;
        tp->layout[r].n_kv_heads = tp->shard[r]->part.n_kv_heads;
        size_t kb = (size_t)kiln_kv_elems(&tp->layout[r]) * (fp8 ? 1 : sizeof(float));
        if (fp8) tp->kv8[r] = kiln_malloc_aligned(kb);
        else tp->kv[r] = kiln_malloc_aligned(kb);
        tp->kv_bytes += kb;
        if (!tp->kv[r] && !tp->kv8[r]) {
            rc = KILN_ERR(err, KILN_ERR_OOM, "cpu backend: cannot allocate rank %d's KV pool (%.1f MiB)", r, kb / 1048576.0);
            goto fail;
        }
    }
    const kiln_tp_rank *p = &tp->shard[0]->part;
    size_t T = (size_t)bc->max_tokens, hd = (size_t)mc->head_dim, sb = 0;
    if (fp8) { /* the scales and tables of cpu_backend.c's FP8 pool, the same on every rank */
        tp->kv_scale = kiln_malloc((size_t)mc->n_layers * 2 * sizeof(float));
        tp->kv_lut = kiln_malloc((size_t)mc->n_layers * 2 * 256 * sizeof(float));
        tp->kvbuf = tp_alloc((size_t)(n_threads > 0 ? n_threads : 1) * bc->kv.block_size * hd, &sb);
        if (!tp->kv_scale || !tp->kv_lut || !tp->kvbuf) {
            rc = KILN_ERR(err, KILN_ERR_OOM, "cpu backend: out of memory (FP8 KV tables)");
            goto fail;
        }
        for (int l = 0; l < mc->n_layers; l++) {
            tp->kv_scale[2 * l] = m->layers[l].k_scale > 0 ? m->layers[l].k_scale : 1.0f;
            tp->kv_scale[2 * l + 1] = m->layers[l].v_scale > 0 ? m->layers[l].v_scale : 1.0f;
            for (int kv = 0; kv < 2; kv++)
                for (int code = 0; code < 256; code++)
                    tp->kv_lut[(2 * l + kv) * 256 + code] = kiln_e4m3_to_f32((uint8_t)code) * tp->kv_scale[2 * l + kv];
        }
    }
    tp->q = tp_alloc(T * p->n_q_heads * hd, &sb);
    tp->att = tp_alloc(T * p->n_q_heads * hd, &sb);
    tp->k = tp_alloc(T * p->n_kv_heads * hd, &sb);
    tp->v = tp_alloc(T * p->n_kv_heads * hd, &sb);
    tp->gate = tp_alloc(T * p->n_ffn, &sb);
    tp->up = tp_alloc(T * p->n_ffn, &sb);
    tp->part = tp_alloc(T * mc->dim, &sb);
    tp->red = tp_alloc(T * mc->dim, &sb);
    tp->lg = tp_alloc((logits_rows ? logits_rows : 1) * (size_t)p->n_vocab, &sb); /* rank 0's is the longest */
    tp->scratch_bytes += sb;
    if (!tp->q || !tp->att || !tp->k || !tp->v || !tp->gate || !tp->up || !tp->part || !tp->red || !tp->lg) {
        rc = KILN_ERR(err, KILN_ERR_OOM, "cpu backend: cannot allocate the tensor-parallel scratch (%.1f MiB)", sb / 1048576.0);
        goto fail;
    }
    *out = tp;
    return KILN_OK;
fail:
    kiln_cpu_tp_destroy(tp);
    return rc;
}

/* This step's K and V rows of rank r (KVr heads) into its pool at their slots. */
static void tp_kv_write(kiln_cpu_tp *tp, int r, const kiln_step *s, int layer) {
    const kiln_kv_layout *L = &tp->layout[r];
    int hd = L->head_dim, nkv = L->n_kv_heads;
    for (int t = 0; t < s->n_tokens; t++) {
        int64_t blk = s->slot_mapping[t] / L->block_size;
        int off = (int)(s->slot_mapping[t] % L->block_size);
        for (int h = 0; h < nkv; h++) {
            const float *kr = tp->k + ((size_t)t * nkv + h) * hd, *vr = tp->v + ((size_t)t * nkv + h) * hd;
            if (tp->kv8[r]) { /* E4M3 of real / scale, as cpu_backend.c's kv_write */
                uint8_t *kd = tp->kv8[r] + kiln_kv_offset(L, layer, blk, 0, h, off);
                uint8_t *vd = tp->kv8[r] + kiln_kv_offset(L, layer, blk, 1, h, off);
                const float ks = tp->kv_scale[2 * layer], vs = tp->kv_scale[2 * layer + 1];
                for (int d = 0; d < hd; d++) {
                    kd[d] = kiln_f32_to_e4m3(kr[d] / ks);
                    vd[d] = kiln_f32_to_e4m3(vr[d] / vs);
                }
                continue;
            }
            memcpy(tp->kv[r] + kiln_kv_offset(L, layer, blk, 0, h, off), kr, hd * sizeof(float));
            memcpy(tp->kv[r] + kiln_kv_offset(L, layer, blk, 1, h, off), vr, hd * sizeof(float));
        }
    }
}

/* red = sum over ranks of part, in rank order (rank 0 copies: 0 + p_0 == p_0 exactly) */
static void tp_reduce(kiln_cpu_ctx *ctx, float *red, const float *part, int r, int64_t n) {
    if (r == 0) memcpy(red, part, (size_t)n * sizeof(float));
    else kiln_cpu_add(ctx, red, part, n);
}

int kiln_cpu_tp_forward(kiln_cpu_tp *tp, kiln_cpu_ctx *ctx, const kiln_attn_kernels *ak, float *scores, int q_block,
                        const kiln_step *s, float *x, float *xn, const double *cs, const double *sn, float *logits,
                        int *n_logits, kiln_error *err) {
    const kiln_model *m = tp->m;
    const kiln_config *mc = &m->cfg;
    const int T = s->n_tokens, D = mc->dim, hd = mc->head_dim;
    int rc;
    for (int l = 0; l < mc->n_layers; l++) {
        const kiln_layer_weights *w0 = &m->layers[l];
        kiln_cpu_rmsnorm(ctx, xn, x, w0->attn_norm, T, D, mc->norm_eps);
        for (int r = 0; r < tp->n; r++) {
            const kiln_layer_weights *w = &tp->shard[r]->layers[l];
            const kiln_tp_rank *p = &tp->shard[r]->part;
            float *const qkv[3] = {tp->q, tp->k, tp->v};
            const kiln_tensor *const wqkv[3] = {w->wq, w->wk, w->wv};
            if ((rc = kiln_cpu_matmul_multi(ctx, 3, qkv, xn, T, wqkv, err))) return rc;
            if (w->bq) {
                kiln_cpu_add_bias(tp->q, w->bq, T, p->n_q_heads * hd);
                kiln_cpu_add_bias(tp->k, w->bk, T, p->n_kv_heads * hd);
                kiln_cpu_add_bias(tp->v, w->bv, T, p->n_kv_heads * hd);
            }
            if (w->q_norm) {
                kiln_cpu_rmsnorm(ctx, tp->q, tp->q, w->q_norm, T * p->n_q_heads, hd, mc->norm_eps);
                kiln_cpu_rmsnorm(ctx, tp->k, tp->k, w->k_norm, T * p->n_kv_heads, hd, mc->norm_eps);
            }
            kiln_cpu_rope_apply(ctx, tp->q, cs, sn, T, p->n_q_heads, hd, mc->rope_style);
            kiln_cpu_rope_apply(ctx, tp->k, cs, sn, T, p->n_kv_heads, hd, mc->rope_style);
            tp_kv_write(tp, r, s, l);
            kiln_cpu_attn_args aa = {
                .kv = tp->kv[r], .layout = &tp->layout[r], .layer = l,
                .kv8 = tp->kv8[r], .kvbuf = tp->kvbuf, .kv8_lut = tp->kv8[r] ? tp->kv_lut + (size_t)2 * l * 256 : NULL,
                .n_tokens = T, .n_seqs = s->n_seqs, .positions = s->positions, .seq_q_start = s->seq_q_start,
                .block_table = s->block_table, .max_blocks_per_seq = s->max_blocks_per_seq,
                .q = tp->q, .att = tp->att, .n_heads = p->n_q_heads, .n_kv_heads = p->n_kv_heads, .head_dim = hd,
                .scores = scores, .max_model_len = tp->max_model_len, .k = *ak,
                .prefetch = T <= 16, .window = w->window, .q_block = q_block,
            };
            if ((rc = kiln_cpu_attention(ctx, &aa, err))) return rc;
            if ((rc = kiln_cpu_matmul(ctx, tp->part, tp->att, T, w->wo, err))) return rc;
            tp_reduce(ctx, tp->red, tp->part, r, (int64_t)T * D);
        }
        kiln_cpu_add(ctx, x, tp->red, (int64_t)T * D);
        kiln_cpu_rmsnorm(ctx, xn, x, w0->ffn_norm, T, D, mc->norm_eps);
        for (int r = 0; r < tp->n; r++) {
            const kiln_layer_weights *w = &tp->shard[r]->layers[l];
            if ((rc = kiln_cpu_matmul_swiglu(ctx, tp->gate, tp->up, xn, T, w->w_gate, w->w_up, err))) return rc;
            if ((rc = kiln_cpu_matmul(ctx, tp->part, tp->gate, T, w->w_down, err))) return rc;
            tp_reduce(ctx, tp->red, tp->part, r, (int64_t)T * D);
        }
        kiln_cpu_add(ctx, x, tp->red, (int64_t)T * D);
    }
    int n = 0;
    for (int i = 0; i < s->n_seqs; i++)
        for (int row = s->seq_q_start[i + 1] - s->seq_logits[i]; row < s->seq_q_start[i + 1]; row++, n++)
            kiln_cpu_rmsnorm(ctx, xn + (size_t)n * D, x + (size_t)row * D, m->out_norm, 1, D, mc->norm_eps);
    *n_logits = n;
    if (n == 0) return KILN_OK;
    const int V = mc->vocab_size;
    for (int r = 0; r < tp->n; r++) {
        const kiln_tp_rank *p = &tp->shard[r]->part;
        if ((rc = kiln_cpu_matmul(ctx, tp->lg, xn, n, &tp->shard[r]->lm_head, err))) return rc;
        for (int i = 0; i < n; i++)
            memcpy(logits + (size_t)i * V + p->vocab0, tp->lg + (size_t)i * p->n_vocab, (size_t)p->n_vocab * sizeof(float));
    }
    return KILN_OK;
}
