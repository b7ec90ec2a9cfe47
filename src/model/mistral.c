/* mistral.c: Mistral-native folder (params.json + consolidated.safetensors), as Mistral ships
 * Devstral and as mistral-inference reads it.
 *
 * params.json: dim, n_layers, head_dim, hidden_dim, n_heads, n_kv_heads, norm_eps, vocab_size,
 * rope_theta, optional max_seq_len / max_position_embeddings (default 32768), tied_embeddings.
 * Tensor names: tok_embeddings, norm, output, layers.N.attention.{wq,wk,wv,wo},
 * layers.N.attention_norm, layers.N.ffn_norm, layers.N.feed_forward.{w1 gate, w2 down, w3 up}.
 * The q/k rows are in Meta's interleaved RoPE order (pairs 2i, 2i+1): rope_style INTERLEAVED
 * (HF's conversion permutes them into rotate_half order instead). quantization {qformat_weight
 * "fp8_e4m3", qscheme_act}: FP8 weights with qscale_weight / qscale_act (model/fp8.c).
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include "model/loaders.h"
#include "format/safetensors.h"
#include "util/error.h"
#include "util/json.h"

static int req_int(json_t *j, const char *key, int *out, const char *path, kiln_error *err) {
    json_t *v = json_object_get(j, key);
    if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > 0x7fffffff)
        return KILN_ERR(err, KILN_ERR_FORMAT, "%s: %s missing or not a positive integer", path, key);
    *out = (int)json_integer_value(v);
    return KILN_OK;
}
static int opt_int(json_t *j, const char *key, int def, int *out, const char *path, kiln_error *err) {
    json_t *v = json_object_get(j, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return KILN_OK;
    }
    return req_int(j, key, out, path, err);
}
static int opt_num(json_t *j, const char *key, double def, double *out, const char *path,
                   kiln_error *err) {
    json_t *v = json_object_get(j, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return KILN_OK;
    }
    if (!json_is_number(v)) return KILN_ERR(err, KILN_ERR_FORMAT, "%s: %s is not a number", path, key);
    *out = json_number_value(v);
    return KILN_OK;
}

static int parse_params(kiln_config *c, json_t *j, const char *path, kiln_error *err) {
    memset(c, 0, sizeof *c);
    if (!json_is_object(j)) return KILN_ERR(err, KILN_ERR_FORMAT, "%s: not a JSON object", path);
    const char *refused[] = {"quantization_config", "lora", "yarn"}; /* quantization: fp8.c */
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        json_t *v = json_object_get(j, refused[i]);
        if (v && !json_is_null(v))
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: \"%s\" models are not supported", path,
                            refused[i]);
    }
    json_t *moe = json_object_get(j, "moe"); /* Mixtral: {"num_experts": 8, "num_experts_per_tok": 2} */
    if (moe && !json_is_null(moe)) {
        const char *k;
        json_t *v;
        if (!json_is_object(moe)) return KILN_ERR(err, KILN_ERR_FORMAT, "%s: moe is not an object", path);
        json_object_foreach(moe, k, v) if (strcmp(k, "num_experts") && strcmp(k, "num_experts_per_tok"))
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: moe.%s is not supported (num_experts, num_experts_per_tok)",
                            path, k);
        int rc;
        if ((rc = req_int(moe, "num_experts", &c->n_experts, path, err)) ||
            (rc = req_int(moe, "num_experts_per_tok", &c->n_experts_used, path, err)))
            return rc;
    }
    json_t *ve = json_object_get(j, "vision_encoder");
    if (ve && !json_is_null(ve)) snprintf(c->text_of, sizeof c->text_of, "vision_encoder"); /* text only */
    int rc;
    if ((rc = req_int(j, "dim", &c->dim, path, err)) ||
        (rc = req_int(j, "n_layers", &c->n_layers, path, err)) ||
        (rc = req_int(j, "hidden_dim", &c->hidden_dim, path, err)) ||
        (rc = req_int(j, "n_heads", &c->n_heads, path, err)) ||
        (rc = req_int(j, "vocab_size", &c->vocab_size, path, err)) ||
        (rc = opt_int(j, "n_kv_heads", c->n_heads, &c->n_kv_heads, path, err)) ||
        (rc = opt_int(j, "head_dim", c->dim / c->n_heads, &c->head_dim, path, err)))
        return rc;
    int ctx_default = 32768;
    if ((rc = opt_int(j, "max_position_embeddings", ctx_default, &ctx_default, path, err)) ||
        (rc = opt_int(j, "max_seq_len", ctx_default, &c->max_seq_len, path, err)))
        return rc;
    double eps, theta;
    if ((rc = opt_num(j, "norm_eps", 1e-5, &eps, path, err)) ||
        (rc = opt_num(j, "rope_theta", 10000.0, &theta, path, err)))
        return rc;
    c->norm_eps = (float)eps;
    c->rope_theta = theta;
    /* sliding_window: one value for every layer, or a list repeated over the layers (layer l
     * takes list[l % n], as vLLM reads Ministral's interleaved windows); a value that covers the
     * context is full attention. kiln runs one window size: different sizes are refused. */
    json_t *sw = json_object_get(j, "sliding_window");
    if (sw && !json_is_null(sw)) {
        size_t n = json_is_array(sw) ? json_array_size(sw) : 1;
        if (n == 0) return KILN_ERR(err, KILN_ERR_FORMAT, "%s: sliding_window is an empty list", path);
        for (int l = 0; l < c->n_layers; l++) {
            json_t *v = json_is_array(sw) ? json_array_get(sw, (size_t)l % n) : sw;
            if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 0x7fffffff)
                return KILN_ERR(err, KILN_ERR_FORMAT, "%s: sliding_window is not a positive integer (or a list of them)",
                                path);
            int w = (int)json_integer_value(v);
            if (w >= c->max_seq_len) continue; /* covers the context */
            if (c->n_layers > KILN_MAX_WINDOW_LAYERS)
                return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: sliding window with %d layers", path, c->n_layers);
            if (c->sliding_window && c->sliding_window != w)
                return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: sliding windows of %d and %d tokens (one size is supported)",
                                path, c->sliding_window, w);
            c->sliding_window = w;
            c->window_layers[l / 64] |= 1ull << (l % 64);
        }
    }
    json_t *rs = json_object_get(j, "rope_scaling");
    if (rs && !json_is_null(rs))
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: rope_scaling is not supported", path);
    c->tied_embeddings = json_is_true(json_object_get(j, "tied_embeddings"));
    snprintf(c->arch, sizeof c->arch, "mistral");
    c->rope_style = KILN_ROPE_INTERLEAVED;
    c->bos_id = 1; /* Mistral's tokenizers: <s> = 1, </s> = 2 */
    c->eos_ids[0] = 2;
    c->n_eos = 1;
    return KILN_OK;
}

int kiln_load_mistral(kiln_model *m, const char *dir, kiln_error *err) {
    char p[1200];
    m->format = KILN_FORMAT_MISTRAL;
    if (kiln_path_join(p, sizeof p, dir, "params.json"))
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "%s: path too long", dir);
    json_error_t je;
    json_t *j = json_load_file(p, 0, &je);
    if (!j) {
        if (!kiln_file_exists(p)) return KILN_ERR(err, KILN_ERR_IO, "%s: cannot open", p);
        return KILN_JSON_FAIL(err, &je, p, "%s: invalid JSON: %s (line %d, column %d)", p,
                        je.text, je.line, je.column);
    }
    int rc = parse_params(&m->cfg, j, p, err);
    if (!rc) rc = kiln_fp8_parse_mistral(m, json_object_get(j, "quantization"), p, err);
    json_decref(j);
    if (rc) return rc;
    kiln_path_join(p, sizeof p, dir, "consolidated.safetensors");
    if (!kiln_file_exists(p))
        return KILN_ERR(err, KILN_ERR_NOT_FOUND, "%s: no consolidated.safetensors beside params.json", dir);
    if ((rc = kiln_model_add_safetensors(m, p, err))) return rc;
    if (m->cfg.text_of[0]) { /* Pixtral-style vision encoder and adapter: skipped, text only */
        static const kiln_prefix_map mm[] = {{"vision_encoder.", NULL}, {"vision_language_adapter.", NULL},
                                             {"patch_merger.", NULL},   {"pre_mm_projector_norm.", NULL},
                                             {NULL, NULL}};
        kiln_model_take_text(m, mm);
    }
    const kiln_tensor *e = kiln_model_find(m, "tok_embeddings.weight");
    if (!e) e = kiln_model_find(m, "output.weight");
    m->cfg.dtype = e ? e->dtype : KILN_DT_BF16;
    snprintf(m->loaded_from, sizeof m->loaded_from,
             "Mistral-native: params.json + consolidated.safetensors");
    if ((kiln_path_join(p, sizeof p, dir, "tekken.json") == 0 && kiln_file_exists(p)) ||
        (kiln_path_join(p, sizeof p, dir, "tokenizer.json") == 0 && kiln_file_exists(p)))
        snprintf(m->tokenizer_path, sizeof m->tokenizer_path, "%s", dir);
    return kiln_model_bind(m, err);
}
