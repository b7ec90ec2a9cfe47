/* cmd_quantize.c: `kiln quantize --model IN --out OUT.gguf --type T`: any model kiln loads ->
 * a GGUF v3 file whose weights are in the types of T (format/ftype.h: llama.cpp's names and
 * mixes, fallbacks for rows that are not whole 256-blocks; norms f32).
 *
 * GGUF input: every metadata entry is copied verbatim (tokenizer included), general.file_type
 * is set to T's and general.quantization_version to 2; a tensor whose type changes is
 * dequantized to f32 first (exactly, format/quant.c) and quantized again, one already in its
 * target type is copied as it is. Other inputs (HF safetensors folder, Mistral-native folder,
 * llama2.c): llama-architecture metadata under llama.cpp's keys, tensors under GGUF names, the
 * q / k rows of a rotate_half (HF) checkpoint permuted to the interleaved RoPE order GGUF's
 * llama uses (what llama.cpp's convert_hf_to_gguf.py does; kiln's GGUF loader expects it); no
 * tokenizer metadata is written (the file is then for ids-only use; kiln's GGUF loader takes
 * the vocabulary size from llama.vocab_size).
 *
 * --type keep: every tensor in its stored type, bytes unchanged (GGUF input: general.file_type
 * and general.quantization_version as they were; other inputs: norms f32, as kiln holds them,
 * and a GGUF has no FP8 type: such a checkpoint is refused). --layers N: only the first N
 * transformer layers (blk.0 .. blk.N-1; HF layers 0 .. N-1) and the block count N (GGUF input:
 * every "*.block_count" key); embedding, output norm, LM head and the other metadata (tokenizer
 * included) as they were. For a cut-down copy of a model, e.g. the default model's first 8
 * layers (48 MB): kiln quantize --model SmolLM2-135M-Instruct.Q4_1.gguf --out smol8.gguf
 * --type keep --layers 8. With a quantizing T, the type mix is that of an N-layer model.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli/cli.h"
#include "format/ftype.h"
#include "format/gguf.h"
#include "format/gguf_write.h"
#include "format/quant.h"
#include "format/quantize.h"
#include "model/model.h"
#include "util/alloc.h"
#include "util/error.h"

typedef struct q_src {
    const kiln_tensor *t; /* the source tensor, or NULL for a norm given as f32 */
    const float *f32;     /* norm copy [cols] when t is NULL */
    int64_t rows, cols;   /* 2-D view: rows x cols (1-D: 1 x n) */
    int permute_heads;    /* > 0: q/k rows from rotate_half to interleaved, this many heads */
    kiln_dtype out;
} q_src;

typedef struct q_ctx {
    q_src *src;
    int n;
    int copied, requant;
} q_ctx;

static int q_fill(void *vctx, int i, void *dst, size_t nbytes, kiln_error *err) {
    q_ctx *c = vctx;
    const q_src *s = &c->src[i];
    if (!s->t) {
        memcpy(dst, s->f32, nbytes);
        return KILN_OK;
    }
    if (s->t->dtype == s->out && !s->permute_heads) {
        if (s->t->nbytes != nbytes)
            return KILN_ERR(err, KILN_ERR_FORMAT, "%s: %zu bytes, expected %zu", s->t->name, s->t->nbytes, nbytes);
        memcpy(dst, s->t->data, nbytes);
        return KILN_OK;
    }
    size_t in_rb = kiln_dtype_row_bytes(s->t->dtype, s->cols), out_rb = kiln_dtype_row_bytes(s->out, s->cols);
    int64_t hd = s->permute_heads ? s->rows / s->permute_heads : 0;
#define FROM(r) (hd ? ((r) / hd) * hd + ((r) % hd % 2) * (hd / 2) + (r) % hd / 2 : (r))
    /* interleaved row 2i + j of a head is rotate_half row j * hd/2 + i */
    if (s->t->dtype == s->out) { /* permuted rows, bytes unchanged */
        for (int64_t r = 0; r < s->rows; r++)
            memcpy((uint8_t *)dst + (size_t)r * out_rb, (const uint8_t *)s->t->data + (size_t)FROM(r) * in_rb, in_rb);
        return KILN_OK;
    }
    float *row = kiln_malloc(sizeof(float) * (size_t)s->cols);
    if (!row) return KILN_ERR(err, KILN_ERR_OOM, "out of memory");
    int rc = KILN_OK;
    for (int64_t r = 0; r < s->rows && rc == KILN_OK; r++) {
        int64_t from = FROM(r);
        rc = kiln_row_to_f32(s->t->dtype, (const uint8_t *)s->t->data + (size_t)from * in_rb, s->cols, row);
        if (rc == KILN_OK && kiln_quantize_row(s->out, row, s->cols, (uint8_t *)dst + (size_t)r * out_rb))
            rc = KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: cannot write %s", s->t->name, kiln_dtype_name(s->out));
    }
    if (rc && rc != KILN_ERR_UNSUPPORTED) KILN_ERR(err, rc, "%s: cannot read %s", s->t->name, kiln_dtype_name(s->t->dtype));
    kiln_free(row);
    return rc;
#undef FROM
}

/* the role and layer of a GGUF tensor name */
static kiln_wrole gguf_role(const char *name, int *layer) {
    *layer = strncmp(name, "blk.", 4) ? 0 : atoi(name + 4);
    if (!strcmp(name, "token_embd.weight")) return KILN_WROLE_TOKEN_EMBD;
    if (!strcmp(name, "output.weight")) return KILN_WROLE_OUTPUT;
    if (strstr(name, "_norm")) return KILN_WROLE_NORM;
    if (strncmp(name, "blk.", 4)) return KILN_WROLE_OTHER;
    const char *p = strchr(name + 4, '.');
    if (!p) return KILN_WROLE_OTHER;
    p++;
    static const struct { const char *n; kiln_wrole r; } k[] = {
        {"attn_q.", KILN_WROLE_ATTN_Q},     {"attn_k.", KILN_WROLE_ATTN_K},   {"attn_v.", KILN_WROLE_ATTN_V},
        {"attn_output.", KILN_WROLE_ATTN_O}, {"ffn_gate.", KILN_WROLE_FFN_GATE}, {"ffn_up.", KILN_WROLE_FFN_UP},
        {"ffn_down.", KILN_WROLE_FFN_DOWN},
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
        if (!strncmp(p, k[i].n, strlen(k[i].n))) return k[i].r;
    return KILN_WROLE_OTHER;
}

static kiln_dtype stored_type(const kiln_tensor *t) { return t ? t->dtype : KILN_DT_F32; }

/* What the GGUF writer cannot say for a folder: windows (no GGUF metadata kiln reads), experts
 * (3-D tensors), a yarn attention factor or other than the default betas; Qwen's llama3 /
 * dynamic scaling (rope_freqs is llama's). 0 when it can write m. */
static int folder_refusal(const kiln_model *m, const char *in) {
    const kiln_config *c = &m->cfg;
    const kiln_rope_scaling *r = &c->rope_scaling;
    const char *why = NULL;
    if (kiln_model_features(m) & (KILN_FEAT_WINDOW | KILN_FEAT_MOE))
        why = "sliding windows and mixtures of experts";
    else if (r->type == KILN_ROPE_SCALING_YARN &&
             (r->attention_factor > 0 || r->mscale > 0 || r->mscale_all_dim > 0 || r->beta_fast != 32.0 ||
              r->beta_slow != 1.0 || !r->truncate))
        why = "a yarn attention factor, mscale or betas other than 32 / 1";
    else if ((r->type == KILN_ROPE_SCALING_LLAMA3 || r->type == KILN_ROPE_SCALING_DYNAMIC) && strcmp(c->arch, "llama") &&
             strcmp(c->arch, "mistral"))
        why = "llama3 / dynamic RoPE scaling outside llama (rope_freqs)";
    if (!why) return 0;
    fprintf(stderr, "kiln quantize: %s (%s): kiln's GGUF writer does not write %s yet\n", in, c->arch, why);
    return 1;
}

static int usage(void) {
    fprintf(stderr, "usage: kiln quantize --model IN --out OUT.gguf --type T [--layers N]\n"
                    "  IN: a GGUF file, an HF or Mistral-native folder, a llama2.c checkpoint\n"
                    "  T:  f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q4_k_s q4_k_m q5_k_s q5_k_m q6_k,\n"
                    "      or keep (every tensor in its stored type, bytes unchanged)\n"
                    "  --layers N: only the first N transformer layers (block_count N)\n");
    return 2;
}

static int add(kiln_gguf_writer *w, q_src *src, int *n, const char *name, const kiln_tensor *t, const float *f32,
               int64_t rows, int64_t cols, int perm, kiln_dtype out) {
    int64_t shape[2] = {rows, cols};
    int ndim = t ? t->ndim : 1;
    if (ndim == 1) shape[0] = cols;
    if (kiln_gguf_add_tensor(w, name, out, ndim, ndim == 1 ? shape : shape) < 0) {
        fprintf(stderr, "kiln quantize: cannot declare tensor %s (%s%s)\n", name, kiln_dtype_name(out),
                kiln_gguf_ggml_type_of(out) < 0 ? ": GGUF has no such type; pick a --type other than keep" : "");
        return -1;
    }
    src[*n] = (q_src){t, f32, ndim == 1 ? 1 : rows, cols, perm, out};
    (*n)++;
    return 0;
}

int kiln_cmd_quantize(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *type = NULL, *layers = NULL;
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "--model") || !strcmp(argv[i], "-m")) && i + 1 < argc) in = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--type") && i + 1 < argc) type = argv[++i];
        else if (!strcmp(argv[i], "--layers") && i + 1 < argc) layers = argv[++i];
        else {
            fprintf(stderr, "kiln quantize: unknown option '%s'\n", argv[i]);
            return usage();
        }
    }
    kiln_ftype ft = KILN_FTYPE_F32;
    if (!in || !out || !type) return usage();
    int keep = !strcmp(type, "keep");
    if (!keep && kiln_ftype_parse(type, &ft)) {
        fprintf(stderr, "kiln quantize: unknown type '%s'\n", type);
        return usage();
    }
    long n_keep = -1; /* --layers */
    if (layers) {
        char *e;
        n_keep = strtol(layers, &e, 10);
        if (e == layers || *e || n_keep < 1) {
            fprintf(stderr, "kiln quantize: --layers %s: expected a number of layers >= 1\n", layers);
            return 2;
        }
    }
    kiln_error err = {0};
    kiln_model *m = NULL;
    if (kiln_model_load(&m, in, &err)) {
        kiln_cli_print_error("quantize", &err);
        return 1;
    }
    const kiln_config *c = &m->cfg;
    if (m->fp8.format != KILN_FP8_NONE) { /* GGUF has no FP8 type, and the scales would be lost */
        fprintf(stderr, "kiln quantize: %s is an FP8 checkpoint (%s): GGUF has no FP8 type; not written\n", in,
                kiln_fp8_format_name(m->fp8.format));
        kiln_model_free(m);
        return 1;
    }
    if (n_keep > c->n_layers) {
        fprintf(stderr, "kiln quantize: --layers %ld: %s has only %d layers (1..%d)\n", n_keep, in, c->n_layers,
                c->n_layers);
        kiln_model_free(m);
        return 2;
    }
    kiln_gguf_writer *w = kiln_gguf_writer_new();
    q_src *src = kiln_calloc((size_t)m->n_tensors + 8 * (size_t)c->n_layers + 8, sizeof *src);
    float *rope_freqs = NULL; /* [head_dim / 2] written for llama3 / dynamic RoPE scaling */
    int n = 0, rc = 0, quantized = !keep && kiln_dtype_is_quant(kiln_ftype_base(ft));
    if (!w || !src) {
        fprintf(stderr, "kiln quantize: out of memory\n");
        rc = 1;
        goto done;
    }
    int L = n_keep > 0 ? (int)n_keep : c->n_layers; /* the layers written */
    if (m->format == KILN_FORMAT_GGUF) {
        const kiln_gguf *g = m->gguf;
        for (uint64_t i = 0; i < kiln_gguf_n_kv(g) && !rc; i++) {
            kiln_gguf_str k = kiln_gguf_kv_key(g, (int64_t)i);
            if (k.len == 17 && !memcmp(k.ptr, "general.alignment", 17)) continue; /* 32 is written */
            if (n_keep > 0 && k.len > 12 && !memcmp(k.ptr + k.len - 12, ".block_count", 12)) {
                char key[256];
                snprintf(key, sizeof key, "%.*s", (int)k.len, k.ptr);
                rc = kiln_gguf_set_u32(w, key, (uint32_t)L);
                continue;
            }
            uint64_t len;
            const void *raw = kiln_gguf_kv_raw(g, (int64_t)i, &len);
            rc = kiln_gguf_set_raw(w, k.ptr, (size_t)k.len, kiln_gguf_kv_type(g, (int64_t)i), raw, len);
        }
        int has_output = kiln_gguf_find_tensor(g, "output.weight") != NULL, deq = 0;
        for (int i = 0; i < m->n_tensors && !rc; i++) {
            const kiln_tensor *t = &m->tensors[i];
            int layer;
            kiln_wrole role = gguf_role(t->name, &layer);
            if (!strncmp(t->name, "blk.", 4) && layer >= L) continue; /* --layers */
            if (role == KILN_WROLE_TOKEN_EMBD && !has_output) role = KILN_WROLE_OUTPUT;
            int64_t cols = t->shape[t->ndim - 1], rows = 1;
            for (int d = 0; d < t->ndim - 1; d++) rows *= t->shape[d];
            kiln_dtype dt = t->ndim == 1 || t->dtype == KILN_DT_I32 ? t->dtype
                                                                     : kiln_ftype_tensor_type(ft, role, layer, L, 2, cols);
            if (t->ndim > 2 || keep) dt = t->dtype;
            deq += kiln_dtype_is_quant(t->dtype) && dt != t->dtype;
            int64_t shape[4];
            for (int d = 0; d < t->ndim; d++) shape[d] = t->shape[d];
            if (kiln_gguf_add_tensor(w, t->name, dt, t->ndim, shape) < 0) {
                fprintf(stderr, "kiln quantize: cannot declare tensor %s (%s)\n", t->name, kiln_dtype_name(dt));
                rc = -1;
                break;
            }
            src[n++] = (q_src){t, NULL, rows, cols, 0, dt};
        }
        if (deq)
            fprintf(stderr, "kiln quantize: %d quantized input tensors are dequantized to f32 (exactly) and quantized "
                            "again; tensors already in their target type are copied unchanged\n", deq);
    } else if ((rc = folder_refusal(m, in)) != 0) {
        rc = -1;
    } else {
        const char *base = strrchr(in, '/');
        char name[256];
        snprintf(name, sizeof name, "%s", base && base[1] ? base + 1 : in);
        /* llama metadata, or qwen2 / qwen3 (their q/k/v biases and q/k norms below) */
        const char *arch = !strcmp(c->arch, "qwen2") || !strcmp(c->arch, "qwen3") ? c->arch : "llama";
        char k[96];
#define AK(key) (snprintf(k, sizeof k, "%s.%s", arch, key), k)
        rc = kiln_gguf_set_str(w, "general.architecture", arch) || kiln_gguf_set_str(w, "general.name", name) ||
             kiln_gguf_set_u32(w, AK("context_length"), (uint32_t)c->max_seq_len) ||
             kiln_gguf_set_u32(w, AK("embedding_length"), (uint32_t)c->dim) ||
             kiln_gguf_set_u32(w, AK("block_count"), (uint32_t)L) ||
             kiln_gguf_set_u32(w, AK("feed_forward_length"), (uint32_t)c->hidden_dim) ||
             kiln_gguf_set_u32(w, AK("rope.dimension_count"), (uint32_t)c->head_dim) ||
             kiln_gguf_set_u32(w, AK("attention.head_count"), (uint32_t)c->n_heads) ||
             kiln_gguf_set_u32(w, AK("attention.head_count_kv"), (uint32_t)c->n_kv_heads) ||
             kiln_gguf_set_f32(w, AK("rope.freq_base"), (float)c->rope_theta) ||
             kiln_gguf_set_f32(w, AK("attention.layer_norm_rms_epsilon"), c->norm_eps) ||
             kiln_gguf_set_u32(w, AK("vocab_size"), (uint32_t)c->vocab_size);
        /* RoPE scaling: linear and yarn as llama.cpp's rope.scaling.* keys; llama3 and dynamic as
         * the rope_freqs factors (default / scaled frequency), as llama.cpp writes Llama 3.1 */
        const kiln_rope_scaling *rsc = &c->rope_scaling;
        if (!rc && (rsc->type == KILN_ROPE_SCALING_LINEAR || rsc->type == KILN_ROPE_SCALING_YARN))
            rc = kiln_gguf_set_str(w, AK("rope.scaling.type"), rsc->type == KILN_ROPE_SCALING_YARN ? "yarn" : "linear") ||
                 kiln_gguf_set_f32(w, AK("rope.scaling.factor"), (float)rsc->factor) ||
                 (rsc->type == KILN_ROPE_SCALING_YARN &&
                  kiln_gguf_set_u32(w, AK("rope.scaling.original_context_length"),
                                    (uint32_t)(rsc->orig_max_pos > 0 ? rsc->orig_max_pos : c->max_seq_len)));
#undef AK
        if (!rc && c->head_dim * c->n_heads != c->dim) {
            char k2[96];
            snprintf(k, sizeof k, "%s.attention.key_length", arch);
            snprintf(k2, sizeof k2, "%s.attention.value_length", arch);
            rc = kiln_gguf_set_u32(w, k, (uint32_t)c->head_dim) || kiln_gguf_set_u32(w, k2, (uint32_t)c->head_dim);
        }
        if (!rc && c->bos_id >= 0) rc = kiln_gguf_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)c->bos_id);
        if (!rc && c->n_eos > 0) rc = kiln_gguf_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)c->eos_ids[0]);
        if (m->tokenizer_path[0])
            fprintf(stderr, "kiln quantize: note: the tokenizer of %s is not written to the GGUF (ids-only use; "
                            "pass --tokenizer %s to kiln)\n", in, m->tokenizer_path);
        int perm = c->rope_style == KILN_ROPE_HALF && !strcmp(arch, "llama"); /* qwen GGUFs keep rotate_half */
        if (!rc && (rsc->type == KILN_ROPE_SCALING_LLAMA3 || rsc->type == KILN_ROPE_SCALING_DYNAMIC)) {
            rope_freqs = kiln_malloc(sizeof(float) * (size_t)(c->head_dim / 2));
            double *inv = kiln_malloc(sizeof(double) * (size_t)(c->head_dim / 2)), af;
            rc = !rope_freqs || !inv || kiln_rope_inv_freq(m, inv, &af, &err);
            for (int i = 0; !rc && i < c->head_dim / 2; i++)
                rope_freqs[i] = (float)(1.0 / pow(c->rope_theta, (double)(2 * i) / c->head_dim) / inv[i]);
            kiln_free(inv);
            if (!rc) rc = add(w, src, &n, "rope_freqs.weight", NULL, rope_freqs, 1, c->head_dim / 2, 0, KILN_DT_F32);
        }
        kiln_wrole embd_role = c->tied_embeddings ? KILN_WROLE_OUTPUT : KILN_WROLE_TOKEN_EMBD;
#define TT(t, role, l, cols) (keep ? stored_type(t) : kiln_ftype_tensor_type(ft, role, l, L, 2, cols))
        if (!rc) rc = add(w, src, &n, "token_embd.weight", m->tok_embd, NULL, c->vocab_size, c->dim, 0,
                          TT(m->tok_embd, embd_role, 0, c->dim));
        for (int l = 0; l < L && !rc; l++) {
            const kiln_layer_weights *y = &m->layers[l];
            char nm[96];
            int64_t q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
#define ADDL(suffix, t, f, rows, cols, pm, role)                                                        \
    do {                                                                                           \
        snprintf(nm, sizeof nm, "blk.%d.%s", l, suffix);                                          \
        if (!rc) rc = add(w, src, &n, nm, t, f, rows, cols, pm, (t) ? TT(t, role, l, cols) : KILN_DT_F32); \
    } while (0)
            ADDL("attn_norm.weight", NULL, y->attn_norm, 1, c->dim, 0, KILN_WROLE_NORM);
            ADDL("attn_q.weight", y->wq, NULL, q, c->dim, perm ? c->n_heads : 0, KILN_WROLE_ATTN_Q);
            ADDL("attn_k.weight", y->wk, NULL, kv, c->dim, perm ? c->n_kv_heads : 0, KILN_WROLE_ATTN_K);
            ADDL("attn_v.weight", y->wv, NULL, kv, c->dim, 0, KILN_WROLE_ATTN_V);
            if (y->bq) { /* Qwen2 */
                ADDL("attn_q.bias", NULL, y->bq, 1, q, 0, KILN_WROLE_NORM);
                ADDL("attn_k.bias", NULL, y->bk, 1, kv, 0, KILN_WROLE_NORM);
                ADDL("attn_v.bias", NULL, y->bv, 1, kv, 0, KILN_WROLE_NORM);
            }
            if (y->q_norm) { /* Qwen3 */
                ADDL("attn_q_norm.weight", NULL, y->q_norm, 1, c->head_dim, 0, KILN_WROLE_NORM);
                ADDL("attn_k_norm.weight", NULL, y->k_norm, 1, c->head_dim, 0, KILN_WROLE_NORM);
            }
            ADDL("attn_output.weight", y->wo, NULL, c->dim, q, 0, KILN_WROLE_ATTN_O);
            ADDL("ffn_norm.weight", NULL, y->ffn_norm, 1, c->dim, 0, KILN_WROLE_NORM);
            ADDL("ffn_gate.weight", y->w_gate, NULL, c->hidden_dim, c->dim, 0, KILN_WROLE_FFN_GATE);
            ADDL("ffn_up.weight", y->w_up, NULL, c->hidden_dim, c->dim, 0, KILN_WROLE_FFN_UP);
            ADDL("ffn_down.weight", y->w_down, NULL, c->dim, c->hidden_dim, 0, KILN_WROLE_FFN_DOWN);
#undef ADDL
        }
        if (!rc) rc = add(w, src, &n, "output_norm.weight", NULL, m->out_norm, 1, c->dim, 0, KILN_DT_F32);
        if (!rc && !c->tied_embeddings)
            rc = add(w, src, &n, "output.weight", m->lm_head, NULL, c->vocab_size, c->dim, 0,
                     TT(m->lm_head, KILN_WROLE_OUTPUT, 0, c->dim));
#undef TT
    }
    if (!rc && !keep)
        rc = kiln_gguf_set_u32(w, "general.file_type", kiln_ftype_gguf_id(ft)) ||
             (quantized && kiln_gguf_set_u32(w, "general.quantization_version", 2));
    else if (!rc && m->format != KILN_FORMAT_GGUF) { /* keep: the embedding's type names the file */
        kiln_dtype e = m->tok_embd->dtype;
        if (e == KILN_DT_F32 || e == KILN_DT_F16 || e == KILN_DT_BF16)
            rc = kiln_gguf_set_u32(w, "general.file_type", e == KILN_DT_F32 ? 0 : e == KILN_DT_F16 ? 1 : 32);
    } /* keep, GGUF input: general.file_type and quantization_version as they were */
    if (rc) {
        fprintf(stderr, "kiln quantize: out of memory or a tensor GGUF cannot hold\n");
        rc = 1;
        goto done;
    }
    q_ctx qc = {src, n, 0, 0};
    if (kiln_gguf_write(w, out, q_fill, &qc, &err)) {
        kiln_cli_print_error("quantize", &err);
        rc = 1;
        goto done;
    }
    int counts[KILN_DT_COUNT] = {0};
    for (int i = 0; i < n; i++) counts[src[i].out]++;
    fprintf(stderr, "kiln quantize: wrote %s (%s, %d layers, %d tensors:", out, keep ? "keep" : kiln_ftype_name(ft), L,
            n);
    for (int t = 0; t < KILN_DT_COUNT; t++)
        if (counts[t]) fprintf(stderr, " %s x%d", kiln_dtype_name((kiln_dtype)t), counts[t]);
    fprintf(stderr, ")\n");
done:
    kiln_free(rope_freqs);
    kiln_free(src);
    kiln_gguf_writer_free(w);
    kiln_model_free(m);
    return rc;
}
