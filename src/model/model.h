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
#define KILN_MAX_WINDOW_LAYERS 512 /* a model with a per-layer window pattern has at most this many layers */


typedef enum kiln_rope_style {
    KILN_ROPE_HALF = 0,    /* HF rotate_half: pairs (i, i + head_dim/2) */
    KILN_ROPE_INTERLEAVED  /* Meta / Mistral-native / llama2.c / GGUF llama: pairs (2i, 2i+1) */
} kiln_rope_style;

/* RoPE frequency scaling (HF rope_scaling / rope_parameters, GGUF <arch>.rope.scaling.*);
 * kiln_rope_inv_freq (rope.c) turns it into the per-pair inverse frequencies and the cos / sin
 * multiplier every backend uses. */
typedef enum kiln_rope_scaling_type {
    KILN_ROPE_SCALING_NONE = 0,
    KILN_ROPE_SCALING_LINEAR,  /* inv_freq / factor */
    KILN_ROPE_SCALING_DYNAMIC, /* NTK base fixed at factor * original length (vLLM's choice) */
    KILN_ROPE_SCALING_LLAMA3,  /* Llama 3.1 wavelength bands */
    KILN_ROPE_SCALING_YARN,    /* YaRN ramp + attention factor on cos / sin */
    KILN_ROPE_SCALING_COUNT
} kiln_rope_scaling_type;

typedef struct kiln_rope_scaling {
    kiln_rope_scaling_type type;
    double factor;                  /* linear, dynamic, llama3, yarn */
    int orig_max_pos;               /* original_max_position_embeddings (0: max_seq_len) */
    double low_freq_factor, high_freq_factor; /* llama3 */
    double beta_fast, beta_slow;    /* yarn (32, 1) */
    double attention_factor;        /* yarn: cos / sin multiplier; 0 = from factor and mscale */
    double mscale, mscale_all_dim;  /* yarn (DeepSeek-style attention factor), 0 = unset */
    int truncate;                   /* yarn: floor / ceil the correction range (default 1) */
} kiln_rope_scaling;

typedef struct kiln_config {
    char arch[32];        /* "llama", "mistral", "qwen2", "qwen3" (feature flags below say what
                           * differs from Llama's computation) */
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
    kiln_rope_scaling rope_scaling;
    int qkv_bias;         /* q / k / v projections have biases (Qwen2) */
    int qk_norm;          /* per-head RMSNorm of q and k before RoPE (Qwen3) */
    int sliding_window;   /* window of the windowed layers (0: none, full attention everywhere) */
    uint64_t window_layers[KILN_MAX_WINDOW_LAYERS / 64]; /* bit l: layer l is windowed (set with
                           * sliding_window; layer_types / max_window_layers / Mistral: all) */
    int n_experts;        /* mixture of experts (Mixtral): experts per layer, 0 = dense FFN */
    int n_experts_used;   /* experts each token is routed to (top-k) */
    int tied_embeddings;  /* LM head == embedding */
    char text_of[48];     /* the language model of this multimodal class ("Mistral3ForConditionalGeneration"),
                           * or "vision_encoder" (Mistral-native); "" = a text model */
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
    const float *bq, *bk, *bv;  /* [nh*hd], [nkv*hd] x2 f32 copies: projection biases (Qwen2), or NULL */
    const float *q_norm, *k_norm; /* [hd] f32 copies: per-head RMSNorm of q / k before RoPE (Qwen3), or NULL */
    /* mixture of experts (cfg.n_experts > 0; w_gate / w_up / w_down are NULL then):
     * router [E][dim]; experts[3e + 0] gate [hidden][dim], [3e + 1] up [hidden][dim],
     * [3e + 2] down [dim][hidden] of expert e (views; GGUF: slices of the 3-D *_exps tensors) */
    const kiln_tensor *router;
    const kiln_tensor *experts;
    float k_scale, v_scale; /* FP8 KV cache scales from the checkpoint (stored = real / scale):
                             * HF / compressed-tensors self_attn.k_scale / v_scale (kv_scale: both),
                             * Mistral attention.kv_fake_quantizer.qscale_act (both); 0 = absent */
    int window;   /* attention window of this layer: a query at position p sees keys
                   * max(0, p - window + 1) .. p; 0 = the whole context (full attention).
                   * Set from cfg.sliding_window and cfg.window_layers at bind; a backend that
                   * cannot run a window refuses it at load. */
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
    float *extra_f32;            /* owned by kiln_model_bind: biases, q/k norms, rope_freqs copies */
    kiln_tensor *expert_views;   /* owned by kiln_model_bind: [n_layers][n_experts * 3] (MoE) */
    const float *rope_freqs;     /* [head_dim / 2] GGUF rope_freqs.weight (Llama 3.1 factors: the
                                  * pair's frequency is divided by it), or NULL */
    int n_skipped;               /* tensors skipped on purpose (a multimodal checkpoint's vision
                                  * encoder and projector): not in tensors[] */
    int64_t skipped_params;
    char skipped_what[96];       /* what was skipped ("vision encoder (vision_tower., ...)"), "" = none */
    kiln_fp8_scheme fp8;         /* FP8 checkpoint or online FP8 (format NONE: neither) */
    float *fp8_scales;           /* owned f32 copies of every FP8 weight's scales */
    unsigned char *fp8_online;   /* owned: online FP8 codes and scales */
    kiln_tensor *fp8_tensors;    /* owned: online FP8 tensors [n_layers * 7] (roles point here) */
} kiln_model;

/* Model features a backend may not run (kiln_model_features; backend.h's ops.features). */
enum {
    KILN_FEAT_QKV_BIAS = 1u << 0,
    KILN_FEAT_QK_NORM = 1u << 1,
    KILN_FEAT_ROPE_SCALING = 1u << 2, /* any scaling type, or GGUF rope_freqs */
    KILN_FEAT_WINDOW = 1u << 3,       /* a layer with an attention window */
    KILN_FEAT_MOE = 1u << 4           /* mixture-of-experts FFN (Mixtral) */
};
unsigned kiln_model_features(const kiln_model *m);
/* The names of the feature bits in mask, comma-separated ("q/k/v biases, RoPE scaling (llama3)"). */
void kiln_model_feature_names(const kiln_model *m, unsigned mask, char *buf, size_t n);
/* RoPE of a model: inv[i] (i < head_dim / 2) the inverse frequency of pair i, *attn_factor the
 * multiplier of cos and sin (YaRN; else 1). Angles are pos * inv[i] (rope.c has the formulas). */
int kiln_rope_inv_freq(const kiln_model *m, double *inv, double *attn_factor, kiln_error *err);
const char *kiln_rope_scaling_name(kiln_rope_scaling_type t);

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
