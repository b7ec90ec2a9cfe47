/* cuda_weights.c: the model at create. kiln_cuda_check_model refuses, before any device work
 * (I3), every shape and dtype the backend cannot run; kiln_cuda_upload_weights copies the
 * mmapped host tensors to the device through two pinned 32 MiB staging buffers (progress bar on
 * stderr), Wq|Wk|Wv and Wgate|Wup concatenated, or fills a dummy model's matrices on the device
 * (dummy_fill.cu, kiln_dummy_value's bits). */
#include <stdio.h>
#include <unistd.h>
#include "backend/cuda/cuda_backend_internal.h"

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
    if (pct > 100) pct = 100; /* FP8 scales are not counted in total */
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
    if (t->dtype == KILN_DT_F8_E4M3) { /* online FP8 of a dummy (fp8.c): the dense dummy's values / scale */
        int idx = -1;
        for (int i = 0; i < m->n_tensors && idx < 0; i++)
            if (!strcmp(m->tensors[i].name, t->name)) idx = i;
        if (idx < 0 || !t->quant.scale)
            return KILN_ERR(err, KILN_ERR_INTERNAL, "cuda backend: FP8 dummy tensor %s has no source", t->name);
        cudaError_t e = kiln_cuda_dummy_fill_fp8(dst, n, m->dummy_seed, idx, t->shape[1], t->quant.scale[0], c->st);
        if (e != cudaSuccess) return kiln_cuda_error(err, e, "kiln_cuda_dummy_fill_fp8", __FILE__, __LINE__);
        u->done += t->nbytes;
        progress(u, 0);
        return KILN_OK;
    }
    cudaError_t e = kiln_dtype_is_quant(t->dtype)
                        ? kiln_cuda_dummy_fill_q(dst, t->dtype, (int64_t)t->nbytes, m->dummy_seed, (int)(t - m->tensors),
                                                 t->shape[t->ndim - 1], c->st)
                        : kiln_cuda_dummy_fill(dst, t->dtype, n, m->dummy_seed, (int)(t - m->tensors),
                                               t->ndim == 1 ? 0 : t->shape[1], c->st);
    if (e != cudaSuccess) return kiln_cuda_error(err, e, "kiln_cuda_dummy_fill", __FILE__, __LINE__);
    u->done += t->nbytes;
    progress(u, 0);
    return KILN_OK;
}

/* Several tensors placed back to back in one device buffer, as the row segments of *mt (N x K).
 * Dense parts (one dtype, checked at load) are one segment of concatenated rows. Quantized
 * parts of one type are one segment too (rows of whole blocks concatenate); parts of different
 * types are one segment each, every segment start 16-byte aligned. Quantized buffers end with
 * 16 bytes of padding (qdecode.cuh may read that far past the last block). */
static size_t seg_align(size_t n) { return (n + 15) / 16 * 16; }

/* a part's static activation scale (0: dynamic or none) */
static float in_scale_of(const kiln_tensor *t) {
    return t->quant.act == KILN_ACT_STATIC && t->quant.input_scale ? t->quant.input_scale[0] : 0.0f;
}

/* FP8 parts: docs/fp8.md's s_w per row of the matrix: [N] (a per-tensor scale repeated over its
 * part's rows, per-channel scales as they are) or [N][ceil(K / 128)] (BLOCK: row o of a part
 * takes the scales of its tile row o / block_out) */
static int put_fp8_scales(uploader *u, cuda_mat *mt, const kiln_tensor *const *ts, int n, const char *what,
                          kiln_error *err) {
    int G = ts[0]->quant.kind == KILN_SCALE_BLOCK ? (mt->K + 127) / 128 : 1;
    size_t cnt = (size_t)mt->N * G, r = 0;
    float *h = kiln_malloc(cnt * sizeof(float));
    if (!h) return KILN_ERR(err, KILN_ERR_OOM, "cuda backend: out of host memory for the scales of %s", what);
    for (int i = 0; i < n; i++) {
        const kiln_quant *q = &ts[i]->quant;
        int64_t rows = ts[i]->shape[0], gb = q->kind == KILN_SCALE_BLOCK ? (mt->K + q->block_in - 1) / q->block_in : 1;
        for (int64_t o = 0; o < rows; o++, r++)
            for (int g = 0; g < G; g++)
                h[r * G + g] = q->kind == KILN_SCALE_TENSOR    ? q->scale[0]
                               : q->kind == KILN_SCALE_CHANNEL ? q->scale[o]
                                                               : q->scale[(o / q->block_out) * gb + g];
    }
    mt->sw_G = G;
    int rc = kiln_cuda_dev_malloc(u->c, (void **)&mt->sw, cnt * sizeof(float), what, err);
    if (!rc) rc = upload_bytes(u, mt->sw, h, cnt * sizeof(float), err); /* copied to staging: h may go */
    kiln_free(h);
    return rc;
}

static int put_mat(uploader *u, cuda_mat *mt, const kiln_tensor *const *ts, int n, const char *what, kiln_error *err) {
    int quant = kiln_dtype_is_quant(ts[0]->dtype);
    memset(mt, 0, sizeof *mt);
    mt->K = (int)ts[0]->shape[ts[0]->ndim - 1];
    size_t total = 0, off[CUDA_MAT_SEGS];
    for (int i = 0; i < n; i++) {
        int rows = (int)(ts[i]->ndim == 1 ? 1 : ts[i]->shape[0]);
        if (mt->n_seg == 0 || ts[i]->dtype != mt->seg[mt->n_seg - 1].dt ||
            in_scale_of(ts[i]) != mt->seg[mt->n_seg - 1].in_scale) {
            total = seg_align(total);
            mt->seg[mt->n_seg].dt = ts[i]->dtype;
            mt->seg[mt->n_seg].in_scale = in_scale_of(ts[i]);
            mt->seg[mt->n_seg].row0 = mt->N;
            mt->seg[mt->n_seg].w = (void *)(uintptr_t)total; /* an offset until allocated */
            mt->n_seg++;
        }
        off[i] = total;
        mt->seg[mt->n_seg - 1].rows += rows;
        mt->N += rows;
        total += ts[i]->nbytes;
    }
    if (quant) total += 16;
    int rc = kiln_cuda_dev_malloc(u->c, &mt->w, total, what, err);
    if (rc) return rc;
    for (int s = 0; s < mt->n_seg; s++) mt->seg[s].w = (unsigned char *)mt->w + (uintptr_t)mt->seg[s].w;
    mt->dt = mt->seg[0].dt;
    for (int i = 0; i < n && !rc; i++) rc = put_tensor(u, (unsigned char *)mt->w + off[i], ts[i], err);
    if (!rc && quant) {
        cudaError_t e = cudaMemsetAsync((unsigned char *)mt->w + total - 16, 0, 16, u->c->st);
        if (e != cudaSuccess) rc = kiln_cuda_error(err, e, "cudaMemsetAsync(weight padding)", __FILE__, __LINE__);
    }
    if (!rc && mt->dt == KILN_DT_F8_E4M3) rc = put_fp8_scales(u, mt, ts, n, what, err);
    return rc;
}

/* Issue 19's small dense tensors in one device buffer (nothing when the model has none):
 *   rope_inv  [hd / 2] f64: kiln_rope_inv_freq's table (RoPE scaling, GGUF rope_freqs), the
 *             CPU's own numbers; f64 because angles are pos * inv in double (an f32 table would be
 *             off by ~pos * 6e-8 radians); its cos / sin factor (YaRN) in c->rope_mscale
 *   qkv_bias  [L][(H + 2 KV) hd] f32: bq | bk | bv per layer, the layout of a QKV output row
 *   qk_norms  [L][2][hd] f32: q_norm, k_norm per layer
 * check_model made sure every layer has all of a kind or none. */
static int put_family(uploader *u, kiln_error *err) {
    cuda_backend *c = u->c;
    const kiln_model *m = c->m;
    const kiln_config *mc = &m->cfg;
    int L = mc->n_layers, hd = mc->head_dim, half = hd / 2;
    size_t qw = (size_t)mc->n_heads * hd, kw = (size_t)mc->n_kv_heads * hd, row = qw + 2 * kw;
    int bias = m->layers[0].bq != NULL, norm = m->layers[0].q_norm != NULL;
    int rope = (kiln_model_features(m) & KILN_FEAT_ROPE_SCALING) != 0;
    c->rope_mscale = 1.0;
    if (!bias && !norm && !rope) return KILN_OK;
    size_t nr = rope ? (size_t)half * sizeof(double) : 0, nb = bias ? (size_t)L * row * sizeof(float) : 0;
    size_t nn = norm ? (size_t)L * 2 * hd * sizeof(float) : 0;
    unsigned char *d;
    int rc = kiln_cuda_dev_malloc(c, (void **)&d, nr + nb + nn, "biases, q/k norms and RoPE frequencies", err);
    if (rc) return rc;
    if (rope) {
        double *inv = kiln_malloc((size_t)half * sizeof(double));
        if (!inv) return KILN_ERR(err, KILN_ERR_OOM, "cuda backend: out of host memory for the RoPE frequencies");
        rc = kiln_rope_inv_freq(m, inv, &c->rope_mscale, err);
        if (!rc) rc = upload_bytes(u, d, inv, nr, err); /* copied to staging: inv may go */
        kiln_free(inv);
        if (rc) return rc;
        c->rope_inv = (double *)d;
    }
    if (bias) c->qkv_bias = (float *)(d + nr);
    if (norm) c->qk_norms = (float *)(d + nr + nb);
    for (int l = 0; l < L && !rc; l++) {
        const kiln_layer_weights *w = &m->layers[l];
        if (bias) {
            float *b = c->qkv_bias + (size_t)l * row;
            rc = upload_bytes(u, b, w->bq, qw * sizeof(float), err);
            if (!rc) rc = upload_bytes(u, b + qw, w->bk, kw * sizeof(float), err);
            if (!rc) rc = upload_bytes(u, b + qw + kw, w->bv, kw * sizeof(float), err);
        }
        if (norm && !rc) {
            float *n = c->qk_norms + (size_t)l * 2 * hd;
            rc = upload_bytes(u, n, w->q_norm, hd * sizeof(float), err);
            if (!rc) rc = upload_bytes(u, n + hd, w->k_norm, hd * sizeof(float), err);
        }
    }
    return rc;
}

size_t kiln_cuda_weight_bytes(const kiln_model *m) {
    const kiln_config *mc = &m->cfg;
    size_t total = 0;
    for (int l = 0; l < mc->n_layers; l++) {
        const kiln_layer_weights *w = &m->layers[l];
        total += w->wq->nbytes + w->wk->nbytes + w->wv->nbytes + w->wo->nbytes;
        total += mc->n_experts > 0 ? kiln_cuda_moe_layer_bytes(m, l)
                                   : w->w_gate->nbytes + w->w_up->nbytes + w->w_down->nbytes;
    }
    total += m->tok_embd->nbytes + (m->lm_head != m->tok_embd ? m->lm_head->nbytes : 0);
    /* put_family's tensors: biases, q/k norms (f32), the RoPE table (f64) */
    size_t hd = (size_t)mc->head_dim;
    if (m->layers[0].bq) total += (size_t)mc->n_layers * (size_t)(mc->n_heads + 2 * mc->n_kv_heads) * hd * sizeof(float);
    if (m->layers[0].q_norm) total += (size_t)mc->n_layers * 2 * hd * sizeof(float);
    if (kiln_model_features(m) & KILN_FEAT_ROPE_SCALING) total += hd / 2 * sizeof(double);
    return total + (size_t)(2 * mc->n_layers + 1) * (size_t)mc->dim * sizeof(float);
}

/* A MoE layer (cuda_moe.c): the router [E][D], the experts' gate|up [E][2F][D] (expert e's gate
 * rows then its up rows) and down [E][D][F], each one buffer so the grouped kernels find expert
 * e at a fixed stride. Dense tensors of one dtype (kiln_cuda_moe_check). */
/* the model's own tensor behind an expert view (model.c bind_experts copies HF experts into
 * m->expert_views): a dummy's device fill is seeded by the index in m->tensors */
static const kiln_tensor *view_source(const kiln_model *m, const kiln_tensor *t) {
    if (t->data || (t >= m->tensors && t < m->tensors + m->n_tensors)) return t;
    for (int i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i].name, t->name)) return &m->tensors[i];
    return t;
}

static int put_moe(uploader *u, cuda_layer *cl, const kiln_layer_weights *w, int E, kiln_error *err) {
    size_t gb = w->experts[0].nbytes, db = w->experts[2].nbytes;
    int rc = kiln_cuda_dev_malloc(u->c, &cl->router, w->router->nbytes, "MoE router", err);
    if (!rc) rc = kiln_cuda_dev_malloc(u->c, &cl->moe_gu, 2 * gb * (size_t)E, "MoE gate/up experts", err);
    if (!rc) rc = kiln_cuda_dev_malloc(u->c, &cl->moe_d, db * (size_t)E, "MoE down experts", err);
    if (!rc) rc = put_tensor(u, cl->router, w->router, err);
    for (int e = 0; e < E && !rc; e++) {
        const kiln_tensor *x = w->experts + 3 * (size_t)e;
        unsigned char *g = (unsigned char *)cl->moe_gu + 2 * gb * (size_t)e;
        const kiln_model *m = u->c->m;
        rc = put_tensor(u, g, view_source(m, &x[0]), err);
        if (!rc) rc = put_tensor(u, g + gb, view_source(m, &x[1]), err);
        if (!rc) rc = put_tensor(u, (unsigned char *)cl->moe_d + db * (size_t)e, view_source(m, &x[2]), err);
    }
    return rc;
}

int kiln_cuda_upload_weights(cuda_backend *c, kiln_error *err) {
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
    u.total = kiln_cuda_weight_bytes(m);
    cuda_mat emb;
    if (!rc) rc = put_mat(&u, &emb, &m->tok_embd, 1, "the embedding", err);
    if (!rc) c->emb = emb.w;
    if (!rc) {
        if (m->lm_head == m->tok_embd) c->lm = emb;
        else rc = put_mat(&u, &c->lm, &m->lm_head, 1, "the LM head", err);
    }
    for (int l = 0; l < mc->n_layers && !rc; l++) {
        const kiln_layer_weights *w = &m->layers[l];
        const kiln_tensor *qkv[3] = {w->wq, w->wk, w->wv}, *gu[2] = {w->w_gate, w->w_up};
        if (!rc) rc = put_mat(&u, &c->layers[l].qkv, qkv, 3, "q/k/v projections", err);
        if (!rc) rc = put_mat(&u, &c->layers[l].o, &w->wo, 1, "o projection", err);
        if (mc->n_experts > 0) {
            if (!rc) rc = put_moe(&u, &c->layers[l], w, mc->n_experts, err);
            continue;
        }
        if (!rc) rc = put_mat(&u, &c->layers[l].gu, gu, 2, "gate/up projections", err);
        if (!rc) rc = put_mat(&u, &c->layers[l].d, &w->w_down, 1, "down projection", err);
    }
    if (!rc) rc = kiln_cuda_dev_malloc(c, (void **)&c->norms, (size_t)(2 * mc->n_layers + 1) * D * sizeof(float), "norms", err);
    for (int l = 0; l < mc->n_layers && !rc; l++) {
        rc = upload_bytes(&u, c->norms + (size_t)(2 * l) * D, m->layers[l].attn_norm, D * sizeof(float), err);
        if (!rc) rc = upload_bytes(&u, c->norms + (size_t)(2 * l + 1) * D, m->layers[l].ffn_norm, D * sizeof(float), err);
    }
    if (!rc) rc = upload_bytes(&u, c->norms + (size_t)(2 * mc->n_layers) * D, m->out_norm, D * sizeof(float), err);
    if (!rc) rc = put_family(&u, err);
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

/* ---- what the backend runs ------------------------------------------------------------------ */

static int dense_dtype(kiln_dtype dt) { return dt == KILN_DT_F32 || dt == KILN_DT_F16 || dt == KILN_DT_BF16; }
static int quant_dtype(kiln_dtype dt) {
    return dt == KILN_DT_Q8_0 || dt == KILN_DT_Q4_0 || dt == KILN_DT_Q4_1 || dt == KILN_DT_Q5_0 || dt == KILN_DT_Q5_1 ||
           dt == KILN_DT_Q4_K || dt == KILN_DT_Q5_K || dt == KILN_DT_Q6_K;
}

/* The weight dtypes kiln_cuda_linear runs: f32, f16, bf16 (GEMV / skinny / wide / cuBLASLt), the
 * GGUF block types of qlinear.cu (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) and FP8 E4M3
 * with per-tensor, per-channel or 128-column block scales (fp8.cu). Anything else (other GGUF
 * types, E5M2) is refused at load by check_model, with the type and the tensor named: there is no
 * fallback (I3). */
int kiln_cuda_linear_supports(kiln_dtype dt) { return dense_dtype(dt) || quant_dtype(dt) || dt == KILN_DT_F8_E4M3; }

int kiln_cuda_check_weight(const kiln_tensor *w, kiln_error *err) {
    if (!kiln_cuda_linear_supports(w->dtype))
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cuda backend: %s weights (%s) not supported (f32/f16/bf16 and the "
                        "GGUF types q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k)",
                        kiln_dtype_name(w->dtype), w->name);
    int64_t K = w->shape[w->ndim - 1];
    if (w->dtype == KILN_DT_F8_E4M3) {
        const kiln_quant *q = &w->quant;
        if (w->ndim != 2 || K % 16)
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cuda backend: FP8 %s has rows of %lld elements, not a multiple "
                            "of 16", w->name, (long long)K);
        if (q->kind != KILN_SCALE_TENSOR && q->kind != KILN_SCALE_CHANNEL && q->kind != KILN_SCALE_BLOCK)
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cuda backend: FP8 %s without weight scales", w->name);
        if (q->kind == KILN_SCALE_BLOCK && (q->block_in != 128 || q->block_out < 1))
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cuda backend: FP8 %s has [%d, %d] scale blocks; the GPU kernels "
                            "take blocks of 128 columns ([N, 128])", w->name, q->block_out, q->block_in);
        if (q->act == KILN_ACT_STATIC && !(q->input_scale && q->input_scale[0] > 0.0f))
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cuda backend: FP8 %s has a static activation scale that is not "
                            "positive", w->name);
        return KILN_OK;
    }
    if (w->quant.kind != KILN_SCALE_NONE)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cuda backend: %s scales of %s not supported yet",
                        kiln_scale_kind_name(w->quant.kind), w->name);
    if (quant_dtype(w->dtype) && K % 32)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cuda backend: %s (%s) has rows of %lld elements, not a multiple of 32",
                        w->name, kiln_dtype_name(w->dtype), (long long)K);
    return KILN_OK;
}

/* Everything this backend cannot run is refused here, before any device memory is taken (I3). */
int kiln_cuda_check_model(cuda_backend *c, kiln_error *err) {
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
    if (bc->kv.dtype != KILN_KV_BF16 && bc->kv.dtype != KILN_KV_FP8_E4M3)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cuda backend: a %s KV cache is not supported (bf16, fp8)",
                        kiln_kv_dtype_name(bc->kv.dtype));
    if (bc->kv.elem_bytes != kiln_kv_dtype_bytes(bc->kv.dtype))
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "cuda backend: KV layout of %d-byte %s elements", bc->kv.elem_bytes,
                        kiln_kv_dtype_name(bc->kv.dtype));
    if (bc->n_devices > 1 || bc->tp_size > 1)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cuda backend: tensor parallelism over %d GPUs is not supported yet: "
                        "its NCCL path (a worker per GPU, an all-reduce after O and down, the vocabulary gather) is "
                        "not written; the cpu backend runs --tensor-parallel-size N as simulated ranks "
                        "(docs/tensor-parallel.md)", bc->tp_size > bc->n_devices ? bc->tp_size : bc->n_devices);
    if (bc->max_logits_per_seq > 1 + KILN_SPEC_MAX_TOKENS)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cuda backend: %d logits rows per sequence (at most %d)",
                        bc->max_logits_per_seq, 1 + KILN_SPEC_MAX_TOKENS);
    /* issue 19's features (model.h KILN_FEAT_*): biases and q/k norms (qk_prep), RoPE scaling
     * (the frequency table of put_family), windows (every attention kernel) run here; what is
     * left (KILN_CUDA_FEATURES) the engine refuses before create through ops.features, and this
     * repeats it for callers of create itself (the GPU tests) */
    for (int l = 0; l < mc->n_layers; l++) {
        const kiln_layer_weights *w = &m->layers[l], *w0 = &m->layers[0];
        if (w->window < 0)
            return KILN_ERR(err, KILN_ERR_INVALID_ARG, "cuda backend: layer %d has a window of %d", l, w->window);
        if ((w->bq != NULL) != (w0->bq != NULL) || (w->bq && (!w->bk || !w->bv)))
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cuda backend: layer %d has q/k/v biases unlike layer 0 or "
                            "only some of them (all three on every layer, or none)", l);
        if ((w->q_norm != NULL) != (w0->q_norm != NULL) || (w->q_norm != NULL) != (w->k_norm != NULL))
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cuda backend: layer %d has q/k norms unlike layer 0 or "
                            "only one of them", l);
    }
    unsigned feats = kiln_model_features(m) & ~(unsigned)KILN_CUDA_FEATURES;
    if (feats) {
        char names[256];
        kiln_model_feature_names(m, feats, names, sizeof names);
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cuda backend: %s not supported yet (--backend cpu runs it)", names);
    }
    if (!dense_dtype(m->tok_embd->dtype) && !quant_dtype(m->tok_embd->dtype))
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cuda backend: %s embedding (%s) not supported",
                        kiln_dtype_name(m->tok_embd->dtype), m->tok_embd->name);
    if (quant_dtype(m->tok_embd->dtype) && mc->dim % 32)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "cuda backend: quantized embedding rows of %d elements", mc->dim);
    int rc = kiln_cuda_check_weight(m->lm_head, err);
    if (rc) return rc;
    /* Matrices: all dense of one dtype (adt), all GGUF-quantized (any mix of the supported types;
     * activations then bf16), or all FP8 with one scale layout and activation scheme (activations
     * bf16). The LM head on its own: dense (hdt) or quantized (bf16 in). */
    const kiln_tensor *w0 = m->layers[0].wq;
    int quant = quant_dtype(w0->dtype), fp8 = w0->dtype == KILN_DT_F8_E4M3;
    c->edt = m->tok_embd->dtype;
    c->hdt = quant_dtype(m->lm_head->dtype) ? KILN_DT_BF16 : m->lm_head->dtype;
    c->adt = quant || fp8 ? KILN_DT_BF16 : w0->dtype;
    c->quant = quant || quant_dtype(m->lm_head->dtype);
    c->fp8 = fp8;
    c->fp8_blk = fp8 && w0->quant.kind == KILN_SCALE_BLOCK;
    c->fp8_static = fp8 && w0->quant.act == KILN_ACT_STATIC;
    c->fp8_split = 0;
    for (int l = 0; l < mc->n_layers; l++) {
        const kiln_layer_weights *w = &m->layers[l];
        const kiln_tensor *ts[7] = {w->wq, w->wk, w->wv, w->wo, w->w_gate, w->w_up, w->w_down};
        for (int i = 0; i < (mc->n_experts > 0 ? 4 : 7); i++) { /* MoE: experts checked below */
            if ((rc = kiln_cuda_check_weight(ts[i], err))) return rc;
            if (quant ? !quant_dtype(ts[i]->dtype) : ts[i]->dtype != (fp8 ? KILN_DT_F8_E4M3 : c->adt))
                return KILN_ERR(err, KILN_ERR_UNSUPPORTED,
                                "cuda backend: mixed matrix dtypes (%s is %s, %s is %s) not supported",
                                ts[i]->name, kiln_dtype_name(ts[i]->dtype), w0->name, kiln_dtype_name(w0->dtype));
            /* parts fused into one matrix (q|k|v, gate|up) with different static activation scales
             * become separate segments (put_mat): cuBLASLt FP8 runs whole matrices only */
            if ((i == 1 || i == 2 || i == 5) && in_scale_of(ts[i]) != in_scale_of(ts[i - 1])) c->fp8_split = 1;
            if (fp8 && ((ts[i]->quant.kind == KILN_SCALE_BLOCK) != c->fp8_blk || ts[i]->quant.act != w0->quant.act))
                return KILN_ERR(err, KILN_ERR_UNSUPPORTED,
                                "cuda backend: FP8 matrices with different scales (%s: %s weights, %s activations; %s: "
                                "%s, %s) not supported", ts[i]->name, kiln_scale_kind_name(ts[i]->quant.kind),
                                kiln_act_quant_name(ts[i]->quant.act), w0->name, kiln_scale_kind_name(w0->quant.kind),
                                kiln_act_quant_name(w0->quant.act));
        }
    }
    if (mc->n_experts > 0) return kiln_cuda_moe_check(c, err);
    return KILN_OK;
}
