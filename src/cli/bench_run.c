/* bench_run.c: the benchmark loop and the machine probes (see bench.h).
 *
 * Timing of one run of B requests: t0 before the first step; TTFT = until every request has
 * its first token (the prefill of the whole batch; one step when max_batch_tokens >= B*prompt);
 * decode time = from there until every request finished, over the engine steps in between.
 * Host time per step comes from the engine's own host_seconds/backend_seconds counters.
 * Around every kiln_engine_step the allocation counter and the sync counter are read: the
 * evidence of invariants I7 and I1 (polling, which builds text, is outside the counted span).
 *
 * Probes: memory read bandwidth = n threads each summing their slice of a 256 MiB buffer (best
 * of 5 passes); peak FMA rate = n threads each running 12 independent FMA chains on registers
 * (AVX-512 or AVX2 via function target attributes, chosen at run time; scalar otherwise);
 * peak int8 dot rate = the same with 12 independent chains of u8 x s8 dot products into int32
 * lanes (vpdpbusd: AVX-512 VNNI, else AVX-VNNI; else AVX2's pmaddubsw + pmaddwd + paddd), 2
 * ops per multiply-add: the ceiling of the W x A8 matmuls (backend/cpu/qgemm.h); where the CPU
 * has AMX-INT8 (kiln_cpu_has_amx), also the tile rate (4 independent tdpbsud chains).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "backend/backend.h"
#include "backend/cpu/qgemm.h"
#include "cli/bench.h"
#include "cli/cli.h"
#include "util/alloc.h"
#include "util/error.h"
#include "util/threads.h"
#include "util/timeutil.h"
#if defined(KILN_X86)
#include <immintrin.h>
#endif

static uint64_t mix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

void kiln_bench_random_ids(int32_t *ids, int n, int vocab, uint64_t seed) {
    /* ids in [3, vocab): skip the usual special ids 0..2 (unk/bos/eos in llama vocabularies) */
    int lo = vocab > 16 ? 3 : 0;
    for (int i = 0; i < n; i++) ids[i] = lo + (int32_t)(mix64(seed * 1000003u + (uint64_t)i) % (uint64_t)(vocab - lo));
}

int kiln_bench_parse_batches(const char *s, kiln_bench_opts *o) {
    int32_t *v;
    int n;
    if (kiln_cli_parse_ids(s, &v, &n)) return -1;
    int ok = n <= KILN_BENCH_MAX_BATCHES;
    for (int i = 0; ok && i < n; i++) ok = v[i] >= 1 && v[i] <= 4096;
    if (ok) {
        for (int i = 0; i < n; i++) o->batches[i] = v[i];
        o->n_batches = n;
    }
    kiln_free(v);
    return ok ? 0 : -1;
}

void kiln_bench_engine_options(kiln_engine_options *eo, const kiln_bench_opts *o, int user_mbt, int min_seqs) {
    int maxb = min_seqs;
    for (int i = 0; i < o->n_batches; i++) if (o->batches[i] > maxb) maxb = o->batches[i];
    eo->enable_prefix_cache = -1;
    if (eo->max_seqs < maxb) eo->max_seqs = maxb;
    if (!user_mbt) {
        long want = (long)maxb * o->prompt_len;
        if (want < 2048) want = 2048;
        eo->max_batch_tokens = (int)(want > KILN_BENCH_AUTO_MAX_TOKENS ? KILN_BENCH_AUTO_MAX_TOKENS : want);
    }
    if (eo->max_model_len <= 0) eo->max_model_len = o->prompt_len + o->decode_steps + 2;
    eo->skip_tokenizer = !o->json_schema_path; /* a constraint walks the tokenizer's pieces */
}

size_t kiln_bench_peak_rss(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    size_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) { kb = (size_t)strtoull(line + 6, NULL, 10); break; }
    fclose(f);
    return kb * 1024;
}

/* ---- probes ---------------------------------------------------------------------------- */

typedef struct bw_job { const uint64_t *buf; size_t n; uint64_t sums[64]; } bw_job;

#if defined(KILN_X86)
__attribute__((target("avx2"))) static uint64_t read_avx2(const uint64_t *p, size_t n) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i + 16 <= n; i += 16) {
        a0 = _mm256_xor_si256(a0, _mm256_load_si256((const __m256i *)(p + i)));
        a1 = _mm256_xor_si256(a1, _mm256_load_si256((const __m256i *)(p + i + 4)));
        a2 = _mm256_xor_si256(a2, _mm256_load_si256((const __m256i *)(p + i + 8)));
        a3 = _mm256_xor_si256(a3, _mm256_load_si256((const __m256i *)(p + i + 12)));
    }
    a0 = _mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(a2, a3));
    uint64_t out[4];
    _mm256_storeu_si256((__m256i *)out, a0);
    return out[0] ^ out[1] ^ out[2] ^ out[3];
}
#endif

static void bw_worker(void *ctx, int ith, int nth) {
    bw_job *j = ctx;
    size_t per = (j->n / (size_t)nth) & ~(size_t)15;
    const uint64_t *p = j->buf + per * (size_t)ith;
    uint64_t s = 0;
#if defined(KILN_X86)
    if (__builtin_cpu_supports("avx2")) s = read_avx2(p, per);
    else
#endif
    {
        uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (size_t i = 0; i + 4 <= per; i += 4) { s0 ^= p[i]; s1 ^= p[i + 1]; s2 ^= p[i + 2]; s3 ^= p[i + 3]; }
        s = s0 ^ s1 ^ s2 ^ s3;
    }
    if (ith < 64) j->sums[ith] = s;
}

typedef struct fma_job { long iters; int isa; float sink[64]; } fma_job;

#if defined(KILN_X86)
#define FMA_CHAINS(T, SET1, FMA, ADD, CAST)                                                  \
    T a0 = SET1(1.0f), a1 = SET1(1.1f), a2 = SET1(1.2f), a3 = SET1(1.3f), a4 = SET1(1.4f),   \
      a5 = SET1(1.5f), a6 = SET1(1.6f), a7 = SET1(1.7f), a8 = SET1(1.8f), a9 = SET1(1.9f),   \
      a10 = SET1(2.0f), a11 = SET1(2.1f);                                                     \
    const T m = SET1(0.999999f), c = SET1(1e-7f);                                             \
    for (long i = 0; i < iters; i++) {                                                        \
        a0 = FMA(a0, m, c); a1 = FMA(a1, m, c); a2 = FMA(a2, m, c); a3 = FMA(a3, m, c);      \
        a4 = FMA(a4, m, c); a5 = FMA(a5, m, c); a6 = FMA(a6, m, c); a7 = FMA(a7, m, c);      \
        a8 = FMA(a8, m, c); a9 = FMA(a9, m, c); a10 = FMA(a10, m, c); a11 = FMA(a11, m, c);  \
    }                                                                                         \
    T s = ADD(ADD(ADD(a0, a1), ADD(a2, a3)), ADD(ADD(a4, a5), ADD(a6, a7)));                  \
    s = ADD(s, ADD(ADD(a8, a9), ADD(a10, a11)));                                              \
    return CAST(s);

__attribute__((target("avx512f"))) static float fma_avx512(long iters) {
    FMA_CHAINS(__m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps, _mm512_reduce_add_ps)
}
__attribute__((target("avx2,fma"))) static float fma_avx2_sum(__m256 s) {
    float o[8];
    _mm256_storeu_ps(o, s);
    return o[0] + o[1] + o[2] + o[3] + o[4] + o[5] + o[6] + o[7];
}
__attribute__((target("avx2,fma"))) static float fma_avx2(long iters) {
    FMA_CHAINS(__m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps, fma_avx2_sum)
}
#endif

#if defined(KILN_X86)
#define DP_CHAINS(T, ZERO, SET1_8, DP, ADD, OUT)                                             \
    T a0 = ZERO(), a1 = ZERO(), a2 = ZERO(), a3 = ZERO(), a4 = ZERO(), a5 = ZERO(), a6 = ZERO(), \
      a7 = ZERO(), a8 = ZERO(), a9 = ZERO(), a10 = ZERO(), a11 = ZERO();                     \
    const T u = SET1_8(3), v = SET1_8(-2);                                                    \
    for (long i = 0; i < iters; i++) {                                                        \
        a0 = DP(a0, u, v); a1 = DP(a1, u, v); a2 = DP(a2, u, v); a3 = DP(a3, u, v);          \
        a4 = DP(a4, u, v); a5 = DP(a5, u, v); a6 = DP(a6, u, v); a7 = DP(a7, u, v);          \
        a8 = DP(a8, u, v); a9 = DP(a9, u, v); a10 = DP(a10, u, v); a11 = DP(a11, u, v);      \
    }                                                                                         \
    T s = ADD(ADD(ADD(a0, a1), ADD(a2, a3)), ADD(ADD(a4, a5), ADD(a6, a7)));                  \
    s = ADD(s, ADD(ADD(a8, a9), ADD(a10, a11)));                                              \
    return OUT(s);
/* the sinks sum the accumulators as unsigned (they wrap after enough iterations: a signed sum,
 * as _mm512_reduce_add_epi32's, is undefined behaviour there; UBSan found it in kiln validate) */
__attribute__((target("avx512f,avx512vnni"))) static int32_t dp_out512(__m512i s) {
    uint32_t o[16], t = 0;
    _mm512_storeu_si512((void *)o, s);
    for (int i = 0; i < 16; i++) t += o[i];
    return (int32_t)(t & 0x7fffffffu);
}
__attribute__((target("avx512f,avx512vnni"))) static int32_t dp_avx512vnni(long iters) {
    DP_CHAINS(__m512i, _mm512_setzero_si512, _mm512_set1_epi8, _mm512_dpbusd_epi32, _mm512_add_epi32, dp_out512)
}
__attribute__((target("avx2"))) static int32_t dp_out256(__m256i s) {
    uint32_t o[8], t = 0;
    _mm256_storeu_si256((__m256i *)(void *)o, s);
    for (int i = 0; i < 8; i++) t += o[i];
    return (int32_t)(t & 0x7fffffffu);
}
__attribute__((target("avx2,avxvnni"))) static int32_t dp_avxvnni(long iters) {
    DP_CHAINS(__m256i, _mm256_setzero_si256, _mm256_set1_epi8, _mm256_dpbusd_avx_epi32, _mm256_add_epi32, dp_out256)
}
#define DP_AVX2(a, u, v) _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_maddubs_epi16(u, v), _mm256_set1_epi16(1)))
__attribute__((target("avx2"))) static int32_t dp_avx2(long iters) {
    DP_CHAINS(__m256i, _mm256_setzero_si256, _mm256_set1_epi8, DP_AVX2, _mm256_add_epi32, dp_out256)
}
#include <cpuid.h>
static int has_vnni(int wide) { /* CPUID leaf 7: AVX512_VNNI (ECX bit 11), AVX-VNNI (sub-leaf 1, EAX bit 4) */
    unsigned a, b, c, d;
    if (wide) return __builtin_cpu_supports("avx512f") && __get_cpuid_count(7, 0, &a, &b, &c, &d) && (c >> 11 & 1);
    return __builtin_cpu_supports("avx2") && __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a >> 4 & 1);
}
#endif

typedef struct dp_job { long iters; int isa; int32_t sink[64]; } dp_job;

#if defined(KILN_X86) && defined(__linux__)
/* AMX-INT8's rate: 4 independent C tiles (16 x 16 int32) += A (16 x 64 s8) . B (16 x 64 u8),
 * 16 x 16 x 64 multiply-adds a tdpbsud (the kernel's instruction); A and B loaded once */
typedef struct amx_cfg_t {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_cfg_t;
__attribute__((target("amx-tile,amx-int8"))) static int32_t dp_amx(long iters) {
    amx_cfg_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 6; t++) cfg.rows[t] = 16, cfg.colsb[t] = 64;
    static const int8_t ab[16 * 64] = {1, 2, 3};
    int32_t out[256];
    _tile_loadconfig(&cfg);
    _tile_loadd(4, ab, 64);
    _tile_loadd(5, ab, 64);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (long i = 0; i < iters; i++) {
        _tile_dpbsud(0, 4, 5);
        _tile_dpbsud(1, 4, 5);
        _tile_dpbsud(2, 4, 5);
        _tile_dpbsud(3, 4, 5);
    }
    _tile_stored(0, out, 64);
    _tile_release();
    return out[0] & 0x7fffffff;
}
static void amx_worker(void *ctx, int ith, int nth) {
    dp_job *j = ctx;
    int32_t s = dp_amx(j->iters);
    if (ith < 64) j->sink[ith] = s;
    (void)nth;
}
#endif

static void dp_worker(void *ctx, int ith, int nth) {
    dp_job *j = ctx;
    int32_t s = 0;
#if defined(KILN_X86)
    if (j->isa == 3) s = dp_avx512vnni(j->iters);
    else if (j->isa == 2) s = dp_avxvnni(j->iters);
    else if (j->isa == 1) s = dp_avx2(j->iters);
#endif
    if (ith < 64) j->sink[ith] = s;
    (void)nth;
}

static float fma_scalar(long iters) {
    float a[12];
    for (int k = 0; k < 12; k++) a[k] = 1.0f + 0.1f * (float)k;
    for (long i = 0; i < iters; i++)
        for (int k = 0; k < 12; k++) a[k] = a[k] * 0.999999f + 1e-7f;
    float s = 0;
    for (int k = 0; k < 12; k++) s += a[k];
    return s;
}

static void fma_worker(void *ctx, int ith, int nth) {
    fma_job *j = ctx;
    float s;
#if defined(KILN_X86)
    if (j->isa == 2) s = fma_avx512(j->iters);
    else if (j->isa == 1) s = fma_avx2(j->iters);
    else
#endif
        s = fma_scalar(j->iters);
    if (ith < 64) j->sink[ith] = s;
    (void)nth;
}

void kiln_bench_card(char *buf, size_t cap) {
    buf[0] = 0;
    FILE *p = popen("nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -n 1", "r");
    if (!p) return;
    if (fgets(buf, (int)cap, p)) buf[strcspn(buf, "\n")] = 0;
    pclose(p);
}

/* a probe's job on every thread: once to warm up the clocks, then the best of 3 timed runs (s) */
static double probe_best(kiln_pool *pool, kiln_pool_fn fn, void *job) {
    kiln_pool_run(pool, fn, job);
    double best = 1e30;
    for (int pass = 0; pass < 3; pass++) {
        double t = kiln_now();
        kiln_pool_run(pool, fn, job);
        t = kiln_now() - t;
        if (t < best) best = t;
    }
    return best;
}

void kiln_bench_probe_machine(kiln_bench_machine *m, const char *backend, int threads) {
    memset(m, 0, sizeof *m);
    kiln_cli_machine(m->cpu, sizeof m->cpu);
    char *comma = strrchr(m->cpu, ',');
    if (comma) *comma = 0; /* kiln_cli_machine appends ", N cores" */
    m->cores = kiln_num_cores();
    if (backend && !strcmp(backend, "cuda")) kiln_bench_card(m->card, sizeof m->card);
    kiln_error err = {0};
    kiln_pool *pool = NULL;
    if (kiln_pool_create(&pool, threads, &err)) return;
    m->threads = kiln_pool_size(pool);
    /* bandwidth */
    size_t bytes = (size_t)256 << 20;
    uint64_t *buf = kiln_malloc_aligned(bytes);
    if (buf) {
        size_t n = bytes / sizeof(uint64_t);
        for (size_t i = 0; i < n; i++) buf[i] = i * 0x9E3779B97F4A7C15ull;
        bw_job j = {buf, n, {0}};
        double best = 1e30;
        for (int pass = 0; pass < 5; pass++) {
            double t = kiln_now();
            kiln_pool_run(pool, bw_worker, &j);
            t = kiln_now() - t;
            if (t < best) best = t;
        }
        size_t per = (n / (size_t)m->threads) & ~(size_t)15;
        m->mem_bw_gbs = (double)per * m->threads * sizeof(uint64_t) / best / 1e9;
        kiln_free_aligned(buf);
    }
    /* FMA rate */
    fma_job fj = {2000000, 0, {0}};
    int lanes = 1;
    snprintf(m->fma_isa, sizeof m->fma_isa, "scalar");
#if defined(KILN_X86)
    if (__builtin_cpu_supports("avx512f")) { fj.isa = 2; lanes = 16; snprintf(m->fma_isa, sizeof m->fma_isa, "avx512"); }
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) { fj.isa = 1; lanes = 8; snprintf(m->fma_isa, sizeof m->fma_isa, "avx2"); }
#endif
    if (fj.isa == 0) fj.iters = 200000;
    double best = probe_best(pool, fma_worker, &fj);
    m->fma_gflops = 2.0 * 12 * lanes * (double)fj.iters * m->threads / best / 1e9;
    dp_job dj = {2000000, 0, {0}};
    int dp_macs = 0; /* multiply-adds per chain step */
#if defined(KILN_X86)
    if (has_vnni(1)) { dj.isa = 3; dp_macs = 64; snprintf(m->int8_isa, sizeof m->int8_isa, "avx512vnni"); }
    else if (has_vnni(0)) { dj.isa = 2; dp_macs = 32; snprintf(m->int8_isa, sizeof m->int8_isa, "avxvnni"); }
    else if (__builtin_cpu_supports("avx2")) { dj.isa = 1; dp_macs = 32; snprintf(m->int8_isa, sizeof m->int8_isa, "avx2"); }
#endif
    if (dp_macs) {
        best = probe_best(pool, dp_worker, &dj);
        m->int8_gops = 2.0 * 12 * dp_macs * (double)dj.iters * m->threads / best / 1e9;
    }
#if defined(KILN_X86) && defined(__linux__)
    if (kiln_cpu_has_amx()) { /* the tile peak, beside (the W x A8 kernels of 16+ rows use it) */
        dp_job aj = {200000, 0, {0}};
        best = probe_best(pool, amx_worker, &aj);
        m->amx_gops = 2.0 * 4 * 16 * 16 * 64 * (double)aj.iters * m->threads / best / 1e9;
    }
#endif
    kiln_pool_destroy(pool);
    const kiln_backend_ops *gpu = backend && !strcmp(backend, "cuda") ? kiln_backend_cuda_ops() : NULL;
    if (gpu && gpu->probe_floors) { /* the floors of a GPU run are the GPU's */
        double gbs, tflops;
        kiln_error e2 = {0};
        if (gpu->probe_floors(&gbs, &tflops, &e2) == 0) {
            m->mem_bw_gbs = gbs;
            m->fma_gflops = tflops * 1e3;
            m->gpu_floors = 1;
            m->int8_gops = 0;
            snprintf(m->fma_isa, sizeof m->fma_isa, "bf16 GEMM");
        } else {
            fprintf(stderr, "kiln bench: GPU floor probe failed: %s\n", e2.msg);
        }
    }
    /* reset VmHWM so that peak RSS reports the engine, not the 256 MiB probe buffer */
    FILE *cr = fopen("/proc/self/clear_refs", "w");
    if (cr) { fputs("5", cr); fclose(cr); }
}

/* ---- the run ----------------------------------------------------------------------------- */

int kiln_bench_requests(kiln_engine *e, int B, int32_t *const *prompts, const int *lens, int max_tokens,
                        int32_t *out_ids, float *out_lp, kiln_bench_rec *rec, kiln_error *err) {
    return kiln_bench_requests_ex(e, B, prompts, lens, max_tokens, NULL, out_ids, out_lp, rec, err);
}

int kiln_bench_requests_ex(kiln_engine *e, int B, int32_t *const *prompts, const int *lens, int max_tokens,
                           const char *json_schema, int32_t *out_ids, float *out_lp, kiln_bench_rec *rec,
                           kiln_error *err) {
    memset(rec, 0, sizeof *rec);
    rec->sync_min = 1 << 30;
    uint64_t *ids = kiln_calloc((size_t)B, sizeof(uint64_t));
    int *got = kiln_calloc((size_t)B, sizeof(int));
    int *done = kiln_calloc((size_t)B, sizeof(int));
    if (!ids || !got || !done) {
        kiln_free(ids); kiln_free(got); kiln_free(done);
        return KILN_ERR(err, KILN_ERR_OOM, "bench: out of memory");
    }
    int rc = 0;
    for (int i = 0; i < B && !rc; i++) {
        kiln_request_params p;
        kiln_request_params_default(&p);
        p.prompt_ids = prompts[i];
        p.n_prompt = lens[i];
        p.max_tokens = max_tokens;
        p.ignore_eos = 1;
        p.sampling.temperature = 0.0f;
        p.sampling.logprobs = out_lp != NULL;
        /* constrained: compiled once (the engine caches it by text), a reference per request */
        if (json_schema &&
            (rc = kiln_engine_compile_grammar(e, KILN_CONSTRAINT_JSON_SCHEMA, json_schema, strlen(json_schema), &p.grammar, err)))
            break;
        rc = kiln_engine_add_request(e, &p, &ids[i], err);
        if (rc && p.grammar) kiln_grammar_free(p.grammar); /* a refused request leaves it the caller's */
    }
    kiln_engine_stats s0, s1, sf = {0};
    double t0 = kiln_now(), t_first = -1;
    int n_first = 0, n_done = 0, step_at_first = 0, nsteps = 0;
    while (!rc && n_done < B) {
        int active;
        kiln_engine_get_stats(e, &s0);
        uint64_t a0 = kiln_alloc_count();
        rc = kiln_engine_step(e, &active, err);
        uint64_t a1 = kiln_alloc_count();
        if (rc) break;
        kiln_engine_get_stats(e, &s1);
        rec->allocs += a1 - a0;
        if (s1.steps > s0.steps) {
            int d = (int)(s1.syncs - s0.syncs);
            if (d < rec->sync_min) rec->sync_min = d;
            if (d > rec->sync_max) rec->sync_max = d;
            rec->steps += s1.steps - s0.steps;
            rec->syncs += s1.syncs - s0.syncs;
        }
        nsteps++;
        for (int i = 0; i < B && !rc; i++) {
            if (done[i]) continue;
            kiln_output out;
            if ((rc = kiln_engine_poll(e, ids[i], &out, err))) break;
            for (int k = 0; k < out.n_new && got[i] < max_tokens; k++, got[i]++) {
                if (out_ids) out_ids[(size_t)i * max_tokens + got[i]] = out.new_ids[k];
                if (out_lp) out_lp[(size_t)i * max_tokens + got[i]] = out.logprobs ? out.logprobs[k] : 0.0f;
            }
            if (got[i] > 0 && out.n_new == got[i]) n_first++;
            if (out.finish != KILN_FINISH_NONE) { done[i] = 1; n_done++; }
        }
        if (t_first < 0 && n_first >= B) {
            t_first = kiln_now() - t0;
            step_at_first = nsteps;
            kiln_engine_get_stats(e, &sf);
        }
        if (!rc && active == 0 && n_done < B) rc = KILN_ERR(err, KILN_ERR_INTERNAL, "bench: engine idle with requests unfinished");
    }
    double t_end = kiln_now() - t0;
    if (!rc) {
        kiln_engine_get_stats(e, &s1);
        rec->ttft = t_first;
        rec->decode_time = t_end - t_first;
        rec->decode_steps = nsteps - step_at_first;
        rec->host_decode = s1.host_seconds - sf.host_seconds;
        rec->backend_decode = s1.backend_seconds - sf.backend_seconds;
    }
    for (int i = 0; i < B; i++)
        if (ids[i] && !done[i]) {
            kiln_error e2;
            kiln_output out;
            kiln_engine_abort(e, ids[i], &e2);
            kiln_engine_poll(e, ids[i], &out, &e2);
        }
    if (rec->sync_min > rec->sync_max) rec->sync_min = rec->sync_max;
    kiln_free(ids);
    kiln_free(got);
    kiln_free(done);
    return rc;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static kiln_bench_stat stat_of(double *v, int n) {
    kiln_bench_stat s = {0, 0, 0};
    if (n <= 0) return s;
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    s.min = v[0];
    s.max = v[n - 1];
    s.med = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
    return s;
}

int kiln_bench_run(kiln_engine *e, const kiln_bench_opts *o, kiln_bench_result *r, kiln_error *err) {
    const kiln_model *m = kiln_engine_model(e);
    const kiln_config *mc = &m->cfg;
    r->opt = *o;
    kiln_engine_get_info(e, &r->info);
    snprintf(r->dtype, sizeof r->dtype, "%s", m->dummy_quant[0] ? m->dummy_quant : kiln_model_weight_dtype(m));
    snprintf(r->arch, sizeof r->arch, "%s", mc->arch);
    int shape[7] = {mc->dim, mc->hidden_dim, mc->n_layers, mc->n_heads, mc->n_kv_heads, mc->head_dim, mc->vocab_size};
    memcpy(r->shape, shape, sizeof shape);
    r->params = kiln_model_param_count(m);
    r->weight_bytes = kiln_model_weight_bytes(m);
    r->n_experts = mc->n_experts;
    r->n_experts_used = mc->n_experts_used;
    r->decode_weight_bytes = r->weight_bytes;
    if (!mc->tied_embeddings && m->tok_embd && m->tok_embd->nbytes < r->weight_bytes)
        r->decode_weight_bytes -= m->tok_embd->nbytes; /* decode reads B embedding rows only */
    r->sync_min = 1 << 30;
    int maxb = 1;
    for (int i = 0; i < o->n_batches; i++) if (o->batches[i] > maxb) maxb = o->batches[i];
    int L = o->prompt_len, D = o->decode_steps;
    int32_t **prompts = kiln_calloc((size_t)maxb, sizeof(int32_t *));
    int *lens = kiln_calloc((size_t)maxb, sizeof(int));
    int nrun = o->warmup + o->repeat;
    double *v = kiln_calloc((size_t)6 * (nrun > 0 ? nrun : 1), sizeof(double));
    int rc = 0;
    if (!prompts || !lens || !v) rc = KILN_ERR(err, KILN_ERR_OOM, "bench: out of memory");
    for (int i = 0; !rc && i < maxb; i++) {
        prompts[i] = kiln_malloc((size_t)L * sizeof(int32_t));
        if (!prompts[i]) { rc = KILN_ERR(err, KILN_ERR_OOM, "bench: out of memory"); break; }
        lens[i] = L;
    }
    /* floors: bytes per decode step (weights once + the batch's KV at the mean context) and
     * prefill FLOPs (2 per weight per token + causal attention) */
    double kv_tok = (double)mc->n_layers * 2 * mc->n_kv_heads * mc->head_dim *
                    (r->info.kv_layout.elem_bytes > 0 ? r->info.kv_layout.elem_bytes : 4);
    double w_flops = 2.0 * ((double)r->params - (double)mc->vocab_size * mc->dim * (mc->tied_embeddings ? 1 : 2));
    /* MoE: a token runs k of the E experts (FLOPs), and a decode step of B tokens reads the
     * experts they pick: E (1 - (1 - k/E)^B) of them in expectation under uniform routing */
    double expert_bytes = 0, expert_params = 0;
    for (int l = 0; mc->n_experts > 0 && l < mc->n_layers; l++)
        for (int x = 0; m->layers[l].experts && x < 3 * mc->n_experts; x++) {
            expert_bytes += (double)m->layers[l].experts[x].nbytes;
            expert_params += (double)m->layers[l].experts[x].shape[0] * (double)m->layers[l].experts[x].shape[1];
        }
    if (mc->n_experts > 0) w_flops -= 2.0 * expert_params * (1.0 - (double)mc->n_experts_used / mc->n_experts);
    double att_flops_seq = 4.0 * mc->n_layers * mc->n_heads * mc->head_dim * ((double)L * (L + 1) / 2);
    for (int bi = 0; !rc && bi < o->n_batches; bi++) {
        int B = o->batches[bi];
        kiln_bench_point *pt = &r->pts[r->n_pts];
        memset(pt, 0, sizeof *pt);
        pt->batch = B;
        pt->sync_min = 1 << 30;
        for (int i = 0; i < B; i++) kiln_bench_random_ids(prompts[i], L, mc->vocab_size, o->seed * 7919u + (uint64_t)B * 131u + (uint64_t)i);
        int k = 0;
        kiln_engine_stats g0, g1;
        kiln_engine_get_stats(e, &g0);
        for (int run = 0; !rc && run < nrun; run++) {
            int warm = run < o->warmup;
            if (o->progress)
                fprintf(stderr, "kiln bench: batch %d: %s %d/%d\n", B, warm ? "warmup" : "repeat",
                        warm ? run + 1 : run - o->warmup + 1, warm ? o->warmup : o->repeat);
            kiln_bench_rec rec;
            if ((rc = kiln_bench_requests_ex(e, B, prompts, lens, D + 1, o->json_schema, NULL, NULL, &rec, err))) break;
            pt->steps += rec.steps; pt->syncs += rec.syncs; pt->allocs += rec.allocs;
            if (rec.steps && rec.sync_min < pt->sync_min) pt->sync_min = rec.sync_min;
            if (rec.sync_max > pt->sync_max) pt->sync_max = rec.sync_max;
            if (warm) continue;
            int ds = rec.decode_steps > 0 ? rec.decode_steps : 1;
            v[0 * nrun + k] = (double)B * L / rec.ttft;
            v[1 * nrun + k] = rec.decode_time > 0 ? (double)B * D / rec.decode_time : 0;
            v[2 * nrun + k] = 1e3 * rec.decode_time / ds;
            v[3 * nrun + k] = 1e3 * rec.ttft;
            v[4 * nrun + k] = 1e3 * rec.host_decode / ds;
            v[5 * nrun + k] = 1e3 * rec.backend_decode / ds;
            k++;
        }
        if (rc) break;
        kiln_engine_get_stats(e, &g1);
        r->masks_computed += g1.grammar_masks_computed - g0.grammar_masks_computed;
        r->masks_cached += g1.grammar_masks_cached - g0.grammar_masks_cached;
        r->grammar_drains += g1.grammar_drains - g0.grammar_drains;
        pt->prefill_tps = stat_of(v + 0 * nrun, k);
        pt->decode_tps = stat_of(v + 1 * nrun, k);
        pt->step_ms = stat_of(v + 2 * nrun, k);
        pt->ttft_ms = stat_of(v + 3 * nrun, k);
        pt->host_ms = stat_of(v + 4 * nrun, k);
        pt->backend_ms = stat_of(v + 5 * nrun, k);
        if (pt->sync_min > pt->sync_max) pt->sync_min = pt->sync_max;
        double bytes = (double)r->decode_weight_bytes + (double)B * kv_tok * (L + D / 2.0);
        if (mc->n_experts > 0)
            bytes -= expert_bytes * pow(1.0 - (double)mc->n_experts_used / mc->n_experts, (double)B);
        if (r->mach.mem_bw_gbs > 0) pt->decode_floor_ms = 1e3 * bytes / (r->mach.mem_bw_gbs * 1e9);
        if (r->mach.fma_gflops > 0)
            pt->prefill_floor_ms = 1e3 * ((double)B * L * w_flops + (double)B * att_flops_seq +
                                          2.0 * B * mc->vocab_size * mc->dim) / (r->mach.fma_gflops * 1e9);
        if (r->mach.int8_gops > 0) {
            pt->decode_int8_ms = 1e3 * B * (w_flops + 2.0 * mc->vocab_size * mc->dim) / (r->mach.int8_gops * 1e9);
            pt->prefill_int8_ms = pt->prefill_floor_ms * r->mach.fma_gflops / r->mach.int8_gops;
        }
        r->steps += pt->steps; r->syncs += pt->syncs; r->allocs += pt->allocs;
        if (pt->steps && pt->sync_min < r->sync_min) r->sync_min = pt->sync_min;
        if (pt->sync_max > r->sync_max) r->sync_max = pt->sync_max;
        r->n_pts++;
    }
    if (r->sync_min > r->sync_max) r->sync_min = r->sync_max;
    for (int i = 0; prompts && i < maxb; i++) kiln_free(prompts[i]);
    kiln_free(prompts);
    kiln_free(lens);
    kiln_free(v);
    kiln_engine_get_info(e, &r->info);
    r->peak_rss = kiln_bench_peak_rss();
    return rc;
}

const char *kiln_bench_scaling_status(const kiln_bench_result *r, int i) {
    const kiln_bench_point *b = &r->pts[0], *p = &r->pts[i];
    if (i > 0 && p->batch > r->pts[i - 1].batch && p->decode_tps.med < r->pts[i - 1].decode_tps.med) return "CLIFF";
    if (b->step_ms.med > 0 && p->step_ms.med <= 1.10 * b->step_ms.med) return "LINEAR";
    return "SUBLINEAR";
}
