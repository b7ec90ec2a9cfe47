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
    const char *refused[] = {"moe", "vision_encoder", "quantization_config", "lora"}; /* quantization: fp8.c */
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        json_t *v = json_object_get(j, refused[i]);
        if (v && !json_is_null(v))
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: \"%s\" models are not supported", path,
                            refused[i]);
    }
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
    json_t *sw = json_object_get(j, "sliding_window");
    if (sw && !json_is_null(sw)) {
        if (!json_is_integer(sw))
            return KILN_ERR(err, KILN_ERR_FORMAT, "%s: sliding_window is not an integer", path);
        if (json_integer_value(sw) < c->max_seq_len)
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED,
                            "%s: sliding_window %lld is smaller than the context length %d "
                            "(sliding-window attention is not supported)",
                            path, (long long)json_integer_value(sw), c->max_seq_len);
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
        return KILN_ERR(err, KILN_ERR_FORMAT, "%s: invalid JSON: %s (line %d, column %d)", p,
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
