/* kiln-layer: engine (links only this layer and those below it) */
/* test_families.c: issue 19's model families through the engine on the CPU backend
 * (fixtures: tests/fixtures/families, made by make_families.py; logits against float64 are
 * tests/py/test_families.py's job):
 *   - every fixture opens and reports its features; a backend table without a feature
 *     (ops.features = 0, what the cuda backend has today) is refused with the feature named;
 *   - sliding windows in the paged KV cache (mistral-swa: window 8 on every layer): chunked
 *     prefill and decode with 2-slot blocks, alone and beside other sequences, with and
 *     without the prefix cache, give the same greedy ids and logprobs as 64-slot blocks (where
 *     nothing is released) while the blocks in use stay bounded by the window (printed); every
 *     block is free again at the end;
 *   - qwen2-swa (a full layer 0) keeps every block. */
#include <stdint.h>
#include <string.h>
#include "backend/backend.h"
#include "engine/engine.h"
#include "engine/engine_internal.h"
#include "model/model.h"
#include "test.h"

#define FIX "tests/fixtures/families/"
#define MAXO 64

typedef struct result {
    int32_t ids[MAXO];
    float lp[MAXO];
    int n;
} result;

static int g_backend_sampling; /* cpu.backend_sampling: the backend draws, steps overlap */

static int g_kv_blocks; /* 0: sized from kv_memory_mb */

static kiln_engine *open_engine(const char *model, int block_size, int budget, int prefix) {
    kiln_engine_options o;
    kiln_engine_options_default(&o);
    o.cpu.backend_sampling = g_backend_sampling;
    o.kv_blocks = g_kv_blocks;
    o.model_path = model;
    o.skip_tokenizer = 1;
    o.max_seqs = 8;
    o.kv_block_size = block_size;
    o.kv_memory_mb = 4;
    o.max_batch_tokens = budget;
    o.max_model_len = 128;
    o.enable_prefix_cache = prefix ? 1 : -1;
    kiln_engine *e = NULL;
    kiln_error err = {0};
    if (kiln_engine_open(&e, &o, &err)) fprintf(stderr, "open %s: %s\n", model, err.msg);
    return e;
}

/* n requests (prompts[i] of len[i] tokens, max_new each), all added at step 0 unless
 * staggered (request i at step 3 * i); returns the peak of blocks in use */
static int run(kiln_engine *e, int32_t (*prompts)[64], const int *len, int n, int max_new, int staggered, result *res) {
    uint64_t ids[8];
    int done = 0, step = 0, peak = 0;
    int fin[8] = {0};
    kiln_error err = {0};
    memset(res, 0, sizeof(result) * (size_t)n);
    while (done < n && step < 10000) {
        for (int i = 0; i < n; i++)
            if ((staggered ? 3 * i : 0) == step) {
                kiln_request_params p;
                kiln_request_params_default(&p);
                p.prompt_ids = prompts[i];
                p.n_prompt = len[i];
                p.max_tokens = max_new;
                p.ignore_eos = 1;
                p.sampling.temperature = 0;
                p.sampling.logprobs = 1;
                if (kiln_engine_add_request(e, &p, &ids[i], &err)) {
                    fprintf(stderr, "add: %s\n", err.msg);
                    return -1;
                }
            }
        int active;
        if (kiln_engine_step(e, &active, &err)) {
            fprintf(stderr, "step: %s\n", err.msg);
            return -1;
        }
        kiln_engine_stats st;
        kiln_engine_get_stats(e, &st);
        if (st.kv_blocks_used > peak) peak = st.kv_blocks_used;
        step++;
        for (int i = 0; i < n; i++) {
            if ((staggered ? 3 * i : 0) >= step || fin[i]) continue;
            kiln_output o;
            if (kiln_engine_poll(e, ids[i], &o, &err)) return -1;
            for (int k = 0; k < o.n_new && res[i].n < MAXO; k++) {
                res[i].lp[res[i].n] = o.logprobs[k];
                res[i].ids[res[i].n++] = o.new_ids[k];
            }
            if (o.finish) fin[i] = 1, done++;
        }
    }
    int active = 1;
    while (active) kiln_engine_step(e, &active, &err); /* drain a step left in flight */
    return peak;
}

static int same(const result *a, const result *b, float tol) {
    if (a->n != b->n || memcmp(a->ids, b->ids, (size_t)a->n * 4)) return 0;
    for (int i = 0; i < a->n; i++)
        if (a->lp[i] - b->lp[i] > tol || b->lp[i] - a->lp[i] > tol) return 0;
    return 1;
}

static void test_features_and_refusal(void) {
    static const struct { const char *fx; unsigned feat; const char *word; } k[] = {
        {"llama3-rope", KILN_FEAT_ROPE_SCALING, "llama3"}, {"yarn-rope", KILN_FEAT_ROPE_SCALING, "yarn"},
        {"linear-rope", KILN_FEAT_ROPE_SCALING, "linear"}, {"dynamic-rope", KILN_FEAT_ROPE_SCALING, "dynamic"},
        {"qwen2", KILN_FEAT_QKV_BIAS, "biases"},           {"qwen3", KILN_FEAT_QK_NORM, "q/k RMSNorm"},
        {"mistral3", 0, NULL},                             {"mistral3-native", 0, NULL},
        {"mistral-swa", KILN_FEAT_WINDOW, "sliding-window"}, {"qwen2-swa", KILN_FEAT_WINDOW | KILN_FEAT_QKV_BIAS, "sliding-window"},
        {"llama3-rope.gguf", KILN_FEAT_ROPE_SCALING, "rope_freqs"}, {"yarn-rope.gguf", KILN_FEAT_ROPE_SCALING, "yarn"},
        {"qwen2.gguf", KILN_FEAT_QKV_BIAS, "biases"},      {"qwen3.gguf", KILN_FEAT_QK_NORM, "q/k RMSNorm"},
        {"mixtral", KILN_FEAT_MOE, "mixture of experts"},  {"mixtral-native", KILN_FEAT_MOE, "mixture of experts"},
        {"mixtral.gguf", KILN_FEAT_MOE, "mixture of experts"},
    };
    kiln_backend_ops none = *kiln_backend_cpu_ops();
    none.name = "featureless";
    none.features = 0; /* what the cuda backend's table says today */
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        char path[256];
        snprintf(path, sizeof path, FIX "%s", k[i].fx);
        kiln_model *m = NULL;
        kiln_error err = {0};
        if (kiln_model_load(&m, path, &err)) {
            KT_CHECK(0, "%s: %s", path, err.msg);
            continue;
        }
        KT_CHECK(kiln_model_features(m) == k[i].feat, "%s: features %#x, expected %#x", k[i].fx, kiln_model_features(m),
                 k[i].feat);
        KT_CHECK(kiln_backend_check_model(kiln_backend_cpu_ops(), m, &err) == KILN_OK, "%s: cpu refuses: %s", k[i].fx,
                 err.msg);
        int rc = kiln_backend_check_model(&none, m, &err);
        if (k[i].word) {
            KT_CHECK(rc == KILN_ERR_UNSUPPORTED && strstr(err.msg, k[i].word) && strstr(err.msg, "featureless"),
                     "%s: refusal without the feature named: %s", k[i].fx, err.msg);
            printf("ok   %-18s refused: %s\n", k[i].fx, err.msg);
        } else {
            KT_CHECK(rc == KILN_OK, "%s: refused: %s", k[i].fx, err.msg);
            KT_CHECK(m->n_skipped > 0, "%s: no vision tensors skipped", k[i].fx);
        }
        kiln_model_free(m);
    }
}

static void test_window_blocks(void) {
    int32_t prompts[4][64];
    int len[4] = {16, 32, 40, 24};
    unsigned long long s = 19;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 64; j++) prompts[i][j] = 3 + (int)(kt_rand_u64(&s) % 90);
    memcpy(prompts[3], prompts[1], sizeof prompts[1]); /* a shared prefix for the cache */
    result ref[4], got[4];
    /* reference: 64-slot blocks cover the whole context (nothing is released), solo runs */
    for (int i = 0; i < 4; i++) {
        kiln_engine *e = open_engine(FIX "mistral-swa", 64, 2048, 0);
        if (!e) { KT_CHECK(0, "open mistral-swa"); return; }
        KT_CHECK(run(e, &prompts[i], &len[i], 1, 16, 0, &ref[i]) >= 0, "reference run %d", i);
        kiln_engine_close(e);
    }
    for (int mode = 0; mode < 6; mode++) {
            int prefix = mode & 1, stag = (mode >> 1) & 1;
            g_backend_sampling = mode >= 4; /* overlapped steps: a step in flight while the next is built */
            kiln_engine *e = open_engine(FIX "mistral-swa", 2, 4, prefix);
            if (!e) { KT_CHECK(0, "open"); return; }
            int peak = run(e, prompts, len, 4, 16, stag, got);
            kiln_engine_stats st;
            kiln_engine_get_stats(e, &st);
            for (int i = 0; i < 4; i++)
                KT_CHECK(same(&got[i], &ref[i], 2e-5f), "prefix %d staggered %d: request %d differs from its solo run "
                         "with 64-slot blocks", prefix, stag, i);
            /* window 8 over 2-slot blocks: at most 5 blocks + the chunk's (budget 4: 2 more) per sequence */
            KT_CHECK(peak > 0 && peak <= 4 * 7, "peak %d blocks for 4 sequences", peak);
            KT_CHECK(st.kv_blocks_used == 0, "blocks still referenced at the end: %d", st.kv_blocks_used);
            KT_CHECK(!g_backend_sampling || st.overlapped_steps > 0, "no overlapped steps with backend sampling");
            printf("ok   window 8, 2-slot blocks, prefix cache %s, %s%s: peak %d blocks in use for 4 sequences of up to "
                   "56 tokens (without release: %d); ids and logprobs equal the 64-slot runs\n",
                   prefix ? "on" : "off", stag ? "staggered" : "together", g_backend_sampling ? ", overlapped" : "", peak, (16 + 32 + 40 + 24 + 4 * 16) / 2);
            kiln_engine_close(e);
    }
    g_backend_sampling = 0;
    /* a pool smaller than one sequence's context: 8 two-slot blocks hold the window (8) and a
     * 4-token step, so a 56-token sequence runs (refused without windows: 28 blocks) */
    {
        g_kv_blocks = 8;
        kiln_engine *e = open_engine(FIX "mistral-swa", 2, 4, 0);
        g_kv_blocks = 0;
        if (!e) { KT_CHECK(0, "open with 8 blocks"); return; }
        result r;
        int peak = run(e, &prompts[2], &len[2], 1, 16, 0, &r);
        KT_CHECK(peak > 0 && peak <= 8 && same(&r, &ref[2], 2e-5f), "8-block pool: peak %d, same %d", peak,
                 same(&r, &ref[2], 2e-5f));
        printf("ok   a pool of 8 two-slot blocks runs a 56-token sequence with window 8 (peak %d blocks), same output\n",
               peak);
        kiln_engine_close(e);
    }
    /* blocks released out of the window stay in the prefix cache (free, LRU): the same prompt
     * again finds its chain, and its output is the same */
    {
        kiln_engine *e = open_engine(FIX "mistral-swa", 2, 4, 1);
        if (!e) { KT_CHECK(0, "open"); return; }
        result a, b;
        run(e, &prompts[1], &len[1], 1, 16, 0, &a);
        run(e, &prompts[1], &len[1], 1, 16, 0, &b);
        kiln_engine_stats st;
        kiln_engine_get_stats(e, &st);
        KT_CHECK(same(&a, &ref[1], 2e-5f) && same(&b, &ref[1], 2e-5f), "sequential runs with prefix hits differ");
        KT_CHECK(st.prefix_cache_hits >= 16, "prefix hits %llu after releasing the window's blocks",
                 (unsigned long long)st.prefix_cache_hits);
        printf("ok   the same 32-token prompt twice: %llu prompt tokens from the prefix cache (blocks released out of "
               "the window but still cached), same output\n", (unsigned long long)st.prefix_cache_hits);
        kiln_engine_close(e);
    }
    /* a full-attention layer: nothing is released */
    kiln_engine *e = open_engine(FIX "qwen2-swa", 2, 4, 0);
    if (!e) { KT_CHECK(0, "open qwen2-swa"); return; }
    KT_CHECK(e->kv_window == 0, "qwen2-swa: kv_window %d (layer 0 is full attention)", e->kv_window);
    int peak = run(e, &prompts[2], &len[2], 1, 16, 0, got);
    KT_CHECK(peak == (40 + 16) / 2 || peak == (40 + 16) / 2 - 1, "qwen2-swa: peak %d, expected every block (28)", peak);
    printf("ok   qwen2-swa (full layer 0): peak %d blocks: kept\n", peak);
    kiln_engine_close(e);
}

/* Mixtral on the CPU: ragged batches are exact (I5): 4 sequences together, with chunked
 * prefill, give bit-identical ids and logprobs to their solo runs (routing is per row). */
static void test_moe_batch(void) {
    int32_t prompts[4][64];
    int len[4] = {5, 33, 17, 48};
    unsigned long long s = 23;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 64; j++) prompts[i][j] = 3 + (int)(kt_rand_u64(&s) % 90);
    result solo[4], batch[4];
    for (int i = 0; i < 4; i++) {
        kiln_engine *e = open_engine(FIX "mixtral", 16, 2048, 0);
        if (!e) { KT_CHECK(0, "open mixtral"); return; }
        run(e, &prompts[i], &len[i], 1, 12, 0, &solo[i]);
        kiln_engine_close(e);
    }
    kiln_engine *e = open_engine(FIX "mixtral", 16, 24, 0);
    if (!e) return;
    run(e, prompts, len, 4, 12, 1, batch);
    kiln_engine_close(e);
    for (int i = 0; i < 4; i++)
        KT_CHECK(solo[i].n == 12 && same(&solo[i], &batch[i], 0.0f), "mixtral request %d: batch differs from solo", i);
    printf("ok   mixtral (4 experts, top 2): 4 staggered sequences in 24-token steps bit-identical to their solo runs\n");
}

int main(void) {
    if (!kt_exists(FIX "mistral-swa/config.json")) KT_SKIP("tests/fixtures/families not found (cwd must be the repo)");
    test_features_and_refusal();
    test_window_blocks();
    test_moe_batch();
    return kt_done();
}
