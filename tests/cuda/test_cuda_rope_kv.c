/* test_cuda_rope_kv.c: RoPE fused with the KV-pool write (rope_kv.cu) against kiln_cpu_rope:
 * both styles, head_dim 16 / 48 / 64 / 128, GQA 4:1, theta 1e4 and 1e9, positions up to
 * 131071, slots scattered over a poisoned pool. Checks: rotated q and k (f32, 1e-5), the K and
 * V tiles in the bf16 pool (1e-2, against the CPU's f32 values), and that no other pool element
 * was touched (still poison).
 * Issue 19 (tab_case): kiln_cuda_qk_prep (Qwen2 biases, Qwen3 per-head RMSNorm) then
 * kiln_cuda_rope_kv_tab with the frequency table of rope.c (linear, dynamic, llama3, yarn with
 * its attention factor, GGUF rope_freqs) against the CPU backend's own chain (kiln_cpu_add_bias,
 * kiln_cpu_rmsnorm, kiln_cpu_rope_angles_inv, kiln_cpu_rope_apply): q and k within 1e-5, V in
 * the pool (biased) within bf16; and a control: the same GPU call without the table must miss
 * (the scaling case changes the result, so the check can fail). The backend's form (the factors
 * once a step by kiln_cuda_rope_cs, every layer's kiln_cuda_rope_kv_cs) gives the same bytes as
 * the kernel computing them itself, with and without the table. */
#include <math.h>
#include "backend/cpu/kernels.h"
#include "backend/cuda/cuda_ops.h"
#include "cuda_test.h"
#include "util/fp8.h"
#include "step/step.h"
#include "util/alloc.h"
#include "model/model.h"

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
        kiln_cuda_kv kv = {dpool, 1, 0.37f, 1.9f, 0};
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

/* one issue-19 case: bias / norm as flags, sc the scaling (type NONE with rope_freqs set: GGUF) */
static void tab_case(const char *name, int T, int H, int KV, int hd, int bs, double theta, kiln_rope_scaling sc,
                     int use_freqs, int use_bias, int use_norm, kiln_rope_style style, unsigned long long *s) {
    int W = (H + 2 * KV) * hd, half = hd / 2;
    kiln_kv_layout L = {.n_layers = 1, .n_kv_heads = KV, .head_dim = hd, .block_size = bs, .n_blocks = 0,
                        .dtype = KILN_KV_BF16, .elem_bytes = 2};
    L.n_blocks = T / bs + 2;
    int64_t pool_n = kiln_kv_elems(&L);
    kiln_model m;
    memset(&m, 0, sizeof m);
    snprintf(m.path, sizeof m.path, "test");
    m.cfg.head_dim = hd;
    m.cfg.rope_theta = theta;
    m.cfg.max_seq_len = 131072;
    m.cfg.rope_scaling = sc;
    float *freqs = kiln_malloc((size_t)half * 4);
    for (int i = 0; i < half; i++) freqs[i] = i < half / 4 ? 1.0f : i < half / 2 ? 2.5f : 8.0f;
    if (use_freqs) m.rope_freqs = freqs;
    double *inv = kiln_malloc((size_t)half * 8), mscale = 0;
    kiln_error err;
    KT_CHECK(kiln_rope_inv_freq(&m, inv, &mscale, &err) == KILN_OK, "%s: kiln_rope_inv_freq: %s", name, err.msg);
    float *qkv = kiln_malloc((size_t)T * W * 4), *bias = kiln_malloc((size_t)W * 4), *nw = kiln_malloc((size_t)2 * hd * 4);
    float *q = kiln_malloc((size_t)T * H * hd * 4), *k = kiln_malloc((size_t)T * KV * hd * 4);
    float *v = kiln_malloc((size_t)T * KV * hd * 4), *got = kiln_malloc((size_t)T * W * 4);
    double *cs = kiln_malloc((size_t)T * half * 8), *sn = kiln_malloc((size_t)T * half * 8);
    int32_t *pos = kiln_malloc((size_t)T * 4);
    int64_t *slots = kiln_malloc((size_t)T * 8);
    uint16_t *pool = kiln_malloc((size_t)pool_n * 2);
    kc_rand(qkv, (size_t)T * W, 2.0f, s);
    kc_rand(bias, (size_t)W, 0.5f, s);
    kc_rand(nw, (size_t)2 * hd, 0.5f, s);
    for (int i = 0; i < 2 * hd; i++) nw[i] += 1.0f;
    for (int t = 0; t < T; t++) {
        pos[t] = t == 0 ? 0 : t == 1 ? 131071 : t == 2 ? 5000 : (int)(kt_rand_u64(s) % 131072);
        slots[t] = bs + t; /* distinct, past the null block */
        memcpy(q + (size_t)t * H * hd, qkv + (size_t)t * W, (size_t)H * hd * 4);
        memcpy(k + (size_t)t * KV * hd, qkv + (size_t)t * W + (size_t)H * hd, (size_t)KV * hd * 4);
        memcpy(v + (size_t)t * KV * hd, qkv + (size_t)t * W + (size_t)(H + KV) * hd, (size_t)KV * hd * 4);
    }
    /* the CPU backend's chain (cpu_backend.c forward) */
    if (use_bias) {
        kiln_cpu_add_bias(q, bias, T, H * hd);
        kiln_cpu_add_bias(k, bias + H * hd, T, KV * hd);
        kiln_cpu_add_bias(v, bias + (H + KV) * hd, T, KV * hd);
    }
    if (use_norm) {
        kiln_cpu_rmsnorm(NULL, q, q, nw, T * H, hd, 1e-6f);
        kiln_cpu_rmsnorm(NULL, k, k, nw + hd, T * KV, hd, 1e-6f);
    }
    kiln_cpu_rope_angles_inv(cs, sn, pos, T, half, inv, mscale);
    kiln_cpu_rope_apply(NULL, q, cs, sn, T, H, hd, style);
    kiln_cpu_rope_apply(NULL, k, cs, sn, T, KV, hd, style);
    float *dqkv = kc_dev((size_t)T * W * 4), *dbias = kc_dev((size_t)W * 4), *dnw = kc_dev((size_t)2 * hd * 4);
    double *dinv = kc_dev((size_t)half * 8);
    int32_t *dpos = kc_dev((size_t)T * 4);
    int64_t *dsl = kc_dev((size_t)T * 8);
    uint16_t *dpool = kc_dev((size_t)pool_n * 2);
    kc_put(dbias, bias, (size_t)W * 4);
    kc_put(dnw, nw, (size_t)2 * hd * 4);
    kc_put(dinv, inv, (size_t)half * 8);
    kc_put(dpos, pos, (size_t)T * 4);
    kc_put(dsl, slots, (size_t)T * 8);
    double eq = 0, ek = 0, ev = 0, ctl = 0;
    for (int pass = 0; pass < 2; pass++) { /* 0: the table; 1: control without it */
        kc_put(dqkv, qkv, (size_t)T * W * 4);
        kc_poison(dpool, (size_t)pool_n * 2);
        kiln_cuda_kv kv = {dpool, 0, 1.0f, 1.0f, 0};
        CU(kiln_cuda_qk_prep(dqkv, use_bias ? dbias : NULL, use_norm ? dnw : NULL, use_norm ? dnw + hd : NULL, T, H, KV,
                             hd, 1e-6f, 1, 0));
        CU(kiln_cuda_rope_kv_tab(dqkv, dpos, dsl, &kv, T, H, KV, hd, bs, theta, pass ? NULL : dinv, pass ? 1.0 : mscale,
                                 style == KILN_ROPE_INTERLEAVED, NULL, NULL, 1, 0));
        kc_get(got, dqkv, (size_t)T * W * 4);
        kc_get(pool, dpool, (size_t)pool_n * 2);
        double nq = 0, dq = 0, nk = 0, dk = 0, nv = 0, dv = 0;
        for (int t = 0; t < T; t++) {
            for (int i = 0; i < H * hd; i++) {
                double a = got[(size_t)t * W + i], b = q[(size_t)t * H * hd + i];
                dq += (a - b) * (a - b);
                nq += b * b;
            }
            for (int i = 0; i < KV * hd; i++) {
                double a = got[(size_t)t * W + H * hd + i], b = k[(size_t)t * KV * hd + i];
                dk += (a - b) * (a - b);
                nk += b * b;
                int h = i / hd, d = i % hd;
                int64_t blk = slots[t] / bs;
                int off = (int)(slots[t] % bs);
                double pv = kiln_bf16_to_f32(pool[kiln_kv_offset(&L, 0, blk, 1, h, off) + d]);
                double wv = v[(size_t)t * KV * hd + i];
                dv += (pv - wv) * (pv - wv);
                nv += wv * wv;
            }
        }
        if (pass == 0) {
            eq = sqrt(dq / nq);
            ek = sqrt(dk / nk);
            ev = sqrt(dv / nv);
        } else ctl = sqrt(dq / nq);
    }
    if (!use_bias && !use_norm) { /* FP8 sums scaled on the way in == kiln_cuda_fp8_scale_rows first (bytes) */
        float *hs = kiln_malloc((size_t)T * 4), *hw = kiln_malloc((size_t)W * 4), *ga = kiln_malloc((size_t)T * W * 4);
        uint16_t *pa = kiln_malloc((size_t)pool_n * 2);
        for (int t = 0; t < T; t++) hs[t] = ldexpf(1.5f + 0.5f * kt_randf(s), -2 + t % 5);
        for (int i = 0; i < W; i++) hw[i] = ldexpf(1.5f + 0.5f * kt_randf(s), -(i % 7));
        float *ds = kc_dev((size_t)T * 4), *dws = kc_dev((size_t)W * 4);
        kc_put(ds, hs, (size_t)T * 4);
        kc_put(dws, hw, (size_t)W * 4);
        kiln_cuda_kv kv = {dpool, 0, 1.0f, 1.0f, 0};
        for (int pass = 0; pass < 2; pass++) {
            kc_put(dqkv, qkv, (size_t)T * W * 4);
            kc_poison(dpool, (size_t)pool_n * 2);
            if (pass) CU(kiln_cuda_fp8_scale_rows(dqkv, W, ds, dws, T, W, 0));
            CU(kiln_cuda_rope_kv_tab(dqkv, dpos, dsl, &kv, T, H, KV, hd, bs, theta, dinv, mscale,
                                     style == KILN_ROPE_INTERLEAVED, pass ? NULL : ds, pass ? NULL : dws, 1, 0));
            kc_get(pass ? got : ga, dqkv, (size_t)T * W * 4);
            kc_get(pass ? pool : pa, dpool, (size_t)pool_n * 2);
        }
        /* V is not written back into qkv: compare the q | k columns, and the whole pool */
        int same = !memcmp(pa, pool, (size_t)pool_n * 2);
        for (int t = 0; t < T; t++) same &= !memcmp(ga + (size_t)t * W, got + (size_t)t * W, (size_t)(H + KV) * hd * 4);
        KT_CHECK(same, "%s hd=%d: qkv scales in RoPE differ from kiln_cuda_fp8_scale_rows first", name, hd);
        CU(cudaFree(ds)); CU(cudaFree(dws));
        kiln_free(hs); kiln_free(hw); kiln_free(ga); kiln_free(pa);
    }
    { /* the factors once a step (kiln_cuda_rope_cs, then kiln_cuda_rope_kv_cs: what the backend runs) ==
       * the kernel's own (bytes), with the model's table and with theta's */
        float *ga = kiln_malloc((size_t)T * W * 4);
        uint16_t *pa = kiln_malloc((size_t)pool_n * 2);
        double *dcs = kc_dev((size_t)T * half * 16);
        kiln_cuda_kv kv = {dpool, 0, 1.0f, 1.0f, 0};
        int same = 1, inter = style == KILN_ROPE_INTERLEAVED;
        for (int tab = 0; tab < 2; tab++)
            for (int pass = 0; pass < 2; pass++) {
                kc_put(dqkv, qkv, (size_t)T * W * 4);
                kc_poison(dpool, (size_t)pool_n * 2);
                if (pass) {
                    kc_poison(dcs, (size_t)T * half * 16);
                    CU(kiln_cuda_rope_cs(dcs, dpos, T, hd, theta, tab ? dinv : NULL, tab ? mscale : 1.0, 0));
                    CU(kiln_cuda_rope_kv_cs(dqkv, dpos, dsl, &kv, T, H, KV, hd, bs, dcs, inter, NULL, NULL, 1, 0));
                } else {
                    CU(kiln_cuda_rope_kv_tab(dqkv, dpos, dsl, &kv, T, H, KV, hd, bs, theta, tab ? dinv : NULL,
                                             tab ? mscale : 1.0, inter, NULL, NULL, 1, 0));
                }
                kc_get(pass ? got : ga, dqkv, (size_t)T * W * 4);
                kc_get(pass ? pool : pa, dpool, (size_t)pool_n * 2);
                if (!pass) continue;
                same &= !memcmp(pa, pool, (size_t)pool_n * 2);
                for (int t = 0; t < T; t++)
                    same &= !memcmp(ga + (size_t)t * W, got + (size_t)t * W, (size_t)(H + KV) * hd * 4);
            }
        KT_CHECK(same, "%s hd=%d: RoPE with the step's factors (kiln_cuda_rope_cs) differs from the kernel's own", name,
                 hd);
        KT_CHECK(kiln_cuda_rope_kv_cs(dqkv, dpos, dsl, &kv, T, H, KV, hd, bs, NULL, inter, NULL, NULL, 1, 0) ==
                     cudaErrorInvalidValue, "kiln_cuda_rope_kv_cs without factors taken");
        CU(cudaFree(dcs));
        kiln_free(ga); kiln_free(pa);
    }
    const char *sty = style == KILN_ROPE_INTERLEAVED ? "interleaved" : "half";
    KT_CHECK(eq <= 1e-5 && ek <= 1e-5 && ev <= 1e-2, "%s %s hd=%d: q rel L2 %g, k %g, pool V %g", name, sty, hd, eq, ek,
             ev);
    KT_CHECK(ctl > 1e-3, "%s %s hd=%d: without the table q is still within %g of the scaled CPU (the case tests "
             "nothing)", name, sty, hd, ctl);
    printf("rope_tab %-18s %-11s T=%-3d H=%-2d KV=%d hd=%-3d bias=%d norm=%d mscale=%.6f q %.2g k %.2g V %.2g "
           "(no table: %.2g)\n", name, sty, T, H, KV, hd, use_bias, use_norm, mscale, eq, ek, ev, ctl);
    CU(cudaFree(dqkv)); CU(cudaFree(dbias)); CU(cudaFree(dnw)); CU(cudaFree(dinv)); CU(cudaFree(dpos));
    CU(cudaFree(dsl)); CU(cudaFree(dpool));
    kiln_free(freqs); kiln_free(inv); kiln_free(qkv); kiln_free(bias); kiln_free(nw); kiln_free(q); kiln_free(k);
    kiln_free(v); kiln_free(got); kiln_free(cs); kiln_free(sn); kiln_free(pos); kiln_free(slots); kiln_free(pool);
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
    /* issue 19: the frequency table (every scaling), biases and q/k norms */
    for (int st = 0; st < 2; st++) {
        kiln_rope_style sty = st ? KILN_ROPE_INTERLEAVED : KILN_ROPE_HALF;
        kiln_rope_scaling lin = {.type = KILN_ROPE_SCALING_LINEAR, .factor = 4.0};
        kiln_rope_scaling dyn = {.type = KILN_ROPE_SCALING_DYNAMIC, .factor = 2.0, .orig_max_pos = 2048};
        kiln_rope_scaling l3 = {.type = KILN_ROPE_SCALING_LLAMA3, .factor = 8.0, .orig_max_pos = 8192,
                                .low_freq_factor = 1.0, .high_freq_factor = 4.0};
        kiln_rope_scaling yarn = {.type = KILN_ROPE_SCALING_YARN, .factor = 4.0, .orig_max_pos = 4096, .truncate = 1};
        kiln_rope_scaling yarn_ds = {.type = KILN_ROPE_SCALING_YARN, .factor = 40.0, .orig_max_pos = 4096,
                                     .mscale = 1.0, .mscale_all_dim = 0.707, .beta_fast = 32, .beta_slow = 1};
        kiln_rope_scaling none = {.type = KILN_ROPE_SCALING_NONE};
        tab_case("linear", 17, 8, 2, 64, 16, 1e4, lin, 0, 0, 0, sty, &s);
        tab_case("dynamic", 17, 8, 2, 64, 16, 1e4, dyn, 0, 0, 0, sty, &s);
        tab_case("llama3", 33, 32, 8, 128, 16, 5e5, l3, 0, 0, 0, sty, &s);
        tab_case("yarn", 33, 16, 4, 128, 16, 1e6, yarn, 0, 1, 1, sty, &s);
        tab_case("yarn-mscale", 9, 8, 8, 64, 16, 1e4, yarn_ds, 0, 0, 0, sty, &s);
        tab_case("gguf-rope_freqs", 9, 8, 2, 64, 16, 5e5, none, 1, 0, 0, sty, &s);
        tab_case("qwen2-bias+linear", 21, 14, 2, 64, 16, 1e6, lin, 0, 1, 0, sty, &s);
        tab_case("qwen3-norm+llama3", 21, 16, 8, 128, 16, 1e6, l3, 0, 0, 1, sty, &s);
    }
    return kt_done();
}
