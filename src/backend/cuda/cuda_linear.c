/* cuda_linear.c: the one entry of every projection of a step (QKV, O, gate|up, down, LM head).
 *
 * A weight is a kiln_cuda_gemm (shape N x K, dtype, its cuBLASLt plan) and a device matrix
 * W [N][K]; kiln_cuda_linear computes y[rows][N] = x[rows][K] W^T on the kernel gemm_choice picks,
 * kiln_cuda_linear_swiglu the gate|up projection followed by SwiGLU (fused into the GEMV or wide
 * kernel's epilogue when those run it and KILN_CUDA_GLU is on). GGUF-quantized weights (cuda_mat
 * segments) take qlinear.cu's GEMV for few rows, else are dequantized to bf16 for cuBLASLt. The
 * dtypes the backend can run (kiln_cuda_linear_supports) are checked at create (cuda_weights.c). */
#include "backend/cuda/cuda_backend_internal.h"

/* y = x W^T by one of four kernels, chosen per shape and row count (measured on the H100 for
 * the Devstral shapes: the GEMV / skinny microbenchmarks in tests/cuda/test_cuda_gemv.c and
 * docs/perf-notes.md):
 *   GEMV (gemv.cu, CUDA cores): wide matrices (gate|up, LM head, N >= 32768) up to 3 rows, the
 *     others up to 2, with 2 rows per warp at 1 row and K < 16384, else 4;
 *   skinny (skinny.cu, tensor cores): wide matrices at 5..8 rows (gate|up 235 us vs 239, LM
 *     head 465 vs 475 at 8 rows; at 16 rows cuBLASLt is faster on every shape);
 *   wide (skinny_wide.cu, tensor cores, cp.async pipeline): wide matrices from 4 rows to 16
 *     (gate|up with SwiGLU in its epilogue, as on the GEMV, unless KILN_CUDA_GLU=0);
 *   cuBLASLt otherwise (the down projection without split-K up to 16 rows, gemm.h).
 * Off in batch-invariant mode: a row's bits would change when the batch crosses a threshold.
 * Returns GEMM_LT, GEMM_SKINNY, GEMM_WIDE, or the GEMV rows per warp (>= 0). */
#define GEMM_LT (-1)
#define GEMM_SKINNY (-2)
#define GEMM_WIDE (-3)
static int gemm_choice(const cuda_backend *c, const kiln_cuda_gemm *g, int n) {
    if (g->wdt == KILN_DT_F32) return GEMM_LT;
    if (g->N >= 32768) { /* gate|up, LM head */
        if (c->wide_min_rows && n >= c->wide_min_rows && n <= KILN_WIDE_MAX_ROWS) return GEMM_WIDE;
        if (n <= 4 && n <= c->gemv_max_rows) return 0;
        if (n <= c->skinny_max_rows) return GEMM_SKINNY;
        return GEMM_LT;
    }
    if (n <= 2 && n <= c->gemv_max_rows) return n == 1 && g->K < 16384 ? 2 : 4;
    return GEMM_LT;
}

/* Quantized weights, per segment (each into its column slice of y): Q4_K / Q6_K / Q8_0 on
 * qmma_reg (tensor cores, dequantized in registers) from KILN_QREG_MIN_ROWS (Q8_0:
 * KILN_QREG_Q8_0_MIN_ROWS; below, the GEMV) up
 * to qreg_max_rows rows; the other types on
 * the int8 GEMV up to qgemv_max_rows, then qmma (tensor cores on shared-memory tiles) up to
 * qmma_max_rows. When some segment can take none of those (prefill), every segment is
 * dequantized into the bf16 scratch wdq (rows row0..row0+rows) and one cuBLASLt GEMM runs over
 * the whole N x K. Returns whether y came from cuBLASLt (then in g->ydt) through *lt. */
enum { QP_REG, QP_GEMV, QP_MMA, QP_LT };
static int q_path(const cuda_backend *c, kiln_dtype dt, int K, int n) {
    int reg_max = dt == KILN_DT_Q8_0 && c->qreg_max_rows > KILN_QREG_Q8_0_MAX_ROWS ? KILN_QREG_Q8_0_MAX_ROWS
                                                                                  : c->qreg_max_rows;
    int reg_min = dt == KILN_DT_Q8_0 ? KILN_QREG_Q8_0_MIN_ROWS : KILN_QREG_MIN_ROWS;
    if (n <= reg_max && (n >= reg_min || n > c->qgemv_max_rows) && kiln_cuda_qmma_reg_supports(dt, K))
        return QP_REG;
    if (n <= c->qgemv_max_rows) return QP_GEMV;
    if (n <= c->qmma_max_rows) return QP_MMA;
    return QP_LT;
}
/* Whether the linear of w on n rows takes its input as int8 blocks (xq / xq_d / xq_s: some
 * segment on the GEMV, none dequantized for cuBLASLt), which a producer of x may then write
 * beside x itself (q8_fuse, c->xq_src). A pure function of (w, n). */
int kiln_cuda_linear_q8_input(const cuda_backend *c, const cuda_mat *w, int n) {
    if (!kiln_dtype_is_quant(w->dt)) return 0;
    int gemv = 0;
    for (int s = 0; s < w->n_seg; s++) {
        int p = q_path(c, w->seg[s].dt, w->K, n);
        if (p == QP_LT) return 0;
        gemv |= p == QP_GEMV;
    }
    return gemv;
}

static int qlinear(cuda_backend *c, kiln_cuda_gemm *g, void *y, const void *x, const cuda_mat *w, int n, int *lt,
                   kiln_error *err) {
    int p[CUDA_MAT_SEGS], gemv = 0;
    int have_q = c->xq_src == x; /* q8_fuse: the producer wrote x's blocks */
    c->xq_src = NULL;
    *lt = 0;
    for (int s = 0; s < w->n_seg; s++) {
        p[s] = q_path(c, w->seg[s].dt, w->K, n);
        *lt |= p[s] == QP_LT;
        gemv |= p[s] == QP_GEMV;
    }
    if (!*lt) {
        if (gemv && !have_q) /* x as int8 blocks once for the GEMV segments */
            LAUNCH(kiln_cuda_quantize_x(c->xq, c->xq_d, c->xq_s, x, c->adt, n, w->K, c->st));
        for (int s = 0; s < w->n_seg; s++) {
            float *ys = (float *)y + w->seg[s].row0;
            if (p[s] == QP_REG)
                LAUNCH(kiln_cuda_qmma_reg(ys, w->N, x, c->adt, w->seg[s].w, w->seg[s].dt, n, w->seg[s].rows, w->K, 0,
                                          c->qreg_wk.part ? c->qreg_variant : 0, c->n_sm,
                                          c->qreg_wk.part ? &c->qreg_wk : NULL, c->st));
            else if (p[s] == QP_GEMV)
                LAUNCH(kiln_cuda_qgemv_q8(ys, w->N, c->xq, c->xq_d, c->xq_s, w->seg[s].w, w->seg[s].dt, n,
                                          w->seg[s].rows, w->K, 0, c->n_sm, c->st));
            else
                LAUNCH(kiln_cuda_qmma(ys, w->N, x, c->adt, w->seg[s].w, w->seg[s].dt, n, w->seg[s].rows, w->K, c->st));
        }
        return KILN_OK;
    }
    if (!c->wdq) /* alloc_scratch sizes it for every step that can come here */
        return KILN_ERR(err, KILN_ERR_INTERNAL, "cuda backend: %d rows need the dequantization scratch, not allocated", n);
    for (int s = 0; s < w->n_seg; s++)
        LAUNCH(kiln_cuda_qdequant((uint16_t *)c->wdq + (size_t)w->seg[s].row0 * w->K, c->adt, w->seg[s].w,
                                  w->seg[s].dt, w->seg[s].rows, w->K, c->st));
    return kiln_cuda_gemm_run(&c->gctx, g, y, x, c->wdq, n, c->st, err);
}

/* FP8 matrices (fp8.cu; the math: docs/fp8.md). W8A8 quantizes x (per row, or per row and
 * 128-column group with BLOCK scales; again for a segment whose static scale differs from the
 * previous one's). Up to fp8_mma_max_rows rows: fp8.cu's tensor-core product per segment into its
 * column slice (f32). Beyond: cuBLASLt FP8 on the codes (f32 sums, or bf16 for gate|up: gu_ydt),
 * then the scales (fp8_lt8, one segment), else the matrix dequantized to bf16 (wdq) for cuBLASLt (y in g->ydt). *lt as qlinear's.
 * ys (may be NULL): the caller takes cuBLASLt FP8's sums unscaled and applies the scales itself
 * (ys->sa [n], ys->sw [N] set; NULL when y is already scaled). */
int kiln_cuda_linear_defers(const cuda_backend *c, const cuda_mat *w, int n) {
    return w->dt == KILN_DT_F8_E4M3 && c->fp8_lt8 && n > c->fp8_mma_max_rows;
}

static int fp8_linear(cuda_backend *c, kiln_cuda_gemm *g, void *y, const void *x, const cuda_mat *w, int n, int *lt,
                      kiln_cuda_yscale *ys, kiln_error *err) {
    if (ys) ys->sa = ys->sw = NULL;
    int a8 = c->fp8_a8, G = w->sw_G, K = w->K;
    int have_q = a8 && c->xq8_src == x; /* fp8_fuse: the producer wrote x's codes */
    c->xq8_src = NULL;
    *lt = n > c->fp8_mma_max_rows;
    if (kiln_cuda_linear_defers(c, w, n)) { /* one segment: fp8_lt8 is off where parts' static scales differ */
        /* cuBLASLt on the codes (sums in g->ydt), then the scales: y = (sum) (sa[t] sw[n]) */
        if (!have_q)
            LAUNCH(kiln_cuda_fp8_quant_x(c->xq8, c->sa8, x, c->adt, n, K, K, c->fp8_static, w->seg[0].in_scale, c->st));
        if (!ys && g->ydt != KILN_DT_F32) /* cuda_backend.c gu_ydt: bf16 sums only where the caller scales */
            return KILN_ERR(err, KILN_ERR_INTERNAL, "cuda backend: unscaled FP8 sums in %s", kiln_dtype_name(g->ydt));
        int rc = kiln_cuda_gemm_run(&c->gctx, g, y, c->xq8, w->w, n, c->st, err);
        if (rc) return rc;
        *lt = g->ydt != KILN_DT_F32; /* y in g->ydt (bf16 for gate|up under fp8_gu16), else f32 */
        if (ys) {
            ys->sa = c->sa8;
            ys->sw = w->sw;
            return KILN_OK;
        }
        LAUNCH(kiln_cuda_fp8_scale_rows((float *)y, w->N, c->sa8, w->sw, n, w->N, c->st));
        return KILN_OK;
    }
    if (*lt) {
        if (!c->wdq)
            return KILN_ERR(err, KILN_ERR_INTERNAL, "cuda backend: %d FP8 rows need the dequantization scratch", n);
        LAUNCH(kiln_cuda_fp8_dequant(c->wdq, KILN_DT_BF16, (const uint8_t *)w->w, w->sw, G, w->N, K, c->st));
        return kiln_cuda_gemm_run(&c->gctx, g, y, x, c->wdq, n, c->st, err);
    }
    for (int s = 0; s < w->n_seg; s++) {
        if (a8 && !have_q && (s == 0 || w->seg[s].in_scale != w->seg[s - 1].in_scale))
            LAUNCH(kiln_cuda_fp8_quant_x(c->xq8, c->sa8, x, c->adt, n, K, G > 1 ? 128 : K, c->fp8_static,
                                         w->seg[s].in_scale, c->st));
        LAUNCH(kiln_cuda_fp8_mma((float *)y + w->seg[s].row0, w->N, (const uint8_t *)w->seg[s].w,
                                 w->sw + (size_t)w->seg[s].row0 * G, G, a8 ? (const void *)c->xq8 : x, c->sa8, a8, n,
                                 w->seg[s].rows, K, 0, 0, c->n_sm, c->target.has_fp8_mma, c->st));
    }
    return KILN_OK;
}

int kiln_cuda_linear_lt_route(const cuda_backend *c, const kiln_cuda_gemm *g, const cuda_mat *w, int n) {
    if (w->dt == KILN_DT_F8_E4M3) {
        if (kiln_cuda_linear_defers(c, w, n)) return LT_DIRECT;
        return n > c->fp8_mma_max_rows ? LT_DEQUANT : LT_NONE;
    }
    if (kiln_dtype_is_quant(w->dt)) {
        for (int s = 0; s < w->n_seg; s++)
            if (q_path(c, w->seg[s].dt, w->K, n) == QP_LT) return LT_DEQUANT;
        return LT_NONE;
    }
    return gemm_choice(c, g, n) == GEMM_LT ? LT_DIRECT : LT_NONE;
}

int kiln_cuda_linear_ex(cuda_backend *c, kiln_cuda_gemm *g, void *y, const void *x, const cuda_mat *w, int n,
                        kiln_cuda_yscale *ys, kiln_error *err) {
    if (ys) ys->sa = ys->sw = NULL;
    if (kiln_dtype_is_quant(w->dt) || w->dt == KILN_DT_F8_E4M3) {
        int lt, rc = w->dt == KILN_DT_F8_E4M3 ? fp8_linear(c, g, y, x, w, n, &lt, ys, err)
                                              : qlinear(c, g, y, x, w, n, &lt, err);
        if (rc) return rc;
        if (c->debug && (rc = kiln_cuda_stream_sync(&c->syncs, c->st, err))) return rc;
        return KILN_OK;
    }
    const void *wp = w->w;
    int r_ = 0, k_ = gemm_choice(c, g, n);
    cudaError_t e_ = cudaSuccess;
    if (k_ >= 0)
        e_ = kiln_cuda_gemv_ex((float *)y, x, wp, g->wdt, n, g->N, g->K, k_, c->st);
    else if (k_ == GEMM_SKINNY)
        e_ = kiln_cuda_gemm_skinny((float *)y, x, wp, g->wdt, n, g->N, g->K, c->st);
    else if (k_ == GEMM_WIDE)
        e_ = kiln_cuda_gemm_wide_ex((float *)y, x, wp, g->wdt, n, g->N, g->K, c->wide_variant, c->pdl, c->st);
    else
        r_ = kiln_cuda_gemm_run(&c->gctx, g, y, x, wp, n, c->st, err);
    if (e_ != cudaSuccess) return kiln_cuda_error(err, e_, "kiln_cuda_gemv/skinny", __FILE__, __LINE__);
    if (r_) return r_;
    if (c->debug && (r_ = kiln_cuda_stream_sync(&c->syncs, c->st, err))) return r_;
    return KILN_OK;
}

int kiln_cuda_linear(cuda_backend *c, kiln_cuda_gemm *g, void *y, const void *x, const cuda_mat *w, int n,
                     kiln_error *err) {
    return kiln_cuda_linear_ex(c, g, y, x, w, n, NULL, err);
}

/* The side branch (l2_prefetch.cu has why): an event on c->st at this point, st_pf waits for it,
 * then the prefetch of w's first bytes (its segments are one buffer, in order). In a graph this
 * is a branch off the node before; kiln_cuda_enqueue joins st_pf back at the step's end. */
int kiln_cuda_l2pf(cuda_backend *c, const cuda_mat *w, kiln_error *err) {
    if (!c->l2pf_on || !w || !w->w || w->n_seg <= 0) return KILN_OK;
    int l = w->n_seg - 1;
    int64_t bytes = (int64_t)((const unsigned char *)w->seg[l].w - (const unsigned char *)w->w) +
                    (int64_t)kiln_dtype_row_bytes(w->seg[l].dt, w->K) * w->seg[l].rows;
    if (bytes > c->l2pf_bytes) bytes = c->l2pf_bytes;
    KILN_CUDA_TRY(err, cudaEventRecord(c->ev_pf[0], c->st));
    KILN_CUDA_TRY(err, cudaStreamWaitEvent(c->st_pf, c->ev_pf[0], 0));
    cudaError_t e = kiln_cuda_l2_prefetch(w->w, bytes, c->l2pf_mode, c->n_sm, c->st_pf);
    if (e != cudaSuccess) return kiln_cuda_error(err, e, "kiln_cuda_l2_prefetch", __FILE__, __LINE__);
    c->l2pf_forked = 1;
    c->l2pf_forks++;
    return KILN_OK;
}

int kiln_cuda_linear_swiglu(cuda_backend *c, kiln_cuda_gemm *g, void *act, void *gu, const void *x, const cuda_mat *w,
                            const cuda_mat *next, int T, kiln_error *err) {
    int F = g->N / 2, D = g->K;
    if (kiln_dtype_is_quant(w->dt) || w->dt == KILN_DT_F8_E4M3) { /* gate|up f32 from the GEMV, g->ydt from cuBLASLt */
        int fuse = w->dt == KILN_DT_F8_E4M3 && c->fp8_fuse, scale_here = fuse || (w->dt == KILN_DT_F8_E4M3 && c->fp8_gu16);
        kiln_cuda_yscale ys = {NULL, NULL};
        int lt, rc = w->dt == KILN_DT_F8_E4M3 ? fp8_linear(c, g, gu, x, w, T, &lt, scale_here ? &ys : NULL, err)
                                              : qlinear(c, g, gu, x, w, T, &lt, err);
        if (rc) return rc;
        /* SwiGLU (and the down projection's quantization) run between the two products */
        if ((rc = kiln_cuda_l2pf(c, next, err))) return rc;
        kiln_dtype gdt = lt ? g->ydt : KILN_DT_F32;
        if (fuse || ys.sa) { /* the scales of cuBLASLt FP8's sums (ys; bf16 under fp8_gu16, fused or not:
                              * fp8_fuse changes only where down's codes come from), then with fuse
                              * the down projection's codes from the partial maxima */
            LAUNCH(kiln_cuda_swiglu_pmax(act, gu, gdt, T, F, c->pmax8, ys.sa, ys.sw, c->pdl, c->st));
            if (fuse) {
                LAUNCH(kiln_cuda_fp8_quant_pmax(c->xq8, c->sa8, act, c->pmax8, kiln_cuda_swiglu_pmax_parts(F), T, F,
                                                c->pdl, c->st));
                c->xq8_src = act;
            }
            return KILN_OK;
        }
        if (c->q8_fuse && next && kiln_cuda_linear_q8_input(c, next, T)) { /* next's int8 blocks of act too */
            LAUNCH(kiln_cuda_swiglu_i8(act, c->adt, gu, gdt, T, F, c->xq, c->xq_d, c->xq_s, c->pdl, c->st));
            c->xq_src = act;
            return KILN_OK;
        }
        LAUNCH(kiln_cuda_swiglu_in(act, c->adt, gu, gdt, T, F, c->pdl, c->st));
        return KILN_OK;
    }
    c->xq8_src = NULL; /* act is rewritten below without codes */
    const void *wp = w->w;
    int gk = gemm_choice(c, g, T);
    if (gk == GEMM_WIDE && c->glu) { /* SwiGLU in the GEMM's epilogue: act[T][F] straight out */
        LAUNCH(kiln_cuda_gemm_wide_glu(act, c->adt, x, wp, g->wdt, T, F, D, c->wide_variant, c->pdl, c->st));
    } else if (gk >= 0 && c->glu) {
        LAUNCH(kiln_cuda_gemv_glu(act, c->adt, x, wp, g->wdt, T, F, D, c->st));
    } else {
        int rc = kiln_cuda_linear(c, g, gu, x, w, T, err);
        if (rc) return rc;
        /* gate|up comes out f32 from GEMV / skinny / wide, in the weights' 16-bit type from
         * cuBLASLt unless KILN_CUDA_GU_16BIT=0 */
        LAUNCH(kiln_cuda_swiglu_in(act, c->adt, gu, gk != GEMM_LT ? KILN_DT_F32 : g->ydt, T, F, c->pdl, c->st));
    }
    return KILN_OK;
}
