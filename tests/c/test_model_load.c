/* kiln-layer: model (links only this layer and those below it) */
/* test_model_load.c: every model under ../shared/models loads with the expected config; every
 * malformed input is refused with the right code and a message naming the file and the problem;
 * a sharded checkpoint (written here) loads the same bytes as the single file; the HF ->
 * Mistral-native converter (tests/tools/hf_to_mistral_native.py) round-trips through the native
 * loader with the wq/wk rows in Meta's interleaved order.
 *
 * Oracles: the fixtures' own config.json / safetensors headers / llama2.c header (written by
 * transformers and llama2.c, not by us) and the documented transformers permutation. Bad files
 * are built in a mkdtemp folder from the real fixtures.
 */
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <sys/stat.h>
#include "model/loaders.h"
#include "format/safetensors.h"
#include "test.h"
#include "util/alloc.h"
#include "util/fp16.h"

static char g_tmp[256];

/* ---- file helpers ------------------------------------------------------------------------ */

static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)sz + 1);
    if (b && fread(b, 1, (size_t)sz, f) != (size_t)sz) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (n) *n = (size_t)sz;
    return b;
}
static int spit(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, n, f);
    fclose(f);
    return w == n ? 0 : -1;
}
static int copy_file(const char *src, const char *dst) {
    size_t n;
    unsigned char *b = slurp(src, &n);
    if (!b) return -1;
    int rc = spit(dst, b, n);
    free(b);
    return rc;
}
static const char *tpath(const char *dir, const char *file) {
    static char buf[8][1024];
    static int k;
    char *b = buf[k++ & 7];
    snprintf(b, 1024, "%s/%s", dir, file);
    return b;
}
/* a fresh folder under g_tmp */
static const char *newdir(const char *name) {
    static char dirs[64][512]; /* stable for the whole run (tpath's ring is not) */
    static int k;
    char *d = dirs[k++ & 63];
    snprintf(d, 512, "%s/%s", g_tmp, name);
    mkdir(d, 0755);
    return d;
}
/* folder with the fixture's config files (no weights) */
static const char *hf_skeleton(const char *name, const char *fixture) {
    const char *d = newdir(name);
    copy_file(tpath(fixture, "config.json"), tpath(d, "config.json"));
    copy_file(tpath(fixture, "generation_config.json"), tpath(d, "generation_config.json"));
    return d;
}

/* safetensors split into (header JSON, data area) and written back */
typedef struct st_file {
    json_t *hdr;
    unsigned char *data;
    size_t data_size;
} st_file;
static int st_read(st_file *s, const char *path) {
    size_t n;
    unsigned char *b = slurp(path, &n);
    if (!b) return -1;
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | b[i];
    s->hdr = json_loadb((const char *)b + 8, hl, 0, NULL);
    s->data_size = n - 8 - hl;
    s->data = malloc(s->data_size + 1);
    memcpy(s->data, b + 8 + hl, s->data_size);
    free(b);
    return s->hdr ? 0 : -1;
}
static int st_write(const st_file *s, const char *path, size_t data_size) {
    char *h = json_dumps(s->hdr, JSON_COMPACT);
    size_t hl = strlen(h), pad = (8 - hl % 8) % 8;
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    uint64_t L = hl + pad;
    unsigned char le[8];
    for (int i = 0; i < 8; i++) le[i] = (unsigned char)(L >> (8 * i));
    fwrite(le, 1, 8, f);
    fwrite(h, 1, hl, f);
    for (size_t i = 0; i < pad; i++) fputc(' ', f);
    fwrite(s->data, 1, data_size, f);
    fclose(f);
    free(h);
    return 0;
}
static void st_free(st_file *s) {
    json_decref(s->hdr);
    free(s->data);
}

/* Loads dir expecting failure with code; the message must name `file` and contain `what`. */
static void expect_fail(const char *label, const char *dir, kiln_status code, const char *file,
                        const char *what) {
    kiln_model *m = NULL;
    kiln_error err = {0};
    int rc = kiln_model_load(&m, dir, &err);
    KT_CHECK(rc == (int)code, "%s: code %s, expected %s (%s)", label, kiln_status_name(rc),
             kiln_status_name(code), err.msg);
    KT_CHECK(m == NULL, "%s: model returned on failure", label);
    KT_CHECK(strstr(err.msg, file) != NULL, "%s: message does not name %s: %s", label, file, err.msg);
    KT_CHECK(strstr(err.msg, what) != NULL, "%s: message does not say \"%s\": %s", label, what,
             err.msg);
    if (m) kiln_model_free(m);
    if (rc == (int)code) printf("ok   %-28s %s\n", label, err.msg);
}

/* ---- good fixtures ------------------------------------------------------------------------ */

static kiln_model *load_ok(const char *path) {
    kiln_model *m = NULL;
    kiln_error err = {0};
    int rc = kiln_model_load(&m, path, &err);
    KT_CHECK(rc == 0 && m, "load %s: %s", path, err.msg);
    return rc == 0 ? m : NULL;
}

static int64_t expected_params(const kiln_config *c, int both_embeddings) {
    int64_t d = c->dim, q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t per = 2 * d + q * d + 2 * kv * d + d * q + 3 * (int64_t)c->hidden_dim * d;
    return (both_embeddings ? 2 : 1) * (int64_t)c->vocab_size * d + d + c->n_layers * per;
}

static void test_mistral_tiny(void) {
    const char *dir = kt_shared("models/mistral-tiny-random");
    if (!kt_exists(tpath(dir, "model.safetensors"))) {
        fprintf(stderr, "SKIP part: %s missing\n", dir);
        return;
    }
    kiln_model *m = load_ok(dir);
    if (!m) return;
    const kiln_config *c = &m->cfg;
    KT_CHECK(m->format == KILN_FORMAT_HF, "format %d", m->format);
    KT_CHECK(!strcmp(c->arch, "mistral"), "arch %s", c->arch);
    KT_CHECK(c->dim == 256 && c->n_heads == 4 && c->head_dim == 48, "dim %d heads %d head_dim %d",
             c->dim, c->n_heads, c->head_dim);
    KT_CHECK(c->n_kv_heads == 2 && c->n_layers == 3 && c->hidden_dim == 512 && c->vocab_size == 2048,
             "kv %d layers %d hidden %d vocab %d", c->n_kv_heads, c->n_layers, c->hidden_dim,
             c->vocab_size);
    KT_CHECK(c->rope_theta == 1e9, "rope_theta %g (from rope_parameters)", c->rope_theta);
    KT_CHECK(c->dtype == KILN_DT_BF16, "dtype %s", kiln_dtype_name(c->dtype));
    KT_CHECK(c->rope_style == KILN_ROPE_HALF, "rope style");
    KT_CHECK(!c->tied_embeddings && m->lm_head != m->tok_embd, "untied head");
    KT_CHECK(c->max_seq_len == 4096 && fabsf(c->norm_eps - 1e-5f) < 1e-10f, "ctx %d eps %g",
             c->max_seq_len, c->norm_eps);
    KT_CHECK(c->bos_id == 1 && c->n_eos == 1 && c->eos_ids[0] == 2, "bos %d eos n=%d [0]=%d",
             c->bos_id, c->n_eos, c->eos_ids[0]);
    KT_CHECK(!c->has_temperature && !c->has_top_p && !c->has_top_k, "no sampling defaults");
    KT_CHECK(m->layers && m->layers[2].wq->shape[0] == 192 && m->layers[2].wq->shape[1] == 256,
             "wq shape");
    KT_CHECK(m->layers[1].wo->shape[0] == 256 && m->layers[1].wo->shape[1] == 192, "wo shape");
    KT_CHECK(m->layers[0].wk->shape[0] == 96 && m->layers[0].w_down->shape[1] == 512, "wk/down");
    KT_CHECK(!strcmp(m->layers[1].w_gate->name, "model.layers.1.mlp.gate_proj.weight"), "gate name");
    KT_CHECK(kiln_model_weight_bytes(m) == 5347976 - 8 - 3200, "weight bytes %zu",
             kiln_model_weight_bytes(m));
    KT_CHECK(kiln_model_param_count(m) == expected_params(c, 1), "params %lld vs %lld",
             (long long)kiln_model_param_count(m), (long long)expected_params(c, 1));
    /* f32 norm copy equals the bf16 stored values */
    const kiln_tensor *n = kiln_model_find(m, "model.layers.1.post_attention_layernorm.weight");
    int same = n != NULL;
    for (int i = 0; same && i < 256; i++) {
        uint16_t h;
        memcpy(&h, (const unsigned char *)n->data + 2 * i, 2);
        same = m->layers[1].ffn_norm[i] == kiln_bf16_to_f32(h);
    }
    KT_CHECK(same, "ffn_norm f32 copy differs from the bf16 tensor");
    KT_CHECK(m->tokenizer_path[0] == 0, "no tokenizer here: %s", m->tokenizer_path);
    KT_CHECK(strstr(m->loaded_from, "model.safetensors") != NULL, "loaded_from %s", m->loaded_from);
    kiln_model_free(m);
}

static void test_mistral_tiny_f16(void) {
    const char *dir = kt_shared("models/mistral-tiny-random-f16");
    if (!kt_exists(tpath(dir, "model.safetensors"))) {
        fprintf(stderr, "SKIP part: %s missing\n", dir);
        return;
    }
    kiln_model *m = load_ok(dir);
    if (!m) return;
    const kiln_config *c = &m->cfg;
    KT_CHECK(c->dtype == KILN_DT_F16, "dtype %s", kiln_dtype_name(c->dtype));
    KT_CHECK(c->n_heads == 4 && c->n_kv_heads == 4 && c->head_dim == 32 && c->dim == 128,
             "MHA shape %d/%d/%d/%d", c->n_heads, c->n_kv_heads, c->head_dim, c->dim);
    KT_CHECK(c->vocab_size == 1000 && c->n_layers == 2 && c->rope_theta == 1e9, "vocab %d", c->vocab_size);
    KT_CHECK(kiln_model_param_count(m) == expected_params(c, 1), "params");
    kiln_model_free(m);
}

static void test_tinystories(void) {
    const char *dir = kt_shared("models/tinystories-656K");
    if (!kt_exists(tpath(dir, "model.safetensors"))) {
        fprintf(stderr, "SKIP part: %s missing\n", dir);
        return;
    }
    kiln_model *m = load_ok(dir);
    if (!m) return;
    const kiln_config *c = &m->cfg;
    KT_CHECK(!strcmp(c->arch, "llama"), "arch %s", c->arch);
    KT_CHECK(c->tied_embeddings && m->tok_embd == m->lm_head, "tied");
    KT_CHECK(m->tok_embd && !strcmp(m->tok_embd->name, "lm_head.weight"),
             "embedding from the only stored matrix, lm_head.weight");
    KT_CHECK(kiln_model_find(m, "model.embed_tokens.weight") == NULL, "no embed_tokens stored");
    KT_CHECK(c->dtype == KILN_DT_F32 && c->dim == 128 && c->n_heads == 8 && c->n_kv_heads == 4 &&
                 c->head_dim == 16 && c->hidden_dim == 384 && c->n_layers == 2 && c->vocab_size == 2048,
             "shape");
    KT_CHECK(c->rope_theta == 10000.0 && fabsf(c->norm_eps - 1e-6f) < 1e-12f && c->max_seq_len == 512,
             "theta %g eps %g ctx %d", c->rope_theta, c->norm_eps, c->max_seq_len);
    KT_CHECK(c->n_eos == 1 && c->eos_ids[0] == 2 && c->bos_id == 1, "eos/bos");
    KT_CHECK(!strcmp(m->tokenizer_path, dir), "tokenizer_path %s", m->tokenizer_path);
    KT_CHECK(kiln_model_param_count(m) == expected_params(c, 0), "params %lld",
             (long long)kiln_model_param_count(m));
    const kiln_tensor *n = kiln_model_find(m, "model.norm.weight");
    KT_CHECK(n && !memcmp(n->data, m->out_norm, 128 * 4), "out_norm f32 copy");
    kiln_model_free(m);
}

static void test_stories260k(void) {
    const char *bin = kt_shared("models/stories260K/stories260K.bin");
    if (!kt_exists(bin)) {
        fprintf(stderr, "SKIP part: %s missing\n", bin);
        return;
    }
    kiln_model *m = load_ok(bin);
    if (!m) return;
    const kiln_config *c = &m->cfg;
    KT_CHECK(m->format == KILN_FORMAT_LLAMA2C, "format");
    KT_CHECK(c->dim == 64 && c->n_layers == 5 && c->n_heads == 8 && c->n_kv_heads == 4 &&
                 c->vocab_size == 512 && c->hidden_dim == 172 && c->head_dim == 8 &&
                 c->max_seq_len == 512,
             "dims %d/%d/%d/%d/%d/%d", c->dim, c->n_layers, c->n_heads, c->n_kv_heads,
             c->vocab_size, c->hidden_dim);
    KT_CHECK(c->rope_style == KILN_ROPE_INTERLEAVED && c->dtype == KILN_DT_F32 && c->tied_embeddings,
             "style/dtype/tied");
    KT_CHECK(c->n_eos == 1 && c->eos_ids[0] == 1 && c->bos_id == 1, "llama2.c stops at BOS 1");
    KT_CHECK(strstr(m->tokenizer_path, "tok512.bin") != NULL, "tokenizer %s", m->tokenizer_path);
    const unsigned char *base = m->files[0].data;
    int64_t V = 512, D = 64, L = 5, KV = 32, H = 172;
    KT_CHECK((const unsigned char *)m->tok_embd->data == base + 28, "embedding offset");
    /* layer 1 wq: after emb, rms_att (L*D), wq of layer 0 */
    KT_CHECK((const unsigned char *)m->layers[1].wq->data == base + 28 + 4 * (V * D + L * D + D * D),
             "wq[1] offset");
    int64_t w1_start = V * D + L * D + L * D * D + 2 * L * KV * D + L * D * D + L * D;
    KT_CHECK((const unsigned char *)m->layers[3].w_gate->data == base + 28 + 4 * (w1_start + 3 * H * D),
             "w1[3] offset");
    float att0;
    memcpy(&att0, base + 28 + 4 * (V * D + 2 * D + 5), 4); /* rms_att[2][5] */
    KT_CHECK(m->layers[2].attn_norm[5] == att0, "attn_norm[2] copy");
    KT_CHECK(kiln_model_param_count(m) == expected_params(c, 0), "params");
    kiln_model_free(m);
}

static void test_dummy(void) {
    const char *cfg = kt_shared("models/devstral-small-2505-shape/config.json");
    if (kt_exists(cfg)) {
        kiln_model *m = NULL;
        kiln_error err = {0};
        int rc = kiln_model_load_dummy(&m, cfg, 42, 0, &err);
        KT_CHECK(rc == 0, "dummy devstral: %s", err.msg);
        if (m) {
            int64_t n = kiln_model_param_count(m);
            KT_CHECK(n > 23.5e9 && n < 23.65e9, "devstral params %lld (published 23.57B)", (long long)n);
            KT_CHECK(kiln_model_weight_bytes(m) == (size_t)n * 2, "bf16 bytes");
            KT_CHECK(m->cfg.head_dim == 128 && m->cfg.dim == 5120 && m->cfg.rope_theta == 1e9, "cfg");
            KT_CHECK(m->layers[39].wq->data == NULL && m->layers[39].wq->shape[0] == 4096, "no host data");
            KT_CHECK(fabsf(m->layers[7].attn_norm[100] - 1.0f) <= 1.0f / 16, "norm near 1");
            kiln_model_free(m);
        }
    } else {
        fprintf(stderr, "SKIP part: %s missing\n", cfg);
    }
    cfg = kt_shared("models/mistral-tiny-random/config.json");
    if (!kt_exists(cfg)) return;
    kiln_model *a = NULL, *b = NULL, *d = NULL;
    kiln_error err = {0};
    KT_CHECK(kiln_model_load_dummy(&a, cfg, 7, 1, &err) == 0, "%s", err.msg);
    KT_CHECK(kiln_model_load_dummy(&b, cfg, 7, 1, &err) == 0, "%s", err.msg);
    KT_CHECK(kiln_model_load_dummy(&d, cfg, 8, 1, &err) == 0, "%s", err.msg);
    if (a && b && d) {
        const kiln_tensor *ta = a->layers[1].wv, *tb = b->layers[1].wv, *td = d->layers[1].wv;
        KT_CHECK(ta->dtype == KILN_DT_BF16 && ta->nbytes == 96 * 256 * 2, "dtype/bytes");
        KT_CHECK(!memcmp(ta->data, tb->data, ta->nbytes), "same seed, same weights");
        KT_CHECK(memcmp(ta->data, td->data, ta->nbytes) != 0, "other seed, other weights");
        int ti = (int)(ta - a->tensors), ok = 1;
        double sum = 0, maxabs = 0;
        for (int64_t i = 0; i < 96 * 256; i++) {
            uint16_t h;
            memcpy(&h, (const unsigned char *)ta->data + 2 * i, 2);
            float v = kiln_bf16_to_f32(h);
            ok &= v == kiln_bf16_to_f32(kiln_f32_to_bf16(kiln_dummy_value(7, ti, i, ta)));
            sum += v;
            if (fabs(v) > maxabs) maxabs = fabs(v);
        }
        KT_CHECK(ok, "every element reproducible from kiln_dummy_value");
        KT_CHECK(fabs(sum / (96 * 256)) < 0.01 && maxabs <= 1 / 16.0 && maxabs > 0.9 / 16,
                 "uniform(-1,1)/sqrt(256): mean %g max %g", sum / (96 * 256), maxabs);
        KT_CHECK(a->cfg.head_dim == 48 && kiln_model_param_count(a) == expected_params(&a->cfg, 1),
                 "dummy shape follows config");
    }
    kiln_model_free(a);
    kiln_model_free(b);
    kiln_model_free(d);
}

/* ---- malformed inputs --------------------------------------------------------------------- */

typedef void (*hdr_edit)(json_t *hdr);
static void edit_q1_f16(json_t *h) {
    json_object_set_new(json_object_get(h, "model.layers.1.self_attn.q_proj.weight"), "dtype",
                        json_string("F16"));
}
static void edit_k0_shape(json_t *h) { /* same byte count, wrong shape */
    json_object_set_new(json_object_get(h, "model.layers.0.self_attn.k_proj.weight"), "shape",
                        json_pack("[ii]", 48, 512));
}
static void edit_drop_up2(json_t *h) { json_object_del(h, "model.layers.2.mlp.up_proj.weight"); }
static void edit_offsets_out(json_t *h) {
    json_t *t = json_object_get(h, "model.norm.weight");
    json_object_set_new(t, "data_offsets", json_pack("[II]", (json_int_t)5344768, (json_int_t)5345280));
}
static void edit_offsets_len(json_t *h) { /* in range, but not dtype x shape bytes */
    json_object_set_new(json_object_get(h, "model.norm.weight"), "data_offsets",
                        json_pack("[II]", (json_int_t)5344256, (json_int_t)5344766));
}
static void edit_i8(json_t *h) {
    json_t *t = json_object_get(h, "model.norm.weight");
    json_object_set_new(t, "dtype", json_string("I8"));
    json_object_set_new(t, "shape", json_pack("[i]", 512));
}
static void edit_overlap(json_t *h) { /* two tensors sharing bytes: tolerated, in range */
    json_object_set_new(json_object_get(h, "model.layers.0.input_layernorm.weight"), "data_offsets",
                        json_pack("[II]", (json_int_t)5344256, (json_int_t)5344768));
}

static const char *bad_st(const char *name, const char *fixture, hdr_edit edit, size_t keep_data) {
    const char *d = hf_skeleton(name, fixture);
    st_file s;
    if (st_read(&s, tpath(fixture, "model.safetensors"))) return NULL;
    if (edit) edit(s.hdr);
    st_write(&s, tpath(d, "model.safetensors"), keep_data ? keep_data : s.data_size);
    st_free(&s);
    return d;
}

typedef void (*cfg_edit)(json_t *cfg);
static void cfg_arch(json_t *c) {
    json_object_set_new(c, "architectures", json_pack("[s]", "GPT2LMHeadModel"));
}
static void cfg_yarn(json_t *c) {
    json_object_set_new(c, "rope_scaling", json_pack("{s:s,s:f}", "rope_type", "longrope", "factor", 4.0));
}
static void cfg_window(json_t *c) { json_object_set_new(c, "sliding_window", json_integer(1024)); }
static void cfg_bias(json_t *c) { json_object_set_new(c, "attention_bias", json_true()); }
static void cfg_gelu(json_t *c) { json_object_set_new(c, "hidden_act", json_string("gelu")); }
static void cfg_ok_variants(json_t *c) { /* accepted: rope_scaling default, window >= ctx, eos list */
    json_object_set_new(c, "rope_scaling", json_pack("{s:s}", "type", "default"));
    json_object_set_new(c, "sliding_window", json_integer(4096));
    json_object_set_new(c, "eos_token_id", json_pack("[iii]", 2, 7, 9));
    json_object_del(c, "rope_parameters");
    json_object_set_new(c, "rope_theta", json_real(500000.0));
    json_object_del(c, "dtype");
    json_object_set_new(c, "torch_dtype", json_string("bfloat16"));
}

static const char *bad_cfg(const char *name, const char *fixture, cfg_edit edit) {
    const char *d = newdir(name);
    json_t *c = json_load_file(tpath(fixture, "config.json"), 0, NULL);
    edit(c);
    json_dump_file(c, tpath(d, "config.json"), JSON_INDENT(2));
    json_decref(c);
    symlink(tpath(fixture, "model.safetensors"), tpath(d, "model.safetensors"));
    return d;
}

static void test_malformed(void) {
    const char *fx = kt_shared("models/mistral-tiny-random");
    if (!kt_exists(tpath(fx, "model.safetensors"))) {
        fprintf(stderr, "SKIP part: malformed safetensors cases: %s missing\n", fx);
        return;
    }
    const char *d;
    /* truncated file: the data area ends early */
    d = bad_st("trunc", fx, NULL, 3000000);
    expect_fail("truncated safetensors", d, KILN_ERR_FORMAT, tpath(d, "model.safetensors"),
                "outside the data area");
    /* header length past the end of the file */
    d = hf_skeleton("hlen", fx);
    {
        size_t n;
        unsigned char *b = slurp(tpath(fx, "model.safetensors"), &n);
        uint64_t big = n; /* > n - 8 */
        for (int i = 0; i < 8; i++) b[i] = (unsigned char)(big >> (8 * i));
        spit(tpath(d, "model.safetensors"), b, n);
        free(b);
    }
    expect_fail("header length past end", d, KILN_ERR_FORMAT, tpath(d, "model.safetensors"),
                "header length");
    /* file shorter than the 8-byte length */
    d = hf_skeleton("tiny", fx);
    spit(tpath(d, "model.safetensors"), "\x10\0\0", 3);
    expect_fail("3-byte safetensors", d, KILN_ERR_FORMAT, tpath(d, "model.safetensors"), "truncated");
    /* invalid JSON header */
    d = hf_skeleton("badjson", fx);
    {
        size_t n;
        unsigned char *b = slurp(tpath(fx, "model.safetensors"), &n);
        b[8] = '#'; /* the header's opening brace */
        spit(tpath(d, "model.safetensors"), b, n);
        free(b);
    }
    expect_fail("invalid JSON header", d, KILN_ERR_FORMAT, tpath(d, "model.safetensors"),
                "invalid JSON header");
    /* duplicate tensor name in the header (same length: "lm_head.weight" + 3 spaces) */
    d = hf_skeleton("dupkey", fx);
    {
        size_t n;
        unsigned char *b = slurp(tpath(fx, "model.safetensors"), &n);
        unsigned char *k = memmem(b + 8, 3200, "\"model.norm.weight\"", 19);
        if (k) memcpy(k, "\"lm_head.weight\"   ", 19);
        spit(tpath(d, "model.safetensors"), b, n);
        free(b);
        KT_CHECK(k != NULL, "fixture header has model.norm.weight");
    }
    expect_fail("duplicate tensor name", d, KILN_ERR_FORMAT, tpath(d, "model.safetensors"),
                "duplicate object key");
    d = bad_st("offsets", fx, edit_offsets_out, 0);
    expect_fail("offsets outside the file", d, KILN_ERR_FORMAT, "model.norm.weight",
                "outside the data area");
    expect_fail("offsets outside (file named)", d, KILN_ERR_FORMAT, tpath(d, "model.safetensors"),
                "[5344768, 5345280]");
    d = bad_st("offlen", fx, edit_offsets_len, 0);
    expect_fail("offsets != dtype x shape", d, KILN_ERR_FORMAT, tpath(d, "model.safetensors"),
                "needs 512");
    d = bad_st("i8", fx, edit_i8, 0);
    expect_fail("unsupported dtype I8", d, KILN_ERR_UNSUPPORTED, tpath(d, "model.safetensors"),
                "dtype I8 is not supported");
    d = bad_st("dtype", fx, edit_q1_f16, 0);
    expect_fail("wrong dtype", d, KILN_ERR_FORMAT, tpath(d, "model.safetensors"),
                "model.layers.1.self_attn.q_proj.weight has dtype f16, expected bf16");
    d = bad_st("shape", fx, edit_k0_shape, 0);
    expect_fail("wrong shape", d, KILN_ERR_FORMAT, tpath(d, "model.safetensors"),
                "model.layers.0.self_attn.k_proj.weight has shape [48, 512], expected [96, 256]");
    d = bad_st("missing", fx, edit_drop_up2, 0);
    expect_fail("missing tensor", d, KILN_ERR_NOT_FOUND, d,
                "missing tensor model.layers.2.mlp.up_proj.weight");
    /* overlapping tensors in range are tolerated */
    d = bad_st("overlap", fx, edit_overlap, 0);
    {
        kiln_model *m = load_ok(d);
        kiln_model_free(m);
    }
    /* config refusals */
    d = bad_cfg("arch", fx, cfg_arch);
    expect_fail("unknown architecture", d, KILN_ERR_UNSUPPORTED, tpath(d, "config.json"),
                "unknown architecture GPT2LMHeadModel");
    d = bad_cfg("yarn", fx, cfg_yarn);
    expect_fail("unknown rope_scaling type", d, KILN_ERR_UNSUPPORTED, tpath(d, "config.json"),
                "rope_scaling type \"longrope\"");
    d = bad_cfg("window", fx, cfg_window); /* issue 19: a window shorter than the context loads */
    {
        kiln_model *m = load_ok(d);
        KT_CHECK(m && m->cfg.sliding_window == 1024 && m->layers[0].window == 1024 &&
                 m->layers[m->cfg.n_layers - 1].window == 1024, "sliding_window 1024 on every layer");
        kiln_model_free(m);
    }
    d = bad_cfg("bias", fx, cfg_bias);
    expect_fail("attention_bias", d, KILN_ERR_UNSUPPORTED, tpath(d, "config.json"), "attention_bias");
    d = bad_cfg("gelu", fx, cfg_gelu);
    expect_fail("hidden_act gelu", d, KILN_ERR_UNSUPPORTED, tpath(d, "config.json"), "gelu");
    d = newdir("badcfgjson");
    spit(tpath(d, "config.json"), "{\"architectures\": [", 19);
    symlink(tpath(fx, "model.safetensors"), tpath(d, "model.safetensors"));
    expect_fail("invalid config.json", d, KILN_ERR_FORMAT, tpath(d, "config.json"), "invalid JSON");
    d = newdir("noweights");
    copy_file(tpath(fx, "config.json"), tpath(d, "config.json"));
    expect_fail("no weights", d, KILN_ERR_NOT_FOUND, d, "no model.safetensors");
    d = newdir("empty");
    expect_fail("empty folder", d, KILN_ERR_NOT_FOUND, d, "not a model folder");
    /* accepted config variants */
    d = bad_cfg("variants", fx, cfg_ok_variants);
    {
        kiln_model *m = load_ok(d);
        if (m) {
            KT_CHECK(m->cfg.n_eos == 3 && m->cfg.eos_ids[1] == 7 && m->cfg.eos_ids[2] == 9,
                     "eos list from config.json");
            KT_CHECK(m->cfg.rope_theta == 500000.0, "top-level rope_theta %g", m->cfg.rope_theta);
            KT_CHECK(m->cfg.dtype == KILN_DT_BF16, "torch_dtype");
        }
        kiln_model_free(m);
    }
    /* generation_config.json: eos list + sampling defaults override config.json */
    d = bad_cfg("genconf", fx, cfg_ok_variants);
    {
        const char *g = "{\"bos_token_id\": 1, \"eos_token_id\": [2, 5], \"temperature\": 0.7,"
                        " \"top_p\": 0.95, \"top_k\": 40, \"do_sample\": true}";
        spit(tpath(d, "generation_config.json"), g, strlen(g));
        kiln_model *m = load_ok(d);
        if (m) {
            const kiln_config *c = &m->cfg;
            KT_CHECK(c->n_eos == 2 && c->eos_ids[0] == 2 && c->eos_ids[1] == 5, "eos from generation_config");
            KT_CHECK(c->has_temperature && fabsf(c->gen_temperature - 0.7f) < 1e-6f, "temperature");
            KT_CHECK(c->has_top_p && fabsf(c->gen_top_p - 0.95f) < 1e-6f, "top_p");
            KT_CHECK(c->has_top_k && c->gen_top_k == 40, "top_k");
        }
        kiln_model_free(m);
    }

    /* llama2.c: truncated, padded */
    const char *bin = kt_shared("models/stories260K/stories260K.bin");
    if (kt_exists(bin)) {
        size_t n;
        unsigned char *b = slurp(bin, &n);
        const char *p = tpath(g_tmp, "trunc.bin");
        spit(p, b, n - 100);
        expect_fail("truncated llama2.c", p, KILN_ERR_FORMAT, p, "truncated");
        p = tpath(g_tmp, "short.bin");
        spit(p, b, 20);
        expect_fail("llama2.c shorter than header", p, KILN_ERR_FORMAT, p, "truncated");
        p = tpath(g_tmp, "garbage.bin");
        int32_t h[7] = {64, 172, 5, 7, 4, 512, 512}; /* 64 % 7 != 0 */
        memcpy(b, h, sizeof h);
        spit(p, b, n);
        expect_fail("llama2.c bad header", p, KILN_ERR_FORMAT, p, "implausible header");
        free(b);
    } else {
        fprintf(stderr, "SKIP part: %s missing\n", bin);
    }
}

/* ---- sharded checkpoints ------------------------------------------------------------------- */

/* Splits fixture's model.safetensors into two shards + index.json (written here). */
static const char *make_sharded(const char *name, const char *fixture, int drop_second) {
    const char *d = hf_skeleton(name, fixture);
    st_file s;
    if (st_read(&s, tpath(fixture, "model.safetensors"))) return NULL;
    json_t *wm = json_object();
    const char *shard_names[2] = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};
    size_t n_keys = json_object_size(s.hdr), k = 0;
    json_t *hdr[2] = {json_object(), json_object()};
    unsigned char *data[2] = {malloc(s.data_size), malloc(s.data_size)};
    size_t off[2] = {0, 0};
    const char *key;
    json_t *v;
    json_object_foreach(s.hdr, key, v) {
        if (!strcmp(key, "__metadata__")) continue;
        int sh = k++ < n_keys / 2 ? 0 : 1;
        json_t *o = json_array_get(json_object_get(v, "data_offsets"), 0);
        json_t *e = json_array_get(json_object_get(v, "data_offsets"), 1);
        size_t b = (size_t)json_integer_value(o), len = (size_t)json_integer_value(e) - b;
        memcpy(data[sh] + off[sh], s.data + b, len);
        json_object_set_new(hdr[sh], key,
                            json_pack("{s:O,s:O,s:[II]}", "dtype", json_object_get(v, "dtype"), "shape",
                                      json_object_get(v, "shape"), "data_offsets",
                                      (json_int_t)off[sh], (json_int_t)(off[sh] + len)));
        off[sh] += len;
        json_object_set_new(wm, key, json_string(shard_names[sh]));
    }
    for (int sh = 0; sh < 2; sh++) {
        if (sh == 1 && drop_second) break;
        st_file o = {hdr[sh], data[sh], off[sh]};
        st_write(&o, tpath(d, shard_names[sh]), off[sh]);
    }
    json_t *index = json_pack("{s:{s:I},s:o}", "metadata", "total_size", (json_int_t)(off[0] + off[1]),
                              "weight_map", wm);
    json_dump_file(index, tpath(d, "model.safetensors.index.json"), JSON_INDENT(2));
    json_decref(index);
    json_decref(hdr[0]);
    json_decref(hdr[1]);
    free(data[0]);
    free(data[1]);
    st_free(&s);
    return d;
}

static void test_sharded(void) {
    const char *fx = kt_shared("models/mistral-tiny-random");
    if (!kt_exists(tpath(fx, "model.safetensors"))) {
        fprintf(stderr, "SKIP part: sharded: %s missing\n", fx);
        return;
    }
    const char *d = make_sharded("sharded", fx, 0);
    kiln_model *one = load_ok(fx), *two = d ? load_ok(d) : NULL;
    if (one && two) {
        KT_CHECK(two->n_files == 2, "2 shards mapped, got %d", two->n_files);
        KT_CHECK(two->n_tensors == one->n_tensors, "tensor count %d vs %d", two->n_tensors,
                 one->n_tensors);
        int same = 1;
        for (int i = 0; i < one->n_tensors; i++) {
            const kiln_tensor *a = &one->tensors[i], *b = kiln_model_find(two, a->name);
            same &= b && b->nbytes == a->nbytes && b->dtype == a->dtype &&
                    !memcmp(a->shape, b->shape, sizeof a->shape) && !memcmp(a->data, b->data, a->nbytes);
        }
        KT_CHECK(same, "sharded tensors byte-identical to the single file");
        KT_CHECK(two->layers[2].w_down->data != one->layers[2].w_down->data &&
                     !memcmp(two->layers[2].w_down->data, one->layers[2].w_down->data,
                             one->layers[2].w_down->nbytes),
                 "bound roles identical");
        KT_CHECK(strstr(two->loaded_from, "2 shards") != NULL, "loaded_from %s", two->loaded_from);
    }
    kiln_model_free(one);
    kiln_model_free(two);
    d = make_sharded("sharded_missing", fx, 1);
    expect_fail("index -> missing shard", d, KILN_ERR_NOT_FOUND,
                tpath(d, "model.safetensors.index.json"), "model-00002-of-00002.safetensors");
}

/* ---- HF -> Mistral-native converter -------------------------------------------------------- */

static void check_native(const char *hf_dir, const char *label) {
    const char *script = "tests/tools/hf_to_mistral_native.py";
    char cmd[4096];
    const char *out = newdir(label);
    snprintf(cmd, sizeof cmd, "python3 %s '%s' '%s'", script, hf_dir, out);
    int rc = system(cmd);
    KT_CHECK(rc == 0, "%s failed (%d)", cmd, rc);
    if (rc) return;
    kiln_model *hf = load_ok(hf_dir), *nat = load_ok(out);
    if (hf && nat) {
        const kiln_config *a = &hf->cfg, *b = &nat->cfg;
        KT_CHECK(nat->format == KILN_FORMAT_MISTRAL && b->rope_style == KILN_ROPE_INTERLEAVED,
                 "%s: native format, interleaved rope", label);
        KT_CHECK(a->dim == b->dim && a->n_layers == b->n_layers && a->n_heads == b->n_heads &&
                     a->n_kv_heads == b->n_kv_heads && a->head_dim == b->head_dim &&
                     a->hidden_dim == b->hidden_dim && a->vocab_size == b->vocab_size &&
                     a->norm_eps == b->norm_eps && a->rope_theta == b->rope_theta &&
                     a->max_seq_len == b->max_seq_len && a->tied_embeddings == b->tied_embeddings &&
                     a->dtype == b->dtype,
                 "%s: same config", label);
        int hd = a->head_dim, half = hd / 2, perm_ok = 1, same_ok = 1;
        for (int l = 0; l < a->n_layers; l++) {
            const kiln_tensor *pairs[2][2] = {{hf->layers[l].wq, nat->layers[l].wq},
                                              {hf->layers[l].wk, nat->layers[l].wk}};
            for (int w = 0; w < 2; w++) {
                const kiln_tensor *th = pairs[w][0], *tn = pairs[w][1];
                size_t rb = th->nbytes / (size_t)th->shape[0];
                int heads = (int)(th->shape[0] / hd);
                /* meta[h*hd + 2i + j] == hf[h*hd + j*hd/2 + i] */
                for (int h = 0; h < heads; h++)
                    for (int i = 0; i < half; i++)
                        for (int j = 0; j < 2; j++)
                            perm_ok &= !memcmp((const char *)tn->data + (size_t)(h * hd + 2 * i + j) * rb,
                                               (const char *)th->data + (size_t)(h * hd + j * half + i) * rb,
                                               rb);
                perm_ok &= memcmp(th->data, tn->data, th->nbytes) != 0; /* really permuted */
            }
            const kiln_tensor *same[][2] = {
                {hf->layers[l].wv, nat->layers[l].wv}, {hf->layers[l].wo, nat->layers[l].wo},
                {hf->layers[l].w_gate, nat->layers[l].w_gate}, {hf->layers[l].w_up, nat->layers[l].w_up},
                {hf->layers[l].w_down, nat->layers[l].w_down}};
            for (size_t k = 0; k < sizeof same / sizeof same[0]; k++)
                same_ok &= same[k][0]->nbytes == same[k][1]->nbytes &&
                           !memcmp(same[k][0]->data, same[k][1]->data, same[k][0]->nbytes);
            same_ok &= !memcmp(hf->layers[l].attn_norm, nat->layers[l].attn_norm, a->dim * 4) &&
                       !memcmp(hf->layers[l].ffn_norm, nat->layers[l].ffn_norm, a->dim * 4);
        }
        same_ok &= !memcmp(hf->tok_embd->data, nat->tok_embd->data, hf->tok_embd->nbytes) &&
                   !memcmp(hf->lm_head->data, nat->lm_head->data, hf->lm_head->nbytes) &&
                   !memcmp(hf->out_norm, nat->out_norm, a->dim * 4);
        KT_CHECK(perm_ok, "%s: wq/wk rows are the Meta permutation of the HF rows", label);
        KT_CHECK(same_ok, "%s: other tensors byte-identical", label);
        KT_CHECK(kiln_model_param_count(hf) == kiln_model_param_count(nat), "%s: param count", label);
    }
    kiln_model_free(hf);
    kiln_model_free(nat);

    /* a folder with both layouts: HF preferred, recorded in loaded_from */
    symlink(tpath(hf_dir, "config.json"), tpath(out, "config.json"));
    symlink(tpath(hf_dir, "model.safetensors"), tpath(out, "model.safetensors"));
    kiln_model *both = load_ok(out);
    if (both) {
        KT_CHECK(both->format == KILN_FORMAT_HF && strstr(both->loaded_from, "not used") != NULL,
                 "%s: both layouts -> HF: %s", label, both->loaded_from);
        kiln_model_free(both);
    }
}

static void test_converter(void) {
    if (system("python3 -c 'import json, mmap, struct' >/dev/null 2>&1") != 0) {
        fprintf(stderr, "SKIP part: python3 not available: converter test not run\n");
        return;
    }
    if (!kt_exists("tests/tools/hf_to_mistral_native.py")) {
        fprintf(stderr, "SKIP part: tests/tools/hf_to_mistral_native.py not found (cwd must be the repo)\n");
        return;
    }
    const char *fx = kt_shared("models/mistral-tiny-random");
    if (kt_exists(tpath(fx, "model.safetensors"))) check_native(fx, "native_bf16");
    fx = kt_shared("models/tinystories-656K");
    if (kt_exists(tpath(fx, "model.safetensors"))) check_native(fx, "native_tied");
    /* native refusals */
    const char *d = newdir("native_bad");
    const char *p = "{\"dim\": 64, \"n_layers\": 1, \"hidden_dim\": 128, \"n_heads\": 4, "
                    "\"vocab_size\": 10, \"moe\": {\"num_experts\": 8, \"num_experts_per_tok\": 2, \"router\": 1}}";
    spit(tpath(d, "params.json"), p, strlen(p));
    spit(tpath(d, "consolidated.safetensors"), "\0\0\0\0\0\0\0\0", 8);
    expect_fail("native moe key", d, KILN_ERR_UNSUPPORTED, tpath(d, "params.json"), "moe.router is not supported");
    p = "{\"dim\": 64, \"n_layers\": 1, \"hidden_dim\": 128, \"n_heads\": 4, \"vocab_size\": 10}";
    spit(tpath(d, "params.json"), p, strlen(p));
    expect_fail("native empty safetensors", d, KILN_ERR_FORMAT, tpath(d, "consolidated.safetensors"),
                "invalid JSON header");
}

/* Random byte flips in the safetensors header and the llama2.c header: never a crash, never a
 * success with out-of-range views (run under `make asan` too). Allocation failures: OOM, clean. */
static void test_fuzz_and_oom(void) {
    const char *fx = kt_shared("models/mistral-tiny-random");
    if (!kt_exists(tpath(fx, "model.safetensors"))) return;
    size_t n;
    unsigned char *orig = slurp(tpath(fx, "model.safetensors"), &n);
    unsigned char *b = malloc(n);
    const char *d = hf_skeleton("fuzz", fx);
    unsigned long long seed = 12345;
    int loaded = 0, refused = 0, bad_code = 0;
    for (int it = 0; it < 300; it++) {
        memcpy(b, orig, n);
        int flips = 1 + (int)(kt_rand_u64(&seed) % 4);
        for (int f = 0; f < flips; f++) {
            size_t pos = (size_t)(kt_rand_u64(&seed) % (8 + 3200));
            b[pos] = (unsigned char)kt_rand_u64(&seed);
        }
        spit(tpath(d, "model.safetensors"), b, n);
        kiln_model *m = NULL;
        kiln_error err = {0};
        int rc = kiln_model_load(&m, d, &err);
        if (rc == 0) {
            loaded++;
            for (int i = 0; i < m->n_tensors; i++) { /* every view inside the mapping */
                const kiln_tensor *t = &m->tensors[i];
                const unsigned char *p = t->data;
                bad_code |= !(p >= m->files[0].data && p + t->nbytes <= m->files[0].data + m->files[0].size);
            }
            kiln_model_free(m);
        } else {
            refused++;
            bad_code |= !(rc == KILN_ERR_FORMAT || rc == KILN_ERR_UNSUPPORTED || rc == KILN_ERR_NOT_FOUND);
            bad_code |= strstr(err.msg, d) == NULL;
        }
    }
    KT_CHECK(!bad_code, "fuzz: an unexpected code, a message not naming the folder, or a view out of range");
    printf("fuzz: %d refused, %d loaded\n", refused, loaded);
    KT_CHECK(refused > 100, "fuzz: %d refused, %d loaded", refused, loaded);
    free(b);
    free(orig);

    /* every allocation point failing in turn gives KILN_ERR_OOM, nothing leaks (ASan): every
     * point below 200, then a stride growing with k (jansson's allocations count too: the
     * safetensors header and config.json make a few thousand) */
    int oom = 0, ok_after = 0, other = 0;
    for (int k = 0; k < 1000000; k += k < 200 ? 1 : 1 + k / 16) {
        kiln_model *m = NULL;
        kiln_error err = {0};
        kiln_alloc_fail_after(k);
        int rc = kiln_model_load(&m, fx, &err);
        kiln_alloc_fail_after(-1);
        if (rc == KILN_ERR_OOM) oom++;
        else if (rc == 0) ok_after++;
        else other++;
        kiln_model_free(m);
        if (rc == 0) break;
    }
    printf("oom: %d allocation points failed cleanly\n", oom);
    KT_CHECK(oom > 3 && ok_after == 1 && other == 0, "oom: %d OOM, %d ok, %d other", oom, ok_after, other);
}

static void rm_rf(const char *dir) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

int main(void) {
    snprintf(g_tmp, sizeof g_tmp, "/tmp/kiln_test_model_XXXXXX");
    if (!mkdtemp(g_tmp)) {
        fprintf(stderr, "mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    if (!kt_exists(kt_shared("models")))
        KT_SKIP("%s missing: no model fixtures", kt_shared("models"));
    test_mistral_tiny();
    test_mistral_tiny_f16();
    test_tinystories();
    test_stories260k();
    test_dummy();
    test_malformed();
    test_sharded();
    test_converter();
    test_fuzz_and_oom();
    if (kt_pass == 0) {
        rm_rf(g_tmp);
        KT_SKIP("no fixture found under %s", kt_shared("models"));
    }
    if (!kt_fail) rm_rf(g_tmp);
    else fprintf(stderr, "temp files kept in %s\n", g_tmp);
    return kt_done();
}
