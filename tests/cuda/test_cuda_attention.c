/* test_cuda_attention.c: paged causal GQA attention (attention.cu) for ragged batches against
 * the CPU backend's attention (kiln_cpu_attention) on the same bf16 pool values.
 * Batches mix decodes and prefill chunks; block tables are random distinct block ids with holes;
 * every pool element outside the sequences' contexts (unused blocks, slots past the context) is
 * NaN, so a read through a wrong block or past the causal limit fails the test. head_dim 16 / 48
 * / 64 / 128, GQA 4:1 and 1:1, block sizes 16 and 32, outputs f32 (1e-5) and bf16 (1e-2).
 * Flash mode (attention_prefill.cu): the prefill chunks (>= 16 rows) go to the tensor-core kernel
 * through kiln_cuda_prefill_tiles, the other rows to kiln_cuda_attention run by run, as the
 * backend does; checked: rows outside the tiles stay poisoned after the prefill launch, the
 * tiled rows have no NaN, rel L2 <= 1e-2 (q and P are rounded to bf16) and max |error| < 3e-2
 * for f32 and bf16 outputs, and a row gives the same bits with another tiling (tiles of 7 rows).
 * hd 64 / 128, G = 1, 2, 4, 8, block sizes 16 and 32. The host tile builder is checked by hand.
 * FP8 pool (issue 17, the _ex launchers): the same cases on e4m3 codes with K scale 0.5 and V
 * scale 2 (poison: the NaN code 0x7f), against the CPU attention on the decoded values code * scale
 * (what the CPU backend's FP8 pool computes), with the same bounds. The decode on tensor cores
 * of that pool (G <= 8: attention_decode_f8r_kernel, the codes read into registers) also with
 * block sizes 8 and 4, where a warp's 16 keys span several blocks.
 * Sliding windows (issue 19, g_window > 0, kiln_cuda_kv.window): every kernel and mode above with
 * windows 5 (< block size), 16, 40 (not a multiple of the block size) and 100 against the CPU
 * attention with the same window. As the engine does, the blocks wholly below each sequence's
 * first visible key are released: their block-table entries are the null block 0 (NaN), and
 * the positions below that key in the first kept block are NaN too, so a kernel that reads a key
 * out of the window (or a released block) fails with NaN.
 * The combine's int8 GEMV blocks (issue 16, the o projection's input; kiln_cuda_q8_blocks): with
 * hd % 32 == 0 the split kernel's and the tensor-core decode's runs above (their combine entries)
 * also write them, checked bit for bit against kiln_cuda_quantize_x on the stored output
 * (q8_check.h); combine_q8 does the same on the combine alone with random window states, f32 /
 * bf16 / f16 out, hd 64 / 128, several T and H, one all-zero head a row (zero blocks), and its
 * output byte for byte the plain combine's; hd 48 with blocks is refused. */
#include <string.h>
#include "backend/cpu/attention.h"
#include "backend/cuda/cuda_ops.h"
#include "cuda_test.h"
#include "q8_check.h"
#include "step/step.h"
#include "util/alloc.h"
#include "util/fp8.h"

static int g_f8;     /* this run's pool: 0 bf16, 1 FP8 codes (scales below) */
static int g_window; /* this run's attention window (0: none) */
#define F8_KS 0.5f
#define F8_VS 2.0f

typedef struct { int ctx, rows; } seq_spec;

static double max_abs_err(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (isnan(a[i]) || isnan(b[i])) return INFINITY;
        if (d > m) m = d;
    }
    return m;
}

/* flash = 0: kiln_cuda_attention on every row; 1: tiles on the prefill chunks, the split kernel
 * on the runs of other rows; 2: tiles on every row (decodes too: one-row tiles); 3: every row a
 * decode on tensor cores split over its context (kiln_cuda_attention_decode_tc, as the backend
 * does for large decode batches), and again with one window per row */
static void one(const seq_spec *sp, int S, int H, int KV, int hd, int bs, kiln_dtype adt, int flash,
                unsigned long long *s) {
    int T = 0, need = 0, max_nb = 0;
    for (int i = 0; i < S; i++) {
        T += sp[i].rows;
        int nb = (sp[i].ctx + bs - 1) / bs;
        need += nb;
        if (nb > max_nb) max_nb = nb;
    }
    kiln_kv_layout L = {.n_layers = 1, .n_kv_heads = KV, .head_dim = hd, .block_size = bs, .n_blocks = 2 * need + 3,
                        .dtype = KILN_KV_BF16, .elem_bytes = 2};
    int64_t pool_n = kiln_kv_elems(&L);
    uint16_t *pool = kiln_malloc((size_t)pool_n * 2);
    uint8_t *pool8 = kiln_malloc((size_t)pool_n);
    for (int64_t i = 0; i < pool_n; i++) pool[i] = 0xffff; /* NaN */
    for (int64_t i = 0; i < pool_n; i++) pool8[i] = 0x7f; /* NaN */
    int32_t *bt = kiln_calloc((size_t)S * max_nb, 4), *pos = kiln_malloc((size_t)T * 4), *rs = kiln_malloc((size_t)T * 4);
    int *used = kiln_calloc((size_t)L.n_blocks, sizeof(int));
    used[0] = 1;
    int t = 0;
    for (int i = 0; i < S; i++) {
        int nb = (sp[i].ctx + bs - 1) / bs;
        /* the sequence's first visible key (its first row's): below it nothing may be read */
        int lo = g_window > 0 && sp[i].ctx - sp[i].rows + 1 > g_window ? sp[i].ctx - sp[i].rows + 1 - g_window : 0;
        for (int b = 0; b < nb; b++) {
            int id;
            if ((b + 1) * bs <= lo) { /* released by the engine: the null block */
                bt[(size_t)i * max_nb + b] = 0;
                continue;
            }
            do id = 1 + (int)(kt_rand_u64(s) % (uint64_t)(L.n_blocks - 1)); while (used[id]);
            used[id] = 1;
            bt[(size_t)i * max_nb + b] = id;
        }
        for (int j = lo; j < sp[i].ctx; j++) /* K and V of every visible context position */
            for (int kv = 0; kv < 2; kv++)
                for (int h = 0; h < KV; h++)
                    for (int d = 0; d < hd; d++) {
                        int64_t o = kiln_kv_offset(&L, 0, bt[(size_t)i * max_nb + j / bs], kv, h, j % bs) + d;
                        float v = kt_randf(s);
                        pool[o] = kiln_f32_to_bf16(v);
                        pool8[o] = kiln_f32_to_e4m3(v / (kv ? F8_VS : F8_KS));
                    }
        for (int r = 0; r < sp[i].rows; r++, t++) {
            pos[t] = sp[i].ctx - sp[i].rows + r;
            rs[t] = i;
        }
    }
    int qs = (H + 2 * KV) * hd; /* the backend's qkv row stride */
    float *q = kiln_malloc((size_t)T * qs * 4);
    kc_rand(q, (size_t)T * qs, 4.0f, s);
    /* reference: the CPU backend's attention (kiln_cpu_attention, f32, within 1e-6 of float64 by
     * test_cpu_attention) on the same pool values: the bf16 pool widened to f32 (exact; the
     * NaN poison stays NaN), the queries packed to [T][H * hd] */
    float *want = kiln_malloc((size_t)T * H * hd * 4), *got = kiln_malloc((size_t)T * H * hd * 4);
    {
        kiln_kv_layout Lf = L;
        Lf.dtype = KILN_KV_F32;
        Lf.elem_bytes = 4;
        float *pool32 = kiln_malloc((size_t)pool_n * 4), *q32 = kiln_malloc((size_t)T * H * hd * 4);
        for (int64_t i = 0; i < pool_n; i++) pool32[i] = kiln_bf16_to_f32(pool[i]);
        if (g_f8) /* the decoded codes, code * scale (K or V by the element's place in its block) */
            for (int64_t i = 0; i < pool_n; i++)
                pool32[i] = kiln_e4m3_to_f32(pool8[i]) * ((i / ((int64_t)KV * bs * hd)) % 2 ? F8_VS : F8_KS);
        for (int r = 0; r < T; r++) memcpy(q32 + (size_t)r * H * hd, q + (size_t)r * qs, (size_t)H * hd * 4);
        int32_t *sq = kiln_malloc((size_t)(S + 1) * 4);
        sq[0] = 0;
        for (int i = 0; i < S; i++) sq[i + 1] = sq[i] + sp[i].rows;
        int mml = max_nb * bs;
        float *scores = kiln_malloc((size_t)(H / KV) * mml * 4);
        kiln_cpu_ctx cctx = {.isa = kiln_isa_best(), .pool = NULL};
        kiln_cpu_attn_args ca = {
            .kv = pool32, .layout = &Lf, .layer = 0, .n_tokens = T, .n_seqs = S, .positions = pos,
            .seq_q_start = sq, .block_table = bt, .max_blocks_per_seq = max_nb, .q = q32, .att = want,
            .n_heads = H, .n_kv_heads = KV, .head_dim = hd, .scores = scores, .max_model_len = mml,
            .window = g_window,
        };
        kiln_error cerr = {0};
        KT_CHECK(kiln_cpu_attn_lookup(cctx.isa, &ca.k) == 0, "cpu attention kernels");
        KT_CHECK(kiln_cpu_attention(&cctx, &ca, &cerr) == KILN_OK, "cpu reference: %s", cerr.msg);
        kiln_free(pool32);
        kiln_free(q32);
        kiln_free(sq);
        kiln_free(scores);
    }
    size_t as = kc_dtsize(adt), on = (size_t)T * H * hd;
    uint16_t *dpool = kc_dev((size_t)pool_n * 2);
    float *dq = kc_dev((size_t)T * qs * 4);
    int32_t *dpos = kc_dev((size_t)T * 4), *drs = kc_dev((size_t)T * 4), *dbt = kc_dev((size_t)S * max_nb * 4);
    void *dout = kc_dev(on * as), *oh = kiln_malloc(on * as);
    if (g_f8) kc_put(dpool, pool8, (size_t)pool_n);
    else kc_put(dpool, pool, (size_t)pool_n * 2);
    kiln_cuda_kv kvd = {dpool, g_f8, g_f8 ? F8_KS : 1.0f, g_f8 ? F8_VS : 1.0f, g_window};
    kc_put(dq, q, (size_t)T * qs * 4);
    kc_put(dpos, pos, (size_t)T * 4);
    kc_put(drs, rs, (size_t)T * 4);
    kc_put(dbt, bt, (size_t)S * max_nb * 4);
    kc_poison(dout, on * as);
    int max_splits = 0;
    /* a small window width too, so that rows span several windows */
    int split_w = kiln_cuda_attention_split_width(&max_splits);
    if (T % 2) { split_w = 16; max_splits = (max_nb * bs + 15) / 16; if (max_splits > 64) max_splits = 64; }
    float *dscr = kc_dev((size_t)T * H * max_splits * (hd + 2) * 4);
    /* the combine's int8 blocks of out (hd % 32 == 0: split kernel and tensor-core decode) */
    int q8 = hd % 32 == 0 && (flash == 0 || flash == 3);
    kiln_cuda_q8_blocks qb = {NULL, NULL, NULL};
    if (q8) {
        qb.xq = kc_dev(on);
        qb.xd = kc_dev(on / 32 * 4);
        qb.xs = kc_dev(on / 16 * 4);
        kc_poison(qb.xq, on);
        kc_poison(qb.xd, on / 32 * 4);
        kc_poison(qb.xs, on / 16 * 4);
    }
    if (!flash) {
        CU(kiln_cuda_attention_ex(dout, adt, dq, qs, &kvd, dpos, drs, dbt, max_nb, T, H, KV, hd, bs, split_w,
                               max_splits, dscr, q8 ? &qb : NULL, 1, 0));
    } else if (flash == 3) {
        /* every row a decode on tensor cores, split over its context: 3 windows (hd 64), or as
         * many as the scratch holds (up to 64 windows of 64 positions) */
        int ms = hd == 64 ? 3 : max_splits;
        CU(kiln_cuda_attention_decode_tc_ex(dout, adt, dq, qs, &kvd, dpos, drs, dbt, max_nb, T, H, KV, hd, bs, 64, ms,
                                         dscr, q8 ? &qb : NULL, 1, 0));
        /* the same rows with one window each (the whole context per CTA) */
        float *dscr1 = kc_dev((size_t)T * H * (hd + 2) * 4);
        void *dout1 = kc_dev(on * as);
        float *got1 = kiln_malloc(on * 4);
        kc_poison(dout1, on * as);
        CU(kiln_cuda_attention_decode_tc_ex(dout1, adt, dq, qs, &kvd, dpos, drs, dbt, max_nb, T, H, KV, hd, bs, 64, 1,
                                         dscr1, NULL, 1, 0));
        kc_get(oh, dout1, on * as);
        kc_from_dt(adt, oh, got1, on);
        double e1 = kt_rel_l2(got1, want, on);
        KT_CHECK(e1 <= 1e-2, "decode tc T=%d hd=%d one window: rel L2 %g", T, hd, e1);
        kiln_free(got1);
        CU(cudaFree(dscr1));
        CU(cudaFree(dout1));
        KT_CHECK(kiln_cuda_attention_decode_tc_ex(dout, adt, dq, qs, &kvd, dpos, drs, dbt, max_nb, T, H, KV, hd, bs, 64, 65,
                                               dscr, NULL, 1, 0) == cudaErrorInvalidValue,
                 "decode tc refuses 65 windows");
    } else {
        int32_t *qst = kiln_malloc((size_t)(S + 1) * 4);
        qst[0] = 0;
        for (int i = 0; i < S; i++) qst[i + 1] = qst[i] + sp[i].rows;
        int tr = kiln_cuda_prefill_tile_rows(H, KV), max_tiles = T + S;
        KT_CHECK(tr > 0, "tile rows for H=%d KV=%d", H, KV);
        int32_t *tiles = kiln_malloc((size_t)max_tiles * 8), *dtiles = kc_dev((size_t)max_tiles * 8);
        unsigned char *cov = kiln_malloc((size_t)T), *cov2 = kiln_malloc((size_t)T);
        int nt = kiln_cuda_prefill_tiles(qst, S, flash == 2 ? 1 : 16, tr, tiles, max_tiles, cov);
        kc_put(dtiles, tiles, (size_t)nt * 8);
        CU(kiln_cuda_attention_prefill_ex(dout, adt, dq, qs, &kvd, dpos, drs, dbt, max_nb, H, KV, hd, bs, dtiles, nt, 1, 0));
        kc_get(oh, dout, on * as);
        kc_from_dt(adt, oh, got, on);
        /* rows outside the tiles untouched (still 0xff bytes), tiled rows finite */
        size_t row = (size_t)H * hd, bad = 0, nan = 0, ncov = 0;
        for (int t = 0; t < T; t++) {
            ncov += cov[t];
            const unsigned char *b = (const unsigned char *)oh + (size_t)t * row * as;
            for (size_t i = 0; i < row; i++) {
                if (!cov[t] && (b[i * as] != 0xff || b[i * as + as - 1] != 0xff)) bad++;
                if (cov[t] && isnan(got[(size_t)t * row + i])) nan++;
            }
        }
        KT_CHECK(ncov > 0 && bad == 0 && nan == 0, "prefill T=%d hd=%d: %zu rows tiled, %zu uncovered elements written, "
                 "%zu NaN", T, hd, ncov, bad, nan);
        /* the same bits with tiles of 7 rows (or 1) */
        float *got1 = kiln_malloc(on * 4);
        memcpy(got1, got, on * 4);
        int nt2 = kiln_cuda_prefill_tiles(qst, S, flash == 2 ? 1 : 16, tr >= 7 ? 7 : 1, tiles, max_tiles, cov2);
        kc_put(dtiles, tiles, (size_t)nt2 * 8);
        CU(kiln_cuda_attention_prefill_ex(dout, adt, dq, qs, &kvd, dpos, drs, dbt, max_nb, H, KV, hd, bs, dtiles, nt2, 1, 0));
        /* the other rows: kiln_cuda_attention on each run of rows outside the tiles */
        for (int a = 0; a < T;) {
            if (cov[a]) { a++; continue; }
            int b = a;
            while (b < T && !cov[b]) b++;
            int ms = 0, sw = kiln_cuda_attention_split_width(&ms);
            CU(kiln_cuda_attention_ex((char *)dout + (size_t)a * row * as, adt, dq + (size_t)a * qs, qs, &kvd, dpos + a,
                                   drs + a, dbt, max_nb, b - a, H, KV, hd, bs, sw, ms, dscr, NULL, 1, 0));
            a = b;
        }
        kc_get(oh, dout, on * as);
        kc_from_dt(adt, oh, got, on);
        size_t diff = 0;
        for (int t = 0; t < T; t++)
            if (cov[t]) diff += memcmp(got + (size_t)t * row, got1 + (size_t)t * row, row * 4) != 0;
        KT_CHECK(diff == 0 && memcmp(cov, cov2, (size_t)T) == 0, "prefill T=%d hd=%d: %zu rows differ with tiles of 7",
                 T, hd, diff);
        kiln_free(qst); kiln_free(tiles); kiln_free(cov); kiln_free(cov2); kiln_free(got1);
        CU(cudaFree(dtiles));
    }
    if (!flash || flash == 3) {
        kc_get(oh, dout, on * as);
        kc_from_dt(adt, oh, got, on);
    }
    if (q8) {
        int zero = 0, bad = kc_q8_diff(dout, adt, T, H * hd, qb.xq, qb.xd, qb.xs, &zero);
        KT_CHECK(bad == 0, "attention %s %s T=%d H=%d hd=%d window=%d: %d int8 block entries differ from "
                 "quantize_x on the output", flash ? "dectc" : "split", kc_dtname(adt), T, H, hd, g_window, bad);
        CU(cudaFree(qb.xq)); CU(cudaFree(qb.xd)); CU(cudaFree(qb.xs));
    }
    double e = kt_rel_l2(got, want, on), ma = max_abs_err(got, want, on);
    double tol = flash ? 1e-2 : kc_tol(adt);
    KT_CHECK(e <= tol && (!flash || ma < 3e-2), "attention%s %s T=%d S=%d H=%d KV=%d hd=%d bs=%d window=%d: rel L2 %g, "
             "max abs %g", flash == 3 ? " (decode tc split)" : flash ? " (prefill tiles)" : "", kc_dtname(adt), T, S, H,
             KV, hd, bs, g_window, e, ma);
    printf("attention %-5s %-4s T=%-3d S=%d H=%-2d KV=%d hd=%-3d bs=%-2d window=%-3d rel L2 %.3g max abs %.3g\n",
           flash == 3 ? "dectc" : flash ? "flash" : "split", kc_dtname(adt), T, S, H, KV, hd, bs, g_window, e, ma);
    CU(cudaFree(dpool)); CU(cudaFree(dq)); CU(cudaFree(dpos)); CU(cudaFree(drs)); CU(cudaFree(dbt)); CU(cudaFree(dout)); CU(cudaFree(dscr));
    kiln_free(pool); kiln_free(pool8); kiln_free(bt); kiln_free(pos); kiln_free(rs); kiln_free(used); kiln_free(q); kiln_free(want);
    kiln_free(got); kiln_free(oh);
}

/* The combine alone with the int8 blocks (q8): random window states (acc in [-1, 1), m in [-4, 4),
 * l in [0.5, 1.5)) for rows at positions 0..299 (1..16 windows of 32), head t % H of row t with
 * all accumulators 0 (an all-zero output: zero blocks); blocks against kiln_cuda_quantize_x on
 * the stored output, bit for bit, and the output byte for byte the combine's without blocks. */
static void combine_q8(int T, int H, int hd, kiln_dtype adt, unsigned long long *s) {
    int ms = 16, min_w = 32, wr = 16;
    size_t st = (size_t)hd + 2, sn = (size_t)T * H * ms * st, on = (size_t)T * H * hd, as = kc_dtsize(adt);
    float *scr = kiln_malloc(sn * 4);
    int32_t *pos = kiln_malloc((size_t)T * 4);
    for (int t = 0; t < T; t++) pos[t] = (int)(kt_rand_u64(s) % 300);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++)
            for (int z = 0; z < ms; z++) {
                float *w = scr + (((size_t)t * H + h) * ms + z) * st;
                for (int d = 0; d < hd; d++) w[d] = h == t % H ? 0.0f : kt_randf(s);
                w[hd] = 4.0f * kt_randf(s);
                w[hd + 1] = 1.0f + 0.5f * kt_randf(s);
            }
    float *dscr = kc_dev(sn * 4);
    int32_t *dpos = kc_dev((size_t)T * 4);
    void *dout = kc_dev(on * as), *dout0 = kc_dev(on * as);
    kiln_cuda_q8_blocks qb = {kc_dev(on), kc_dev(on / 32 * 4), kc_dev(on / 16 * 4)};
    kc_put(dscr, scr, sn * 4);
    kc_put(dpos, pos, (size_t)T * 4);
    kc_poison(dout, on * as);
    kc_poison(dout0, on * as);
    kc_poison(qb.xq, on);
    kc_poison(qb.xd, on / 32 * 4);
    kc_poison(qb.xs, on / 16 * 4);
    CU(kiln_cuda_attention_combine_win(dout, adt, dscr, dpos, T, H, hd, min_w, ms, wr, 0, &qb, 1, 0));
    CU(kiln_cuda_attention_combine_win(dout0, adt, dscr, dpos, T, H, hd, min_w, ms, wr, 0, NULL, 1, 0));
    unsigned char *a = kiln_malloc(on * as), *b = kiln_malloc(on * as);
    kc_get(a, dout, on * as);
    kc_get(b, dout0, on * as);
    int zero = 0, bad = kc_q8_diff(dout, adt, T, H * hd, qb.xq, qb.xd, qb.xs, &zero);
    int same = memcmp(a, b, on * as) == 0;
    KT_CHECK(bad == 0 && same && zero >= T * hd / 32, "combine q8 %s T=%d H=%d hd=%d: %d block entries differ, output "
             "%s the plain combine's, %d zero blocks", kc_dtname(adt), T, H, hd, bad, same ? "equals" : "differs from",
             zero);
    printf("combine q8 %-4s T=%-2d H=%-2d hd=%-3d: %zu blocks (%d zero) equal quantize_x's\n", kc_dtname(adt), T, H, hd,
           on / 32, zero);
    KT_CHECK(kiln_cuda_attention_combine_win(dout, adt, dscr, dpos, 1, 2, 48, min_w, ms, wr, 0, &qb, 1, 0) ==
                 cudaErrorInvalidValue,
             "combine refuses int8 blocks for hd 48");
    CU(cudaFree(dscr)); CU(cudaFree(dpos)); CU(cudaFree(dout)); CU(cudaFree(dout0));
    CU(cudaFree(qb.xq)); CU(cudaFree(qb.xd)); CU(cudaFree(qb.xs));
    kiln_free(scr); kiln_free(pos); kiln_free(a); kiln_free(b);
}

/* kiln_cuda_prefill_tiles by hand: rows 1 / 16 / 33 / 1 / 99 */
static void tiles_host(void) {
    int32_t qst[6] = {0, 1, 17, 50, 51, 150}, tiles[2 * 32];
    unsigned char cov[150];
    int want[11][2] = {{1, 16}, {17, 16}, {33, 16}, {49, 1}, {51, 16}, {67, 16}, {83, 16}, {99, 16}, {115, 16},
                       {131, 16}, {147, 3}};
    int n = kiln_cuda_prefill_tiles(qst, 5, 16, 16, tiles, 32, cov);
    int ok = n == 11;
    for (int i = 0; ok && i < 11; i++) ok = tiles[2 * i] == want[i][0] && tiles[2 * i + 1] == want[i][1];
    for (int t = 0; ok && t < 150; t++) ok = cov[t] == (t != 0 && t != 50);
    KT_CHECK(ok, "prefill tiles: %d tiles", n);
    /* 5 tiles allowed: the third chunk (7 tiles) is left out whole */
    n = kiln_cuda_prefill_tiles(qst, 5, 16, 16, tiles, 5, cov);
    ok = n == 4 && tiles[6] == 49 && tiles[7] == 1;
    for (int t = 0; ok && t < 150; t++) ok = cov[t] == (t >= 1 && t < 50);
    KT_CHECK(ok, "prefill tiles capped at 5: %d tiles", n);
    /* min_rows 34: only the 99-row chunk; tiles of 64 */
    n = kiln_cuda_prefill_tiles(qst, 5, 34, 64, tiles, 32, cov);
    KT_CHECK(n == 2 && tiles[0] == 51 && tiles[1] == 64 && tiles[2] == 115 && tiles[3] == 35 && cov[50] == 0 &&
                 cov[51] == 1 && cov[149] == 1 && cov[49] == 0,
             "prefill tiles min_rows 34: %d tiles", n);
    KT_CHECK(kiln_cuda_prefill_tile_rows(32, 8) == 16 && kiln_cuda_prefill_tile_rows(8, 8) == 64 &&
                 kiln_cuda_prefill_tile_rows(16, 2) == 8 && kiln_cuda_prefill_tile_rows(6, 2) == 0,
             "prefill tile rows");
}

/* kiln_cuda_wave_splits by hand: up to a wave as many windows as fill it; past a wave the
 * smallest count that keeps >= 90 % of the slots busy */
static void splits_host(void) {
    struct { int64_t n, C; int cap, want; } k[] = {
        {128, 396, 64, 3},  /* batch 16 x 8 KV heads on 3 x 132 slots: one wave */
        {1, 396, 64, 64},   /* one row: capped */
        {8, 396, 16, 16},   /* the scratch's cap */
        {512, 396, 64, 3},  /* batch 64: 65 % busy at 1, 86 % at 2, 97 % at 3 */
        {512, 528, 64, 1},  /* 4 a SM: one wave */
        {1024, 396, 64, 3}, /* 86 %, 86 %, 97 % */
        {2048, 396, 64, 2}, /* 86 %, 94 % */
        {512, 396, 2, 2},   /* capped below the choice */
        {396, 396, 64, 1},
        {0, 396, 64, 1},
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        int got = kiln_cuda_wave_splits(k[i].n, k[i].C, k[i].cap);
        KT_CHECK(got == k[i].want, "wave splits n=%lld C=%lld cap=%d: %d, want %d", (long long)k[i].n,
                 (long long)k[i].C, k[i].cap, got, k[i].want);
    }
}

int main(void) {
    tiles_host();
    splits_host();
    kc_require_gpu();
    unsigned long long s = kc_seed();
    seq_spec mix[] = {{1, 1}, {17, 7}, {40, 1}, {130, 30}, {16, 16}, {33, 2}};
    seq_spec dec[] = {{300, 1}, {5, 1}, {64, 1}};
    seq_spec pre[] = {{200, 200}};
    seq_spec lng[] = {{4200, 1}, {70, 1}};
    /* prefill chunks of 16..300 rows, most starting mid-context, between decodes */
    seq_spec fmix[] = {{1, 1}, {300, 300}, {170, 37}, {40, 1}, {100, 16}, {69, 64}, {33, 17}, {5, 1}};
    kiln_dtype dts[2] = {KILN_DT_F32, KILN_DT_BF16};
    kiln_dtype dts3[3] = {KILN_DT_F32, KILN_DT_BF16, KILN_DT_F16};
    int cq[4][2] = {{1, 32}, {3, 8}, {8, 32}, {5, 4}}; /* (T, H) */
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 4; k++) {
            combine_q8(cq[k][0], cq[k][1], 128, dts3[i], &s);
            combine_q8(cq[k][0], cq[k][1], 64, dts3[i], &s);
        }
    /* f16 out through the split kernel and the tensor-core decode (their blocks checked too) */
    one(dec, 3, 32, 8, 128, 32, KILN_DT_F16, 0, &s);
    one(mix, 6, 8, 2, 64, 16, KILN_DT_F16, 0, &s);
    one(dec, 3, 32, 8, 128, 32, KILN_DT_F16, 3, &s);
    one(mix, 6, 16, 2, 128, 16, KILN_DT_F16, 3, &s);
    for (int i = 0; i < 4; i++) { /* f32, bf16 outputs on the bf16 pool, then on the FP8 pool */
        g_f8 = i >= 2;
        if (i == 2) fprintf(stderr, "FP8 pool (K scale %g, V scale %g)\n", F8_KS, F8_VS);
        one(mix, 6, 8, 2, 64, 16, dts[i % 2], 0, &s);
        one(mix, 6, 32, 8, 128, 16, dts[i % 2], 0, &s);
        one(mix, 6, 4, 2, 48, 32, dts[i % 2], 0, &s);
        one(mix, 6, 8, 8, 16, 16, dts[i % 2], 0, &s);
        one(dec, 3, 32, 8, 128, 32, dts[i % 2], 0, &s);
        one(pre, 1, 8, 2, 128, 16, dts[i % 2], 0, &s);
        one(fmix, 8, 8, 2, 64, 16, dts[i % 2], 1, &s);
        one(fmix, 8, 32, 8, 128, 16, dts[i % 2], 1, &s);
        one(fmix, 8, 8, 2, 128, 32, dts[i % 2], 1, &s);
        one(fmix, 8, 4, 4, 128, 32, dts[i % 2], 1, &s);
        one(fmix, 8, 32, 8, 128, 16, dts[i % 2], 2, &s);
        one(dec, 3, 32, 8, 128, 32, dts[i % 2], 2, &s);
        one(mix, 6, 8, 2, 64, 16, dts[i % 2], 2, &s);
        one(fmix, 8, 8, 8, 64, 16, dts[i % 2], 1, &s);
        one(fmix, 8, 16, 2, 128, 16, dts[i % 2], 1, &s);
        one(fmix, 8, 4, 2, 64, 32, dts[i % 2], 1, &s);
        one(pre, 1, 8, 2, 128, 16, dts[i % 2], 1, &s);
        one(mix, 6, 4, 1, 64, 16, dts[i % 2], 1, &s);
        one(dec, 3, 32, 8, 128, 32, dts[i % 2], 3, &s);
        one(fmix, 8, 32, 8, 128, 16, dts[i % 2], 3, &s);
        one(mix, 6, 8, 2, 64, 16, dts[i % 2], 3, &s);
        one(mix, 6, 16, 2, 128, 16, dts[i % 2], 3, &s);
        /* decode on tensor cores (on the FP8 pool: the codes read into registers) with blocks of
         * 8 and 4 (a warp's 16 keys span 2 and 4 blocks), G = 1 and G = 2 */
        one(dec, 3, 32, 8, 128, 8, dts[i % 2], 3, &s);
        one(mix, 6, 8, 2, 64, 4, dts[i % 2], 3, &s);
        one(mix, 6, 8, 8, 128, 16, dts[i % 2], 3, &s);
        one(dec, 3, 4, 2, 64, 16, dts[i % 2], 3, &s);
        /* 4,200 positions in blocks of 4: the one-window run's 1,050 block ids exceed what the
         * decode kernels stage in shared memory (PF_DEC_BT 1,024): they read the table */
        one(lng, 2, 8, 2, 64, 4, dts[i % 2], 3, &s);
    }
    /* sliding windows (issue 19): every kernel, windows below / at / not a multiple of the block
     * size, on the bf16 and the FP8 pool */
    seq_spec wdec[] = {{300, 1}, {5, 1}, {64, 1}, {129, 1}, {41, 1}};
    int wins[4] = {5, 16, 40, 100};
    for (int i = 0; i < 4; i++) {
        g_f8 = i >= 2;
        kiln_dtype adt = dts[i % 2];
        for (int wi = 0; wi < 4; wi++) {
            g_window = wins[wi];
            one(mix, 6, 8, 2, 64, 16, adt, 0, &s);
            one(wdec, 5, 32, 8, 128, 16, adt, 0, &s);
            one(wdec, 5, 4, 2, 48, 32, adt, 0, &s);
            one(pre, 1, 8, 2, 128, 16, adt, 0, &s);
            one(fmix, 8, 8, 2, 64, 16, adt, 1, &s);
            one(fmix, 8, 32, 8, 128, 16, adt, 1, &s);
            one(fmix, 8, 8, 2, 128, 32, adt, 1, &s);
            one(pre, 1, 8, 2, 128, 16, adt, 1, &s);
            one(fmix, 8, 32, 8, 128, 16, adt, 2, &s);
            one(wdec, 5, 32, 8, 128, 32, adt, 3, &s);
            one(wdec, 5, 32, 8, 128, 8, adt, 3, &s);
            one(fmix, 8, 32, 8, 128, 16, adt, 3, &s);
            one(mix, 6, 8, 2, 64, 16, adt, 3, &s);
        }
    }
    g_window = 0;
    g_f8 = 0;
    /* shapes the prefill kernel does not serve are refused (the caller keeps the split kernel) */
    KT_CHECK(kiln_cuda_attention_prefill(NULL, KILN_DT_F32, NULL, 2 * 48, NULL, NULL, NULL, NULL, 1, 8, 2, 48, 16, NULL, 1, 1,
                                         0) == cudaErrorInvalidValue,
             "prefill refuses hd 48");
    KT_CHECK(kiln_cuda_attention_prefill(NULL, KILN_DT_F32, NULL, 2 * 64, NULL, NULL, NULL, NULL, 1, 6, 2, 64, 16, NULL, 1, 1,
                                         0) == cudaErrorInvalidValue,
             "prefill refuses G = 3");
    /* the decode kernel's MMA rows hold at most 16 heads of a group */
    float scr_dummy = 0;
    KT_CHECK(kiln_cuda_attention_decode_tc(NULL, KILN_DT_F32, NULL, 2 * 64, NULL, NULL, NULL, NULL, 1, 1, 32, 1, 64, 16,
                                           64, 1, &scr_dummy, 1, 0) == cudaErrorInvalidValue,
             "decode tc refuses G = 32");
    return kt_done();
}
