/* backend.h: the backend interface (an ops table), the same for cpu and cuda.
 *
 * create() uploads or binds the weights and allocates everything the backend will ever use:
 * the engine-owned KV pool (in the layout of step.h), scratch sized for the largest step, and
 * result buffers. encode_step() enqueues one step and never waits; finish_step() is the step's
 * one wait and hands back the logits of the rows that asked for them (host memory,
 * [n_seqs_with_logits][vocab] in sequence order). Nothing is allocated between them (I7).
 *
 * Overlap (ops.overlap = 1): encode_step may be called once more while one step is pending (at
 * most two steps in flight); finish_step then waits for and returns the OLDEST pending step.
 * A step may take input tokens drawn by the previous encoded step (kiln_step.prev_row). The
 * result pointers of a finish_step stay valid until the next finish_step call (the backend
 * double-buffers them); the engine reads them before it encodes again.
 */
#ifndef KILN_BACKEND_H
#define KILN_BACKEND_H
#include "step/step.h"
#include "kiln.h"
#include "model/model.h"

typedef struct kiln_backend_config {
    int max_tokens;         /* rows in the largest step */
    int max_seqs;
    int max_blocks_per_seq;
    int max_model_len;
    int kv_window;          /* > 0: the engine releases KV blocks out of this window (every layer's
                             * window is at most this); they read as block 0 (step.h kv_window) */
    kiln_kv_layout kv;
    int n_threads;          /* cpu: 0 = all cores */
    int strict;             /* KILN_STRICT=1: refuse every fallback */
    int batch_invariant;    /* KILN_BATCH_INVARIANT=1 */
    int sample;             /* the engine will send device_sample steps (a backend with ops.samples
                             * may leave its sampler out otherwise: cpu) */
    int max_logits_per_seq; /* logits rows a step may ask per sequence (the engine sets it from
                             * ops.max_logits_per_seq; 0 = 1) */
    int sample_rows;        /* 1: device_sample steps may ask several rows of a sequence
                             * (speculative verification; the engine sets it from ops.sample_rows) */
    int masks;              /* 1: device_sample steps may carry grammar masks (ops.masks; the engine
                             * sets it when it can constrain): the backend sizes their upload */
    int n_devices;          /* 0: the backend's default device; else devices[0 .. n_devices) */
    int devices[KILN_MAX_DEVICES];
    int tp_size;            /* tensor parallelism: ranks (0 or 1: none). cpu: simulated ranks in one
                             * process (cpu_tp.h); cuda: refused until the NCCL path exists */
    kiln_cpu_options cpu;   /* the switches of kiln.h, copied from the engine options */
    kiln_cuda_options cuda;
} kiln_backend_config;

typedef struct kiln_step_result {
    const float *logits;    /* [n_logits][vocab], rows in sequence order of seq_logits; NULL
                             * when the backend sampled */
    int n_logits;
    int vocab;
    /* a sampling backend (ops.samples) given device_sample = 1: */
    const int32_t *tokens;  /* [n_logits] the drawn tokens */
    const float *logprob;   /* [n_logits] raw logprob of each (when want_logprob) */
    const int32_t *top_ids; /* [n_logits][KILN_STEP_MAX_TOP] raw top ids (first n_logprobs valid) */
    const float *top_lp;    /* [n_logits][KILN_STEP_MAX_TOP] */
} kiln_step_result;


typedef struct kiln_backend kiln_backend;

typedef struct kiln_backend_ops {
    const char *name;
    kiln_kv_dtype kv_dtype; /* the KV pool's own element type (cpu: f32, cuda: bf16) */
    unsigned kv_dtypes;     /* bit (1u << t) for every kiln_kv_dtype t the pool can hold; 0: kv_dtype only */
    int max_logits_per_seq; /* logits rows per sequence a step may ask (0: 1, the last row) */
    int samples;       /* 1: can sample on the device (kiln_step.device_sample) */
    int sample_opt_in; /* 1: the engine uses the backend's sampler only when asked (cpu: env
                        * KILN_CPU_SAMPLE=1); 0: whenever it samples (cuda) */
    int overlap;       /* 1: two steps may be in flight (see above; needs device_sample) */
    int sample_rows;   /* 1: the device sampler draws every logits row of a sequence (k + 1 rows
                        * of a speculative verification), each with its own output position */
    int masks;         /* 1: the device sampler applies grammar masks (kiln_step.masks) */
    int (*create)(kiln_backend **out, const kiln_model *m, const kiln_backend_config *c,
                  kiln_error *err);
    int (*encode_step)(kiln_backend *b, const kiln_step *s, kiln_error *err); /* never waits */
    int (*finish_step)(kiln_backend *b, kiln_step_result *r, kiln_error *err); /* the one wait */
    /* Bytes of memory the backend holds (weights uploaded/converted, KV pool, scratch). */
    void (*memory)(const kiln_backend *b, size_t *kv_bytes, size_t *scratch_bytes);
    void (*destroy)(kiln_backend *b);
    /* Optional (NULL on cpu): a profiler range around each engine step (cuda: the NVTX range
     * "kiln_step" in which tools/cuda_trace counts the synchronising calls, I1). */
    void (*range_push)(const char *name);
    void (*range_pop)(void);
    /* The quantized-linear interface's admission: KILN_OK when the backend's one linear entry
     * (cpu: kiln_cpu_matmul, cuda: kiln_cuda_linear) runs weight w, its dtype (dense, GGUF
     * block, FP8) and its kiln_quant scales, else KILN_ERR_UNSUPPORTED naming the type and the
     * tensor. create() refuses a model through it (I3); callers may ask before creating. */
    int (*check_weight)(const kiln_tensor *w, kiln_error *err);
    /* Optional: the device's measured ceilings for `kiln bench` floors (cuda: probe.c). */
    int (*probe_floors)(double *copy_gbs, double *gemm_tflops, kiln_error *err);
    /* Optional: what create() would choose on the configured device, as lines of text into buf
     * (`kiln info --backend cuda`: the card, the build's architectures, the target and whether
     * it is forced, the kernel paths), for model m's shape (NULL: a generic shape). Loads no
     * weights; returns the create() refusal a card or target would get. */
    int (*describe)(const kiln_model *m, const kiln_backend_config *c, char *buf, size_t n, kiln_error *err);
    /* The model features (KILN_FEAT_* of model.h: q/k/v biases, q/k norms, RoPE scaling, attention
     * windows, MoE) the backend runs; kiln_backend_check_model refuses a model with any other
     * before create (I3). 0 (a table that does not set it): none. */
    unsigned features;
    /* Optional (NULL on cpu): the bytes a KV pool sized by the engine (no kv_blocks, no
     * kv_memory_mb) may take on the device `device` for model m: the device's free memory less
     * m's weights there and a reserve for the scratch, workspaces and graphs (cuda: 10 % of the
     * card); SIZE_MAX when the device cannot be asked. The engine takes the smaller of it and
     * kv_memory_fraction of host memory. */
    size_t (*kv_budget)(const kiln_model *m, int device);
} kiln_backend_ops;

/* The layout version of kiln_backend_ops and kiln_backend_config that a loadable backend and the
 * host agree on: bump it whenever either struct (or kiln_model / kiln_step) changes layout. */
#define KILN_BACKEND_ABI 10 /* 4: model features (ops.features, kiln_layer_weights biases / norms / experts);
                            * 5: kiln_quant.act, kiln_model.fp8*, kiln_layer_weights.k_scale / v_scale;
                            * 6: ops.sample_rows, kiln_backend_config.sample_rows, .tp_size;
                            * 7: grammar masks (ops.masks, kiln_backend_config.masks, kiln_step.masks);
                            * 8: kiln_cuda_options.q8_fuse_quant (in kiln_backend_config.cuda),
                            *    ops.kv_budget;
                            * 9: kiln_cuda_options.l2_prefetch_mb / l2_prefetch_mode / pdl_min_rows;
                            * 10: kiln_cuda_options.qreg_variant */
/* The entry libkiln_cuda.so exports: its ops table, NULL for another abi_version. */
const kiln_backend_ops *kiln_backend_cuda_entry(int abi_version);

struct kiln_backend {
    const kiln_backend_ops *ops;
    uint64_t n_syncs; /* synchronising waits made (I1: one per step) */
};

const kiln_backend_ops *kiln_backend_cpu_ops(void);
/* NULL when the CUDA backend is not available: not built, or libkiln_cuda.so not found or not
 * loadable (backend.c loads it on the first call; kiln_backend_unavailable says why). */
const kiln_backend_ops *kiln_backend_cuda_ops(void);
/* kiln_step_check (step.h) with the limits of a backend config: the vocabulary, at least
 * min_rows rows and sequences, config.max_logits_per_seq logits rows per sequence. */
int kiln_backend_check_step(const kiln_backend_config *c, int vocab, int min_rows, const kiln_step *s,
                            kiln_error *err);

/* KILN_OK when ops runs every feature model m uses (kiln_model_features against ops->features),
 * else KILN_ERR_UNSUPPORTED naming the backend and the features it lacks. The engine calls it
 * before ops->create. */
int kiln_backend_check_model(const kiln_backend_ops *ops, const kiln_model *m, kiln_error *err);

/* by name: "cpu" or "cuda"; NULL if unknown or not available */
const kiln_backend_ops *kiln_backend_find(const char *name);
/* Why kiln_backend_find(name) gave NULL, as one sentence into buf (an unknown name, a build
 * without the CUDA backend, or libkiln_cuda.so not found / not loadable with what was tried). */
void kiln_backend_unavailable(const char *name, char *buf, size_t n);

#endif
