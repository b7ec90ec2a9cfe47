/* cuda_plan.c: encode_step on the host. The step descriptor (ids, positions, slots, row ->
 * sequence, logits rows, prefill tiles, previous-step rows, the block table packed to the step's
 * widest row) and the sampling descriptor are packed into the pinned buffers of the step's
 * parity; the step_plan fixes the device work. A decode step is padded to its graph bucket and
 * replays the decode graph; other steps are enqueued kernel by kernel (cuda_forward.c) or
 * through the piecewise graphs of their row bucket (cuda_graphs.c). */
#include "backend/cuda/cuda_backend_internal.h"

/* Offsets of the packed sampling descriptor for n rows and the given list lengths. */
void kiln_cuda_sampling_layout(step_plan *p, int n, int n_bias, int n_supp, int n_pen, int n_pen_tok) {
    size_t off = 0;
#define SD_PLACE(field, bytes)                                                                         \
    p->field = off;                                                                                    \
    off += ((size_t)(bytes) + 15) / 16 * 16;
    SD_PLACE(sd_rows, (size_t)n * sizeof(kiln_cuda_sample_row))
    SD_PLACE(sd_bias, (size_t)n_bias * 4)
    SD_PLACE(sd_bvals, (size_t)n_bias * 4)
    SD_PLACE(sd_supp, (size_t)n_supp * 4)
    SD_PLACE(sd_pslot, (size_t)n_pen * 4)
    SD_PLACE(sd_pstart, (size_t)(n_pen + 1) * 4)
    SD_PLACE(sd_pnp, (size_t)n_pen * 4)
    SD_PLACE(sd_ptok, (size_t)n_pen_tok * 4)
#undef SD_PLACE
    p->sd_bytes = off;
    p->n_pen = n_pen;
}

/* Device sampling, host side: pack the n logits rows' parameters, bias and suppression lists and
 * the penalty-table loads into the pinned sampling descriptor (cuda_forward.c's launch_sampling copies it). */
static int pack_sampling(cuda_backend *c, const kiln_step *s, int n, step_plan *p, kiln_error *err) {
    int n_bias = 0, n_supp = 0;
    for (int i = 0; i < s->n_seqs; i++)
        if (s->seq_logits[i]) {
            n_bias += s->sampling[i].n_bias;
            n_supp += s->sampling[i].n_supp;
        }
    int n_pen = s->n_pen, n_pen_tok = n_pen ? s->pen_start[n_pen] : 0;
    kiln_cuda_sampling_layout(p, n, n_bias, n_supp, n_pen, n_pen_tok);
    if (p->sd_bytes > c->sdesc_bytes)
        return KILN_ERR(err, KILN_ERR_RANGE, "step: sampling descriptor of %zu bytes beyond its %zu", p->sd_bytes,
                        c->sdesc_bytes);
    unsigned char *h = c->sdesc_h;
    kiln_cuda_sample_row *rows = (kiln_cuda_sample_row *)(h + p->sd_rows);
    int32_t *bias_ids = (int32_t *)(h + p->sd_bias), *supp = (int32_t *)(h + p->sd_supp);
    float *bias_vals = (float *)(h + p->sd_bvals);
    int32_t *pslot = (int32_t *)(h + p->sd_pslot), *pstart = (int32_t *)(h + p->sd_pstart);
    int32_t *pnp = (int32_t *)(h + p->sd_pnp), *ptok = (int32_t *)(h + p->sd_ptok);
    int j = 0, nb = 0, ns = 0;
    /* a sequence's seq_logits rows: one, or the k + 1 rows of a speculative verification, which
     * share its bias and suppression lists; row q draws output position rng_offset + q (no
     * penalty table then: kiln_step_check) */
    for (int i = 0; i < s->n_seqs; i++) {
        if (!s->seq_logits[i] || s->seq_q_start[i + 1] <= s->seq_q_start[i]) continue;
        const kiln_step_sampling *ss = &s->sampling[i]; /* ranges: kiln_backend_check_step */
        kiln_cuda_sample_row *r = &rows[j++];
        memset(r, 0, sizeof *r);
        r->temperature = ss->temperature;
        r->top_p = ss->top_p;
        r->min_p = ss->min_p;
        r->repetition_penalty = ss->repetition_penalty;
        r->presence_penalty = ss->presence_penalty;
        r->frequency_penalty = ss->frequency_penalty;
        r->top_k = ss->top_k;
        r->n_top = ss->n_logprobs;
        r->want_logprob = ss->want_logprob;
        r->slot = ss->pen_slot;
        r->bias_start = nb;
        r->n_bias = ss->n_bias;
        memcpy(bias_ids + nb, s->bias_ids + ss->bias_start, (size_t)ss->n_bias * 4);
        memcpy(bias_vals + nb, s->bias_values + ss->bias_start, (size_t)ss->n_bias * 4);
        nb += ss->n_bias;
        r->mask = ss->mask; /* 1 + its row of mask_d (one logits row then: kiln_step_check) */
        r->supp_start = ns;
        r->n_supp = ss->n_supp;
        memcpy(supp + ns, s->supp_ids + ss->supp_start, (size_t)ss->n_supp * 4);
        ns += ss->n_supp;
        r->seed = ss->seed;
        r->position = ss->rng_offset;
        for (int q = 1; q < s->seq_logits[i]; q++) {
            rows[j] = *r;
            rows[j++].position = ss->rng_offset + (uint64_t)q;
        }
    }
    for (int k = 0; k < n_pen; k++) {
        pslot[k] = s->pen_slot[k];
        pnp[k] = s->pen_n_prompt[k];
    }
    if (n_pen) {
        memcpy(pstart, s->pen_start, (size_t)(n_pen + 1) * 4);
        memcpy(ptok, s->pen_tokens, (size_t)n_pen_tok * 4);
    }
    return KILN_OK;
}

/* Encode into the pinned buffers of parity par (desc_h, sdesc_h, sout_h): the other parity's
 * may still be in use by the step in flight. */
void kiln_cuda_use_parity(cuda_backend *c, int par) {
    c->desc_h = c->desc_hb[par];
    c->sdesc_h = c->sdesc_hb[par];
    c->sout_h = c->sout_hb[par];
}

/* Rows [T, Tb) that pad a step to its graph bucket: token 0 at position 0 (not from the previous
 * step), K/V written to slot 0 of the null block. */
static void pad_rows(cuda_backend *c, int T, int Tb) {
    int32_t *tok = (int32_t *)(c->desc_h + c->off_tok), *pos = (int32_t *)(c->desc_h + c->off_pos);
    int32_t *prev = (int32_t *)(c->desc_h + c->off_prev);
    int64_t *slot = (int64_t *)(c->desc_h + c->off_slot);
    for (int t = T; t < Tb; t++) {
        tok[t] = 0;
        pos[t] = 0;
        slot[t] = 0;
        prev[t] = -1;
    }
}

static int decode_graph_step(const kiln_step *s) {
    if (!s->device_sample || s->n_pen || s->n_tokens != s->n_seqs) return 0;
    for (int i = 0; i < s->n_seqs; i++)
        if (!s->seq_logits[i] || s->sampling[i].n_bias || s->sampling[i].n_supp) return 0;
    return 1;
}

/* The step is enqueued: mark its end and queue it behind the one in flight (if any). */
static int step_enqueued(cuda_backend *c, int sampled, int n_logits, kiln_error *err) {
    KILN_CUDA_TRY(err, cudaEventRecord(c->ev[c->par], c->st));
    c->fl[c->n_pending].n_logits = n_logits;
    c->fl[c->n_pending].sampled = sampled;
    c->fl[c->n_pending].par = c->par;
    c->n_pending++;
    c->last_n_logits = n_logits;
    c->last_sampled = sampled;
    c->par ^= 1;
    return KILN_OK;
}

int kiln_cuda_encode(kiln_backend *b, const kiln_step *s, kiln_error *err) {
    cuda_backend *c = (cuda_backend *)b;
    /* overlapped scheduling: one more step while one is in flight, and only behind a step that
     * draws on the device or returns nothing (host logits have one buffer; a prefill chunk
     * without a logits row, the first of a long prompt, leaves it alone) */
    if (c->n_pending == 2 || (c->n_pending == 1 && !c->fl[0].sampled && c->fl[0].n_logits > 0))
        return KILN_ERR(err, KILN_ERR_INTERNAL, "cuda backend: encode_step with %d step(s) in flight", c->n_pending);
    int rc = kiln_backend_check_step(&c->cfg, c->m->cfg.vocab_size, 1, s, err); /* I2 */
    if (rc) return rc;
    int T = s->n_tokens, S = s->n_seqs, bs = c->cfg.kv.block_size;
    /* this step's pinned buffers: the other step in flight may still be copying from / to the
     * other parity's */
    kiln_cuda_use_parity(c, c->par);
    int32_t *prev = (int32_t *)(c->desc_h + c->off_prev);
    if (s->n_prev > 0) {
        if (!c->last_sampled || !s->device_sample)
            return KILN_ERR(err, KILN_ERR_INTERNAL, "step: prev_row without device sampling in this and the last step");
        for (int t = 0; t < T; t++) {
            if (s->prev_row[t] >= c->last_n_logits)
                return KILN_ERR(err, KILN_ERR_RANGE, "step: row %d takes logits row %d of a step of %d", t,
                                s->prev_row[t], c->last_n_logits);
            prev[t] = s->prev_row[t];
        }
    } else {
        for (int t = 0; t < T; t++) prev[t] = -1;
    }
    /* grammar masks: one H2D copy of the step's rows into mask_d, ahead of the step's work in
     * stream order and outside the decode graphs (their sampler reads mask_d, the rows name
     * their mask); the pinned rows are this parity's, so the step in flight keeps its own */
    if (s->device_sample && s->n_masks > 0) {
        if (!c->mask_d || s->mask_words != c->mask_words)
            return KILN_ERR(err, KILN_ERR_INVALID_ARG, "cuda backend: a step with grammar masks, the backend was "
                            "created without them (kiln_backend_config.masks)");
        size_t mb = (size_t)s->n_masks * c->mask_words * 4;
        memcpy(c->mask_hb[c->par], s->masks, mb);
        KILN_CUDA_TRY(err, cudaMemcpyAsync(c->mask_d, c->mask_hb[c->par], mb, cudaMemcpyHostToDevice, c->st));
    }

    /* fill the pinned descriptor; the block table is packed to this step's widest row */
    int32_t *tok = (int32_t *)(c->desc_h + c->off_tok), *pos = (int32_t *)(c->desc_h + c->off_pos);
    int32_t *rowseq = (int32_t *)(c->desc_h + c->off_rowseq), *lrows = (int32_t *)(c->desc_h + c->off_lrows);
    int64_t *slot = (int64_t *)(c->desc_h + c->off_slot);
    int32_t *bt = (int32_t *)(c->desc_h + c->off_bt);
    int32_t *tiles = (int32_t *)(c->desc_h + c->off_tiles);
    memcpy(tok, s->token_ids, (size_t)T * 4);
    memcpy(pos, s->positions, (size_t)T * 4);
    memcpy(slot, s->slot_mapping, (size_t)T * 8);
    int bt_w = 1, n = 0;
    for (int i = 0; i < S; i++) {
        int nb = (s->seq_ctx_len[i] + bs - 1) / bs;
        if (nb > bt_w) bt_w = nb;
        for (int t = s->seq_q_start[i]; t < s->seq_q_start[i + 1]; t++) rowseq[t] = i;
        /* the sequence's last seq_logits[i] rows (k + 1 of a speculative verification, host
         * logits only: kiln_step_check; 1 otherwise) */
        for (int t = s->seq_q_start[i + 1] - s->seq_logits[i]; t < s->seq_q_start[i + 1]; t++) lrows[n++] = t;
    }

    int ri, wi;
    if (c->graphs && decode_graph_step(s) && kiln_cuda_graph_bucket(c, T, bt_w, &ri, &wi) == 0) {
        /* a decode step: pad to the bucket and replay its graph */
        int Tb = 1 << ri, wb = c->graph_widths[wi];
        step_plan p;
        kiln_cuda_fill_plan_shape(c, &p, Tb, wb);
        pad_rows(c, T, Tb);
        for (int t = T; t < Tb; t++) {
            rowseq[t] = t;
            lrows[t] = t;
        }
        for (int i = 0; i < Tb; i++) {
            if (i < S) memcpy(bt + (size_t)i * wb, s->block_table + (size_t)i * s->max_blocks_per_seq, (size_t)wb * 4);
            else memset(bt + (size_t)i * wb, 0, (size_t)wb * 4);
        }
        for (int i = 0; i < p.n_tiles; i++) {
            tiles[2 * i] = i;
            tiles[2 * i + 1] = 1;
        }
        step_plan q;
        if ((rc = pack_sampling(c, s, T, &q, err))) return rc;
        kiln_cuda_sample_row *rows = (kiln_cuda_sample_row *)(c->sdesc_h + p.sd_rows);
        for (int i = T; i < Tb; i++) { /* greedy, no tables, nothing back that is read */
            memset(&rows[i], 0, sizeof rows[i]);
            rows[i].slot = -1;
        }
        KILN_CUDA_TRY(err, cudaGraphLaunch(c->graphs[(c->par * c->n_graph_rows + ri) * c->n_graph_widths + wi], c->st));
        c->graph_steps++;
        return step_enqueued(c, 1, T, err);
    }

    step_plan p;
    memset(&p, 0, sizeof p);
    p.T = T;
    p.n = n;
    p.bt_w = bt_w;
    for (int i = 0; i < S; i++)
        memcpy(bt + (size_t)i * bt_w, s->block_table + (size_t)i * s->max_blocks_per_seq, (size_t)bt_w * 4);
    /* prefill tiles, then the runs of the remaining rows (each run: one split-kernel launch per layer) */
    if (c->pf_tile_rows > 0)
        /* an all-decode step (one row per sequence) of >= decode_tc_rows rows goes to
         * attention_decode_kernel whole (tc_splits below); in a mixed step the chunks of >=
         * PREFILL_MIN_ROWS rows take prefill tiles and the other rows form runs (enq_att: the
         * decode kernel, split over each row's context, so a long-context decode beside a
         * prefill chunk is not one CTA per KV head streaming its whole context) */
        p.n_tiles = kiln_cuda_prefill_tiles(s->seq_q_start, S, T == S && T >= c->decode_tc_rows ? 1 : PREFILL_MIN_ROWS,
                                            c->pf_tile_rows, tiles, c->pf_max_tiles, c->pf_covered);
    else
        memset(c->pf_covered, 0, (size_t)T);
    if (p.n_tiles == T && T == S && T >= c->decode_tc_rows) p.tc_splits = kiln_cuda_tc_split_count(c, T); /* all decodes */
    for (int t = 0; t < T;) {
        if (c->pf_covered[t]) { t++; continue; }
        c->run_a[p.n_runs] = t;
        while (t < T && !c->pf_covered[t]) t++;
        c->run_b[p.n_runs++] = t;
    }
    p.desc_bytes = c->off_bt + (size_t)S * bt_w * 4;
    p.sample = n > 0 && s->device_sample;
    if (p.sample && (rc = pack_sampling(c, s, n, &p, err))) return rc;
    const cudaGraphExec_t *pieces = NULL;
    int Tb = 0, pb = kiln_cuda_piece_bucket(T, &Tb);
    if (c->pieces && pb < c->n_piece_buckets) {
        /* pad to the bucket; every op of a piece is row by row, attention and the tail see the
         * real rows only */
        pad_rows(c, T, Tb);
        p.T_lin = Tb;
        pieces = &c->pieces[(size_t)pb * (c->m->cfg.n_layers + 1)];
        c->piece_steps++;
    }
    if ((rc = kiln_cuda_enqueue(c, &p, pieces, err))) return rc;
    return step_enqueued(c, p.sample, n, err);
}
