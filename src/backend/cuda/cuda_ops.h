/* cuda_ops.h: the CUDA backend's kernels, one launcher per op (one .cu file each).
 *
 * Conventions (T = rows this step, D = hidden size, hd = head_dim, H / KV = query / KV heads):
 *   - the residual stream x and every GEMM output are f32; the inputs of GEMMs (normed x,
 *     attention output, SwiGLU output) are written in the weights' dtype `adt` (bf16, f16 or
 *     f32), so cuBLASLt multiplies like types with f32 accumulation;
 *   - the KV pool is bf16, in the engine's layout [layer][block][k|v][KV][block_size][hd]
 *     (step.h), 64-bit element offsets;
 *   - pdl (the launchers of kernels that follow cuda_dev.cuh's kiln_pdl_wait rule): programmatic
 *     dependent launch in steps of at least this many rows, 0 never (the backend passes
 *     kiln_cuda_options.pdl_min_rows, 4 by default, or 0 under KILN_CUDA_PDL=0; tests pass 1:
 *     every row count);
 *   - every launcher only enqueues on `st` and returns cudaGetLastError() (never waits); the
 *     arrays of the step descriptor (token ids, positions, slots, row -> sequence, block table)
 *     are device copies.
 * Rows are independent and every reduction has a fixed order that depends only on the row's
 * own shape (its position, D, hd), never on T: a row gives the same bits in any batch (I5/I6).
 */
#ifndef KILN_CUDA_OPS_H
#define KILN_CUDA_OPS_H
#define KILN_PDL_MIN_ROWS 4 /* the backend's default pdl (cuda_dev.cuh has the measurement) */
#include <stdint.h>
#include <cuda_runtime_api.h>
#include "backend/cuda/target.h"
#include "format/dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

/* x[t][i] = f32(emb[id][i]): emb [vocab][D] of dtype edt (f32/f16/bf16), id = ids[t], or, for
 * rows with prev_row[t] >= 0, prev_tok[prev_row[t]] (the previous step's drawn token of that
 * logits row: overlapped scheduling); prev_row may be NULL (every row from ids). */
cudaError_t kiln_cuda_embed(float *x, const void *emb, kiln_dtype edt, const int32_t *ids, const int32_t *prev_row,
                            const int32_t *prev_tok, int T, int D, cudaStream_t st);

/* Residual add fused with RMSNorm, per output row r (T rows):
 *   src = rows ? rows[r] : r;  v = x[src] + (delta ? delta[src] : 0)
 *   if (write_back) x[src] = v;  out[r] = adt(w * (v / sqrt(mean(v^2) + eps)))
 * x, delta: [*][D] f32; w: [D] f32; out: [T][D] of dtype adt. With rows (final norm) write_back
 * must be 0. */
cudaError_t kiln_cuda_add_rmsnorm(float *x, const float *delta, const int32_t *rows, int write_back,
                                  const float *w, void *out, kiln_dtype adt, int T, int D, float eps,
                                  int pdl, cudaStream_t st);
/* The same with bf16 out (D % 4 == 0, D <= 32768, no `rows` with write_back), also writing the
 * rows' W8A8 input (issue 17): xq [T][D] e4m3 codes and sa [T] scales, the bytes
 * kiln_cuda_fp8_quant_x (gs = D) writes for out (stat / in_scale likewise). dsa [*], dsw [D] (both or
 * neither; dsw 16-byte aligned): delta holds cuBLASLt FP8's unscaled sums, scaled here as
 * kiln_cuda_fp8_scale_rows(delta, D, dsa, dsw) would have (the same bits). */
cudaError_t kiln_cuda_add_rmsnorm_q8(float *x, const float *delta, const int32_t *rows, int write_back,
                                     const float *w, void *out, int T, int D, float eps, uint8_t *xq, float *sa,
                                     int stat, float in_scale, const float *dsa, const float *dsw, int pdl,
                                     cudaStream_t st);
/* The same with out in adt (bf16, f16 or f32; D % 32 == 0, D <= 32768, no `rows` with
 * write_back), also writing the rows' int8 GEMV input (issue 16): xq [T][D] (4-byte aligned), xd
 * [T][D / 32], xs [T][D / 16], the bits kiln_cuda_quantize_x(xq, xd, xs, out, adt, T, D) writes. */
cudaError_t kiln_cuda_add_rmsnorm_i8(float *x, const float *delta, const int32_t *rows, int write_back,
                                     const float *w, void *out, kiln_dtype adt, int T, int D, float eps, int8_t *xq,
                                     float *xd, float *xs, int pdl, cudaStream_t st);

/* RoPE on q and k, then K and V into the pool:
 *   qkv: [T][(H + 2 KV) * hd] f32 (q | k | v per row); q and k are rotated in place;
 *   pool (bf16) of one layer at `layer_base` = kiln_kv_offset(layer, 0, 0, 0, 0):
 *     K of row t, head h -> layer_base + ((blk * 2 + 0) * KV + h) * bs * hd + off * hd,
 *     blk = slots[t] / bs, off = slots[t] % bs; V likewise with 1.
 * Angles as the CPU: inv_freq = 1 / theta^(2i/hd), angle, sin, cos and rotation in double. */
cudaError_t kiln_cuda_rope_kv(float *qkv, const int32_t *pos, const int64_t *slots, uint16_t *pool_layer,
                              int T, int H, int KV, int hd, int block_size, double theta, int interleaved,
                              int pdl, cudaStream_t st);
/* One layer's KV pool as the kernels read it: bf16 elements, or (f8) e4m3 codes of value / scale
 * (the FP8 KV cache, docs/fp8.md: per-layer K and V scales, 1.0 when the checkpoint has none).
 * The _ex launchers take it; the others are the bf16 pool with scales 1. */
typedef struct kiln_cuda_kv {
    void *pool;
    int f8;
    float k_scale, v_scale;
    int window; /* the layer's attention window (model.h kiln_layer_weights.window; 0 = none): the
                 * attention kernels' query at p reads keys max(0, p - window + 1) .. p only, and
                 * never the block-table entries of the blocks below (the engine may have released
                 * them: null block 0) */
} kiln_cuda_kv;
/* An activation's int8 GEMV input blocks (issue 16), the format of kiln_cuda_quantize_x (qlinear.cu)
 * for x [T][K]: xq [T][K] int8, xd [T][K / 32] scales, xs [T][K / 16] half sums. A producer that
 * takes one (may be NULL: none) writes the blocks of its stored output beside it, the bits
 * kiln_cuda_quantize_x would write on that output. */
typedef struct kiln_cuda_q8_blocks {
    int8_t *xq;
    float *xd, *xs;
} kiln_cuda_q8_blocks;
cudaError_t kiln_cuda_rope_kv_ex(float *qkv, const int32_t *pos, const int64_t *slots, const kiln_cuda_kv *kv, int T,
                                 int H, int KV, int hd, int block_size, double theta, int interleaved, int pdl,
                                 cudaStream_t st);
/* kiln_cuda_rope_kv_ex with the model's frequencies: inv_freq [hd / 2] f64 on the device
 * (kiln_rope_inv_freq of rope.c, the CPU's table: RoPE scaling, GGUF rope_freqs; NULL = theta's
 * default 1 / theta^(2i/hd)) and mscale, the cos / sin multiplier (YaRN's attention factor, 1 =
 * none), applied as the CPU: cs = cos(a) * mscale in double, then the rotation. ysa [T], ysw
 * [(H + 2 KV) hd] (both or neither): qkv holds cuBLASLt FP8's unscaled sums, scaled on the way in
 * as kiln_cuda_fp8_scale_rows would have (same bits; q and k written back scaled and rotated). */
cudaError_t kiln_cuda_rope_kv_tab(float *qkv, const int32_t *pos, const int64_t *slots, const kiln_cuda_kv *kv, int T,
                                  int H, int KV, int hd, int block_size, double theta, const double *inv_freq,
                                  double mscale, int interleaved, const float *ysa, const float *ysw, int pdl,
                                  cudaStream_t st);
/* The factors of kiln_cuda_rope_kv_tab's rotation once for a step's rows: cs [T][hd / 2][2] f64
 * (16-byte aligned) = (cos(a) mscale, sin(a) mscale) at a = pos[t] inv_freq[i], the same bits;
 * kiln_cuda_rope_kv_cs then rotates with them (every layer of the step: the model's RoPE is the
 * same in each), with the same results as kiln_cuda_rope_kv_tab. */
cudaError_t kiln_cuda_rope_cs(double *cs, const int32_t *pos, int T, int hd, double theta, const double *inv_freq,
                              double mscale, cudaStream_t st);
cudaError_t kiln_cuda_rope_kv_cs(float *qkv, const int32_t *pos, const int64_t *slots, const kiln_cuda_kv *kv, int T,
                                 int H, int KV, int hd, int block_size, const double *cs, int interleaved,
                                 const float *ysa, const float *ysw, int pdl, cudaStream_t st);
/* Qwen2 / Qwen3 before RoPE, in place on qkv [T][(H + 2 KV) * hd] f32 (rope_kv.cu):
 *   bias (or NULL): [(H + 2 KV) * hd] f32 (bq | bk | bv), added to every row;
 *   q_norm, k_norm (or both NULL): [hd] f32, RMSNorm over each q head / k head with weight
 *   q_norm / k_norm: w * (x * (1 / sqrtf(mean(x^2) + eps))), the sum of squares in the CPU's
 *   order (ops.c sum_squares: 16 partial sums, then a halving tree), so the bits match. */
cudaError_t kiln_cuda_qk_prep(float *qkv, const float *bias, const float *q_norm, const float *k_norm, int T, int H,
                              int KV, int hd, float eps, int pdl, cudaStream_t st);

/* Causal GQA attention over the paged pool for a ragged batch, split over the context
 * (attention.cu). Row t belongs to sequence row_seq[t]; its query at position pos[t] attends to
 * positions 0..pos[t] through block_table[seq][max_blocks] of the layer's pool.
 *   q: row t head h at q + t * q_stride + h * hd (f32, RoPE applied); out: [T][H * hd] in adt.
 *   split_w (the minimum window) / max_splits from kiln_cuda_attention_split_width();
 *   scratch: [T][H][max_splits][hd + 2] f32. */
int kiln_cuda_attention_split_width(int *max_splits);
/* resident pass-1 blocks per SM for (hd, G) (occupancy query capped by target t's shared memory,
 * t NULL: the device's; 4 when unknown) */
int kiln_cuda_attention_blocks_per_sm(int hd, int G, const kiln_cuda_target *t);
/* cudaSuccess when this build has code the current device runs (a kernel's attributes: the PTX
 * architecture the code was compiled from, e.g. 80 for a compute_80 PTX build JIT-compiled on an
 * H100, and the SASS it runs as), else cudaErrorNoKernelImageForDevice /
 * cudaErrorUnsupportedPtxVersion (target.c) */
cudaError_t kiln_cuda_image_check(int *ptx_version, int *binary_version);
cudaError_t kiln_cuda_attention(void *out, kiln_dtype adt, const float *q, int q_stride,
                                const uint16_t *pool_layer, const int32_t *pos, const int32_t *row_seq,
                                const int32_t *block_table, int max_blocks, int T, int H, int KV, int hd,
                                int block_size, int split_w, int max_splits, float *scratch, int pdl, cudaStream_t st);

/* Tensor-core causal GQA attention for the query tiles of prefill chunks (attention_prefill.cu).
 * tiles: device array [n_tiles][2] of (first row, n rows) runs of rows of one sequence with
 * consecutive positions, n <= kiln_cuda_prefill_tile_rows(H, KV) = KILN_PREFILL_QROWS / G
 * (G = H / KV; one CTA packs the G heads of a group x those rows into 64 mma rows). row_seq,
 * pos, block table, q and out as kiln_cuda_attention; only the rows named by tiles are written,
 * the same values for a row in any tile. Needs hd 64 or 128, G a power of two <= 64, q_stride
 * even, q 8-byte aligned; anything else returns cudaErrorInvalidValue (keep the split kernel).
 * No scratch. Each row's result matches kiln_cuda_attention within bf16 rounding (q and P are
 * rounded to bf16 for the tensor cores), not bit for bit. */
#define KILN_PREFILL_QROWS 64
int kiln_cuda_prefill_tile_rows(int H, int KV); /* rows per tile, 0 when (H, KV) is unsupported */
cudaError_t kiln_cuda_attention_prefill(void *out, kiln_dtype adt, const float *q, int q_stride,
                                        const uint16_t *pool_layer, const int32_t *pos, const int32_t *row_seq,
                                        const int32_t *block_table, int max_blocks, int H, int KV, int hd,
                                        int block_size, const int32_t *tiles, int n_tiles, int pdl, cudaStream_t st);
/* Decode rows on tensor cores, split over the context (attention_prefill.cu,
 * attention_decode_kernel: the G <= 16 heads of a KV group are the MMA rows, the 4 warps split
 * each key tile): every row t < T is one query position; its context is cut into windows of a
 * multiple of 64 positions (at
 * most max_splits, at least min_w positions each, as the split kernel cuts them); grid (T, KV,
 * max_splits) writes the windows' states to scratch [T][H][max_splits][hd + 2] and
 * kiln_cuda_attention_combine merges them into out. Same argument rules as
 * kiln_cuda_attention_prefill, and G = H / KV <= 16. kiln_cuda_attention_decode_tc_blocks_per_sm: resident CTAs per
 * SM of the pass-1 kernel for G heads a group on a bf16 (f8 0) or FP8 pool (occupancy query capped by target t's shared memory, t NULL: the
 * device's; 1 when unknown). kiln_cuda_attention_tc_smem: the dynamic shared memory both
 * tensor-core kernels ask (0 for an hd they do not take): the backend keeps them off a target
 * whose smem_per_block is below it (the split kernel then takes every row). */
cudaError_t kiln_cuda_attention_decode_tc(void *out, kiln_dtype adt, const float *q, int q_stride,
                                          const uint16_t *pool_layer, const int32_t *pos, const int32_t *row_seq,
                                          const int32_t *block_table, int max_blocks, int T, int H, int KV, int hd,
                                          int block_size, int min_w, int max_splits, float *scratch, int pdl, cudaStream_t st);
int kiln_cuda_attention_decode_tc_blocks_per_sm(int hd, int G, int f8, const kiln_cuda_target *t);
/* windows per row of a split decode pass: n CTAs a window (rows x KV heads) on C resident CTAs,
 * at most cap (attention_prefill.cu has the rule) */
int kiln_cuda_wave_splits(int64_t n, int64_t C, int cap);
size_t kiln_cuda_attention_tc_smem(int hd);
/* Pass 2 of the split attention alone: merge the windows (rounded to wr positions) of rows
 * [0, T) from scratch [T][H][max_splits][hd + 2] into out [T][H * hd] (attention.cu). */
/* the same three on a kiln_cuda_kv pool (bf16, or FP8 codes: K and V decoded with their scales;
 * the split kernel as the CPU, code * scale in f32; the tensor-core kernels run their MMAs in f16 on
 * the codes' exact f16 values, staged in shared memory (prefill) or converted in registers
 * (decode, G <= 8), with K's scale in the score scale and V's on the output) */
cudaError_t kiln_cuda_attention_ex(void *out, kiln_dtype adt, const float *q, int q_stride, const kiln_cuda_kv *kv,
                                   const int32_t *pos, const int32_t *row_seq, const int32_t *block_table,
                                   int max_blocks, int T, int H, int KV, int hd, int block_size, int split_w,
                                   int max_splits, float *scratch, const kiln_cuda_q8_blocks *q8, int pdl,
                                   cudaStream_t st);
cudaError_t kiln_cuda_attention_prefill_ex(void *out, kiln_dtype adt, const float *q, int q_stride,
                                           const kiln_cuda_kv *kv, const int32_t *pos, const int32_t *row_seq,
                                           const int32_t *block_table, int max_blocks, int H, int KV, int hd,
                                           int block_size, const int32_t *tiles, int n_tiles, int pdl,
                                           cudaStream_t st);
cudaError_t kiln_cuda_attention_decode_tc_ex(void *out, kiln_dtype adt, const float *q, int q_stride,
                                             const kiln_cuda_kv *kv, const int32_t *pos, const int32_t *row_seq,
                                             const int32_t *block_table, int max_blocks, int T, int H, int KV, int hd,
                                             int block_size, int min_w, int max_splits, float *scratch,
                                             const kiln_cuda_q8_blocks *q8, int pdl, cudaStream_t st);
cudaError_t kiln_cuda_attention_combine(void *out, kiln_dtype adt, const float *scratch, const int32_t *pos, int T,
                                        int H, int hd, int min_w, int max_splits, int wr, int pdl, cudaStream_t st);
/* the same for rows of a windowed layer (window > 0: the windows cut positions
 * max(0, pos - window + 1) .. pos, as every pass-1 kernel does for a kiln_cuda_kv with a window).
 * q8 (may be NULL; needs hd % 32 == 0: a warp's 32 dims are one block): also out's int8 GEMV
 * blocks (K = H hd), the bits kiln_cuda_quantize_x(out, adt, T, H hd) writes; kiln_cuda_attention_ex
 * and kiln_cuda_attention_decode_tc_ex pass theirs to it (issue 16: the o projection's input). */
cudaError_t kiln_cuda_attention_combine_win(void *out, kiln_dtype adt, const float *scratch, const int32_t *pos,
                                            int T, int H, int hd, int min_w, int max_splits, int wr, int window,
                                            const kiln_cuda_q8_blocks *q8, int pdl, cudaStream_t st);
/* Host: cut every sequence with >= min_rows rows (seq_q_start [n_seqs + 1]) into tiles of
 * tile_rows rows (the last one shorter); whole sequences only, while max_tiles allows. Writes
 * tiles[n][2] and covered[t] (0/1) for every row t < seq_q_start[n_seqs]; returns n_tiles.
 * At most T / tile_rows + n_seqs tiles. */
int kiln_cuda_prefill_tiles(const int32_t *seq_q_start, int n_seqs, int min_rows, int tile_rows, int32_t *tiles,
                            int max_tiles, unsigned char *covered);

/* kiln_cuda_swiglu_in with bf16 out, also writing pmax [T][kiln_cuda_swiglu_pmax_parts(n)]: partial
 * maxima of |out| per row for kiln_cuda_fp8_quant_pmax. n % 8 == 0, gu and out 16-byte aligned.
 * gsa [T], gsw [2n] (both or neither, gsw 16-byte aligned): gu holds cuBLASLt FP8's unscaled sums
 * (f32, or bf16 for gate|up: cuda_backend.c), scaled here as kiln_cuda_fp8_scale_rows would scale
 * their f32 values (same bits). */
int kiln_cuda_swiglu_pmax_parts(int n);
cudaError_t kiln_cuda_swiglu_pmax(void *out, const void *gu, kiln_dtype gdt, int T, int n, float *pmax,
                                  const float *gsa, const float *gsw, int pdl, cudaStream_t st);
/* out[t][i] = adt(silu(gu[t][i]) * gu[t][n + i]): gu [T][2n] f32 (gate | up), out [T][n]. */
cudaError_t kiln_cuda_swiglu(void *out, kiln_dtype adt, const float *gu, int T, int n, int pdl, cudaStream_t st);
/* the same with gu of dtype gdt (f32, f16 or bf16) */
cudaError_t kiln_cuda_swiglu_in(void *out, kiln_dtype adt, const void *gu, kiln_dtype gdt, int T, int n,
                                int pdl, cudaStream_t st);
/* kiln_cuda_swiglu_in (adt f32, f16 or bf16) also writing the down projection's int8 GEMV input
 * (issue 16): xq [T][n] (8-byte aligned), xd [T][n / 32], xs [T][n / 16], the bits
 * kiln_cuda_quantize_x(xq, xd, xs, out, adt, T, n) writes. n % 32 == 0, T < 65536, gu and out
 * 16-byte aligned. */
cudaError_t kiln_cuda_swiglu_i8(void *out, kiln_dtype adt, const void *gu, kiln_dtype gdt, int T, int n, int8_t *xq,
                                float *xd, float *xs, int pdl, cudaStream_t st);

/* y[t][n] = sum_k x[t][k] * W[n][k] for t < T <= KILN_GEMV_MAX_ROWS (gemv.cu): W [N][K] bf16 or
 * f16 (wdt), x [T][K] same dtype, y [T][N] f32. K % 8 == 0; x and W 16-byte aligned (row starts
 * are then aligned too), y 4-byte aligned; T >= 1, N >= 1. Deterministic: a fixed reduction
 * order that depends only on K (not on T or the launch), f32 accumulation, so row t has the same
 * bits for any T. Returns cudaErrorInvalidValue for shapes (or pointers) it does not take.
 * The _ex form fixes the rows per warp (1, 2 or 4; 0 = chosen by T and N as kiln_cuda_gemv
 * does) for benchmarks; the result bits never depend on it. */
#define KILN_GEMV_MAX_ROWS 8
cudaError_t kiln_cuda_gemv(float *y, const void *x, const void *w, kiln_dtype wdt, int T, int N, int K,
                           cudaStream_t st);
cudaError_t kiln_cuda_gemv_ex(float *y, const void *x, const void *w, kiln_dtype wdt, int T, int N, int K,
                              int rows_per_warp, cudaStream_t st);
/* the rows per warp kiln_cuda_gemv picks for (T, N) on n_sm SMs (auto uses the device's) */
int kiln_cuda_gemv_pick_rows(int T, int N, int n_sm);
/* gate|up with SwiGLU fused on the GEMV: W = [gate; up] [2F][K], act[t][j] = silu(gate_j . x_t)
 * (up_j . x_t) in adt (f32, bf16, f16; 4-byte aligned); a warp runs rows j and F + j. Each sum
 * has kiln_cuda_gemv's bits and the product is kiln_cuda_swiglu's: the same bits as the two
 * calls. The other limits are kiln_cuda_gemv's (F for N). */
cudaError_t kiln_cuda_gemv_glu(void *act, kiln_dtype adt, const void *x, const void *w, kiln_dtype wdt, int T, int F,
                               int K, cudaStream_t st);

/* GGUF-quantized weights (qlinear.cu; decoding in qdecode.cuh). W [N][K] in blocks of wdt (Q8_0,
 * Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K), 16-byte aligned, with 16 readable bytes after its
 * last block; K a multiple of the block size and of 32.
 * kiln_cuda_quantize_x: x [T][K] (bf16, f16 or f32) -> xq [T][K] int8 (16-byte aligned),
 *   xd [T][K / 32] block scales (amax / 127), xs [T][K / 16] d * sum(q) per 16-element half
 *   (cuda_dev.cuh kiln_q8_block; kiln_cuda_add_rmsnorm_i8 and kiln_cuda_swiglu_i8 write the same
 *   bits beside their output).
 * kiln_cuda_qgemv_q8: y[t][n] (row stride ldy >= N, f32) = sum_k (d q)[t][k] W[n][k] for
 *   1 <= T <= KILN_QGEMV_MAX_ROWS from kiln_cuda_quantize_x's blocks; a fixed summation order that
 *   depends on K only (row t has the same bits for any T, rows per warp or grid);
 *   rows_per_warp 0 (by N and n_sm), 1 or 2.
 * kiln_cuda_qdequant: out [N][K] (bf16, f16 or f32, 16-byte aligned) = the weights, each computed
 *   exactly as the CPU's scalar dequantization (format/quant.c) and then rounded to odt.
 * kiln_cuda_qembed: kiln_cuda_embed for a quantized table emb [vocab][D].
 * Anything else: cudaErrorInvalidValue. */
#define KILN_QGEMV_MAX_ROWS 64
/* the backend's default switch to dequantization + cuBLASLt (H200, Devstral q4_k_m dummy: batch 16
 * 46.1 ms a step on the GEMV in launches of 8 rows against 39.8 ms dequantized) */
#define KILN_QGEMV_DEFAULT_ROWS 8
cudaError_t kiln_cuda_quantize_x(int8_t *xq, float *xd, float *xs, const void *x, kiln_dtype xdt, int T, int K,
                                 cudaStream_t st);
cudaError_t kiln_cuda_qgemv_q8(float *y, int ldy, const int8_t *xq, const float *xd, const float *xs, const void *w,
                               kiln_dtype wdt, int T, int N, int K, int rows_per_warp, int n_sm, cudaStream_t st);
/* kiln_cuda_qmma: the same product on tensor cores for 1 <= T <= KILN_QMMA_MAX_ROWS rows of x
 *   [T][K] bf16 (16-byte aligned), the weights dequantized (exactly, then rounded to bf16) tile by
 *   tile in shared memory; y f32 with row stride ldy >= N. Row t has the same bits for any T. */
#define KILN_QMMA_MAX_ROWS 64
cudaError_t kiln_cuda_qmma(float *y, int ldy, const void *x, kiln_dtype xdt, const void *w, kiln_dtype wdt, int T,
                           int N, int K, cudaStream_t st);
/* kiln_cuda_qmma_reg (qmma_reg.cu): the same product for 1 <= T <= KILN_QMMA_MAX_ROWS rows of x
 *   [T][K] bf16 on tensor cores with the weights dequantized in registers (Q4_K, Q6_K, Q8_0; K a
 *   multiple of 256: kiln_cuda_qmma_reg_supports), x 16-byte aligned; Q8_0 weights are
 *   kiln_cuda_qdequant's bf16, Q4_K / Q6_K use their unit scale and offset rounded to bf16 (the
 *   file's note); nt n-tiles of 8 weight rows a warp (1, 2, 4; 0: by N and n_sm); variant 0, or 1
 *   for registers capped at 4 CTAs an SM (a measurement; same bits). Row t has the same bits for
 *   any T at the same nt (capped at 2 for Q6_K, Q8_0 and T > 32). */
int kiln_cuda_qmma_reg_supports(kiln_dtype wdt, int K);
/* where the backend uses it (H200, Devstral q4_k_m dummy, decode tok/s, the int8 GEMV up to 8 rows
 * and qmma above -> qmma_reg at every row count, two calls: batch 1 145 -> 92, 4 297 -> 353,
 * 8 370 -> 649, 16 573 -> 999, 64 1473 -> 910): from 4 rows (below, the int8 GEMV when it is on)
 * up to 16 (above, qmma). With qmma_x (the split-K kernel, twentieth session, H100, same call,
 * up to 16 rows -> up to 64): Q4_K_M batch 24 742 -> 1,106 tok/s, 32 989 -> 1,466, 48 1,159 -> 1,283,
 * 64 1,537 -> 1,697; Q6_K 32 849 -> 1,260, 64 1,384 -> 1,617; Q8_0 32 1,024 -> 1,182 but 48
 * 1,183 -> 1,111 and 64 1,575 -> 1,481, so Q8_0 segments leave it above 32 rows. From 3 rows for
 * Q4_K / Q6_K and 5 for Q8_0 (twenty-first session): the int8 GEMV at 3-4 rows runs its 4-row
 * form, which the kernel bench (H100, twentieth session's call G, same call) put behind qmma_x at 4
 * rows for Q4_K (gate|up 145.8 vs 100.3 us, down 134.3 vs 75.9) and Q6_K (196.9 vs 172.0, 171.4
 * vs 139.9), ahead of it for Q8_0 (gate|up 176.1 vs 195.1, down 109.4 vs 134.5, qkv 20.3 vs 28.2:
 * Q8_0 b4 decoded at 0.77x llama.cpp's, below its b2 x 2); at 8 rows qmma_x is ahead for all three.
 * Q8_0 from 3 rows too since qmma_x reads Q8_0 in 16-byte loads (twenty-second session, H100, the
 * kernel bench of call C, same call: at 4 rows qmma_x gate|up 141.8 us vs the GEMV's 175.5, down 90.3
 * vs 110.6, LM head 276.0 vs 325.9; qkv 23.3 vs 20.0 and o 18.4 vs 14.7 the other way; a layer
 * 273.8 vs 320.8 us). */
#define KILN_QREG_MIN_ROWS 3
#define KILN_QREG_Q8_0_MIN_ROWS 3
#define KILN_QREG_DEFAULT_MAX_ROWS 64
#define KILN_QREG_Q8_0_MAX_ROWS 32
#define KILN_QREG_DEFAULT_VARIANT 0 /* the backend's qmma_x variant (kiln_cuda_options.qreg_variant) */
#define KILN_QREG_VARIANT_MAX 63    /* every QX_V_* bit of qmma_reg.cu */
/* wk (may be NULL): with nt 0, the kernel that stages x in shared memory and splits K over CTAs
 * (qmma_reg.cu's qmma_x note; its own bits, the same for every T of one class: 1..16, 17..32,
 * 33..64; variant 0..63: bits 1 / 2 its register cap and grid, bits 4 / 8 an L2 prefetch distance,
 * bit 16 two n-tiles a warp, bit 32 the x stages' old fill order (qmma_reg.cu's
 * QX_V_*), measurements only: the backend passes 0):
 * part [>= floats] f32 for the parts' sums, cnt [>= counters] zeroed once (each launch leaves
 * them zero), sized by kiln_cuda_qmma_reg_work for the SM count the launches pass; one launch
 * at a time uses them (stream order). NULL: the kernel above at every T. */
typedef struct {
    float *part;
    unsigned *cnt;
    size_t floats, counters;
} kiln_cuda_qreg_work;
void kiln_cuda_qmma_reg_work(int n_sm, size_t *floats, size_t *counters);
cudaError_t kiln_cuda_qmma_reg(float *y, int ldy, const void *x, kiln_dtype xdt, const void *w, kiln_dtype wdt, int T,
                               int N, int K, int nt, int variant, int n_sm, const kiln_cuda_qreg_work *wk,
                               cudaStream_t st);
cudaError_t kiln_cuda_qdequant(void *out, kiln_dtype odt, const void *w, kiln_dtype wdt, int N, int K,
                               cudaStream_t st);
cudaError_t kiln_cuda_qembed(float *x, const void *emb, kiln_dtype edt, const int32_t *ids, const int32_t *prev_row,
                             const int32_t *prev_tok, int T, int D, cudaStream_t st);

/* FP8 E4M3 weights (fp8.cu; the math: docs/fp8.md, the layouts: fp8.cu's note).
 * kiln_cuda_fp8_quant_x: xq [T][K] e4m3 codes and sa [T][ceil(K / gs)] scales of x [T][K] (bf16,
 *   f16, f32): per row and group of gs columns the dynamic scale kiln_fp8_act_scale(amax) (stat 0)
 *   or in_scale (stat 1), codes e4m3(x / s) as the CPU's kiln_fp8_act_q.
 * kiln_cuda_fp8_mma: y [T][ldy] f32 (columns 0..N-1) = the W8A8 (a8: x = xq codes, scales sa [T][G];
 *   needs has_fp8_mma: sm_89+) or weight-only (x bf16 [T][K]) product with W [N][K] e4m3 and sw
 *   ([N] when G == 1, else [N][G] with G = ceil(K / 128)); 1 <= T <= KILN_FP8_MMA_MAX_ROWS,
 *   K % 16 == 0, w and x 16-byte aligned; warps a CTA 4 or 8 (0: by N, T and n_sm), K cut into
 *   parts 1, 2 (T <= 4) or 4 (T <= 2) summed at the end (K % (64 parts) == 0, G == 1; 0: by T, N,
 *   K and n_sm); the sums' order depends on warps, parts and T's n-tile count 1, 2, 4, 8.
 * kiln_cuda_fp8_dequant: out [N][K] (bf16 or f16) = e4m3(w) sw rounded once.
 * Anything else: cudaErrorInvalidValue. */
#define KILN_FP8_MMA_MAX_ROWS 64
/* the backend's default: more rows go to cuBLASLt FP8 (H200, Devstral shapes, same call: at 8 rows
 * the product 11.0 / 8.6 / 86.9 / 47.1 us for qkv / o / gate|up / down against cuBLASLt's 13.6 /
 * 10.9 / 87.3 / 48.6; at 16 rows 17.1 / 13.1 / 124.0 / 78.9 against 14.2 / 11.1 / 90.7 / 48.8) */
#define KILN_FP8_MMA_DEFAULT_ROWS 8
cudaError_t kiln_cuda_fp8_quant_x(uint8_t *xq, float *sa, const void *x, kiln_dtype xdt, int T, int K, int gs,
                                  int stat, float in_scale, cudaStream_t st);
/* The same per-row quantization (gs = K, dynamic scale) of bf16 x [T][K] whose producer left P
 * partial maxima of |x| per row in pmax [T][P] (kiln_cuda_swiglu_pmax): no pass over the row for
 * its maximum. Same bytes as kiln_cuda_fp8_quant_x. K % 8 == 0, x 16-byte aligned. */
/* Test: the kernels' e4m3 conversion (cuda_dev.cuh kiln_e4m3x2, the cvt instruction on sm_89+)
 * against util/fp8.h's over every non-NaN f32: bad [2] on the device = (values that differ, the
 * lowest such bit pattern or 0xffffffff). */
cudaError_t kiln_cuda_e4m3_check(unsigned long long *bad, cudaStream_t st);
cudaError_t kiln_cuda_fp8_quant_pmax(uint8_t *xq, float *sa, const void *x, const float *pmax, int P, int T, int K,
                                     int pdl, cudaStream_t st);
cudaError_t kiln_cuda_fp8_mma(float *y, int ldy, const uint8_t *w, const float *sw, int G, const void *x,
                              const float *sa, int a8, int T, int N, int K, int warps, int parts, int n_sm,
                              int has_fp8_mma, cudaStream_t st);
/* y[t][n] *= sa[t] sw[n] for t < T, n < N (y [T][ldy] f32: cuBLASLt FP8's unscaled sums) */
cudaError_t kiln_cuda_fp8_scale_rows(float *y, int ldy, const float *sa, const float *sw, int T, int N, cudaStream_t st);
cudaError_t kiln_cuda_fp8_dequant(void *out, kiln_dtype odt, const uint8_t *w, const float *sw, int G, int N, int K,
                                  cudaStream_t st);

/* The same product on tensor cores for T <= KILN_SKINNY_MAX_ROWS rows (skinny.cu): W [N][K]
 * bf16 or f16 (wdt), x [T][K] same dtype, y [T][N] f32; K % 8 == 0, x and W 16-byte aligned, y
 * 4-byte aligned, 1 <= T <= 16, 1 <= N <= 2^30; otherwise cudaErrorInvalidValue. A pure stream
 * of W (mma.sync m16n8k16, f32 accumulation) meant for decode batches of 3..16 rows. The
 * reduction order depends only on K: row t has the same bits for any T (not the same bits as
 * kiln_cuda_gemv or cuBLASLt). Rows t >= T of y are not written. */
#define KILN_SKINNY_MAX_ROWS 16
cudaError_t kiln_cuda_gemm_skinny(float *y, const void *x, const void *w, kiln_dtype wdt, int T, int N, int K,
                                  cudaStream_t st);
/* variant 1..3 fixes the register / occupancy variant (0 = chosen from T, N, K as above), for
 * benchmarks; the result bits never depend on it. */
cudaError_t kiln_cuda_gemm_skinny_ex(float *y, const void *x, const void *w, kiln_dtype wdt, int T, int N, int K,
                                     int variant, cudaStream_t st);
/* the variant variant 0 picks for (T, N, K) on n_sm SMs (auto uses the device's) */
int kiln_cuda_skinny_pick_variant(int T, int N, int K, int n_sm);

/* The same product for WIDE matrices (skinny_wide.cu: cp.async shared-memory pipeline, 128
 * output rows and all of K per tile, persistent grid; meant for gate|up 65536 x 5120 and the LM
 * head 131072 x 5120): W [N][K] bf16 or f16 (wdt), x [T][K] same dtype, y [T][N] f32; K % 64 == 0,
 * K >= 64, x and W 16-byte aligned, y 4-byte aligned, 1 <= T <= 16, 1 <= N <= 2^30; otherwise
 * cudaErrorInvalidValue. The reduction order depends only on K: row t has the same bits for any T
 * (not the same bits as kiln_cuda_gemm_skinny, kiln_cuda_gemv or cuBLASLt). Rows t >= T of y are
 * not written. */
#define KILN_WIDE_MAX_ROWS 16
cudaError_t kiln_cuda_gemm_wide(float *y, const void *x, const void *w, kiln_dtype wdt, int T, int N, int K,
                                int pdl, cudaStream_t st);
/* variant 1..KILN_WIDE_VARIANTS fixes the pipeline shape (0 = KILN_WIDE_DEFAULT_VARIANT where it
 * fits the device's shared memory per block, else KILN_WIDE_SMALL_VARIANT), for benchmarks and
 * the backend's choice per target; the bits never depend on it. */
#define KILN_WIDE_VARIANTS 7
#define KILN_WIDE_DEFAULT_VARIANT 6
#define KILN_WIDE_SMALL_VARIANT 7 /* 90 KB: the targets with 99 KB per block (sm_86, sm_89) */
/* dynamic shared memory variant (0: the default) asks at T rows and K */
size_t kiln_cuda_gemm_wide_smem(int variant, int T, int K);
/* the variant to run on a target with smem_per_block: variant (0: the default) when it fits at
 * 16 rows, else KILN_WIDE_SMALL_VARIANT when that fits, else 0 (the kernel does not fit) */
int kiln_cuda_gemm_wide_fit(int variant, int K, size_t smem_per_block);
cudaError_t kiln_cuda_gemm_wide_ex(float *y, const void *x, const void *w, kiln_dtype wdt, int T, int N, int K,
                                   int variant, int pdl, cudaStream_t st);
/* gate|up with SwiGLU fused: W = [gate; up] [2F][K], act[t][j] = silu(gate_j . x_t) (up_j . x_t)
 * in adt (f32, bf16, f16; 4-byte aligned). Every gate / up sum has the bits of
 * kiln_cuda_gemm_wide's, and the product is kiln_cuda_swiglu's: the same bits as the two calls.
 * The other limits are kiln_cuda_gemm_wide's (F for N). */
cudaError_t kiln_cuda_gemm_wide_glu(void *act, kiln_dtype adt, const void *x, const void *w, kiln_dtype wdt, int T,
                                    int F, int K, int variant, int pdl, cudaStream_t st);

/* dst[i] = dt(kiln_dummy_value(seed, tensor_index, i)) for i in [0, n): the formula of
 * model.h computed on the device, bit-identical to the host (dt: f32, f16 or bf16).
 * cols = the tensor's shape[1] (0 for a 1-D tensor). */
cudaError_t kiln_cuda_dummy_fill(void *dst, kiln_dtype dt, int64_t n, uint64_t seed, int tensor_index,
                                 int64_t cols, cudaStream_t st);
/* the same for a GGUF-quantized tensor of nbytes bytes whose rows have cols elements: byte i is
 * kiln_dummy_qbyte(kiln_dummy_key(seed, tensor_index), dt, i, cols) (model/dummy_quant.h) */
cudaError_t kiln_cuda_dummy_fill_q(void *dst, kiln_dtype dt, int64_t nbytes, uint64_t seed, int tensor_index,
                                   int64_t cols, cudaStream_t st);
/* online FP8 of the dense dummy (--load-format dummy --quantization fp8): codes
 * e4m3(kiln_dummy_value / scale) of n elements in rows of cols */
cudaError_t kiln_cuda_dummy_fill_fp8(uint8_t *dst, int64_t n, uint64_t seed, int tensor_index, int64_t cols,
                                     float scale, cudaStream_t st);

/* A hint, l2_prefetch.cu: bring [p, p + bytes) into L2 (mode 1: bulk prefetch on sm_90, else
 * per line; 2: per 128-byte line; 3: per line, evict_last), on at most n_sm / 2 CTAs. p 16-byte
 * aligned; bytes rounded down to a multiple of 16. */
cudaError_t kiln_cuda_l2_prefetch(const void *p, int64_t bytes, int mode, int n_sm, cudaStream_t st);

/* dst[i] = bits (a 16-bit or 32-bit pattern) for poisoning buffers in tests and debug mode. */
cudaError_t kiln_cuda_fill_u32(uint32_t *dst, uint32_t bits, int64_t n, cudaStream_t st);

/* ---- sampling (sample.cu): the semantics of kiln_sample (engine/sampler.c) on the device ----
 * One row of logits per sequence that samples this step. Per-row parameters (a device array): */
#define KILN_CUDA_MAX_TOP 20
#define KILN_CUDA_SAMPLE_MAX_VOCAB (1 << 30)
typedef struct kiln_cuda_sample_row {
    float temperature, top_p, min_p, repetition_penalty, presence_penalty, frequency_penalty;
    int top_k;        /* 0 = off */
    int n_top;        /* raw top logprobs wanted, 0..KILN_CUDA_MAX_TOP */
    int want_logprob; /* raw logprob of the chosen token */
    int slot;         /* row of the penalty tables; -1 = no penalties (and no count update) */
    int bias_start, n_bias; /* into bias_ids / bias_values (applied in list order) */
    int supp_start, n_supp; /* into supp_ids: ids forced to -inf (min_tokens) */
    int mask;         /* 1 + the row of masks whose set bits are the ids allowed (after penalties,
                       * bias and suppression); 0 = none (a zeroed row) */
    int pad_;
    uint64_t seed, position; /* Philox key / counter: kiln_uniform(seed, position) */
} kiln_cuda_sample_row;

/* Sample n rows: logits [n][V] f32 (not modified); work [n][V] f32 scratch
 * (kiln_cuda_sample_work_bytes; afterwards a sampled row holds its temperature-scaled kept
 * candidates and -inf elsewhere, a greedy row its processed logits).
 *   counts [slots][V] output-token counts, in_prompt [slots][V] (kiln_cuda_penalty_load);
 *   the chosen token of a row with slot >= 0 is added to counts[slot] (slots distinct within one
 *   call). out_tok [n]; out_logprob [n] (may be NULL; 0 unless want_logprob); out_top_ids /
 *   out_top_lp [n][KILN_CUDA_MAX_TOP] (may be NULL): the n_top best raw (id, logprob), logit
 *   desc, lowest id first on ties, entries past n_top = (-1, 0). masks [rows][mask_words] (may be
 *   NULL when no row has mask > 0): bit (id & 31) of word id >> 5 set = allowed. Only the rows'
 *   own values matter: a row gives the same bits alone or in any batch. */
size_t kiln_cuda_sample_work_bytes(int max_rows, int V);
cudaError_t kiln_cuda_sample(const float *logits, float *work, int n, int V, const kiln_cuda_sample_row *rows,
                             const int32_t *bias_ids, const float *bias_values, const int32_t *supp_ids,
                             const uint32_t *masks, int mask_words, int32_t *counts, const uint8_t *in_prompt,
                             int32_t *out_tok, float *out_logprob, int32_t *out_top_ids, float *out_top_lp,
                             cudaStream_t st);
/* Penalty tables: for each of n_init slots (slots[i]), zero its rows, then set
 * in_prompt[slot][t] = 1 for the prompt ids tokens[tok_start[i] .. tok_start[i] + n_prompt[i])
 * and count counts[slot][t] += 1 for the output ids up to tok_start[i + 1] (tok_start [n_init + 1]).
 * Ids outside [0, V) are ignored. */
cudaError_t kiln_cuda_penalty_load(int32_t *counts, uint8_t *in_prompt, int V, const int32_t *slots,
                                   const int32_t *tok_start, const int32_t *n_prompt, const int32_t *tokens,
                                   int n_init, cudaStream_t st);

#ifdef __cplusplus
}
#endif
#endif
