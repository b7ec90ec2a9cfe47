/* tp.h: tensor-parallel partitioning of a model (Megatron-LM's split, as vLLM does it).
 *
 * N ranks (tensor_parallel_size) each own a slice of every layer:
 *   - query heads [q_head0, q_head0 + n_q_heads), H / N of them (H % N == 0);
 *   - KV heads: KV / N of them when N <= KV (KV % N == 0); when N > KV (N % KV == 0) one head,
 *     kv head r / (N / KV), replicated on N / KV ranks (vLLM's num_kv_head_replicas), so a
 *     rank's query heads always read KV heads it holds;
 *   - FFN columns [ffn0, ffn0 + n_ffn) of the intermediate size (hidden_dim % N == 0);
 *   - LM head rows (vocabulary) [vocab0, vocab0 + n_vocab): ceil(V / N) per rank, the last one
 *     shorter (its logits are concatenated before sampling: a gather).
 * Weights (linear weights are [out][in], model.h):
 *   column-parallel (output rows split): Wq, Wk, Wv, Wgate, Wup, the LM head; biases of q/k/v
 *     sliced alike. Row slices are views into the checkpoint, no copy.
 *   row-parallel (input columns split): Wo (its heads' columns), Wdown (its FFN columns); each
 *     rank's product is a partial sum of the full output, summed over ranks (the all-reduce).
 *     Column slices are copied into the shard's own buffer (GGUF block types: the slice must
 *     start and end on a block boundary, refused otherwise with the tensor named).
 *   replicated: the embedding, every norm weight, the q / k norms (per head), RoPE.
 * Refused with the count named: N < 1, rank outside [0, N), heads / KV heads / FFN size not
 * divisible as above, a vocabulary smaller than N; mixture-of-experts layers and FP8 weights
 * with block scales (not sharded yet). */
#ifndef KILN_MODEL_TP_H
#define KILN_MODEL_TP_H
#include "model/model.h"

#define KILN_TP_MAX 64 /* ranks */

typedef struct kiln_tp_rank {
    int rank, size;
    int q_head0, n_q_heads;   /* query heads of this rank */
    int kv_head0, n_kv_heads; /* KV heads of this rank (1 when size > cfg.n_kv_heads) */
    int kv_replicas;          /* ranks holding each KV head: size / n_kv_heads when larger, else 1 */
    int ffn0, n_ffn;          /* intermediate (FFN) columns */
    int vocab0, n_vocab;      /* LM head rows */
} kiln_tp_rank;

/* Rank `rank` of `size`'s partition of cfg, or KILN_ERR_INVALID_ARG (size < 1 or > KILN_TP_MAX,
 * rank out of range) / KILN_ERR_UNSUPPORTED (a count not divisible as needed, MoE) with the
 * counts named. */
int kiln_tp_partition(const kiln_config *cfg, int size, int rank, kiln_tp_rank *out, kiln_error *err);
/* The same for every rank of `size`: KILN_OK when cfg splits. */
int kiln_tp_check(const kiln_config *cfg, int size, kiln_error *err);
/* kiln_tp_check and the weights: every row-parallel slice on a block boundary (GGUF block
 * types), no FP8 block scales, a dense layer; what kiln_tp_shard_create would refuse, said
 * before anything is allocated. */
int kiln_tp_check_model(const kiln_model *m, int size, kiln_error *err);

/* Tensor views and copies (exported for the tests):
 * rows [r0, r0 + n) of w as a view (FP8 channel scales sliced alike; tensor scales shared);
 * columns [c0, c0 + n) of w copied into dst (kiln_tp_cols_bytes(w, n) bytes). */
int kiln_tp_slice_rows(const kiln_tensor *w, int64_t r0, int64_t n, kiln_tensor *out, kiln_error *err);
size_t kiln_tp_cols_bytes(const kiln_tensor *w, int64_t n);
int kiln_tp_slice_cols(const kiln_tensor *w, int64_t c0, int64_t n, void *dst, kiln_tensor *out, kiln_error *err);

/* One rank's weights: layers[] is a kiln_layer_weights per layer whose matrices are this rank's
 * shards (norms, q / k norms, windows, KV scales as the model's), lm_head its vocabulary rows. */
typedef struct kiln_tp_shard {
    kiln_tp_rank part;
    kiln_layer_weights *layers; /* [n_layers] */
    kiln_tensor *tensors;       /* [n_layers][7] q, k, v, o, gate, up, down shards (layers point here) */
    kiln_tensor lm_head;        /* [n_vocab][dim] view */
    unsigned char *owned;       /* the row-parallel copies (Wo, Wdown) of every layer */
    size_t owned_bytes;
} kiln_tp_shard;

int kiln_tp_shard_create(kiln_tp_shard **out, const kiln_model *m, int size, int rank, kiln_error *err);
void kiln_tp_shard_free(kiln_tp_shard *s);

#endif
