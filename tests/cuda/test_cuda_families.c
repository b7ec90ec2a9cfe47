/* test_cuda_families.c: issue 19's model families on the cuda backend against the cpu backend
 * (fixtures: tests/fixtures/families, tiny random-weight checkpoints made by make_families.py;
 * the cpu backend is checked against their float64 logits by tests/py/test_families.py):
 *   - every fixture the cuda backend runs (RoPE scaling llama3 / yarn / linear / dynamic, GGUF
 *     rope_freqs, Qwen2 q/k/v biases, Qwen3 q/k norms, Mistral 3 text, sliding windows): prompt
 *     logits within 2e-2 relative L2 of the cpu backend's (the bf16 KV bound of
 *     test_cuda_model), and greedy ids of two requests decoded together equal to the cpu's up to
 *     the first near-tie (a cuda token whose cpu logit is within NEAR_TIE of the cpu's top);
 *     the MoE fixtures (mixtral, -native, .gguf) likewise (tests/cuda/test_cuda_moe.c has the
 *     MoE kernels' own cases);
 *   - the windowed fixtures (window 8; mistral-swa on every layer, so the engine releases KV
 *     blocks that left the window; qwen2-swa with a full layer 0) at contexts 2x, 4x and 8x the
 *     window, with 2-slot blocks and a 4-token budget (prefill in chunks, then decode): ids
 *     against the cpu's 64-slot run (nothing released) up to the first near-tie, logprobs
 *     within 2e-2 before it, the KV pool's peak use printed (released blocks: bounded by the
 *     window) and every block free at the end;
 *   - the fixtures' head_dim 16 runs the split attention kernel only, so three dummy-weight models
 *     (--load-format dummy: the same values on both backends) at head_dim 64 / 128 put the
 *     features through the tensor-core kernels too: Mistral with window 40 on every layer and
 *     llama3 RoPE, Qwen2 with biases, a full layer 0, windowed layer 1 and yarn RoPE, Qwen3 with
 *     q/k norms and window 24; prompt logits of 160 tokens (whole prompt in one step: prefill
 *     tiles; and in chunks of 48 and 5 rows: tiles, decode-kernel runs) within 2e-2 per row. */
#include <math.h>
#include <string.h>
#include <unistd.h>
#include "cuda_test.h"
#include "engine/engine.h"
#include "model/model.h"
#include "util/alloc.h"

#define FIX "tests/fixtures/families/"
#define MAXO 64
#define NEAR_TIE 2e-2 /* logits: a tiny random model's top two can be this close */

typedef struct result {
    int32_t ids[MAXO];
    float lp[MAXO];
    int n;
} result;

static int g_dummy; /* open with --load-format dummy */

static kiln_engine *open_engine(const char *model, const char *backend, int block_size, int budget, kiln_error *err) {
    kiln_engine_options o;
    kiln_engine_options_default(&o);
    o.load_dummy = g_dummy;
    o.model_path = model;
    o.backend = backend;
    o.skip_tokenizer = 1;
    o.max_seqs = 8;
    o.kv_block_size = block_size;
    o.kv_memory_mb = 4;
    o.max_batch_tokens = budget;
    o.max_model_len = g_dummy ? 512 : 128;
    if (g_dummy) o.kv_memory_mb = 64;
    kc_target_from_env(&o.cuda);
    kiln_engine *e = NULL;
    if (kiln_engine_open(&e, &o, err)) return NULL;
    return e;
}

/* n greedy requests added together; returns the peak of KV blocks in use, -1 on error */
static int run(kiln_engine *e, int32_t (*prompts)[128], const int *len, int n, int max_new, result *res) {
    uint64_t ids[8];
    int done = 0, step = 0, peak = 0, fin[8] = {0};
    kiln_error err = {0};
    memset(res, 0, sizeof(result) * (size_t)n);
    for (int i = 0; i < n; i++) {
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
    while (done < n && step < 10000) {
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
            if (fin[i]) continue;
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

/* got (cuda) against want (cpu) for prompt: equal ids up to the first difference, which must be
 * a near-tie on the cpu (its logits after prompt + the common ids); logprobs before it within
 * lp_tol. Returns the number of equal leading ids. */
static int compare_greedy(kiln_engine *cpu, const char *what, const int32_t *prompt, int len, const result *got,
                          const result *want, float lp_tol) {
    int n = got->n < want->n ? got->n : want->n, i = 0;
    KT_CHECK(got->n == want->n, "%s: cuda made %d tokens, cpu %d", what, got->n, want->n);
    while (i < n && got->ids[i] == want->ids[i]) i++;
    float maxd = 0;
    for (int k = 0; k < i; k++) maxd = fmaxf(maxd, fabsf(got->lp[k] - want->lp[k]));
    KT_CHECK(maxd <= lp_tol, "%s: logprobs of the common ids differ by up to %g", what, maxd);
    if (i < n) {
        int V = kiln_engine_model(cpu)->cfg.vocab_size, m = len + i;
        int32_t *ids = kiln_malloc((size_t)m * 4);
        float *lg = kiln_malloc((size_t)m * V * 4);
        memcpy(ids, prompt, (size_t)len * 4);
        memcpy(ids + len, want->ids, (size_t)i * 4);
        kiln_error err = {0};
        int rc = kiln_engine_prompt_logits(cpu, ids, m, lg, &err);
        KT_CHECK(rc == 0, "%s: cpu prompt_logits: %s", what, err.msg);
        if (!rc) {
            const float *last = lg + (size_t)(m - 1) * V;
            double gap = (double)last[want->ids[i]] - (double)last[got->ids[i]];
            KT_CHECK(gap <= NEAR_TIE, "%s: token %d: cuda %d, cpu %d, not a near-tie (cpu logit gap %g)", what, i,
                     got->ids[i], want->ids[i], gap);
            printf("     %s: first difference at token %d is a near-tie (cpu logit gap %.3g)\n", what, i, gap);
        }
        kiln_free(ids);
        kiln_free(lg);
    }
    return i;
}

static void family_case(const char *fx, unsigned long long *s) {
    char path[256];
    snprintf(path, sizeof path, FIX "%s", fx);
    kiln_error err = {0};
    kiln_engine *c = open_engine(path, "cpu", 16, 2048, &err);
    if (!c) {
        KT_CHECK(0, "%s: open on cpu: %s", fx, err.msg);
        return;
    }
    unsigned feats = kiln_model_features(kiln_engine_model(c));
    kiln_engine *g = open_engine(path, "cuda", 16, 2048, &err);
    if (!g) {
        KT_CHECK(0, "%s: open on cuda (features %#x): %s", fx, feats, err.msg); /* MoE too: cuda_moe.c */
        kiln_engine_close(c);
        return;
    }
    int V = kiln_engine_model(c)->cfg.vocab_size;
    /* prompt logits: 48 tokens, one request */
    int n = 48;
    int32_t prompts[2][128];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 128; j++) prompts[i][j] = 3 + (int32_t)(kt_rand_u64(s) % (uint64_t)(V - 3));
    float *lg = kiln_malloc((size_t)n * V * 4), *lc = kiln_malloc((size_t)n * V * 4);
    int rg = kiln_engine_prompt_logits(g, prompts[0], n, lg, &err);
    KT_CHECK(rg == 0, "%s: cuda prompt_logits: %s", fx, err.msg);
    int rc = kiln_engine_prompt_logits(c, prompts[0], n, lc, &err);
    KT_CHECK(rc == 0, "%s: cpu prompt_logits: %s", fx, err.msg);
    double e = -1;
    if (!rg && !rc) {
        e = kt_rel_l2(lg, lc, (size_t)n * V);
        KT_CHECK(e <= 2e-2, "%s: prompt logits cuda vs cpu rel L2 %g", fx, e);
    }
    /* greedy, two requests together (ragged prefill, then batched decode) */
    int len[2] = {20, 37};
    result rgpu[2], rcpu[2];
    int pg = run(g, prompts, len, 2, 24, rgpu), pc = run(c, prompts, len, 2, 24, rcpu);
    KT_CHECK(pg >= 0 && pc >= 0, "%s: greedy runs failed", fx);
    int eq[2] = {0, 0};
    for (int i = 0; i < 2 && pg >= 0 && pc >= 0; i++) {
        char what[96];
        snprintf(what, sizeof what, "%s request %d", fx, i);
        eq[i] = compare_greedy(c, what, prompts[i], len[i], &rgpu[i], &rcpu[i], 2e-2f);
    }
    char names[256];
    kiln_model_feature_names(kiln_engine_model(c), feats, names, sizeof names);
    printf("ok   %-16s [%s] prompt logits rel L2 %.3g; greedy ids equal for %d/24 and %d/24 tokens\n", fx,
           feats ? names : "no issue-19 feature", e, eq[0], eq[1]);
    kiln_free(lg);
    kiln_free(lc);
    kiln_engine_close(g);
    kiln_engine_close(c);
}

/* a windowed fixture (window 8) at contexts 2x, 4x, 8x the window: 2-slot blocks, 4-token budget */
static void window_case(const char *fx, int released, unsigned long long *s) {
    char path[256];
    snprintf(path, sizeof path, FIX "%s", fx);
    kiln_error err = {0};
    kiln_engine *ref = open_engine(path, "cpu", 64, 2048, &err); /* nothing released */
    kiln_engine *c = open_engine(path, "cpu", 2, 4, &err);
    kiln_engine *g = open_engine(path, "cuda", 2, 4, &err);
    KT_CHECK(ref && c && g, "%s: open with 2-slot blocks: %s", fx, err.msg);
    if (!ref || !c || !g) {
        if (ref) kiln_engine_close(ref);
        if (c) kiln_engine_close(c);
        if (g) kiln_engine_close(g);
        return;
    }
    int V = kiln_engine_model(c)->cfg.vocab_size, W = kiln_engine_model(c)->cfg.sliding_window;
    KT_CHECK(W == 8, "%s: window %d, expected 8", fx, W);
    int32_t prompts[1][128];
    for (int j = 0; j < 128; j++) prompts[0][j] = 3 + (int32_t)(kt_rand_u64(s) % (uint64_t)(V - 3));
    for (int mult = 2; mult <= 8; mult *= 2) {
        int len = mult * W;
        result rr, rc_, rg_;
        int p_ref = run(ref, prompts, &len, 1, 24, &rr), p_cpu = run(c, prompts, &len, 1, 24, &rc_);
        int p_gpu = run(g, prompts, &len, 1, 24, &rg_);
        KT_CHECK(p_ref >= 0 && p_cpu >= 0 && p_gpu >= 0, "%s: runs at %d tokens failed", fx, len);
        if (p_ref < 0 || p_cpu < 0 || p_gpu < 0) continue;
        char what[96];
        snprintf(what, sizeof what, "%s %dx window (%d-token prompt, chunks of 4)", fx, mult, len);
        int eq = compare_greedy(ref, what, prompts[0], len, &rg_, &rr, 2e-2f);
        kiln_engine_stats st;
        kiln_engine_get_stats(g, &st);
        int all = (len + 24 + 1) / 2; /* 2-slot blocks of the whole context */
        KT_CHECK(st.kv_blocks_used == 0, "%s: %d KV blocks still in use on cuda after the request", fx,
                 st.kv_blocks_used);
        if (released) /* window 8 over 2-slot blocks: 5 blocks + a 4-token chunk's (test_families: <= 7), one
                       * more for the step the cuda backend has in flight while the next is scheduled */
            KT_CHECK(p_gpu <= 8, "%s: cuda peak %d blocks (cpu %d), expected <= 8", fx, p_gpu, p_cpu);
        else
            KT_CHECK(p_gpu >= all - 1, "%s: cuda peak %d blocks, expected every block (%d)", fx, p_gpu, all);
        printf("ok   %-10s window %d, context %3d + 24 (%dx): cuda ids equal the cpu's for %d/24 tokens; KV pool peak "
               "%d blocks of 2 slots on cuda (cpu %d, whole context %d: %s)\n", fx, W, len, mult, eq, p_gpu, p_cpu, all,
               released ? "blocks released out of the window" : "full layer 0 keeps them");
    }
    kiln_engine_close(ref);
    kiln_engine_close(c);
    kiln_engine_close(g);
}

/* a dummy-weight model from config json (written to a temporary folder): cuda vs cpu prompt logits
 * of n tokens with the whole prompt in one step and in chunks */
static void dummy_case(const char *name, const char *json, unsigned long long *s) {
    char dir[] = "/tmp/kiln_fam_XXXXXX", path[256];
    if (!mkdtemp(dir)) { KT_CHECK(0, "mkdtemp"); return; }
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) { KT_CHECK(0, "write %s", path); rmdir(dir); return; }
    fputs(json, f);
    fclose(f);
    g_dummy = 1;
    int budgets[3] = {2048, 48, 5}, n = 160;
    for (int b = 0; b < 3; b++) {
        kiln_error err = {0};
        kiln_engine *g = open_engine(path, "cuda", 16, budgets[b], &err);
        KT_CHECK(g != NULL, "%s: open on cuda: %s", name, err.msg);
        kiln_engine *c = g ? open_engine(path, "cpu", 16, budgets[b], &err) : NULL;
        KT_CHECK(!g || c != NULL, "%s: open on cpu: %s", name, err.msg);
        if (g && c) {
            int V = kiln_engine_model(c)->cfg.vocab_size;
            int32_t *ids = kiln_malloc((size_t)n * 4);
            for (int i = 0; i < n; i++) ids[i] = 3 + (int32_t)(kt_rand_u64(s) % (uint64_t)(V - 3));
            float *lg = kiln_malloc((size_t)n * V * 4), *lc = kiln_malloc((size_t)n * V * 4);
            int rg = kiln_engine_prompt_logits(g, ids, n, lg, &err);
            KT_CHECK(rg == 0, "%s: cuda prompt_logits: %s", name, err.msg);
            int rc = kiln_engine_prompt_logits(c, ids, n, lc, &err);
            KT_CHECK(rc == 0, "%s: cpu prompt_logits: %s", name, err.msg);
            if (!rg && !rc) {
                double worst = 0;
                int at = 0;
                for (int i = 0; i < n; i++) {
                    double e = kt_rel_l2(lg + (size_t)i * V, lc + (size_t)i * V, (size_t)V);
                    if (!(e <= worst)) worst = e, at = i;
                }
                KT_CHECK(worst <= 2e-2, "%s, budget %d: cuda vs cpu worst rel L2 %g at position %d", name, budgets[b],
                         worst, at);
                char names[256];
                kiln_model_feature_names(kiln_engine_model(c), kiln_model_features(kiln_engine_model(c)), names,
                                         sizeof names);
                printf("ok   dummy %-8s [%s] hd %d, %d tokens in steps of <= %d: worst rel L2 %.3g (position %d)\n",
                       name, names, kiln_engine_model(c)->cfg.head_dim, n, budgets[b], worst, at);
            }
            kiln_free(ids);
            kiln_free(lg);
            kiln_free(lc);
        }
        kiln_engine_close(g);
        kiln_engine_close(c);
    }
    g_dummy = 0;
    remove(path);
    rmdir(dir);
}

#define DUMMY_BASE(arch, type, hd, H, KV) \
    "{\"architectures\": [\"" arch "\"], \"model_type\": \"" type "\", \"hidden_size\": 512, " \
    "\"intermediate_size\": 1024, \"num_hidden_layers\": 2, \"num_attention_heads\": " #H ", " \
    "\"num_key_value_heads\": " #KV ", \"head_dim\": " #hd ", \"vocab_size\": 1024, " \
    "\"max_position_embeddings\": 4096, \"rms_norm_eps\": 1e-05, \"hidden_act\": \"silu\", " \
    "\"bos_token_id\": 1, \"eos_token_id\": 2, \"torch_dtype\": \"bfloat16\", "

int main(void) {
    kc_require_gpu();
    FILE *f = fopen(FIX "qwen2/config.json", "r");
    if (!f) KT_SKIP("no family fixtures under " FIX " (run from the repository root; tests/fixtures/make_families.py)");
    fclose(f);
    unsigned long long s = kc_seed();
    static const char *fx[] = {"llama3-rope",  "llama3-rope.gguf", "yarn-rope", "yarn-rope.gguf", "linear-rope",
                               "dynamic-rope", "qwen2",            "qwen2.gguf", "qwen3",         "qwen3.gguf",
                               "mistral3",     "mistral3-native",  "mistral-swa", "qwen2-swa",    "mixtral",
                               "mixtral-native", "mixtral.gguf"};
    for (size_t i = 0; i < sizeof fx / sizeof fx[0]; i++) family_case(fx[i], &s);
    window_case("mistral-swa", 1, &s);
    window_case("qwen2-swa", 0, &s);
    dummy_case("mistral", DUMMY_BASE("MistralForCausalLM", "mistral", 64, 8, 2)
               "\"tie_word_embeddings\": false, \"rope_theta\": 500000.0, \"sliding_window\": 40, "
               "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, "
               "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 64}}", &s);
    dummy_case("qwen2", DUMMY_BASE("Qwen2ForCausalLM", "qwen2", 128, 16, 4)
               "\"tie_word_embeddings\": false, \"rope_theta\": 1000000.0, \"use_sliding_window\": true, "
               "\"sliding_window\": 40, \"max_window_layers\": 1, "
               "\"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4.0, \"original_max_position_embeddings\": 64}}",
               &s);
    dummy_case("qwen3", DUMMY_BASE("Qwen3ForCausalLM", "qwen3", 128, 8, 8)
               "\"tie_word_embeddings\": true, \"rope_theta\": 1000000.0, \"attention_bias\": false, "
               "\"use_sliding_window\": true, \"sliding_window\": 24, \"max_window_layers\": 0}", &s);
    return kt_done();
}
