/* dummy.c: --load-format dummy: random weights in the shape of a config.json.
 *
 * Tensors get HF names and the config's dtype; with a quantization type (--dummy-quant, a
 * kiln_ftype name) the layers' matrices and an untied LM head get that type's GGUF block types
 * (format/ftype.h: the Q4_K_M mix, fallbacks for rows that are not whole blocks), their bytes
 * from kiln_dummy_qbyte (dummy_quant.h, shared with the CUDA fill); the embedding keeps the
 * config dtype and the norms are f32-valued as always. Values come from kiln_dummy_value, a pure
 * function of (seed, tensor index, element index) (a counter-based hash, see model.h), so any
 * element is reproducible without generating the others: a GPU backend given host_data = 0
 * can fill the same weights on the device. Norm weights are always on the host (they are tiny
 * and bind makes f32 copies of them); matrices are in one aligned buffer when host_data = 1.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "format/ftype.h"
#include "model/dummy_quant.h"
#include "model/loaders.h"
#include "util/alloc.h"
#include "util/dummy_hash.h"
#include "util/error.h"
#include "util/fp16.h"
#include "util/json.h"

float kiln_dummy_value(uint64_t seed, int t, int64_t i, const kiln_tensor *tensor) {
    float u = kiln_dummy_u(kiln_dummy_key(seed, t), i); /* [-1, 1) */
    if (tensor->ndim == 1) return 1.0f + u / 16.0f;
    return u / sqrtf((float)tensor->shape[1]);
}

static void fill(const kiln_tensor *t, int ti, uint64_t seed, void *dst) {
    if (kiln_dtype_is_quant(t->dtype)) {
        uint64_t key = kiln_dummy_key(seed, ti);
        uint8_t *b = dst;
        for (size_t i = 0; i < t->nbytes; i++) b[i] = kiln_dummy_qbyte(key, t->dtype, (int64_t)i, t->shape[1]);
        return;
    }
    int64_t n = t->ndim == 1 ? t->shape[0] : t->shape[0] * t->shape[1];
    for (int64_t i = 0; i < n; i++) {
        float v = kiln_dummy_value(seed, ti, i, t);
        if (t->dtype == KILN_DT_F32) ((float *)dst)[i] = v;
        else if (t->dtype == KILN_DT_F16) ((uint16_t *)dst)[i] = kiln_f32_to_f16(v);
        else ((uint16_t *)dst)[i] = kiln_f32_to_bf16(v);
    }
}

int kiln_model_load_dummy(kiln_model **out, const char *config_path, uint64_t seed, int host_data,
                          kiln_error *err) {
    return kiln_model_load_dummy_quant(out, config_path, seed, host_data, NULL, err);
}

int kiln_model_load_dummy_quant(kiln_model **out, const char *config_path, uint64_t seed, int host_data,
                                const char *quant, kiln_error *err) {
    *out = NULL;
    kiln_json_enter();
    kiln_ftype ft = KILN_FTYPE_COUNT;
    if (quant && *quant && kiln_ftype_parse(quant, &ft))
        return KILN_ERR(err, KILN_ERR_INVALID_ARG,
                        "dummy quantization '%s' is not one of f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, "
                        "q4_k_s, q4_k_m, q5_k_s, q5_k_m, q6_k", quant);
    kiln_model *m = kiln_calloc(1, sizeof *m);
    if (!m) return KILN_ERR(err, KILN_ERR_OOM, "%s: out of memory", config_path);
    int rc;
    snprintf(m->path, sizeof m->path, "%s", config_path);
    m->format = KILN_FORMAT_DUMMY;
    m->dummy_seed = seed;
    m->dummy_host_data = host_data;
    if (ft != KILN_FTYPE_COUNT) snprintf(m->dummy_quant, sizeof m->dummy_quant, "%s", kiln_ftype_name(ft));
    if ((rc = kiln_hf_parse_config(&m->cfg, config_path, err))) goto fail;
    kiln_config *c = &m->cfg;
    if (c->dtype == KILN_DT_COUNT) c->dtype = KILN_DT_BF16;
    if ((rc = kiln_config_check(c, config_path, err))) goto fail;

    int L = c->n_layers;
    /* per layer: 9 (dense) or 6 + router + 3 per expert (MoE), + 3 biases (Qwen2), + 2 q/k norms (Qwen3) */
    size_t per = (size_t)(c->n_experts > 0 ? 7 + 3 * c->n_experts : 9) + (c->qkv_bias ? 3 : 0) + (c->qk_norm ? 2 : 0);
    m->tensors = kiln_calloc(per * L + 3, sizeof *m->tensors);
    if (!m->tensors) {
        rc = KILN_ERR(err, KILN_ERR_OOM, "%s: out of memory", config_path);
        goto fail;
    }
    int64_t q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    struct { const char *fmt; int64_t rows, cols; kiln_wrole role; } per_layer[] = {
        {"model.layers.%d.input_layernorm.weight", c->dim, 0, KILN_WROLE_NORM},
        {"model.layers.%d.post_attention_layernorm.weight", c->dim, 0, KILN_WROLE_NORM},
        {"model.layers.%d.self_attn.q_proj.weight", q, c->dim, KILN_WROLE_ATTN_Q},
        {"model.layers.%d.self_attn.k_proj.weight", kv, c->dim, KILN_WROLE_ATTN_K},
        {"model.layers.%d.self_attn.v_proj.weight", kv, c->dim, KILN_WROLE_ATTN_V},
        {"model.layers.%d.self_attn.o_proj.weight", c->dim, q, KILN_WROLE_ATTN_O},
        {"model.layers.%d.mlp.gate_proj.weight", c->hidden_dim, c->dim, KILN_WROLE_FFN_GATE},
        {"model.layers.%d.mlp.up_proj.weight", c->hidden_dim, c->dim, KILN_WROLE_FFN_UP},
        {"model.layers.%d.mlp.down_proj.weight", c->dim, c->hidden_dim, KILN_WROLE_FFN_DOWN},
    };
    /* the type of a matrix of role ro in layer l: the config dtype, or the quantization mix's */
#define MAT_TYPE(ro, l, cc) \
    (ft == KILN_FTYPE_COUNT || (ro) == KILN_WROLE_TOKEN_EMBD ? c->dtype : kiln_ftype_tensor_type(ft, ro, l, L, 2, cc))
#define ADD(nm, r, cc, dt_)                                                   \
    do {                                                                      \
        kiln_tensor *t_ = &m->tensors[m->n_tensors++];                        \
        snprintf(t_->name, sizeof t_->name, "%s", (nm));                      \
        t_->dtype = (cc) ? (dt_) : ft != KILN_FTYPE_COUNT ? KILN_DT_F32 : c->dtype; \
        t_->ndim = (cc) ? 2 : 1;                                              \
        t_->shape[0] = (r);                                                   \
        t_->shape[1] = (cc);                                                  \
        t_->nbytes = (size_t)(r) * kiln_dtype_row_bytes(t_->dtype, (cc) ? (cc) : 1); \
    } while (0)
    ADD("model.embed_tokens.weight", c->vocab_size, c->dim, c->dtype);
    if (!c->tied_embeddings) ADD("lm_head.weight", c->vocab_size, c->dim, MAT_TYPE(KILN_WROLE_OUTPUT, 0, c->dim));
    ADD("model.norm.weight", c->dim, 0, c->dtype);
    char name[128];
    for (int l = 0; l < L; l++) {
        for (size_t k = 0; k < sizeof per_layer / sizeof per_layer[0]; k++) {
            if (c->n_experts > 0 && k >= 6) break; /* MoE: experts instead of the dense FFN */
            snprintf(name, sizeof name, per_layer[k].fmt, l);
            ADD(name, per_layer[k].rows, per_layer[k].cols, MAT_TYPE(per_layer[k].role, l, per_layer[k].cols));
        }
        /* issue 19's extras, after the dense tensors (a dense model's tensor indices, hence its
         * values, are unchanged); 1-D ones get the norm formula (1 + u / 16) */
        if (c->qkv_bias) {
            const char *b[3] = {"q", "k", "v"};
            for (int j = 0; j < 3; j++) {
                snprintf(name, sizeof name, "model.layers.%d.self_attn.%s_proj.bias", l, b[j]);
                ADD(name, j ? kv : q, 0, c->dtype);
            }
        }
        if (c->qk_norm) {
            snprintf(name, sizeof name, "model.layers.%d.self_attn.q_norm.weight", l);
            ADD(name, c->head_dim, 0, c->dtype);
            snprintf(name, sizeof name, "model.layers.%d.self_attn.k_norm.weight", l);
            ADD(name, c->head_dim, 0, c->dtype);
        }
        if (c->n_experts > 0) {
            snprintf(name, sizeof name, "model.layers.%d.block_sparse_moe.gate.weight", l);
            ADD(name, c->n_experts, c->dim, c->dtype);
            for (int e = 0; e < c->n_experts; e++) {
                snprintf(name, sizeof name, "model.layers.%d.block_sparse_moe.experts.%d.w1.weight", l, e);
                ADD(name, c->hidden_dim, c->dim, MAT_TYPE(KILN_WROLE_FFN_GATE, l, c->dim));
                snprintf(name, sizeof name, "model.layers.%d.block_sparse_moe.experts.%d.w3.weight", l, e);
                ADD(name, c->hidden_dim, c->dim, MAT_TYPE(KILN_WROLE_FFN_UP, l, c->dim));
                snprintf(name, sizeof name, "model.layers.%d.block_sparse_moe.experts.%d.w2.weight", l, e);
                ADD(name, c->dim, c->hidden_dim, MAT_TYPE(KILN_WROLE_FFN_DOWN, l, c->hidden_dim));
            }
        }
    }
#undef ADD
#undef MAT_TYPE
    /* one buffer: norms first, then matrices (when host_data); each tensor 64-byte aligned */
    size_t norm_bytes = 0, mat_bytes = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        size_t nb = (m->tensors[i].nbytes + 63) / 64 * 64;
        if (m->tensors[i].ndim == 1) norm_bytes += nb;
        else mat_bytes += nb;
    }
    size_t total = norm_bytes + (host_data ? mat_bytes : 0);
    /* A config larger than the machine is refused before any allocation: with overcommit the
     * allocation itself can succeed and the fill below would then get the process OOM-killed
     * (and ASan aborts on a request this large instead of returning NULL). */
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGE_SIZE);
    size_t phys = pages > 0 && psz > 0 ? (size_t)pages * (size_t)psz : 0;
    if (phys && total > phys) {
        rc = KILN_ERR(err, KILN_ERR_OOM, "%s: dummy weights need %.1f GiB, more than this machine's %.1f GiB of memory",
                      config_path, (double)total / (1 << 30), (double)phys / (1 << 30));
        goto fail;
    }
    m->owned = kiln_malloc_aligned(total);
    if (!m->owned) {
        rc = KILN_ERR(err, KILN_ERR_OOM, "%s: out of memory for %zu bytes of dummy weights",
                      config_path, total);
        goto fail;
    }
    unsigned char *np = m->owned, *mp = (unsigned char *)m->owned + norm_bytes;
    for (int i = 0; i < m->n_tensors; i++) {
        kiln_tensor *t = &m->tensors[i];
        size_t nb = (t->nbytes + 63) / 64 * 64;
        if (t->ndim == 1) {
            t->data = np;
            np += nb;
        } else if (host_data) {
            t->data = mp;
            mp += nb;
        } else {
            continue; /* data stays NULL */
        }
        fill(t, i, seed, (void *)t->data);
    }
    snprintf(m->loaded_from, sizeof m->loaded_from, "dummy weights (seed %llu%s%s%s) in the shape of %s",
             (unsigned long long)seed, ft != KILN_FTYPE_COUNT ? ", quantized " : "",
             ft != KILN_FTYPE_COUNT ? kiln_ftype_name(ft) : "", host_data ? "" : ", not on the host", config_path);
    /* a tokenizer beside the config */
    const char *slash = strrchr(config_path, '/');
    int dl = slash ? (int)(slash - config_path) : 1;
    const char *dir = slash ? config_path : ".";
    char tp[1200];
    snprintf(tp, sizeof tp, "%.*s/tokenizer.json", dl, dir);
    int has_tok = kiln_file_exists(tp);
    snprintf(tp, sizeof tp, "%.*s/tekken.json", dl, dir);
    if ((has_tok || kiln_file_exists(tp)) && dl < (int)sizeof m->tokenizer_path)
        snprintf(m->tokenizer_path, sizeof m->tokenizer_path, "%.*s", dl, dir);
    if ((rc = kiln_model_bind(m, err))) goto fail;
    *out = m;
    return KILN_OK;
fail:
    kiln_model_free(m);
    return rc;
}
