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
 *   xf[n][D] = rmsnorm(x + proj) of the last row of each sequence with seq_logits (gathered)
 *   logits[n][V] f32 = xf Wlm^T, then either drawn on the device (sample.cu: penalties from
 *                      device tables, bias, temperature, top-k/p, min-p, Philox; one D2H copy of
 *                      the tokens and logprobs) or copied back whole (device_sample = 0)
 * GEMMs: gemv.cu / skinny_wide.cu at decode sizes where they stream the weights faster than
 * cuBLASLt (gemm_choice; not in batch-invariant mode), cuBLASLt otherwise.
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
 * quantized or mixed-dtype layer matrices, head_dim > 256 or not a multiple of 8, no CUDA device or one older
 * than sm_90, out of device memory. KILN_STRICT=1 also refuses KILN_CUDA_DEBUG=1 (its per-op
 * waits break I1). KILN_CUDA_DEBUG=1: wait and check after every op, poison scratch with NaN at
 * each step, to localise asynchronous errors.
 *
 * Weights: uploaded from the mmapped host tensors through two pinned 32 MiB staging buffers
 * (progress bar on stderr); dummy models loaded with host_data = 0 are filled on the device
 * with kiln_dummy_value's formula (dummy_fill.cu), bit-identical to the host's.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "backend/backend.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/sync.h"
#include "util/alloc.h"
#include "util/error.h"
#include "util/log.h"

#define STAGE_BYTES ((size_t)32 << 20)
#define GEMM_WORKSPACE ((size_t)32 << 20)
#define PREFILL_MIN_ROWS 16 /* chunks this long use the tensor-core kernel */
#define PIECE_ROWS 16       /* piecewise graphs: steps are padded to a multiple of this many rows */
#define TC_MIN_WINDOW 64    /* positions: the tensor-core decode split's smallest window (one key tile) */
#define MAX_DEV_ALLOCS_FIXED (40 + 1)

typedef struct dev_alloc {
    void *p;
    size_t n;
} dev_alloc;

typedef struct cuda_layer {
    void *wqkv; /* [(H + 2KV) hd][D] adt */
    void *wo;   /* [D][H hd] */
    void *wgu;  /* [2F][D] (gate rows, then up rows) */
    void *wd;   /* [D][F] */
} cuda_layer;

typedef struct cuda_backend {
    kiln_backend base;
    const kiln_model *m;
    kiln_backend_config cfg;
    kiln_cuda_syncs syncs;
    int debug;
    cudaStream_t st;
    int have_stream;
    kiln_cuda_gemm_ctx gctx;
    int have_lt;
    kiln_dtype adt, edt, hdt; /* layer matrices, embedding, LM head */
    dev_alloc *allocs;
    int n_allocs, cap_allocs;
    /* weights */
    void *emb, *lm;
    float *norms; /* [2 L + 1][D]: attn_norm[l], ffn_norm[l], ..., out_norm */
    cuda_layer *layers;
    kiln_cuda_gemm g_qkv, g_o, g_gu, g_d, g_lm;
    /* KV pool, bf16 */
    uint16_t *kv;
    size_t kv_bytes;
    /* scratch */
    float *x, *qkv, *proj, *gu, *logits_d;
    void *xn, *att, *act, *xf;
    size_t scratch_bytes;
    float *att_scratch; /* [max_tokens][H][att_splits][hd + 2] attention windows */
    int att_split_w, att_splits;
    /* step descriptor: pinned staging and its device copy, same layout */
    unsigned char *desc_h, *desc_d;  /* desc_h: desc_hb[par], the buffer of the step being encoded */
    unsigned char *desc_hb[2];
    size_t desc_bytes, off_tok, off_pos, off_rowseq, off_lrows, off_slot, off_tiles, off_bt, off_prev;
    /* prefill attention on tensor cores (attention_prefill.cu): rows of chunks >= PREFILL_MIN_ROWS
     * go in tiles; the other rows (decodes, short chunks) form runs for the decode kernel (or
     * the split kernel) */
    int pf_tile_rows, pf_max_tiles; /* 0 rows: not available (shape, or batch-invariant mode) */
    int decode_tc_rows;             /* steps of >= this many rows put every row on tensor cores
                                     * (KILN_CUDA_DECODE_TC, default 1: always; 0 = never; H100,
                                     * attention_decode_kernel against the split kernel, same call:
                                     * batch 2 16.56 -> 16.44 ms, batch 4 16.73 -> 16.57; batch 1
                                     * 16.15 -> 16.00 in another) */
    unsigned char *pf_covered;      /* host [max_tokens] */
    int32_t *run_a, *run_b;         /* host [max_tokens] runs of uncovered rows [run_a, run_b) */
    float *logits_h; /* pinned [max_seqs][V] */
    /* device sampling (sample.cu): penalty tables, per-step parameters, results */
    int32_t *pen_counts;  /* [max_seqs][V] output-token counts per table row */
    uint8_t *pen_prompt;  /* [max_seqs][V] 1 where the id is in the prompt */
    float *samp_work;     /* [max_seqs][V] processed logits */
    unsigned char *sdesc_h, *sdesc_d; /* sampling descriptor (pinned / device), packed per step */
    unsigned char *sdesc_hb[2], *sout_hb[2]; /* per parity (two steps in flight); sdesc_h / sout_h
                                              * point at the encoded step's */
    size_t sdesc_bytes;
    unsigned char *sout_d, *sout_h;   /* [S] tok, [S] logprob, [S][20] top ids, [S][20] top lp */
    size_t sout_bytes;
    /* Steps in flight (overlapped scheduling: at most two). Step i uses the pinned buffers of
     * parity i & 1; its end is marked by ev[parity]; finish_step waits for the oldest. */
    struct { int n_logits, sampled, par; } fl[2]; /* fl[0] oldest */
    int n_pending, par;
    cudaEvent_t ev[2];
    int have_ev;
    int last_n_logits, last_sampled; /* of the last encoded step: the rows prev_row may name */
    int gemv_max_rows;   /* GEMV allowed up to this many rows (0: never; KILN_CUDA_GEMV) */
    int skinny_max_rows; /* skinny.cu up to this many rows (0: never; KILN_CUDA_SKINNY) */
    int wide_min_rows;   /* skinny_wide.cu for wide matrices from this many rows to 16 (0: never;
                          * KILN_CUDA_WIDE) */
    int wide_variant;    /* its pipeline shape (KILN_CUDA_WIDE_VARIANT, 0 = the kernel's default) */
    int glu;             /* gate|up on the GEMV or wide kernel with SwiGLU in its epilogue (KILN_CUDA_GLU,
                          * default 1) */
    int gu_16bit;        /* cuBLASLt writes gate|up in the weights' 16-bit type (default; 0 with
                          * KILN_CUDA_GU_16BIT=0: f32): prefill +3.5 % on the H100 (batch 16
                          * 13,553 -> 14,030 tok/s, same call); the 2-layer mistral-tiny step
                          * test's worst row went 0.0141 from the CPU (bound 3e-2) */
    int n_sm;          /* streaming multiprocessors (sizes the attention split) */
    /* CUDA graphs of decode steps: [n_graph_rows][n_graph_widths], rows 1, 2, 4, .., graph_max_rows */
    cudaGraphExec_t *graphs;
    int graph_max_rows, n_graph_rows, n_graph_widths;
    int graph_widths[32];
    uint64_t graph_steps; /* steps replayed from a graph */
    /* piecewise graphs of the other steps (prefill, mixed, decodes the decode graphs do not
     * take): [n_piece_buckets][L + 1], buckets of 1, 2, 4, 8, 16 rows, then multiples of 16 */
    cudaGraphExec_t *pieces;
    int n_piece_buckets;  /* 0: none (KILN_CUDA_PIECE_MAX=0, debug, capture failed) */
    uint64_t piece_steps; /* steps run through the piecewise graphs */
    int att_blocks_per_sm; /* resident attention blocks per SM: the split makes one wave
                            * (KILN_CUDA_ATT_BPS overrides the occupancy query) */
    int tc_blocks_per_sm;  /* the same for the tensor-core decode split (0: off,
                            * KILN_CUDA_DECODE_TC_SPLIT=0) */
} cuda_backend;

static size_t dt_size(kiln_dtype dt) { return dt == KILN_DT_F32 ? 4 : 2; }

static int dev_malloc(cuda_backend *c, void **p, size_t n, const char *what, kiln_error *err) {
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

/* The piecewise-graph bucket of a step of T rows (1, 2, 4, 8, 16, then multiples of
 * PIECE_ROWS: GEMMs of a few rows keep their GEMV kernels) and its rows (*Tb). */
static int piece_bucket(int T, int *Tb) {
    int b = 0, r = 1;
    while (r < T && r < PIECE_ROWS) { r *= 2; b++; }
    if (T > PIECE_ROWS) {
        b += (T - 1) / PIECE_ROWS;
        r = PIECE_ROWS * ((T - 1) / PIECE_ROWS + 1);
    }
    if (Tb) *Tb = r;
    return b;
}

/* the decode and piecewise graphs (capture_graphs), whole or partly captured */
static void free_graphs(cuda_backend *c) {
    if (c->graphs) {
        for (int i = 0; i < 2 * c->n_graph_rows * c->n_graph_widths; i++)
            if (c->graphs[i]) cudaGraphExecDestroy(c->graphs[i]);
        kiln_free(c->graphs);
        c->graphs = NULL;
    }
    if (c->pieces) {
        for (int i = 0; i < c->n_piece_buckets * (c->m->cfg.n_layers + 1); i++)
            if (c->pieces[i]) cudaGraphExecDestroy(c->pieces[i]);
        kiln_free(c->pieces);
        c->pieces = NULL;
    }
    c->n_piece_buckets = 0;
}

static void cuda_destroy(kiln_backend *b) {
    cuda_backend *c = (cuda_backend *)b;
    if (!c) return;
    kiln_error e2;
    if (c->have_stream) (void)kiln_cuda_stream_sync(&c->syncs, c->st, &e2);
    free_graphs(c);
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
        if (c->have_ev > i) cudaEventDestroy(c->ev[i]);
    }
    kiln_cuda_host_free(&c->syncs, c->logits_h);
    if (c->have_lt) cublasLtDestroy(c->gctx.lt);
    if (c->have_stream) cudaStreamDestroy(c->st);
    kiln_free(c->allocs);
    kiln_free(c->layers);
    kiln_free(c->pf_covered);
    kiln_free(c->run_a);
    kiln_free(c->run_b);
    kiln_free(c);
}

/* ---- weight upload ------------------------------------------------------------------------ */

typedef struct uploader {
    cuda_backend *c;
    unsigned char *stage[2]; /* pinned */
    cudaEvent_t ev[2];
    int used[2], have_ev[2];
    int k;
    size_t done, total;
    int last_pct, tty;
} uploader;

static void progress(uploader *u, int final) {
    int pct = u->total ? (int)(100.0 * (double)u->done / (double)u->total) : 100;
    if (!final && (!u->tty || pct == u->last_pct)) return;
    u->last_pct = pct;
    char bar[41];
    int fill = pct * 40 / 100;
    for (int i = 0; i < 40; i++) bar[i] = i < fill ? '#' : '.';
    bar[40] = 0;
    fprintf(stderr, "%skiln cuda: weights [%s] %3d%% %.2f / %.2f GiB%s", u->tty ? "\r" : "", bar, pct,
            u->done / 1073741824.0, u->total / 1073741824.0, final || !u->tty ? "\n" : "");
    fflush(stderr);
}

static int upload_bytes(uploader *u, void *dst, const void *src, size_t n, kiln_error *err) {
    cuda_backend *c = u->c;
    const unsigned char *s = src;
    unsigned char *d = dst;
    while (n > 0) {
        size_t chunk = n < STAGE_BYTES ? n : STAGE_BYTES;
        int k = u->k;
        u->k ^= 1;
        if (u->used[k]) { /* the copy that last read this buffer must be done */
            int rc = kiln_cuda_event_sync(&c->syncs, u->ev[k], err);
            if (rc) return rc;
        }
        memcpy(u->stage[k], s, chunk);
        KILN_CUDA_TRY(err, cudaMemcpyAsync(d, u->stage[k], chunk, cudaMemcpyHostToDevice, c->st));
        KILN_CUDA_TRY(err, cudaEventRecord(u->ev[k], c->st));
        u->used[k] = 1;
        s += chunk;
        d += chunk;
        n -= chunk;
        u->done += chunk;
        progress(u, 0);
    }
    return KILN_OK;
}

/* One tensor into dst: from its host data, or generated on the device for a dummy model
 * without host data. */
static int put_tensor(uploader *u, void *dst, const kiln_tensor *t, kiln_error *err) {
    cuda_backend *c = u->c;
    const kiln_model *m = c->m;
    if (t->data) return upload_bytes(u, dst, t->data, t->nbytes, err);
    if (m->format != KILN_FORMAT_DUMMY)
        return KILN_ERR(err, KILN_ERR_INTERNAL, "cuda backend: tensor %s has no data", t->name);
    int64_t n = t->ndim == 1 ? t->shape[0] : t->shape[0] * t->shape[1];
    cudaError_t e = kiln_cuda_dummy_fill(dst, t->dtype, n, m->dummy_seed, (int)(t - m->tensors),
                                         t->ndim == 1 ? 0 : t->shape[1], c->st);
    if (e != cudaSuccess) return kiln_cuda_error(err, e, "kiln_cuda_dummy_fill", __FILE__, __LINE__);
    u->done += t->nbytes;
    progress(u, 0);
    return KILN_OK;
}

/* Several tensors placed back to back in one device buffer. */
static int put_group(uploader *u, void **dst, const kiln_tensor *const *ts, int n, const char *what,
                     kiln_error *err) {
    size_t total = 0;
    for (int i = 0; i < n; i++) total += ts[i]->nbytes;
    int rc = dev_malloc(u->c, dst, total, what, err);
    if (rc) return rc;
    size_t off = 0;
    for (int i = 0; i < n && !rc; i++) {
        rc = put_tensor(u, (unsigned char *)*dst + off, ts[i], err);
        off += ts[i]->nbytes;
    }
    return rc;
}

static int upload_weights(cuda_backend *c, kiln_error *err) {
    const kiln_model *m = c->m;
    const kiln_config *mc = &m->cfg;
    uploader u;
    memset(&u, 0, sizeof u);
    u.c = c;
    u.tty = isatty(2);
    u.last_pct = -1;
    int rc = KILN_OK;
    for (int i = 0; i < 2 && !rc; i++) {
        rc = kiln_cuda_host_alloc(&c->syncs, (void **)&u.stage[i], STAGE_BYTES, "weight staging", err);
        if (!rc) {
            cudaError_t e = cudaEventCreateWithFlags(&u.ev[i], cudaEventDisableTiming);
            if (e != cudaSuccess) rc = kiln_cuda_error(err, e, "cudaEventCreate", __FILE__, __LINE__);
            else u.have_ev[i] = 1;
        }
    }
    size_t D = (size_t)mc->dim;
    for (int l = 0; l < mc->n_layers; l++) {
        const kiln_layer_weights *w = &m->layers[l];
        u.total += w->wq->nbytes + w->wk->nbytes + w->wv->nbytes + w->wo->nbytes + w->w_gate->nbytes +
                   w->w_up->nbytes + w->w_down->nbytes;
    }
    u.total += m->tok_embd->nbytes + (m->lm_head != m->tok_embd ? m->lm_head->nbytes : 0);
    u.total += (size_t)(2 * mc->n_layers + 1) * D * sizeof(float);
    if (!rc) rc = put_group(&u, &c->emb, &m->tok_embd, 1, "the embedding", err);
    if (!rc) {
        if (m->lm_head == m->tok_embd) c->lm = c->emb;
        else rc = put_group(&u, &c->lm, &m->lm_head, 1, "the LM head", err);
    }
    for (int l = 0; l < mc->n_layers && !rc; l++) {
        const kiln_layer_weights *w = &m->layers[l];
        const kiln_tensor *qkv[3] = {w->wq, w->wk, w->wv}, *gu[2] = {w->w_gate, w->w_up};
        if (!rc) rc = put_group(&u, &c->layers[l].wqkv, qkv, 3, "q/k/v projections", err);
        if (!rc) rc = put_group(&u, &c->layers[l].wo, &w->wo, 1, "o projection", err);
        if (!rc) rc = put_group(&u, &c->layers[l].wgu, gu, 2, "gate/up projections", err);
        if (!rc) rc = put_group(&u, &c->layers[l].wd, &w->w_down, 1, "down projection", err);
    }
    if (!rc) rc = dev_malloc(c, (void **)&c->norms, (size_t)(2 * mc->n_layers + 1) * D * sizeof(float), "norms", err);
    for (int l = 0; l < mc->n_layers && !rc; l++) {
        rc = upload_bytes(&u, c->norms + (size_t)(2 * l) * D, m->layers[l].attn_norm, D * sizeof(float), err);
        if (!rc) rc = upload_bytes(&u, c->norms + (size_t)(2 * l + 1) * D, m->layers[l].ffn_norm, D * sizeof(float), err);
    }
    if (!rc) rc = upload_bytes(&u, c->norms + (size_t)(2 * mc->n_layers) * D, m->out_norm, D * sizeof(float), err);
    /* the staging buffers are freed below: every copy must be done (a load-time wait) */
    if (!rc) rc = kiln_cuda_stream_sync(&c->syncs, c->st, err);
    if (!rc) progress(&u, 1);
    else if (u.tty) fprintf(stderr, "\n");
    if (rc) { /* do not free staging memory a copy may still read */
        kiln_error e2;
        (void)kiln_cuda_stream_sync(&c->syncs, c->st, &e2);
    }
    for (int i = 0; i < 2; i++) {
        if (u.have_ev[i]) cudaEventDestroy(u.ev[i]);
        kiln_cuda_host_free(&c->syncs, u.stage[i]);
    }
    return rc;
}

/* ---- create --------------------------------------------------------------------------------- */

static int dense_dtype(kiln_dtype dt) { return dt == KILN_DT_F32 || dt == KILN_DT_F16 || dt == KILN_DT_BF16; }

/* Everything this backend cannot run is refused here, before any device memory is taken (I3). */
static int check_model(cuda_backend *c, kiln_error *err) {
    const kiln_model *m = c->m;
    const kiln_config *mc = &m->cfg;
    const kiln_backend_config *bc = &c->cfg;
    if (mc->head_dim <= 0 || mc->head_dim > 256 || mc->head_dim % 8)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cuda backend: head_dim %d unsupported (a multiple of 8, <= 256)", mc->head_dim);
    if (mc->n_kv_heads <= 0 || mc->n_heads % mc->n_kv_heads || mc->n_heads > 65535 || mc->n_heads / mc->n_kv_heads > 16)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cuda backend: %d heads over %d KV heads unsupported", mc->n_heads,
                        mc->n_kv_heads);
    if (bc->kv.n_kv_heads != mc->n_kv_heads || bc->kv.head_dim != mc->head_dim || bc->kv.n_layers != mc->n_layers ||
        bc->kv.block_size <= 0 || bc->kv.n_blocks < 2)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "cuda backend: KV layout does not match the model");
    if (bc->max_tokens <= 0 || bc->max_seqs <= 0 || bc->max_blocks_per_seq <= 0)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "cuda backend: empty step capacities");
    if (!dense_dtype(m->tok_embd->dtype))
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cuda backend: %s embedding not supported yet (f32/f16/bf16 only)",
                        kiln_dtype_name(m->tok_embd->dtype));
    if (!dense_dtype(m->lm_head->dtype))
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cuda backend: %s LM head not supported yet (f32/f16/bf16 only)",
                        kiln_dtype_name(m->lm_head->dtype));
    c->edt = m->tok_embd->dtype;
    c->hdt = m->lm_head->dtype;
    c->adt = m->layers[0].wq->dtype;
    for (int l = 0; l < mc->n_layers; l++) {
        const kiln_layer_weights *w = &m->layers[l];
        const kiln_tensor *ts[7] = {w->wq, w->wk, w->wv, w->wo, w->w_gate, w->w_up, w->w_down};
        for (int i = 0; i < 7; i++) {
            if (!dense_dtype(ts[i]->dtype))
                return KILN_ERR(err, KILN_ERR_UNSUPPORTED,
                                "cuda backend: %s weights (%s) not supported yet (f32/f16/bf16 only)",
                                kiln_dtype_name(ts[i]->dtype), ts[i]->name);
            if (ts[i]->dtype != c->adt)
                return KILN_ERR(err, KILN_ERR_UNSUPPORTED,
                                "cuda backend: mixed matrix dtypes (%s is %s, %s is %s) not supported",
                                ts[i]->name, kiln_dtype_name(ts[i]->dtype), w->wq->name, kiln_dtype_name(c->adt));
        }
    }
    return KILN_OK;
}

static int alloc_scratch(cuda_backend *c, kiln_error *err) {
    const kiln_config *mc = &c->m->cfg;
    c->att_split_w = kiln_cuda_attention_split_width(&c->att_splits);
    size_t T = (size_t)c->cfg.max_tokens, S = (size_t)c->cfg.max_seqs, D = (size_t)mc->dim;
    size_t qd = (size_t)mc->n_heads * mc->head_dim, kvd = (size_t)mc->n_kv_heads * mc->head_dim;
    size_t F = (size_t)mc->hidden_dim, V = (size_t)mc->vocab_size, a = dt_size(c->adt);
    struct { void **p; size_t n; const char *what; } bufs[] = {
        {(void **)&c->x, T * D * 4, "x"},
        {&c->xn, T * D * a, "xn"},
        {(void **)&c->qkv, T * (qd + 2 * kvd) * 4, "qkv"},
        {&c->att, T * qd * a, "attention output"},
        {(void **)&c->att_scratch, T * (size_t)mc->n_heads * c->att_splits * (mc->head_dim + 2) * 4, "attention splits"},
        {(void **)&c->proj, T * D * 4, "projection output"},
        {(void **)&c->gu, T * 2 * F * 4, "gate/up output"},
        {&c->act, T * F * a, "SwiGLU output"},
        {&c->xf, S * D * dt_size(c->hdt), "final norm output"},
        {(void **)&c->logits_d, S * V * 4, "logits"},
    };
    int rc;
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        if ((rc = dev_malloc(c, bufs[i].p, bufs[i].n, bufs[i].what, err))) return rc;
        c->scratch_bytes += bufs[i].n;
    }
    /* the step descriptor: [T] ids, positions, row -> sequence; [S] logit rows; [T] slots (i64);
     * [S][max_blocks_per_seq] block table (packed per step) */
    size_t off = 0;
    c->off_tok = off; off += T * 4;
    c->off_pos = off; off += T * 4;
    c->off_rowseq = off; off += T * 4;
    c->off_lrows = off; off += S * 4;
    off = (off + 7) / 8 * 8;
    c->off_slot = off; off += T * 8;
    c->pf_max_tiles = (int)(T + S);
    c->off_tiles = off; off += (size_t)c->pf_max_tiles * 2 * 4;
    c->off_prev = off; off += T * 4;
    c->off_bt = off; off += S * (size_t)c->cfg.max_blocks_per_seq * 4;
    c->desc_bytes = off;
    if ((rc = dev_malloc(c, (void **)&c->desc_d, off, "the step descriptor", err))) return rc;
    for (int i = 0; i < 2; i++)
        if ((rc = kiln_cuda_host_alloc(&c->syncs, (void **)&c->desc_hb[i], off, "the step descriptor", err))) return rc;
    if ((rc = kiln_cuda_host_alloc(&c->syncs, (void **)&c->logits_h, S * V * 4, "host logits", err))) return rc;
    c->scratch_bytes += off;

    /* device sampling: tables, work rows, scratch, the packed per-step descriptor (rows, bias,
     * suppression, penalty loads: worst case sizes) and the results */
    size_t cap_pen = (size_t)c->cfg.max_model_len + T;
    c->sdesc_bytes = S * sizeof(kiln_cuda_sample_row) + S * KILN_MAX_LOGIT_BIAS * 8 +
                     S * (KILN_MAX_EOS + KILN_MAX_STOP_IDS) * 4 + (3 * S + 1) * 4 + cap_pen * 4 + 64;
    c->sout_bytes = S * (2 + 2 * KILN_STEP_MAX_TOP) * 4;
    struct { void **p; size_t n; const char *what; } sb[] = {
        {(void **)&c->pen_counts, S * V * 4, "penalty counts"},
        {(void **)&c->pen_prompt, S * V, "penalty prompt marks"},
        {(void **)&c->samp_work, kiln_cuda_sample_work_bytes((int)S, (int)V), "sampling rows"},
        {(void **)&c->sdesc_d, c->sdesc_bytes, "sampling descriptor"},
        {(void **)&c->sout_d, c->sout_bytes, "sampling results"},
    };
    for (size_t i = 0; i < sizeof sb / sizeof sb[0]; i++) {
        if ((rc = dev_malloc(c, sb[i].p, sb[i].n, sb[i].what, err))) return rc;
        c->scratch_bytes += sb[i].n;
    }
    for (int i = 0; i < 2; i++)
        if ((rc = kiln_cuda_host_alloc(&c->syncs, (void **)&c->sdesc_hb[i], c->sdesc_bytes, "sampling descriptor", err)) ||
            (rc = kiln_cuda_host_alloc(&c->syncs, (void **)&c->sout_hb[i], c->sout_bytes, "sampling results", err)))
            return rc;
    cudaError_t e = cudaMemsetAsync(c->pen_counts, 0, S * V * 4, c->st);
    if (e == cudaSuccess) e = cudaMemsetAsync(c->pen_prompt, 0, S * V, c->st);
    if (e != cudaSuccess) return kiln_cuda_error(err, e, "cudaMemsetAsync(penalty tables)", __FILE__, __LINE__);
    return KILN_OK;
}

static int capture_graphs(cuda_backend *c, kiln_error *err);

static int cuda_create(kiln_backend **out, const kiln_model *m, const kiln_backend_config *bc, kiln_error *err) {
    *out = NULL;
    const kiln_config *mc = &m->cfg;
    cuda_backend *c = kiln_calloc(1, sizeof *c);
    if (!c) return KILN_ERR(err, KILN_ERR_OOM, "cuda backend: out of memory");
    c->base.ops = kiln_backend_cuda_ops();
    c->m = m;
    c->cfg = *bc;
    const char *dv = getenv("KILN_CUDA_DEBUG");
    c->debug = dv && strcmp(dv, "1") == 0;
    /* KILN_CUDA_GEMV: rows up to which the GEMV kernel replaces cuBLASLt (default 8, 0 = off) */
    const char *gv = getenv("KILN_CUDA_GEMV");
    c->gemv_max_rows = gv && *gv ? atoi(gv) : KILN_GEMV_MAX_ROWS;
    if (c->gemv_max_rows < 0 || c->gemv_max_rows > KILN_GEMV_MAX_ROWS || bc->batch_invariant) c->gemv_max_rows = 0;
    const char *dtc = getenv("KILN_CUDA_DECODE_TC");
    c->decode_tc_rows = dtc && *dtc ? atoi(dtc) : 1;
    if (c->decode_tc_rows <= 0) c->decode_tc_rows = 1 << 30;
    const char *g16 = getenv("KILN_CUDA_GU_16BIT");
    c->gu_16bit = !(g16 && strcmp(g16, "0") == 0);
    const char *wd = getenv("KILN_CUDA_WIDE");
    /* from 4 rows (H100, same call, SwiGLU fused: batch 4 16.89 -> 16.75 ms, batch 2 16.58 -> 16.61) */
    c->wide_min_rows = wd && *wd ? atoi(wd) : 4;
    if (c->wide_min_rows < 0 || c->wide_min_rows > KILN_WIDE_MAX_ROWS || bc->batch_invariant) c->wide_min_rows = 0;
    const char *wv = getenv("KILN_CUDA_WIDE_VARIANT");
    c->wide_variant = wv && *wv ? atoi(wv) : 0;
    if (c->wide_variant < 0 || c->wide_variant > KILN_WIDE_VARIANTS) c->wide_variant = 0;
    const char *wg = getenv("KILN_CUDA_GLU");
    c->glu = !(wg && strcmp(wg, "0") == 0);
    const char *sk = getenv("KILN_CUDA_SKINNY");
    c->skinny_max_rows = sk && *sk ? atoi(sk) : 8;
    if (c->skinny_max_rows < 0 || c->skinny_max_rows > KILN_SKINNY_MAX_ROWS || bc->batch_invariant) c->skinny_max_rows = 0;
    int rc;
    if (c->debug && bc->strict) {
        rc = KILN_ERR(err, KILN_ERR_STRICT, "cuda backend: KILN_CUDA_DEBUG=1 waits after every op (I1); "
                                            "refused under KILN_STRICT=1");
        goto fail;
    }
    c->cap_allocs = 4 * mc->n_layers + MAX_DEV_ALLOCS_FIXED;
    c->allocs = kiln_calloc((size_t)c->cap_allocs, sizeof *c->allocs);
    c->layers = kiln_calloc((size_t)mc->n_layers, sizeof *c->layers);
    if (!c->allocs || !c->layers) { rc = KILN_ERR(err, KILN_ERR_OOM, "cuda backend: out of memory"); goto fail; }
    if ((rc = check_model(c, err))) goto fail;

    int n_dev = 0;
    cudaError_t e = cudaGetDeviceCount(&n_dev);
    if (e != cudaSuccess || n_dev <= 0) {
        rc = KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cuda backend: no CUDA device (%s)",
                      e != cudaSuccess ? cudaGetErrorString(e) : "none found");
        goto fail;
    }
    struct cudaDeviceProp prop;
    if ((e = cudaGetDeviceProperties(&prop, 0)) != cudaSuccess || (e = cudaSetDevice(0)) != cudaSuccess) {
        rc = kiln_cuda_error(err, e, "cudaGetDeviceProperties/cudaSetDevice(0)", __FILE__, __LINE__);
        goto fail;
    }
    c->n_sm = prop.multiProcessorCount;
    const char *bps = getenv("KILN_CUDA_ATT_BPS");
    c->att_blocks_per_sm = bps && atoi(bps) > 0 ? atoi(bps)
                                                : kiln_cuda_attention_blocks_per_sm(mc->head_dim, mc->n_heads / mc->n_kv_heads);
    /* KILN_CUDA_DECODE_TC_SPLIT=0: decode rows on tensor cores take the whole context per CTA;
     * =n > 0: size the split for n resident CTAs per SM instead of the occupancy query's */
    const char *tcs = getenv("KILN_CUDA_DECODE_TC_SPLIT");
    c->tc_blocks_per_sm = tcs && *tcs ? atoi(tcs) : kiln_cuda_attention_decode_tc_blocks_per_sm(mc->head_dim);
    /* attention_decode_kernel holds the G heads of a group in its 16 MMA rows */
    if (c->tc_blocks_per_sm < 0 || mc->n_heads / mc->n_kv_heads > 16) c->tc_blocks_per_sm = 0;
    if (prop.major < 9) {
        rc = KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cuda backend: %s is sm_%d%d; this build has sm_90 code only",
                      prop.name, prop.major, prop.minor);
        goto fail;
    }
    if ((e = cudaStreamCreateWithFlags(&c->st, cudaStreamNonBlocking)) != cudaSuccess) {
        rc = kiln_cuda_error(err, e, "cudaStreamCreate", __FILE__, __LINE__);
        goto fail;
    }
    c->have_stream = 1;
    for (; c->have_ev < 2; c->have_ev++)
        if ((e = cudaEventCreateWithFlags(&c->ev[c->have_ev], cudaEventDisableTiming)) != cudaSuccess) {
            rc = kiln_cuda_error(err, e, "cudaEventCreate", __FILE__, __LINE__);
            goto fail;
        }
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
    if (c->gctx.ws_bytes && (rc = dev_malloc(c, &c->gctx.workspace, c->gctx.ws_bytes, "the GEMM workspace", err)))
        goto fail;
    /* GEMM shapes: refused here when cuBLASLt has no algorithm (I3) */
    int D = mc->dim, qd = mc->n_heads * mc->head_dim, kvd = mc->n_kv_heads * mc->head_dim, F = mc->hidden_dim;
    int T = bc->max_tokens;
    if ((rc = kiln_cuda_gemm_init(&c->gctx, &c->g_qkv, qd + 2 * kvd, D, c->adt, T, err)) ||
        (rc = kiln_cuda_gemm_init(&c->gctx, &c->g_o, D, qd, c->adt, T, err)) ||
        (rc = kiln_cuda_gemm_init_out(&c->gctx, &c->g_gu, 2 * F, D, c->adt,
                                      c->gu_16bit && c->adt != KILN_DT_F32 ? c->adt : KILN_DT_F32, T, err)) ||
        (rc = kiln_cuda_gemm_init(&c->gctx, &c->g_d, D, F, c->adt, T, err)) ||
        (rc = kiln_cuda_gemm_init(&c->gctx, &c->g_lm, mc->vocab_size, D, c->hdt, bc->max_seqs, err)) ||
        /* the down projection's split-K first choice is slower at decode sizes (see gemm.h) */
        (c->adt != KILN_DT_F32 && (rc = kiln_cuda_gemm_fixed_upto(&c->gctx, &c->g_d, 16, err))))
        goto fail;
    /* KV pool (bf16), scratch, then the weights */
    c->kv_bytes = (size_t)kiln_kv_elems(&bc->kv) * sizeof(uint16_t);
    if ((rc = dev_malloc(c, (void **)&c->kv, c->kv_bytes, "the KV pool", err))) goto fail;
    if ((e = cudaMemsetAsync(c->kv, 0, c->kv_bytes, c->st)) != cudaSuccess) {
        rc = kiln_cuda_error(err, e, "cudaMemsetAsync(kv)", __FILE__, __LINE__);
        goto fail;
    }
    if ((rc = alloc_scratch(c, err))) goto fail;
    /* batch-invariant mode keeps every row on the split kernel: which kernel a row gets must not
     * depend on how the scheduler chunked its sequence (I6) */
    c->pf_tile_rows = bc->batch_invariant || (mc->head_dim != 64 && mc->head_dim != 128)
                          ? 0 : kiln_cuda_prefill_tile_rows(mc->n_heads, mc->n_kv_heads);
    c->pf_covered = kiln_calloc((size_t)T, 1);
    c->run_a = kiln_calloc((size_t)T, sizeof(int32_t));
    c->run_b = kiln_calloc((size_t)T, sizeof(int32_t));
    if (!c->pf_covered || !c->run_a || !c->run_b) {
        rc = KILN_ERR(err, KILN_ERR_OOM, "cuda backend: out of memory");
        goto fail;
    }
    if ((rc = upload_weights(c, err))) goto fail;
    /* KILN_CUDA_GRAPHS=0 turns the decode and piecewise graphs off; decode graphs for rows up to
     * max_seqs (and 256); piecewise graphs for steps up to KILN_CUDA_PIECE_MAX rows (default
     * 256, 0 = none), in buckets of PIECE_ROWS */
    const char *gr = getenv("KILN_CUDA_GRAPHS");
    c->graph_max_rows = bc->max_seqs < bc->max_tokens ? bc->max_seqs : bc->max_tokens;
    if (c->graph_max_rows > 256) c->graph_max_rows = 256;
    const char *pm = getenv("KILN_CUDA_PIECE_MAX");
    int piece_max = pm && *pm ? atoi(pm) : 256;
    if (piece_max > bc->max_tokens) piece_max = bc->max_tokens;
    c->n_piece_buckets = piece_max > 0 ? piece_bucket(piece_max, NULL) + 1 : 0;
    if (!(gr && strcmp(gr, "0") == 0) && !c->debug && (rc = capture_graphs(c, err))) {
        /* steps then launch kernel by kernel, as with KILN_CUDA_GRAPHS=0; refused in strict mode */
        if (bc->strict) goto fail;
        KILN_WARN("cuda backend: graphs not captured (%s); launching kernels one by one", err->msg);
        free_graphs(c);
        cudaGetLastError();
        rc = KILN_OK;
    }
    *out = &c->base;
    return KILN_OK;
fail:
    cuda_destroy(&c->base);
    return rc;
}

/* ---- the step ------------------------------------------------------------------------------- */

#define LAUNCH(call)                                                                                   \
    do {                                                                                               \
        cudaError_t e_ = (call);                                                                       \
        if (e_ != cudaSuccess) return kiln_cuda_error(err, e_, #call, __FILE__, __LINE__);             \
        if (c->debug) {                                                                                \
            int r_ = kiln_cuda_stream_sync(&c->syncs, c->st, err);                                     \
            if (r_) {                                                                                  \
                kiln_err_prefix(err, "after %s: ", #call);                                             \
                return r_;                                                                             \
            }                                                                                          \
        }                                                                                              \
    } while (0)

/* y = x W^T by one of four kernels, chosen per shape and row count (measured on the H100 for
 * the Devstral shapes: the GEMV / skinny microbenchmarks in tests/cuda/test_cuda_gemv.c and
 * docs/perf-notes.md):
 *   GEMV (gemv.cu, CUDA cores): wide matrices (gate|up, LM head, N >= 32768) up to 3 rows, the
 *     others up to 2, with 2 rows per warp at 1 row and K < 16384, else 4;
 *   skinny (skinny.cu, tensor cores): wide matrices at 5..8 rows (gate|up 235 us vs 239, LM
 *     head 465 vs 475 at 8 rows; at 16 rows cuBLASLt is faster on every shape);
 *   wide (skinny_wide.cu, tensor cores, cp.async pipeline): wide matrices from 4 rows to 16
 *     (gate|up with SwiGLU in its epilogue, as on the GEMV, unless KILN_CUDA_GLU=0);
 *   cuBLASLt otherwise (the down projection without split-K up to 16 rows, gemm.h).
 * Off in batch-invariant mode: a row's bits would change when the batch crosses a threshold.
 * Returns GEMM_LT, GEMM_SKINNY, GEMM_WIDE, or the GEMV rows per warp (>= 0). */
#define GEMM_LT (-1)
#define GEMM_SKINNY (-2)
#define GEMM_WIDE (-3)
static int gemm_choice(const cuda_backend *c, const kiln_cuda_gemm *g, int n) {
    if (g->wdt == KILN_DT_F32) return GEMM_LT;
    if (g->N >= 32768) { /* gate|up, LM head */
        if (c->wide_min_rows && n >= c->wide_min_rows && n <= KILN_WIDE_MAX_ROWS) return GEMM_WIDE;
        if (n <= 4 && n <= c->gemv_max_rows) return 0;
        if (n <= c->skinny_max_rows) return GEMM_SKINNY;
        return GEMM_LT;
    }
    if (n <= 2 && n <= c->gemv_max_rows) return n == 1 && g->K < 16384 ? 2 : 4;
    return GEMM_LT;
}

#define GEMM(g, y, x, w, n)                                                                            \
    do {                                                                                               \
        int r_ = 0, k_ = gemm_choice(c, (g), (n));                                                     \
        cudaError_t e_ = cudaSuccess;                                                                  \
        if (k_ >= 0)                                                                                   \
            e_ = kiln_cuda_gemv_ex((float *)(y), (x), (w), (g)->wdt, (n), (g)->N, (g)->K, k_, c->st);  \
        else if (k_ == GEMM_SKINNY)                                                                    \
            e_ = kiln_cuda_gemm_skinny((float *)(y), (x), (w), (g)->wdt, (n), (g)->N, (g)->K, c->st);  \
        else if (k_ == GEMM_WIDE)                                                                      \
            e_ = kiln_cuda_gemm_wide_ex((float *)(y), (x), (w), (g)->wdt, (n), (g)->N, (g)->K,         \
                                        c->wide_variant, c->st);                                       \
        else                                                                                           \
            r_ = kiln_cuda_gemm_run(&c->gctx, (g), (y), (x), (w), (n), c->st, err);                    \
        if (e_ != cudaSuccess) return kiln_cuda_error(err, e_, "kiln_cuda_gemv/skinny", __FILE__, __LINE__); \
        if (r_) return r_;                                                                             \
        if (c->debug && (r_ = kiln_cuda_stream_sync(&c->syncs, c->st, err))) return r_;                \
    } while (0)

static int poison(cuda_backend *c, void *p, size_t bytes, kiln_error *err) {
    LAUNCH(kiln_cuda_fill_u32((uint32_t *)p, 0xffffffffu, (int64_t)(bytes / 4), c->st));
    return KILN_OK;
}

/* The device work of one step is fixed by these values (and the host arrays run_a / run_b):
 * enqueue() issues it, and a CUDA graph captured from enqueue() replays it. */
typedef struct step_plan {
    int T, n, bt_w, n_tiles, n_runs; /* rows, logits rows, block-table width, tensor-core tiles, split runs */
    int tc_splits;                   /* > 0: every row is a decode on tensor cores, split over its context
                                      * into at most tc_splits windows (kiln_cuda_attention_decode_tc);
                                      * the tiles are then unused */
    size_t desc_bytes;               /* H2D bytes of the step descriptor */
    int sample;                      /* draw on the device (else copy the logits back) */
    int n_pen;                       /* penalty tables to load */
    size_t sd_bytes, sd_rows, sd_bias, sd_bvals, sd_supp, sd_pslot, sd_pstart, sd_pnp, sd_ptok; /* offsets */
} step_plan;

/* Offsets of the packed sampling descriptor for n rows and the given list lengths. */
static void sampling_layout(step_plan *p, int n, int n_bias, int n_supp, int n_pen, int n_pen_tok) {
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
 * the penalty-table loads into the pinned sampling descriptor (launch_sampling copies it). */
static int pack_sampling(cuda_backend *c, const kiln_step *s, int n, step_plan *p, kiln_error *err) {
    int n_bias = 0, n_supp = 0;
    for (int i = 0; i < s->n_seqs; i++)
        if (s->seq_logits[i]) {
            n_bias += s->sampling[i].n_bias;
            n_supp += s->sampling[i].n_supp;
        }
    int n_pen = s->n_pen, n_pen_tok = n_pen ? s->pen_start[n_pen] : 0;
    sampling_layout(p, n, n_bias, n_supp, n_pen, n_pen_tok);
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
        r->supp_start = ns;
        r->n_supp = ss->n_supp;
        memcpy(supp + ns, s->supp_ids + ss->supp_start, (size_t)ss->n_supp * 4);
        ns += ss->n_supp;
        r->seed = ss->seed;
        r->position = ss->rng_offset;
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

/* Device sampling, device side: one H2D copy of the packed descriptor, the penalty-table loads,
 * the draw, one D2H copy of the results (tokens, logprobs, top-n), read after the step's wait. */
static int launch_sampling(cuda_backend *c, const step_plan *p, kiln_error *err) {
    int V = c->m->cfg.vocab_size, S = c->cfg.max_seqs;
    KILN_CUDA_TRY(err, cudaMemcpyAsync(c->sdesc_d, c->sdesc_h, p->sd_bytes, cudaMemcpyHostToDevice, c->st));
    unsigned char *d = c->sdesc_d;
    if (p->n_pen)
        LAUNCH(kiln_cuda_penalty_load(c->pen_counts, c->pen_prompt, V, (const int32_t *)(d + p->sd_pslot),
                                      (const int32_t *)(d + p->sd_pstart), (const int32_t *)(d + p->sd_pnp),
                                      (const int32_t *)(d + p->sd_ptok), p->n_pen, c->st));
    int32_t *o_tok = (int32_t *)c->sout_d;
    float *o_lp = (float *)(c->sout_d + (size_t)S * 4);
    int32_t *o_tid = (int32_t *)(c->sout_d + (size_t)S * 8);
    float *o_tlp = (float *)(c->sout_d + (size_t)S * 8 + (size_t)S * KILN_STEP_MAX_TOP * 4);
    LAUNCH(kiln_cuda_sample(c->logits_d, c->samp_work, p->n, V, (const kiln_cuda_sample_row *)(d + p->sd_rows),
                            (const int32_t *)(d + p->sd_bias), (const float *)(d + p->sd_bvals),
                            (const int32_t *)(d + p->sd_supp), c->pen_counts, c->pen_prompt, o_tok, o_lp, o_tid, o_tlp,
                            c->st));
    KILN_CUDA_TRY(err, cudaMemcpyAsync(c->sout_h, c->sout_d, c->sout_bytes, cudaMemcpyDeviceToHost, c->st));
    return KILN_OK;
}

/* Windows per row so that rows x KV heads x windows CTAs make one wave of blocks_per_sm per SM:
 * at least 1, at most max_splits and what the attention scratch ([max_tokens][H][att_splits]
 * windows) holds for this many rows. */
static int wave_splits(const cuda_backend *c, int blocks_per_sm, int rows, int max_splits) {
    int cap = (int)((int64_t)c->att_splits * c->cfg.max_tokens / rows);
    if (cap > max_splits) cap = max_splits;
    int s = blocks_per_sm * c->n_sm / (rows * c->m->cfg.n_kv_heads);
    if (s < 1) s = 1;
    return s > cap ? cap : s;
}

/* Windows per row for T decode rows on tensor cores: one wave of resident CTAs
 * (T x KV x splits ~ CTAs per SM x SMs), within the attention scratch ([max_tokens][H][16]
 * windows) and the combine's 64; 0 when the split is off. H100, Devstral, batch 16 at ~550
 * context: 3 windows (384 CTAs) instead of 128 CTAs streaming whole contexts. */
static int tc_split_count(const cuda_backend *c, int T) {
    return c->tc_blocks_per_sm && T >= 1 ? wave_splits(c, c->tc_blocks_per_sm, T, 64) : 0;
}

/* The device work of a step in pieces (the piecewise graphs replay all but attention):
 *   enq_head: the embedding rows;  per layer l: enq_pre(l) = add + RMSNorm, QKV GEMM, RoPE and the
 *   K/V write;  enq_att(l) = attention;  enq_post(l) = O GEMM, add + RMSNorm, gate|up GEMM,
 *   SwiGLU, down GEMM;  enq_tail: final norm of the logits rows, LM head, sampling or the copy. */
typedef struct step_ptrs {
    const int32_t *tok, *pos, *rowseq, *lrows, *bt, *tiles, *prev;
    const int64_t *slot;
} step_ptrs;

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
    return KILN_OK;
}

static int enq_pre(cuda_backend *c, const step_plan *p, int l, kiln_error *err) {
    const kiln_config *mc = &c->m->cfg;
    int T = p->T, D = mc->dim, H = mc->n_heads, KV = mc->n_kv_heads, hd = mc->head_dim, bs = c->cfg.kv.block_size;
    step_ptrs d = desc_ptrs(c);
    uint16_t *pool = c->kv + kiln_kv_offset(&c->cfg.kv, l, 0, 0, 0, 0);
    const float *an = c->norms + (size_t)(2 * l) * D;
    LAUNCH(kiln_cuda_add_rmsnorm(c->x, l ? c->proj : NULL, NULL, 1, an, c->xn, c->adt, T, D, mc->norm_eps, c->st));
    GEMM(&c->g_qkv, c->qkv, c->xn, c->layers[l].wqkv, T);
    LAUNCH(kiln_cuda_rope_kv(c->qkv, d.pos, d.slot, pool, T, H, KV, hd, bs, mc->rope_theta,
                             mc->rope_style == KILN_ROPE_INTERLEAVED, c->st));
    return KILN_OK;
}

static int enq_att(cuda_backend *c, const step_plan *p, int l, kiln_error *err) {
    const kiln_config *mc = &c->m->cfg;
    int T = p->T, bt_w = p->bt_w, H = mc->n_heads, KV = mc->n_kv_heads, hd = mc->head_dim, bs = c->cfg.kv.block_size;
    int qkvw = (H + 2 * KV) * hd;
    size_t asz = dt_size(c->adt);
    step_ptrs d = desc_ptrs(c);
    uint16_t *pool = c->kv + kiln_kv_offset(&c->cfg.kv, l, 0, 0, 0, 0);
    if (p->tc_splits > 0)
        LAUNCH(kiln_cuda_attention_decode_tc(c->att, c->adt, c->qkv, qkvw, pool, d.pos, d.rowseq, d.bt, bt_w, T, H, KV,
                                             hd, bs, TC_MIN_WINDOW, p->tc_splits, c->att_scratch, c->st));
    else if (p->n_tiles > 0)
        LAUNCH(kiln_cuda_attention_prefill(c->att, c->adt, c->qkv, qkvw, pool, d.pos, d.rowseq, d.bt, bt_w, H, KV, hd,
                                           bs, d.tiles, p->n_tiles, c->st));
    for (int k = 0; k < p->n_runs; k++) {
        int a = c->run_a[k], rows = c->run_b[k] - a;
        /* the rows of a mixed step outside the prefill tiles (decodes, short chunks): each row is
         * one query position, so attention_decode_kernel serves them, split over the context */
        int ts = c->pf_tile_rows > 0 && rows >= c->decode_tc_rows ? tc_split_count(c, rows) : 0;
        if (ts > 0) {
            LAUNCH(kiln_cuda_attention_decode_tc((unsigned char *)c->att + (size_t)a * H * hd * asz, c->adt,
                                                 c->qkv + (size_t)a * qkvw, qkvw, pool, d.pos + a, d.rowseq + a, d.bt,
                                                 bt_w, rows, H, KV, hd, bs, TC_MIN_WINDOW, ts, c->att_scratch, c->st));
            continue;
        }
        /* windows per row: up to att_splits (16) so one decode fills the chip; a wider batch
         * needs fewer (one wave of resident blocks), which also makes the combine cheaper.
         * Batch-invariant mode keeps 16 so a row's windows never depend on the batch. */
        /* (up to 32 windows while the scratch holds them) */
        int splits = c->cfg.batch_invariant ? c->att_splits
                                            : wave_splits(c, c->att_blocks_per_sm, rows, 2 * c->att_splits);
        LAUNCH(kiln_cuda_attention((unsigned char *)c->att + (size_t)a * H * hd * asz, c->adt,
                                   c->qkv + (size_t)a * qkvw, qkvw, pool, d.pos + a, d.rowseq + a, d.bt, bt_w,
                                   rows, H, KV, hd, bs, c->att_split_w, splits, c->att_scratch, c->st));
    }
    return KILN_OK;
}

static int enq_post(cuda_backend *c, const step_plan *p, int l, kiln_error *err) {
    const kiln_config *mc = &c->m->cfg;
    int T = p->T, D = mc->dim, F = mc->hidden_dim;
    const cuda_layer *w = &c->layers[l];
    const float *fn = c->norms + (size_t)(2 * l + 1) * D;
    GEMM(&c->g_o, c->proj, c->att, w->wo, T);
    LAUNCH(kiln_cuda_add_rmsnorm(c->x, c->proj, NULL, 1, fn, c->xn, c->adt, T, D, mc->norm_eps, c->st));
    int gk = gemm_choice(c, &c->g_gu, T);
    if (gk == GEMM_WIDE && c->glu) { /* SwiGLU in the GEMM's epilogue: act[T][F] straight out */
        LAUNCH(kiln_cuda_gemm_wide_glu(c->act, c->adt, c->xn, w->wgu, c->g_gu.wdt, T, F, D, c->wide_variant, c->st));
    } else if (gk >= 0 && c->glu) {
        LAUNCH(kiln_cuda_gemv_glu(c->act, c->adt, c->xn, w->wgu, c->g_gu.wdt, T, F, D, c->st));
    } else {
        GEMM(&c->g_gu, c->gu, c->xn, w->wgu, T);
        /* gate|up comes out f32 from GEMV / skinny / wide, in the weights' 16-bit type from
         * cuBLASLt unless KILN_CUDA_GU_16BIT=0 */
        LAUNCH(kiln_cuda_swiglu_in(c->act, c->adt, c->gu, gk != GEMM_LT ? KILN_DT_F32 : c->g_gu.ydt, T, F, c->st));
    }
    GEMM(&c->g_d, c->proj, c->act, w->wd, T);
    return KILN_OK;
}

static int enq_tail(cuda_backend *c, const step_plan *p, kiln_error *err) {
    const kiln_config *mc = &c->m->cfg;
    int n = p->n, D = mc->dim, rc;
    if (n <= 0) return KILN_OK;
    const float *on = c->norms + (size_t)(2 * mc->n_layers) * D;
    LAUNCH(kiln_cuda_add_rmsnorm(c->x, c->proj, desc_ptrs(c).lrows, 0, on, c->xf, c->hdt, n, D, mc->norm_eps, c->st));
    GEMM(&c->g_lm, c->logits_d, c->xf, c->lm, n);
    if (p->sample) {
        if ((rc = launch_sampling(c, p, err))) return rc;
    } else {
        KILN_CUDA_TRY(err, cudaMemcpyAsync(c->logits_h, c->logits_d, (size_t)n * mc->vocab_size * sizeof(float),
                                           cudaMemcpyDeviceToHost, c->st));
    }
    return KILN_OK;
}

/* Piece k of the piecewise graphs (0..L): 0 = head + pre(0); k = post(k - 1) + pre(k); L = post(L - 1). */
static int enq_piece(cuda_backend *c, const step_plan *p, int k, kiln_error *err) {
    int L = c->m->cfg.n_layers, rc;
    if (k == 0 && (rc = enq_head(c, p, err))) return rc;
    if (k > 0 && (rc = enq_post(c, p, k - 1, err))) return rc;
    if (k < L && (rc = enq_pre(c, p, k, err))) return rc;
    return KILN_OK;
}

/* Everything the GPU does in a step, in stream order: the descriptor copy, the layers, the
 * final norm and LM head over the logits rows, then sampling or the logits copy. pieces: the
 * (T-bucket's) piecewise graphs [L + 1] replace everything but attention and the tail. */
static int enqueue(cuda_backend *c, const step_plan *p, const cudaGraphExec_t *pieces, kiln_error *err) {
    int L = c->m->cfg.n_layers, rc;
    KILN_CUDA_TRY(err, cudaMemcpyAsync(c->desc_d, c->desc_h, p->desc_bytes, cudaMemcpyHostToDevice, c->st));
    for (int k = 0; k <= L; k++) {
        if (pieces) KILN_CUDA_TRY(err, cudaGraphLaunch(pieces[k], c->st));
        else if ((rc = enq_piece(c, p, k, err))) return rc;
        if (k < L && (rc = enq_att(c, p, k, err))) return rc;
    }
    return enq_tail(c, p, err);
}

/* Encode into the pinned buffers of parity par (desc_h, sdesc_h, sout_h): the other parity's
 * may still be in use by the step in flight. */
static void use_parity(cuda_backend *c, int par) {
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

/* End the capture begun on c->st around work that returned rc; instantiate it into *out. */
static int end_capture(cuda_backend *c, int rc, cudaGraphExec_t *out, kiln_error *err) {
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(c->st, &g);
    if (rc) {
        if (g) cudaGraphDestroy(g);
        return rc;
    }
    if (e != cudaSuccess) return kiln_cuda_error(err, e, "cudaStreamEndCapture", __FILE__, __LINE__);
    e = cudaGraphInstantiate(out, g, 0);
    cudaGraphDestroy(g);
    if (e != cudaSuccess) return kiln_cuda_error(err, e, "cudaGraphInstantiate", __FILE__, __LINE__);
    return KILN_OK;
}

/* ---- CUDA graphs for decode steps -----------------------------------------------------------
 * A decode step (every sequence one row that wants a token, drawn on the device, no logit bias,
 * suppression or penalty-table load this step) is padded to a bucket of rows (a power of two)
 * and a block-table width (a power of two, or the full width), and replays the graph captured
 * for that bucket at create, so its ~400 launches cost one. Padding rows: token 0 at position 0,
 * K/V written to slot 0 of the null block, a block table of null blocks, greedy draws that the
 * engine never reads. */

static int pow2_at_least(int v) { int b = 1; while (b < v) b <<= 1; return b; }

/* the bucket indices of (rows, width), or -1 when the step has no graph */
static int graph_bucket(const cuda_backend *c, int rows, int width, int *ri, int *wi) {
    int rb = pow2_at_least(rows), wb = pow2_at_least(width);
    if (rb > c->graph_max_rows) return -1;
    if (wb > c->cfg.max_blocks_per_seq) wb = c->cfg.max_blocks_per_seq;
    int r = 0, w = 0;
    while ((1 << r) < rb) r++;
    while (w < c->n_graph_widths && c->graph_widths[w] < wb) w++;
    if (w == c->n_graph_widths) return -1;
    *ri = r;
    *wi = w;
    return 0;
}

static void fill_plan_shape(const cuda_backend *c, step_plan *p, int T, int bt_w) {
    memset(p, 0, sizeof *p);
    p->T = p->n = T;
    p->bt_w = bt_w;
    p->sample = 1;
    p->n_tiles = c->pf_tile_rows > 0 && T >= c->decode_tc_rows ? T : 0;
    p->n_runs = p->n_tiles ? 0 : 1;
    if (p->n_tiles) p->tc_splits = tc_split_count(c, T);
    p->desc_bytes = c->off_bt + (size_t)T * bt_w * 4;
    sampling_layout(p, T, 0, 0, 0, 0);
}

/* Capture one graph per (rows, width) bucket: load-time work (I7), host-side only apart from the
 * instantiation. */
static int capture_graphs(cuda_backend *c, kiln_error *err) {
    int rb = 1, nr = 0;
    while (rb * 2 <= c->graph_max_rows) { rb *= 2; nr++; }
    c->graph_max_rows = rb;
    c->n_graph_rows = nr + 1;
    int w = 1;
    c->n_graph_widths = 0;
    while (w < c->cfg.max_blocks_per_seq) { c->graph_widths[c->n_graph_widths++] = w; w *= 2; }
    c->graph_widths[c->n_graph_widths++] = c->cfg.max_blocks_per_seq;
    /* one set per parity: a graph copies from and to its parity's pinned buffers */
    int ng = c->n_graph_rows * c->n_graph_widths;
    c->graphs = kiln_calloc((size_t)2 * ng, sizeof(cudaGraphExec_t));
    if (!c->graphs) return KILN_ERR(err, KILN_ERR_OOM, "cuda backend: out of memory for the graph table");
    for (int par = 0; par < 2; par++)
    for (int r = 0; r < c->n_graph_rows; r++)
        for (int wi = 0; wi < c->n_graph_widths; wi++) {
            use_parity(c, par);
            step_plan p;
            int T = 1 << r, rc;
            fill_plan_shape(c, &p, T, c->graph_widths[wi]);
            c->run_a[0] = 0;
            c->run_b[0] = T;
            KILN_CUDA_TRY(err, cudaStreamBeginCapture(c->st, cudaStreamCaptureModeThreadLocal));
            if ((rc = end_capture(c, enqueue(c, &p, NULL, err), &c->graphs[par * ng + r * c->n_graph_widths + wi], err)))
                return rc;
        }
    /* the pieces: [bucket][piece], all but attention and the tail of a step of the bucket's rows */
    int L = c->m->cfg.n_layers, nb = c->n_piece_buckets;
    if (nb == 0) return KILN_OK;
    c->pieces = kiln_calloc((size_t)nb * (L + 1), sizeof(cudaGraphExec_t));
    if (!c->pieces) return KILN_ERR(err, KILN_ERR_OOM, "cuda backend: out of memory for the piecewise graphs");
    for (int b = 0; b < nb; b++)
        for (int k = 0; k <= L; k++) {
            step_plan p;
            int rc;
            memset(&p, 0, sizeof p);
            p.T = b < 5 ? 1 << b : PIECE_ROWS * (b - 3);
            KILN_CUDA_TRY(err, cudaStreamBeginCapture(c->st, cudaStreamCaptureModeThreadLocal));
            if ((rc = end_capture(c, enq_piece(c, &p, k, err), &c->pieces[b * (L + 1) + k], err))) return rc;
        }
    return KILN_OK;
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

static int cuda_encode(kiln_backend *b, const kiln_step *s, kiln_error *err) {
    cuda_backend *c = (cuda_backend *)b;
    /* overlapped scheduling: one more step while one is in flight, and only behind a step that
     * draws on the device (host logits have one buffer) */
    if (c->n_pending == 2 || (c->n_pending == 1 && !c->fl[0].sampled))
        return KILN_ERR(err, KILN_ERR_INTERNAL, "cuda backend: encode_step with %d step(s) in flight", c->n_pending);
    int rc = kiln_backend_check_step(&c->cfg, c->m->cfg.vocab_size, 1, s, err); /* I2 */
    if (rc) return rc;
    int T = s->n_tokens, S = s->n_seqs, bs = c->cfg.kv.block_size;
    /* this step's pinned buffers: the other step in flight may still be copying from / to the
     * other parity's */
    use_parity(c, c->par);
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
        if (s->seq_logits[i] && s->seq_q_start[i + 1] > s->seq_q_start[i]) lrows[n++] = s->seq_q_start[i + 1] - 1;
    }

    int ri, wi;
    if (c->graphs && decode_graph_step(s) && graph_bucket(c, T, bt_w, &ri, &wi) == 0) {
        /* a decode step: pad to the bucket and replay its graph */
        int Tb = 1 << ri, wb = c->graph_widths[wi];
        step_plan p;
        fill_plan_shape(c, &p, Tb, wb);
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
    if (p.n_tiles == T && T == S && T >= c->decode_tc_rows) p.tc_splits = tc_split_count(c, T); /* all decodes */
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
    int Tb = 0, pb = piece_bucket(T, &Tb);
    if (c->pieces && pb < c->n_piece_buckets) {
        /* pad to the bucket; every op of a piece is row by row, attention and the tail see the
         * real rows only */
        pad_rows(c, T, Tb);
        pieces = &c->pieces[(size_t)pb * (c->m->cfg.n_layers + 1)];
        c->piece_steps++;
    }
    if ((rc = enqueue(c, &p, pieces, err))) return rc;
    return step_enqueued(c, p.sample, n, err);
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
    int S = c->cfg.max_seqs;
    r->n_logits = n_logits;
    r->vocab = c->m->cfg.vocab_size;
    if (sampled) { /* valid until the step after next is encoded: the engine reads it before */
        const unsigned char *o = c->sout_hb[par];
        r->logits = NULL;
        r->tokens = (const int32_t *)o;
        r->logprob = (const float *)(o + (size_t)S * 4);
        r->top_ids = (const int32_t *)(o + (size_t)S * 8);
        r->top_lp = (const float *)(o + (size_t)S * 8 + (size_t)S * KILN_STEP_MAX_TOP * 4);
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

static const kiln_backend_ops k_cuda_ops = {
    .name = "cuda",
    .kv_elem_bytes = 2,
    .samples = 1,
    .overlap = 1,
    .create = cuda_create,
    .encode_step = cuda_encode,
    .finish_step = cuda_finish,
    .memory = cuda_memory,
    .destroy = cuda_destroy,
};

const kiln_backend_ops *kiln_backend_cuda_ops(void) { return &k_cuda_ops; }

const kiln_cuda_syncs *kiln_backend_cuda_syncs(const kiln_backend *b) {
    return b && b->ops == &k_cuda_ops ? &((const cuda_backend *)b)->syncs : NULL;
}

uint64_t kiln_backend_cuda_graph_steps(const kiln_backend *b) {
    return b && b->ops == &k_cuda_ops ? ((const cuda_backend *)b)->graph_steps : 0;
}

uint64_t kiln_backend_cuda_piece_steps(const kiln_backend *b) {
    return b && b->ops == &k_cuda_ops ? ((const cuda_backend *)b)->piece_steps : 0;
}
