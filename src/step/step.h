/* step.h: the step descriptor, the whole truth a backend gets about one engine step.
 *
 * The engine fills it; the backend never infers batch shape from anything else. All arrays are
 * fixed buffers sized at load for the largest step (max_tokens rows, max_seqs sequences, a dense
 * block table [max_seqs][max_blocks_per_seq]), so a GPU backend uploads them with one copy.
 *
 * A step is a ragged batch: sequence s owns query rows [seq_q_start[s], seq_q_start[s+1]) (a
 * prefill chunk, or one decode token), whose positions run up to seq_ctx_len[s] - 1. Before
 * attention, the K and V of row t are written to physical KV slot slot_mapping[t]
 * (= block * block_size + offset); a query at position p attends to positions 0..p of its
 * sequence, read through its block table. Block 0 is the null block: padded rows write there.
 * With overlapped scheduling (kiln_step.prev_row) some input tokens are not known to the host:
 * the backend takes them from the previous step's draws on the device.
 */
#ifndef KILN_STEP_STEP_H
#define KILN_STEP_STEP_H
#include <stdint.h>
#include "kiln.h"

/* Element type of the KV pool. The backend names the types it can hold (kiln_backend_ops.kv_dtypes);
 * the engine picks one (its native type unless asked, e.g. FP8 to double the context). */
typedef enum kiln_kv_dtype {
    KILN_KV_F32 = 0,  /* the CPU backend's pool */
    KILN_KV_BF16,     /* the CUDA backend's pool (bf16 models) */
    KILN_KV_F16,
    KILN_KV_FP8_E4M3, /* 1 byte, scaled (kiln_kv_scale) */
    KILN_KV_DTYPE_COUNT
} kiln_kv_dtype;

/* Scales of a quantized (FP8) pool: stored = real / scale. The backend owns them (f32):
 *   KILN_KV_SCALE_TENSOR  [n_layers][2]              one for K and one for V per layer (vLLM's
 *                                                    k_scale / v_scale)
 *   KILN_KV_SCALE_HEAD    [n_layers][2][n_kv_heads]  per KV head */
typedef enum kiln_kv_scale {
    KILN_KV_SCALE_NONE = 0,
    KILN_KV_SCALE_TENSOR,
    KILN_KV_SCALE_HEAD
} kiln_kv_scale;

/* KV pool: [layer][block][k|v][kv_heads][block_size][head_dim] (one block of one head is one
 * contiguous tile), element offsets in 64 bits. */
typedef struct kiln_kv_layout {
    int n_layers;
    int n_kv_heads;
    int head_dim;
    int block_size;
    int n_blocks;         /* physical blocks, the null block 0 included */
    kiln_kv_dtype dtype;  /* element type; elem_bytes follows from it */
    kiln_kv_scale scale;  /* NONE for f32 / bf16 / f16 */
    int elem_bytes;       /* kiln_kv_dtype_bytes(dtype): 4 (cpu, f32), 2 (cuda, bf16), 1 (fp8) */
} kiln_kv_layout;

const char *kiln_kv_dtype_name(kiln_kv_dtype t);
int kiln_kv_dtype_bytes(kiln_kv_dtype t); /* 0 for an unknown type */
/* by name: "f32", "bf16", "f16", "fp8" / "fp8_e4m3"; -1 when unknown */
int kiln_kv_dtype_from_name(const char *name);
/* f32 scales the backend keeps for a layout (0 with KILN_KV_SCALE_NONE) */
int64_t kiln_kv_scale_count(const kiln_kv_layout *l);

static inline int64_t kiln_kv_offset(const kiln_kv_layout *l, int layer, int64_t block, int kv,
                                     int head, int slot) {
    return ((((int64_t)layer * l->n_blocks + block) * 2 + kv) * l->n_kv_heads + head) *
               (int64_t)l->block_size * l->head_dim +
           (int64_t)slot * l->head_dim;
}
static inline int64_t kiln_kv_elems(const kiln_kv_layout *l) {
    return (int64_t)l->n_layers * l->n_blocks * 2 * l->n_kv_heads * l->block_size * l->head_dim;
}

/* Per-sequence sampling parameters (used by backends that sample on the device; the CPU path
 * samples in the engine from the same values). */
typedef struct kiln_step_sampling {
    float temperature, top_p, min_p;
    float repetition_penalty, presence_penalty, frequency_penalty;
    int top_k;
    int n_logprobs;      /* raw top-n logprobs wanted (0..20) */
    int want_logprob;    /* raw logprob of the sampled token wanted */
    int pen_slot;        /* row of the device penalty tables, -1 = no penalties */
    int bias_start, n_bias; /* logit bias entries in kiln_step.bias_ids / bias_values */
    int supp_start, n_supp; /* ids forced to -inf (min_tokens) in kiln_step.supp_ids */
    int mask;            /* constrained decoding: 1 + the row of kiln_step.masks whose set bits are
                          * the only ids this draw may take (after penalties, bias and suppression,
                          * as the host sampler's allow mask); 0 = unconstrained (a zeroed row) */
    uint64_t seed;
    uint64_t rng_offset; /* output position of the token being sampled */
} kiln_step_sampling;

/* Limits that size the step's sampling buffers at load (checked at add_request). */
#define KILN_STEP_MAX_TOP 20     /* raw top-n logprobs per token */
#define KILN_MAX_LOGIT_BIAS 1024 /* logit_bias entries per request */
#define KILN_MAX_STOP_IDS 256    /* stop token ids per request (besides the EOS ids) */

typedef struct kiln_step {
    int max_tokens, max_seqs, max_blocks_per_seq; /* capacities of the buffers below */
    int n_tokens;                /* rows this step */
    int n_seqs;                  /* sequences this step */
    int32_t *token_ids;          /* [max_tokens] */
    int32_t *positions;          /* [max_tokens] */
    int64_t *slot_mapping;       /* [max_tokens] physical KV slot of each new token */
    int32_t *seq_q_start;        /* [max_seqs + 1] */
    int32_t *seq_ctx_len;        /* [max_seqs] context length after this step */
    int32_t *block_table;        /* [max_seqs][max_blocks_per_seq] physical block ids */
    int32_t *seq_logits;         /* [max_seqs] how many of the sequence's last rows need logits: 0,
                                  * 1 (the last row: generation), or k > 1 (speculative verification:
                                  * the last k rows, when the backend allows it, see kiln_step_limits) */
    kiln_step_sampling *sampling;/* [max_seqs] (one per sequence: its every logits row uses it) */
    /* For backends that sample on the device (kiln_backend_ops.samples): */
    int device_sample;           /* 1: draw the tokens on the device (no host logits); the
                                  * engine sets it when the backend samples (ops.samples) */
    int32_t *bias_ids;           /* [max_seqs * KILN_MAX_LOGIT_BIAS] packed per sequence */
    float *bias_values;
    int32_t *supp_ids;           /* [max_seqs * (KILN_MAX_EOS + KILN_MAX_STOP_IDS)] packed */
    /* grammar masks of the constrained sequences (engine/constraint.c), bit (id & 31) of word
     * id >> 5 set = allowed; only rows [0, n_masks) are read (backends with ops.masks) */
    uint32_t *masks;             /* [max_seqs][mask_words], NULL when the engine has no grammars */
    int mask_words;              /* (vocab + 31) / 32 */
    int n_masks;
    /* penalty tables to (re)load before sampling: entry i fills slot pen_slot[i] from
     * pen_tokens[pen_start[i] .. pen_start[i+1]): the first pen_n_prompt[i] are prompt ids
     * (presence for the repetition penalty), the rest output ids (counted). The table then
     * stays current on the device (the sampler counts each token it draws). */
    int n_pen;
    int32_t *pen_slot;           /* [max_seqs] */
    int32_t *pen_start;          /* [max_seqs + 1] */
    int32_t *pen_n_prompt;       /* [max_seqs] */
    int32_t *pen_tokens;         /* [cap_pen_tokens] */
    int cap_pen_tokens;          /* max_model_len + max_tokens: one whole sequence always fits */
    /* Overlapped (async) scheduling, backends with kiln_backend_ops.overlap: when n_prev > 0, a
     * row t with prev_row[t] >= 0 takes as its input token the token drawn for logits row
     * prev_row[t] of the previous encoded step (not seen by the engine yet; token_ids[t] is 0
     * and ignored); prev_row[t] = -1: token_ids[t] as usual. n_prev = rows with prev_row >= 0
     * (0: the field is unused). Only with device_sample = 1 in this step and the previous one. */
    int32_t *prev_row;           /* [max_tokens] */
    int n_prev;
} kiln_step;

/* What a step may hold, against which kiln_step_check holds it (I2): the capacities the buffers
 * were sized for, the pool, the vocabulary, and what the backend can do. */
typedef struct kiln_step_limits {
    int max_tokens, max_seqs, max_blocks_per_seq, max_model_len;
    int vocab;
    kiln_kv_layout kv;
    int min_rows;           /* at least this many rows and sequences (a graph bucket's floor) */
    int max_logits_per_seq; /* seq_logits[i] <= this (0 is read as 1) */
    int sample_rows;        /* 1: seq_logits[i] > 1 allowed with device_sample too */
    int masks;              /* 1: device_sample rows may carry a grammar mask (mask_row >= 0) */
    int kv_window;          /* > 0: every layer attends over at most this many positions, and the
                             * engine releases KV blocks that left the window: a sequence's blocks
                             * wholly below (its first row's position - kv_window + 1) may be the
                             * null block 0 in the block table (never read) */
} kiln_step_limits;

/* The descriptor against the limits (I2): counts within capacity (at least min_rows rows and
 * sequences), query starts covering the rows in order, contexts within max_model_len and the
 * block table, block ids in [1, n_blocks), positions inside the context, token ids inside the
 * vocabulary, KV slots inside the pool, logits rows per sequence within its rows and the limit;
 * with n_prev > 0: device_sample set, every prev_row in [-1, max_seqs) and n_prev of them >= 0
 * (their range against the previous step's logits rows is the backend's check); with
 * device_sample: one logits row per sequence (several where lim->sample_rows), the sampling rows (penalty slot, top-n, bias /
 * suppression list ranges, grammar mask rows: only where lim->masks, one logits row then, as
 * many masked draws as rows in [0, n_masks)) and the penalty loads (slots, spans, token ids). */
int kiln_step_check(const kiln_step_limits *lim, const kiln_step *s, kiln_error *err);

#endif
