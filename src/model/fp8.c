/* fp8.c: FP8 checkpoints (the three formats vLLM reads) and online FP8, normalised to one
 * descriptor per weight (kiln_quant, format/tensor.h) that every backend's linear entry takes.
 *
 * Config (what is accepted; anything else is refused naming the field and its value):
 *   HF        quantization_config {quant_method "fp8", activation_scheme "dynamic" | "static",
 *             weight_block_size null | [bo, bi] (then dynamic only), ignored_layers [..],
 *             fmt "e4m3" (optional)}
 *             weights: P.weight (F8_E4M3 [out][in]) + P.weight_scale ([] / [1]: per tensor,
 *             [out] / [out, 1]: per channel) or, with blocks, P.weight_scale_inv
 *             [ceil(out / bo)][ceil(in / bi)] (multiplied, despite its name); static:
 *             P.input_scale ([] / [1])
 *   CT        quantization_config {quant_method "compressed-tensors", format "float-quantized",
 *             config_groups: one group {targets ["Linear"], weights {num_bits 8, type "float",
 *             symmetric true, dynamic false, strategy "tensor" | "channel" | "block"
 *             (block_structure [bo, bi])}, input_activations null (weight-only) | {num_bits 8,
 *             type "float", strategy "token" + dynamic true | "tensor" + dynamic false |
 *             "group" + dynamic true with group_size bi and block weights}}, ignore [..],
 *             kv_cache_scheme null | {num_bits 8, type "float", strategy "tensor", dynamic false}}
 *             weights: P.weight + P.weight_scale (shape by strategy), static: P.input_scale
 *   Mistral   params.json quantization {qformat_weight "fp8_e4m3", qscheme_act "TENSOR" (static,
 *             the default) | "NO_SCALES" (dynamic)}, as vLLM remaps it: P.qscale_weight ->
 *             weight_scale, P.qscale_act -> input_scale, attention.kv_fake_quantizer.qscale_act
 *             -> k_scale and v_scale (k_ / v_fake_quantizer: each)
 * KV scales (any format, when present): self_attn.k_scale / v_scale (kv_scale: both).
 * Scale tensors may be F32, BF16 or F16; they are copied to f32 (m->fp8_scales) and must be
 * finite and positive. ignored_layers / ignore: a listed module (exact name; "re:" patterns are
 * not matched) stored in FP8 is refused. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "format/quant.h"
#include "model/loaders.h"
#include "util/alloc.h"
#include "util/error.h"
#include "util/fp16.h"
#include "util/fp8.h"

const char *kiln_fp8_format_name(kiln_fp8_format f) {
    switch (f) {
    case KILN_FP8_NONE: return "none";
    case KILN_FP8_HF: return "fp8 (HF quantization_config)";
    case KILN_FP8_CT: return "compressed-tensors float-quantized";
    case KILN_FP8_MISTRAL: return "fp8 (Mistral-native)";
    case KILN_FP8_ONLINE: return "online fp8";
    }
    return "?";
}

void kiln_fp8_free(kiln_model *m) {
    for (int i = 0; i < m->fp8.n_ignored; i++) kiln_free(m->fp8.ignored[i]);
    kiln_free(m->fp8.ignored);
    kiln_free(m->fp8_scales);
    kiln_free_aligned(m->fp8_online);
    kiln_free(m->fp8_tensors);
    m->fp8.ignored = NULL;
    m->fp8.n_ignored = 0;
    m->fp8_scales = NULL;
    m->fp8_online = NULL;
    m->fp8_tensors = NULL;
}

/* ---- config ---------------------------------------------------------------------------- */

static int ignored_list(kiln_model *m, json_t *v, const char *field, const char *path, kiln_error *err) {
    if (!v || json_is_null(v)) return KILN_OK;
    if (!json_is_array(v)) return KILN_ERR(err, KILN_ERR_FORMAT, "%s: quantization_config.%s is not a list", path, field);
    size_t n = json_array_size(v);
    m->fp8.ignored = kiln_calloc(n ? n : 1, sizeof(char *));
    if (!m->fp8.ignored) return KILN_ERR(err, KILN_ERR_OOM, "%s: out of memory", path);
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(v, i));
        if (!s) return KILN_ERR(err, KILN_ERR_FORMAT, "%s: quantization_config.%s[%zu] is not a string", path, field, i);
        size_t l = strlen(s);
        char *c = kiln_malloc(l + 1);
        if (!c) return KILN_ERR(err, KILN_ERR_OOM, "%s: out of memory", path);
        memcpy(c, s, l + 1);
        m->fp8.ignored[m->fp8.n_ignored++] = c;
    }
    return KILN_OK;
}

static int block_pair(json_t *v, int *bo, int *bi) {
    if (!json_is_array(v) || json_array_size(v) != 2) return -1;
    json_t *a = json_array_get(v, 0), *b = json_array_get(v, 1);
    if (!json_is_integer(a) || !json_is_integer(b)) return -1;
    json_int_t x = json_integer_value(a), y = json_integer_value(b);
    if (x <= 0 || y <= 0 || x > 65536 || y > 65536) return -1;
    *bo = (int)x;
    *bi = (int)y;
    return 0;
}

static const char *jstr(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

/* HF quant_method "fp8" */
static int parse_hf_fp8(kiln_model *m, json_t *q, const char *path, kiln_error *err) {
    kiln_fp8_scheme *f = &m->fp8;
    f->format = KILN_FP8_HF;
    const char *as = jstr(q, "activation_scheme");
    if (!as || !strcmp(as, "dynamic")) f->act = KILN_ACT_DYNAMIC;
    else if (!strcmp(as, "static")) f->act = KILN_ACT_STATIC;
    else
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: quantization_config.activation_scheme \"%s\" is not supported "
                        "(dynamic, static)", path, as);
    const char *fmt = jstr(q, "fmt");
    if (fmt && strcmp(fmt, "e4m3") != 0)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: quantization_config.fmt \"%s\" is not supported (e4m3)", path, fmt);
    json_t *wb = json_object_get(q, "weight_block_size");
    f->weight = KILN_SCALE_TENSOR;
    if (wb && !json_is_null(wb)) {
        if (block_pair(wb, &f->block_out, &f->block_in))
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: quantization_config.weight_block_size is not a pair of "
                            "positive integers", path);
        if (f->act != KILN_ACT_DYNAMIC)
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: quantization_config.weight_block_size with activation_scheme "
                            "\"%s\" (block-wise FP8 takes dynamic activations only)", path, as);
        f->weight = KILN_SCALE_BLOCK;
    }
    json_t *ig = json_object_get(q, "ignored_layers");
    if (!ig || json_is_null(ig)) return ignored_list(m, json_object_get(q, "modules_to_not_convert"), "modules_to_not_convert", path, err);
    return ignored_list(m, ig, "ignored_layers", path, err);
}

static int ct_float8(json_t *a, const char *what, const char *path, kiln_error *err) {
    json_t *nb = json_object_get(a, "num_bits");
    if (!json_is_integer(nb) || json_integer_value(nb) != 8)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: compressed-tensors %s.num_bits %lld is not supported (8)", path, what,
                        json_is_integer(nb) ? (long long)json_integer_value(nb) : -1LL);
    const char *t = jstr(a, "type");
    if (!t || strcmp(t, "float") != 0)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: compressed-tensors %s.type \"%s\" is not supported (float: FP8)", path,
                        what, t ? t : "(absent)");
    json_t *sy = json_object_get(a, "symmetric");
    if (sy && json_is_false(sy))
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: compressed-tensors %s.symmetric false is not supported", path, what);
    return KILN_OK;
}

/* compressed-tensors, format float-quantized */
static int parse_ct(kiln_model *m, json_t *q, const char *path, kiln_error *err) {
    kiln_fp8_scheme *f = &m->fp8;
    f->format = KILN_FP8_CT;
    const char *fmt = jstr(q, "format");
    if (!fmt || strcmp(fmt, "float-quantized") != 0)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: compressed-tensors format \"%s\" is not supported (float-quantized)",
                        path, fmt ? fmt : "(absent)");
    json_t *groups = json_object_get(q, "config_groups");
    if (!json_is_object(groups) || json_object_size(groups) != 1)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: compressed-tensors config_groups must hold exactly one group (has %zu)",
                        path, json_is_object(groups) ? json_object_size(groups) : (size_t)0);
    const char *gname = NULL;
    json_t *g = NULL;
    json_object_foreach(groups, gname, g) break;
    json_t *tg = json_object_get(g, "targets");
    const char *t0 = json_is_array(tg) && json_array_size(tg) == 1 ? json_string_value(json_array_get(tg, 0)) : NULL;
    if (!t0 || strcmp(t0, "Linear") != 0)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: compressed-tensors config_groups.%s.targets must be [\"Linear\"]",
                        path, gname);
    json_t *w = json_object_get(g, "weights");
    if (!json_is_object(w))
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: compressed-tensors config_groups.%s.weights is absent", path, gname);
    int rc = ct_float8(w, "weights", path, err);
    if (rc) return rc;
    if (json_is_true(json_object_get(w, "dynamic")))
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: compressed-tensors weights.dynamic true is not supported", path);
    const char *ws = jstr(w, "strategy");
    if (ws && !strcmp(ws, "tensor")) f->weight = KILN_SCALE_TENSOR;
    else if (ws && !strcmp(ws, "channel")) f->weight = KILN_SCALE_CHANNEL;
    else if (ws && !strcmp(ws, "block")) {
        if (block_pair(json_object_get(w, "block_structure"), &f->block_out, &f->block_in))
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: compressed-tensors weights.block_structure is not a pair of "
                            "positive integers", path);
        f->weight = KILN_SCALE_BLOCK;
    } else
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: compressed-tensors weights.strategy \"%s\" is not supported (tensor, "
                        "channel, block)", path, ws ? ws : "(absent)");
    json_t *a = json_object_get(g, "input_activations");
    if (!a || json_is_null(a)) {
        f->act = KILN_ACT_NONE;
    } else {
        if ((rc = ct_float8(a, "input_activations", path, err))) return rc;
        const char *as = jstr(a, "strategy");
        int dyn = json_is_true(json_object_get(a, "dynamic"));
        json_t *gs = json_object_get(a, "group_size");
        if (as && !strcmp(as, "token") && dyn) f->act = KILN_ACT_DYNAMIC;
        else if (as && !strcmp(as, "tensor") && !dyn) f->act = KILN_ACT_STATIC;
        else if (as && !strcmp(as, "group") && dyn && f->weight == KILN_SCALE_BLOCK && json_is_integer(gs) &&
                 json_integer_value(gs) == f->block_in)
            f->act = KILN_ACT_DYNAMIC;
        else
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: compressed-tensors input_activations.strategy \"%s\" with dynamic "
                            "%s is not supported (token + dynamic, tensor + static, group of the weight block + dynamic)",
                            path, as ? as : "(absent)", dyn ? "true" : "false");
        if (f->weight == KILN_SCALE_BLOCK && f->act != KILN_ACT_DYNAMIC)
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: compressed-tensors block weights with static activations", path);
    }
    json_t *kv = json_object_get(q, "kv_cache_scheme");
    if (kv && !json_is_null(kv)) {
        if ((rc = ct_float8(kv, "kv_cache_scheme", path, err))) return rc;
        const char *ks = jstr(kv, "strategy");
        if (!ks || strcmp(ks, "tensor") != 0 || json_is_true(json_object_get(kv, "dynamic")))
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: compressed-tensors kv_cache_scheme.strategy \"%s\" is not "
                            "supported (tensor, static)", path, ks ? ks : "(absent)");
        f->kv_scales = 1;
    }
    return ignored_list(m, json_object_get(q, "ignore"), "ignore", path, err);
}

int kiln_fp8_parse_hf(kiln_model *m, const void *jq, const char *path, kiln_error *err) {
    json_t *q = (json_t *)jq;
    if (!q || json_is_null(q)) return KILN_OK;
    if (!json_is_object(q)) return KILN_ERR(err, KILN_ERR_FORMAT, "%s: quantization_config is not an object", path);
    const char *qm = jstr(q, "quant_method");
    if (qm && !strcmp(qm, "fp8")) return parse_hf_fp8(m, q, path, err);
    if (qm && !strcmp(qm, "compressed-tensors")) return parse_ct(m, q, path, err);
    return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: quantization_config.quant_method \"%s\" is not supported (fp8, "
                    "compressed-tensors)", path, qm ? qm : "(absent)");
}

int kiln_fp8_parse_mistral(kiln_model *m, const void *jq, const char *path, kiln_error *err) {
    json_t *q = (json_t *)jq;
    if (!q || json_is_null(q)) return KILN_OK;
    if (!json_is_object(q)) return KILN_ERR(err, KILN_ERR_FORMAT, "%s: quantization is not an object", path);
    const char *w = jstr(q, "qformat_weight");
    if (!w || strcmp(w, "fp8_e4m3") != 0)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: quantization.qformat_weight \"%s\" is not supported (fp8_e4m3)", path,
                        w ? w : "(absent)");
    const char *a = jstr(q, "qscheme_act");
    m->fp8.format = KILN_FP8_MISTRAL;
    m->fp8.weight = KILN_SCALE_TENSOR;
    if (!a || !strcmp(a, "TENSOR")) m->fp8.act = KILN_ACT_STATIC;
    else if (!strcmp(a, "NO_SCALES")) m->fp8.act = KILN_ACT_DYNAMIC;
    else
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: quantization.qscheme_act \"%s\" is not supported (TENSOR, NO_SCALES)",
                        path, a);
    return KILN_OK;
}

/* ---- binding ------------------------------------------------------------------------------ */

static int64_t numel(const kiln_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

/* name of P's suffix s into buf: "<P>.<s>" where P is w's name without ".weight" */
static int sibling(const kiln_tensor *w, const char *suffix, char *buf, size_t n) {
    size_t l = strlen(w->name);
    if (l < 7 || strcmp(w->name + l - 7, ".weight") != 0) return -1;
    return snprintf(buf, n, "%.*s.%s", (int)(l - 7), w->name, suffix) < (int)n ? 0 : -1;
}

/* the scale tensor's values to f32 dst (n of them), each finite and > 0 */
static int scale_values(const kiln_model *m, const kiln_tensor *s, float *dst, int64_t n, kiln_error *err) {
    if (s->dtype != KILN_DT_F32 && s->dtype != KILN_DT_BF16 && s->dtype != KILN_DT_F16)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: scale tensor %s has dtype %s (f32, bf16, f16)", m->path, s->name,
                        kiln_dtype_name(s->dtype));
    if (kiln_row_to_f32(s->dtype, s->data, n, dst))
        return KILN_ERR(err, KILN_ERR_FORMAT, "%s: scale tensor %s cannot be read", m->path, s->name);
    for (int64_t i = 0; i < n; i++)
        if (!(dst[i] > 0) || isinf(dst[i]))
            return KILN_ERR(err, KILN_ERR_FORMAT, "%s: scale tensor %s: element %lld is %g (scales must be finite and > 0)",
                            m->path, s->name, (long long)i, dst[i]);
    return KILN_OK;
}

typedef struct fp8_names { const char *w, *w_block, *in; } fp8_names;

static fp8_names names_of(const kiln_fp8_scheme *f) {
    if (f->format == KILN_FP8_MISTRAL) return (fp8_names){"qscale_weight", "qscale_weight", "qscale_act"};
    if (f->format == KILN_FP8_HF) return (fp8_names){"weight_scale", "weight_scale_inv", "input_scale"};
    return (fp8_names){"weight_scale", "weight_scale", "input_scale"};
}

static int is_ignored(const kiln_model *m, const kiln_tensor *w) {
    size_t l = strlen(w->name);
    for (int i = 0; i < m->fp8.n_ignored; i++) {
        const char *g = m->fp8.ignored[i];
        size_t gl = strlen(g);
        if (gl + 7 == l && !strncmp(w->name, g, gl)) return 1;
    }
    return 0;
}

/* one FP8 weight: its quant (floats from *cursor on; with dst NULL only counted) */
static int bind_one(kiln_model *m, kiln_tensor *w, float *dst, size_t *cursor, kiln_error *err) {
    const kiln_fp8_scheme *f = &m->fp8;
    if (f->format == KILN_FP8_NONE)
        return KILN_ERR(err, KILN_ERR_FORMAT, "%s: tensor %s is F8_E4M3 but the config declares no FP8 quantization "
                        "(quantization_config / quantization)", m->path, w->name);
    if (w->ndim != 2)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: F8_E4M3 tensor %s is not a 2-D linear weight", m->path, w->name);
    if (is_ignored(m, w))
        return KILN_ERR(err, KILN_ERR_FORMAT, "%s: tensor %s is F8_E4M3 but its module is in the config's ignored layers",
                        m->path, w->name);
    int64_t out = w->shape[0], in = w->shape[1];
    fp8_names nm = names_of(f);
    char name[200];
    int block = f->weight == KILN_SCALE_BLOCK;
    if (sibling(w, block ? nm.w_block : nm.w, name, sizeof name))
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: F8_E4M3 tensor %s is not named <module>.weight", m->path, w->name);
    const kiln_tensor *s = kiln_model_find(m, name);
    if (!s) return KILN_ERR(err, KILN_ERR_NOT_FOUND, "%s: FP8 weight %s has no scale tensor %s", m->path, w->name, name);
    int64_t ns = numel(s);
    kiln_quant q = {.act = f->act};
    if (block) {
        int64_t ro = (out + f->block_out - 1) / f->block_out, ci = (in + f->block_in - 1) / f->block_in;
        if (s->ndim != 2 || s->shape[0] != ro || s->shape[1] != ci)
            return KILN_ERR(err, KILN_ERR_FORMAT, "%s: block scale %s has shape [%lld, %lld], expected [%lld, %lld] for "
                            "[%lld, %lld] in [%d, %d] blocks", m->path, name, (long long)s->shape[0],
                            (long long)(s->ndim > 1 ? s->shape[1] : 0), (long long)ro, (long long)ci, (long long)out,
                            (long long)in, f->block_out, f->block_in);
        q.kind = KILN_SCALE_BLOCK;
        q.block_out = f->block_out;
        q.block_in = f->block_in;
    } else if (ns == 1 && s->ndim <= 2) {
        q.kind = KILN_SCALE_TENSOR;
    } else if (ns == out && (s->ndim == 1 || (s->ndim == 2 && s->shape[1] == 1))) {
        if (f->weight == KILN_SCALE_TENSOR && f->format == KILN_FP8_CT)
            return KILN_ERR(err, KILN_ERR_FORMAT, "%s: %s has %lld scales but weights.strategy is \"tensor\"", m->path, name,
                            (long long)ns);
        q.kind = KILN_SCALE_CHANNEL;
    } else {
        return KILN_ERR(err, KILN_ERR_FORMAT, "%s: scale tensor %s has %lld elements: neither per tensor (1) nor per output "
                        "channel (%lld) of %s", m->path, name, (long long)ns, (long long)out, w->name);
    }
    if (f->weight == KILN_SCALE_CHANNEL && q.kind != KILN_SCALE_CHANNEL)
        return KILN_ERR(err, KILN_ERR_FORMAT, "%s: %s has %lld scale(s) but weights.strategy is \"channel\" (%lld)", m->path,
                        name, (long long)ns, (long long)out);
    size_t at = *cursor;
    *cursor += (size_t)ns;
    const kiln_tensor *is = NULL;
    if (f->act == KILN_ACT_STATIC) {
        if (sibling(w, nm.in, name, sizeof name) || !(is = kiln_model_find(m, name)))
            return KILN_ERR(err, KILN_ERR_NOT_FOUND, "%s: FP8 weight %s has no activation scale %s (static activations)",
                            m->path, w->name, name);
        if (numel(is) != 1)
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: activation scale %s has %lld elements (one per tensor only)",
                            m->path, name, (long long)numel(is));
        *cursor += 1;
    }
    if (!dst) return KILN_OK;
    int rc = scale_values(m, s, dst + at, ns, err);
    if (rc) return rc;
    q.scale = dst + at;
    if (is) {
        if ((rc = scale_values(m, is, dst + at + ns, 1, err))) return rc;
        q.input_scale = dst + at + ns;
    }
    w->quant = q;
    return KILN_OK;
}

/* the layer's KV cache scales, when the checkpoint has them */
static int bind_kv_scales(kiln_model *m, kiln_error *err) {
    const int mistral = m->format == KILN_FORMAT_MISTRAL;
    for (int l = 0; l < m->cfg.n_layers && m->layers; l++) {
        char k[160], v[160], kv[160];
        if (mistral) {
            snprintf(k, sizeof k, "layers.%d.attention.k_fake_quantizer.qscale_act", l);
            snprintf(v, sizeof v, "layers.%d.attention.v_fake_quantizer.qscale_act", l);
            snprintf(kv, sizeof kv, "layers.%d.attention.kv_fake_quantizer.qscale_act", l);
        } else {
            snprintf(k, sizeof k, "model.layers.%d.self_attn.k_scale", l);
            snprintf(v, sizeof v, "model.layers.%d.self_attn.v_scale", l);
            snprintf(kv, sizeof kv, "model.layers.%d.self_attn.kv_scale", l);
        }
        const kiln_tensor *tk = kiln_model_find(m, k), *tv = kiln_model_find(m, v), *tb = kiln_model_find(m, kv);
        if (tb && !tk) tk = tb;
        if (tb && !tv) tv = tb;
        if (!tk && !tv) {
            if (m->fp8.kv_scales)
                return KILN_ERR(err, KILN_ERR_NOT_FOUND, "%s: kv_cache_scheme is set but layer %d has no %s", m->path, l, k);
            continue;
        }
        if (!tk || !tv)
            return KILN_ERR(err, KILN_ERR_FORMAT, "%s: layer %d has a %s KV cache scale but not the %s one", m->path, l,
                            tk ? "K" : "V", tk ? "V" : "K");
        float a, b;
        int rc;
        if (numel(tk) != 1 || numel(tv) != 1)
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: layer %d: KV cache scales must be one value per tensor", m->path, l);
        if ((rc = scale_values(m, tk, &a, 1, err)) || (rc = scale_values(m, tv, &b, 1, err))) return rc;
        m->layers[l].k_scale = a;
        m->layers[l].v_scale = b;
    }
    return KILN_OK;
}

int kiln_fp8_bind(kiln_model *m, kiln_error *err) {
    size_t need = 0;
    int rc;
    for (int i = 0; i < m->n_tensors; i++) {
        if (m->tensors[i].dtype == KILN_DT_F8_E5M2)
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: tensor %s is FP8 E5M2 (only E4M3 weights are supported)", m->path,
                            m->tensors[i].name);
        if (m->tensors[i].dtype == KILN_DT_F8_E4M3 && (rc = bind_one(m, &m->tensors[i], NULL, &need, err))) return rc;
    }
    if (need) {
        kiln_free(m->fp8_scales);
        m->fp8_scales = kiln_malloc(need * sizeof(float));
        if (!m->fp8_scales) return KILN_ERR(err, KILN_ERR_OOM, "%s: out of memory for %zu FP8 scales", m->path, need);
        size_t at = 0;
        for (int i = 0; i < m->n_tensors; i++)
            if (m->tensors[i].dtype == KILN_DT_F8_E4M3 && (rc = bind_one(m, &m->tensors[i], m->fp8_scales, &at, err)))
                return rc;
    }
    return KILN_OK;
}

int kiln_fp8_bind_kv(kiln_model *m, kiln_error *err) { return bind_kv_scales(m, err); }

/* ---- online FP8 -------------------------------------------------------------------------- */

int kiln_model_quantize_fp8(kiln_model *m, kiln_scale_kind kind, kiln_error *err) {
    if (kind != KILN_SCALE_TENSOR && kind != KILN_SCALE_CHANNEL)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "quantization fp8: %s scales (per-tensor or per-channel)",
                        kiln_scale_kind_name(kind));
    if (m->fp8.format != KILN_FP8_NONE)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "quantization fp8: %s is already FP8 (%s)", m->path,
                        kiln_fp8_format_name(m->fp8.format));
    const kiln_config *c = &m->cfg;
    int nt = c->n_layers * 7;
    size_t bytes = 0;
    for (int l = 0; l < c->n_layers; l++) {
        const kiln_layer_weights *L = &m->layers[l];
        const kiln_tensor *ts[7] = {L->wq, L->wk, L->wv, L->wo, L->w_gate, L->w_up, L->w_down};
        for (int i = 0; i < 7; i++) {
            if (!ts[i]->data && m->format != KILN_FORMAT_DUMMY)
                return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "quantization fp8: %s has no host data", ts[i]->name);
            if (kiln_dtype_is_fp8(ts[i]->dtype))
                return KILN_ERR(err, KILN_ERR_INVALID_ARG, "quantization fp8: %s is FP8 already", ts[i]->name);
            float probe;
            if (ts[i]->data && kiln_row_to_f32(ts[i]->dtype, ts[i]->data, 0, &probe))
                return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "quantization fp8: %s has dtype %s", ts[i]->name,
                                kiln_dtype_name(ts[i]->dtype));
            /* per tensor: its scales (64-byte aligned), then its codes (64-byte aligned) */
            bytes += ((size_t)(kind == KILN_SCALE_CHANNEL ? ts[i]->shape[0] : 1) * sizeof(float) + 63) & ~(size_t)63;
            if (ts[i]->data) bytes += ((size_t)(ts[i]->shape[0] * ts[i]->shape[1]) + 63) & ~(size_t)63;
        }
    }
    int64_t maxin = c->dim > c->hidden_dim ? c->dim : c->hidden_dim;
    if (c->n_heads * c->head_dim > maxin) maxin = (int64_t)c->n_heads * c->head_dim;
    m->fp8_tensors = kiln_calloc((size_t)nt, sizeof(kiln_tensor));
    m->fp8_online = kiln_malloc_aligned(bytes ? bytes : 64);
    float *row = kiln_malloc((size_t)maxin * sizeof(float));
    if (!m->fp8_tensors || !m->fp8_online || !row) {
        kiln_free(row);
        return KILN_ERR(err, KILN_ERR_OOM, "quantization fp8: out of memory (%.1f MiB)", bytes / 1048576.0);
    }
    size_t at = 0;
    for (int l = 0; l < c->n_layers; l++) {
        kiln_layer_weights *L = &m->layers[l];
        const kiln_tensor **ts[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (int i = 0; i < 7; i++) {
            const kiln_tensor *src = *ts[i];
            kiln_tensor *dst = &m->fp8_tensors[l * 7 + i];
            int64_t out = src->shape[0], in = src->shape[1];
            size_t rb = kiln_dtype_row_bytes(src->dtype, in);
            float *scale = (float *)(m->fp8_online + at); /* aligned: at is a multiple of 64 */
            at += ((size_t)(kind == KILN_SCALE_CHANNEL ? out : 1) * sizeof(float) + 63) & ~(size_t)63;
            if (!src->data) {
                /* a dummy whose weights a device fills (the CUDA backend: kiln_cuda_dummy_fill_fp8
                 * writes e4m3(kiln_dummy_value / scale)): the scale from the dummy's bound,
                 * |u / sqrt(in)| < 1 / sqrt(in), for every row */
                float s = 1.0f / (sqrtf((float)in) * KILN_E4M3_MAX);
                for (int64_t o = 0; o < (kind == KILN_SCALE_CHANNEL ? out : 1); o++) scale[o] = s;
                *dst = *src;
                dst->dtype = KILN_DT_F8_E4M3;
                dst->data = NULL;
                dst->nbytes = (size_t)(out * in);
                dst->quant = (kiln_quant){.kind = kind, .act = KILN_ACT_DYNAMIC, .scale = scale};
                *ts[i] = dst;
                continue;
            }
            uint8_t *codes = m->fp8_online + at;
            /* pass 1: max |w| per row (per tensor: the max of the rows) */
            float tmax = 0.0f;
            for (int64_t o = 0; o < out; o++) {
                kiln_row_to_f32(src->dtype, (const unsigned char *)src->data + (size_t)o * rb, in, row);
                float mx = 0.0f;
                for (int64_t k = 0; k < in; k++) mx = fabsf(row[k]) > mx ? fabsf(row[k]) : mx;
                if (kind == KILN_SCALE_CHANNEL) scale[o] = mx > 0 ? mx / KILN_E4M3_MAX : 1.0f;
                if (mx > tmax) tmax = mx;
            }
            if (kind == KILN_SCALE_TENSOR) scale[0] = tmax > 0 ? tmax / KILN_E4M3_MAX : 1.0f;
            /* pass 2: codes */
            for (int64_t o = 0; o < out; o++) {
                kiln_row_to_f32(src->dtype, (const unsigned char *)src->data + (size_t)o * rb, in, row);
                float s = scale[kind == KILN_SCALE_CHANNEL ? o : 0];
                for (int64_t k = 0; k < in; k++) codes[o * in + k] = kiln_f32_to_e4m3(row[k] / s);
            }
            *dst = *src;
            dst->dtype = KILN_DT_F8_E4M3;
            dst->data = codes;
            dst->nbytes = (size_t)(out * in);
            dst->quant = (kiln_quant){.kind = kind, .act = KILN_ACT_DYNAMIC, .scale = scale};
            *ts[i] = dst;
            at += ((size_t)(out * in) + 63) & ~(size_t)63;
        }
    }
    kiln_free(row);
    m->fp8.format = KILN_FP8_ONLINE;
    m->fp8.act = KILN_ACT_DYNAMIC;
    m->fp8.weight = kind;
    return KILN_OK;
}

/* ---- description ------------------------------------------------------------------------- */

const char *kiln_model_weight_dtype(const kiln_model *m) {
    if (!m->layers || m->cfg.n_layers <= 0) return kiln_dtype_name(m->cfg.dtype);
    kiln_dtype d = m->layers[0].wq->dtype;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const kiln_layer_weights *L = &m->layers[l];
        const kiln_tensor *ts[7] = {L->wq, L->wk, L->wv, L->wo, L->w_gate, L->w_up, L->w_down};
        for (int i = 0; i < 7; i++) /* MoE layers: no dense FFN (NULL), their experts instead */
            if (ts[i] && ts[i]->dtype != d) return "mixed";
        for (int i = 0; L->experts && i < 3 * m->cfg.n_experts; i++)
            if (L->experts[i].dtype != d) return "mixed";
    }
    return kiln_dtype_name(d);
}

void kiln_model_fp8_describe(const kiln_model *m, char *buf, size_t n) {
    if (!n) return;
    buf[0] = 0;
    if (m->fp8.format == KILN_FP8_NONE) return;
    char blk[48] = "";
    if (m->fp8.weight == KILN_SCALE_BLOCK) snprintf(blk, sizeof blk, " [%d, %d]", m->fp8.block_out, m->fp8.block_in);
    /* the kind the tensors actually have (Mistral's may be per channel) */
    kiln_scale_kind k = m->fp8.weight;
    if (m->layers && m->cfg.n_layers > 0 && m->layers[0].wq->quant.kind != KILN_SCALE_NONE) k = m->layers[0].wq->quant.kind;
    snprintf(buf, n, "%s: e4m3 weights, %s scales%s, %s activations, %s", kiln_fp8_format_name(m->fp8.format),
             kiln_scale_kind_name(k), blk, m->fp8.act == KILN_ACT_NONE ? "16-bit" : kiln_act_quant_name(m->fp8.act),
             m->fp8.act == KILN_ACT_NONE ? "W8A16" : "W8A8");
}
