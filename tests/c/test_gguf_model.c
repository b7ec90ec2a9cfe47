/* kiln-layer: model (links only this layer and those below it) */
/* test_gguf_model.c: kiln_load_gguf on the default model SmolLM2-135M-Instruct.Q4_1.gguf
 * (config and roles against the values its metadata and the gguf package report), and on copies
 * patched to be wrong (unknown tensor type, bad shape, other architecture, RoPE scaling).
 * The model comes from scripts/get_default_model.sh ($KILN_CACHE or ~/.cache/kiln, or
 * KILN_DEFAULT_GGUF); absent, the test skips. */
#include <stdint.h>
#include "format/gguf.h"
#include "model/loaders.h"
#include "test.h"
#include "util/alloc.h"

/* The model lives on the stack here: release what kiln_load_gguf filled in. */
static void free_gguf_model(kiln_model *m) {
    kiln_free(m->tensors);
    kiln_free(m->layers);
    kiln_free(m->owned);
    kiln_free(m->norm_f32);
    kiln_gguf_close(m->gguf);
    memset(m, 0, sizeof *m);
}

static const char *default_model(void) {
    static char p[1024];
    const char *e = getenv("KILN_DEFAULT_GGUF");
    if (e && *e) return e;
    const char *c = getenv("KILN_CACHE");
    if (c && *c) snprintf(p, sizeof p, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", c);
    else snprintf(p, sizeof p, "%s/.cache/kiln/SmolLM2-135M-Instruct.Q4_1.gguf",
                  getenv("HOME") ? getenv("HOME") : ".");
    return p;
}

static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*n);
    if (fread(b, 1, *n, f) != *n) { free(b); b = NULL; }
    fclose(f);
    return b;
}

/* offset of the u64 length that precedes the string s in the header */
static size_t find_str(const unsigned char *b, size_t n, const char *s) {
    size_t l = strlen(s);
    for (size_t i = 8; i + l <= n && i < (64u << 20); i++) {
        uint64_t len;
        memcpy(&len, b + i - 8, 8);
        if (len == l && memcmp(b + i, s, l) == 0) return i - 8;
    }
    return 0;
}

static int load_patched(const char *dir, const char *name, unsigned char *b, size_t n,
                        kiln_error *err) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    fwrite(b, 1, n, f);
    fclose(f);
    kiln_model m = {0};
    int rc = kiln_load_gguf(&m, path, err);
    free_gguf_model(&m);
    unlink(path);
    return rc;
}

int main(void) {
    const char *path = default_model();
    if (!kt_exists(path))
        KT_SKIP("%s not found: run scripts/get_default_model.sh (or set KILN_DEFAULT_GGUF)", path);
    kiln_model m = {0};
    kiln_error err = {0};
    int rc = kiln_load_gguf(&m, path, &err);
    KT_CHECK(rc == 0, "load: %s", err.msg);
    if (rc) return kt_done();
    const kiln_config *c = &m.cfg;
    KT_CHECK(c->dim == 576 && c->n_layers == 30 && c->hidden_dim == 1536, "dims %d %d %d", c->dim,
             c->n_layers, c->hidden_dim);
    KT_CHECK(c->n_heads == 9 && c->n_kv_heads == 3 && c->head_dim == 64, "heads %d %d %d", c->n_heads,
             c->n_kv_heads, c->head_dim);
    KT_CHECK(c->vocab_size == 49152 && c->max_seq_len == 8192, "vocab %d ctx %d", c->vocab_size,
             c->max_seq_len);
    KT_CHECK(c->rope_theta == 100000.0 && c->rope_style == KILN_ROPE_INTERLEAVED, "rope");
    KT_CHECK(fabsf(c->norm_eps - 1e-5f) < 1e-9f, "eps %g", c->norm_eps);
    KT_CHECK(c->bos_id == 1 && c->n_eos == 1 && c->eos_ids[0] == 2, "bos %d eos %d", c->bos_id,
             c->eos_ids[0]);
    KT_CHECK(c->tied_embeddings && m.lm_head == m.tok_embd, "tied head");
    KT_CHECK(c->dtype == KILN_DT_Q4_1, "dtype %s", kiln_dtype_name(c->dtype));
    KT_CHECK(m.format == KILN_FORMAT_GGUF && m.gguf != NULL, "format");
    KT_CHECK(m.n_tensors == 272, "tensors %d", m.n_tensors);
    KT_CHECK(m.tok_embd->dtype == KILN_DT_Q8_0 && m.tok_embd->shape[0] == 49152 &&
                 m.tok_embd->shape[1] == 576, "tok_embd");
    const kiln_layer_weights *L = &m.layers[29];
    KT_CHECK(L->wq->shape[0] == 576 && L->wq->shape[1] == 576, "wq");
    KT_CHECK(L->wk->shape[0] == 192 && L->wk->shape[1] == 576, "wk");
    KT_CHECK(L->w_down->shape[0] == 576 && L->w_down->shape[1] == 1536, "w_down");
    KT_CHECK(L->wq->nbytes == 576 * 576 / 32 * 20, "wq bytes");
    KT_CHECK(strcmp(L->w_up->name, "blk.29.ffn_up.weight") == 0, "role names");
    const kiln_gguf_tensor_info *an = kiln_gguf_find_tensor(m.gguf, "blk.29.attn_norm.weight");
    KT_CHECK(an && memcmp(an->data, L->attn_norm, 576 * 4) == 0, "attn_norm copy");
    float s = 0;
    for (int i = 0; i < 576; i++) s += fabsf(m.out_norm[i]);
    KT_CHECK(s > 0 && isfinite(s), "out_norm");
    free_gguf_model(&m);

    /* patched copies */
    char dir[] = "/tmp/kiln_test_gguf_model_XXXXXX";
    if (!mkdtemp(dir)) KT_SKIP("cannot create a temp dir");
    size_t n;
    unsigned char *orig = slurp(path, &n);
    KT_CHECK(orig != NULL, "read %s", path);
    if (!orig) return kt_done();
    unsigned char *b = malloc(n);

    memcpy(b, orig, n); /* blk.3.attn_v.weight: ggml type 99 */
    size_t o = find_str(b, n, "blk.3.attn_v.weight");
    KT_CHECK(o > 0, "tensor info found");
    size_t tpos = o + 8 + strlen("blk.3.attn_v.weight") + 4 + 2 * 8; /* n_dims 2 */
    uint32_t t = 99;
    memcpy(b + tpos, &t, 4);
    rc = load_patched(dir, "unknown.gguf", b, n, &err);
    KT_CHECK(rc == KILN_ERR_UNSUPPORTED && strstr(err.msg, "blk.3.attn_v.weight") &&
                 strstr(err.msg, "type 99") && strstr(err.msg, "unknown.gguf"),
             "unknown type: %d %s", rc, err.msg);

    memcpy(b, orig, n); /* blk.7.ffn_up.weight with ne1 = 1535 (smaller: stays in bounds) */
    o = find_str(b, n, "blk.7.ffn_up.weight");
    uint64_t ne1 = 1535;
    memcpy(b + o + 8 + strlen("blk.7.ffn_up.weight") + 4 + 8, &ne1, 8);
    rc = load_patched(dir, "shape.gguf", b, n, &err);
    KT_CHECK(rc == KILN_ERR_FORMAT && strstr(err.msg, "blk.7.ffn_up.weight") &&
                 strstr(err.msg, "expected [1536, 576]"), "bad shape: %d %s", rc, err.msg);

    memcpy(b, orig, n); /* architecture "gemma" */
    o = find_str(b, n, "general.architecture");
    memcpy(b + o + 8 + 20 + 4 + 8, "gemma", 5);
    rc = load_patched(dir, "arch.gguf", b, n, &err);
    KT_CHECK(rc == KILN_ERR_UNSUPPORTED && strstr(err.msg, "'gemma'"), "arch: %d %s", rc, err.msg);

    memcpy(b, orig, n); /* token_embd.weight renamed: a required tensor missing */
    o = find_str(b, n, "token_embd.weight");
    memcpy(b + o + 8, "token_embx", 10);
    rc = load_patched(dir, "noembd.gguf", b, n, &err);
    KT_CHECK(rc == KILN_ERR_NOT_FOUND && strstr(err.msg, "missing tensor token_embd.weight"),
             "missing tensor: %d %s", rc, err.msg);

    free(b);
    free(orig);
    rmdir(dir);
    return kt_done();
}
