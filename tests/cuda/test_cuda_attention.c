/* test_cuda_attention.c: paged causal GQA attention (attention.cu) for ragged batches against
 * a double-precision reference on the same bf16 pool values.
 * Batches mix decodes and prefill chunks; block tables are random distinct block ids with holes;
 * every pool element outside the sequences' contexts (unused blocks, slots past the context) is
 * NaN, so a read through a wrong block or past the causal limit fails the test. head_dim 16 / 48
 * / 64 / 128, GQA 4:1 and 1:1, block sizes 16 and 32, outputs f32 (1e-5) and bf16 (1e-2). */
#include "backend/cuda/cuda_ops.h"
#include "cuda_test.h"
#include "engine/step.h"
#include "util/alloc.h"

typedef struct { int ctx, rows; } seq_spec;

static void one(const seq_spec *sp, int S, int H, int KV, int hd, int bs, kiln_dtype adt, unsigned long long *s) {
    int T = 0, need = 0, max_nb = 0;
    for (int i = 0; i < S; i++) {
        T += sp[i].rows;
        int nb = (sp[i].ctx + bs - 1) / bs;
        need += nb;
        if (nb > max_nb) max_nb = nb;
    }
    kiln_kv_layout L = {1, KV, hd, bs, 2 * need + 3, 2};
    int64_t pool_n = kiln_kv_elems(&L);
    uint16_t *pool = kiln_malloc((size_t)pool_n * 2);
    for (int64_t i = 0; i < pool_n; i++) pool[i] = 0xffff; /* NaN */
    int32_t *bt = kiln_calloc((size_t)S * max_nb, 4), *pos = kiln_malloc((size_t)T * 4), *rs = kiln_malloc((size_t)T * 4);
    int *used = kiln_calloc((size_t)L.n_blocks, sizeof(int));
    used[0] = 1;
    int t = 0;
    for (int i = 0; i < S; i++) {
        int nb = (sp[i].ctx + bs - 1) / bs;
        for (int b = 0; b < nb; b++) {
            int id;
            do id = 1 + (int)(kt_rand_u64(s) % (uint64_t)(L.n_blocks - 1)); while (used[id]);
            used[id] = 1;
            bt[(size_t)i * max_nb + b] = id;
        }
        for (int j = 0; j < sp[i].ctx; j++) /* K and V of every context position */
            for (int kv = 0; kv < 2; kv++)
                for (int h = 0; h < KV; h++)
                    for (int d = 0; d < hd; d++)
                        pool[kiln_kv_offset(&L, 0, bt[(size_t)i * max_nb + j / bs], kv, h, j % bs) + d] =
                            kiln_f32_to_bf16(kt_randf(s));
        for (int r = 0; r < sp[i].rows; r++, t++) {
            pos[t] = sp[i].ctx - sp[i].rows + r;
            rs[t] = i;
        }
    }
    int qs = (H + 2 * KV) * hd; /* the backend's qkv row stride */
    float *q = kiln_malloc((size_t)T * qs * 4);
    kc_rand(q, (size_t)T * qs, 4.0f, s);
    /* reference in double */
    float *want = kiln_malloc((size_t)T * H * hd * 4), *got = kiln_malloc((size_t)T * H * hd * 4);
    double *sc = kiln_malloc(sizeof(double) * 4096), *acc = kiln_malloc(sizeof(double) * hd);
    double scale = 1.0 / sqrt((double)hd);
    for (t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            int kvh = h / (H / KV), p = pos[t];
            const int32_t *b = bt + (size_t)rs[t] * max_nb;
            const float *qr = q + (size_t)t * qs + (size_t)h * hd;
            double mx = -INFINITY, sum = 0;
            for (int j = 0; j <= p; j++) {
                const uint16_t *kp = pool + kiln_kv_offset(&L, 0, b[j / bs], 0, kvh, j % bs);
                double d = 0;
                for (int i = 0; i < hd; i++) d += (double)qr[i] * kiln_bf16_to_f32(kp[i]);
                sc[j] = d * scale;
                if (sc[j] > mx) mx = sc[j];
            }
            for (int i = 0; i < hd; i++) acc[i] = 0;
            for (int j = 0; j <= p; j++) {
                double w = exp(sc[j] - mx);
                sum += w;
                const uint16_t *vp = pool + kiln_kv_offset(&L, 0, b[j / bs], 1, kvh, j % bs);
                for (int i = 0; i < hd; i++) acc[i] += w * kiln_bf16_to_f32(vp[i]);
            }
            for (int i = 0; i < hd; i++) want[((size_t)t * H + h) * hd + i] = (float)(acc[i] / sum);
        }
    size_t as = kc_dtsize(adt), on = (size_t)T * H * hd;
    uint16_t *dpool = kc_dev((size_t)pool_n * 2);
    float *dq = kc_dev((size_t)T * qs * 4);
    int32_t *dpos = kc_dev((size_t)T * 4), *drs = kc_dev((size_t)T * 4), *dbt = kc_dev((size_t)S * max_nb * 4);
    void *dout = kc_dev(on * as), *oh = kiln_malloc(on * as);
    kc_put(dpool, pool, (size_t)pool_n * 2);
    kc_put(dq, q, (size_t)T * qs * 4);
    kc_put(dpos, pos, (size_t)T * 4);
    kc_put(drs, rs, (size_t)T * 4);
    kc_put(dbt, bt, (size_t)S * max_nb * 4);
    kc_poison(dout, on * as);
    int max_pos = 0, max_splits = 0;
    for (int t = 0; t < T; t++) if (pos[t] > max_pos) max_pos = pos[t];
    /* a small window width too, so that rows span several windows */
    int split_w = kiln_cuda_attention_split_width(max_nb * bs, &max_splits);
    if (T % 2) { split_w = 16; max_splits = (max_nb * bs + 15) / 16; }
    float *dscr = kc_dev((size_t)T * H * max_splits * (hd + 2) * 4);
    CU(kiln_cuda_attention(dout, adt, dq, qs, dpool, dpos, drs, dbt, max_nb, T, H, KV, hd, bs, max_pos, split_w, max_splits,
                           dscr, 0));
    kc_get(oh, dout, on * as);
    kc_from_dt(adt, oh, got, on);
    double e = kt_rel_l2(got, want, on);
    KT_CHECK(e <= kc_tol(adt), "attention %s T=%d S=%d H=%d KV=%d hd=%d bs=%d: rel L2 %g", kc_dtname(adt), T, S, H, KV,
             hd, bs, e);
    printf("attention %-4s T=%-3d S=%d H=%-2d KV=%d hd=%-3d bs=%-2d rel L2 %.3g\n", kc_dtname(adt), T, S, H, KV, hd, bs, e);
    CU(cudaFree(dpool)); CU(cudaFree(dq)); CU(cudaFree(dpos)); CU(cudaFree(drs)); CU(cudaFree(dbt)); CU(cudaFree(dout)); CU(cudaFree(dscr));
    kiln_free(pool); kiln_free(bt); kiln_free(pos); kiln_free(rs); kiln_free(used); kiln_free(q); kiln_free(want);
    kiln_free(got); kiln_free(sc); kiln_free(acc); kiln_free(oh);
}

int main(void) {
    kc_require_gpu();
    unsigned long long s = kc_seed();
    seq_spec mix[] = {{1, 1}, {17, 7}, {40, 1}, {130, 30}, {16, 16}, {33, 2}};
    seq_spec dec[] = {{300, 1}, {5, 1}, {64, 1}};
    seq_spec pre[] = {{200, 200}};
    kiln_dtype dts[2] = {KILN_DT_F32, KILN_DT_BF16};
    for (int i = 0; i < 2; i++) {
        one(mix, 6, 8, 2, 64, 16, dts[i], &s);
        one(mix, 6, 32, 8, 128, 16, dts[i], &s);
        one(mix, 6, 4, 2, 48, 32, dts[i], &s);
        one(mix, 6, 8, 8, 16, 16, dts[i], &s);
        one(dec, 3, 32, 8, 128, 32, dts[i], &s);
        one(pre, 1, 8, 2, 128, 16, dts[i], &s);
    }
    return kt_done();
}
