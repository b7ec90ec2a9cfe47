/* gguf_model.c: kiln_model from a GGUF file (architecture "llama", which Mistral-family GGUFs
 * use too, "qwen2" with q/k/v biases, "qwen3" with per-head q/k norms).
 *
 * Config comes from the <arch>.* metadata (rope.scaling.type none / linear / yarn with its
 * factor and original_context_length; Llama 3.1's bands as the rope_freqs tensor) (head_dim = attention.key_length, default dim/heads;
 * rope.freq_base default 10000; vocab = length of tokenizer.ggml.tokens; a file without
 * tokenizer metadata is for ids-only use: vocab = llama.vocab_size, else token_embd's rows,
 * and no tokenizer_path). Every GGUF tensor of
 * a type kiln knows becomes a kiln_tensor pointing into the mapping, with the shape reversed:
 * GGUF's ne[0] is the innermost dimension, kiln's shape is outermost first, so a llama.cpp
 * linear weight ne = [in, out] is kiln [out][in], already PyTorch's layout. llama.cpp's
 * converter permutes q/k rows back to Meta's interleaved RoPE order, hence
 * KILN_ROPE_INTERLEAVED. Roles are bound by kiln_model_bind (model.c) with shape checks; the norm vectors
 * are copied to f32 in one owned buffer (m->owned). The kiln_gguf handle (which owns the
 * mapping) is kept in m->gguf: kiln_model_free must call kiln_gguf_close(m->gguf).
 */
#include <stdio.h>
#include <string.h>
#include "format/gguf.h"
#include "model/loaders.h"
#include "util/alloc.h"
#include "util/error.h"
#include "util/fp16.h"
#include "util/log.h"

static int get_int(const kiln_gguf *g, const char *path, const char *key, int required, int def,
                   int *out, kiln_error *err) {
    int64_t v;
    if (kiln_gguf_get_i64(g, key, &v) != 0) {
        if (kiln_gguf_find_key(g, key) >= 0)
            return KILN_ERR(err, KILN_ERR_FORMAT, "%s: metadata %s is not an integer", path, key);
        if (required) return KILN_ERR(err, KILN_ERR_FORMAT, "%s: metadata %s is missing", path, key);
        *out = def;
        return 0;
    }
    if (v <= 0 || v > (1 << 30))
        return KILN_ERR(err, KILN_ERR_FORMAT, "%s: metadata %s = %lld is out of range", path, key,
                        (long long)v);
    *out = (int)v;
    return 0;
}

static int str_is(kiln_gguf_str s, const char *lit) {
    return s.len == strlen(lit) && memcmp(s.ptr, lit, s.len) == 0;
}

/* <arch>.<key> */
static const char *akey(char *buf, size_t n, const char *arch, const char *key) {
    snprintf(buf, n, "%s.%s", arch, key);
    return buf;
}

/* <arch>.rope.scaling.*: type none / linear / yarn with factor and original_context_length
 * (llama.cpp's Llama 3.1 bands come as the rope_freqs tensor instead, bound in model.c). */
static int read_rope_scaling(kiln_config *c, const kiln_gguf *g, const char *arch, const char *path, kiln_error *err) {
    char k[96];
    kiln_gguf_str st;
    if (kiln_gguf_get_str(g, akey(k, sizeof k, arch, "rope.scaling.type"), &st) != 0 || str_is(st, "none")) {
        if (kiln_gguf_find_key(g, k) >= 0 && kiln_gguf_get_str(g, k, &st) != 0)
            return KILN_ERR(err, KILN_ERR_FORMAT, "%s: metadata %s is not a string", path, k);
        return 0;
    }
    kiln_rope_scaling *rs = &c->rope_scaling;
    if (str_is(st, "linear")) rs->type = KILN_ROPE_SCALING_LINEAR;
    else if (str_is(st, "yarn")) rs->type = KILN_ROPE_SCALING_YARN;
    else
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: %s '%.*s' is not supported (none, linear, yarn)", path, k,
                        (int)(st.len > 64 ? 64 : st.len), st.ptr);
    double f;
    if (kiln_gguf_get_f64(g, akey(k, sizeof k, arch, "rope.scaling.factor"), &f) != 0 || !(f > 0))
        return KILN_ERR(err, KILN_ERR_FORMAT, "%s: RoPE scaling without a positive %s", path, k);
    rs->factor = f;
    int orig = 0;
    int rc = get_int(g, path, akey(k, sizeof k, arch, "rope.scaling.original_context_length"), 0, 0, &orig, err);
    if (rc) return rc;
    rs->orig_max_pos = orig;
    rs->beta_fast = 32.0;
    rs->beta_slow = 1.0;
    rs->truncate = 1;
    /* llama.cpp multiplies its own mscale by these; HF-style attention factors do not map onto
     * that one to one: refused rather than guessed */
    const char *refused[] = {"rope.scaling.attn_factor", "rope.scaling.yarn_log_multiplier",
                             "rope.scaling.yarn_ext_factor", "rope.scaling.yarn_attn_factor"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        if (kiln_gguf_get_f64(g, akey(k, sizeof k, arch, refused[i]), &f) == 0 && f != 1.0 &&
            !(strstr(refused[i], "log_multiplier") && f == 0.0))
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: metadata %s = %g is not supported", path, k, f);
    return 0;
}

static int read_config(kiln_model *m, const kiln_gguf *g, const char *path, kiln_error *err) {
    kiln_config *c = &m->cfg;
    kiln_gguf_str as;
    if (kiln_gguf_get_str(g, "general.architecture", &as) != 0)
        return KILN_ERR(err, KILN_ERR_FORMAT, "%s: metadata general.architecture is missing", path);
    const char *arch = str_is(as, "llama") ? "llama" : str_is(as, "qwen2") ? "qwen2" : str_is(as, "qwen3") ? "qwen3" : NULL;
    if (!arch)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED,
                        "%s: architecture '%.*s' is not supported (llama, qwen2, qwen3)", path,
                        (int)(as.len > 64 ? 64 : as.len), as.ptr);
    snprintf(c->arch, sizeof c->arch, "%s", arch);
    char k[96];
    int rc = get_int(g, path, akey(k, sizeof k, arch, "embedding_length"), 1, 0, &c->dim, err);
    if (!rc) rc = get_int(g, path, akey(k, sizeof k, arch, "block_count"), 1, 0, &c->n_layers, err);
    if (!rc) rc = get_int(g, path, akey(k, sizeof k, arch, "feed_forward_length"), 1, 0, &c->hidden_dim, err);
    if (!rc) rc = get_int(g, path, akey(k, sizeof k, arch, "attention.head_count"), 1, 0, &c->n_heads, err);
    if (!rc) rc = get_int(g, path, akey(k, sizeof k, arch, "attention.head_count_kv"), 0, c->n_heads, &c->n_kv_heads, err);
    if (!rc) rc = get_int(g, path, akey(k, sizeof k, arch, "context_length"), 0, 2048, &c->max_seq_len, err);
    if (rc) return rc;
    if (kiln_gguf_find_key(g, akey(k, sizeof k, arch, "expert_count")) >= 0) { /* Mixtral: llama + experts */
        if (strcmp(arch, "llama"))
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: mixture-of-experts %s GGUF is not supported (llama only)", path, arch);
        if ((rc = get_int(g, path, k, 1, 0, &c->n_experts, err)) ||
            (rc = get_int(g, path, akey(k, sizeof k, arch, "expert_used_count"), 1, 0, &c->n_experts_used, err)))
            return rc;
        const char *refused[] = {"expert_shared_count", "expert_weights_scale", "expert_gating_func",
                                 "expert_weights_norm", "expert_feed_forward_length"};
        for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
            if (kiln_gguf_find_key(g, akey(k, sizeof k, arch, refused[i])) >= 0)
                return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: metadata %s is not supported (Mixtral-style MoE only)",
                                path, k);
    }
    if (c->dim % c->n_heads && kiln_gguf_find_key(g, akey(k, sizeof k, arch, "attention.key_length")) < 0)
        return KILN_ERR(err, KILN_ERR_FORMAT, "%s: embedding_length %d is not a multiple of head_count %d",
                        path, c->dim, c->n_heads);
    rc = get_int(g, path, akey(k, sizeof k, arch, "attention.key_length"), 0, c->dim / c->n_heads, &c->head_dim, err);
    if (rc) return rc;
    int vlen, rope_dims;
    rc = get_int(g, path, akey(k, sizeof k, arch, "attention.value_length"), 0, c->head_dim, &vlen, err);
    if (!rc) rc = get_int(g, path, akey(k, sizeof k, arch, "rope.dimension_count"), 0, c->head_dim, &rope_dims, err);
    if (rc) return rc;
    if (vlen != c->head_dim)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: value_length %d != key_length %d", path, vlen,
                        c->head_dim);
    if (rope_dims != c->head_dim)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED,
                        "%s: partial RoPE (rope.dimension_count %d of head_dim %d) is not supported",
                        path, rope_dims, c->head_dim);
    if (c->n_heads % c->n_kv_heads)
        return KILN_ERR(err, KILN_ERR_FORMAT, "%s: head_count %d is not a multiple of head_count_kv %d",
                        path, c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2)
        return KILN_ERR(err, KILN_ERR_FORMAT, "%s: odd head_dim %d", path, c->head_dim);
    if ((rc = read_rope_scaling(c, g, arch, path, err))) return rc;
    int sw = 0;
    if ((rc = get_int(g, path, akey(k, sizeof k, arch, "attention.sliding_window"), 0, 0, &sw, err))) return rc;
    if (sw > 0 && sw < c->max_seq_len)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: %s = %d: sliding windows from GGUF metadata are not supported yet",
                        path, k, sw);
    double f;
    if (kiln_gguf_find_key(g, akey(k, sizeof k, arch, "rope.freq_base")) >= 0) {
        if (kiln_gguf_get_f64(g, k, &f) != 0 || !(f > 0))
            return KILN_ERR(err, KILN_ERR_FORMAT, "%s: bad %s", path, k);
        c->rope_theta = f;
    } else {
        c->rope_theta = 10000.0;
    }
    if (kiln_gguf_get_f64(g, akey(k, sizeof k, arch, "attention.layer_norm_rms_epsilon"), &f) == 0) {
        if (!(f > 0 && f < 1))
            return KILN_ERR(err, KILN_ERR_FORMAT, "%s: bad layer_norm_rms_epsilon %g", path, f);
        c->norm_eps = (float)f;
    } else {
        c->norm_eps = 1e-5f;
    }
    /* llama.cpp permutes llama's q / k rows into Meta's interleaved order; qwen2 / qwen3 use
     * NEOX RoPE (rotate_half) on unpermuted rows */
    c->rope_style = strcmp(arch, "llama") ? KILN_ROPE_HALF : KILN_ROPE_INTERLEAVED;
    c->qkv_bias = !strcmp(arch, "qwen2");
    c->qk_norm = !strcmp(arch, "qwen3");
    kiln_gguf_type et;
    uint64_t nv;
    if (kiln_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &nv) != 0 || et != KILN_GGUF_STRING) {
        /* no vocabulary: an ids-only file (kiln quantize of a checkpoint without one); the size
         * from llama.vocab_size, else the embedding's rows */
        if (kiln_gguf_find_key(g, "tokenizer.ggml.tokens") >= 0)
            return KILN_ERR(err, KILN_ERR_FORMAT, "%s: tokenizer.ggml.tokens is not a string array", path);
        const kiln_gguf_tensor_info *te = kiln_gguf_find_tensor(g, "token_embd.weight");
        uint64_t v;
        if (kiln_gguf_get_u64(g, akey(k, sizeof k, arch, "vocab_size"), &v) == 0) nv = v;
        else if (te && te->n_dims == 2) nv = te->ne[1];
        else
            return KILN_ERR(err, KILN_ERR_FORMAT, "%s: no tokenizer.ggml.tokens, %s or token_embd.weight",
                            path, k);
        m->tokenizer_path[0] = 0;
    }
    if (nv == 0 || nv > (1u << 30))
        return KILN_ERR(err, KILN_ERR_FORMAT, "%s: vocabulary of %llu tokens", path,
                        (unsigned long long)nv);
    c->vocab_size = (int)nv;
    int64_t id;
    c->bos_id = -1;
    if (kiln_gguf_get_i64(g, "tokenizer.ggml.bos_token_id", &id) == 0 && id >= 0 && id < (int64_t)nv)
        c->bos_id = (int)id;
    const char *eos_keys[] = {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"};
    for (int k = 0; k < 2; k++) {
        if (kiln_gguf_get_i64(g, eos_keys[k], &id) != 0 || id < 0 || id >= (int64_t)nv) continue;
        int dup = 0;
        for (int j = 0; j < c->n_eos; j++) dup |= c->eos_ids[j] == id;
        if (!dup && c->n_eos < KILN_MAX_EOS) c->eos_ids[c->n_eos++] = (int)id;
    }
    return 0;
}

/* GGUF tensor infos -> kiln_tensor table (known types only; unknown ones are refused in
 * gguf_bind when a role needs them). */
static int fill_tensors(kiln_model *m, const kiln_gguf *g, const char *path, kiln_error *err) {
    uint64_t n = kiln_gguf_n_tensors(g);
    m->tensors = kiln_calloc((size_t)n + 1, sizeof *m->tensors);
    if (!m->tensors) return KILN_ERR(err, KILN_ERR_OOM, "%s: out of memory", path);
    for (uint64_t i = 0; i < n; i++) {
        const kiln_gguf_tensor_info *ti = kiln_gguf_tensor(g, i);
        if (ti->name.len >= sizeof m->tensors[0].name)
            return KILN_ERR(err, KILN_ERR_FORMAT, "%s: tensor name of %llu bytes is too long", path,
                            (unsigned long long)ti->name.len);
        if (ti->dtype == KILN_DT_COUNT) {
            KILN_DEBUG("%s: tensor '%.*s' has unsupported type %s, skipped", path, (int)ti->name.len,
                       ti->name.ptr, kiln_gguf_ggml_type_name(ti->ggml_type));
            continue;
        }
        kiln_tensor *t = &m->tensors[m->n_tensors++];
        memcpy(t->name, ti->name.ptr, (size_t)ti->name.len);
        t->name[ti->name.len] = 0;
        t->dtype = ti->dtype;
        t->ndim = (int)ti->n_dims;
        for (int d = 0; d < t->ndim; d++) t->shape[d] = (int64_t)ti->ne[t->ndim - 1 - d];
        t->data = ti->data;
        t->nbytes = ti->nbytes;
    }
    return 0;
}

/* A tensor of a type kiln cannot run is not in the table: say so when a role needs it. */
static int check_types(kiln_model *m, const kiln_gguf *g, const char *path, kiln_error *err) {
    for (uint64_t i = 0; i < kiln_gguf_n_tensors(g); i++) {
        const kiln_gguf_tensor_info *ti = kiln_gguf_tensor(g, i);
        if (ti->dtype != KILN_DT_COUNT) continue;
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: tensor '%.*s' has ggml type %u (%s), which kiln does not support",
                        path, (int)ti->name.len, ti->name.ptr, ti->ggml_type, kiln_gguf_ggml_type_name(ti->ggml_type));
    }
    m->cfg.tied_embeddings = kiln_gguf_find_tensor(g, "output.weight") == NULL;
    return 0;
}

int kiln_load_gguf(kiln_model *m, const char *path, kiln_error *err) {
    kiln_gguf *g = NULL;
    int rc = kiln_gguf_open(&g, path, err);
    if (rc) return rc;
    m->gguf = g; /* owned by the model from here: kiln_model_free closes it */
    m->format = KILN_FORMAT_GGUF;
    snprintf(m->path, sizeof m->path, "%s", path);
    snprintf(m->loaded_from, sizeof m->loaded_from, "%s (GGUF v%u)", path, kiln_gguf_version(g));
    snprintf(m->tokenizer_path, sizeof m->tokenizer_path, "%s", path); /* vocab is embedded */
    rc = read_config(m, g, path, err); /* clears tokenizer_path when there is none */
    if (!rc) rc = fill_tensors(m, g, path, err);
    if (!rc) rc = check_types(m, g, path, err);
    if (!rc) rc = kiln_model_bind(m, err);
    if (!rc) { /* the dtype of the large matrices: the most common one among the layers' */
        int counts[KILN_DT_COUNT] = {0};
        for (int l = 0; l < m->cfg.n_layers; l++) {
            const kiln_layer_weights *L = &m->layers[l];
            const kiln_tensor *ts[7] = {L->wq, L->wk, L->wv, L->wo, L->w_gate, L->w_up, L->w_down};
            for (int k = 0; k < 7; k++)
                if (ts[k]) counts[ts[k]->dtype]++;
            for (int k = 0; L->experts && k < 3 * m->cfg.n_experts; k++) counts[L->experts[k].dtype]++;
        }
        m->cfg.dtype = KILN_DT_F32;
        for (int t = 0; t < KILN_DT_COUNT; t++)
            if (counts[t] > counts[m->cfg.dtype]) m->cfg.dtype = (kiln_dtype)t;
    }
    return rc;
}
