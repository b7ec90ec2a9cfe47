/* test_cuda_rope_kv.c: RoPE fused with the KV-pool write (rope_kv.cu) against kiln_cpu_rope:
 * both styles, head_dim 16 / 48 / 64 / 128, GQA 4:1, theta 1e4 and 1e9, positions up to
 * 131071, slots scattered over a poisoned pool. Checks: rotated q and k (f32, 1e-5), the K and
 * V tiles in the bf16 pool (1e-2, against the CPU's f32 values), and that no other pool element
 * was touched (still poison). */
#include "backend/cpu/kernels.h"
#include "backend/cuda/cuda_ops.h"
#include "cuda_test.h"
#include "util/fp8.h"
#include "step/step.h"
#include "util/alloc.h"

static void one(int T, int H, int KV, int hd, int bs, double theta, kiln_rope_style style, unsigned long long *s) {
    int W = (H + 2 * KV) * hd;
    kiln_kv_layout L = {.n_layers = 1, .n_kv_heads = KV, .head_dim = hd, .block_size = bs, .n_blocks = 0,
                        .dtype = KILN_KV_BF16, .elem_bytes = 2};
    L.n_blocks = (T + bs - 1) / bs * 2 + 3;
    int64_t n_slots = (int64_t)L.n_blocks * bs, pool_n = kiln_kv_elems(&L);
    float *qkv = kiln_malloc((size_t)T * W * 4), *q = kiln_malloc((size_t)T * H * hd * 4);
    float *k = kiln_malloc((size_t)T * KV * hd * 4), *got = kiln_malloc((size_t)T * W * 4);
    int32_t *pos = kiln_malloc((size_t)T * 4);
    int64_t *slots = kiln_malloc((size_t)T * 8);
    uint16_t *pool = kiln_malloc((size_t)pool_n * 2);
    kc_rand(qkv, (size_t)T * W, 2.0f, s);
    for (int t = 0; t < T; t++) {
        pos[t] = t == 0 ? 0 : t == 1 ? 131071 : (int)(kt_rand_u64(s) % 131072);
        int64_t sl;
        int dup;
        do { /* distinct slots, block 0 included (the null block is a legal target) */
            sl = (int64_t)(kt_rand_u64(s) % (uint64_t)n_slots);
            dup = 0;
            for (int u = 0; u < t; u++) dup |= slots[u] == sl;
        } while (dup);
        slots[t] = sl;
    }
    for (int t = 0; t < T; t++) {
        memcpy(q + (size_t)t * H * hd, qkv + (size_t)t * W, (size_t)H * hd * 4);
        memcpy(k + (size_t)t * KV * hd, qkv + (size_t)t * W + (size_t)H * hd, (size_t)KV * hd * 4);
    }
    kiln_cpu_rope(q, pos, T, H, hd, theta, style);
    kiln_cpu_rope(k, pos, T, KV, hd, theta, style);
    float *dqkv = kc_dev((size_t)T * W * 4);
    int32_t *dpos = kc_dev((size_t)T * 4);
    int64_t *dsl = kc_dev((size_t)T * 8);
    uint16_t *dpool = kc_dev((size_t)pool_n * 2);
    kc_put(dqkv, qkv, (size_t)T * W * 4);
    kc_put(dpos, pos, (size_t)T * 4);
    kc_put(dsl, slots, (size_t)T * 8);
    kc_poison(dpool, (size_t)pool_n * 2);
    CU(kiln_cuda_rope_kv(dqkv, dpos, dsl, dpool, T, H, KV, hd, bs, theta, style == KILN_ROPE_INTERLEAVED, 1, 0));
    kc_get(got, dqkv, (size_t)T * W * 4);
    kc_get(pool, dpool, (size_t)pool_n * 2);
    /* q and k in place */
    float *gq = kiln_malloc((size_t)T * H * hd * 4), *gk = kiln_malloc((size_t)T * KV * hd * 4);
    float *pk = kiln_malloc((size_t)T * KV * hd * 4), *pv = kiln_malloc((size_t)T * KV * hd * 4);
    float *wv = kiln_malloc((size_t)T * KV * hd * 4);
    for (int t = 0; t < T; t++) {
        memcpy(gq + (size_t)t * H * hd, got + (size_t)t * W, (size_t)H * hd * 4);
        memcpy(gk + (size_t)t * KV * hd, got + (size_t)t * W + (size_t)H * hd, (size_t)KV * hd * 4);
        memcpy(wv + (size_t)t * KV * hd, qkv + (size_t)t * W + (size_t)(H + KV) * hd, (size_t)KV * hd * 4);
        for (int h = 0; h < KV; h++)
            for (int d = 0; d < hd; d++) {
                int64_t blk = slots[t] / bs;
                int off = (int)(slots[t] % bs);
                pk[((size_t)t * KV + h) * hd + d] = kiln_bf16_to_f32(pool[kiln_kv_offset(&L, 0, blk, 0, h, off) + d]);
                pv[((size_t)t * KV + h) * hd + d] = kiln_bf16_to_f32(pool[kiln_kv_offset(&L, 0, blk, 1, h, off) + d]);
            }
    }
    double eq = kt_rel_l2(gq, q, (size_t)T * H * hd), ek = kt_rel_l2(gk, k, (size_t)T * KV * hd);
    double epk = kt_rel_l2(pk, k, (size_t)T * KV * hd), epv = kt_rel_l2(pv, wv, (size_t)T * KV * hd);
    int64_t untouched = 0;
    for (int64_t i = 0; i < pool_n; i++) untouched += pool[i] == 0xffff;
    int64_t want_untouched = pool_n - (int64_t)T * 2 * KV * hd;
    const char *sty = style == KILN_ROPE_INTERLEAVED ? "interleaved" : "half";
    KT_CHECK(eq <= 1e-5 && ek <= 1e-5, "rope %s hd=%d theta=%g: q rel L2 %g, k %g", sty, hd, theta, eq, ek);
    KT_CHECK(epk <= 1e-2 && epv <= 1e-2, "rope %s hd=%d: pool K rel L2 %g, V %g", sty, hd, epk, epv);
    KT_CHECK(untouched == want_untouched, "rope %s hd=%d: %lld pool elements still poison, want %lld", sty, hd,
             (long long)untouched, (long long)want_untouched);
    printf("rope_kv %-11s T=%-3d H=%-2d KV=%d hd=%-3d bs=%-2d theta=%-5g q %.2g k %.2g poolK %.2g poolV %.2g\n", sty, T,
           H, KV, hd, bs, theta, eq, ek, epk, epv);
    /* the FP8 pool (issue 17): the same rows again into e4m3 codes; each code must be exactly
     * e4m3(value / scale) of the GPU's own rotated K (checked above against the CPU) and of V */
    {
        uint8_t *pool8 = kiln_malloc((size_t)pool_n);
        kc_put(dqkv, qkv, (size_t)T * W * 4);
        kc_poison(dpool, (size_t)pool_n);
        kiln_cuda_kv kv = {dpool, 1, 0.37f, 1.9f};
        CU(kiln_cuda_rope_kv_ex(dqkv, dpos, dsl, &kv, T, H, KV, hd, bs, theta, style == KILN_ROPE_INTERLEAVED, 1, 0));
        kc_get(pool8, dpool, (size_t)pool_n);
        int64_t bad = 0, left = 0;
        for (int t = 0; t < T; t++)
            for (int h = 0; h < KV; h++)
                for (int d = 0; d < hd; d++) {
                    int64_t blk = slots[t] / bs;
                    int off = (int)(slots[t] % bs);
                    bad += pool8[kiln_kv_offset(&L, 0, blk, 0, h, off) + d] !=
                           kiln_f32_to_e4m3(gk[((size_t)t * KV + h) * hd + d] / 0.37f);
                    bad += pool8[kiln_kv_offset(&L, 0, blk, 1, h, off) + d] !=
                           kiln_f32_to_e4m3(wv[((size_t)t * KV + h) * hd + d] / 1.9f);
                }
        for (int64_t i = 0; i < pool_n; i++) left += pool8[i] == 0xff;
        KT_CHECK(bad == 0 && left >= want_untouched, "rope %s hd=%d FP8 pool: %lld codes differ from e4m3(value / scale), "
                 "%lld poison bytes left (want >= %lld)", sty, hd, (long long)bad, (long long)left,
                 (long long)want_untouched);
        kiln_free(pool8);
    }
    CU(cudaFree(dqkv)); CU(cudaFree(dpos)); CU(cudaFree(dsl)); CU(cudaFree(dpool));
    kiln_free(qkv); kiln_free(q); kiln_free(k); kiln_free(got); kiln_free(pos); kiln_free(slots); kiln_free(pool);
    kiln_free(gq); kiln_free(gk); kiln_free(pk); kiln_free(pv); kiln_free(wv);
}

int main(void) {
    kc_require_gpu();
    unsigned long long s = kc_seed();
    for (int st = 0; st < 2; st++) {
        kiln_rope_style sty = st ? KILN_ROPE_INTERLEAVED : KILN_ROPE_HALF;
        one(5, 8, 2, 64, 16, 1e4, sty, &s);
        one(37, 32, 8, 128, 16, 1e9, sty, &s);
        one(9, 4, 2, 48, 16, 1e9, sty, &s);
        one(20, 8, 4, 16, 32, 1e4, sty, &s);
        one(64, 8, 2, 128, 64, 1e6, sty, &s);
    }
    return kt_done();
}
