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

/* KV pool: [layer][block][k|v][kv_heads][block_size][head_dim] (one block of one head is one
 * contiguous tile), element offsets in 64 bits. */
typedef struct kiln_kv_layout {
    int n_layers;
    int n_kv_heads;
    int head_dim;
    int block_size;
    int n_blocks; /* physical blocks, the null block 0 included */
    int elem_bytes; /* bytes per element: 4 (cpu, f32) or 2 (cuda, bf16); the backend's choice */
} kiln_kv_layout;

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
    uint64_t seed;
    uint64_t rng_offset; /* output position of the token being sampled */
} kiln_step_sampling;

/* Limits that size the step's sampling buffers at load (checked at add_request). */
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
    int32_t *seq_logits;         /* [max_seqs] 1 when the sequence's last row needs logits */
    kiln_step_sampling *sampling;/* [max_seqs] */
    /* For backends that sample on the device (kiln_backend_ops.samples): */
    int device_sample;           /* 1: draw the tokens on the device (no host logits); the
                                  * engine sets it when the backend samples (ops.samples) */
    int32_t *bias_ids;           /* [max_seqs * KILN_MAX_LOGIT_BIAS] packed per sequence */
    float *bias_values;
    int32_t *supp_ids;           /* [max_seqs * (KILN_MAX_EOS + KILN_MAX_STOP_IDS)] packed */
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

#endif
