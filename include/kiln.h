/* kiln.h: the public C API of libkiln.
 *
 * An engine owns a model, a backend, the paged KV cache and the scheduler. Callers add
 * requests (prompt token ids or text + sampling parameters), call kiln_engine_step() in a
 * loop, and poll each request's outputs. Every function returns a kiln_status (0 = OK) and
 * fills a kiln_error with a message naming the cause; nothing here exits the process.
 */
#ifndef KILN_H
#define KILN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KILN_VERSION "0.1.0"

typedef enum kiln_status {
    KILN_OK = 0,
    KILN_ERR_IO,          /* a file could not be opened, read or mapped */
    KILN_ERR_FORMAT,      /* a file is malformed (truncated, bad header, out-of-bounds offsets) */
    KILN_ERR_UNSUPPORTED, /* valid input that kiln cannot run (refused at load, never run wrongly) */
    KILN_ERR_INVALID_ARG, /* a caller's parameter is out of range */
    KILN_ERR_OOM,         /* host or device memory, or KV blocks, exhausted */
    KILN_ERR_RANGE,       /* an index (block id, token id, position) out of range */
    KILN_ERR_BACKEND,     /* the backend failed (CUDA error, ...) */
    KILN_ERR_STRICT,      /* KILN_STRICT=1 refused a fallback */
    KILN_ERR_NOT_FOUND,   /* unknown request id, missing tensor, ... */
    KILN_ERR_INTERNAL
} kiln_status;

typedef struct kiln_error {
    kiln_status code;
    const char *file; /* source location where the error began */
    int line;
    char msg[1024];
} kiln_error;

const char *kiln_status_name(kiln_status s);

/* ---- Engine ------------------------------------------------------------------------ */

typedef struct kiln_engine kiln_engine;

/* Switches of the CPU backend. */
typedef struct kiln_cpu_options {
    const char *isa;       /* NULL or "": the best the CPU has; "scalar", "avx2", "avx512" (x86-64)
                            * or "neon" (aarch64) forces a path (refused when the CPU or the build
                            * lacks it) (env KILN_CPU_ISA) */
    const char *act;       /* activations of the quantized matmuls (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0
                            * weights): NULL or "" the default, "q8" (8 bits per 32-element
                            * block, integer dot products, as llama.cpp) or "f32" (the weights
                            * dequantized to f32) (env KILN_CPU_ACT) */
    int amx;               /* AMX-INT8 tiles (Intel Sapphire Rapids and later) for the W x A8
                            * products of 16 or more rows (act "q8", the avx512 path; the same
                            * bits as without): 0 where the CPU and the OS have them (default),
                            * -1 off, 1 required (refused where missing) (env KILN_CPU_AMX=0|1) */
    int pack;              /* act "q8": the quantized weights packed once at load for
                            * the x86 W x A8 kernels (AVX-512 VNNI, AVX-VNNI, AVX2; Q4_0 / Q4_1 /
                            * Q5_0 / Q5_1 / Q8_0 / Q4_K / Q5_K / Q6_K; the same bits, a copy of the same
                            * size): 0 where those kernels run (default), -1 off (env
                            * KILN_CPU_PACK=0) */
    int panel_min_rows;    /* act "f32", quantized weights: products of at least this many rows
                           * dequantize the weights into panels once for all rows (the same
                           * bits as the dot kernels below it); 0 = the default (32)
                           * (env KILN_CPU_PANEL_ROWS) */
    int backend_sampling;  /* 1: the backend draws the tokens (per-slot penalty tables, like the
                            * GPU) instead of the engine from host logits; same tokens and
                            * logprobs; turns on overlapped scheduling (default 0; KILN_CPU_SAMPLE) */
    const char *attn;      /* attention's arithmetic: NULL, "" or "f32" the ISA's f32 kernels (the
                            * reference, default); "bf16": AMX-BF16 tiles (Intel Sapphire Rapids
                            * and later; refused elsewhere): q, k, v and the probabilities rounded
                            * to bfloat16, sums in f32, as a GPU's flash attention does; other
                            * bits than f32, still batch-invariant; head_dim a multiple of 32
                            * up to 256, no tensor parallelism (env KILN_CPU_ATTN) */
} kiln_cpu_options;

/* Switches of the CUDA backend, for A/B measurements; none changes a result bit unless it says
 * so. -1 everywhere means "the backend's default" (the value in parentheses). The kiln command
 * maps the KILN_CUDA_* environment variables of the README onto these fields. */
typedef struct kiln_cuda_options {
    int debug;             /* 1: wait and check after every op (breaks I1; refused under strict) (0) */
    int gemv_max_rows;     /* rows up to which the GEMV kernel replaces cuBLASLt, 0 = off (8) */
    int skinny_max_rows;   /* rows up to which the tensor-core skinny kernel may, 0 = off (8) */
    int wide_min_rows;     /* from this many rows (up to 16) gate/up and the LM head use the
                            * W-staged tensor-core kernel, 0 = off (4) */
    int wide_variant;      /* pipeline shape of that kernel, 1..6 (6) */
    int glu_fused;         /* SwiGLU in the gate/up kernel's epilogue, 0 = a separate kernel (1) */
    int pdl;               /* programmatic dependent launch, 0 = off (1) */
    int pdl_min_rows;      /* ... in steps of at least this many rows (4) (env KILN_CUDA_PDL_ROWS) */
    int graphs;            /* replay the graphs captured at load, 0 = launch kernel by kernel (1) */
    int piece_max_rows;    /* steps of up to this many rows outside the decode graphs replay
                            * piecewise graphs, 0 = none (256) */
    int decode_tc_rows;    /* decode rows run attention on the tensor-core decode kernel from this
                            * many rows, 0 = never (1) */
    int decode_tc_split;   /* that kernel's split over the context sized for this many CTAs per SM,
                            * 0 = one CTA per row and KV head (the occupancy query) */
    int att_blocks_per_sm; /* attention blocks per SM the decode split aims at (occupancy query) */
    int gate_up_16bit;     /* cuBLASLt writes gate|up in the weights' 16-bit type, 0 = f32 (1) */
    int target_sm;         /* size launches and choose kernels for this architecture's limits: 80,
                            * 86, 89 or 90 (shared memory, PDL, FP8 MMA; the SM count stays the
                            * card's); above the card is refused; 0 or -1 = the card's own (0)
                            * (env KILN_CUDA_TARGET=sm_86) */
    int qreg_max_rows;     /* GGUF Q4_K / Q6_K / Q8_0 weights: rows up to which the tensor-core
                            * kernel dequantizing in registers runs (qmma_reg.cu, from 3 rows;
                            * fewer on the int8 GEMV, more on shared-memory tiles; Q8_0 at most
                            * 32), 0 = off, at most 64 (64) */
    int qreg_variant;      /* that kernel's launch variant, for measurements: bits 1 / 2 register
                            * cap and grid, 4 / 8 an L2 prefetch distance, 16 two n-tiles a warp,
                            * 32 the x stages' old fill order
                            * (qmma_reg.cu's QX_V_*; the same sums but bit 16's), 0..63 (0)
                            * (env KILN_CUDA_QREG_VARIANT) */
    int fp8_mma_max_rows;  /* FP8 weights: rows up to which fp8.cu's tensor-core product runs
                            * (more: cuBLASLt), 0 = never, at most 64 (8) */
    int fp8_fuse_quant;    /* FP8 W8A8 with dynamic per-row activation scales: the activation
                            * codes written by the kernels before (RMSNorm; SwiGLU's partial
                            * maxima), not by a separate pass over each input; 0 = off (1) */
    int q8_fuse_quant;     /* GGUF weights on the int8 GEMV: the activations' int8 blocks written by
                            * the kernels before (RMSNorm for qkv and gate|up, SwiGLU for down,
                            * attention's combine for o, the final norm for the LM head), not by
                            * a separate pass over each input (the same bits); 0 = off (1)
                            * (env KILN_CUDA_Q8_FUSE) */
    int gemm_tune;         /* cuBLASLt products: at load, time the heuristic's first this many
                            * algorithms (at most 16) of each projection at the row counts steps
                            * use (decode and piecewise graph buckets, powers of two up to the
                            * step budget) and keep the fastest when >= 3 % faster than the
                            * first; 0 = the heuristic's first; off in batch-invariant mode (0:
                            * not yet measured on a GPU, so not on by default) (env
                            * KILN_CUDA_GEMM_TUNE) */
    int l2_prefetch_mb;    /* decode graphs of 4..8 rows: as the kernels before a projection
                            * start (RMSNorm, attention, SwiGLU: latency-bound, HBM idle), a side
                            * branch prefetches that projection's first this many MB of weights
                            * into L2; a hint, no result changes; 0 = off (32 for FP8 W8A8
                            * weights, measured there; 0 otherwise) (env KILN_CUDA_L2PF_MB) */
    int l2_prefetch_mode;  /* how: 1 bulk prefetch (sm_90; per line below), 2 per 128-byte line,
                            * 3 per line with evict_last (1: measured fastest) (env KILN_CUDA_L2PF_MODE) */
    int fail_alloc_at;     /* fault injection (tests): the allocation of create numbered this
                            * (1-based; device memory and pinned host buffers) and every later
                            * one fail as cudaMalloc fails when the device is full (KILN_ERR_OOM);
                            * 0 = off (0). tests/cuda/test_cuda_oom.c walks every point */
} kiln_cuda_options;

/* Fault injection, for the tests that prove a check can fail (kiln validate's invariants, the
 * server's disconnect handling). All 0 in normal use. */
typedef struct kiln_engine_faults {
    int extra_sync;        /* every step waits twice (I1 broken on purpose) */
    int break_batch;       /* +1e-3 on the largest logit of the second sequence of a batched step
                            * (I5 broken on purpose; turns overlap off) */
    int truncate_hash_bits;/* prefix cache: keep only this many bits of every block hash, to
                            * force collisions (0 = off) */
} kiln_engine_faults;

#define KILN_MAX_DEVICES 16

/* Speculative decoding (src/engine/spec*.c, docs/speculative.md): a proposer guesses the next
 * tokens of a decoding sequence, the target model scores them all in the same ragged step, and
 * the engine keeps the longest run the target agrees with (plus one token of its own). The
 * output is exactly what plain decoding gives: greedy ids identical, sampled ids drawn by the
 * rejection rule from the target's distribution (with n-gram proposals, bit-identical to plain
 * sampling for the same seed). Needs host sampling and a backend that returns logits at several
 * positions of a sequence (ops.max_logits_per_seq): the CPU backend; cuda refuses it. */
#define KILN_SPEC_MAX_TOKENS 16

typedef struct kiln_spec_options {
    const char *method;         /* NULL or "": off (unless draft_model_path is set: "draft");
                                 * "ngram": prompt lookup (vLLM's speculative_config method
                                 * "ngram"); "draft": a draft model (draft_model_path) */
    int num_speculative_tokens; /* K, proposed tokens per step (1 .. KILN_SPEC_MAX_TOKENS; 0: 4) */
    int ngram_max;              /* longest suffix matched against the context (vLLM's
                                 * prompt_lookup_max; 0: 4) */
    int ngram_min;              /* shortest (prompt_lookup_min; 0: 2) */
    float draft_temperature;    /* draft model: sample its proposals at this temperature instead of
                                 * the request's (sampled requests only; 0: the request's). The
                                 * output distribution stays the target's whatever it is: only the
                                 * acceptance rate moves (the statistical test uses it to put the
                                 * draft far from the target) */
    int propose_always;         /* benchmarking (`kiln bench --spec-cost`): n-gram lookup replaced
                                 * by K copies of the sequence's last token, proposed every step
                                 * whatever the context, so each verification step has exactly
                                 * K + 1 rows per sequence; the output stays exact (rejected
                                 * proposals roll back), only the cost of verification is seen */
} kiln_spec_options;

/* The chunked-prefill policy (scheduler.c, docs/scheduling.md): bounds the inter-token latency
 * of running decodes while prompts are prefilled. With max_itl_ms > 0, a step that carries decode
 * rows gets only as many prefill rows (prompt chunks) as a step-cost model predicts fit under
 * max_itl_ms: t = fixed + per_token x prefill rows + per_row x decode rows, fitted online from
 * the engine's own step timings (exponentially weighted least squares) starting from the
 * calibration below; at least min_prefill_chunk rows so prefill always progresses. Steps without
 * decode rows keep the whole max_batch_tokens budget (TTFT). Off (0): every step's budget is
 * max_batch_tokens (vLLM's fixed max_num_batched_tokens). Never changes a token (greedy output
 * is identical on and off): only how prompts are cut into steps.
 * max_step_ms > 0 bounds every step the same way, decode rows or not (a machine whose step is
 * slow, the CPU: a 4,000-token prompt admitted alone must not hold a request that arrives next,
 * or an abort, for the whole prompt); with both, a step with decode rows keeps the smaller. The
 * cost model counts attention over the context (t adds per_kkey x thousands of keys attended),
 * so chunks late in a long prompt are shorter. While the fit is learning and has not yet seen a
 * step of many prefill rows, a step's prefill rows are at most 4x the most it has seen (from
 * 32): the first steps probe the machine's speed instead of trusting an empty fit. */
typedef struct kiln_sched_options {
    double max_itl_ms;          /* target step time of steps with decode rows, ms; 0 = off */
    double max_step_ms;         /* target time of every step, ms; 0 = off */
    int min_prefill_chunk;      /* prefill rows a budgeted step always gets (0: 16) */
    double cost_fixed_ms;       /* calibration (the fit's prior): fixed ms per step, */
    double cost_token_ms;       /* ms per prefill row, */
    double cost_row_ms;         /* ms per decode row, */
    double cost_kkey_ms;        /* ms per 1,024 keys attended (summed over the rows); all 0:
                                 * learned from nothing */
    int cost_learn;             /* learn from step timings: default on (0 or 1); -1 = keep the
                                 * calibration fixed (deterministic budgets, for tests) */
    double cost_decay;          /* forgetting factor per step of the fit (0: 0.98) */
} kiln_sched_options;

typedef struct kiln_engine_options {
    const char *model_path;     /* HF folder, Mistral-native folder, .gguf or llama2.c .bin */
    const char *tokenizer_path; /* NULL: found beside the model */
    const char *backend;        /* "cpu" (default) or "cuda" */
    int n_threads;              /* 0: all cores */
    int max_seqs;               /* cap on running sequences (default 64) */
    int max_batch_tokens;       /* token budget per step (default 2048) */
    size_t scratch_pool_mb;     /* 0: no cap; else max_batch_tokens is lowered until one step's
                                 * scratch rows fit in this many MiB */
    int max_model_len;          /* 0: the model's context length */
    int kv_block_size;          /* default 16 */
    int kv_blocks;              /* 0: derived from kv_memory_mb */
    size_t kv_memory_mb;        /* 0: enough for max_seqs x max_model_len, capped by kv_memory_fraction */
    double kv_memory_fraction;  /* of physical memory for the KV pool when sized automatically (0.25) */
    int enable_prefix_cache;    /* default on (1); -1 = off */
    int load_dummy;             /* --load-format dummy: random weights in the config's shape */
    int skip_tokenizer;         /* ids only: do not load the tokenizer */
    uint64_t dummy_seed;
    const char *dummy_quant;    /* --dummy-quant: NULL = the config dtype; else a kiln quantize type
                                 * ("q8_0", "q4_k_m" ...): the dummy layers' matrices and LM head in
                                 * its GGUF block types (embedding: config dtype; norms f32) */
    int overlap;                /* overlapped (async) scheduling where the backend samples and allows
                                 * it: default on (0 or 1); -1 = off */
    int strict;                 /* 1: every fallback is an error (invariant I3) (default 0) */
    int batch_invariant;        /* 1: bit-identical logits at any batch size (the CPU backend always
                                 * is; the GPU then uses fixed kernels without split-K) (default 0) */
    int host_sampling;          /* 1: sample in the engine from host logits even where the backend
                                 * can draw on the device (the GPU sampler's reference) (default 0) */
    int jump_forward;           /* 1: constrained decoding emits the tokens of bytes its grammar forces
                                 * (where only one continuation exists) without a step each; they
                                 * are computed in the next step as one chunk (SGLang's jump-forward;
                                 * the tokenization may differ from the model's own choice, and
                                 * requests with logprobs are left alone) (default 0, as vLLM) */
    const char *kv_cache_dtype; /* NULL or "auto": the backend's own (cpu f32, cuda bf16); else "f32",
                                 * "bf16", "f16" or "fp8" (e4m3), refused where the backend cannot
                                 * hold it (vLLM's --kv-cache-dtype). The cpu holds all four: f16 /
                                 * bf16 (llama.cpp's default type) twice the f32 pool's tokens in the
                                 * same memory and half its attention reads */
    const char *quantization;   /* NULL or "": the checkpoint's weights as stored; "fp8": 16-bit / f32
                                 * (or GGUF, decoded) layer matrices quantized to FP8 E4M3 at load with
                                 * per-tensor scales and dynamic per-token activations (vLLM's
                                 * --quantization fp8; embedding and LM head stay as stored);
                                 * "fp8-per-channel": the same with one scale per output row. On an FP8
                                 * checkpoint "fp8" keeps the checkpoint's scheme. */
    int n_devices;              /* 0: the backend's first device; n > 1: tensor parallelism over
                                 * devices[0 .. n) (refused until the backend implements it) */
    int devices[KILN_MAX_DEVICES]; /* device ordinals (cuda) */
    int tensor_parallel_size;   /* 0 or 1: off; N > 1: every layer split over N ranks (vLLM's
                                 * --tensor-parallel-size; docs/tensor-parallel.md). cpu: N simulated
                                 * ranks in one process (the partitioning's check); cuda: refused at
                                 * start until its NCCL path exists */
    const char *draft_model_path;  /* speculative decoding: a draft model (same vocabulary, same
                                    * backend) run beside the target with its own KV pool; proposals
                                    * of spec.num_speculative_tokens tokens (spec.method NULL or
                                    * "draft") */
    kiln_spec_options spec;        /* speculative decoding (off by default) */
    kiln_sched_options sched;      /* the chunked-prefill ITL policy (off by default) */
    kiln_cpu_options cpu;
    kiln_cuda_options cuda;
    kiln_engine_faults faults;
} kiln_engine_options;

void kiln_engine_options_default(kiln_engine_options *o);
/* jansson: the first kiln_engine_open (or tokenizer / model load) of the process makes jansson
 * allocate through kiln's allocator (plain malloc / free plus a counter and the tests' failure
 * hook: blocks stay interchangeable with malloc's), unless the program installed its own with
 * json_set_alloc_funcs before; a program using jansson on other threads makes that first call
 * before starting them (jansson's hook is process-wide and unsynchronised). */
int kiln_engine_open(kiln_engine **out, const kiln_engine_options *o, kiln_error *err);
void kiln_engine_close(kiln_engine *e);

typedef struct kiln_sampling {
    float temperature;        /* 0 = greedy */
    int top_k;                /* 0 = off */
    float top_p;              /* 1 = off; (0, 1] */
    float min_p;              /* 0 = off */
    float repetition_penalty; /* 1 = off */
    float presence_penalty;
    float frequency_penalty;
    uint64_t seed;
    int has_seed;
    int logprobs;   /* 1: return the logprob of each sampled token (raw distribution) */
    int n_logprobs; /* and the top-n raw logprobs per token (0..20) */
    const int32_t *bias_ids; /* logit bias */
    const float *bias_values;
    int n_bias;
} kiln_sampling;

/* Constrained decoding (src/grammar): a grammar compiled against the engine's vocabulary. The
 * sampler masks every token that would leave it (special tokens always; end of sequence until
 * the text is complete), so the output is a sentence of the grammar unless max_tokens cuts it. */
typedef struct kiln_grammar kiln_grammar;

typedef enum kiln_constraint_kind {
    KILN_CONSTRAINT_JSON_SCHEMA = 1, /* text: a JSON Schema */
    KILN_CONSTRAINT_JSON_OBJECT,     /* any JSON object (text unused) */
    KILN_CONSTRAINT_REGEX,           /* text: a regular expression (full match) */
    KILN_CONSTRAINT_CHOICE,          /* text: a JSON array of strings */
    KILN_CONSTRAINT_GRAMMAR          /* text: GBNF (llama.cpp's format; xgrammar's EBNF) */
} kiln_constraint_kind;

/* Compile a constraint (thread-safe: reads only the tokenizer, as the text functions below).
 * A schema or grammar kiln cannot compile fails with a message naming the part
 * (KILN_ERR_INVALID_ARG: malformed; KILN_ERR_UNSUPPORTED: valid but not supported). */
int kiln_engine_compile_grammar(const kiln_engine *e, kiln_constraint_kind kind, const char *text, size_t len,
                                kiln_grammar **out, kiln_error *err);
void kiln_grammar_free(kiln_grammar *g);

typedef struct kiln_request_params {
    const int32_t *prompt_ids;
    int n_prompt;
    int max_tokens;  /* -1: up to the context limit */
    int min_tokens;
    int ignore_eos;
    const int32_t *stop_ids; /* besides the model's EOS ids */
    int n_stop_ids;
    const char *const *stop_strings;
    int n_stop_strings;
    kiln_sampling sampling;
    kiln_grammar *grammar;   /* constrained decoding, or NULL; the engine owns it after a successful
                              * add_request (the caller frees it when add_request fails). Host or
                              * device sampling (the masks go with the step: docs/grammar.md) */
    int no_speculation;      /* 1: this request decodes plainly on an engine that speculates */
} kiln_request_params;

void kiln_request_params_default(kiln_request_params *p);

typedef enum kiln_finish {
    KILN_FINISH_NONE = 0, /* still running */
    KILN_FINISH_STOP,     /* EOS, stop id or stop string */
    KILN_FINISH_LENGTH,   /* max_tokens or the context limit */
    KILN_FINISH_ABORT
} kiln_finish;

int kiln_engine_add_request(kiln_engine *e, const kiln_request_params *p, uint64_t *req_id,
                            kiln_error *err);
int kiln_engine_abort(kiln_engine *e, uint64_t req_id, kiln_error *err);
/* One engine step: schedule, run the backend once, sample, update. *n_active gets the number
 * of requests not yet finished (running or waiting). With overlapped scheduling a call encodes
 * step n+1 before it waits for step n and applies it, so a step can be left in flight after
 * the last request finished: *n_active is then 1, and one more call drains it (it encodes
 * nothing; a later call, kiln_engine_prompt_logits or close also do). Every call that waits
 * makes exactly one wait (stats: syncs == steps). */
int kiln_engine_step(kiln_engine *e, int *n_active, kiln_error *err);

typedef struct kiln_token_logprob {
    int32_t id;
    float logprob;
} kiln_token_logprob;

typedef struct kiln_output {
    const int32_t *new_ids; /* tokens produced since the last poll */
    int n_new;
    const char *text_delta; /* complete UTF-8 text since the last poll (stop strings held back) */
    size_t text_len;
    const float *logprobs;  /* [n_new] logprob of each new token (when asked) */
    const kiln_token_logprob *top; /* [n_new][n_logprobs] */
    int n_logprobs;
    kiln_finish finish;
    int n_prompt_tokens;
    int n_cached_tokens; /* prompt tokens served from the prefix cache */
    int n_output_tokens;
} kiln_output;

/* Output of request req_id since the last poll; pointers stay valid until the next call
 * for the same engine. A finished request is released after the poll that reports it. */
int kiln_engine_poll(kiln_engine *e, uint64_t req_id, kiln_output *out, kiln_error *err);

typedef struct kiln_engine_stats {
    int n_running;             /* sequences scheduled */
    int n_waiting;             /* requests queued (incl. preempted) */
    int kv_blocks_total;       /* usable blocks (null block excluded) */
    int kv_blocks_used;        /* referenced by running sequences */
    int kv_blocks_cached;      /* unreferenced but kept by the prefix cache */
    int kv_blocks_peak;        /* the most blocks referenced at the end of any step since open (with
                                * sliding windows, blocks that left the window are released) */
    uint64_t prompt_tokens_total;     /* prompt tokens of all requests added */
    uint64_t prompt_tokens_computed;  /* prompt tokens actually prefilled (cache hits excluded) */
    uint64_t generation_tokens_total;
    uint64_t steps;
    uint64_t syncs;            /* backend waits; == steps when I1 holds */
    uint64_t overlapped_steps; /* steps encoded while the previous one was in flight */
    uint64_t preemptions;
    uint64_t grammar_masks_computed;  /* constrained decoding: token masks walked over the trie */
    uint64_t grammar_masks_cached;    /* and served from a matcher's cache */
    uint64_t grammar_device_masks;    /* masks sent with a step to the backend's sampler */
    uint64_t grammar_drains;          /* overlapped steps not built because a constrained row
                                       * needed its previous token first (docs/grammar.md) */
    uint64_t grammar_forced_tokens;   /* tokens emitted by jump-forward (options.jump_forward) */
    uint64_t prefix_cache_hits;       /* tokens served from the prefix cache */
    /* speculative decoding (vLLM's spec_decode counters): steps in which a sequence verified a
     * proposal, tokens proposed, proposed tokens accepted, and accepted counts by position in the
     * proposal (position j counts the proposals whose first j + 1 tokens were all accepted) */
    uint64_t spec_drafts;
    uint64_t spec_draft_tokens;
    uint64_t spec_accepted_tokens;
    uint64_t spec_accepted_per_pos[KILN_SPEC_MAX_TOKENS];
    /* the chunked-prefill ITL policy (kiln_sched_options): its target (0: off), the step-cost
     * fit (ms: fixed, per prefill row, per decode row) and how many step timings it has seen,
     * the prefill budget of the last step with decode rows, steps with both decode and prefill
     * rows, and those among them whose prefill the target cut; the last step's measured time
     * and what the model predicted for it before it ran; the margin the budget keeps below the
     * target for the forecast error (KILN_COST_Z standard deviations of the relative error: a
     * fraction of the target) */
    double sched_max_itl_ms, sched_max_step_ms;
    double sched_cost_fixed_ms, sched_cost_token_ms, sched_cost_row_ms, sched_cost_kkey_ms;
    double sched_cost_margin;
    uint64_t sched_cost_samples;
    int sched_prefill_budget;
    uint64_t sched_mixed_steps;
    uint64_t sched_itl_limited_steps;
    uint64_t sched_step_limited_steps; /* steps whose prefill max_step_ms cut */
    double sched_last_step_ms, sched_last_predicted_ms;
    int max_model_len;
    int vocab_size;
    double host_seconds;       /* time in kiln_engine_step outside backend encode/finish (with
                                * overlap too: the host's own work per call, the wait excluded) */
    double backend_seconds;    /* time in backend encode_step + finish_step */
} kiln_engine_stats;

void kiln_engine_get_stats(const kiln_engine *e, kiln_engine_stats *s);

/* Tokenizer of the engine's model. add_special: BOS/EOS per the model's defaults. */
int kiln_engine_tokenize(kiln_engine *e, const char *text, size_t len, int add_special,
                         int32_t **ids, int *n_ids, kiln_error *err);
/* Decode ids to text (allocated; free with kiln_free). */
int kiln_engine_detokenize(kiln_engine *e, const int32_t *ids, int n, int skip_special, char **text,
                           size_t *len, kiln_error *err);

/* ---- Text: the engine's tokenizer and chat formats ----------------------------------- */
/* These read only the tokenizer, which is immutable once the engine is open, so they may be
 * called from any thread, also while another thread runs kiln_engine_step (the server encodes
 * prompts on its connection threads while its loop thread steps). Every one fails with
 * KILN_ERR_UNSUPPORTED when the engine was opened without a tokenizer. */

/* 1 when the engine has a tokenizer (prompts may be text, chat formats apply), 0 when it
 * takes token ids only. */
int kiln_engine_has_tokenizer(const kiln_engine *e);

/* The raw bytes of token id (not NUL-terminated, *len of them; may be invalid UTF-8 on its own,
 * e.g. one byte of a multi-byte character), pointing into the tokenizer: valid while the engine
 * is open. NULL for an id outside the vocabulary or without a tokenizer. */
const char *kiln_engine_token_piece(const kiln_engine *e, int32_t id, size_t *len);

/* One message of a chat, OpenAI-style. Strings are the caller's; nothing is copied. */
typedef struct kiln_chat_msg {
    const char *role;            /* "system", "user", "assistant", "tool" */
    const char *content;         /* may be NULL (assistant with only tool calls) */
    const char *tool_calls_json; /* assistant: JSON array of OpenAI tool_calls, or NULL */
    const char *tool_call_id;    /* tool: the call this result answers */
    const char *name;            /* tool: function name (optional) */
    int prefix;                  /* assistant, last message only: a prefix the reply continues (rendered
                                    without the end-of-turn token; Mistral formats, as mistral-common) */
    const char *const *parts;    /* content given as a list of text parts: the n_parts texts as given
                                    (content then holds them joined by "\n"; the Mistral formats join
                                    them by "\n\n", skipping empty ones, as mistral-common does); else NULL */
    int n_parts;
    const unsigned char *part_kinds; /* with parts: per part 0 text, 1 thinking (mistral-common's ThinkChunk,
                                    closed), 2 thinking not closed; NULL: all text. Thinking parts are
                                    left out of content and rendered by mistral-v13 only ([THINK]) */
} kiln_chat_msg;

/* Render messages in a chat format straight to token ids (*ids allocated; free with
 * kiln_free). template_name: NULL or "auto" = chosen from the tokenizer's metadata, else
 * "mistral-v13", "mistral-v11", "mistral-v7", "mistral-v3", "chatml" or "llama3" (unknown: KILN_ERR_INVALID_ARG; a tekken
 * file of a version with no format, e.g. v15, under "auto": KILN_ERR_UNSUPPORTED naming it). tools_json:
 * a JSON array of OpenAI tools, or NULL. add_generation_prompt: end with the opening of the
 * assistant's turn. Message text is always encoded as plain text: "[INST]" typed by a user
 * stays those characters, never becomes a control token. */
int kiln_engine_apply_chat(const kiln_engine *e, const char *template_name, const kiln_chat_msg *msgs,
                           int n_msgs, const char *tools_json, int add_generation_prompt, int32_t **ids,
                           int *n_ids, kiln_error *err);

/* Split model output that holds tool calls (Devstral: "[TOOL_CALLS][{...}]", decoded with the
 * special tokens kept) into an OpenAI tool_calls JSON array (*calls_json) and the text before
 * the calls (*content); both allocated, free with kiln_free. No tool call in text: 0 and
 * *calls_json NULL. Malformed JSON after the marker: KILN_ERR_FORMAT. Works without a
 * tokenizer too (then only the textual marker is recognised). */
int kiln_engine_parse_tool_calls(const kiln_engine *e, const char *text, size_t len, char **content,
                                 char **calls_json, kiln_error *err);

void kiln_free(void *p);

#ifdef __cplusplus
}
#endif
#endif
