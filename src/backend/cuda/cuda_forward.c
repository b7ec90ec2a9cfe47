/* cuda_forward.c: the device work of one step, in stream order (cuda_backend.c's top comment
 * has the whole step with shapes): the descriptor copy, per layer the pieces before and after
 * attention and attention itself, then the final norm, the LM head and device sampling or the
 * logits copy. kiln_cuda_enqueue issues it; the decode graphs are captured from it and the
 * piecewise graphs from kiln_cuda_enq_piece (cuda_graphs.c). Every projection goes through
 * kiln_cuda_linear (cuda_linear.c). Nothing here waits, except after each op in debug mode. */
#include "backend/cuda/cuda_backend_internal.h"

static int poison(cuda_backend *c, void *p, size_t bytes, kiln_error *err) {
    LAUNCH(kiln_cuda_fill_u32((uint32_t *)p, 0xffffffffu, (int64_t)(bytes / 4), c->st));
    return KILN_OK;
}

/* Device sampling, device side: one H2D copy of the packed descriptor, the penalty-table loads,
 * the draw, one D2H copy of the results (tokens, logprobs, top-n), read after the step's wait. */
static int launch_sampling(cuda_backend *c, const step_plan *p, kiln_error *err) {
    int V = c->m->cfg.vocab_size;
    size_t LR = (size_t)c->max_lrows;
    KILN_CUDA_TRY(err, cudaMemcpyAsync(c->sdesc_d, c->sdesc_h, p->sd_bytes, cudaMemcpyHostToDevice, c->st));
    unsigned char *d = c->sdesc_d;
    if (p->n_pen)
        LAUNCH(kiln_cuda_penalty_load(c->pen_counts, c->pen_prompt, V, (const int32_t *)(d + p->sd_pslot),
                                      (const int32_t *)(d + p->sd_pstart), (const int32_t *)(d + p->sd_pnp),
                                      (const int32_t *)(d + p->sd_ptok), p->n_pen, c->st));
    int32_t *o_tok = (int32_t *)c->sout_d;
    float *o_lp = (float *)(c->sout_d + LR * 4);
    int32_t *o_tid = (int32_t *)(c->sout_d + LR * 8);
    float *o_tlp = (float *)(c->sout_d + LR * 8 + LR * KILN_STEP_MAX_TOP * 4);
    LAUNCH(kiln_cuda_sample(c->logits_d, c->samp_work, p->n, V, (const kiln_cuda_sample_row *)(d + p->sd_rows),
                            (const int32_t *)(d + p->sd_bias), (const float *)(d + p->sd_bvals),
                            (const int32_t *)(d + p->sd_supp), c->mask_d, c->mask_words, c->pen_counts, c->pen_prompt,
                            o_tok, o_lp, o_tid, o_tlp, c->st));
    KILN_CUDA_TRY(err, cudaMemcpyAsync(c->sout_h, c->sout_d, c->sout_bytes, cudaMemcpyDeviceToHost, c->st));
    return KILN_OK;
}

/* Windows per row: kiln_cuda_wave_splits of rows x KV heads on blocks_per_sm x SMs resident
 * CTAs, within max_splits and what the attention scratch ([max_tokens][H][att_splits] windows)
 * holds for this many rows. tail 0: past one wave, one window (the CUDA-core split kernel, whose
 * windows are not sized for it: the last-wave rule was measured on the tensor-core decode only). */
static int wave_splits(const cuda_backend *c, int blocks_per_sm, int rows, int max_splits, int tail) {
    int cap = (int)((int64_t)c->att_splits * c->cfg.max_tokens / rows);
    if (cap > max_splits) cap = max_splits;
    int64_t n = (int64_t)rows * c->m->cfg.n_kv_heads, C = (int64_t)blocks_per_sm * c->n_sm;
    if (!tail && n > C) return 1;
    return kiln_cuda_wave_splits(n, C, cap);
}

/* Windows per row for T decode rows on tensor cores: one wave of resident CTAs
 * (T x KV x splits ~ CTAs per SM x SMs), within the attention scratch ([max_tokens][H][16]
 * windows) and the combine's 64; 0 when the split is off. H100, Devstral, batch 16 at ~550
 * context: 3 windows (384 CTAs) instead of 128 CTAs streaming whole contexts. */
int kiln_cuda_tc_split_count(const cuda_backend *c, int T) {
    return c->tc_blocks_per_sm && T >= 1 ? wave_splits(c, c->tc_blocks_per_sm, T, 64, 1) : 0;
}

/* The smallest window of those T rows' split: one key tile, except where T x KV CTAs already
 * exceed a wave and the windows only even out its last one (kiln_cuda_wave_splits): there a
 * short context keeps fewer windows (each costs a CTA's set-up and a partial state to combine;
 * at 512 positions 2-6 windows a row were no faster at batch 64-128, H200, eighth session). */
static int tc_min_window(const cuda_backend *c, int T) {
    return (int64_t)T * c->m->cfg.n_kv_heads > (int64_t)c->tc_blocks_per_sm * c->n_sm ? TC_TAIL_MIN_WINDOW
                                                                                     : TC_MIN_WINDOW;
}

/* The device work of a step in pieces (the piecewise graphs replay all but attention):
 *   enq_head: the embedding rows;  per layer l: enq_pre(l) = add + RMSNorm, QKV GEMM, RoPE and the
 *   K/V write;  enq_att(l) = attention;  enq_post(l) = O GEMM, add + RMSNorm, gate|up GEMM,
 *   SwiGLU, down GEMM;  enq_tail: final norm of the logits rows, LM head, sampling or the copy. */
static step_ptrs desc_ptrs(const cuda_backend *c) {
    step_ptrs d;
    d.tok = (const int32_t *)(c->desc_d + c->off_tok);
    d.pos = (const int32_t *)(c->desc_d + c->off_pos);
    d.rowseq = (const int32_t *)(c->desc_d + c->off_rowseq);
    d.lrows = (const int32_t *)(c->desc_d + c->off_lrows);
    d.slot = (const int64_t *)(c->desc_d + c->off_slot);
    d.bt = (const int32_t *)(c->desc_d + c->off_bt);
    d.tiles = (const int32_t *)(c->desc_d + c->off_tiles);
    d.prev = (const int32_t *)(c->desc_d + c->off_prev);
    return d;
}

static int enq_head(cuda_backend *c, const step_plan *p, kiln_error *err) {
    const kiln_config *mc = &c->m->cfg;
    int T = p->T, D = mc->dim, H = mc->n_heads, KV = mc->n_kv_heads, hd = mc->head_dim, F = mc->hidden_dim, rc;
    int qkvw = (H + 2 * KV) * hd;
    if (c->debug) { /* unwritten reads show up as NaN */
        size_t a = dt_size(c->adt);
        if ((rc = poison(c, c->x, (size_t)T * D * 4, err)) || (rc = poison(c, c->xn, (size_t)T * D * a, err)) ||
            (rc = poison(c, c->qkv, (size_t)T * qkvw * 4, err)) ||
            (rc = poison(c, c->att, (size_t)T * H * hd * a, err)) || (rc = poison(c, c->proj, (size_t)T * D * 4, err)) ||
            (rc = poison(c, c->gu, (size_t)T * 2 * F * 4, err)) || (rc = poison(c, c->act, (size_t)T * F * a, err)))
            return rc;
    }
    /* rows with prev_row >= 0 take the token the previous step drew (still in sout_d) */
    step_ptrs d = desc_ptrs(c);
    LAUNCH(kiln_cuda_embed(c->x, c->emb, c->edt, d.tok, d.prev, (const int32_t *)c->sout_d, T, D, c->st));
    /* RoPE's cos / sin of the step's positions once for every layer (enq_pre) */
    LAUNCH(kiln_cuda_rope_cs(c->rope_cs, d.pos, T, hd, mc->rope_theta, c->rope_inv, c->rope_inv ? c->rope_mscale : 1.0,
                             c->st));
    return KILN_OK;
}

/* layer l's KV pool as the kernels take it: bf16, or FP8 codes with the layer's scales (0 in the
 * checkpoint: 1.0) */
static kiln_cuda_kv layer_kv(const cuda_backend *c, int l) {
    int64_t off = kiln_kv_offset(&c->cfg.kv, l, 0, 0, 0, 0);
    kiln_cuda_kv kv = {(unsigned char *)c->kv + off * c->cfg.kv.elem_bytes, c->cfg.kv.dtype == KILN_KV_FP8_E4M3, 1.0f,
                       1.0f, c->m->layers[l].window};
    if (kv.f8) {
        const kiln_layer_weights *w = &c->m->layers[l];
        if (w->k_scale > 0.0f) kv.k_scale = w->k_scale;
        if (w->v_scale > 0.0f) kv.v_scale = w->v_scale;
    }
    return kv;
}

/* The residual add and RMSNorm into xn, the next projection's input (qkv, gate|up); with
 * fp8_fuse also xn's W8A8 codes (cuda_linear.c's fp8_linear then skips its quantization pass);
 * with q8_fuse, when next (the matrix that takes xn, may be NULL) runs on the int8 GEMV at T
 * rows, xn's int8 blocks (qlinear then skips kiln_cuda_quantize_x). Set here, taken by the
 * linear right after in the same enq_pre / enq_post, so the same graph piece.
 * ds (fp8_fuse only, may be NULL): delta's scales still to apply (kiln_cuda_linear_ex). */
static cudaError_t add_rmsnorm_xn(cuda_backend *c, const float *delta, const kiln_cuda_yscale *ds, const float *w,
                                  const cuda_mat *next, int T, int D, float eps) {
    if (c->fp8_fuse) {
        c->xq8_src = c->xn;
        return kiln_cuda_add_rmsnorm_q8(c->x, delta, NULL, 1, w, c->xn, T, D, eps, c->xq8, c->sa8, 0, 0.0f,
                                        ds ? ds->sa : NULL, ds ? ds->sw : NULL, c->pdl, c->st);
    }
    if (c->q8_fuse && next && D % 32 == 0 && kiln_cuda_linear_q8_input(c, next, T)) {
        c->xq_src = c->xn;
        return kiln_cuda_add_rmsnorm_i8(c->x, delta, NULL, 1, w, c->xn, c->adt, T, D, eps, c->xq, c->xq_d, c->xq_s,
                                        c->pdl, c->st);
    }
    c->xq_src = NULL;
    return kiln_cuda_add_rmsnorm(c->x, delta, NULL, 1, w, c->xn, c->adt, T, D, eps, c->pdl, c->st);
}

/* Whether layer l's down projection leaves its FP8 sums unscaled for the next layer's RMSNorm:
 * with fp8_fuse, a dense layer that is not the last (the final norm, kiln_cuda_add_rmsnorm with
 * gathered rows, takes no scales), when its linear defers. A pure function of (l, T): enq_post
 * (the producer) and enq_pre (the consumer, possibly in another graph piece) agree without host
 * state. The scales: sa8 (down's input codes' scales, which that RMSNorm reads before it writes
 * its own rows' there) and the matrix's sw. */
static int down_defers(const cuda_backend *c, int l, int T) {
    return c->fp8_fuse && l + 1 < c->m->cfg.n_layers && c->m->cfg.n_experts == 0 &&
           kiln_cuda_linear_defers(c, &c->layers[l].d, T);
}

static int enq_pre(cuda_backend *c, const step_plan *p, int l, kiln_error *err) {
    const kiln_config *mc = &c->m->cfg;
    int T = p->T, D = mc->dim, H = mc->n_heads, KV = mc->n_kv_heads, hd = mc->head_dim, bs = c->cfg.kv.block_size;
    step_ptrs d = desc_ptrs(c);
    kiln_cuda_kv kv = layer_kv(c, l);
    const float *an = c->norms + (size_t)(2 * l) * D;
    /* the previous layer's down sums, unscaled when down_defers (enq_post) */
    kiln_cuda_yscale ds = {NULL, NULL};
    if (l > 0 && down_defers(c, l - 1, T)) ds = (kiln_cuda_yscale){c->sa8, c->layers[l - 1].d.sw};
    /* L2 prefetch branches (decode graphs, kiln_cuda_l2pf): each product's weights while the
     * latency-bound kernels before it run: qkv's beside the RMSNorm, o's beside RoPE + attention */
    int rc = kiln_cuda_l2pf(c, &c->layers[l].qkv, err);
    if (rc) return rc;
    LAUNCH(add_rmsnorm_xn(c, l ? c->proj : NULL, &ds, an, &c->layers[l].qkv, T, D, mc->norm_eps));
    /* with fp8_fuse and no bias / q-k norm in between, RoPE scales cuBLASLt FP8's qkv sums */
    int qs = c->fp8_fuse && !c->qkv_bias && !c->qk_norms;
    kiln_cuda_yscale ys = {NULL, NULL};
    rc = kiln_cuda_linear_ex(c, &c->g_qkv, c->qkv, c->xn, &c->layers[l].qkv, T, qs ? &ys : NULL, err);
    if (rc) return rc;
    if ((rc = kiln_cuda_l2pf(c, &c->layers[l].o, err))) return rc;
    /* Qwen2 biases / Qwen3 per-head norms, in place before RoPE (NULLs: nothing launched) */
    LAUNCH(kiln_cuda_qk_prep(c->qkv, c->qkv_bias ? c->qkv_bias + (size_t)l * (H + 2 * KV) * hd : NULL,
                             c->qk_norms ? c->qk_norms + (size_t)l * 2 * hd : NULL,
                             c->qk_norms ? c->qk_norms + (size_t)l * 2 * hd + hd : NULL, T, H, KV, hd, mc->norm_eps,
                             c->pdl, c->st));
    LAUNCH(kiln_cuda_rope_kv_cs(c->qkv, d.pos, d.slot, &kv, T, H, KV, hd, bs, c->rope_cs,
                                mc->rope_style == KILN_ROPE_INTERLEAVED, ys.sa, ys.sw, c->pdl, c->st));
    return KILN_OK;
}

/* Whether the attention stage of layer l leaves att's int8 GEMV blocks in xq / xq_d / xq_s for
 * the o projection (q8_fuse, when o runs on the int8 GEMV at T rows and a warp of the combine is
 * one block: hd % 32 == 0). A pure function of (l, T): enq_att (the producer, eager between the
 * piecewise graphs) guarantees it for every row, whatever the step's attention plan, and enq_post
 * (the consumer, in a graph piece captured without that plan) then skips kiln_cuda_quantize_x.
 * Both ask at the rows o runs: a piecewise replay pads the step to its bucket (step_plan T_lin),
 * and attention writes the real rows' blocks (the pad rows' stay stale, as their att rows do, and
 * o's outputs for them are discarded). */
static int o_takes_att_q8(const cuda_backend *c, int l, int T) {
    return c->q8_fuse && c->m->cfg.head_dim % 32 == 0 && kiln_cuda_linear_q8_input(c, &c->layers[l].o, T);
}

static int enq_att(cuda_backend *c, const step_plan *p, int l, kiln_error *err) {
    const kiln_config *mc = &c->m->cfg;
    int T = p->T, bt_w = p->bt_w, H = mc->n_heads, KV = mc->n_kv_heads, hd = mc->head_dim, bs = c->cfg.kv.block_size;
    int qkvw = (H + 2 * KV) * hd;
    size_t asz = dt_size(c->adt);
    step_ptrs d = desc_ptrs(c);
    kiln_cuda_kv kv = layer_kv(c, l);
    const kiln_cuda_kv *pool = &kv;
    /* o's int8 blocks (o_takes_att_q8): from every combine launch (rows a.. of a run: the blocks
     * at row a), or, where the prefill tiles (which write att directly) cover rows, one
     * kiln_cuda_quantize_x over all of att after the attention kernels */
    int q8 = o_takes_att_q8(c, l, p->T_lin > 0 ? p->T_lin : T), tiles = p->tc_splits <= 0 && p->n_tiles > 0;
    int64_t K = (int64_t)H * hd;
    kiln_cuda_q8_blocks qb = {c->xq, c->xq_d, c->xq_s};
    const kiln_cuda_q8_blocks *q8c = q8 && !tiles ? &qb : NULL;
    if (p->tc_splits > 0)
        LAUNCH(kiln_cuda_attention_decode_tc_ex(c->att, c->adt, c->qkv, qkvw, pool, d.pos, d.rowseq, d.bt, bt_w, T, H, KV,
                                             hd, bs, tc_min_window(c, T), p->tc_splits, c->att_scratch, q8c, c->pdl,
                                             c->st));
    else if (p->n_tiles > 0)
        LAUNCH(kiln_cuda_attention_prefill_ex(c->att, c->adt, c->qkv, qkvw, pool, d.pos, d.rowseq, d.bt, bt_w, H, KV, hd,
                                           bs, d.tiles, p->n_tiles, c->pdl, c->st));
    for (int k = 0; k < p->n_runs; k++) {
        int a = c->run_a[k], rows = c->run_b[k] - a;
        kiln_cuda_q8_blocks qa = {c->xq + a * K, c->xq_d + a * K / 32, c->xq_s + a * K / 16};
        const kiln_cuda_q8_blocks *q8a = q8c ? &qa : NULL;
        /* the rows of a mixed step outside the prefill tiles (decodes, short chunks): each row is
         * one query position, so attention_decode_kernel serves them, split over the context */
        int ts = c->pf_tile_rows > 0 && rows >= c->decode_tc_rows ? kiln_cuda_tc_split_count(c, rows) : 0;
        if (ts > 0) {
            LAUNCH(kiln_cuda_attention_decode_tc_ex((unsigned char *)c->att + (size_t)a * H * hd * asz, c->adt,
                                                 c->qkv + (size_t)a * qkvw, qkvw, pool, d.pos + a, d.rowseq + a, d.bt,
                                                 bt_w, rows, H, KV, hd, bs, tc_min_window(c, rows), ts, c->att_scratch, q8a,
                                                 c->pdl, c->st));
            continue;
        }
        /* windows per row: up to att_splits (16) so one decode fills the chip; a wider batch
         * needs fewer (one wave of resident blocks), which also makes the combine cheaper.
         * Batch-invariant mode keeps 16 so a row's windows never depend on the batch. */
        /* (up to 32 windows while the scratch holds them) */
        int splits = c->cfg.batch_invariant ? c->att_splits
                                            : wave_splits(c, c->att_blocks_per_sm, rows, 2 * c->att_splits, 0);
        LAUNCH(kiln_cuda_attention_ex((unsigned char *)c->att + (size_t)a * H * hd * asz, c->adt,
                                   c->qkv + (size_t)a * qkvw, qkvw, pool, d.pos + a, d.rowseq + a, d.bt, bt_w,
                                   rows, H, KV, hd, bs, c->att_split_w, splits, c->att_scratch, q8a, c->pdl,
                                   c->st));
    }
    if (q8 && tiles) LAUNCH(kiln_cuda_quantize_x(c->xq, c->xq_d, c->xq_s, c->att, c->adt, T, (int)K, c->st));
    return KILN_OK;
}

static int enq_post(cuda_backend *c, const step_plan *p, int l, kiln_error *err) {
    const kiln_config *mc = &c->m->cfg;
    int T = p->T, D = mc->dim;
    const cuda_layer *w = &c->layers[l];
    const float *fn = c->norms + (size_t)(2 * l + 1) * D;
    /* with fp8_fuse, FP8 sums from cuBLASLt are scaled by the RMSNorm that adds them; att's int8
     * blocks are already in xq when o_takes_att_q8 (enq_att wrote them) */
    kiln_cuda_yscale ys;
    c->xq_src = o_takes_att_q8(c, l, T) ? c->att : NULL;
    int rc = kiln_cuda_linear_ex(c, &c->g_o, c->proj, c->att, &w->o, T, c->fp8_fuse ? &ys : NULL, err);
    if (rc) return rc;
    if (mc->n_experts == 0 && (rc = kiln_cuda_l2pf(c, &w->gu, err))) return rc; /* beside the RMSNorm */
    LAUNCH(add_rmsnorm_xn(c, c->proj, c->fp8_fuse ? &ys : NULL, fn, mc->n_experts > 0 ? NULL : &w->gu, T, D,
                          mc->norm_eps));
    if (mc->n_experts > 0) return kiln_cuda_moe_enqueue(c, T, l, err); /* routed experts (cuda_moe.c) */
    if ((rc = kiln_cuda_linear_swiglu(c, &c->g_gu, c->act, c->gu, c->xn, &w->gu, &w->d, T, err))) return rc;
    kiln_cuda_yscale dys;
    return kiln_cuda_linear_ex(c, &c->g_d, c->proj, c->act, &w->d, T, down_defers(c, l, T) ? &dys : NULL, err);
}

static int enq_tail(cuda_backend *c, const step_plan *p, kiln_error *err) {
    const kiln_config *mc = &c->m->cfg;
    int n = p->n, D = mc->dim, rc;
    if (n <= 0) return KILN_OK;
    const float *on = c->norms + (size_t)(2 * mc->n_layers) * D;
    if ((rc = kiln_cuda_l2pf(c, &c->lm, err))) return rc; /* beside the final norm */
    /* with q8_fuse, when the LM head runs on the int8 GEMV at n rows, the final norm also writes
     * xf's blocks (row r of the gathered rows at row r; qlinear reads x as adt, so hdt must be it) */
    if (c->q8_fuse && D % 32 == 0 && c->hdt == c->adt && kiln_cuda_linear_q8_input(c, &c->lm, n)) {
        LAUNCH(kiln_cuda_add_rmsnorm_i8(c->x, c->proj, desc_ptrs(c).lrows, 0, on, c->xf, c->hdt, n, D, mc->norm_eps,
                                        c->xq, c->xq_d, c->xq_s, c->pdl, c->st));
        c->xq_src = c->xf;
    } else {
        LAUNCH(kiln_cuda_add_rmsnorm(c->x, c->proj, desc_ptrs(c).lrows, 0, on, c->xf, c->hdt, n, D, mc->norm_eps, c->pdl,
                                     c->st));
        c->xq_src = NULL;
    }
    if ((rc = kiln_cuda_linear(c, &c->g_lm, c->logits_d, c->xf, &c->lm, n, err))) return rc;
    if (p->sample) {
        if ((rc = launch_sampling(c, p, err))) return rc;
    } else {
        KILN_CUDA_TRY(err, cudaMemcpyAsync(c->logits_h, c->logits_d, (size_t)n * mc->vocab_size * sizeof(float),
                                           cudaMemcpyDeviceToHost, c->st));
    }
    return KILN_OK;
}

/* Piece k of the piecewise graphs (0..L): 0 = head + pre(0); k = post(k - 1) + pre(k); L = post(L - 1). */
int kiln_cuda_enq_piece(cuda_backend *c, const step_plan *p, int k, kiln_error *err) {
    int L = c->m->cfg.n_layers, rc;
    if (k == 0 && (rc = enq_head(c, p, err))) return rc;
    if (k > 0 && (rc = enq_post(c, p, k - 1, err))) return rc;
    if (k < L && (rc = enq_pre(c, p, k, err))) return rc;
    return KILN_OK;
}

/* Everything the GPU does in a step, in stream order: the descriptor copy, the layers, the
 * final norm and LM head over the logits rows, then sampling or the logits copy. pieces: the
 * (T-bucket's) piecewise graphs [L + 1] replace everything but attention and the tail. */
int kiln_cuda_enqueue(cuda_backend *c, const step_plan *p, const cudaGraphExec_t *pieces, kiln_error *err) {
    int L = c->m->cfg.n_layers, rc;
    c->l2pf_forked = 0;
    KILN_CUDA_TRY(err, cudaMemcpyAsync(c->desc_d, c->desc_h, p->desc_bytes, cudaMemcpyHostToDevice, c->st));
    for (int k = 0; k <= L; k++) {
        if (pieces) KILN_CUDA_TRY(err, cudaGraphLaunch(pieces[k], c->st));
        else if ((rc = kiln_cuda_enq_piece(c, p, k, err))) return rc;
        if (k < L && (rc = enq_att(c, p, k, err))) return rc;
    }
    if ((rc = enq_tail(c, p, err))) return rc;
    if (c->l2pf_forked) { /* the prefetch branch joins the step's end (its kernels ended long before) */
        KILN_CUDA_TRY(err, cudaEventRecord(c->ev_pf[1], c->st_pf));
        KILN_CUDA_TRY(err, cudaStreamWaitEvent(c->st, c->ev_pf[1], 0));
        c->l2pf_forked = 0;
    }
    return KILN_OK;
}
