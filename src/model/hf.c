/* hf.c: Hugging Face layout (config.json + model.safetensors or a sharded index).
 *
 * Accepts LlamaForCausalLM and MistralForCausalLM (architectures[0], else model_type). Config
 * quirks handled: rope_theta top-level or in transformers 5's rope_parameters, torch_dtype or
 * dtype, an explicit head_dim that may differ from hidden_size / heads (Devstral), GQA, tied
 * embeddings where only one of embed_tokens / lm_head is stored. Refused with a message: other
 * architectures, rope scaling other than "default", a sliding window shorter than the context,
 * attention/MLP biases, activations other than SiLU. generation_config.json supplies sampling
 * defaults and the bos / eos ids (eos may be an int or a list). RoPE: rotate_half (HF layout).
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include "model/loaders.h"
#include "format/safetensors.h"
#include "util/alloc.h"
#include "util/error.h"
#include "util/json.h"

/* Reads an integer field; absent or null -> def. Returns -1 (error set) on a wrong type. */
static int get_int(json_t *o, const char *key, int def, int *out, const char *path, kiln_error *err) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < -1 || json_integer_value(v) > 0x7fffffff) {
        KILN_ERR(err, KILN_ERR_FORMAT, "%s: %s is not a valid integer", path, key);
        return -1;
    }
    *out = (int)json_integer_value(v);
    return 0;
}

static int get_num(json_t *o, const char *key, double def, double *out, const char *path,
                   kiln_error *err) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_number(v)) {
        KILN_ERR(err, KILN_ERR_FORMAT, "%s: %s is not a number", path, key);
        return -1;
    }
    *out = json_number_value(v);
    return 0;
}

static int is_true(json_t *o, const char *key) { return json_is_true(json_object_get(o, key)); }

/* eos_token_id: an int or a list of ints (absent: leave as is). */
static int read_eos(kiln_config *c, json_t *o, const char *path, kiln_error *err) {
    json_t *v = json_object_get(o, "eos_token_id");
    if (!v || json_is_null(v)) return 0;
    if (json_is_integer(v)) {
        c->eos_ids[0] = (int)json_integer_value(v);
        c->n_eos = 1;
        return 0;
    }
    if (!json_is_array(v) || json_array_size(v) > KILN_MAX_EOS) {
        KILN_ERR(err, KILN_ERR_FORMAT, "%s: eos_token_id must be an int or a list of at most %d",
                 path, KILN_MAX_EOS);
        return -1;
    }
    c->n_eos = 0;
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t *e = json_array_get(v, i);
        if (!json_is_integer(e)) {
            KILN_ERR(err, KILN_ERR_FORMAT, "%s: eos_token_id[%zu] is not an integer", path, i);
            return -1;
        }
        c->eos_ids[c->n_eos++] = (int)json_integer_value(e);
    }
    return 0;
}

static int read_dtype(json_t *o, kiln_dtype *dt, const char *path, kiln_error *err) {
    json_t *v = json_object_get(o, "torch_dtype");
    if (!json_is_string(v)) v = json_object_get(o, "dtype");
    if (!json_is_string(v)) {
        *dt = KILN_DT_COUNT; /* unknown: taken from the weights at bind */
        return 0;
    }
    const char *s = json_string_value(v);
    if (!strcmp(s, "bfloat16")) *dt = KILN_DT_BF16;
    else if (!strcmp(s, "float16")) *dt = KILN_DT_F16;
    else if (!strcmp(s, "float32")) *dt = KILN_DT_F32;
    else {
        KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: dtype %s is not supported (bfloat16, float16, float32)",
                 path, s);
        return -1;
    }
    return 0;
}

/* rope_scaling (transformers 4) / rope_parameters (transformers 5): the type and its keys into
 * c->rope_scaling; types other than default, linear, dynamic, llama3 and yarn are refused. */
static int parse_rope(kiln_config *c, json_t *o, const char *field, const char *path, kiln_error *err) {
    if (!o || json_is_null(o)) return 0;
    if (!json_is_object(o)) {
        KILN_ERR(err, KILN_ERR_FORMAT, "%s: %s is not an object", path, field);
        return -1;
    }
    json_t *t = json_object_get(o, "rope_type");
    if (!json_is_string(t)) t = json_object_get(o, "type");
    const char *s = json_is_string(t) ? json_string_value(t) : NULL;
    if (!s && !strcmp(field, "rope_scaling")) {
        KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: rope_scaling without a type is not supported", path);
        return -1;
    }
    kiln_rope_scaling *rs = &c->rope_scaling;
    if (!s || !strcmp(s, "default")) return 0;
    if (!strcmp(s, "linear")) rs->type = KILN_ROPE_SCALING_LINEAR;
    else if (!strcmp(s, "dynamic")) rs->type = KILN_ROPE_SCALING_DYNAMIC;
    else if (!strcmp(s, "llama3")) rs->type = KILN_ROPE_SCALING_LLAMA3;
    else if (!strcmp(s, "yarn")) rs->type = KILN_ROPE_SCALING_YARN;
    else {
        KILN_ERR(err, KILN_ERR_UNSUPPORTED,
                 "%s: %s type \"%s\" is not supported (default, linear, dynamic, llama3, yarn)", path, field, s);
        return -1;
    }
    double v;
    int orig = 0;
    if (get_num(o, "factor", 0.0, &rs->factor, path, err) ||
        get_int(o, "original_max_position_embeddings", 0, &orig, path, err) ||
        get_num(o, "low_freq_factor", 1.0, &rs->low_freq_factor, path, err) ||
        get_num(o, "high_freq_factor", 4.0, &rs->high_freq_factor, path, err) ||
        get_num(o, "beta_fast", 32.0, &rs->beta_fast, path, err) ||
        get_num(o, "beta_slow", 1.0, &rs->beta_slow, path, err) ||
        get_num(o, "attention_factor", 0.0, &rs->attention_factor, path, err) ||
        get_num(o, "mscale", 0.0, &rs->mscale, path, err) ||
        get_num(o, "mscale_all_dim", 0.0, &rs->mscale_all_dim, path, err) || get_num(o, "truncate", 1.0, &v, path, err))
        return -1;
    rs->orig_max_pos = orig > 0 ? orig : 0;
    if (rs->type == KILN_ROPE_SCALING_YARN && !(rs->factor > 0) && orig > 0) /* transformers 5: the ratio */
        rs->factor = (double)c->max_seq_len / orig;
    rs->truncate = json_is_false(json_object_get(o, "truncate")) ? 0 : 1;
    if (!(rs->factor > 0)) {
        KILN_ERR(err, KILN_ERR_FORMAT, "%s: %s type \"%s\" needs a positive factor", path, field, s);
        return -1;
    }
    if (rs->type == KILN_ROPE_SCALING_LLAMA3 && orig <= 0) {
        KILN_ERR(err, KILN_ERR_FORMAT, "%s: llama3 RoPE scaling needs original_max_position_embeddings", path);
        return -1;
    }
    return 0;
}

/* The attention window of each layer: sliding_window (unless use_sliding_window is false, or it
 * covers the whole context), on the layers layer_types calls "sliding_attention", else (Qwen2 /
 * Qwen3) the layers from max_window_layers on, else every layer (Mistral). */
static int parse_window(kiln_config *c, json_t *j, const char *path, kiln_error *err) {
    json_t *sw = json_object_get(j, "sliding_window");
    json_t *use = json_object_get(j, "use_sliding_window");
    if (!sw || json_is_null(sw) || json_is_false(use)) return 0;
    if (!json_is_integer(sw) || json_integer_value(sw) < 1 || json_integer_value(sw) > 0x7fffffff)
        return KILN_ERR(err, KILN_ERR_FORMAT, "%s: sliding_window is not a positive integer", path);
    if (json_integer_value(sw) >= c->max_seq_len) return 0; /* covers the context: full attention */
    int arch_qwen = !strncmp(c->arch, "qwen", 4);
    if (arch_qwen && !json_is_true(use)) return 0; /* Qwen: windows only with use_sliding_window */
    if (c->n_layers > KILN_MAX_WINDOW_LAYERS)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: sliding window with %d layers (at most %d)", path, c->n_layers,
                        KILN_MAX_WINDOW_LAYERS);
    c->sliding_window = (int)json_integer_value(sw);
    json_t *lt = json_object_get(j, "layer_types");
    int mwl = 0;
    if (json_is_array(lt)) {
        if ((int)json_array_size(lt) != c->n_layers)
            return KILN_ERR(err, KILN_ERR_FORMAT, "%s: layer_types has %zu entries for %d layers", path,
                            json_array_size(lt), c->n_layers);
        for (int l = 0; l < c->n_layers; l++) {
            const char *s = json_string_value(json_array_get(lt, (size_t)l));
            if (s && !strcmp(s, "sliding_attention")) c->window_layers[l / 64] |= 1ull << (l % 64);
            else if (!s || strcmp(s, "full_attention"))
                return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: layer_types[%d] \"%s\" is not supported "
                                "(sliding_attention, full_attention)", path, l, s ? s : "(not a string)");
        }
    } else if (arch_qwen && json_object_get(j, "max_window_layers")) {
        if (get_int(j, "max_window_layers", 0, &mwl, path, err)) return err ? err->code : KILN_ERR_FORMAT;
        for (int l = mwl < 0 ? 0 : mwl; l < c->n_layers; l++) c->window_layers[l / 64] |= 1ull << (l % 64);
    } else {
        for (int l = 0; l < c->n_layers; l++) c->window_layers[l / 64] |= 1ull << (l % 64);
    }
    return 0;
}

static int parse_config_json(kiln_config *c, json_t *top, const char *path, kiln_error *err) {
    memset(c, 0, sizeof *c);
    if (!json_is_object(top)) return KILN_ERR(err, KILN_ERR_FORMAT, "%s: not a JSON object", path);
    const char *arch = NULL;
    json_t *j = top; /* the language model's config: text_config of a multimodal wrapper */
    json_t *archs = json_object_get(top, "architectures");
    const char *a = NULL;
    if (json_is_array(archs) && json_array_size(archs) > 0) {
        a = json_string_value(json_array_get(archs, 0));
        if (!a) return KILN_ERR(err, KILN_ERR_FORMAT, "%s: architectures[0] is not a string", path);
    }
    const char *mt = json_string_value(json_object_get(top, "model_type"));
    if ((a && !strcmp(a, "Mistral3ForConditionalGeneration")) || (!a && mt && !strcmp(mt, "mistral3"))) {
        j = json_object_get(top, "text_config");
        if (!json_is_object(j))
            return KILN_ERR(err, KILN_ERR_FORMAT, "%s: Mistral3ForConditionalGeneration without a text_config object", path);
        snprintf(c->text_of, sizeof c->text_of, "Mistral3ForConditionalGeneration");
        const char *tmt = json_string_value(json_object_get(j, "model_type"));
        if (tmt && strcmp(tmt, "mistral") && strcmp(tmt, "llama"))
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: text_config model_type %s is not supported (mistral, llama)",
                            path, tmt);
        a = NULL;
        mt = tmt ? tmt : "mistral";
    }
    static const struct { const char *cls, *type, *arch; } k_archs[] = {
        {"LlamaForCausalLM", "llama", "llama"},   {"MistralForCausalLM", "mistral", "mistral"},
        {"Qwen2ForCausalLM", "qwen2", "qwen2"},   {"Qwen3ForCausalLM", "qwen3", "qwen3"},
        {"MixtralForCausalLM", "mixtral", "mixtral"},
    };
    for (size_t i = 0; i < sizeof k_archs / sizeof k_archs[0] && !arch; i++)
        if (a ? !strcmp(a, k_archs[i].cls) : (mt && !strcmp(mt, k_archs[i].type))) arch = k_archs[i].arch;
    if (!arch) {
        if (a)
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED,
                            "%s: unknown architecture %s (supported: LlamaForCausalLM, MistralForCausalLM, "
                            "Qwen2ForCausalLM, Qwen3ForCausalLM, MixtralForCausalLM, Mistral3ForConditionalGeneration (text only))", path, a);
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED,
                        "%s: unknown architecture (model_type %s; supported: llama, mistral, qwen2, qwen3, mixtral, mistral3)",
                        path, mt ? mt : "absent");
    }
    snprintf(c->arch, sizeof c->arch, "%s", arch);

    if (get_int(j, "hidden_size", 0, &c->dim, path, err) ||
        get_int(j, "intermediate_size", 0, &c->hidden_dim, path, err) ||
        get_int(j, "num_hidden_layers", 0, &c->n_layers, path, err) ||
        get_int(j, "num_attention_heads", 0, &c->n_heads, path, err) ||
        get_int(j, "num_key_value_heads", c->n_heads, &c->n_kv_heads, path, err) ||
        get_int(j, "vocab_size", 0, &c->vocab_size, path, err) ||
        get_int(j, "max_position_embeddings", 2048, &c->max_seq_len, path, err) ||
        get_int(j, "bos_token_id", -1, &c->bos_id, path, err))
        return err ? err->code : KILN_ERR_FORMAT;
    const char *req[] = {"hidden_size", "intermediate_size", "num_hidden_layers",
                         "num_attention_heads", "vocab_size"};
    for (size_t i = 0; i < sizeof req / sizeof req[0]; i++)
        if (!json_is_integer(json_object_get(j, req[i])))
            return KILN_ERR(err, KILN_ERR_FORMAT, "%s: missing %s", path, req[i]);
    if (c->n_heads <= 0) return KILN_ERR(err, KILN_ERR_FORMAT, "%s: num_attention_heads must be > 0", path);
    if (get_int(j, "head_dim", c->dim / c->n_heads, &c->head_dim, path, err))
        return err ? err->code : KILN_ERR_FORMAT;
    double eps, theta;
    if (get_num(j, "rms_norm_eps", 1e-6, &eps, path, err)) return err ? err->code : KILN_ERR_FORMAT;
    c->norm_eps = (float)eps;

    /* RoPE: rope_theta top level, or inside rope_parameters (transformers 5) */
    json_t *rp = json_object_get(j, "rope_parameters");
    if (parse_rope(c, rp, "rope_parameters", path, err) ||
        (c->rope_scaling.type == KILN_ROPE_SCALING_NONE &&
         parse_rope(c, json_object_get(j, "rope_scaling"), "rope_scaling", path, err)))
        return err ? err->code : KILN_ERR_FORMAT;
    if (get_num(j, "rope_theta", 10000.0, &theta, path, err)) return err ? err->code : KILN_ERR_FORMAT;
    if (json_is_object(rp) && json_object_get(rp, "rope_theta") &&
        get_num(rp, "rope_theta", theta, &theta, path, err))
        return err ? err->code : KILN_ERR_FORMAT;
    c->rope_theta = theta;
    c->rope_style = KILN_ROPE_HALF;
    json_t *prf = json_object_get(j, "partial_rotary_factor");
    if (prf && !json_is_null(prf) && !(json_is_number(prf) && json_number_value(prf) == 1.0))
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: partial_rotary_factor is not supported", path);

    /* what kiln cannot run is refused, never run wrongly */
    int rc = parse_window(c, j, path, err);
    if (rc) return rc;
    int qwen2 = !strcmp(arch, "qwen2"), qwen3 = !strcmp(arch, "qwen3");
    c->qkv_bias = qwen2; /* Qwen2: q/k/v biases (no o bias), whatever attention_bias says */
    c->qk_norm = qwen3;
    if (is_true(j, "attention_bias") && !qwen2)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: attention_bias (q/k/v/o biases) is not supported "
                        "(Qwen2's q/k/v biases are)", path);
    if (is_true(j, "mlp_bias"))
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: mlp_bias is not supported", path);
    if (!strcmp(arch, "mixtral")) { /* top-k routing over num_local_experts SwiGLU experts */
        if (get_int(j, "num_local_experts", 8, &c->n_experts, path, err) ||
            get_int(j, "num_experts_per_tok", 2, &c->n_experts_used, path, err))
            return err ? err->code : KILN_ERR_FORMAT;
    } else if (json_object_get(j, "num_local_experts") || json_object_get(j, "num_experts"))
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: mixture-of-experts configs (num_local_experts / num_experts) "
                        "are supported for MixtralForCausalLM only", path);
    json_t *act = json_object_get(j, "hidden_act");
    if (!act) act = json_object_get(j, "hidden_activation");
    if (act && !json_is_null(act) &&
        (!json_is_string(act) || strcmp(json_string_value(act), "silu") != 0))
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: hidden_act %s is not supported (only silu)",
                        path, json_is_string(act) ? json_string_value(act) : "(not a string)");
    json_t *tie = json_object_get(j, "tie_word_embeddings");
    if (!tie && j != top) tie = json_object_get(top, "tie_word_embeddings");
    c->tied_embeddings = json_is_true(tie);
    if (read_dtype(j, &c->dtype, path, err)) return err ? err->code : KILN_ERR_FORMAT;
    if (c->dtype == KILN_DT_COUNT && j != top && read_dtype(top, &c->dtype, path, err))
        return err ? err->code : KILN_ERR_FORMAT;
    if (read_eos(c, j, path, err) || (j != top && read_eos(c, top, path, err))) return err ? err->code : KILN_ERR_FORMAT;
    if (j != top && c->bos_id < 0 && get_int(top, "bos_token_id", -1, &c->bos_id, path, err))
        return err ? err->code : KILN_ERR_FORMAT;
    return KILN_OK;
}

/* generation_config.json beside config.json: overrides bos / eos, adds sampling defaults. */
static int parse_generation_config(kiln_config *c, const char *path, kiln_error *err) {
    if (!kiln_file_exists(path)) return KILN_OK;
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j)
        return KILN_JSON_FAIL(err, &je, path, "%s: invalid JSON: %s (line %d)", path, je.text, je.line);
    int rc = KILN_OK;
    if (!json_is_object(j)) {
        rc = KILN_ERR(err, KILN_ERR_FORMAT, "%s: not a JSON object", path);
        goto done;
    }
    if (get_int(j, "bos_token_id", c->bos_id, &c->bos_id, path, err) || read_eos(c, j, path, err)) {
        rc = err ? err->code : KILN_ERR_FORMAT;
        goto done;
    }
    double v;
    json_t *x;
    if ((x = json_object_get(j, "temperature")) && json_is_number(x)) {
        get_num(j, "temperature", 1.0, &v, path, err);
        c->has_temperature = 1;
        c->gen_temperature = (float)v;
    }
    if ((x = json_object_get(j, "top_p")) && json_is_number(x)) {
        get_num(j, "top_p", 1.0, &v, path, err);
        c->has_top_p = 1;
        c->gen_top_p = (float)v;
    }
    if ((x = json_object_get(j, "top_k")) && json_is_integer(x)) {
        c->has_top_k = 1;
        c->gen_top_k = (int)json_integer_value(x);
    }
done:
    json_decref(j);
    return rc;
}

int kiln_hf_parse_config(kiln_config *cfg, const char *config_path, kiln_error *err) {
    json_error_t je;
    json_t *j = json_load_file(config_path, 0, &je);
    if (!j) {
        if (!kiln_file_exists(config_path))
            return KILN_ERR(err, KILN_ERR_IO, "%s: cannot open", config_path);
        return KILN_JSON_FAIL(err, &je, config_path, "%s: invalid JSON: %s (line %d, column %d)",
                        config_path, je.text, je.line, je.column);
    }
    int rc = parse_config_json(cfg, j, config_path, err);
    json_decref(j);
    if (rc) return rc;
    /* generation_config.json lives beside config.json */
    char gen[1200];
    const char *slash = strrchr(config_path, '/');
    int dirlen = slash ? (int)(slash - config_path) : 0;
    if (slash) snprintf(gen, sizeof gen, "%.*s/generation_config.json", dirlen, config_path);
    else snprintf(gen, sizeof gen, "generation_config.json");
    return parse_generation_config(cfg, gen, err);
}

/* model.safetensors.index.json: {"weight_map": {"<tensor>": "<shard file>", ...}} */
static int load_sharded(kiln_model *m, const char *dir, const char *index_path, kiln_error *err) {
    json_error_t je;
    json_t *j = json_load_file(index_path, 0, &je);
    if (!j)
        return KILN_JSON_FAIL(err, &je, index_path, "%s: invalid JSON: %s (line %d)", index_path, je.text,
                        je.line);
    int rc = KILN_OK;
    json_t *wm = json_object_get(j, "weight_map");
    if (!json_is_object(wm) || json_object_size(wm) == 0) {
        rc = KILN_ERR(err, KILN_ERR_FORMAT, "%s: no weight_map object", index_path);
        goto done;
    }
    /* load each distinct shard once, in order of first mention */
    const char *key;
    json_t *val;
    int n_shards = 0;
    json_object_foreach(wm, key, val) {
        const char *shard = json_string_value(val);
        if (!shard || !*shard || strchr(shard, '/') || !strcmp(shard, ".."))
            {
            rc = KILN_ERR(err, KILN_ERR_FORMAT, "%s: weight_map[%s] is not a file name in the folder",
                          index_path, key);
            goto done;
        }
        int seen = 0;
        char sp[1200];
        if (kiln_path_join(sp, sizeof sp, dir, shard)) {
            rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "%s: path too long", shard);
            goto done;
        }
        for (int i = 0; i < m->n_files && !seen; i++) seen = !strcmp(m->files[i].path, sp);
        if (seen) continue;
        if (!kiln_file_exists(sp)) {
            rc = KILN_ERR(err, KILN_ERR_NOT_FOUND, "%s: shard %s (for tensor %s) is missing",
                          index_path, shard, key);
            goto done;
        }
        if ((rc = kiln_model_add_safetensors(m, sp, err))) goto done;
        n_shards++;
    }
    /* every tensor the index names must be in the shard it names */
    json_object_foreach(wm, key, val) {
        const kiln_tensor *t = kiln_model_find(m, key);
        if (!t) {
            rc = KILN_ERR(err, KILN_ERR_NOT_FOUND, "%s: tensor %s is not in shard %s", index_path,
                          key, json_string_value(val));
            goto done;
        }
    }
    snprintf(m->loaded_from, sizeof m->loaded_from,
             "Hugging Face: config.json + model.safetensors.index.json (%d shards)", n_shards);
done:
    json_decref(j);
    return rc;
}

/* Mistral3ForConditionalGeneration: the language model under language_model.model. /
 * language_model.lm_head. (checkpoints saved before transformers 4.52) or model.language_model. /
 * lm_head. (after); the vision tower and the projector are skipped */
static const kiln_prefix_map k_mm_hf[] = {
    {"language_model.model.", "model."}, {"language_model.lm_head.", "lm_head."},
    {"model.language_model.", "model."}, {"vision_tower.", NULL}, {"multi_modal_projector.", NULL},
    {"model.vision_tower.", NULL},       {"model.multi_modal_projector.", NULL}, {NULL, NULL},
};

int kiln_load_hf(kiln_model *m, const char *dir, kiln_error *err) {
    char p[1200];
    m->format = KILN_FORMAT_HF;
    if (kiln_path_join(p, sizeof p, dir, "config.json"))
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "%s: path too long", dir);
    int rc = kiln_hf_parse_config(&m->cfg, p, err);
    if (rc) return rc;
    { /* quantization_config: FP8 (model/fp8.c) or refused */
        /* parsed once already: a failure now is out of memory, never a reason to skip the FP8
         * scales (the weights would load without them) */
        json_error_t je;
        json_t *j = json_load_file(p, 0, &je);
        rc = j ? kiln_fp8_parse_hf(m, json_object_get(j, "quantization_config"), p, err)
               : KILN_JSON_FAIL(err, &je, p, "%s: %s", p, je.text);
        json_decref(j);
        if (rc) return rc;
    }
    char single[1200], index[1200];
    kiln_path_join(single, sizeof single, dir, "model.safetensors");
    kiln_path_join(index, sizeof index, dir, "model.safetensors.index.json");
    if (kiln_file_exists(single)) {
        if ((rc = kiln_model_add_safetensors(m, single, err))) return rc;
        snprintf(m->loaded_from, sizeof m->loaded_from, "Hugging Face: config.json + model.safetensors");
    } else if (kiln_file_exists(index)) {
        if ((rc = load_sharded(m, dir, index, err))) return rc;
    } else {
        return KILN_ERR(err, KILN_ERR_NOT_FOUND,
                        "%s: no model.safetensors or model.safetensors.index.json", dir);
    }
    if (m->cfg.text_of[0]) kiln_model_take_text(m, k_mm_hf);
    if (m->cfg.dtype == KILN_DT_COUNT) {
        const kiln_tensor *e = kiln_model_find(m, "model.embed_tokens.weight");
        if (!e) e = kiln_model_find(m, "lm_head.weight");
        m->cfg.dtype = e ? e->dtype : KILN_DT_BF16;
    }
    if (kiln_path_join(p, sizeof p, dir, "tokenizer.json") == 0 &&
        (kiln_file_exists(p) || (kiln_path_join(p, sizeof p, dir, "tekken.json") == 0 &&
                                 kiln_file_exists(p))))
        snprintf(m->tokenizer_path, sizeof m->tokenizer_path, "%s", dir);
    return kiln_model_bind(m, err);
}
