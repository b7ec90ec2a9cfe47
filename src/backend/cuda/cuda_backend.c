/* cuda_backend.c: the transformer step on one NVIDIA GPU.
 *
 * Per step (T rows, D = dim, H / KV heads, hd = head_dim, F = hidden_dim, adt = the layer
 * matrices' dtype, all on one stream, nothing waits until finish_step):
 *   step descriptor -> one H2D copy from pinned staging (ids, positions, slots, row -> sequence,
 *                      rows needing logits, the block table packed to this step's widest row)
 *   x[T][D] f32    = embedding rows                                      (embed.cu)
 *   per layer:  xn[T][D] adt = rmsnorm(x += proj)                        (rmsnorm.cu; layer 0: no add)
 *               qkv[T][(H+2KV)hd] f32 = xn Wqkv^T  (Wq|Wk|Wv concatenated at load; gemm.c)
 *               RoPE(q, k) in place; K, V -> bf16 pool at slot_mapping     (rope_kv.cu)
 *               att[T][H hd] adt = paged causal GQA attention: chunks of >= 16 rows on tensor
 *                              cores (attention_prefill.cu), every other row (decodes, short
 *                              chunks) one query position on tensor cores split over its
 *                              context (kiln_cuda_attention_decode_tc); batch-invariant mode
 *                              (or KILN_CUDA_DECODE_TC=0): those rows on the CUDA-core split
 *                              kernel (attention.cu)
 *               proj[T][D] f32 = att Wo^T;  xn = rmsnorm(x += proj)
 *               gu[T][2F] = xn Wgu^T  (Wgate|Wup concatenated; adt from cuBLASLt, as vLLM's
 *                             merged gate_up output; f32 from GEMV / skinny, or with
 *                             KILN_CUDA_GU_16BIT=0);  act[T][F] adt = silu(g) u  (swiglu.cu);
 *                             the wide kernel writes act straight (SwiGLU in its epilogue)
 *               proj = act Wd^T
 *               (MoE layers, Mixtral: proj = the routed experts' FFN instead, moe.cu / cuda_moe.c:
 *                device top-k, rows sorted by expert, grouped expert GEMMs; docs/moe.md)
 *   xf[n][D] = rmsnorm(x + proj) of the last row of each sequence with seq_logits (gathered)
 *   logits[n][V] f32 = xf Wlm^T, then either drawn on the device (sample.cu: penalties from
 *                      device tables, bias, temperature, top-k/p, min-p, Philox; one D2H copy of
 *                      the tokens and logprobs) or copied back whole (device_sample = 0)
 * GEMMs: gemv.cu / skinny_wide.cu at decode sizes where they stream the weights faster than
 * cuBLASLt (cuda_linear.c; not in batch-invariant mode), cuBLASLt otherwise.
 * The host prepares a step (descriptor, tiles, runs, sampling descriptor: cuda_encode) and
 * enqueue() issues the device work; a decode step is padded to a (rows, block-table width)
 * bucket and replays the CUDA graph captured from enqueue() at load.
 * Steps other than those (prefill, mixed, decodes with bias / penalty loads / host logits) of up
 * to KILN_CUDA_PIECE_MAX rows are padded to a row bucket and replay piecewise graphs: all but
 * attention and the LM head / sampling, L + 1 graphs per bucket, attention launched between them.
 * Overlapped scheduling: a second step may be encoded while one is in flight (pinned buffers
 * and decode graphs per parity); its rows with prev_row take their input tokens from the
 * previous step's draws on the device (the embedding reads them).
 * finish_step is the step's one wait (cudaEventSynchronize on the oldest step's event through
 * sync.c, I1); it returns the tokens (or the host logits).
 *
 * Precision: residual stream, GEMM outputs, RoPE, softmax and all accumulation in f32; GEMM
 * inputs rounded to the weights' dtype (bf16/f16; f32 weights keep everything f32, no TF32).
 * The KV pool is bf16 on the device (half the CPU's f32 pool), layout [layer][block][k|v][KV]
 * [block_size][hd] as step.h; block ids are range-checked on the host before upload (I2).
 *
 * Memory (I7): weights, KV pool, scratch for max_tokens rows, the descriptor buffers, the
 * pinned logits, the penalty tables and the decode graphs are allocated in create(); a step allocates nothing on the device or through
 * kiln_malloc (the GEMM algorithm table is sized at create and filled on first use of a row
 * count, a host-only cuBLASLt query). Refused at load, in any mode (I3, no fallbacks exist):
 * quantized or mixed-dtype layer matrices, head_dim > 256 or not a multiple of 8, no CUDA device, one older
 * than sm_80 or one this build has no code for (target.c), out of device memory. KILN_STRICT=1
 * also refuses KILN_CUDA_DEBUG=1 (its per-op waits break I1). KILN_CUDA_DEBUG=1: wait and check
 * after every op, poison scratch with NaN at each step, to localise asynchronous errors.
 *
 * Architectures (issue 16): one build carries sm_80 / 86 / 89 / 90a code and compute_90 PTX
 * (KILN_CUDA_ARCHS=release). c->target (target.h) is the card's limits, or those of a forced
 * older architecture (kiln_cuda_options.target_sm, KILN_CUDA_TARGET); choose_paths() makes every
 * choice that depends on it (PDL, the wide kernel's variant, the tensor-core attention kernels,
 * the attention splits), and describe (`kiln info --backend cuda`) prints them. The GEMV and
 * skinny launchers size for the current device's SM count, which a forced target keeps.
 *
 * Weights: uploaded from the mmapped host tensors through two pinned 32 MiB staging buffers
 * (progress bar on stderr); dummy models loaded with host_data = 0 are filled on the device
 * with kiln_dummy_value's formula (dummy_fill.cu), bit-identical to the host's.
 */
#include <stdarg.h>
#include <stdio.h>
#include <nvtx3/nvToolsExt.h>
#include "backend/cuda/cuda_backend_internal.h"
#include "backend/cuda/moe.h"
#include "kiln_cuda_probe.h"

int kiln_cuda_dev_malloc(cuda_backend *c, void **p, size_t n, const char *what, kiln_error *err) {
    *p = NULL;
    if (c->n_allocs == c->cap_allocs)
        return KILN_ERR(err, KILN_ERR_INTERNAL, "cuda backend: allocation table full (%s)", what);
    int rc = kiln_cuda_malloc(&c->syncs, p, n, what, err);
    if (rc) return rc;
    c->allocs[c->n_allocs].p = *p;
    c->allocs[c->n_allocs].n = n;
    c->n_allocs++;
    return KILN_OK;
}


static void cuda_destroy(kiln_backend *b) {
    cuda_backend *c = (cuda_backend *)b;
    if (!c) return;
    kiln_error e2;
    if (c->have_stream) (void)kiln_cuda_stream_sync(&c->syncs, c->st, &e2);
    kiln_cuda_free_graphs(c);
    kiln_cuda_gemm_free(&c->g_qkv);
    kiln_cuda_gemm_free(&c->g_o);
    kiln_cuda_gemm_free(&c->g_gu);
    kiln_cuda_gemm_free(&c->g_d);
    kiln_cuda_gemm_free(&c->g_lm);
    for (int i = 0; i < c->n_allocs; i++) kiln_cuda_free(&c->syncs, c->allocs[i].p, c->allocs[i].n);
    for (int i = 0; i < 2; i++) {
        kiln_cuda_host_free(&c->syncs, c->desc_hb[i]);
        kiln_cuda_host_free(&c->syncs, c->sdesc_hb[i]);
        kiln_cuda_host_free(&c->syncs, c->sout_hb[i]);
        kiln_cuda_host_free(&c->syncs, c->mask_hb[i]);
        if (c->have_ev > i) cudaEventDestroy(c->ev[i]);
    }
    kiln_cuda_host_free(&c->syncs, c->logits_h);
    if (c->have_lt) cublasLtDestroy(c->gctx.lt);
    for (int i = 0; i < c->have_ev_pf; i++) cudaEventDestroy(c->ev_pf[i]);
    if (c->have_st_pf) cudaStreamDestroy(c->st_pf);
    if (c->have_stream) cudaStreamDestroy(c->st);
    kiln_free(c->allocs);
    kiln_free(c->layers);
    kiln_free(c->pf_covered);
    kiln_free(c->run_a);
    kiln_free(c->run_b);
    kiln_free(c);
}

/* Whether some matrix is of a type qmma_reg takes (Q4_K / Q6_K / Q8_0, K a multiple of 256):
 * only then does it need qmma_x's split-K scratch (26 MB on 132 SMs; the default model's Q4_1
 * layers never take it). The matrices cuda_weights.c checks: the LM head and, per layer, q k v o
 * and the dense MLP. */
static int any_qreg_matrix(const cuda_backend *c) {
    const kiln_model *m = c->m;
    const kiln_tensor *lm = m->lm_head;
    if (kiln_cuda_qmma_reg_supports(lm->dtype, (int)lm->shape[lm->ndim - 1])) return 1;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const kiln_layer_weights *w = &m->layers[l];
        const kiln_tensor *ts[7] = {w->wq, w->wk, w->wv, w->wo, w->w_gate, w->w_up, w->w_down};
        for (int i = 0; i < (m->cfg.n_experts > 0 ? 4 : 7); i++)
            if (ts[i] && kiln_cuda_qmma_reg_supports(ts[i]->dtype, (int)ts[i]->shape[ts[i]->ndim - 1])) return 1;
    }
    return 0;
}

static int alloc_scratch(cuda_backend *c, kiln_error *err) {
    const kiln_config *mc = &c->m->cfg;
    c->att_split_w = kiln_cuda_attention_split_width(&c->att_splits);
    size_t T = (size_t)c->cfg.max_tokens, S = (size_t)c->cfg.max_seqs, D = (size_t)mc->dim;
    size_t LR = (size_t)c->max_lrows; /* logits rows: S, or more with speculative verification */
    size_t qd = (size_t)mc->n_heads * mc->head_dim, kvd = (size_t)mc->n_kv_heads * mc->head_dim;
    size_t F = (size_t)mc->hidden_dim, V = (size_t)mc->vocab_size, a = dt_size(c->adt);
    struct { void **p; size_t n; const char *what; } bufs[] = {
        {(void **)&c->x, T * D * 4, "x"},
        {&c->xn, T * D * a, "xn"},
        {(void **)&c->qkv, T * (qd + 2 * kvd) * 4, "qkv"},
        {(void **)&c->rope_cs, T * (size_t)(mc->head_dim / 2) * 16, "RoPE factors"},
        {&c->att, T * qd * a, "attention output"},
        {(void **)&c->att_scratch, T * (size_t)mc->n_heads * c->att_splits * (mc->head_dim + 2) * 4, "attention splits"},
        {(void **)&c->proj, T * D * 4, "projection output"},
        {(void **)&c->gu, T * 2 * F * 4, "gate/up output"},
        {&c->act, T * F * a, "SwiGLU output"},
        {&c->xf, LR * D * dt_size(c->hdt), "final norm output"},
        {(void **)&c->logits_d, LR * V * 4, "logits"},
    };
    int rc;
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        if ((rc = kiln_cuda_dev_malloc(c, bufs[i].p, bufs[i].n, bufs[i].what, err))) return rc;
        c->scratch_bytes += bufs[i].n;
    }
    if (mc->n_experts > 0 && (rc = kiln_cuda_moe_alloc(c, err))) return rc;
    /* quantized weights: the largest quantized matrix in bf16 that a step of more rows than the
     * GEMV and qmma take can meet (cuda_linear.c dequantizes it then): the layers' when a step may
     * have more than that many rows (prefill), the LM head's only when that many sequences may
     * ask for logits (Devstral's Q6_K head: 1.34 GB not taken at the default 64 sequences) */
    if (c->quant) {
        int dr = c->qgemv_max_rows > c->qmma_max_rows ? c->qgemv_max_rows : c->qmma_max_rows;
        size_t mx = 0, direct = (size_t)(dr > c->qreg_max_rows ? dr : c->qreg_max_rows);
        if (kiln_dtype_is_quant(c->m->layers[0].wq->dtype) && T > direct) {
            size_t sz[4] = {(qd + 2 * kvd) * D, D * qd, 2 * F * D, D * F};
            for (int i = 0; i < 4; i++) mx = sz[i] > mx ? sz[i] : mx;
        }
        if (kiln_dtype_is_quant(c->m->lm_head->dtype) && LR > direct && V * D > mx) mx = V * D;
        c->wdq_bytes = mx * 2;
        if (mx && (rc = kiln_cuda_dev_malloc(c, &c->wdq, c->wdq_bytes, "dequantized weights", err))) return rc;
        c->scratch_bytes += c->wdq_bytes;
        size_t kmax = D > qd ? D : qd, R = (size_t)(c->qgemv_max_rows > 0 ? c->qgemv_max_rows : 1);
        if (F > kmax) kmax = F;
        if ((rc = kiln_cuda_dev_malloc(c, (void **)&c->xq, R * kmax, "int8 activations", err)) ||
            (rc = kiln_cuda_dev_malloc(c, (void **)&c->xq_d, R * kmax / 32 * 4, "int8 activation scales", err)) ||
            (rc = kiln_cuda_dev_malloc(c, (void **)&c->xq_s, R * kmax / 16 * 4, "int8 activation sums", err)))
            return rc;
        c->scratch_bytes += R * kmax * 2;
        if (c->qreg_max_rows > 0 && any_qreg_matrix(c)) { /* qmma_x's split-K parts (zeroed counters: each
                                                            * launch leaves them so) */
            kiln_cuda_qmma_reg_work(c->n_sm, &c->qreg_wk.floats, &c->qreg_wk.counters);
            if ((rc = kiln_cuda_dev_malloc(c, (void **)&c->qreg_wk.part, c->qreg_wk.floats * 4, "qmma_reg parts", err)) ||
                (rc = kiln_cuda_dev_malloc(c, (void **)&c->qreg_wk.cnt, c->qreg_wk.counters * 4, "qmma_reg counters",
                                           err)))
                return rc;
            cudaError_t e = cudaMemsetAsync(c->qreg_wk.cnt, 0, c->qreg_wk.counters * 4, c->st);
            if (e != cudaSuccess) return kiln_cuda_error(err, e, "cudaMemsetAsync(qmma_reg counters)", __FILE__, __LINE__);
            c->scratch_bytes += (c->qreg_wk.floats + c->qreg_wk.counters) * 4;
        }
    }
    /* FP8 matrices: the activation codes and scales of W8A8 (a step's rows, the widest K), and
     * the bf16 scratch of the steps that dequantize (more rows than fp8.cu's product takes, when
     * cuBLASLt FP8 cannot: weight-only, BLOCK scales, parts with different static scales) */
    if (c->fp8) {
        size_t kmax = D > qd ? D : qd;
        if (F > kmax) kmax = F;
        size_t G = (kmax + 127) / 128;
        if ((rc = kiln_cuda_dev_malloc(c, (void **)&c->sa8, T * G * sizeof(float), "FP8 activation scales", err)))
            return rc;
        c->scratch_bytes += T * G * sizeof(float);
        if (c->fp8_a8) {
            if ((rc = kiln_cuda_dev_malloc(c, (void **)&c->xq8, T * kmax, "FP8 activations", err))) return rc;
            c->scratch_bytes += T * kmax;
        }
        if (c->fp8_fuse || c->fp8_gu16) { /* SwiGLU's partial maxima: [T][F / 1024] */
            size_t P = (size_t)kiln_cuda_swiglu_pmax_parts((int)F);
            if ((rc = kiln_cuda_dev_malloc(c, (void **)&c->pmax8, T * P * sizeof(float), "FP8 partial maxima", err)))
                return rc;
            c->scratch_bytes += T * P * sizeof(float);
        }

        if (!c->fp8_lt8 && T > (size_t)c->fp8_mma_max_rows) {
            size_t sz[4] = {(qd + 2 * kvd) * D, D * qd, 2 * F * D, D * F}, mx = 0;
            for (int i = 0; i < 4; i++) mx = sz[i] > mx ? sz[i] : mx;
            c->wdq_bytes = mx * 2;
            if ((rc = kiln_cuda_dev_malloc(c, &c->wdq, c->wdq_bytes, "dequantized FP8 weights", err))) return rc;
            c->scratch_bytes += c->wdq_bytes;
        }
    }
    /* the step descriptor: [T] ids, positions, row -> sequence; [LR] logit rows; [T] slots (i64);
     * [S][max_blocks_per_seq] block table (packed per step) */
    size_t off = 0;
    c->off_tok = off; off += T * 4;
    c->off_pos = off; off += T * 4;
    c->off_rowseq = off; off += T * 4;
    c->off_lrows = off; off += LR * 4;
    off = (off + 7) / 8 * 8;
    c->off_slot = off; off += T * 8;
    c->pf_max_tiles = (int)(T + S);
    c->off_tiles = off; off += (size_t)c->pf_max_tiles * 2 * 4;
    c->off_prev = off; off += T * 4;
    c->off_bt = off; off += S * (size_t)c->cfg.max_blocks_per_seq * 4;
    c->desc_bytes = off;
    if ((rc = kiln_cuda_dev_malloc(c, (void **)&c->desc_d, off, "the step descriptor", err))) return rc;
    for (int i = 0; i < 2; i++)
        if ((rc = kiln_cuda_host_alloc(&c->syncs, (void **)&c->desc_hb[i], off, "the step descriptor", err))) return rc;
    if ((rc = kiln_cuda_host_alloc(&c->syncs, (void **)&c->logits_h, LR * V * 4, "host logits", err))) return rc;
    c->scratch_bytes += off;

    /* device sampling: tables, work rows, scratch, the packed per-step descriptor (rows, bias,
     * suppression, penalty loads: worst case sizes) and the results */
    size_t cap_pen = (size_t)c->cfg.max_model_len + T;
    /* rows: LR (a speculating sequence's k + 1 rows share its bias and suppression lists;
     * lists and penalty loads stay one per sequence) */
    c->sdesc_bytes = LR * sizeof(kiln_cuda_sample_row) + S * KILN_MAX_LOGIT_BIAS * 8 +
                     S * (KILN_MAX_EOS + KILN_MAX_STOP_IDS) * 4 + (3 * S + 1) * 4 + cap_pen * 4 + 64;
    c->sout_bytes = LR * (2 + 2 * KILN_STEP_MAX_TOP) * 4;
    struct { void **p; size_t n; const char *what; } sb[] = {
        {(void **)&c->pen_counts, S * V * 4, "penalty counts"},
        {(void **)&c->pen_prompt, S * V, "penalty prompt marks"},
        {(void **)&c->samp_work, kiln_cuda_sample_work_bytes((int)LR, (int)V), "sampling rows"},
        {(void **)&c->sdesc_d, c->sdesc_bytes, "sampling descriptor"},
        {(void **)&c->sout_d, c->sout_bytes, "sampling results"},
    };
    for (size_t i = 0; i < sizeof sb / sizeof sb[0]; i++) {
        if ((rc = kiln_cuda_dev_malloc(c, sb[i].p, sb[i].n, sb[i].what, err))) return rc;
        c->scratch_bytes += sb[i].n;
    }
    for (int i = 0; i < 2; i++)
        if ((rc = kiln_cuda_host_alloc(&c->syncs, (void **)&c->sdesc_hb[i], c->sdesc_bytes, "sampling descriptor", err)) ||
            (rc = kiln_cuda_host_alloc(&c->syncs, (void **)&c->sout_hb[i], c->sout_bytes, "sampling results", err)))
            return rc;
    if (c->cfg.masks) { /* grammar masks: S rows of (V + 31) / 32 words (16 KiB for 131,072 ids) */
        c->mask_words = (int)((V + 31) / 32);
        size_t mb = S * (size_t)c->mask_words * 4;
        if ((rc = kiln_cuda_dev_malloc(c, (void **)&c->mask_d, mb, "grammar masks", err))) return rc;
        c->scratch_bytes += mb;
        for (int i = 0; i < 2; i++)
            if ((rc = kiln_cuda_host_alloc(&c->syncs, (void **)&c->mask_hb[i], mb, "grammar masks", err))) return rc;
    }
    cudaError_t e = cudaMemsetAsync(c->pen_counts, 0, S * V * 4, c->st);
    if (e == cudaSuccess) e = cudaMemsetAsync(c->pen_prompt, 0, S * V, c->st);
    if (e != cudaSuccess) return kiln_cuda_error(err, e, "cudaMemsetAsync(penalty tables)", __FILE__, __LINE__);
    return KILN_OK;
}

/* the switches of kiln_cuda_options (KILN_CUDA_* through the kiln command); -1: defaults */
static void set_options(cuda_backend *c, const kiln_backend_config *bc) {
    const kiln_cuda_options *o = &bc->cuda;
    c->debug = o->debug == 1;
    /* pdl: the fewest rows of a step whose kernels launch with PDL (0 never) */
    c->pdl = o->pdl != 0 ? (o->pdl_min_rows > 0 ? o->pdl_min_rows : KILN_PDL_MIN_ROWS) : 0;
    /* rows up to which the GEMV kernel replaces cuBLASLt (default 8, 0 = off) */
    c->gemv_max_rows = o->gemv_max_rows >= 0 ? o->gemv_max_rows : KILN_GEMV_MAX_ROWS;
    if (c->gemv_max_rows > KILN_GEMV_MAX_ROWS || bc->batch_invariant) c->gemv_max_rows = 0;
    c->decode_tc_rows = o->decode_tc_rows >= 0 ? o->decode_tc_rows : 1;
    if (c->decode_tc_rows <= 0) c->decode_tc_rows = 1 << 30; /* 0: never */
    c->gu_16bit = o->gate_up_16bit != 0;
    /* from 4 rows (H100, same call, SwiGLU fused: batch 4 16.89 -> 16.75 ms, batch 2 16.58 -> 16.61) */
    c->wide_min_rows = o->wide_min_rows >= 0 ? o->wide_min_rows : 4;
    if (c->wide_min_rows > KILN_WIDE_MAX_ROWS || bc->batch_invariant) c->wide_min_rows = 0;
    c->wide_variant = o->wide_variant >= 0 ? o->wide_variant : 0; /* 0: the kernel's default */
    if (c->wide_variant > KILN_WIDE_VARIANTS) c->wide_variant = 0;
    c->glu = o->glu_fused != 0;
    c->skinny_max_rows = o->skinny_max_rows >= 0 ? o->skinny_max_rows : 8;
    if (c->skinny_max_rows > KILN_SKINNY_MAX_ROWS || bc->batch_invariant) c->skinny_max_rows = 0;
    /* quantized weights: the GEMV up to 8 rows (the same switch as the dense GEMV's), then
     * dequantization + cuBLASLt; batch-invariant mode always the latter */
    c->qgemv_max_rows = o->gemv_max_rows >= 0 ? o->gemv_max_rows : KILN_QGEMV_DEFAULT_ROWS;
    if (c->qgemv_max_rows > KILN_QGEMV_MAX_ROWS || bc->batch_invariant) c->qgemv_max_rows = 0;
    c->qmma_max_rows = bc->batch_invariant ? 0 : KILN_QMMA_MAX_ROWS;
    c->q8_fuse = o->q8_fuse_quant != 0;
    c->qreg_max_rows = o->qreg_max_rows >= 0 ? o->qreg_max_rows : KILN_QREG_DEFAULT_MAX_ROWS;
    if (c->qreg_max_rows > KILN_QMMA_MAX_ROWS || bc->batch_invariant) c->qreg_max_rows = 0;
    c->qreg_variant = o->qreg_variant >= 0 && o->qreg_variant <= KILN_QREG_VARIANT_MAX ? o->qreg_variant : KILN_QREG_DEFAULT_VARIANT;
    c->l2pf_mode = o->l2_prefetch_mode >= 1 && o->l2_prefetch_mode <= 3 ? o->l2_prefetch_mode : 1;
    c->fp8_mma_max_rows = o->fp8_mma_max_rows >= 0 ? o->fp8_mma_max_rows : KILN_FP8_MMA_DEFAULT_ROWS;
    if (c->fp8_mma_max_rows > KILN_FP8_MMA_MAX_ROWS || bc->batch_invariant) c->fp8_mma_max_rows = 0;
}

/* The device of the config (its first; several are refused by check_model), else 0, and its
 * target (target.h: the card's limits, or the forced architecture's; the card refusals). */
static int select_device(cuda_backend *c, const kiln_backend_config *bc, kiln_error *err) {
    int n_dev = 0;
    cudaError_t e = cudaGetDeviceCount(&n_dev);
    if (e != cudaSuccess || n_dev <= 0)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cuda backend: no CUDA device (%s)",
                        e != cudaSuccess ? cudaGetErrorString(e) : "none found");
    int dev = bc->n_devices > 0 ? bc->devices[0] : 0;
    if (dev < 0 || dev >= n_dev)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "cuda backend: device %d does not exist (%d found)", dev, n_dev);
    return kiln_cuda_target_init(&c->target, dev, bc->cuda.target_sm > 0 ? bc->cuda.target_sm : 0, err);
}

/* Every choice that depends on the target, after set_options: PDL only where the target has
 * it (sm_90); the wide kernel's variant by the target's shared memory per block (the default,
 * else the 90 KB variant on sm_86 / sm_89, else off); the tensor-core attention kernels only
 * where their shared memory fits (else the split kernel takes every row); the attention splits
 * sized for the target's SMs and the blocks its shared memory keeps resident. */
static void choose_paths(cuda_backend *c, const kiln_config *mc, const kiln_backend_config *bc) {
    const kiln_cuda_options *o = &bc->cuda;
    const kiln_cuda_target *t = &c->target;
    c->n_sm = t->n_sm;
    if (!t->has_pdl) c->pdl = 0;
    if (c->wide_min_rows) {
        int v = kiln_cuda_gemm_wide_fit(c->wide_variant, mc->dim, t->smem_per_block);
        if (v) c->wide_variant = v;
        else c->wide_min_rows = 0;
    }
    int G = mc->n_kv_heads > 0 ? mc->n_heads / mc->n_kv_heads : 1;
    c->att_blocks_per_sm = o->att_blocks_per_sm > 0 ? o->att_blocks_per_sm
                                                    : kiln_cuda_attention_blocks_per_sm(mc->head_dim, G, t);
    size_t tc_smem = kiln_cuda_attention_tc_smem(mc->head_dim);
    int tc_fits = tc_smem && tc_smem <= t->smem_per_block;
    /* decode_tc_split (KILN_CUDA_DECODE_TC_SPLIT) 0: decode rows on tensor cores take the whole
     * context per CTA; n > 0: size the split for n resident CTAs per SM instead of the occupancy
     * query's (-1) */
    int kv_f8 = bc->kv.dtype == KILN_KV_FP8_E4M3;
    c->tc_blocks_per_sm = o->decode_tc_split >= 0 ? o->decode_tc_split
                                                  : kiln_cuda_attention_decode_tc_blocks_per_sm(mc->head_dim, G, kv_f8, t);
    /* attention_decode_kernel holds the G heads of a group in its 16 MMA rows */
    if (c->tc_blocks_per_sm < 0 || G > 16 || !tc_fits) c->tc_blocks_per_sm = 0;
    /* batch-invariant mode keeps every row on the split kernel: which kernel a row gets must not
     * depend on how the scheduler chunked its sequence (I6) */
    c->pf_tile_rows = bc->batch_invariant || !tc_fits ? 0 : kiln_cuda_prefill_tile_rows(mc->n_heads, mc->n_kv_heads);
    /* FP8: W8A8 where the card has FP8 MMA and the checkpoint quantizes activations, else
     * weight-only (sm_80 / sm_86, as vLLM's FP8 Marlin path: codes -> bf16 in the kernel) */
    c->fp8_a8 = c->fp8 && t->has_fp8_mma && c->m->layers[0].wq->quant.act != KILN_ACT_NONE;
    c->fp8_lt8 = c->fp8_a8 && !c->fp8_blk && !c->fp8_split;
    /* the activation codes from the kernels before (dynamic per-row scales, bf16 activations) */
    c->fp8_fuse = c->fp8_a8 && !c->fp8_blk && !c->fp8_static && c->adt == KILN_DT_BF16 && o->fp8_fuse_quant != 0;
    /* the L2 prefetch branch by default for FP8 W8A8 only (H100, Devstral shape, same calls: b4
     * 9.33 -> 9.20 ms and 9.65 -> 9.45, b8 9.96 -> 9.70 and 9.65 -> 9.44; bf16 b4 15.77 -> 15.83) */
    int l2mb = o->l2_prefetch_mb >= 0 ? o->l2_prefetch_mb : c->fp8_a8 ? L2PF_DEFAULT_MB : 0;
    c->l2pf_bytes = (int64_t)l2mb << 20;
}

/* A model that cannot fit is refused before any device allocation: the weights and the KV pool
 * alone (exact sizes; the scratch, the GEMM workspace and the graphs come on top) against the
 * device's free memory (the bytes kiln_cuda_upload_weights puts there). What fits here can still fail later in create, at the scratch or a
 * weight: every such failure is KILN_ERR_OOM naming the buffer (sync.c) and frees everything
 * (cuda_destroy from create's fail label). */
static int check_device_memory(cuda_backend *c, const kiln_model *m, const kiln_backend_config *bc, kiln_error *err) {
    size_t weights = kiln_cuda_weight_bytes(m), free_b = 0, total_b = 0;
    size_t kv = (size_t)kiln_kv_elems(&bc->kv) * (size_t)bc->kv.elem_bytes; /* bf16 or FP8 */
    cudaError_t e = cudaMemGetInfo(&free_b, &total_b);
    if (e != cudaSuccess) return kiln_cuda_error(err, e, "cudaMemGetInfo", __FILE__, __LINE__);
    if (weights + kv > free_b)
        return KILN_ERR(err, KILN_ERR_OOM,
                        "cuda backend: the weights (%.2f GiB) and the KV pool (%.2f GiB) need %.2f GiB, more than "
                        "the %.2f GiB free on device %d (%s, %.2f GiB): a smaller KV pool (--kv-memory, "
                        "--max-model-len, --max-num-seqs), a quantized model or a larger GPU",
                        weights / 1073741824.0, kv / 1073741824.0, (weights + kv) / 1073741824.0,
                        free_b / 1073741824.0, c->target.device, c->target.card, total_b / 1073741824.0);
    return KILN_OK;
}

/* ops.kv_budget: what an automatically sized KV pool may take on `device` (see backend.h): its
 * free memory less the weights (kiln_cuda_weight_bytes, what check_device_memory counts) and 10 %
 * of the card for the scratch, the GEMM workspace and the graphs, as vLLM's default
 * gpu_memory_utilization of 0.9 leaves. Without it the engine sized the pool from host memory
 * alone: 25 % of a 128 GB host (32 GB) beside the Devstral shape's 47 GB of bf16 weights passed
 * check_device_memory on an 80 GB H100 and ran out of memory at a weight upload. */
static size_t cuda_kv_budget(const kiln_model *m, int device) {
    size_t free_b = 0, total_b = 0;
    if (cudaSetDevice(device) != cudaSuccess || cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
        (void)cudaGetLastError();
        return SIZE_MAX;
    }
    size_t need = kiln_cuda_weight_bytes(m) + total_b / 10;
    return free_b > need ? free_b - need : 0;
}

static const kiln_backend_ops k_cuda_ops;

/* Tensor parallelism over N GPUs (tp_size or a list of devices): fewer visible GPUs than N, or a
 * listed ordinal that does not exist, is said first; check_model then refuses N > 1 itself
 * (no NCCL path yet). */
static int check_tp_devices(const kiln_backend_config *bc, kiln_error *err) {
    int n = bc->tp_size > bc->n_devices ? bc->tp_size : bc->n_devices;
    if (n <= 1) return KILN_OK;
    int n_dev = 0;
    cudaError_t e = cudaGetDeviceCount(&n_dev);
    if (e != cudaSuccess) n_dev = 0;
    if (n_dev < n)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cuda backend: tensor parallelism over %d GPUs, but %d visible%s%s",
                        n, n_dev, e != cudaSuccess ? ": " : " (CUDA_VISIBLE_DEVICES)",
                        e != cudaSuccess ? cudaGetErrorString(e) : "");
    for (int i = 0; i < bc->n_devices; i++)
        if (bc->devices[i] < 0 || bc->devices[i] >= n_dev)
            return KILN_ERR(err, KILN_ERR_INVALID_ARG, "cuda backend: tensor parallelism: device %d does not exist "
                            "(%d visible)", bc->devices[i], n_dev);
    return KILN_OK;
}

/* The dtype cuBLASLt writes gate|up's [T][2F] in (SwiGLU reads it back): the weights' 16-bit type
 * (gate_up_16bit, 16-bit activations); on the codes of W8A8 FP8 bf16 where the activations are
 * (fp8_gu16: the unscaled sums, scaled by SwiGLU; their bf16 rounding is the relative error of the
 * bf16 path's gate|up); else f32. In prefill this halves the largest activation of the step
 * (1 x 512: 128 -> 64 MiB a layer written and read back). */
static kiln_dtype gu_ydt(const cuda_backend *c, kiln_dtype gw) {
    if (!c->gu_16bit || c->adt == KILN_DT_F32) return KILN_DT_F32;
    if (gw == KILN_DT_F8_E4M3) return c->fp8_gu16 ? KILN_DT_BF16 : KILN_DT_F32;
    return c->adt;
}

/* A non-blocking stream and its two timing-free events; *have_st / *have_ev count what exists
 * (cuda_destroy frees that much, also after a failure here). st_call / ev_call name the failing
 * call in the error. */
static int make_stream(cudaStream_t *st, int *have_st, cudaEvent_t ev[2], int *have_ev, const char *st_call,
                       const char *ev_call, kiln_error *err) {
    cudaError_t e = cudaStreamCreateWithFlags(st, cudaStreamNonBlocking);
    if (e != cudaSuccess) return kiln_cuda_error(err, e, st_call, __FILE__, __LINE__);
    *have_st = 1;
    for (; *have_ev < 2; (*have_ev)++)
        if ((e = cudaEventCreateWithFlags(&ev[*have_ev], cudaEventDisableTiming)) != cudaSuccess)
            return kiln_cuda_error(err, e, ev_call, __FILE__, __LINE__);
    return KILN_OK;
}

static int cuda_create(kiln_backend **out, const kiln_model *m, const kiln_backend_config *bc, kiln_error *err) {
    *out = NULL;
    const kiln_config *mc = &m->cfg;
    cuda_backend *c = kiln_calloc(1, sizeof *c);
    if (!c) return KILN_ERR(err, KILN_ERR_OOM, "cuda backend: out of memory");
    c->base.ops = &k_cuda_ops;
    c->m = m;
    c->cfg = *bc;
    /* logits rows a step may ask for: one per sequence, or k + 1 per speculating sequence (host
     * logits; every such row is a row of the step, so never more than max_tokens) */
    {
        int lps = bc->max_logits_per_seq > 1 ? bc->max_logits_per_seq : 1;
        long lr = (long)bc->max_seqs * lps;
        if (lps > 1 && lr > bc->max_tokens) lr = bc->max_tokens > bc->max_seqs ? bc->max_tokens : bc->max_seqs;
        c->max_lrows = (int)lr;
    }
    set_options(c, bc);
    const kiln_cuda_options *o = &bc->cuda;
    c->syncs.fail_at = o->fail_alloc_at > 0 ? (uint64_t)o->fail_alloc_at : 0;
    int rc;
    if (c->debug && bc->strict) {
        rc = KILN_ERR(err, KILN_ERR_STRICT, "cuda backend: KILN_CUDA_DEBUG=1 waits after every op (I1); "
                                            "refused under KILN_STRICT=1");
        goto fail;
    }
    c->cap_allocs = 8 * mc->n_layers + MAX_DEV_ALLOCS_FIXED + 1; /* FP8: 4 matrices and 4 scale arrays;
                                                                  * + issue 19's tensors (put_family) */
    c->allocs = kiln_calloc((size_t)c->cap_allocs, sizeof *c->allocs);
    c->layers = kiln_calloc((size_t)mc->n_layers, sizeof *c->layers);
    if (!c->allocs || !c->layers) { rc = KILN_ERR(err, KILN_ERR_OOM, "cuda backend: out of memory"); goto fail; }
    if ((rc = check_tp_devices(bc, err))) goto fail;
    if ((rc = kiln_cuda_check_model(c, err))) goto fail;

    if ((rc = select_device(c, bc, err))) goto fail;
    if ((rc = check_device_memory(c, m, bc, err))) goto fail;
    choose_paths(c, mc, bc);
    if ((rc = make_stream(&c->st, &c->have_stream, c->ev, &c->have_ev, "cudaStreamCreate", "cudaEventCreate", err)))
        goto fail;
    if (c->l2pf_bytes > 0 && /* the L2 prefetch branch of the decode graphs */
        (rc = make_stream(&c->st_pf, &c->have_st_pf, c->ev_pf, &c->have_ev_pf, "cudaStreamCreate(L2 prefetch)",
                          "cudaEventCreate(L2 prefetch)", err)))
        goto fail;
    cublasStatus_t cs = cublasLtCreate(&c->gctx.lt);
    if (cs != CUBLAS_STATUS_SUCCESS) {
        rc = kiln_cublas_error(err, cs, "cublasLtCreate", __FILE__, __LINE__);
        goto fail;
    }
    c->have_lt = 1;
    c->gctx.batch_invariant = bc->batch_invariant;
    /* workspace in both modes: some shapes (a 131072-row LM head) have no workspace-free kernel;
     * batch invariance comes from a fixed algorithm without split-K, not from the workspace */
    c->gctx.ws_bytes = GEMM_WORKSPACE;
    if (c->gctx.ws_bytes && (rc = kiln_cuda_dev_malloc(c, &c->gctx.workspace, c->gctx.ws_bytes, "the GEMM workspace", err)))
        goto fail;
    /* GEMM shapes: refused here when cuBLASLt has no algorithm (I3) */
    int D = mc->dim, qd = mc->n_heads * mc->head_dim, kvd = mc->n_kv_heads * mc->head_dim, F = mc->hidden_dim;
    int T = bc->max_tokens;
    /* FP8 layers: cuBLASLt on the codes (W8A8, per-row scales) or on the bf16 dequantization;
     * where this cuBLASLt has no FP8 kernel with outer-vector scales for a shape (before sm_90),
     * the latter, said in the log and refused under strict mode */
    if (c->fp8_lt8) {
        kiln_cuda_gemm probe;
        kiln_error e2;
        int prc = kiln_cuda_gemm_init(&c->gctx, &probe, qd + 2 * kvd, D, KILN_DT_F8_E4M3, T, &e2);
        kiln_cuda_gemm_free(&probe);
        if (prc) {
            if (bc->strict) {
                rc = KILN_ERR(err, KILN_ERR_STRICT, "cuda backend: FP8 prefill on cuBLASLt not available (%s); refused "
                              "under KILN_STRICT=1 (it would dequantize to bf16)", e2.msg);
                goto fail;
            }
            KILN_WARN("cuda backend: FP8 steps of more than %d rows dequantize to bf16 (%s)",
                     c->fp8_mma_max_rows, e2.msg);
            c->fp8_lt8 = 0;
        }
    }
    /* without cuBLASLt FP8, every step the product takes (up to 64 rows) stays on it: only
     * prefill dequantizes */
    if (c->fp8 && !c->fp8_lt8 && o->fp8_mma_max_rows < 0 && !bc->batch_invariant) c->fp8_mma_max_rows = KILN_FP8_MMA_MAX_ROWS;
    kiln_dtype gw = c->fp8 ? (c->fp8_lt8 ? KILN_DT_F8_E4M3 : KILN_DT_BF16) : c->adt;
    c->fp8_gu16 = c->fp8_lt8 && c->gu_16bit && c->adt == KILN_DT_BF16;
    kiln_dtype gy = KILN_DT_F32;
    if ((rc = kiln_cuda_gemm_init_out(&c->gctx, &c->g_qkv, qd + 2 * kvd, D, gw, gy, T, err)) ||
        (rc = kiln_cuda_gemm_init_out(&c->gctx, &c->g_o, D, qd, gw, gy, T, err)) ||
        (rc = kiln_cuda_gemm_init_out(&c->gctx, &c->g_gu, 2 * F, D, gw, gu_ydt(c, gw), T, err)) ||
        (rc = kiln_cuda_gemm_init_out(&c->gctx, &c->g_d, D, F, gw, gy, T, err)) ||
        (rc = kiln_cuda_gemm_init(&c->gctx, &c->g_lm, mc->vocab_size, D, c->hdt, c->max_lrows, err)) ||
        /* the down projection's split-K first choice is slower at decode sizes (see gemm.h) */
        (c->adt != KILN_DT_F32 && !c->fp8 && (rc = kiln_cuda_gemm_fixed_upto(&c->gctx, &c->g_d, 16, err))))
        goto fail;
    /* KV pool (bf16), scratch, then the weights */
    c->kv_bytes = (size_t)kiln_kv_elems(&bc->kv) * (size_t)bc->kv.elem_bytes; /* bf16 or FP8 */
    if ((rc = kiln_cuda_dev_malloc(c, (void **)&c->kv, c->kv_bytes, "the KV pool", err))) goto fail;
    cudaError_t e = cudaMemsetAsync(c->kv, 0, c->kv_bytes, c->st);
    if (e != cudaSuccess) {
        rc = kiln_cuda_error(err, e, "cudaMemsetAsync(kv)", __FILE__, __LINE__);
        goto fail;
    }
    if ((rc = alloc_scratch(c, err))) goto fail;
    c->pf_covered = kiln_calloc((size_t)T, 1);
    c->run_a = kiln_calloc((size_t)T, sizeof(int32_t));
    c->run_b = kiln_calloc((size_t)T, sizeof(int32_t));
    if (!c->pf_covered || !c->run_a || !c->run_b) {
        rc = KILN_ERR(err, KILN_ERR_OOM, "cuda backend: out of memory");
        goto fail;
    }
    if ((rc = kiln_cuda_upload_weights(c, err))) goto fail;
    /* graphs = 0 (KILN_CUDA_GRAPHS=0) turns the decode and piecewise graphs off; decode graphs for
     * rows up to max_seqs (and 256); piecewise graphs for steps up to piece_max_rows rows
     * (KILN_CUDA_PIECE_MAX, default 256, 0 = none), in buckets of PIECE_ROWS */
    c->graph_max_rows = bc->max_seqs < bc->max_tokens ? bc->max_seqs : bc->max_tokens;
    if (c->graph_max_rows > 256) c->graph_max_rows = 256;
    int piece_max = o->piece_max_rows >= 0 ? o->piece_max_rows : 256;
    if (piece_max > bc->max_tokens) piece_max = bc->max_tokens;
    c->n_piece_buckets = piece_max > 0 ? kiln_cuda_piece_bucket(piece_max, NULL) + 1 : 0;
    /* cuBLASLt's algorithms timed at the row counts steps use, before the graphs capture them */
    if (o->gemm_tune > 0 && !bc->batch_invariant && (rc = kiln_cuda_tune_gemms(c, o->gemm_tune, err)))
        goto fail;
    if (o->graphs != 0 && !c->debug && (rc = kiln_cuda_capture_graphs(c, err))) {
        /* steps then launch kernel by kernel, as with KILN_CUDA_GRAPHS=0; refused in strict mode */
        if (bc->strict) goto fail;
        KILN_WARN("cuda backend: graphs not captured (%s); launching kernels one by one", err->msg);
        kiln_cuda_free_graphs(c);
        cudaGetLastError();
        rc = KILN_OK;
    }
    *out = &c->base;
    return KILN_OK;
fail:
    cuda_destroy(&c->base);
    return rc;
}

static int cuda_finish(kiln_backend *b, kiln_step_result *r, kiln_error *err) {
    cuda_backend *c = (cuda_backend *)b;
    if (!c->n_pending) return KILN_ERR(err, KILN_ERR_INTERNAL, "cuda backend: finish_step without encode_step");
    int par = c->fl[0].par, n_logits = c->fl[0].n_logits, sampled = c->fl[0].sampled;
    c->fl[0] = c->fl[1];
    c->n_pending--;
    b->n_syncs++;
    int rc = kiln_cuda_event_sync(&c->syncs, c->ev[par], err); /* the step's one wait (I1) */
    if (rc) {
        kiln_err_prefix(err, "cuda step: ");
        return rc;
    }
    size_t LR = (size_t)c->max_lrows;
    r->n_logits = n_logits;
    r->vocab = c->m->cfg.vocab_size;
    if (sampled) { /* valid until the step after next is encoded: the engine reads it before */
        const unsigned char *o = c->sout_hb[par];
        r->logits = NULL;
        r->tokens = (const int32_t *)o;
        r->logprob = (const float *)(o + LR * 4);
        r->top_ids = (const int32_t *)(o + LR * 8);
        r->top_lp = (const float *)(o + LR * 8 + LR * KILN_STEP_MAX_TOP * 4);
    } else {
        r->logits = c->logits_h;
    }
    return KILN_OK;
}

static void cuda_memory(const kiln_backend *b, size_t *kv_bytes, size_t *scratch_bytes) {
    const cuda_backend *c = (const cuda_backend *)b;
    if (kv_bytes) *kv_bytes = c->kv_bytes;
    if (scratch_bytes) *scratch_bytes = c->scratch_bytes;
}

/* The engine step as an NVTX range (nvtx3 is header-only; without a profiler injected each
 * push / pop is a call through a no-op pointer): tools/cuda_trace counts the synchronising CUDA
 * calls inside each "kiln_step" range (I1). */
static void cuda_range_push(const char *name) { nvtxRangePushA(name); }
static void cuda_range_pop(void) { nvtxRangePop(); }

/* ops.describe: set_options, select_device and choose_paths as create() runs them, printed
 * (`kiln info --backend cuda`); no weights, no device allocation. The generic shape (no model)
 * is Devstral-Small-2505's. */
typedef struct desc_buf {
    char *p;
    size_t n, len;
} desc_buf;

static void desc_printf(desc_buf *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void desc_printf(desc_buf *d, const char *fmt, ...) {
    if (d->len >= d->n) return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(d->p + d->len, d->n - d->len, fmt, ap);
    va_end(ap);
    if (k > 0) d->len += (size_t)k < d->n - d->len ? (size_t)k : d->n - d->len;
}

static int cuda_describe(const kiln_model *m, const kiln_backend_config *bc, char *buf, size_t n, kiln_error *err) {
    kiln_config gen;
    memset(&gen, 0, sizeof gen);
    gen.dim = 5120, gen.hidden_dim = 32768, gen.n_layers = 40, gen.n_heads = 32, gen.n_kv_heads = 8;
    gen.head_dim = 128, gen.vocab_size = 131072;
    const kiln_config *mc = m ? &m->cfg : &gen;
    if (n) buf[0] = 0;
    cuda_backend *c = kiln_calloc(1, sizeof *c);
    if (!c) return KILN_ERR(err, KILN_ERR_OOM, "cuda backend: out of memory");
    set_options(c, bc);
    int rc = select_device(c, bc, err);
    if (rc) {
        kiln_free(c);
        return rc;
    }
    choose_paths(c, mc, bc);
    const kiln_cuda_target *t = &c->target;
    const kiln_cuda_options *o = &bc->cuda;
    desc_buf d = {buf, n, 0};
    int G = mc->n_kv_heads > 0 ? mc->n_heads / mc->n_kv_heads : 1;
    desc_printf(&d, "card:         %s (device %d), sm_%d%d, %d SMs, %.1f GiB\n", t->card, t->device, t->card_major,
             t->card_minor, t->n_sm, (double)t->card_mem / (1024.0 * 1024 * 1024));
    desc_printf(&d, "build:        CUDA architectures %s; the card runs compute_%d code as sm_%d\n",
                kiln_cuda_build_archs(), t->code_ptx, t->code_sass);
    desc_printf(&d, "target:       sm_%d%d%s: %zu KB shared memory per block, %zu KB per SM, %d registers per SM\n",
             t->cc_major, t->cc_minor, t->forced ? " (forced: kiln_cuda_options.target_sm, KILN_CUDA_TARGET)" : " (the card's)",
             t->smem_per_block / 1024, t->smem_per_sm / 1024, t->regs_per_sm);
    desc_printf(&d, "shape:        %s: hidden %d, intermediate %d, heads %d / %d kv, head_dim %d\n",
             m ? "the model's" : "generic (Devstral-Small-2505; --model for another)", mc->dim, mc->hidden_dim,
             mc->n_heads, mc->n_kv_heads, mc->head_dim);
    if (mc->n_experts > 0)
        desc_printf(&d, "experts:      %d, top %d: routing, counting sort and grouped expert GEMMs on the device "
                        "(moe.cu; 16-bit: the decode kernel below %d rows per expert on average and in batch-invariant "
                        "mode, the tensor-core GEMM from there; f32: CUDA cores)\n",
                    mc->n_experts, mc->n_experts_used, KILN_MOE_TC_MIN_ROWS);
    if (c->pdl) desc_printf(&d, "PDL:          on (steps of %d+ rows)\n", c->pdl);
    else desc_printf(&d, "PDL:          %s\n", t->code_ptx < 90 ? "off (the card runs code from below compute_90)"
                                    : !t->has_pdl      ? "off (target below sm_90)"
                                                       : "off (KILN_CUDA_PDL=0)");
    if (c->l2pf_bytes > 0)
        desc_printf(&d, "L2 prefetch:  each projection's first %lld MB, forked as the kernels before it start "
                        "(decode graphs of %d..%d rows; mode %d)\n",
                    (long long)(c->l2pf_bytes >> 20), L2PF_MIN_ROWS, L2PF_MAX_ROWS, c->l2pf_mode);
    else
        desc_printf(&d, "L2 prefetch:  off (the default but for FP8 W8A8 weights; KILN_CUDA_L2PF_MB)\n");
    desc_printf(&d, "FP8 MMA:      %s\n", t->has_fp8_mma ? "available (sm_89+): FP8 weights run W8A8 (fp8.cu)"
                                                      : "no (target below sm_89): FP8 weights run weight-only");
    desc_printf(&d, "FP8 weights:  tensor cores on the codes up to %d rows (KILN_CUDA_FP8_MMA), then cuBLASLt FP8 "
                    "(per-tensor / per-channel scales, W8A8), else dequantization + cuBLASLt; KV cache bf16 or fp8\n",
                c->fp8_mma_max_rows);
    desc_printf(&d, "wgmma:        %s\n", t->has_wgmma ? "available (sm_90a code; no kernel uses it yet)" : "no");
    size_t tc = kiln_cuda_attention_tc_smem(mc->head_dim);
    if (c->pf_tile_rows > 0)
        desc_printf(&d, "attention:    prefill chunks of %d+ rows on tensor cores (tiles of %d rows x %d heads, "
                     "%zu KB shared memory per CTA)\n",
                 PREFILL_MIN_ROWS, c->pf_tile_rows, G, tc / 1024);
    else if (bc->batch_invariant)
        desc_printf(&d, "attention:    split kernel for every row (batch-invariant mode)\n");
    else if (!tc)
        desc_printf(&d, "attention:    split kernel for every row (tensor-core kernels: head_dim %d or %d heads per group "
                     "not taken)\n", mc->head_dim, G);
    else
        desc_printf(&d, "attention:    split kernel for every row (tensor-core kernels need %zu KB shared memory per "
                     "block, the target has %zu KB)\n", tc / 1024, t->smem_per_block / 1024);
    int f8r = bc->kv.dtype == KILN_KV_FP8_E4M3 && G <= 8; /* attention_decode_f8r_kernel */
    if (c->pf_tile_rows > 0 && c->tc_blocks_per_sm > 0 && c->decode_tc_rows < (1 << 30))
        desc_printf(&d, "              decode rows on tensor cores (steps of %d+ rows%s), split for %d CTAs per SM\n",
                 c->decode_tc_rows, f8r ? "; the FP8 pool's codes converted in registers" : "", c->tc_blocks_per_sm);
    desc_printf(&d, "              split kernel: windows sized for %d blocks per SM x %d SMs\n", c->att_blocks_per_sm,
             c->n_sm);
    if (c->gemv_max_rows)
        desc_printf(&d, "GEMV:         up to %d rows (rows per warp for %d SMs)\n", c->gemv_max_rows, c->n_sm);
    else
        desc_printf(&d, "GEMV:         off\n");
    if (c->skinny_max_rows)
        desc_printf(&d, "skinny:       up to %d rows (variant for %d SMs: %d at 8 rows of the LM head)\n",
                 c->skinny_max_rows, c->n_sm, kiln_cuda_skinny_pick_variant(8, mc->vocab_size, mc->dim, c->n_sm));
    else
        desc_printf(&d, "skinny:       off\n");
    desc_printf(&d, "GGUF blocks:  q8_0 q4_0 q4_1 q5_0 q5_1 q4_k q5_k q6_k kept quantized; q4_k q6_k q8_0: tensor "
                    "cores dequantizing in registers from %d up to %d rows (q8_0 from %d up to %d); the others: GEMV on int8 "
                    "activations (dp4a) up to %d rows, tensor cores on dequantized tiles up to %d; then dequantization + "
                    "cuBLASLt\n",
                KILN_QREG_MIN_ROWS, c->qreg_max_rows, KILN_QREG_Q8_0_MIN_ROWS,
                c->qreg_max_rows < KILN_QREG_Q8_0_MAX_ROWS ? c->qreg_max_rows : KILN_QREG_Q8_0_MAX_ROWS, c->qgemv_max_rows,
                c->qmma_max_rows);
    if (c->wide_min_rows)
        desc_printf(&d, "wide:         %d..%d rows, variant %d (%zu KB shared memory per CTA)%s\n", c->wide_min_rows,
                 KILN_WIDE_MAX_ROWS, c->wide_variant, kiln_cuda_gemm_wide_smem(c->wide_variant, 16, mc->dim) / 1024,
                 c->glu ? ", SwiGLU fused" : "");
    else if (o->wide_min_rows != 0 && !bc->batch_invariant)
        desc_printf(&d, "wide:         off (no variant fits %zu KB shared memory per block)\n", t->smem_per_block / 1024);
    else
        desc_printf(&d, "wide:         off\n");
    kiln_free(c);
    return KILN_OK;
}

static const kiln_backend_ops k_cuda_ops = {
    .name = "cuda",
    .kv_dtype = KILN_KV_BF16,
    .kv_dtypes = (1u << KILN_KV_BF16) | (1u << KILN_KV_FP8_E4M3), /* fp8: E4M3, per-layer k / v scales (fp8.cu) */
    .max_logits_per_seq = 1 + KILN_SPEC_MAX_TOKENS, /* speculative verification */
    .check_weight = kiln_cuda_check_weight,
    .samples = 1,
    .overlap = 1,
    .sample_rows = 1, /* every verification row drawn at its own output position (cuda_plan.c) */
    .masks = 1,       /* grammar masks applied by the sampler (cuda_plan.c upload_masks, sample.cu) */
    .features = KILN_CUDA_FEATURES, /* issue 19: biases, q/k norms, RoPE scaling, windows, experts */
    .create = cuda_create,
    .encode_step = kiln_cuda_encode,
    .finish_step = cuda_finish,
    .memory = cuda_memory,
    .destroy = cuda_destroy,
    .range_push = cuda_range_push,
    .range_pop = cuda_range_pop,
    .probe_floors = kiln_cuda_probe_floors,
    .describe = cuda_describe,
    .kv_budget = cuda_kv_budget,
};

/* The one symbol libkiln_cuda.so exports (src/backend/backend.c loads it; the GPU tests link the
 * backend statically and reach it directly). NULL when the caller was built against another
 * layout of kiln_backend_ops / kiln_backend_config. */
KILN_CUDA_EXPORT const kiln_backend_ops *kiln_backend_cuda_entry(int abi_version) {
    return abi_version == KILN_BACKEND_ABI ? &k_cuda_ops : NULL;
}

const kiln_cuda_syncs *kiln_backend_cuda_syncs(const kiln_backend *b) {
    return b && b->ops == &k_cuda_ops ? &((const cuda_backend *)b)->syncs : NULL;
}

uint64_t kiln_backend_cuda_graph_steps(const kiln_backend *b) {
    return b && b->ops == &k_cuda_ops ? ((const cuda_backend *)b)->graph_steps : 0;
}

uint64_t kiln_backend_cuda_l2pf_forks(const kiln_backend *b) {
    return b && b->ops == &k_cuda_ops ? ((const cuda_backend *)b)->l2pf_forks : 0;
}

uint64_t kiln_backend_cuda_piece_steps(const kiln_backend *b) {
    return b && b->ops == &k_cuda_ops ? ((const cuda_backend *)b)->piece_steps : 0;
}
