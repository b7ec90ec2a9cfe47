/* model.c: kiln_model_load dispatch, role binding with shape checks, and the model's lifetime.
 *
 * Dispatch by path:
 *   folder with config.json + model.safetensors[.index.json]        -> HF (preferred)
 *   folder with params.json + consolidated.safetensors               -> Mistral-native
 *   *.gguf (or a file starting with the GGUF magic)                  -> GGUF
 *   any other file                                                   -> llama2.c .bin
 * Binding (kiln_model_bind) is shared by every loader: it resolves tensor names to roles by the
 * format's naming scheme, checks each tensor's dtype and shape against the config (a missing
 * tensor is an error naming it) and makes the f32 norm copies. Matrices stay in place.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "format/gguf.h"
#include "model/loaders.h"
#include "util/alloc.h"
#include "util/error.h"
#include "util/fp16.h"
#include "util/log.h"
#include "util/json.h"


/* ---- names of roles per format ----------------------------------------------------- */

typedef struct name_scheme {
    const char *embd, *head, *out_norm;
    /* per layer, %d = layer */
    const char *attn_norm, *ffn_norm, *q, *k, *v, *o, *gate, *up, *down;
    const char *bq, *bk, *bv, *q_norm, *k_norm; /* Qwen2 biases, Qwen3 per-head norms */
    /* MoE: the router (%d = layer) and expert e's gate / up / down (%d = layer, %d = expert), or
     * for GGUF the 3-D tensors of all experts (%d = layer) */
    const char *router, *x_gate, *x_up, *x_down;
    int experts_3d;
} name_scheme;

static const name_scheme k_hf_names = {
    "model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
    "model.layers.%d.input_layernorm.weight", "model.layers.%d.post_attention_layernorm.weight",
    "model.layers.%d.self_attn.q_proj.weight", "model.layers.%d.self_attn.k_proj.weight",
    "model.layers.%d.self_attn.v_proj.weight", "model.layers.%d.self_attn.o_proj.weight",
    "model.layers.%d.mlp.gate_proj.weight", "model.layers.%d.mlp.up_proj.weight",
    "model.layers.%d.mlp.down_proj.weight",
    "model.layers.%d.self_attn.q_proj.bias", "model.layers.%d.self_attn.k_proj.bias",
    "model.layers.%d.self_attn.v_proj.bias", "model.layers.%d.self_attn.q_norm.weight",
    "model.layers.%d.self_attn.k_norm.weight",
    "model.layers.%d.block_sparse_moe.gate.weight", "model.layers.%d.block_sparse_moe.experts.%d.w1.weight",
    "model.layers.%d.block_sparse_moe.experts.%d.w3.weight", "model.layers.%d.block_sparse_moe.experts.%d.w2.weight", 0};
static const name_scheme k_mistral_names = {
    "tok_embeddings.weight", "output.weight", "norm.weight",
    "layers.%d.attention_norm.weight", "layers.%d.ffn_norm.weight",
    "layers.%d.attention.wq.weight", "layers.%d.attention.wk.weight",
    "layers.%d.attention.wv.weight", "layers.%d.attention.wo.weight",
    "layers.%d.feed_forward.w1.weight", "layers.%d.feed_forward.w3.weight",
    "layers.%d.feed_forward.w2.weight",
    "layers.%d.attention.wq.bias", "layers.%d.attention.wk.bias", "layers.%d.attention.wv.bias",
    "layers.%d.attention.q_norm.weight", "layers.%d.attention.k_norm.weight",
    "layers.%d.feed_forward.gate.weight", "layers.%d.feed_forward.experts.%d.w1.weight",
    "layers.%d.feed_forward.experts.%d.w3.weight", "layers.%d.feed_forward.experts.%d.w2.weight", 0};
static const name_scheme k_gguf_names = {
    "token_embd.weight", "output.weight", "output_norm.weight",
    "blk.%d.attn_norm.weight", "blk.%d.ffn_norm.weight",
    "blk.%d.attn_q.weight", "blk.%d.attn_k.weight", "blk.%d.attn_v.weight",
    "blk.%d.attn_output.weight", "blk.%d.ffn_gate.weight", "blk.%d.ffn_up.weight",
    "blk.%d.ffn_down.weight",
    "blk.%d.attn_q.bias", "blk.%d.attn_k.bias", "blk.%d.attn_v.bias",
    "blk.%d.attn_q_norm.weight", "blk.%d.attn_k_norm.weight",
    "blk.%d.ffn_gate_inp.weight", "blk.%d.ffn_gate_exps.weight", "blk.%d.ffn_up_exps.weight",
    "blk.%d.ffn_down_exps.weight", 1};

static const name_scheme *scheme_of(kiln_model_format f) {
    switch (f) {
    case KILN_FORMAT_MISTRAL: return &k_mistral_names;
    case KILN_FORMAT_GGUF: return &k_gguf_names;
    default: return &k_hf_names; /* HF, llama2.c (named like HF), dummy */
    }
}

const kiln_tensor *kiln_model_find(const kiln_model *m, const char *name) {
    if (!m || !name) return NULL;
    for (int i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i].name, name)) return &m->tensors[i];
    return NULL;
}

int64_t kiln_model_param_count(const kiln_model *m) {
    int64_t n = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        int64_t e = 1;
        for (int d = 0; d < m->tensors[i].ndim; d++) e *= m->tensors[i].shape[d];
        n += e;
    }
    return n;
}

size_t kiln_model_weight_bytes(const kiln_model *m) {
    size_t n = 0;
    for (int i = 0; i < m->n_tensors; i++) n += m->tensors[i].nbytes;
    if (m->fp8_tensors) /* online FP8: the layers' matrices are the E4M3 copies (+ their scales) */
        for (int i = 0; i < m->cfg.n_layers * 7; i++) {
            const kiln_tensor *q = &m->fp8_tensors[i], *orig = kiln_model_find(m, q->name);
            if (orig) n -= orig->nbytes;
            n += q->nbytes + sizeof(float) * (size_t)(q->quant.kind == KILN_SCALE_CHANNEL ? q->shape[0] : 1);
        }
    return n;
}

/* ---- config sanity ---------------------------------------------------------------- */

int kiln_config_check(const kiln_config *c, const char *what, kiln_error *err) {
#define CHK(cond, ...) \
    if (!(cond)) return KILN_ERR(err, KILN_ERR_FORMAT, __VA_ARGS__)
    CHK(c->dim > 0 && c->dim <= (1 << 20), "%s: hidden size %d out of range", what, c->dim);
    CHK(c->hidden_dim > 0 && c->hidden_dim <= (1 << 22), "%s: intermediate size %d out of range",
        what, c->hidden_dim);
    CHK(c->n_layers > 0 && c->n_layers <= 4096, "%s: layer count %d out of range", what,
        c->n_layers);
    CHK(c->n_heads > 0 && c->n_heads <= 4096, "%s: head count %d out of range", what, c->n_heads);
    CHK(c->n_kv_heads > 0 && c->n_kv_heads <= c->n_heads && c->n_heads % c->n_kv_heads == 0,
        "%s: %d KV heads do not divide %d attention heads", what, c->n_kv_heads, c->n_heads);
    CHK(c->head_dim > 0 && c->head_dim <= 4096 && c->head_dim % 2 == 0,
        "%s: head_dim %d must be positive and even", what, c->head_dim);
    CHK(c->vocab_size > 0 && c->vocab_size <= (1 << 24), "%s: vocab size %d out of range", what,
        c->vocab_size);
    CHK(c->max_seq_len > 0, "%s: context length %d must be positive", what, c->max_seq_len);
    CHK(c->norm_eps > 0 && c->norm_eps < 1, "%s: norm eps %g out of range", what, c->norm_eps);
    CHK(c->rope_theta > 0, "%s: rope_theta %g must be positive", what, c->rope_theta);
    CHK(c->sliding_window >= 0, "%s: sliding window %d", what, c->sliding_window);
    CHK(c->n_experts == 0 || (c->n_experts <= 1024 && c->n_experts_used >= 1 && c->n_experts_used <= c->n_experts &&
                              c->n_experts_used <= 64),
        "%s: %d experts, %d used per token", what, c->n_experts, c->n_experts_used);
    CHK(c->sliding_window == 0 || c->n_layers <= KILN_MAX_WINDOW_LAYERS,
        "%s: sliding window with %d layers (at most %d)", what, c->n_layers, KILN_MAX_WINDOW_LAYERS);
    CHK((unsigned)c->rope_scaling.type < KILN_ROPE_SCALING_COUNT, "%s: RoPE scaling type %d", what,
        (int)c->rope_scaling.type);
    CHK(c->bos_id >= -1 && c->bos_id < c->vocab_size, "%s: bos id %d outside the vocabulary (%d)",
        what, c->bos_id, c->vocab_size);
    CHK(c->n_eos >= 0 && c->n_eos <= KILN_MAX_EOS, "%s: %d eos ids", what, c->n_eos);
    for (int i = 0; i < c->n_eos; i++)
        CHK(c->eos_ids[i] >= 0 && c->eos_ids[i] < c->vocab_size,
            "%s: eos id %d outside the vocabulary (%d)", what, c->eos_ids[i], c->vocab_size);
#undef CHK
    return KILN_OK;
}

/* ---- binding ------------------------------------------------------------------------ */

/* The file holding a tensor (for messages): the mapping its data lies in, else the model path. */
static const char *tensor_file(const kiln_model *m, const kiln_tensor *t) {
    const unsigned char *d = t->data;
    for (int i = 0; i < m->n_files; i++)
        if (d && d >= m->files[i].data && d < m->files[i].data + m->files[i].size)
            return m->files[i].path;
    return m->path;
}

static int find_required(const kiln_model *m, const char *name, const kiln_tensor **out,
                         kiln_error *err) {
    *out = kiln_model_find(m, name);
    if (!*out)
        return KILN_ERR(err, KILN_ERR_NOT_FOUND, "%s: missing tensor %s (%s)", m->path, name,
                        m->loaded_from);
    return KILN_OK;
}

/* A matrix [rows][cols] in the model's dtype (GGUF: any supported float or quant type). */
static int check_matrix(const kiln_model *m, const kiln_tensor *t, int64_t rows, int64_t cols,
                        kiln_error *err) {
    if (t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols)
        return KILN_ERR(err, KILN_ERR_FORMAT,
                        "%s: tensor %s has shape [%lld, %lld]%s, expected [%lld, %lld] from the "
                        "config",
                        tensor_file(m, t), t->name, (long long)t->shape[0],
                        (long long)(t->ndim > 1 ? t->shape[1] : 0), t->ndim != 2 ? " (not 2-D)" : "",
                        (long long)rows, (long long)cols);
    if (t->dtype == KILN_DT_F8_E4M3) {
        if (t->quant.kind == KILN_SCALE_NONE)
            return KILN_ERR(err, KILN_ERR_FORMAT, "%s: FP8 tensor %s has no scales", tensor_file(m, t), t->name);
    } else if (m->format == KILN_FORMAT_GGUF || (m->format == KILN_FORMAT_DUMMY && m->dummy_quant[0])) {
        if (t->dtype == KILN_DT_I32 || (unsigned)t->dtype >= KILN_DT_COUNT)
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: tensor %s has dtype %s", m->path,
                            t->name, kiln_dtype_name(t->dtype));
    } else if (t->dtype != m->cfg.dtype) {
        return KILN_ERR(err, KILN_ERR_FORMAT,
                        "%s: tensor %s has dtype %s, expected %s like the other matrices",
                        tensor_file(m, t), t->name, kiln_dtype_name(t->dtype), kiln_dtype_name(m->cfg.dtype));
    }
    size_t rb = kiln_dtype_row_bytes(t->dtype, cols);
    if (rb == 0 || (t->nbytes != 0 && t->nbytes != rb * (size_t)rows))
        return KILN_ERR(err, KILN_ERR_FORMAT, "%s: tensor %s: %zu bytes do not hold [%lld, %lld] %s",
                        tensor_file(m, t), t->name, t->nbytes, (long long)rows, (long long)cols,
                        kiln_dtype_name(t->dtype));
    return KILN_OK;
}

/* A vector [dim] (norm weight, bias) converted to f32 into dst. */
static int bind_vec(const kiln_model *m, const kiln_tensor *t, float *dst, int dim, kiln_error *err) {
    if (t->ndim != 1 || t->shape[0] != dim)
        return KILN_ERR(err, KILN_ERR_FORMAT, "%s: tensor %s has shape [%lld%s], expected [%d]",
                        tensor_file(m, t), t->name, (long long)t->shape[0], t->ndim != 1 ? ", ..." : "", dim);
    const unsigned char *p = t->data;
    switch (t->dtype) {
    case KILN_DT_F32:
        if (t->nbytes < (size_t)dim * 4) break;
        for (int i = 0; i < dim; i++) memcpy(&dst[i], p + 4 * (size_t)i, 4);
        return KILN_OK;
    case KILN_DT_F16:
    case KILN_DT_BF16:
        if (t->nbytes < (size_t)dim * 2) break;
        for (int i = 0; i < dim; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * (size_t)i, 2);
            dst[i] = t->dtype == KILN_DT_F16 ? kiln_f16_to_f32(h) : kiln_bf16_to_f32(h);
        }
        return KILN_OK;
    default:
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: norm tensor %s has dtype %s (f32/f16/bf16 only)",
                        tensor_file(m, t), t->name, kiln_dtype_name(t->dtype));
    }
    return KILN_ERR(err, KILN_ERR_FORMAT, "%s: tensor %s: %zu bytes for [%d]", tensor_file(m, t), t->name,
                    t->nbytes, dim);
}

static int bind_norm(const kiln_model *m, const kiln_tensor *t, float *dst, kiln_error *err) {
    return bind_vec(m, t, dst, m->cfg.dim, err);
}

/* The optional per-layer vectors (biases, q/k norms) and GGUF's rope_freqs into m->extra_f32;
 * a tensor of those kinds that the config does not call for is refused (never ignored). */
static int bind_extras(kiln_model *m, const name_scheme *ns, kiln_error *err) {
    kiln_config *c = &m->cfg;
    int hd = c->head_dim, qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;
    size_t per = (size_t)(c->qkv_bias ? qd + 2 * kvd : 0) + (size_t)(c->qk_norm ? 2 * hd : 0);
    const kiln_tensor *rf = m->format == KILN_FORMAT_GGUF ? kiln_model_find(m, "rope_freqs.weight") : NULL;
    size_t total = per * (size_t)c->n_layers + (rf ? (size_t)hd / 2 : 0);
    kiln_free(m->extra_f32);
    m->extra_f32 = NULL;
    m->rope_freqs = NULL;
    if (total) {
        m->extra_f32 = kiln_malloc(total * sizeof(float));
        if (!m->extra_f32) return KILN_ERR(err, KILN_ERR_OOM, "%s: out of memory binding biases / norms", m->path);
    }
    float *p = m->extra_f32;
    char name[160];
    int rc;
    for (int l = 0; l < c->n_layers; l++) {
        kiln_layer_weights *L = &m->layers[l];
        struct { const char *fmt; const float **dst; int n, want; } v[] = {
            {ns->bq, &L->bq, qd, c->qkv_bias},      {ns->bk, &L->bk, kvd, c->qkv_bias},
            {ns->bv, &L->bv, kvd, c->qkv_bias},     {ns->q_norm, &L->q_norm, hd, c->qk_norm},
            {ns->k_norm, &L->k_norm, hd, c->qk_norm},
        };
        for (size_t j = 0; j < sizeof v / sizeof v[0]; j++) {
            const kiln_tensor *t;
            snprintf(name, sizeof name, v[j].fmt, l);
            if (!v[j].want) {
                if (kiln_model_find(m, name))
                    return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: tensor %s is present but the %s config has no such "
                                    "feature (refused rather than ignored)", m->path, name, c->arch);
                continue;
            }
            if ((rc = find_required(m, name, &t, err)) || (rc = bind_vec(m, t, p, v[j].n, err))) return rc;
            *v[j].dst = p;
            p += v[j].n;
        }
    }
    if (rf) {
        if ((rc = bind_vec(m, rf, p, hd / 2, err))) return rc;
        m->rope_freqs = p;
    }
    return KILN_OK;
}

/* The MoE FFN of layer l: the router [E][dim] and each expert's gate / up / down as views in
 * m->expert_views (allocated for every layer at the first call); GGUF's 3-D [E][rows][cols]
 * tensors are sliced per expert. */
static int bind_experts(kiln_model *m, const name_scheme *ns, int l, kiln_error *err) {
    kiln_config *c = &m->cfg;
    int E = c->n_experts, rc;
    if (!m->expert_views) {
        m->expert_views = kiln_calloc((size_t)c->n_layers * E * 3, sizeof *m->expert_views);
        if (!m->expert_views) return KILN_ERR(err, KILN_ERR_OOM, "%s: out of memory binding experts", m->path);
    }
    kiln_layer_weights *L = &m->layers[l];
    kiln_tensor *xv = m->expert_views + (size_t)l * E * 3;
    char name[200];
    snprintf(name, sizeof name, ns->router, l);
    if ((rc = find_required(m, name, &L->router, err)) || (rc = check_matrix(m, L->router, E, c->dim, err))) return rc;
    const char *fmts[3] = {ns->x_gate, ns->x_up, ns->x_down};
    int64_t rows[3] = {c->hidden_dim, c->hidden_dim, c->dim}, cols[3] = {c->dim, c->dim, c->hidden_dim};
    for (int j = 0; j < 3; j++) {
        if (ns->experts_3d) {
            const kiln_tensor *t;
            snprintf(name, sizeof name, fmts[j], l);
            if ((rc = find_required(m, name, &t, err))) return rc;
            size_t rb = kiln_dtype_row_bytes(t->dtype, cols[j]);
            if (t->ndim != 3 || t->shape[0] != E || t->shape[1] != rows[j] || t->shape[2] != cols[j] || rb == 0 ||
                t->nbytes != rb * (size_t)rows[j] * (size_t)E)
                return KILN_ERR(err, KILN_ERR_FORMAT, "%s: tensor %s is not [%d][%lld][%lld] (experts, rows, columns)",
                                m->path, t->name, E, (long long)rows[j], (long long)cols[j]);
            for (int e = 0; e < E; e++) {
                kiln_tensor *v = &xv[3 * e + j];
                *v = *t;
                snprintf(v->name, sizeof v->name, "%.100s[%d]", t->name, e);
                v->ndim = 2;
                v->shape[0] = rows[j];
                v->shape[1] = cols[j];
                v->shape[2] = 0;
                v->nbytes = rb * (size_t)rows[j];
                v->data = t->data ? (const unsigned char *)t->data + v->nbytes * (size_t)e : NULL;
                if ((rc = check_matrix(m, v, rows[j], cols[j], err))) return rc;
            }
        } else {
            for (int e = 0; e < E; e++) {
                const kiln_tensor *t;
                snprintf(name, sizeof name, fmts[j], l, e);
                if ((rc = find_required(m, name, &t, err)) || (rc = check_matrix(m, t, rows[j], cols[j], err))) return rc;
                xv[3 * e + j] = *t;
            }
        }
    }
    L->experts = xv;
    return KILN_OK;
}

/* GGUF: every tensor of the file must have a role (a tensor kiln does not bind would be a part
 * of the computation it leaves out). */
static int check_all_bound(const kiln_model *m, kiln_error *err) {
    const kiln_tensor *T = m->tensors;
    unsigned char *used = kiln_calloc((size_t)m->n_tensors + 1, 1);
    if (!used) return KILN_ERR(err, KILN_ERR_OOM, "%s: out of memory", m->path);
#define MARK(t) do { if ((t) && (t) >= T && (t) < T + m->n_tensors) used[(t) - T] = 1; } while (0)
    MARK(m->tok_embd);
    MARK(m->lm_head);
    MARK(kiln_model_find(m, "output_norm.weight"));
    MARK(kiln_model_find(m, "rope_freqs.weight"));
    const name_scheme *ns = &k_gguf_names;
    const char *vecs[] = {ns->attn_norm, ns->ffn_norm, ns->bq, ns->bk, ns->bv, ns->q_norm, ns->k_norm,
                          ns->router, ns->x_gate, ns->x_up, ns->x_down};
    char name[160];
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const kiln_layer_weights *L = &m->layers[l];
        const kiln_tensor *ts[7] = {L->wq, L->wk, L->wv, L->wo, L->w_gate, L->w_up, L->w_down};
        for (int k = 0; k < 7; k++) MARK(ts[k]);
        if (m->cfg.n_experts == 0) /* the MoE names only count for a MoE model */
            for (int k = 0; k < 4; k++) vecs[7 + k] = "";
        for (size_t k = 0; k < sizeof vecs / sizeof vecs[0]; k++) {
            snprintf(name, sizeof name, vecs[k], l);
            MARK(kiln_model_find(m, name));
        }
    }
#undef MARK
    int rc = KILN_OK;
    for (int i = 0; i < m->n_tensors && !rc; i++)
        if (!used[i])
            rc = KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: tensor %s is not used by kiln's %s model (a part of the "
                          "computation kiln would leave out: refused)", m->path, T[i].name, m->cfg.arch);
    kiln_free(used);
    return rc;
}

void kiln_model_take_text(kiln_model *m, const kiln_prefix_map *map) {
    int w = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        kiln_tensor *t = &m->tensors[i];
        const kiln_prefix_map *e = map;
        for (; e->from; e++)
            if (!strncmp(t->name, e->from, strlen(e->from))) break;
        if (e->from && !e->to) {
            int64_t n = 1;
            for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
            m->n_skipped++;
            m->skipped_params += n;
            if (!strstr(m->skipped_what, e->from)) {
                size_t k = strlen(m->skipped_what);
                snprintf(m->skipped_what + k, sizeof m->skipped_what - k, "%s%s*", k ? ", " : "", e->from);
            }
            continue;
        }
        if (e->from) {
            char nn[sizeof t->name];
            snprintf(nn, sizeof nn, "%s%s", e->to, t->name + strlen(e->from));
            memcpy(t->name, nn, sizeof nn);
        }
        if (w != i) m->tensors[w] = *t;
        w++;
    }
    m->n_tensors = w;
}

int kiln_model_bind(kiln_model *m, kiln_error *err) {
    kiln_config *c = &m->cfg;
    int rc = kiln_config_check(c, m->path, err);
    if (rc) return rc;
    const name_scheme *ns = scheme_of(m->format);
    char name[160];
    if ((rc = kiln_fp8_bind(m, err))) return rc; /* FP8 weights get their scales first */

    /* embedding and head; a tied checkpoint may store either one (tinystories: lm_head only) */
    const kiln_tensor *embd = kiln_model_find(m, ns->embd);
    const kiln_tensor *head = kiln_model_find(m, ns->head);
    if (c->tied_embeddings) {
        if (!embd) embd = head;
        if (!embd)
            return KILN_ERR(err, KILN_ERR_NOT_FOUND, "%s: missing tensor %s (tied embeddings: %s "
                            "would do too)", m->path, ns->embd, ns->head);
        head = embd;
    } else {
        if (!embd) return KILN_ERR(err, KILN_ERR_NOT_FOUND, "%s: missing tensor %s", m->path, ns->embd);
        if (!head)
            return KILN_ERR(err, KILN_ERR_NOT_FOUND,
                            "%s: missing tensor %s (the config says the embeddings are not tied)",
                            m->path, ns->head);
    }
    if (m->format != KILN_FORMAT_GGUF && embd->dtype != c->dtype) {
        KILN_WARN("%s: config dtype %s but the weights are %s: using %s", m->path,
                  kiln_dtype_name(c->dtype), kiln_dtype_name(embd->dtype),
                  kiln_dtype_name(embd->dtype));
        c->dtype = embd->dtype;
    }
    if (kiln_dtype_is_fp8(embd->dtype) || kiln_dtype_is_fp8(head->dtype))
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: an FP8 %s (%s) is not supported (the embedding and the LM head "
                        "stay 16-bit)", m->path, kiln_dtype_is_fp8(embd->dtype) ? "embedding" : "LM head",
                        kiln_dtype_is_fp8(embd->dtype) ? embd->name : head->name);
    if ((rc = check_matrix(m, embd, c->vocab_size, c->dim, err))) return rc;
    if (head != embd && (rc = check_matrix(m, head, c->vocab_size, c->dim, err))) return rc;
    m->tok_embd = embd;
    m->lm_head = head;

    kiln_free(m->layers);
    kiln_free(m->norm_f32);
    kiln_free(m->expert_views);
    m->expert_views = NULL;
    m->layers = kiln_calloc((size_t)c->n_layers, sizeof *m->layers);
    m->norm_f32 = kiln_malloc(((size_t)2 * c->n_layers + 1) * (size_t)c->dim * sizeof(float));
    if (!m->layers || !m->norm_f32)
        return KILN_ERR(err, KILN_ERR_OOM, "%s: out of memory binding %d layers", m->path, c->n_layers);

    const kiln_tensor *t;
    if ((rc = find_required(m, ns->out_norm, &t, err))) return rc;
    m->out_norm = m->norm_f32 + (size_t)2 * c->n_layers * c->dim;
    if ((rc = bind_norm(m, t, m->out_norm, err))) return rc;

    int64_t q_out = (int64_t)c->n_heads * c->head_dim, kv_out = (int64_t)c->n_kv_heads * c->head_dim;
    for (int l = 0; l < c->n_layers; l++) {
        kiln_layer_weights *L = &m->layers[l];
        struct { const char *fmt; const kiln_tensor **dst; int64_t rows, cols; } mats[] = {
            {ns->q, &L->wq, q_out, c->dim},           {ns->k, &L->wk, kv_out, c->dim},
            {ns->v, &L->wv, kv_out, c->dim},          {ns->o, &L->wo, c->dim, q_out},
            {ns->gate, &L->w_gate, c->hidden_dim, c->dim},
            {ns->up, &L->w_up, c->hidden_dim, c->dim}, {ns->down, &L->w_down, c->dim, c->hidden_dim},
        };
        size_t n_mats = c->n_experts > 0 ? 4 : sizeof mats / sizeof mats[0]; /* MoE: no dense FFN */
        if (c->n_experts > 0 && (rc = bind_experts(m, ns, l, err))) return rc;
        for (size_t j = 0; j < n_mats; j++) {
            snprintf(name, sizeof name, mats[j].fmt, l);
            if ((rc = find_required(m, name, mats[j].dst, err))) return rc;
            if ((rc = check_matrix(m, *mats[j].dst, mats[j].rows, mats[j].cols, err))) return rc;
        }
        L->attn_norm = m->norm_f32 + (size_t)(2 * l) * c->dim;
        L->ffn_norm = m->norm_f32 + (size_t)(2 * l + 1) * c->dim;
        snprintf(name, sizeof name, ns->attn_norm, l);
        if ((rc = find_required(m, name, &t, err)) || (rc = bind_norm(m, t, L->attn_norm, err)))
            return rc;
        snprintf(name, sizeof name, ns->ffn_norm, l);
        if ((rc = find_required(m, name, &t, err)) || (rc = bind_norm(m, t, L->ffn_norm, err)))
            return rc;
        L->window = c->sliding_window > 0 && l < KILN_MAX_WINDOW_LAYERS &&
                            (c->window_layers[l / 64] >> (l % 64) & 1)
                        ? c->sliding_window
                        : 0;
    }
    if ((rc = bind_extras(m, ns, err))) return rc;
    if (m->format == KILN_FORMAT_GGUF && (rc = check_all_bound(m, err))) return rc;
    /* the RoPE frequencies are computable (scaling parameters, rope_freqs values): refused at load */
    double *inv = kiln_malloc(((size_t)c->head_dim / 2 + 1) * sizeof(double)), af;
    if (!inv) return KILN_ERR(err, KILN_ERR_OOM, "%s: out of memory", m->path);
    rc = kiln_rope_inv_freq(m, inv, &af, err);
    for (int i = 0; !rc && i < c->head_dim / 2; i++)
        if (!isfinite(inv[i]) || !(inv[i] > 0) || !isfinite(af))
            rc = KILN_ERR(err, KILN_ERR_FORMAT, "%s: RoPE %s parameters give frequency %g for pair %d", m->path,
                          kiln_rope_scaling_name(c->rope_scaling.type), inv[i], i);
    kiln_free(inv);
    if (rc) return rc;
    return kiln_fp8_bind_kv(m, err);
}

/* ---- lifetime and dispatch ------------------------------------------------------------ */

void kiln_model_free(kiln_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_files; i++) kiln_mapfile_close(&m->files[i]);
    kiln_free(m->files);
    kiln_free(m->tensors);
    kiln_free(m->layers);
    kiln_free(m->norm_f32);
    kiln_free(m->extra_f32);
    kiln_free(m->expert_views);
    kiln_free_aligned(m->owned);
    if (m->gguf) kiln_gguf_close(m->gguf);
    kiln_fp8_free(m);
    kiln_free(m);
}

static int dir_has(const char *dir, const char *file) {
    char p[1200];
    return kiln_path_join(p, sizeof p, dir, file) == 0 && kiln_file_exists(p);
}

static int is_gguf(const char *path) {
    size_t n = strlen(path);
    if (n >= 5 && !strcmp(path + n - 5, ".gguf")) return 1;
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char magic[4] = {0};
    size_t r = fread(magic, 1, 4, f);
    fclose(f);
    return r == 4 && !memcmp(magic, "GGUF", 4);
}

int kiln_model_load(kiln_model **out, const char *path, kiln_error *err) {
    kiln_json_enter();
    *out = NULL;
    if (!path || !*path) return KILN_ERR(err, KILN_ERR_INVALID_ARG, "no model path given");
    if (strlen(path) >= sizeof((kiln_model *)0)->path)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "%.100s...: path too long", path);
    kiln_model *m = kiln_calloc(1, sizeof *m);
    if (!m) return KILN_ERR(err, KILN_ERR_OOM, "%s: out of memory", path);
    snprintf(m->path, sizeof m->path, "%s", path);
    int rc;
    if (kiln_is_dir(path)) {
        int hf = dir_has(path, "config.json") && (dir_has(path, "model.safetensors") ||
                                                  dir_has(path, "model.safetensors.index.json"));
        int native = dir_has(path, "params.json") && dir_has(path, "consolidated.safetensors");
        if (hf) {
            rc = kiln_load_hf(m, path, err);
            if (!rc && native) {
                size_t n = strlen(m->loaded_from);
                snprintf(m->loaded_from + n, sizeof m->loaded_from - n,
                         " (Hugging Face layout preferred; params.json + consolidated.safetensors "
                         "not used)");
            }
        } else if (native || dir_has(path, "params.json")) {
            rc = kiln_load_mistral(m, path, err);
        } else if (dir_has(path, "config.json")) {
            rc = KILN_ERR(err, KILN_ERR_NOT_FOUND,
                          "%s: config.json but no model.safetensors or model.safetensors.index.json",
                          path);
        } else {
            rc = KILN_ERR(err, KILN_ERR_NOT_FOUND,
                          "%s: not a model folder (no config.json or params.json)", path);
        }
    } else if (!kiln_file_exists(path)) {
        rc = KILN_ERR(err, KILN_ERR_IO, "%s: no such file or folder", path);
    } else if (is_gguf(path)) {
        m->format = KILN_FORMAT_GGUF;
        rc = kiln_load_gguf(m, path, err);
    } else {
        rc = kiln_load_llama2c(m, path, err);
    }
    if (rc) {
        kiln_model_free(m);
        return rc;
    }
    *out = m;
    return KILN_OK;
}
