/* kiln-layer: backend (links only this layer and those below it) */
/* test_cpu_attention.c: kiln_cpu_attention (backend/cpu/attention.h) against a naive
 * double-precision causal GQA attention, on random inputs over a random paged layout:
 *   - ragged steps: several sequences, each with its own context length and 1..n query rows
 *     at its last positions (chunked prefill and decode rows in one step);
 *   - GQA (G = 1, 2, 3, 4, 8), head_dim 64 (the AVX kernels' special case) and others, block
 *     sizes 4..16, a layer other than 0;
 *   - block tables with shuffled physical block ids; the pool's unwritten slots hold NaN, so a
 *     read outside a sequence's blocks or past the last written slot poisons the result;
 *   - every supported ISA, 1..3 threads: within 1e-5 relative (L2, per row and head) of float64,
 *     and bit-identical whatever the thread count and the prefetch flag;
 *   - attention windows (1, 5, 31 keys) against the windowed float64 reference on every ISA; a
 *     window as long as the context gives the bits of full attention;
 *   - query blocks (q_block 2, 3, 7, 16, 64: rows of a sequence sharing each K/V read) give the
 *     bits of one row at a time, on every ISA, with and without windows, 1 and 3 threads, over
 *     sequences of 1..64 query rows;
 *   - inconsistent arguments are KILN_ERR_INVALID_ARG;
 *   - cpu.attn "bf16" (AMX-BF16 tiles, attention_amx.c; skipped loudly where the CPU lacks
 *     them): within 4e-3 of a float64 reference on bf16-rounded q, k, v (what is left is the
 *     probabilities' rounding, <= 2^-9 of a row's largest value), a window of 1 exactly the
 *     rounded value, no read of a poisoned slot, the same bits whatever the query block, the
 *     thread count and the pool's type (f32, or bf16 / f16 holding the same values). */
#include <math.h>
#include "test.h"
#include "backend/cpu/attention.h"
#include "util/alloc.h"
#include "util/error.h"
#include "util/fp16.h"
#include "util/threads.h"

enum { MAX_SEQS = 5, MAX_LEN = 96, MAX_QB = 64 };

typedef struct shape { int H, KV, hd, bs; } shape;

typedef struct problem {
    shape sh;
    kiln_kv_layout L;
    float *kv;                 /* the pool, kiln_kv_elems(&L) floats */
    int n_seqs, T;
    int ctx[MAX_SEQS];         /* tokens in each sequence's KV */
    int32_t qs[MAX_SEQS + 1], pos[MAX_SEQS * MAX_LEN];
    int32_t bt[MAX_SEQS][MAX_LEN]; /* [n_seqs][max_blocks] (max_blocks = MAX_LEN: bs >= 1) */
    int max_blocks;
    float *q;                  /* [T][H * hd] */
} problem;

/* A random step over a random paged layout. */
static void make_problem(problem *p, shape sh, unsigned long long *seed) {
    memset(p, 0, sizeof *p);
    p->sh = sh;
    p->max_blocks = (MAX_LEN + sh.bs - 1) / sh.bs;
    p->n_seqs = 1 + (int)(kt_rand_u64(seed) % MAX_SEQS);
    int need = 0;
    for (int i = 0; i < p->n_seqs; i++) {
        p->ctx[i] = 1 + (int)(kt_rand_u64(seed) % MAX_LEN);
        need += (p->ctx[i] + sh.bs - 1) / sh.bs;
    }
    /* shuffled block ids 1..n_blocks-1 (0 is the null block), some left unused */
    int n_blocks = need + 1 + 3;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)n_blocks);
    for (int b = 0; b < n_blocks - 1; b++) ids[b] = b + 1;
    for (int b = n_blocks - 2; b > 0; b--) {
        int j = (int)(kt_rand_u64(seed) % (unsigned)(b + 1));
        int32_t t = ids[b]; ids[b] = ids[j]; ids[j] = t;
    }
    p->L = (kiln_kv_layout){.n_layers = 2, .n_kv_heads = sh.KV, .head_dim = sh.hd, .block_size = sh.bs,
                            .n_blocks = n_blocks, .elem_bytes = 4};
    size_t n = (size_t)kiln_kv_elems(&p->L);
    p->kv = kiln_malloc_aligned(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p->kv[i] = NAN;
    int next = 0, t = 0;
    for (int i = 0; i < p->n_seqs; i++) {
        for (int b = 0; b < (p->ctx[i] + sh.bs - 1) / sh.bs; b++) p->bt[i][b] = ids[next++];
        for (int j = 0; j < p->ctx[i]; j++) /* K and V of every position of the layer tested (1) */
            for (int kvi = 0; kvi < 2; kvi++)
                for (int h = 0; h < sh.KV; h++) {
                    float *d = p->kv + kiln_kv_offset(&p->L, 1, p->bt[i][j / sh.bs], kvi, h, j % sh.bs);
                    for (int e = 0; e < sh.hd; e++) d[e] = kt_randf(seed);
                }
        /* query rows: the last nq positions (1 = decode) */
        int nq = 1 + (int)(kt_rand_u64(seed) % (unsigned)(p->ctx[i] < 64 ? p->ctx[i] : 64));
        if (kt_rand_u64(seed) % 3 == 0) nq = 1;
        p->qs[i] = t;
        for (int j = p->ctx[i] - nq; j < p->ctx[i]; j++) p->pos[t++] = j;
    }
    p->qs[p->n_seqs] = p->T = t;
    free(ids);
    size_t qn = (size_t)t * sh.H * sh.hd;
    p->q = kiln_malloc_aligned(qn * sizeof(float));
    for (size_t i = 0; i < qn; i++) p->q[i] = 2.0f * kt_randf(seed); /* scores of a few units */
}

static void free_problem(problem *p) {
    kiln_free_aligned(p->kv);
    kiln_free_aligned(p->q);
}

/* out[t][h][d] in float64, straight from the definition; window > 0: a row at position p sees
 * keys max(0, p - window + 1) .. p */
static void reference(const problem *p, int window, double *out) {
    const shape *s = &p->sh;
    int G = s->H / s->KV;
    double *w = malloc(sizeof(double) * MAX_LEN);
    for (int i = 0; i < p->n_seqs; i++)
        for (int t = p->qs[i]; t < p->qs[i + 1]; t++)
            for (int h = 0; h < s->H; h++) {
                const float *q = p->q + ((size_t)t * s->H + h) * s->hd;
                int n = p->pos[t] + 1, kvh = h / G, lo = window > 0 && n > window ? n - window : 0;
                double mx = -INFINITY, sum = 0;
                for (int j = lo; j < n; j++) {
                    const float *k = p->kv + kiln_kv_offset(&p->L, 1, p->bt[i][j / s->bs], 0, kvh, j % s->bs);
                    double d = 0;
                    for (int e = 0; e < s->hd; e++) d += (double)q[e] * k[e];
                    w[j] = d / sqrt((double)s->hd);
                    if (w[j] > mx) mx = w[j];
                }
                for (int j = lo; j < n; j++) sum += (w[j] = exp(w[j] - mx));
                double *o = out + ((size_t)t * s->H + h) * s->hd;
                for (int e = 0; e < s->hd; e++) o[e] = 0;
                for (int j = lo; j < n; j++) {
                    const float *v = p->kv + kiln_kv_offset(&p->L, 1, p->bt[i][j / s->bs], 1, kvh, j % s->bs);
                    for (int e = 0; e < s->hd; e++) o[e] += w[j] / sum * v[e];
                }
            }
    free(w);
}

static kiln_cpu_attn_args args_of(const problem *p, float *att, float *scores, kiln_attn_kernels k, int prefetch) {
    return (kiln_cpu_attn_args){
        .kv = p->kv, .layout = &p->L, .layer = 1,
        .n_tokens = p->T, .n_seqs = p->n_seqs, .positions = p->pos, .seq_q_start = p->qs,
        .block_table = &p->bt[0][0], .max_blocks_per_seq = MAX_LEN,
        .q = p->q, .att = att, .n_heads = p->sh.H, .n_kv_heads = p->sh.KV, .head_dim = p->sh.hd,
        .scores = scores, .max_model_len = MAX_LEN, .k = k, .prefetch = prefetch,
    };
}

/* A 16-bit copy of the f32 pool kv of layout L (bf != 0: bfloat16, else IEEE half): kv16 its
 * elements rounded, rounded (may be kv) their f32 values; returns kv16's layout. */
static kiln_kv_layout pool16(const kiln_kv_layout *L, int bf, const float *kv, uint16_t *kv16, float *rounded) {
    for (size_t i = 0; i < (size_t)kiln_kv_elems(L); i++) {
        kv16[i] = kiln_f32_to_half(kv[i], bf);
        rounded[i] = kiln_half_to_f32(kv16[i], bf);
    }
    kiln_kv_layout L16 = *L;
    L16.dtype = bf ? KILN_KV_BF16 : KILN_KV_F16;
    L16.elem_bytes = 2;
    return L16;
}

/* A 16-bit pool (f16, bf16): the same bits as an f32 pool holding the same (rounded) values,
 * on every ISA, with 1 and 3 threads and query blocks of 16; unwritten slots stay poisoned
 * (NaN) in both, so a read of one would show. */
static void test_kv16(kiln_pool *pools[3], unsigned long long *seed) {
    static const shape shapes[] = {{4, 2, 64, 16}, {6, 2, 48, 4}, {4, 1, 80, 5}};
    int checked = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int bf = 0; bf < 2; bf++) {
            problem p;
            make_problem(&p, shapes[si], seed);
            const shape *s = &p.sh;
            size_t n = (size_t)kiln_kv_elems(&p.L), na = (size_t)p.T * s->H * s->hd;
            uint16_t *kv16 = kiln_malloc_aligned(n * sizeof(uint16_t));
            kiln_kv_layout L16 = pool16(&p.L, bf, p.kv, kv16, p.kv); /* the f32 pool rounded, in place */
            float *want = kiln_malloc_aligned(na * sizeof(float)), *got = kiln_malloc_aligned(na * sizeof(float));
            float *scores = kiln_malloc_aligned(sizeof(float) * 3 * 16 * (s->H / s->KV) * MAX_LEN);
            float *kvbuf = kiln_malloc_aligned(sizeof(float) * 3 * s->bs * s->hd);
            for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
                kiln_attn_kernels k;
                if (!kiln_isa_supported((kiln_isa)isa) || kiln_cpu_attn_lookup((kiln_isa)isa, &k)) continue;
                for (int th = 0; th < 3; th += 2) {
                    kiln_cpu_ctx ctx = {.isa = (kiln_isa)isa, .pool = pools[th]};
                    kiln_error err = {0};
                    kiln_cpu_attn_args a = args_of(&p, want, scores, k, 1);
                    a.q_block = 16;
                    KT_CHECK(kiln_cpu_attention(&ctx, &a, &err) == 0, "f32 attention: %s", err.msg);
                    a.kv = NULL;
                    a.kv16 = kv16;
                    a.kvbuf = kvbuf;
                    a.layout = &L16;
                    a.att = got;
                    KT_CHECK(kiln_cpu_attention(&ctx, &a, &err) == 0, "%s attention: %s", bf ? "bf16" : "f16", err.msg);
                    KT_CHECK(memcmp(want, got, na * sizeof(float)) == 0,
                             "%s, %s pool, %d threads: not the bits of the f32 pool of the same values",
                             kiln_isa_name((kiln_isa)isa), bf ? "bf16" : "f16", th + 1);
                    checked++;
                }
            }
            kiln_free_aligned(kv16);
            kiln_free_aligned(want);
            kiln_free_aligned(got);
            kiln_free_aligned(scores);
            kiln_free_aligned(kvbuf);
            free_problem(&p);
        }
    KT_CHECK(checked > 0, "16-bit pools not checked");
}

/* reference() on q, k, v rounded to bfloat16 (the inputs cpu.attn "bf16" multiplies) */
static void reference_bf16(const problem *p, int window, double *out) {
    problem r = *p;
    size_t nkv = (size_t)kiln_kv_elems(&p->L), nq = (size_t)p->T * p->sh.H * p->sh.hd;
    r.kv = malloc(nkv * sizeof(float));
    r.q = malloc(nq * sizeof(float));
    for (size_t i = 0; i < nkv; i++) r.kv[i] = isnan(p->kv[i]) ? p->kv[i] : kiln_bf16_to_f32(kiln_f32_to_bf16(p->kv[i]));
    for (size_t i = 0; i < nq; i++) r.q[i] = kiln_bf16_to_f32(kiln_f32_to_bf16(p->q[i]));
    reference(&r, window, out);
    free(r.kv);
    free(r.q);
}

static void test_amx_bf16(kiln_pool *pools[3], unsigned long long *seed) {
    if (!kiln_cpu_has_amx_bf16()) {
        /* loud, but the rest of this test runs */
        fprintf(stderr, "SKIP: cpu.attn bf16: this CPU (or OS) has no AMX-BF16 / AVX512-BF16: its tile kernel is not "
                        "checked here\n");
        return;
    }
    static const shape shapes[] = {{4, 2, 64, 16}, {9, 3, 64, 16}, {8, 1, 64, 8}, {3, 3, 32, 16}, {12, 4, 64, 5},
                                   {4, 1, 128, 4}, {2, 2, 256, 3}, {6, 2, 96, 7}};
    static const int windows[] = {0, 1, 5, 31};
    static const int qbs[] = {1, 2, 3, 7, 16};
    kiln_attn_kernels k;
    KT_CHECK(kiln_cpu_attn_lookup(KILN_ISA_AVX512, &k) == 0, "avx512 attention kernels");
    double worst = 0;
    int checked = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int rep = 0; rep < 3; rep++) {
            problem p;
            make_problem(&p, shapes[si], seed);
            const shape *s = &p.sh;
            int G = s->H / s->KV;
            size_t n = (size_t)p.T * s->H * s->hd, ab = kiln_cpu_attn_amx_bytes(G, 16, s->hd, MAX_LEN);
            double *ref = malloc(sizeof(double) * n);
            float *att = kiln_malloc_aligned(n * sizeof(float)), *one = malloc(sizeof(float) * n);
            float *scores = kiln_malloc_aligned(sizeof(float) * 3 * 16 * G * MAX_LEN);
            void *amx = kiln_malloc_aligned(3 * ab);
            for (int wi = 0; wi < 4; wi++) {
                kiln_cpu_ctx ctx = {.isa = KILN_ISA_AVX512, .pool = pools[0]};
                kiln_error err = {0};
                kiln_cpu_attn_args a = args_of(&p, att, scores, k, 0);
                a.window = windows[wi];
                a.amx = amx;
                a.amx_bytes = ab;
                a.q_block = 1;
                for (size_t i = 0; i < n; i++) att[i] = NAN;
                KT_CHECK(kiln_cpu_attention(&ctx, &a, &err) == 0, "bf16 attention: %s", err.msg);
                memcpy(one, att, n * sizeof(float));
                reference_bf16(&p, a.window, ref);
                for (size_t i = 0; i < n; i++) {
                    double d = fabs((double)att[i] - ref[i]);
                    if (!(d <= 4e-3)) { /* NaN too: a poisoned slot read */
                        KT_CHECK(0, "bf16 H%d KV%d hd%d bs%d window %d: element %zu is %.7g, float64 %.7g", s->H, s->KV,
                                 s->hd, s->bs, a.window, i, att[i], ref[i]);
                        break;
                    }
                    if (d > worst) worst = d;
                    /* one key: the probability is 1, the output that key's value rounded */
                    if (a.window == 1 && (float)ref[i] != att[i]) {
                        KT_CHECK(0, "bf16 window 1: element %zu is %.9g, the rounded value %.9g", i, att[i], ref[i]);
                        break;
                    }
                }
                for (int qi = 0; qi < 5; qi++)
                    for (int th = 0; th < 3; th += 2) {
                        kiln_cpu_ctx c2 = {.isa = KILN_ISA_AVX512, .pool = pools[th]};
                        for (size_t i = 0; i < n; i++) att[i] = NAN;
                        a.q_block = qbs[qi];
                        KT_CHECK(kiln_cpu_attention(&c2, &a, &err) == 0, "bf16 attention: %s", err.msg);
                        KT_CHECK(memcmp(one, att, n * sizeof(float)) == 0,
                                 "bf16 H%d KV%d hd%d bs%d window %d: q_block %d, %d threads changes bits", s->H, s->KV,
                                 s->hd, s->bs, a.window, qbs[qi], th + 1);
                        checked++;
                    }
                if (wi == 0) { /* a 16-bit pool of the same values: the same bits */
                    size_t nkv = (size_t)kiln_kv_elems(&p.L);
                    uint16_t *kv16 = kiln_malloc_aligned(nkv * sizeof(uint16_t));
                    float *kvbuf = kiln_malloc_aligned(sizeof(float) * 3 * s->bs * s->hd);
                    float *kv32 = p.kv;
                    for (int bf = 0; bf < 2; bf++) {
                        float *kvr = kiln_malloc_aligned(nkv * sizeof(float));
                        kiln_kv_layout L16 = pool16(&p.L, bf, kv32, kv16, kvr);
                        float *want = malloc(n * sizeof(float));
                        kiln_cpu_attn_args b = a;
                        b.q_block = 16;
                        b.kv = kvr;
                        KT_CHECK(kiln_cpu_attention(&ctx, &b, &err) == 0, "bf16 attention: %s", err.msg);
                        memcpy(want, att, n * sizeof(float));
                        b.kv = NULL;
                        b.kv16 = kv16;
                        b.kvbuf = kvbuf;
                        b.layout = &L16;
                        KT_CHECK(kiln_cpu_attention(&ctx, &b, &err) == 0, "bf16 attention: %s", err.msg);
                        KT_CHECK(memcmp(want, att, n * sizeof(float)) == 0,
                                 "bf16 attention over a %s pool: not the bits of an f32 pool of the same values",
                                 bf ? "bf16" : "f16");
                        free(want);
                        kiln_free_aligned(kvr);
                    }
                    kiln_free_aligned(kv16);
                    kiln_free_aligned(kvbuf);
                }
            }
            {   /* refusals: a head_dim the tiles do not take, a scratch too small */
                kiln_cpu_ctx ctx = {.isa = KILN_ISA_AVX512, .pool = pools[0]};
                kiln_error err = {0};
                kiln_cpu_attn_args a = args_of(&p, att, scores, k, 0);
                a.amx = amx;
                a.amx_bytes = 64;
                a.q_block = 16;
                KT_CHECK(kiln_cpu_attention(&ctx, &a, &err) == KILN_ERR_INVALID_ARG, "bf16 attention: small scratch taken");
            }
            free(ref);
            free(one);
            kiln_free_aligned(att);
            kiln_free_aligned(scores);
            kiln_free_aligned(amx);
            free_problem(&p);
        }
    printf("cpu.attn bf16: %d bit-identity checks, largest |error| against float64 on bf16 inputs %.3g\n", checked, worst);
}

int main(void) {
    static const shape shapes[] = {
        {4, 2, 64, 16}, {8, 1, 64, 8}, {6, 2, 48, 4}, {3, 3, 32, 16}, {12, 4, 64, 16}, {4, 1, 80, 5}, {2, 2, 16, 1},
    };
    kiln_pool *pools[3] = {0};
    kiln_error err = {0};
    for (int i = 0; i < 3; i++) KT_CHECK(kiln_pool_create(&pools[i], i + 1, &err) == 0, "pool %d: %s", i + 1, err.msg);
    unsigned long long seed = 2024;
    test_kv16(pools, &seed);
    test_amx_bf16(pools, &seed);
    double worst = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int rep = 0; rep < 3; rep++) {
            problem p;
            make_problem(&p, shapes[si], &seed);
            const shape *s = &p.sh;
            size_t n = (size_t)p.T * s->H * s->hd;
            double *ref = malloc(sizeof(double) * n);
            float *ref32 = malloc(sizeof(float) * n), *first = malloc(sizeof(float) * n);
            float *att = kiln_malloc_aligned(n * sizeof(float));
            float *scores = kiln_malloc_aligned(sizeof(float) * 3 * MAX_QB * (s->H / s->KV) * MAX_LEN);
            reference(&p, 0, ref);
            for (size_t i = 0; i < n; i++) ref32[i] = (float)ref[i];
            for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
                kiln_attn_kernels k;
                if (!kiln_isa_supported((kiln_isa)isa) || kiln_cpu_attn_lookup((kiln_isa)isa, &k)) continue;
                for (int th = 0; th < 3; th++)
                    for (int pf = 0; pf < 2; pf++) {
                        kiln_cpu_ctx ctx = {.isa = (kiln_isa)isa, .pool = pools[th]};
                        for (size_t i = 0; i < n; i++) att[i] = NAN;
                        kiln_cpu_attn_args a = args_of(&p, att, scores, k, pf);
                        KT_CHECK(kiln_cpu_attention(&ctx, &a, &err) == 0, "attention: %s", err.msg);
                        if (th == 0 && pf == 0) {
                            /* per (row, head) relative L2 against float64 */
                            double w = 0;
                            for (size_t r = 0; r < (size_t)p.T * s->H; r++) {
                                double e = kt_rel_l2(att + r * s->hd, ref32 + r * s->hd, (size_t)s->hd);
                                if (!(e <= w)) w = e;
                            }
                            KT_CHECK(w <= 1e-5, "%s H%d KV%d hd%d bs%d: relative error %.3g", kiln_isa_name(isa), s->H,
                                     s->KV, s->hd, s->bs, w);
                            if (w > worst) worst = w;
                            memcpy(first, att, n * sizeof(float));
                        } else {
                            KT_CHECK(memcmp(first, att, n * sizeof(float)) == 0,
                                     "%s H%d KV%d hd%d: %d threads, prefetch %d changes bits", kiln_isa_name(isa), s->H,
                                     s->KV, s->hd, th + 1, pf);
                        }
                    }
            }
            /* attention windows (per-layer sliding windows): against the windowed reference on
             * every ISA with 2 threads; a window of at least the context is full attention (the
             * same bits as no window) */
            static const int windows[] = {1, 5, 31};
            for (int wi = 0; wi < 3; wi++) {
                reference(&p, windows[wi], ref);
                for (size_t i = 0; i < n; i++) ref32[i] = (float)ref[i];
                for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
                    kiln_attn_kernels k;
                    if (!kiln_isa_supported((kiln_isa)isa) || kiln_cpu_attn_lookup((kiln_isa)isa, &k)) continue;
                    kiln_cpu_ctx ctx = {.isa = (kiln_isa)isa, .pool = pools[1]};
                    for (size_t i = 0; i < n; i++) att[i] = NAN;
                    kiln_cpu_attn_args a = args_of(&p, att, scores, k, 0);
                    a.window = windows[wi];
                    KT_CHECK(kiln_cpu_attention(&ctx, &a, &err) == 0, "attention: %s", err.msg);
                    double w = 0;
                    for (size_t r = 0; r < (size_t)p.T * s->H; r++) {
                        double e = kt_rel_l2(att + r * s->hd, ref32 + r * s->hd, (size_t)s->hd);
                        if (!(e <= w)) w = e;
                    }
                    KT_CHECK(w <= 1e-5, "%s H%d KV%d hd%d window %d: relative error %.3g", kiln_isa_name(isa), s->H,
                             s->KV, s->hd, windows[wi], w);
                }
            }
            /* query blocks: the bits of one row at a time, whatever the block, windows and threads */
            static const int qbs[] = {2, 3, 7, 16, MAX_QB};
            float *one = malloc(sizeof(float) * n);
            for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
                kiln_attn_kernels k;
                if (!kiln_isa_supported((kiln_isa)isa) || kiln_cpu_attn_lookup((kiln_isa)isa, &k)) continue;
                for (int wi = -1; wi < 3; wi++) {
                    kiln_cpu_ctx ctx = {.isa = (kiln_isa)isa, .pool = pools[0]};
                    kiln_cpu_attn_args a = args_of(&p, att, scores, k, 0);
                    a.window = wi < 0 ? 0 : windows[wi];
                    a.q_block = 1;
                    KT_CHECK(kiln_cpu_attention(&ctx, &a, &err) == 0, "attention: %s", err.msg);
                    memcpy(one, att, n * sizeof(float));
                    for (int qi = 0; qi < 5; qi++)
                        for (int th = 0; th < 3; th += 2) {
                            kiln_cpu_ctx c2 = {.isa = (kiln_isa)isa, .pool = pools[th]};
                            for (size_t i = 0; i < n; i++) att[i] = NAN;
                            a.q_block = qbs[qi];
                            a.prefetch = qi & 1;
                            KT_CHECK(kiln_cpu_attention(&c2, &a, &err) == 0, "attention: %s", err.msg);
                            KT_CHECK(memcmp(one, att, n * sizeof(float)) == 0,
                                     "%s H%d KV%d hd%d bs%d window %d: q_block %d, %d threads changes bits",
                                     kiln_isa_name(isa), s->H, s->KV, s->hd, s->bs, a.window, qbs[qi], th + 1);
                        }
                }
            }
            free(one);
            {
                kiln_attn_kernels k;
                kiln_cpu_attn_lookup(KILN_ISA_SCALAR, &k);
                kiln_cpu_ctx ctx = {.isa = KILN_ISA_SCALAR, .pool = pools[0]};
                kiln_cpu_attn_args a = args_of(&p, att, scores, k, 0);
                float *full = malloc(sizeof(float) * n);
                KT_CHECK(kiln_cpu_attention(&ctx, &a, &err) == 0, "attention: %s", err.msg);
                memcpy(full, att, n * sizeof(float));
                a.window = MAX_LEN;
                KT_CHECK(kiln_cpu_attention(&ctx, &a, &err) == 0, "attention: %s", err.msg);
                KT_CHECK(memcmp(full, att, n * sizeof(float)) == 0, "a window as long as the context changes bits");
                free(full);
            }
            /* inconsistent arguments: refused, nothing written */
            kiln_attn_kernels k;
            kiln_cpu_attn_lookup(KILN_ISA_SCALAR, &k);
            kiln_cpu_ctx ctx = {.isa = KILN_ISA_SCALAR, .pool = NULL};
            kiln_cpu_attn_args a = args_of(&p, att, scores, k, 0);
            a.n_kv_heads = s->KV + 1;
            KT_CHECK(kiln_cpu_attention(&ctx, &a, &err) == KILN_ERR_INVALID_ARG, "KV heads that do not match");
            a = args_of(&p, att, scores, k, 0);
            a.layer = 2;
            KT_CHECK(kiln_cpu_attention(&ctx, &a, &err) == KILN_ERR_INVALID_ARG, "a layer outside the pool");
            a = args_of(&p, att, scores, k, 0);
            a.n_tokens = 0;
            KT_CHECK(kiln_cpu_attention(&ctx, &a, &err) == KILN_OK, "an empty step");
            a = args_of(&p, att, scores, k, 0);
            a.window = -1;
            KT_CHECK(kiln_cpu_attention(&ctx, &a, &err) == KILN_ERR_INVALID_ARG, "a negative window");
            free(ref);
            free(ref32);
            free(first);
            kiln_free_aligned(att);
            kiln_free_aligned(scores);
            free_problem(&p);
        }
    KT_CHECK(kiln_cpu_attn_q_block(3, 8192) == KILN_CPU_ATTN_Q_BLOCK, "q_block at 8k, G 3");
    KT_CHECK(kiln_cpu_attn_q_block(4, 32768) == 8, "q_block at 32k, G 4: %d", kiln_cpu_attn_q_block(4, 32768));
    KT_CHECK(kiln_cpu_attn_q_block(8, 1 << 20) == 1, "q_block at 1M: at least 1 row");
    printf("worst relative error vs float64: %.3g\n", worst);
    for (int i = 0; i < 3; i++) kiln_pool_destroy(pools[i]);
    return kt_done();
}
