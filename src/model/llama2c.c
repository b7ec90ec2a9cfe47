/* llama2c.c: Karpathy's llama2.c checkpoint (legacy "version 0" export, all f32).
 *
 * Header: 7 x int32 {dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len};
 * vocab_size < 0 means the classifier is not shared with the embedding. Then, f32:
 *   token_embedding_table [vocab][dim]
 *   rms_att_weight [layer][dim]
 *   wq [layer][n_heads*hs][dim]   wk [layer][n_kv*hs][dim]   wv [layer][n_kv*hs][dim]
 *   wo [layer][dim][n_heads*hs]
 *   rms_ffn_weight [layer][dim]
 *   w1 [layer][hidden][dim]   w2 [layer][dim][hidden]   w3 [layer][hidden][dim]
 *   rms_final_weight [dim]
 *   freq_cis_real [seq_len][hs/2]   freq_cis_imag [seq_len][hs/2]   (unused: RoPE is recomputed)
 *   wcls [vocab][dim]             (only when unshared)
 * with hs = dim / n_heads. The file is mapped and every layer gets kiln_tensor views named like
 * HF's (model.layers.N.self_attn.q_proj.weight ...), so kiln_model_bind resolves them as usual.
 * The size must match the header exactly: a truncated (or padded) file is refused.
 * RoPE is interleaved (run.c rotates pairs 2i, 2i+1); theta 10000, norm eps 1e-5 as run.c.
 */
#include <stdio.h>
#include <string.h>
#include "model/loaders.h"
#include "util/alloc.h"
#include "util/error.h"

static int add_view(kiln_model *m, const char *name, const unsigned char *base, uint64_t *off,
                    int64_t rows, int64_t cols) {
    kiln_tensor *t = &m->tensors[m->n_tensors++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype = KILN_DT_F32;
    t->ndim = cols ? 2 : 1;
    t->shape[0] = rows;
    t->shape[1] = cols;
    t->nbytes = (size_t)rows * (size_t)(cols ? cols : 1) * 4;
    t->data = base + *off;
    *off += t->nbytes;
    return 0;
}

int kiln_load_llama2c(kiln_model *m, const char *path, kiln_error *err) {
    m->format = KILN_FORMAT_LLAMA2C;
    m->files = kiln_calloc(1, sizeof *m->files);
    if (!m->files) return KILN_ERR(err, KILN_ERR_OOM, "%s: out of memory", path);
    int rc = kiln_mapfile_open(&m->files[0], path, err);
    if (rc) return rc;
    m->n_files = 1;
    const kiln_mapfile *f = &m->files[0];
    if (f->size < 28)
        return KILN_ERR(err, KILN_ERR_FORMAT, "%s: truncated: %zu bytes, the llama2.c header needs 28",
                        path, f->size);
    int32_t h[7];
    memcpy(h, f->data, sizeof h);
    if ((uint32_t)h[0] == 0x616b3432u)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED,
                        "%s: llama2.c versioned export (magic \"ak42\") is not supported; use the "
                        "legacy (version 0) export", path);
    int dim = h[0], hidden = h[1], n_layers = h[2], n_heads = h[3], n_kv = h[4], seq = h[6];
    int shared = h[5] > 0;
    int64_t vocab = h[5] < 0 ? -(int64_t)h[5] : h[5];
    if (dim <= 0 || hidden <= 0 || n_layers <= 0 || n_heads <= 0 || n_kv <= 0 || vocab <= 0 ||
        seq <= 0 || dim > (1 << 16) || hidden > (1 << 18) || n_layers > 1024 || vocab > (1 << 24) ||
        seq > (1 << 24) || dim % n_heads != 0 || n_heads % n_kv != 0 || (dim / n_heads) % 2 != 0)
        return KILN_ERR(err, KILN_ERR_FORMAT,
                        "%s: not a llama2.c checkpoint: implausible header dim=%d hidden_dim=%d "
                        "n_layers=%d n_heads=%d n_kv_heads=%d vocab_size=%d seq_len=%d",
                        path, dim, hidden, n_layers, n_heads, n_kv, h[5], seq);
    int64_t hs = dim / n_heads, kv_dim = (int64_t)n_kv * hs, L = n_layers;
    /* all products fit easily in 64 bits under the bounds above */
    uint64_t n_floats = (uint64_t)(vocab * dim) + L * dim + L * dim * dim + 2 * L * dim * kv_dim +
                        L * dim * dim + L * dim + 3 * L * dim * hidden + dim +
                        2 * (uint64_t)seq * (hs / 2) + (shared ? 0 : (uint64_t)(vocab * dim));
    uint64_t want = 28 + 4 * n_floats;
    if (f->size < want)
        return KILN_ERR(err, KILN_ERR_FORMAT,
                        "%s: truncated: the header implies %llu bytes, the file has %zu", path,
                        (unsigned long long)want, f->size);
    if (f->size > want)
        return KILN_ERR(err, KILN_ERR_FORMAT,
                        "%s: %zu bytes but the header implies %llu: not a llama2.c (version 0) "
                        "checkpoint or corrupt", path, f->size, (unsigned long long)want);

    kiln_config *c = &m->cfg;
    snprintf(c->arch, sizeof c->arch, "llama");
    c->dim = dim;
    c->hidden_dim = hidden;
    c->n_layers = n_layers;
    c->n_heads = n_heads;
    c->n_kv_heads = n_kv;
    c->head_dim = (int)hs;
    c->vocab_size = (int)vocab;
    c->max_seq_len = seq;
    c->norm_eps = 1e-5f;
    c->rope_theta = 10000.0;
    c->rope_style = KILN_ROPE_INTERLEAVED;
    c->tied_embeddings = shared;
    c->dtype = KILN_DT_F32;
    c->bos_id = 1;
    /* llama2.c's run.c stops generating when BOS (1) is produced (its sentencepiece tokenizer
     * never emits EOS = 2 in the TinyStories models: each story starts with BOS), so the stop id
     * is 1. (golden_greedy_stories260K.json: "stop when BOS(1) is produced".) */
    c->eos_ids[0] = 1;
    c->n_eos = 1;

    m->tensors = kiln_calloc((size_t)(9 * n_layers + 3), sizeof *m->tensors);
    if (!m->tensors) return KILN_ERR(err, KILN_ERR_OOM, "%s: out of memory", path);
    const unsigned char *base = f->data;
    uint64_t off = 28;
    char name[128];
    add_view(m, "model.embed_tokens.weight", base, &off, vocab, dim);
    /* per-kind arrays are stored layer after layer: view each layer's slice */
    struct { const char *fmt; int64_t rows, cols; } kinds[] = {
        {"model.layers.%d.input_layernorm.weight", dim, 0},
        {"model.layers.%d.self_attn.q_proj.weight", n_heads * hs, dim},
        {"model.layers.%d.self_attn.k_proj.weight", kv_dim, dim},
        {"model.layers.%d.self_attn.v_proj.weight", kv_dim, dim},
        {"model.layers.%d.self_attn.o_proj.weight", dim, n_heads * hs},
        {"model.layers.%d.post_attention_layernorm.weight", dim, 0},
        {"model.layers.%d.mlp.gate_proj.weight", hidden, dim},
        {"model.layers.%d.mlp.down_proj.weight", dim, hidden},
        {"model.layers.%d.mlp.up_proj.weight", hidden, dim},
    };
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
        for (int l = 0; l < n_layers; l++) {
            snprintf(name, sizeof name, kinds[k].fmt, l);
            add_view(m, name, base, &off, kinds[k].rows, kinds[k].cols);
        }
    add_view(m, "model.norm.weight", base, &off, dim, 0);
    off += 2 * (uint64_t)seq * (hs / 2) * 4; /* freq_cis_real, freq_cis_imag */
    if (!shared) add_view(m, "lm_head.weight", base, &off, vocab, dim);
    if (off != f->size)
        return KILN_ERR(err, KILN_ERR_INTERNAL, "%s: layout walk ended at %llu of %zu bytes", path,
                        (unsigned long long)off, f->size);

    snprintf(m->loaded_from, sizeof m->loaded_from, "llama2.c checkpoint (%s classifier)",
             shared ? "shared" : "separate");
    /* a tokenizer beside the checkpoint: tok<vocab>.bin (llama2.c's custom vocabularies) or
     * tokenizer.bin (the Llama 2 one) */
    const char *slash = strrchr(path, '/');
    int dirlen = slash ? (int)(slash - path) : 1;
    const char *dir = slash ? path : ".";
    char tp[1200];
    snprintf(tp, sizeof tp, "%.*s/tok%lld.bin", dirlen, dir, (long long)vocab);
    if (!kiln_file_exists(tp)) snprintf(tp, sizeof tp, "%.*s/tokenizer.bin", dirlen, dir);
    if (kiln_file_exists(tp) && strlen(tp) < sizeof m->tokenizer_path)
        memcpy(m->tokenizer_path, tp, strlen(tp) + 1);
    return kiln_model_bind(m, err);
}
