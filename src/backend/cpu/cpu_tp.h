/* cpu_tp.h: tensor parallelism on the CPU backend as N simulated ranks in one process
 * (backend config tp_size > 1; docs/tensor-parallel.md).
 *
 * Every rank holds its shard of the weights (model/tp.h: column-parallel Q / K / V / gate / up,
 * row-parallel O / down, the LM head by vocabulary) and its own KV pool, sharded by KV head
 * (the engine's layout with the rank's n_kv_heads; the same block ids on every rank). A step
 * runs, per layer, each rank's half of the layer one rank after the other (each rank uses the
 * whole thread pool), sums the ranks' partial O and down products in rank order into one f32
 * buffer (the all-reduce: red = 0 + p_0 + p_1 + ... + p_{N-1}), adds it to the residual, and at
 * the end writes each rank's logits into its vocabulary columns (the gather). The embedding
 * and every norm are replicated, computed once (the same on every rank).
 * What differs from N = 1 is only the order of the sums of O and down (split over ranks), so
 * logits agree with N = 1 to float rounding, not bit for bit. The single-rank path of
 * cpu_backend.c is not touched. */
#ifndef KILN_CPU_TP_H
#define KILN_CPU_TP_H
#include "backend/backend.h"
#include "backend/cpu/attention.h"
#include "backend/cpu/kernels.h"

typedef struct kiln_cpu_tp kiln_cpu_tp;

/* Shards m over bc->tp_size ranks and allocates the ranks' KV pools and the scratch of one
 * rank's step (rows up to bc->max_tokens; logits_rows rows of logits; n_threads: the pool's, for
 * the FP8 pool's per-thread scratch). KV pools: f32, or FP8 E4M3 with cpu_backend.c's per-layer
 * scales. Refuses (by name) another KV type and the partitions model/tp.c refuses. */
int kiln_cpu_tp_create(kiln_cpu_tp **out, const kiln_model *m, const kiln_backend_config *bc, int n_threads,
                       size_t logits_rows, kiln_error *err);
void kiln_cpu_tp_destroy(kiln_cpu_tp *tp);
void kiln_cpu_tp_memory(const kiln_cpu_tp *tp, size_t *kv_bytes, size_t *scratch_bytes);

/* One step's layers and logits: x [T][dim] holds the embedding rows (becomes the residual
 * stream), xn [T][dim] scratch, cs / sn the step's RoPE angles; logits [n][vocab] out with
 * *n_logits rows (in the order of cpu_backend.c: the last seq_logits[i] rows of each sequence).
 * scores: attention scratch as attention.h, for query blocks of q_block rows. */
int kiln_cpu_tp_forward(kiln_cpu_tp *tp, kiln_cpu_ctx *ctx, const kiln_attn_kernels *ak, float *scores, int q_block,
                        const kiln_step *s, float *x, float *xn, const double *cs, const double *sn, float *logits,
                        int *n_logits, kiln_error *err);

#endif
