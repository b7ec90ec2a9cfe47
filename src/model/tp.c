/* tp.c: tensor-parallel partitioning and weight shards (design in tp.h and
 * docs/tensor-parallel.md). Pure host code over kiln_model views: no backend, no device. */
#include <stdio.h>
#include <string.h>
#include "model/tp.h"
#include "util/alloc.h"
#include "util/error.h"

int kiln_tp_partition(const kiln_config *cfg, int size, int rank, kiln_tp_rank *out, kiln_error *err) {
    memset(out, 0, sizeof *out);
    if (size < 1 || size > KILN_TP_MAX)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "tensor parallelism: tensor_parallel_size %d (1 .. %d)", size,
                        KILN_TP_MAX);
    if (rank < 0 || rank >= size)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "tensor parallelism: rank %d of %d", rank, size);
    int H = cfg->n_heads, KV = cfg->n_kv_heads;
    if (H <= 0 || KV <= 0 || H % KV)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "tensor parallelism: %d attention heads over %d KV heads", H, KV);
    if (H % size)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "tensor parallelism: %d attention heads are not divisible by "
                        "tensor_parallel_size %d", H, size);
    if (size <= KV ? KV % size : size % KV)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "tensor parallelism: %d KV heads: tensor_parallel_size %d must %s",
                        KV, size, size <= KV ? "divide them" : "be a multiple of them (each KV head replicated)");
    if (cfg->n_experts > 0 && size > 1)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "tensor parallelism: mixture-of-experts layers (%d experts) are "
                        "not sharded yet", cfg->n_experts);
    if (cfg->hidden_dim <= 0 || cfg->hidden_dim % size)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "tensor parallelism: intermediate size %d is not divisible by "
                        "tensor_parallel_size %d", cfg->hidden_dim, size);
    if (cfg->vocab_size < size)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "tensor parallelism: vocabulary of %d tokens over %d ranks",
                        cfg->vocab_size, size);
    out->rank = rank;
    out->size = size;
    out->n_q_heads = H / size;
    out->q_head0 = rank * out->n_q_heads;
    if (size <= KV) {
        out->n_kv_heads = KV / size;
        out->kv_head0 = rank * out->n_kv_heads;
        out->kv_replicas = 1;
    } else {
        out->kv_replicas = size / KV;
        out->n_kv_heads = 1;
        out->kv_head0 = rank / out->kv_replicas;
    }
    out->n_ffn = cfg->hidden_dim / size;
    out->ffn0 = rank * out->n_ffn;
    int per = (cfg->vocab_size + size - 1) / size;
    out->vocab0 = rank * per < cfg->vocab_size ? rank * per : cfg->vocab_size;
    out->n_vocab = (out->vocab0 + per < cfg->vocab_size ? out->vocab0 + per : cfg->vocab_size) - out->vocab0;
    if (out->n_vocab <= 0)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "tensor parallelism: rank %d of %d gets no vocabulary rows (%d tokens)",
                        rank, size, cfg->vocab_size);
    return KILN_OK;
}

int kiln_tp_check(const kiln_config *cfg, int size, kiln_error *err) {
    kiln_tp_rank p;
    for (int r = 0; r < size || r == 0; r++) {
        int rc = kiln_tp_partition(cfg, size, r, &p, err);
        if (rc) return rc;
    }
    return KILN_OK;
}

int kiln_tp_check_model(const kiln_model *m, int size, kiln_error *err) {
    int rc = kiln_tp_check(&m->cfg, size, err);
    if (rc || size == 1) return rc;
    kiln_tp_rank p;
    if ((rc = kiln_tp_partition(&m->cfg, size, 0, &p, err))) return rc;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const kiln_layer_weights *w = &m->layers[l];
        const kiln_tensor *ts[7] = {w->wq, w->wk, w->wv, w->wo, w->w_gate, w->w_up, w->w_down};
        for (int i = 0; i < 7; i++) {
            if (!ts[i]) return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "tensor parallelism: layer %d lacks a matrix", l);
            if (ts[i]->quant.kind == KILN_SCALE_BLOCK)
                return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "tensor parallelism: %s has FP8 block scales (%d x %d), "
                                "not sharded yet", ts[i]->name, ts[i]->quant.block_out, ts[i]->quant.block_in);
        }
        /* row-parallel column slices start and end on a block (every rank's slices are alike) */
        int be_o = kiln_dtype_block_elems(w->wo->dtype), be_d = kiln_dtype_block_elems(w->w_down->dtype);
        int64_t no = (int64_t)p.n_q_heads * m->cfg.head_dim;
        if (be_o <= 0 || no % be_o)
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "tensor parallelism: %s is %s (blocks of %d elements): a rank's %lld "
                            "columns would not start and end on a block", w->wo->name, kiln_dtype_name(w->wo->dtype), be_o,
                            (long long)no);
        if (be_d <= 0 || p.n_ffn % be_d)
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "tensor parallelism: %s is %s (blocks of %d elements): a rank's %d "
                            "columns would not start and end on a block", w->w_down->name,
                            kiln_dtype_name(w->w_down->dtype), be_d, p.n_ffn);
    }
    return KILN_OK;
}

/* FP8 scales a shard can carry: per tensor (shared) or per output channel (sliced with the
 * rows; the same for every column slice). Block scales are refused. */
static int check_scales(const kiln_tensor *w, kiln_error *err) {
    if (w->quant.kind == KILN_SCALE_BLOCK)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "tensor parallelism: %s has FP8 block scales (%d x %d), not sharded yet",
                        w->name, w->quant.block_out, w->quant.block_in);
    if (w->ndim != 2)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "tensor parallelism: %s is not a matrix (%d dimensions)", w->name, w->ndim);
    return KILN_OK;
}

static void shard_name(kiln_tensor *out, const kiln_tensor *w, const char *what, int64_t a, int64_t len) {
    char buf[sizeof out->name + 64];
    snprintf(buf, sizeof buf, "%s[%s %lld:%lld]", w->name, what, (long long)a, (long long)(a + len));
    size_t n = strlen(buf) < sizeof out->name - 1 ? strlen(buf) : sizeof out->name - 1; /* truncated */
    memcpy(out->name, buf, n);
    out->name[n] = 0;
}

int kiln_tp_slice_rows(const kiln_tensor *w, int64_t r0, int64_t n, kiln_tensor *out, kiln_error *err) {
    int rc = check_scales(w, err);
    if (rc) return rc;
    if (r0 < 0 || n <= 0 || r0 + n > w->shape[0])
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "tensor parallelism: rows %lld..%lld of %s (%lld rows)", (long long)r0,
                        (long long)(r0 + n), w->name, (long long)w->shape[0]);
    size_t rb = kiln_dtype_row_bytes(w->dtype, w->shape[1]);
    if (!rb)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "tensor parallelism: %s (%s) rows of %lld elements", w->name,
                        kiln_dtype_name(w->dtype), (long long)w->shape[1]);
    *out = *w;
    shard_name(out, w, "rows", r0, n);
    out->shape[0] = n;
    out->data = w->data ? (const unsigned char *)w->data + rb * (size_t)r0 : NULL;
    out->nbytes = rb * (size_t)n;
    if (w->quant.kind == KILN_SCALE_CHANNEL) out->quant.scale = w->quant.scale + r0;
    return KILN_OK;
}

size_t kiln_tp_cols_bytes(const kiln_tensor *w, int64_t n) {
    return kiln_dtype_row_bytes(w->dtype, n) * (size_t)(w->ndim == 2 ? w->shape[0] : 0);
}

int kiln_tp_slice_cols(const kiln_tensor *w, int64_t c0, int64_t n, void *dst, kiln_tensor *out, kiln_error *err) {
    int rc = check_scales(w, err);
    if (rc) return rc;
    if (c0 < 0 || n <= 0 || c0 + n > w->shape[1])
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "tensor parallelism: columns %lld..%lld of %s (%lld columns)",
                        (long long)c0, (long long)(c0 + n), w->name, (long long)w->shape[1]);
    int be = kiln_dtype_block_elems(w->dtype);
    if (be <= 0 || c0 % be || n % be)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "tensor parallelism: %s is %s (blocks of %d elements): columns "
                        "%lld..%lld do not start and end on a block", w->name, kiln_dtype_name(w->dtype), be,
                        (long long)c0, (long long)(c0 + n));
    if (!w->data)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "tensor parallelism: %s has no host data to shard", w->name);
    size_t rb = kiln_dtype_row_bytes(w->dtype, w->shape[1]), off = kiln_dtype_row_bytes(w->dtype, c0),
           sb = kiln_dtype_row_bytes(w->dtype, n);
    for (int64_t r = 0; r < w->shape[0]; r++)
        memcpy((unsigned char *)dst + sb * (size_t)r, (const unsigned char *)w->data + rb * (size_t)r + off, sb);
    *out = *w;
    shard_name(out, w, "cols", c0, n);
    out->shape[1] = n;
    out->data = dst;
    out->nbytes = sb * (size_t)w->shape[0];
    return KILN_OK;
}

void kiln_tp_shard_free(kiln_tp_shard *s) {
    if (!s) return;
    kiln_free(s->layers);
    kiln_free(s->tensors);
    kiln_free(s->owned);
    kiln_free(s);
}

int kiln_tp_shard_create(kiln_tp_shard **out, const kiln_model *m, int size, int rank, kiln_error *err) {
    *out = NULL;
    const kiln_config *mc = &m->cfg;
    kiln_tp_rank p;
    int rc = kiln_tp_partition(mc, size, rank, &p, err);
    if (rc) return rc;
    const int L = mc->n_layers, hd = mc->head_dim;
    kiln_tp_shard *s = kiln_calloc(1, sizeof *s);
    if (!s) return KILN_ERR(err, KILN_ERR_OOM, "tensor parallelism: out of memory");
    s->part = p;
    s->layers = kiln_calloc((size_t)L, sizeof *s->layers);
    s->tensors = kiln_calloc((size_t)L * 7, sizeof *s->tensors);
    size_t total = 0;
    for (int l = 0; l < L && s->layers; l++) {
        const kiln_layer_weights *w = &m->layers[l];
        if (!w->wo || !w->w_down) {
            rc = KILN_ERR(err, KILN_ERR_UNSUPPORTED, "tensor parallelism: layer %d has no dense FFN / output projection", l);
            goto fail;
        }
        total += ((kiln_tp_cols_bytes(w->wo, (int64_t)p.n_q_heads * hd) + 63) & ~(size_t)63) +
                 ((kiln_tp_cols_bytes(w->w_down, p.n_ffn) + 63) & ~(size_t)63);
    }
    s->owned = total ? kiln_malloc(total) : NULL;
    if (!s->layers || !s->tensors || (total && !s->owned)) {
        rc = KILN_ERR(err, KILN_ERR_OOM, "tensor parallelism: cannot allocate rank %d's shards (%.1f MiB)", rank,
                      total / 1048576.0);
        goto fail;
    }
    s->owned_bytes = total;
    size_t at = 0;
    for (int l = 0; l < L; l++) {
        const kiln_layer_weights *w = &m->layers[l];
        kiln_layer_weights *d = &s->layers[l];
        kiln_tensor *t = s->tensors + (size_t)l * 7;
        *d = *w; /* norms, q / k norms, window, KV scales: replicated */
        d->router = NULL;
        d->experts = NULL;
        if ((rc = kiln_tp_slice_rows(w->wq, (int64_t)p.q_head0 * hd, (int64_t)p.n_q_heads * hd, &t[0], err)) ||
            (rc = kiln_tp_slice_rows(w->wk, (int64_t)p.kv_head0 * hd, (int64_t)p.n_kv_heads * hd, &t[1], err)) ||
            (rc = kiln_tp_slice_rows(w->wv, (int64_t)p.kv_head0 * hd, (int64_t)p.n_kv_heads * hd, &t[2], err)))
            goto fail;
        if ((rc = kiln_tp_slice_cols(w->wo, (int64_t)p.q_head0 * hd, (int64_t)p.n_q_heads * hd, s->owned + at, &t[3], err)))
            goto fail;
        at += (t[3].nbytes + 63) & ~(size_t)63;
        if ((rc = kiln_tp_slice_rows(w->w_gate, p.ffn0, p.n_ffn, &t[4], err)) ||
            (rc = kiln_tp_slice_rows(w->w_up, p.ffn0, p.n_ffn, &t[5], err)))
            goto fail;
        if ((rc = kiln_tp_slice_cols(w->w_down, p.ffn0, p.n_ffn, s->owned + at, &t[6], err))) goto fail;
        at += (t[6].nbytes + 63) & ~(size_t)63;
        d->wq = &t[0];
        d->wk = &t[1];
        d->wv = &t[2];
        d->wo = &t[3];
        d->w_gate = &t[4];
        d->w_up = &t[5];
        d->w_down = &t[6];
        if (w->bq) {
            d->bq = w->bq + (size_t)p.q_head0 * hd;
            d->bk = w->bk + (size_t)p.kv_head0 * hd;
            d->bv = w->bv + (size_t)p.kv_head0 * hd;
        }
    }
    if ((rc = kiln_tp_slice_rows(m->lm_head, p.vocab0, p.n_vocab, &s->lm_head, err))) goto fail;
    *out = s;
    return KILN_OK;
fail:
    kiln_tp_shard_free(s);
    return rc;
}
