/* model.h: a loaded checkpoint: its configuration and one table of tensors.
 *
 * Every loader (HF safetensors, Mistral-native safetensors, llama2.c .bin, GGUF) produces the
 * same kiln_model: a kiln_config plus tensors whose data points into mmapped files (or, for
 * --load-format dummy, into one owned buffer). Tensor roles are resolved once into
 * kiln_layer_weights so the backends never look names up.
 *
 * Conventions (all formats are normalised to these at load, without copying weights):
 *   - a linear weight is [out_features][in_features], row-major (PyTorch's layout);
 *   - the embedding is [vocab][dim]; the LM head is [vocab][dim] (== the embedding when tied);
 *   - norm weights are converted to f32 copies (they are tiny), matrices are used in place.
 */
#ifndef KILN_MODEL_MODEL_H
#define KILN_MODEL_MODEL_H
#include <stdint.h>
#include "kiln.h"
#include "format/tensor.h"
#include "util/mapfile.h"

#define KILN_MAX_EOS 8


typedef enum kiln_rope_style {
    KILN_ROPE_HALF = 0,    /* HF rotate_half: pairs (i, i + head_dim/2) */
    KILN_ROPE_INTERLEAVED  /* Meta / Mistral-native / llama2.c / GGUF llama: pairs (2i, 2i+1) */
} kiln_rope_style;

typedef struct kiln_config {
    char arch[32];        /* "llama" or "mistral" (same computation) */
    int dim;              /* hidden_size */
    int hidden_dim;       /* intermediate_size */
    int n_layers;
    int n_heads;
    int n_kv_heads;
    int head_dim;         /* may differ from dim / n_heads (Devstral: 128 * 32 != 5120) */
    int vocab_size;
    int max_seq_len;      /* max_position_embeddings */
    float norm_eps;
    double rope_theta;
    kiln_rope_style rope_style;
    int tied_embeddings;  /* LM head == embedding */
    kiln_dtype dtype;     /* dtype of the large matrices */
    int bos_id;           /* -1 if none */
    int eos_ids[KILN_MAX_EOS];
    int n_eos;
    /* generation_config.json defaults; has_* = 0 when absent */
    int has_temperature, has_top_p, has_top_k;
    float gen_temperature, gen_top_p;
    int gen_top_k;
} kiln_config;

typedef struct kiln_layer_weights {
    const kiln_tensor *wq, *wk, *wv, *wo;     /* [nh*hd][dim], [nkv*hd][dim] x2, [dim][nh*hd] */
    const kiln_tensor *w_gate, *w_up, *w_down; /* [hidden][dim] x2, [dim][hidden] */
    float *attn_norm;                          /* [dim] f32 copy */
    float *ffn_norm;                           /* [dim] f32 copy */
    float k_scale, v_scale; /* FP8 KV cache scales from the checkpoint (stored = real / scale):
                             * HF / compressed-tensors self_attn.k_scale / v_scale (kv_scale: both),
                             * Mistral attention.kv_fake_quantizer.qscale_act (both); 0 = absent */
    int window;   /* attention window of this layer: a query at position p sees keys
                   * max(0, p - window + 1) .. p; 0 = the whole context (full attention).
                   * The loaders set 0 today (configs with a sliding window shorter than the
                   * context are refused); a backend that cannot run a window refuses it at load. */
} kiln_layer_weights;

typedef enum kiln_model_format {
    KILN_FORMAT_HF = 0,        /* config.json + model*.safetensors */
    KILN_FORMAT_MISTRAL,       /* params.json + consolidated.safetensors */
    KILN_FORMAT_LLAMA2C,       /* llama2.c .bin */
    KILN_FORMAT_GGUF,
    KILN_FORMAT_DUMMY          /* random weights in a config's shape */
} kiln_model_format;

/* FP8 checkpoint formats (model/fp8.c) and what their config declares. */
typedef enum kiln_fp8_format {
    KILN_FP8_NONE = 0,
    KILN_FP8_HF,       /* config.json quantization_config.quant_method "fp8" */
    KILN_FP8_CT,       /* quant_method "compressed-tensors", format "float-quantized" */
    KILN_FP8_MISTRAL,  /* params.json quantization.qformat_weight "fp8_e4m3" */
    KILN_FP8_ONLINE    /* 16-bit weights quantized at load (kiln_model_quantize_fp8) */
} kiln_fp8_format;

typedef struct kiln_fp8_scheme {
    kiln_fp8_format format;
    kiln_act_quant act;        /* activations of every FP8 linear layer */
    kiln_scale_kind weight;    /* declared weight scales: TENSOR (HF without blocks, Mistral: the
                                * tensors' shapes may say CHANNEL), CHANNEL, BLOCK */
    int block_out, block_in;   /* BLOCK: weight_block_size / block_structure */
    int kv_scales;             /* the config declares KV cache scales (kv_cache_scheme) */
    char **ignored;            /* [n_ignored] modules kept in 16 bits (ignored_layers / ignore) */
    int n_ignored;
} kiln_fp8_scheme;

const char *kiln_fp8_format_name(kiln_fp8_format f);

typedef struct kiln_model {
    kiln_config cfg;
    kiln_model_format format;
    char path[1024];           /* what was loaded (file or folder) */
    char loaded_from[1024];    /* human-readable: which files were used */
    char tokenizer_path[1024]; /* tokenizer found beside the model ("" if none) */
    kiln_tensor *tensors;
    int n_tensors;
    kiln_mapfile *files;
    int n_files;
    void *owned;               /* owned weight memory (dummy weights) */
    float *norm_f32;           /* owned by kiln_model_bind: every f32 norm copy, [(2*n_layers+1)*dim] */
    uint64_t dummy_seed;       /* format == DUMMY: the seed of kiln_dummy_value */
    int dummy_host_data;       /* format == DUMMY: 0 when matrix data is NULL (filled on a device) */
    char dummy_quant[16];      /* format == DUMMY: the quantization type ("q4_k_m"), "" = none: the
                                * matrices' dtypes then differ (tensor dtype; norms f32) */
    const kiln_tensor *tok_embd; /* [vocab][dim] */
    const kiln_tensor *lm_head;  /* [vocab][dim] */
    float *out_norm;             /* [dim] f32 */
    kiln_layer_weights *layers;  /* [n_layers] */
    void *gguf;                  /* the kiln_gguf handle when format == GGUF */
    kiln_fp8_scheme fp8;         /* FP8 checkpoint or online FP8 (format NONE: neither) */
    float *fp8_scales;           /* owned f32 copies of every FP8 weight's scales */
    unsigned char *fp8_online;   /* owned: online FP8 codes and scales */
    kiln_tensor *fp8_tensors;    /* owned: online FP8 tensors [n_layers * 7] (roles point here) */
} kiln_model;

/* Load a model from a path: a folder (HF or Mistral-native), a .gguf, or a llama2.c .bin.
 * Everything malformed or unsupported is refused with a message naming the file. */
int kiln_model_load(kiln_model **out, const char *path, kiln_error *err);
/* A model in the shape of a config.json with random weights (dtype from the config). */
/* host_data = 0 leaves tensor data NULL (a GPU backend fills the weights on the device). */
int kiln_model_load_dummy(kiln_model **out, const char *config_path, uint64_t seed, int host_data,
                          kiln_error *err);
/* The same with the layers' matrices and an untied LM head in the GGUF block types of a
 * quantization type (quant: a kiln_ftype name, "q4_k_m" ...; NULL or "" = the config dtype);
 * their bytes are kiln_dummy_qbyte(kiln_dummy_key(seed, t), dtype, byte, cols)
 * (model/dummy_quant.h). */
int kiln_model_load_dummy_quant(kiln_model **out, const char *config_path, uint64_t seed, int host_data,
                                const char *quant, kiln_error *err);
void kiln_model_free(kiln_model *m);

/* Dummy weights are a pure function of (seed, tensor index in m->tensors, element index), so
 * any element is reproducible anywhere (a GPU backend can fill them on the device):
 *   x = mix64(mix64(seed ^ (0x9E3779B97F4A7C15 * (t + 1))) + i)     mix64 = splitmix64's finaliser
 *   u = (x >> 40) * 2^-23 - 1                                          uniform in [-1, 1)
 *   matrix [out][in]: u / sqrt(in)        norm: 1 + u / 16
 * then rounded to the tensor dtype (round-to-nearest-even). */
float kiln_dummy_value(uint64_t seed, int t, int64_t i, const kiln_tensor *tensor);

/* Online FP8 (engine option quantization "fp8", vLLM's --quantization fp8): every layer's 7
 * matrices (f32 / f16 / bf16; GGUF block types are decoded first) become E4M3 with one scale per
 * tensor (kind KILN_SCALE_TENSOR, as vLLM) or per output row (KILN_SCALE_CHANNEL):
 * scale = max|w| / 448 over the tensor (row), codes = kiln_f32_to_e4m3(w / scale); activations
 * dynamic per token. The embedding and the LM head keep their type. A model that is FP8
 * already, or whose matrices have no host data (dummy weights for a GPU), is refused. */
int kiln_model_quantize_fp8(kiln_model *m, kiln_scale_kind kind, kiln_error *err);
/* The dtype of the layers' matrices ("f8_e4m3", "bf16", "q4_1", "mixed") and a one-line
 * description of their FP8 scheme ("" when not FP8), for kiln info / bench / validate. */
const char *kiln_model_weight_dtype(const kiln_model *m);
void kiln_model_fp8_describe(const kiln_model *m, char *buf, size_t n);

const kiln_tensor *kiln_model_find(const kiln_model *m, const char *name);
int64_t kiln_model_param_count(const kiln_model *m);
size_t kiln_model_weight_bytes(const kiln_model *m);

#endif
