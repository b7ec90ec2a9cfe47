/* attention.h: the CPU backend's causal GQA attention over the paged KV pool, exported so that
 * other backends' attention tests can use it as their reference (with a kiln_cpu_ctx of their
 * own: {.isa = kiln_isa_best(), .pool = NULL} runs it on the calling thread).
 *
 * Shapes (T = n_tokens rows of one step, H = n_heads, KV = n_kv_heads, G = H / KV query heads
 * per KV head, hd = head_dim):
 *   q   [T][H * hd]  the step's queries (RoPE applied); head h of row t at q + t*H*hd + h*hd
 *   att [T][H * hd]  out: att[t][h] = sum_{lo_t <= j <= pos_t} softmax_j(q[t][h] . k_j / sqrt(hd)) v_j,
 *                    (lo_t = 0, or pos_t - window + 1 with a window), k_j, v_j the keys /
 *                    values of KV head h / G at position j of row t's
 *                    sequence, read from the pool through its block table:
 *                    kv + kiln_kv_offset(layout, layer, block_table[seq][j / bs], 0 (k) or 1 (v),
 *                    h / G, j % bs)
 *   kv               the pool, f32, kiln_kv_elems(layout) floats; every slot read must have been
 *                    written (positions 0..pos_t of each row's sequence); or kv8, an FP8 E4M3
 *                    pool of the same layout (one byte an element) with per-layer scales, or kv16,
 *                    an f16 / bf16 one (two bytes)
 *   positions [T], seq_q_start [n_seqs + 1] (rows of sequence i: seq_q_start[i] ..
 *   seq_q_start[i+1]-1), block_table [n_seqs][max_blocks_per_seq]: as in kiln_step
 *   scores  [kiln_pool_size(ctx->pool)][max(q_block, 1)][G][max_model_len] scratch; every
 *           position < max_model_len
 * Arithmetic: the ISA's kiln_attn_kernels (kernels.h) in a fixed order per (row, head): keys
 * and values in runs of consecutive slots of one block, a softmax per head, P.V in position
 * order. A row's result depends on nothing but its own q and its sequence's K/V: not on the
 * other rows, the thread count or the prefetch flag (bit-exact ragged batches, I5/I6).
 * No allocation. */
#ifndef KILN_CPU_ATTENTION_H
#define KILN_CPU_ATTENTION_H
#include "backend/cpu/kernels.h"
#include "step/step.h"

typedef struct kiln_cpu_attn_args {
    const float *kv;               /* the KV pool (f32) laid out by *layout */
    const kiln_kv_layout *layout;  /* n_kv_heads and head_dim must match the ones below */
    int layer;
    int n_tokens, n_seqs;          /* T rows; sequences */
    const int32_t *positions;      /* [T] position of each row in its sequence */
    const int32_t *seq_q_start;    /* [n_seqs + 1] first row of each sequence */
    const int32_t *block_table;    /* [n_seqs][max_blocks_per_seq] physical block ids */
    int max_blocks_per_seq;
    const float *q;                /* [T][n_heads * head_dim] */
    float *att;                    /* [T][n_heads * head_dim] out */
    int n_heads, n_kv_heads, head_dim;
    float *scores;                 /* [pool threads][max(q_block, 1)][n_heads / n_kv_heads][max_model_len] */
    int max_model_len;             /* the scores' row stride: positions must be below it */
    kiln_attn_kernels k;           /* the ISA's kernels (kiln_cpu_attn_lookup) */
    int prefetch;                  /* prefetch the next KV block (small steps); no effect on values */
    const uint8_t *kv8;            /* FP8 pool (layout->dtype KILN_KV_FP8_E4M3) instead of kv: E4M3
                                    * codes, real = kiln_e4m3_to_f32(code) * k_scale (v_scale);
                                    * each run of keys / values is decoded into kvbuf, then the same
                                    * kernels run on the decoded rows */
    const float *kv8_lut;          /* kv8: this layer's decode tables [2 (k, v)][256]:
                                    * lut[kv][code] = kiln_e4m3_to_f32(code) * (k_scale | v_scale),
                                    * the same f32 values as decoding and scaling each element */
    float *kvbuf;                  /* kv8 / kv16: [pool threads][block_size * head_dim] scratch */
    const uint16_t *kv16;          /* a 16-bit pool (layout->dtype KILN_KV_F16 or KILN_KV_BF16)
                                    * instead of kv: each run of keys / values is widened into
                                    * kvbuf (exact), then the same kernels run on it */
    int window;                    /* the layer's attention window (kiln_layer_weights.window): a row
                                    * at position p attends to max(0, p - window + 1) .. p; 0 = all */
    int q_block;                   /* query rows of one sequence that share each K/V read (the
                                    * scores scratch holds that many rows per thread); 0 or 1:
                                    * one row at a time. No effect on values. */
    void *amx;                     /* cpu.attn "bf16": [pool threads][amx_bytes] scratch, and every
                                    * item runs on AMX-BF16 tiles (attention_amx.c: q, k, v and the
                                    * probabilities in bfloat16, f32 sums; other bits than the f32
                                    * kernels, as batch-invariant); NULL: the ISA's f32 kernels */
    size_t amx_bytes;              /* kiln_cpu_attn_amx_bytes(G, q_block, head_dim, max_model_len) */
} kiln_cpu_attn_args;

/* the keys a row at position pos attends to: lo .. n-1 (the layer's window, if any) */
static inline void kiln_cpu_attn_row_range(const kiln_cpu_attn_args *a, int pos, int *lo, int *n) {
    *n = pos + 1;
    *lo = a->window > 0 && *n > a->window ? *n - a->window : 0;
}

/* The query block the backend uses: 16 rows (16 rows of a head reuse each K/V run from L1; more
 * gain little), fewer where 16 rows' scores would pass 4 MiB a thread (G * max_model_len floats
 * a row: a 32k context with G = 4 takes 8 rows), at least 1. */
#define KILN_CPU_ATTN_Q_BLOCK 16
int kiln_cpu_attn_q_block(int G, int max_model_len);

/* att = attention(q, the pool) for every row of the step (see the top of this file); threads of
 * ctx->pool (NULL: the calling thread) split (row, KV head, head group) items. KILN_OK, or
 * KILN_ERR_INVALID_ARG for inconsistent arguments (nothing written). */
int kiln_cpu_attention(kiln_cpu_ctx *ctx, const kiln_cpu_attn_args *a, kiln_error *err);
/* cpu.attn "bf16" (attention_amx.c, x86 builds): whether this CPU and OS run it (AMX-BF16,
 * AVX512-BF16, the tile state granted), the head dims it takes (multiples of 32 up to 256), the
 * scratch a thread needs (a multiple of 64 bytes), and one item */
int kiln_cpu_has_amx_bf16(void);
#define KILN_CPU_ATTN_AMX_HD_OK(hd) ((hd) > 0 && (hd) % 32 == 0 && (hd) <= 256)
size_t kiln_cpu_attn_amx_bytes(int G, int q_block, int head_dim, int max_model_len);
/* rows t0 .. t1-1 of sequence seq (consecutive positions), KV head kvh with all its query heads,
 * in blocks of qb <= q_block rows; scores: the thread's [q_block][G][max_model_len] scratch */
void kiln_cpu_attn_amx_rows(const kiln_cpu_attn_args *a, int seq, int t0, int t1, int qb, int kvh, float *scores,
                            void *scratch);

#endif
