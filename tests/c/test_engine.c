/* kiln-layer: engine (links only this layer and those below it) */
/* test_engine.c: the serving core on the CPU backend (continuous batching, chunked prefill,
 * paged KV, prefix cache, preemption, sampling, stop conditions, invariants I1/I5/I6/I7).
 * Models: stories260K (llama2.c + its tokenizer) and tinystories-656K (ids only). */
#include <stdint.h>
#include <string.h>
#include "engine/engine.h"
#include "engine/engine_internal.h"
#include "test.h"
#include "util/alloc.h"

#define MAXO 512
typedef struct result {
    int32_t ids[MAXO];
    float lp[MAXO];
    int n;
    kiln_finish fin;
    char text[16384];
    size_t tl;
    int max_delta_hold; /* for stop-string hold-back checks */
} result;

static const char *g_model, *g_tok;

/* options of the engines open_opts makes from here on (batch_invariant, fault injection) */
static int g_batch_invariant, g_truncate_hash_bits;

static kiln_engine *open_opts(const char *model, const char *tok, int kv_blocks, int budget, int prefix) {
    kiln_engine_options o;
    kiln_engine_options_default(&o);
    o.batch_invariant = g_batch_invariant;
    o.faults.truncate_hash_bits = g_truncate_hash_bits;
    o.model_path = model;
    o.tokenizer_path = tok;
    o.skip_tokenizer = tok == NULL;
    o.max_seqs = 16;
    o.kv_blocks = kv_blocks;
    o.kv_memory_mb = 32;
    o.max_batch_tokens = budget;
    o.enable_prefix_cache = prefix ? 1 : -1;
    kiln_engine *e = NULL;
    kiln_error err = {0};
    if (kiln_engine_open(&e, &o, &err)) fprintf(stderr, "open: %s\n", err.msg);
    return e;
}

static void params(kiln_request_params *p, const int32_t *prompt, int n, int max_tokens) {
    kiln_request_params_default(p);
    p->prompt_ids = prompt;
    p->n_prompt = n;
    p->max_tokens = max_tokens;
    p->sampling.temperature = 0;
    p->sampling.logprobs = 1;
    p->ignore_eos = 1;
}

/* run until every request finishes; requests are added at the step given in add_at[] */
static int run(kiln_engine *e, kiln_request_params *ps, const int *add_at, int n, result *res,
               uint64_t *allocs_in_steps) {
    uint64_t ids[64];
    int added = 0, done = 0, step = 0;
    kiln_error err = {0};
    memset(res, 0, sizeof(result) * (size_t)n);
    if (allocs_in_steps) *allocs_in_steps = 0;
    while (done < n && step < 100000) {
        for (int i = 0; i < n; i++)
            if (add_at[i] == step) {
                if (kiln_engine_add_request(e, &ps[i], &ids[i], &err)) { fprintf(stderr, "add: %s\n", err.msg); return -1; }
                added++;
            }
        int active;
        uint64_t a0 = kiln_alloc_count();
        if (kiln_engine_step(e, &active, &err)) { fprintf(stderr, "step: %s\n", err.msg); return -1; }
        if (allocs_in_steps) *allocs_in_steps += kiln_alloc_count() - a0;
        step++;
        for (int i = 0; i < n; i++) {
            if (add_at[i] >= step || res[i].fin) continue;
            kiln_output o;
            if (kiln_engine_poll(e, ids[i], &o, &err)) { fprintf(stderr, "poll: %s\n", err.msg); return -1; }
            for (int k = 0; k < o.n_new && res[i].n < MAXO; k++) {
                res[i].lp[res[i].n] = o.logprobs ? o.logprobs[k] : 0;
                res[i].ids[res[i].n++] = o.new_ids[k];
            }
            if (res[i].tl + o.text_len < sizeof res[i].text) {
                memcpy(res[i].text + res[i].tl, o.text_delta, o.text_len);
                res[i].tl += o.text_len;
            }
            if (o.finish) { res[i].fin = o.finish; done++; }
        }
    }
    return step;
}

static int same_result(const result *a, const result *b) {
    return a->n == b->n && memcmp(a->ids, b->ids, (size_t)a->n * 4) == 0 && memcmp(a->lp, b->lp, (size_t)a->n * 4) == 0;
}

static void make_prompt(int32_t *p, int n, int seed, int vocab) {
    p[0] = 1;
    unsigned long long s = (unsigned long long)seed * 7919 + 17;
    for (int i = 1; i < n; i++) p[i] = 3 + (int)(kt_rand_u64(&s) % (unsigned)(vocab - 3));
}

static result g_solo[16], g_batch[16];

/* solo reference runs: one engine, one request at a time */
static void solo(const char *model, kiln_request_params *ps, int n, result *out) {
    kiln_engine *e = open_opts(model, NULL, 0, 2048, 0);
    for (int i = 0; i < n; i++) {
        int at = 0;
        run(e, &ps[i], &at, 1, &out[i], NULL);
    }
    kiln_engine_close(e);
}

static void test_coherence(const char *model, int vocab) {
    int32_t prompts[8][64];
    kiln_request_params ps[8];
    int zero[8] = {0};
    /* same prompt replicated 1, 4, 8 times: identical outputs */
    make_prompt(prompts[0], 20, 1, vocab);
    for (int i = 0; i < 8; i++) params(&ps[i], prompts[0], 20, 48);
    result *base = &g_solo[0];
    solo(model, ps, 1, base);
    int reps[3] = {1, 4, 8};
    for (int r = 0; r < 3; r++) {
        kiln_engine *e = open_opts(model, NULL, 0, 2048, 0);
        run(e, ps, zero, reps[r], g_batch, NULL);
        int ok = 1;
        for (int i = 0; i < reps[r]; i++) ok &= same_result(&g_batch[i], base);
        KT_CHECK(ok, "%s: same prompt x%d: outputs not identical", model, reps[r]);
        kiln_engine_close(e);
    }
    /* 8 distinct prompts in one batch == their solo runs */
    for (int i = 0; i < 8; i++) { make_prompt(prompts[i], 5 + 7 * i, 100 + i, vocab); params(&ps[i], prompts[i], 5 + 7 * i, 40); }
    solo(model, ps, 8, g_solo);
    kiln_engine *e = open_opts(model, NULL, 0, 2048, 0);
    run(e, ps, zero, 8, g_batch, NULL);
    for (int i = 0; i < 8; i++) KT_CHECK(same_result(&g_batch[i], &g_solo[i]), "%s: distinct prompt %d differs from solo", model, i);
    kiln_engine_close(e);
}

/* I5: prefills and decodes of different lengths mixed, chunk boundaries inside prompts,
 * requests joining mid-way: bit-identical ids and logprobs to the solo runs */
static void test_ragged(const char *model, int vocab, int budget) {
    int32_t prompts[6][128];
    int lens[6] = {3, 17, 40, 70, 1, 33}, at[6] = {0, 0, 2, 3, 5, 9};
    kiln_request_params ps[6];
    for (int i = 0; i < 6; i++) { make_prompt(prompts[i], lens[i], 300 + i, vocab); params(&ps[i], prompts[i], lens[i], 30 + i); }
    solo(model, ps, 6, g_solo);
    kiln_engine *e = open_opts(model, NULL, 0, budget, 0);
    uint64_t allocs = 0;
    run(e, ps, at, 6, g_batch, &allocs);
    for (int i = 0; i < 6; i++)
        KT_CHECK(same_result(&g_batch[i], &g_solo[i]), "%s budget %d: request %d (prompt %d) differs from solo", model, budget, i, lens[i]);
    KT_CHECK(allocs == 0, "I7: %llu allocations inside the step loop", (unsigned long long)allocs);
    kiln_engine_stats st;
    kiln_engine_get_stats(e, &st);
    KT_CHECK(st.syncs == st.steps && st.steps > 0, "I1: %llu syncs for %llu steps", (unsigned long long)st.syncs, (unsigned long long)st.steps);
    kiln_engine_close(e);
}

static void test_sampling_and_preemption(const char *model, int vocab) {
    int32_t prompts[6][64];
    kiln_request_params ps[6];
    int zero[6] = {0};
    for (int i = 0; i < 6; i++) {
        make_prompt(prompts[i], 10 + 5 * i, 500 + i, vocab);
        params(&ps[i], prompts[i], 10 + 5 * i, 60);
        ps[i].sampling.temperature = 0.9f;
        ps[i].sampling.top_p = 0.9f;
        ps[i].sampling.top_k = 40;
        ps[i].sampling.seed = 1234 + (uint64_t)i;
        ps[i].sampling.has_seed = 1;
    }
    solo(model, ps, 6, g_solo);
    kiln_engine *e = open_opts(model, NULL, 0, 2048, 0);
    run(e, ps, zero, 6, g_batch, NULL);
    for (int i = 0; i < 6; i++) KT_CHECK(same_result(&g_batch[i], &g_solo[i]), "seeded sampling: request %d alone != in a batch", i);
    kiln_engine_close(e);
    /* a pool of 14 blocks (224 tokens) for 6 requests needing up to 95 tokens each */
    e = open_opts(model, NULL, 14, 2048, 0);
    run(e, ps, zero, 6, g_batch, NULL);
    kiln_engine_stats st;
    kiln_engine_get_stats(e, &st);
    KT_CHECK(st.preemptions > 0, "the small pool caused no preemption");
    for (int i = 0; i < 6; i++) KT_CHECK(same_result(&g_batch[i], &g_solo[i]) && g_batch[i].fin == KILN_FINISH_LENGTH,
                                         "preemption: request %d differs from its solo run", i);
    KT_CHECK(st.kv_blocks_used == 0, "blocks still held after all requests finished: %d", st.kv_blocks_used);
    printf("preemption test: %llu preemptions, all 6 outputs identical\n", (unsigned long long)st.preemptions);
    kiln_engine_close(e);
}

static void test_prefix_cache(const char *model, int vocab) {
    int32_t a[128], b[128];
    make_prompt(a, 70, 900, vocab);
    memcpy(b, a, 70 * 4);
    for (int i = 70; i < 80; i++) b[i] = 5 + i;
    kiln_request_params pa, pb;
    params(&pa, a, 70, 20);
    params(&pb, b, 80, 20);
    result ref_b;
    solo(model, &pb, 1, &ref_b);
    kiln_engine *e = open_opts(model, NULL, 0, 2048, 1);
    int zero = 0;
    run(e, &pa, &zero, 1, g_batch, NULL);
    kiln_engine_stats s0, s1;
    kiln_engine_get_stats(e, &s0);
    run(e, &pb, &zero, 1, g_batch, NULL);
    kiln_engine_get_stats(e, &s1);
    uint64_t computed = s1.prompt_tokens_computed - s0.prompt_tokens_computed;
    /* 80 tokens share 70 with the first prompt: 4 full blocks (64 tokens) come from the cache */
    KT_CHECK(computed == 16, "prefix cache: %llu prompt tokens prefilled, want 16", (unsigned long long)computed);
    KT_CHECK(same_result(&g_batch[0], &ref_b), "prefix cache: output differs from the uncached run");
    /* a fully cached prompt still recomputes its last token */
    kiln_engine_get_stats(e, &s0);
    run(e, &pb, &zero, 1, g_batch, NULL);
    kiln_engine_get_stats(e, &s1);
    computed = s1.prompt_tokens_computed - s0.prompt_tokens_computed;
    KT_CHECK(computed >= 1 && computed <= 16, "repeat prompt: %llu tokens prefilled", (unsigned long long)computed);
    KT_CHECK(same_result(&g_batch[0], &ref_b), "repeat prompt: output differs");
    kiln_engine_close(e);
    /* forced collisions (faults.truncate_hash_bits): every hash keeps 1 bit; distinct prompts
     * must not share blocks */
    g_truncate_hash_bits = 1;
    e = open_opts(model, NULL, 0, 2048, 1);
    g_truncate_hash_bits = 0;
    int32_t c[128];
    make_prompt(c, 80, 901, vocab);
    kiln_request_params pc;
    params(&pc, c, 80, 20);
    result ref_c;
    solo(model, &pc, 1, &ref_c);
    run(e, &pb, &zero, 1, g_batch, NULL);
    run(e, &pc, &zero, 1, &g_batch[1], NULL);
    KT_CHECK(same_result(&g_batch[0], &ref_b) && same_result(&g_batch[1], &ref_c), "forced hash collision mixed sequences");
    kiln_engine_close(e);
}

static void test_stops_and_limits(void) {
    kiln_engine *e = open_opts(g_model, g_tok, 0, 2048, 0);
    if (!e) { KT_CHECK(0, "open with tokenizer"); return; }
    int32_t bos = 1;
    kiln_request_params p;
    params(&p, &bos, 1, 200);
    p.ignore_eos = 0;
    int zero = 0;
    result full;
    run(e, &p, &zero, 1, &full, NULL);
    full.text[full.tl] = 0;
    /* "little girl" spans tokens; stop there: the text ends right before it */
    const char *stop = "little girl";
    const char *at = strstr(full.text, stop);
    KT_CHECK(at != NULL, "expected '%s' in the greedy text", stop);
    if (at) {
        const char *stops[1] = {stop};
        p.stop_strings = stops;
        p.n_stop_strings = 1;
        result r;
        run(e, &p, &zero, 1, &r, NULL);
        r.text[r.tl] = 0;
        KT_CHECK(r.fin == KILN_FINISH_STOP, "stop string: finish %d", r.fin);
        KT_CHECK(r.tl == (size_t)(at - full.text) && strncmp(r.text, full.text, r.tl) == 0,
                 "stop string: text '%s' should be the %zu bytes before '%s'", r.text, (size_t)(at - full.text), stop);
        p.n_stop_strings = 0;
    }
    /* streaming hold-back: after each step, the text handed out never ends in a proper prefix of
     * the stop string "Lily." that later completes */
    {
        const char *stops[1] = {"Lily. She"};
        p.stop_strings = stops;
        p.n_stop_strings = 1;
        uint64_t id;
        kiln_error err = {0};
        kiln_engine_add_request(e, &p, &id, &err);
        char acc[8192] = {0};
        size_t al = 0;
        int leaked = 0;
        for (int s = 0; s < 400; s++) {
            int active;
            kiln_engine_step(e, &active, &err);
            kiln_output o;
            kiln_engine_poll(e, id, &o, &err);
            memcpy(acc + al, o.text_delta, o.text_len);
            al += o.text_len;
            acc[al] = 0;
            if (strstr(acc, "Lily. She")) leaked = 1;
            if (o.finish) break;
        }
        KT_CHECK(!leaked, "the stop string reached the streamed text");
        KT_CHECK(al > 0 && strncmp(acc, full.text, al) == 0, "held-back stream is not a prefix of the full text");
        p.n_stop_strings = 0;
    }
    /* a stop id ends the request where it first appears; min_tokens suppresses it before */
    result r;
    int32_t sid = full.ids[5];
    int natural = 6;
    for (int i = 0; i < 5; i++) if (full.ids[i] == sid) { natural = i + 1; break; }
    p.stop_ids = &sid;
    p.n_stop_ids = 1;
    run(e, &p, &zero, 1, &r, NULL);
    KT_CHECK(r.fin == KILN_FINISH_STOP && r.n == natural && r.ids[r.n - 1] == sid, "stop id: %d tokens, finish %d", r.n, r.fin);
    p.min_tokens = natural + 10;
    p.max_tokens = natural + 20;
    run(e, &p, &zero, 1, &r, NULL);
    KT_CHECK(r.n >= natural + 10, "min_tokens: %d tokens, want >= %d", r.n, natural + 10);
    for (int i = 0; i < natural + 10 - 1 && i < r.n; i++) KT_CHECK(r.ids[i] != sid, "stop id at %d before min_tokens", i);
    p.n_stop_ids = 0;
    p.min_tokens = 0;
    p.max_tokens = 7;
    run(e, &p, &zero, 1, &r, NULL);
    KT_CHECK(r.n == 7 && r.fin == KILN_FINISH_LENGTH, "max_tokens 7: got %d, finish %d", r.n, r.fin);

    /* invalid parameters: exact errors */
    struct { const char *what; int code; const char *msg; } cases[] = {
        {"neg max", KILN_ERR_INVALID_ARG, "max_tokens must be >= 1 (got -5)"},
        {"top_p 0", KILN_ERR_INVALID_ARG, "top_p must be in (0, 1] (got 0)"},
        {"top_p 1.5", KILN_ERR_INVALID_ARG, "top_p must be in (0, 1] (got 1.5)"},
        {"temp", KILN_ERR_INVALID_ARG, "temperature must be >= 0 (got -1)"},
        {"stop id", KILN_ERR_INVALID_ARG, "stop token id 99999 is outside the vocabulary (0..511)"},
        {"ctx", KILN_ERR_INVALID_ARG, "this model's maximum context length is 512 tokens; the prompt has 600 tokens and no room is left to generate"},
        {"room", KILN_ERR_INVALID_ARG, "this model's maximum context length is 512 tokens; 1 prompt tokens + 600 max_tokens exceed it"},
        {"min>max", KILN_ERR_INVALID_ARG, "min_tokens (9) must be <= max_tokens (3)"},
    };
    static int32_t longp[600];
    for (int i = 0; i < 600; i++) longp[i] = 5;
    sid = 99999;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        params(&p, &bos, 1, 10);
        if (k == 0) p.max_tokens = -5;
        if (k == 1) p.sampling.top_p = 0;
        if (k == 2) p.sampling.top_p = 1.5f;
        if (k == 3) p.sampling.temperature = -1;
        if (k == 4) { p.stop_ids = &sid; p.n_stop_ids = 1; }
        if (k == 5) { p.prompt_ids = longp; p.n_prompt = 600; p.max_tokens = -1; }
        if (k == 6) p.max_tokens = 600;
        if (k == 7) { p.min_tokens = 9; p.max_tokens = 3; }
        uint64_t id;
        kiln_error err = {0};
        int rc = kiln_engine_add_request(e, &p, &id, &err);
        KT_CHECK(rc == cases[k].code && strcmp(err.msg, cases[k].msg) == 0, "%s: rc %d msg '%s' want '%s'", cases[k].what, rc,
                 err.msg, cases[k].msg);
    }
    /* abort: the request ends with ABORT and its blocks are free at once */
    {
        int32_t pr[40];
        make_prompt(pr, 40, 77, 512);
        kiln_request_params pa, pb;
        params(&pa, pr, 40, 100);
        params(&pb, pr, 20, 30);
        uint64_t ia, ib;
        kiln_error err = {0};
        kiln_engine_add_request(e, &pa, &ia, &err);
        kiln_engine_add_request(e, &pb, &ib, &err);
        int active;
        for (int s = 0; s < 5; s++) kiln_engine_step(e, &active, &err);
        kiln_engine_stats st0, st1;
        kiln_engine_get_stats(e, &st0);
        KT_CHECK(kiln_engine_abort(e, ia, &err) == 0, "abort: %s", err.msg);
        kiln_engine_get_stats(e, &st1);
        KT_CHECK(st1.kv_blocks_used < st0.kv_blocks_used && st1.n_running == st0.n_running - 1, "abort did not free blocks (%d -> %d)",
                 st0.kv_blocks_used, st1.kv_blocks_used);
        kiln_output o;
        kiln_engine_poll(e, ia, &o, &err);
        KT_CHECK(o.finish == KILN_FINISH_ABORT, "aborted request finish %d", o.finish);
        for (int s = 0; s < 100 && active; s++) kiln_engine_step(e, &active, &err);
        kiln_engine_poll(e, ib, &o, &err);
        KT_CHECK(o.finish == KILN_FINISH_LENGTH && o.n_output_tokens == 30, "the other request: finish %d, %d tokens", o.finish,
                 o.n_output_tokens);
        KT_CHECK(kiln_engine_abort(e, 424242, &err) == KILN_ERR_NOT_FOUND, "abort of an unknown id");
    }
    kiln_engine_close(e);
}

/* Issue 22: the KV pool follows the model and max_model_len (x max_seqs), not the machine's
 * RAM: a tiny model gets max_seqs * ceil(max_model_len / block) blocks (+ the null block), the
 * backend holds exactly that, and a prompt past max_model_len is still refused by name. */
static void test_kv_sizing(void) {
    const int lens[2] = {100, 512}, seqs[2] = {4, 64};
    for (int c = 0; c < 2; c++) {
        kiln_engine_options o;
        kiln_engine_options_default(&o);
        o.model_path = g_model;
        o.skip_tokenizer = 1;
        o.max_seqs = seqs[c];
        o.max_model_len = lens[c];
        kiln_engine *e = NULL;
        kiln_error err = {0};
        if (kiln_engine_open(&e, &o, &err)) { KT_CHECK(0, "open: %s", err.msg); return; }
        const kiln_config *mc = &kiln_engine_model(e)->cfg;
        kiln_engine_info info;
        kiln_engine_get_info(e, &info);
        int ctx = lens[c] < mc->max_seq_len ? lens[c] : mc->max_seq_len;
        int per_seq = (ctx + info.block_size - 1) / info.block_size;
        KT_CHECK(info.max_model_len == ctx, "max_model_len %d, want %d", info.max_model_len, ctx);
        KT_CHECK(info.kv_layout.n_blocks == seqs[c] * per_seq + 1, "kv pool of %d blocks for %d seqs x %d, want %d",
                 info.kv_layout.n_blocks, seqs[c], ctx, seqs[c] * per_seq + 1);
        size_t block_bytes = (size_t)mc->n_layers * 2 * mc->n_kv_heads * info.block_size * mc->head_dim * sizeof(float);
        KT_CHECK(info.backend_kv_bytes == info.kv_layout_bytes && info.kv_layout_bytes == block_bytes * info.kv_layout.n_blocks,
                 "kv bytes: backend %zu, layout %zu, want %zu", info.backend_kv_bytes, info.kv_layout_bytes,
                 block_bytes * info.kv_layout.n_blocks);
        static int32_t longp[600];
        for (int i = 0; i < ctx + 1; i++) longp[i] = 1 + i % 500;
        kiln_request_params p;
        params(&p, longp, ctx, 1);
        uint64_t id;
        KT_CHECK(kiln_engine_add_request(e, &p, &id, &err) == KILN_ERR_INVALID_ARG && strstr(err.msg, "maximum context length"),
                 "a %d-token prompt at max_model_len %d: %s", ctx, ctx, err.msg);
        params(&p, longp, ctx - 1, 1); /* the longest that fits */
        KT_CHECK(kiln_engine_add_request(e, &p, &id, &err) == KILN_OK, "a %d-token prompt: %s", ctx - 1, err.msg);
        kiln_engine_close(e);
    }
}

int main(void) {
    g_model = kt_shared("models/stories260K/stories260K.bin");
    g_tok = kt_shared("models/stories260K/tok512.bin");
    const char *tiny = kt_shared("models/tinystories-656K");
    if (!kt_exists(g_model)) KT_SKIP("stories260K not found under %s", kt_shared(""));
    test_coherence(g_model, 512);
    test_ragged(g_model, 512, 24);
    test_ragged(g_model, 512, 7);
    test_sampling_and_preemption(g_model, 512);
    test_prefix_cache(g_model, 512);
    test_stops_and_limits();
    test_kv_sizing();
    if (kt_exists(kt_shared("models/tinystories-656K/model.safetensors"))) {
        test_coherence(tiny, 2048);
        test_ragged(tiny, 2048, 32);
        g_batch_invariant = 1; /* I6: on the CPU the same bit-exactness holds */
        test_ragged(tiny, 2048, 16);
        g_batch_invariant = 0;
    } else {
        fprintf(stderr, "SKIP tinystories engine checks: fixture missing\n");
    }
    return kt_done();
}
