/* cuda_backend_internal.h: the CUDA backend's state and the calls between its files.
 *
 *   cuda_backend.c  create (options, device, cuBLASLt, scratch), destroy, finish_step, the ops
 *                   table and the module entry (kiln_backend_cuda_entry)
 *   cuda_weights.c  what the backend refuses at load (check_model) and the weight upload
 *   cuda_linear.c   every projection (QKV, O, gate|up, down, LM head): one entry that picks GEMV,
 *                   skinny, wide or cuBLASLt per shape and row count
 *   cuda_forward.c  the device work of one step (enqueue and its pieces, device sampling)
 *   cuda_plan.c     encode_step: the step descriptor packed into the pinned buffers, the plan
 *   cuda_graphs.c   decode graphs and piecewise graphs: buckets, capture at create
 * Private to src/backend/cuda; names shared between the files carry the kiln_cuda_ prefix and
 * are hidden in libkiln_cuda.so (only the entry is exported). */
#ifndef KILN_CUDA_BACKEND_INTERNAL_H
#define KILN_CUDA_BACKEND_INTERNAL_H
#include <stdint.h>
#include <string.h>
#include "backend/backend.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/sync.h"
#include "util/alloc.h"
#include "util/error.h"
#include "util/log.h"

#define STAGE_BYTES ((size_t)32 << 20)
#define GEMM_WORKSPACE ((size_t)32 << 20)
#define PREFILL_MIN_ROWS 16 /* chunks this long use the tensor-core kernel */
#define PIECE_ROWS 16       /* piecewise graphs: steps are padded to a multiple of this many rows */
#define TC_MIN_WINDOW 64    /* positions: the tensor-core decode split's smallest window (one key tile) */
#define TC_TAIL_MIN_WINDOW 512 /* ... where rows x KV CTAs exceed a wave (cuda_forward.c: tc_min_window) */
#define MAX_DEV_ALLOCS_FIXED (40 + 8 + 4 + 1 + 1) /* + 4: MoE scratch, + 1: FP8 partial maxima, + 1: RoPE factors */
/* the model features (model.h KILN_FEAT_*) this backend runs (ops.features, check_model) */
#define KILN_CUDA_FEATURES                                                                                   \
    (KILN_FEAT_QKV_BIAS | KILN_FEAT_QK_NORM | KILN_FEAT_ROPE_SCALING | KILN_FEAT_WINDOW | KILN_FEAT_MOE)

typedef struct dev_alloc {
    void *p;
    size_t n;
} dev_alloc;

/* A projection's weights on the device: N x K, one buffer holding up to 3 row segments (the q, k,
 * v parts of QKV; gate and up) back to back. Dense: one segment of dtype adt (or hdt), rows
 * concatenated. GGUF-quantized: the segments' blocks as in the file (each segment 16-byte
 * aligned, 16 bytes of padding after the last), one segment when the parts share a type, else
 * one per part (a Q4_K_M file has Q6_K attn_v beside Q4_K attn_q / attn_k). */
#define CUDA_MAT_SEGS 3
/* FP8 (f8_e4m3) parts: codes [rows][K] concatenated; sw the per-row scales [N] (a per-tensor
 * scale repeated over its part's rows) or, with BLOCK scales, [N][ceil(K / 128)]; a new segment
 * wherever a part's static activation scale differs from the previous part's (fp8.cu). */
typedef struct cuda_mat {
    void *w;       /* the buffer (segment 0) */
    kiln_dtype dt; /* of segment 0; quantized iff kiln_dtype_is_quant(dt) */
    int N, K, n_seg;
    struct { void *w; kiln_dtype dt; int row0, rows; float in_scale; } seg[CUDA_MAT_SEGS];
    float *sw;     /* FP8: device scales (see above), else NULL */
    int sw_G;      /* FP8: scale groups per row (1, or ceil(K / 128) for BLOCK) */
} cuda_mat;

typedef struct cuda_layer {
    cuda_mat qkv; /* [(H + 2KV) hd][D] */
    cuda_mat o;   /* [D][H hd] */
    cuda_mat gu;  /* [2F][D] (gate rows, then up rows) */
    cuda_mat d;   /* [D][F] */
    /* mixture of experts (cfg.n_experts > 0; gu and d unused), adt: router [E][D], experts'
     * gate|up [E][2F][D] (expert e's gate rows, then its up rows), down [E][D][F] (cuda_moe.c) */
    void *router, *moe_gu, *moe_d;
} cuda_layer;

typedef struct cuda_backend {
    kiln_backend base;
    const kiln_model *m;
    kiln_backend_config cfg;
    kiln_cuda_syncs syncs;
    int debug;
    cudaStream_t st;
    int have_stream;
    kiln_cuda_gemm_ctx gctx;
    int have_lt;
    kiln_dtype adt, edt, hdt; /* layer matrices' activations, embedding, LM head input (bf16 when
                               * the weights are GGUF-quantized) */
    int quant;                /* some projection holds GGUF-quantized weights */
    int fp8;                  /* the layer matrices are FP8 (f8_e4m3 codes, fp8.cu) */
    int fp8_a8;               /* ... run W8A8 (activations quantized, FP8 MMA: sm_89+), else
                               * weight-only (bf16 activations) */
    int fp8_blk;              /* ... with BLOCK scales (128-column groups) */
    int fp8_static;           /* ... with static activation scales */
    int fp8_split;            /* ... and some fused parts' static scales differ (several segments) */
    int fp8_lt8;              /* steps beyond fp8_mma_max_rows on cuBLASLt FP8 (W8A8, per-row
                               * scales applied after), else dequantized to bf16 for cuBLASLt */
    int fp8_mma_max_rows;     /* FP8 steps up to this many rows on fp8.cu's product (0 in
                               * batch-invariant mode) */
    int fp8_fuse;             /* W8A8's activation codes written by RMSNorm (qkv, gate|up) and
                               * from SwiGLU's partial maxima (down) (kiln_cuda_options.fp8_fuse_quant) */
    int fp8_gu16;             /* cuBLASLt FP8 writes gate|up's unscaled sums in bf16 and SwiGLU
                               * scales them (fp8_lt8, gate_up_16bit, bf16 activations) */
    const void *xq8_src;      /* the activation whose codes xq8 / sa8 hold now (set by those
                               * producers, cleared by the linear that takes them), or NULL */
    float *pmax8;             /* [max_tokens][F / 1024] SwiGLU's partial maxima (fp8_fuse or fp8_gu16) */
    uint8_t *xq8;             /* [max_tokens][max K] activation codes (W8A8) */
    float *sa8;               /* [max_tokens][max groups] their scales */
    kiln_cuda_qreg_work qreg_wk; /* qmma_x's split-K parts and counters (part NULL: none, qmma_reg then) */
    void *wdq;                /* [max N x K] adt: a quantized matrix dequantized for cuBLASLt
                               * (steps of more than qgemv_max_rows rows) */
    size_t wdq_bytes;
    int8_t *xq;               /* [qgemv_max_rows][max K] the GEMV's input as int8 blocks */
    float *xq_d, *xq_s;       /* [rows][max K / 32] block scales, [rows][max K / 16] half sums */
    int q8_fuse;              /* those blocks written by RMSNorm (qkv, gate|up), SwiGLU (down),
                               * attention's combine (o) and the final norm (LM head) when the next
                               * linear takes the GEMV (kiln_cuda_options.q8_fuse_quant) */
    const void *xq_src;       /* the activation whose blocks xq / xq_d / xq_s hold now (set by those
                               * producers, cleared by the linear that takes them), or NULL */
    int qmma_max_rows;        /* then qmma (tensor cores, tiles dequantized in shared memory) up to
                               * this many (0 in batch-invariant mode) */
    int qreg_max_rows;        /* Q4_K / Q6_K / Q8_0 segments: qmma_reg (registers) up to this many
                               * rows, before the GEMV / qmma below (0 in batch-invariant mode) */
    int qreg_variant;         /* qmma_x's launch variant (kiln_cuda_options.qreg_variant; 0) */
    int qgemv_max_rows;       /* quantized weights: GEMV up to this many rows (0 in batch-invariant
                               * mode: every step dequantizes and runs the fixed cuBLASLt algorithm) */
    dev_alloc *allocs;
    int n_allocs, cap_allocs;
    /* weights */
    void *emb;
    cuda_mat lm;
    float *norms; /* [2 L + 1][D]: attn_norm[l], ffn_norm[l], ..., out_norm */
    /* issue 19 (cuda_weights.c put_family; NULL when the model has none): */
    double *rope_inv;   /* [hd / 2] RoPE inverse frequencies (kiln_rope_inv_freq), NULL: theta's */
    double rope_mscale; /* its cos / sin factor (YaRN attention factor), else 1 */
    double *rope_cs;    /* [max_tokens][hd / 2][2] the step's RoPE factors (kiln_cuda_rope_cs, enq_head) */
    float *qkv_bias;    /* [L][(H + 2 KV) hd] bq | bk | bv (Qwen2) */
    float *qk_norms;    /* [L][2][hd] q_norm, k_norm (Qwen3) */
    cuda_layer *layers;
    kiln_cuda_gemm g_qkv, g_o, g_gu, g_d, g_lm;
    /* KV pool, bf16 */
    uint16_t *kv;
    size_t kv_bytes;
    /* scratch */
    float *x, *qkv, *proj, *gu, *logits_d;
    void *xn, *att, *act, *xf;
    size_t scratch_bytes;
    /* MoE scratch (moe.h kiln_cuda_moe_args; NULL for dense models) */
    int32_t *moe_idx; /* [3 max_tokens k + 2 (E + 1)] routing, permutation, offsets */
    float *moe_w;     /* [max_tokens k] routing weights */
    void *moe_act;    /* [max_tokens k][F] adt */
    float *moe_y;     /* [max_tokens k][D] */
    float *att_scratch; /* [max_tokens][H][att_splits][hd + 2] attention windows */
    int att_split_w, att_splits;
    /* step descriptor: pinned staging and its device copy, same layout */
    unsigned char *desc_h, *desc_d;  /* desc_h: desc_hb[par], the buffer of the step being encoded */
    unsigned char *desc_hb[2];
    size_t desc_bytes, off_tok, off_pos, off_rowseq, off_lrows, off_slot, off_tiles, off_bt, off_prev;
    /* prefill attention on tensor cores (attention_prefill.cu): rows of chunks >= PREFILL_MIN_ROWS
     * go in tiles; the other rows (decodes, short chunks) form runs for the decode kernel (or
     * the split kernel) */
    int pf_tile_rows, pf_max_tiles; /* 0 rows: not available (shape, or batch-invariant mode) */
    int decode_tc_rows;             /* steps of >= this many rows put every row on tensor cores
                                     * (KILN_CUDA_DECODE_TC, default 1: always; 0 = never; H100,
                                     * attention_decode_kernel against the split kernel, same call:
                                     * batch 2 16.56 -> 16.44 ms, batch 4 16.73 -> 16.57; batch 1
                                     * 16.15 -> 16.00 in another) */
    unsigned char *pf_covered;      /* host [max_tokens] */
    /* L2 prefetch of the next product's weights on a side branch of the decode graphs of
     * L2PF_MIN_ROWS..L2PF_MAX_ROWS rows (kiln_cuda_l2pf; kiln_cuda_options.l2_prefetch_mb) */
    int64_t l2pf_bytes;   /* per product, 0 = off */
    int l2pf_mode;        /* kiln_cuda_l2_prefetch's mode */
    int l2pf_on;          /* set while a decode graph is captured: the forks below are taken */
    int l2pf_forked;      /* a fork of this step still to join (kiln_cuda_enqueue) */
    cudaStream_t st_pf;   /* the side branch */
    cudaEvent_t ev_pf[2]; /* fork, join */
    int have_st_pf, have_ev_pf;
    uint64_t l2pf_forks;  /* prefetches captured (tests) */
    int32_t *run_a, *run_b;         /* host [max_tokens] runs of uncovered rows [run_a, run_b) */
    float *logits_h; /* pinned [max_lrows][V] */
    int max_lrows;   /* logits rows of a step: max_seqs, or up to max_logits_per_seq per sequence
                      * (speculative verification, host logits) within max_tokens */
    /* device sampling (sample.cu): penalty tables, per-step parameters, results */
    int32_t *pen_counts;  /* [max_seqs][V] output-token counts per table row */
    uint8_t *pen_prompt;  /* [max_seqs][V] 1 where the id is in the prompt */
    float *samp_work;     /* [max_seqs][V] processed logits */
    unsigned char *sdesc_h, *sdesc_d; /* sampling descriptor (pinned / device), packed per step */
    unsigned char *sdesc_hb[2], *sout_hb[2]; /* per parity (two steps in flight); sdesc_h / sout_h
                                              * point at the encoded step's */
    size_t sdesc_bytes;
    /* grammar masks (kiln_backend_config.masks): the step's mask rows, copied into the pinned
     * buffer of its parity and uploaded with one H2D copy before the step's work; the sampling
     * rows name their row (kiln_cuda_sample_row.mask_row). NULL without masks. */
    uint32_t *mask_d;     /* [max_seqs][mask_words] */
    uint32_t *mask_hb[2]; /* pinned, per parity */
    int mask_words;       /* (V + 31) / 32, 0 without masks */
    unsigned char *sout_d, *sout_h;   /* [S] tok, [S] logprob, [S][20] top ids, [S][20] top lp */
    size_t sout_bytes;
    /* Steps in flight (overlapped scheduling: at most two). Step i uses the pinned buffers of
     * parity i & 1; its end is marked by ev[parity]; finish_step waits for the oldest. */
    struct { int n_logits, sampled, par; } fl[2]; /* fl[0] oldest */
    int n_pending, par;
    cudaEvent_t ev[2];
    int have_ev;
    int last_n_logits, last_sampled; /* of the last encoded step: the rows prev_row may name */
    int gemv_max_rows;   /* GEMV allowed up to this many rows (0: never; KILN_CUDA_GEMV) */
    int skinny_max_rows; /* skinny.cu up to this many rows (0: never; KILN_CUDA_SKINNY) */
    int wide_min_rows;   /* skinny_wide.cu for wide matrices from this many rows to 16 (0: never;
                          * KILN_CUDA_WIDE) */
    int wide_variant;    /* its pipeline shape (KILN_CUDA_WIDE_VARIANT, 0 = the kernel's default) */
    int glu;             /* gate|up on the GEMV or wide kernel with SwiGLU in its epilogue (KILN_CUDA_GLU,
                          * default 1) */
    int gu_16bit;        /* cuBLASLt writes gate|up in the weights' 16-bit type (default; 0 with
                          * KILN_CUDA_GU_16BIT=0: f32): prefill +3.5 % on the H100 (batch 16
                          * 13,553 -> 14,030 tok/s, same call); the 2-layer mistral-tiny step
                          * test's worst row went 0.0141 from the CPU (bound 3e-2) */
    int pdl;             /* programmatic dependent launch allowed (KILN_CUDA_PDL, default 1): the
                          * launchers' pdl argument (cuda_dev.cuh kiln_launch) */
    int n_sm;          /* streaming multiprocessors (sizes the attention split): target.n_sm */
    kiln_cuda_target target; /* what launches are sized for and kernels chosen by (target.h) */
    /* CUDA graphs of decode steps: [n_graph_rows][n_graph_widths], rows 1, 2, 4, .., graph_max_rows */
    cudaGraphExec_t *graphs;
    int graph_max_rows, n_graph_rows, n_graph_widths;
    int graph_widths[32];
    uint64_t graph_steps; /* steps replayed from a graph */
    /* piecewise graphs of the other steps (prefill, mixed, decodes the decode graphs do not
     * take): [n_piece_buckets][L + 1], buckets of 1, 2, 4, 8, 16 rows, then multiples of 16 */
    cudaGraphExec_t *pieces;
    int n_piece_buckets;  /* 0: none (KILN_CUDA_PIECE_MAX=0, debug, capture failed) */
    uint64_t piece_steps; /* steps run through the piecewise graphs */
    int att_blocks_per_sm; /* resident attention blocks per SM: the split makes one wave
                            * (KILN_CUDA_ATT_BPS overrides the occupancy query) */
    int tc_blocks_per_sm;  /* the same for the tensor-core decode split (0: off,
                            * KILN_CUDA_DECODE_TC_SPLIT=0) */
} cuda_backend;

static inline size_t dt_size(kiln_dtype dt) { return dt == KILN_DT_F32 ? 4 : dt == KILN_DT_F8_E4M3 ? 1 : 2; }

/* Enqueue one launcher call; in debug mode (KILN_CUDA_DEBUG) wait and check after it. Needs
 * `c` and `err` in scope; returns from the caller on error. */
#define LAUNCH(call)                                                                                   \
    do {                                                                                               \
        cudaError_t e_ = (call);                                                                       \
        if (e_ != cudaSuccess) return kiln_cuda_error(err, e_, #call, __FILE__, __LINE__);             \
        if (c->debug) {                                                                                \
            int r_ = kiln_cuda_stream_sync(&c->syncs, c->st, err);                                     \
            if (r_) {                                                                                  \
                kiln_err_prefix(err, "after %s: ", #call);                                             \
                return r_;                                                                             \
            }                                                                                          \
        }                                                                                              \
    } while (0)

/* The device work of one step is fixed by these values (and the host arrays run_a / run_b):
 * enqueue() issues it, and a CUDA graph captured from enqueue() replays it. */
typedef struct step_plan {
    int T, n, bt_w, n_tiles, n_runs; /* rows, logits rows, block-table width, tensor-core tiles, split runs */
    int tc_splits;                   /* > 0: every row is a decode on tensor cores, split over its context
                                      * into at most tc_splits windows (kiln_cuda_attention_decode_tc);
                                      * the tiles are then unused */
    int T_lin;                       /* > 0: the rows the layers' linears run when the piecewise graphs
                                      * replay them (the bucket, >= T; attention sees T); 0: T */
    size_t desc_bytes;               /* H2D bytes of the step descriptor */
    int sample;                      /* draw on the device (else copy the logits back) */
    int n_pen;                       /* penalty tables to load */
    size_t sd_bytes, sd_rows, sd_bias, sd_bvals, sd_supp, sd_pslot, sd_pstart, sd_pnp, sd_ptok; /* offsets */
} step_plan;

/* the step descriptor's arrays on the device (desc_d) */
typedef struct step_ptrs {
    const int32_t *tok, *pos, *rowseq, *lrows, *bt, *tiles, *prev;
    const int64_t *slot;
} step_ptrs;

/* the entry of libkiln_cuda.so: the one symbol it exports (built with -fvisibility=hidden) */
#define KILN_CUDA_EXPORT __attribute__((visibility("default")))

/* cuda_backend.c */
int kiln_cuda_dev_malloc(cuda_backend *c, void **p, size_t n, const char *what, kiln_error *err);
/* cuda_weights.c */
int kiln_cuda_linear_supports(kiln_dtype dt);
/* ops.check_weight: a weight kiln_cuda_linear runs (dtype and kiln_quant scales), or the refusal */
int kiln_cuda_check_weight(const kiln_tensor *w, kiln_error *err);
int kiln_cuda_check_model(cuda_backend *c, kiln_error *err);
/* the device bytes kiln_cuda_upload_weights allocates for m (matrices as stored, norms in f32) */
size_t kiln_cuda_weight_bytes(const kiln_model *m);
int kiln_cuda_upload_weights(cuda_backend *c, kiln_error *err);
/* cuda_linear.c: y[rows][g->N] = x[rows][g->K] w^T (y f32, or g->ydt from cuBLASLt); and
 * act[rows][F] = silu(gate) up from w = [gate; up] [2F][K], through gu[rows][2F] unless fused */
int kiln_cuda_linear(cuda_backend *c, kiln_cuda_gemm *g, void *y, const void *x, const cuda_mat *w, int rows,
                     kiln_error *err);
/* The scales a caller applies itself to cuBLASLt FP8's unscaled sums: y[t][n] (sa[t] sw[n]); both
 * NULL when y is final. */
typedef struct {
    const float *sa, *sw;
} kiln_cuda_yscale;
/* kiln_cuda_linear that may leave y unscaled (FP8 on cuBLASLt): ys says how; whether it does for
 * n rows of w (a pure function of the backend's paths, so a kernel in a later graph piece can
 * tell without host state) */
int kiln_cuda_linear_defers(const cuda_backend *c, const cuda_mat *w, int n);
/* whether the linear of w on n rows takes its input as the GEMV's int8 blocks (GGUF weights):
 * then its input's producer may write them (q8_fuse, xq_src) */
int kiln_cuda_linear_q8_input(const cuda_backend *c, const cuda_mat *w, int n);
/* Whether kiln_cuda_linear runs n rows of w on cuBLASLt (load-time GEMM tuning, cuda_tune.c):
 * LT_NONE (another kernel), LT_DIRECT (on w's own buffer: 16-bit weights, or FP8 codes with FP8
 * activation codes), LT_DEQUANT (on the bf16 dequantization scratch wdq). */
enum { LT_NONE, LT_DIRECT, LT_DEQUANT };
int kiln_cuda_linear_lt_route(const cuda_backend *c, const kiln_cuda_gemm *g, const cuda_mat *w, int n);
/* Load time, before the graphs are captured: kiln_cuda_gemm_tune for every projection at the row
 * counts steps run on cuBLASLt, cands candidates each (kiln_cuda_options.gemm_tune). */
int kiln_cuda_tune_gemms(cuda_backend *c, int cands, kiln_error *err);
int kiln_cuda_linear_ex(cuda_backend *c, kiln_cuda_gemm *g, void *y, const void *x, const cuda_mat *w, int rows,
                        kiln_cuda_yscale *ys, kiln_error *err);
/* With l2pf_on: fork a prefetch of w's first l2pf_bytes into L2 from this point of c->st (w
 * may be NULL: nothing). The join is kiln_cuda_enqueue's. */
int kiln_cuda_l2pf(cuda_backend *c, const cuda_mat *w, kiln_error *err);
/* The rows where it pays (H100, FP8, same calls): b4 / b8 -0.13..-0.26 ms a step; b1 / b2 +0.06..
 * +0.15 (the prefetch's queueing slows the latency-bound kernels beside it more than the
 * products gain: RMSNorm 3.9 -> 7.7 us at b1), b16 +0.24 (cuBLASLt FP8, PDL on) */
#define L2PF_MIN_ROWS 4
#define L2PF_MAX_ROWS 8
#define L2PF_DEFAULT_MB 32

/* gate|up then SwiGLU into act; next (may be NULL): the matrix that takes act (down), whose int8
 * blocks SwiGLU then writes too when q8_fuse and its linear takes them */
int kiln_cuda_linear_swiglu(cuda_backend *c, kiln_cuda_gemm *g, void *act, void *gu, const void *x, const cuda_mat *w,
                            const cuda_mat *next, int rows, kiln_error *err);
/* cuda_forward.c */
int kiln_cuda_enq_piece(cuda_backend *c, const step_plan *p, int k, kiln_error *err);
int kiln_cuda_enqueue(cuda_backend *c, const step_plan *p, const cudaGraphExec_t *pieces, kiln_error *err);
int kiln_cuda_tc_split_count(const cuda_backend *c, int T);
/* cuda_moe.c: mixture of experts (refusals, scratch, a MoE layer's FFN into proj) */
int kiln_cuda_moe_check(const cuda_backend *c, kiln_error *err);
size_t kiln_cuda_moe_layer_bytes(const kiln_model *m, int l);
int kiln_cuda_moe_alloc(cuda_backend *c, kiln_error *err);
int kiln_cuda_moe_enqueue(cuda_backend *c, int T, int l, kiln_error *err);
/* cuda_plan.c */
void kiln_cuda_sampling_layout(step_plan *p, int n, int n_bias, int n_supp, int n_pen, int n_pen_tok);
void kiln_cuda_use_parity(cuda_backend *c, int par);
int kiln_cuda_encode(kiln_backend *b, const kiln_step *s, kiln_error *err);
/* cuda_graphs.c */
int kiln_cuda_piece_bucket(int T, int *Tb);
void kiln_cuda_free_graphs(cuda_backend *c);
int kiln_cuda_capture_graphs(cuda_backend *c, kiln_error *err);
int kiln_cuda_graph_bucket(const cuda_backend *c, int rows, int width, int *ri, int *wi);
void kiln_cuda_fill_plan_shape(const cuda_backend *c, step_plan *p, int T, int bt_w);

#endif
