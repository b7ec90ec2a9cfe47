/* kiln-layer: engine (links only this layer and those below it) */
/* test_engine_grammar.c: constrained decoding through the public API (kiln.h), stories260K.
 *   - sampled outputs (temperature 1, several seeds) under a regex and a GBNF grammar: the bytes
 *     of the output tokens form a sentence of the grammar, and a request that stops does so only
 *     where the sentence is complete;
 *   - a batch of constrained requests equals each run alone (I5 with masks);
 *   - compile errors name the part;
 *   - an engine whose backend draws the tokens (cpu backend_sampling, overlapped scheduling) sends
 *     the masks with the step: every output equals the host-sampled run's token for token, also in
 *     a batch where unconstrained requests run beside constrained ones (their steps drain instead
 *     of overlapping: stats.grammar_drains), with one wait per step (I1);
 *   - jump-forward (options.jump_forward): a JSON schema and a GBNF grammar with forced literals
 *     give outputs of the grammar, with forced tokens counted and fewer steps than tokens. */
#include <regex.h>
#include "kiln.h"
#include "test.h"

/* tests/cuda/test_cuda_grammar.c runs this suite on the cuda backend (GRAMMAR_TEST_CUDA): the
 * reference runs sample on the host from the backend's logits (host_sampling), the others on the
 * device with the masks uploaded with each step; batch-invariant mode, so both see the same
 * logits bits and every output must again be equal token for token. */
#ifdef GRAMMAR_TEST_CUDA
#define G_MODEL "models/tinystories-656K"
#define G_TOK "models/tinystories-656K/tokenizer.json"
#else
#define G_MODEL "models/stories260K/stories260K.bin"
#define G_TOK "models/stories260K/tok512.bin"
#endif

static const char *g_model, *g_tok;

static kiln_engine *open_engine_jf(int backend_sampling, int jump_forward) {
    kiln_engine_options o;
    kiln_engine_options_default(&o);
    o.model_path = g_model;
    o.tokenizer_path = g_tok;
    o.max_seqs = 8;
    o.kv_memory_mb = 16;
    o.cpu.backend_sampling = backend_sampling;
    o.jump_forward = jump_forward;
#ifdef GRAMMAR_TEST_CUDA
    o.backend = "cuda";
    o.host_sampling = !backend_sampling;
    o.batch_invariant = 1;
    o.max_model_len = 512;
#endif
    kiln_engine *e = NULL;
    kiln_error err = {0};
    if (kiln_engine_open(&e, &o, &err)) fprintf(stderr, "open: %s\n", err.msg);
    return e;
}

static kiln_engine *open_engine(int backend_sampling) { return open_engine_jf(backend_sampling, 0); }

typedef struct {
    char bytes[2048];
    size_t n;
    int32_t ids[256];
    int n_ids;
    kiln_finish fin;
} out_t;

/* run n requests (all added at once) to the end; grammars compiled from (kind, src), except for
 * the odd-numbered requests when `mixed` (those run unconstrained) */
static int run_mixed(kiln_engine *e, int kind, const char *src, const uint64_t *seeds, int n, out_t *outs, int mixed) {
    kiln_error err = {0};
    int32_t *prompt = NULL, np = 0;
    if (kiln_engine_tokenize(e, "Once upon a time", 16, 1, &prompt, &np, &err)) return -1;
    uint64_t ids[16];
    for (int i = 0; i < n; i++) {
        kiln_request_params p;
        kiln_request_params_default(&p);
        p.prompt_ids = prompt;
        p.n_prompt = np;
        p.max_tokens = 48;
        p.sampling.temperature = 1.0f;
        p.sampling.seed = seeds[i];
        p.sampling.has_seed = 1;
        if (!(mixed && i % 2) &&
            kiln_engine_compile_grammar(e, (kiln_constraint_kind)kind, src, strlen(src), &p.grammar, &err)) {
            fprintf(stderr, "compile: %s\n", err.msg);
            return -1;
        }
        if (kiln_engine_add_request(e, &p, &ids[i], &err)) {
            fprintf(stderr, "add: %s\n", err.msg);
            kiln_grammar_free(p.grammar);
            return -1;
        }
        memset(&outs[i], 0, sizeof outs[i]);
    }
    kiln_free(prompt);
    int active = 1, done = 0;
    for (int step = 0; done < n && step < 10000; step++) {
        if (kiln_engine_step(e, &active, &err)) return -1;
        for (int i = 0; i < n; i++) {
            if (outs[i].fin) continue;
            kiln_output o;
            if (kiln_engine_poll(e, ids[i], &o, &err)) return -1;
            for (int k = 0; k < o.n_new; k++) {
                size_t l = 0;
                const char *pc = kiln_engine_token_piece(e, o.new_ids[k], &l);
                if (outs[i].n_ids < 256) outs[i].ids[outs[i].n_ids++] = o.new_ids[k];
                if (pc && l && l + outs[i].n < sizeof outs[i].bytes - 1) {
                    /* the model's EOS piece is not text */
                    if (o.finish == KILN_FINISH_STOP && k == o.n_new - 1) break;
                    memcpy(outs[i].bytes + outs[i].n, pc, l);
                    outs[i].n += l;
                }
            }
            if (o.finish) { outs[i].fin = o.finish; done++; }
        }
    }
    while (active) kiln_engine_step(e, &active, &err);
    return 0;
}

static int run(kiln_engine *e, int kind, const char *src, const uint64_t *seeds, int n, out_t *outs) {
    return run_mixed(e, kind, src, seeds, n, outs, 0);
}

static int same(const out_t *a, const out_t *b) {
    return a->n_ids == b->n_ids && a->fin == b->fin && !memcmp(a->ids, b->ids, sizeof(int32_t) * (size_t)a->n_ids);
}

static int full_match(const char *re, const char *s) {
    regex_t r;
    if (regcomp(&r, re, REG_EXTENDED | REG_NOSUB)) return -1;
    int ok = regexec(&r, s, 0, NULL, 0) == 0;
    regfree(&r);
    return ok;
}

int main(void) {
#ifdef GRAMMAR_TEST_CUDA
    kc_require_gpu();
#endif
    g_model = kt_shared(G_MODEL);
    g_tok = kt_shared(G_TOK);
    if (!kt_exists(g_model) || !kt_exists(g_tok)) KT_SKIP("%s not found under %s", G_MODEL, kt_shared(""));
    kiln_engine *e = open_engine(0);
    if (!e) KT_SKIP("cannot open %s", G_MODEL);
    static const uint64_t seeds[6] = {1, 2, 3, 4, 5, 6};
    out_t outs[6], solo;
    /* a regex: words then a period; EOS allowed only after the period */
    const char *re = "( ?[a-z]+){2,6}\\.";
    KT_CHECK(run(e, KILN_CONSTRAINT_REGEX, re, seeds, 6, outs) == 0, "regex run");
    int stops = 0;
    for (int i = 0; i < 6; i++) {
        outs[i].bytes[outs[i].n] = 0;
        if (outs[i].fin == KILN_FINISH_STOP) {
            stops++;
            KT_CHECK(full_match("^( ?[a-z]+){2,6}\\.$", outs[i].bytes) == 1, "seed %d: '%s' is not a sentence", i, outs[i].bytes);
        } else {
            KT_CHECK(full_match("^( ?[a-z]*){0,6}\\.?$", outs[i].bytes) == 1, "seed %d: '%s' left the grammar", i, outs[i].bytes);
        }
    }
    KT_CHECK(stops > 0, "some constrained runs stop (%d of 6)", stops);
    static out_t host_re[6], host_ch[4], host_mx[6], dev[6];
    memcpy(host_re, outs, sizeof host_re);
    /* the batch equals each request alone */
    for (int i = 0; i < 3; i++) {
        KT_CHECK(run(e, KILN_CONSTRAINT_REGEX, re, &seeds[i], 1, &solo) == 0, "solo run");
        KT_CHECK(solo.n_ids == outs[i].n_ids && !memcmp(solo.ids, outs[i].ids, sizeof(int32_t) * (size_t)solo.n_ids),
                 "seed %d: batched output differs from the solo run", i);
    }
    /* a GBNF grammar and a choice */
    const char *gb = "root ::= \"the \" (\"cat\" | \"dog\" | \"bird\") \" \" [a-z]{2,8} \".\"\n";
    KT_CHECK(run(e, KILN_CONSTRAINT_GRAMMAR, gb, seeds, 4, outs) == 0, "grammar run");
    for (int i = 0; i < 4; i++) {
        outs[i].bytes[outs[i].n] = 0;
        if (outs[i].fin == KILN_FINISH_STOP)
            KT_CHECK(full_match("^the (cat|dog|bird) [a-z]{2,8}\\.$", outs[i].bytes) == 1, "grammar: '%s'", outs[i].bytes);
    }
    KT_CHECK(run(e, KILN_CONSTRAINT_CHOICE, "[\"yes\", \"no\", \"maybe so\"]", seeds, 4, outs) == 0, "choice run");
    for (int i = 0; i < 4; i++) {
        outs[i].bytes[outs[i].n] = 0;
        KT_CHECK(outs[i].fin == KILN_FINISH_STOP && full_match("^(yes|no|maybe so)$", outs[i].bytes) == 1, "choice: '%s' (finish %d)",
                 outs[i].bytes, outs[i].fin);
    }
    memcpy(host_ch, outs, sizeof host_ch);
    KT_CHECK(run_mixed(e, KILN_CONSTRAINT_REGEX, re, seeds, 6, host_mx, 1) == 0, "mixed run (host)");
    /* compile errors name the part */
    kiln_error err = {0};
    kiln_grammar *g = NULL;
    const char *bad = "{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"string\",\"format\":\"uri\"}}}";
    int rc = kiln_engine_compile_grammar(e, KILN_CONSTRAINT_JSON_SCHEMA, bad, strlen(bad), &g, &err);
    KT_CHECK(rc == KILN_ERR_UNSUPPORTED && strstr(err.msg, "'format'") && strstr(err.msg, "/properties/x"), "schema error: %s", err.msg);
    rc = kiln_engine_compile_grammar(e, KILN_CONSTRAINT_GRAMMAR, "root ::= x", 10, &g, &err);
    KT_CHECK(rc == KILN_ERR_INVALID_ARG && strstr(err.msg, "'x'"), "grammar error: %s", err.msg);
    kiln_engine_close(e);
    /* backend sampling with overlap: masks in the step, the same tokens as the host sampler */
    e = open_engine(1);
    KT_CHECK(e != NULL, "open with backend sampling");
    if (e) {
        KT_CHECK(run(e, KILN_CONSTRAINT_REGEX, re, seeds, 6, dev) == 0, "regex run (backend sampling)");
        for (int i = 0; i < 6; i++) KT_CHECK(same(&dev[i], &host_re[i]), "regex seed %d: backend-drawn output differs", i);
        KT_CHECK(run(e, KILN_CONSTRAINT_CHOICE, "[\"yes\", \"no\", \"maybe so\"]", seeds, 4, dev) == 0, "choice run");
        for (int i = 0; i < 4; i++) KT_CHECK(same(&dev[i], &host_ch[i]), "choice seed %d: backend-drawn output differs", i);
        KT_CHECK(run_mixed(e, KILN_CONSTRAINT_REGEX, re, seeds, 6, dev, 1) == 0, "mixed run (backend sampling)");
        for (int i = 0; i < 6; i++)
            KT_CHECK(same(&dev[i], &host_mx[i]), "mixed seed %d (%s): backend-drawn output differs", i,
                     i % 2 ? "unconstrained" : "constrained");
        kiln_engine_stats st;
        kiln_engine_get_stats(e, &st);
        KT_CHECK(st.grammar_device_masks > 0 && st.grammar_drains > 0 && st.syncs == st.steps,
                 "stats: %llu device masks, %llu drains, %llu syncs in %llu steps", (unsigned long long)st.grammar_device_masks,
                 (unsigned long long)st.grammar_drains, (unsigned long long)st.syncs, (unsigned long long)st.steps);
        KT_CHECK(st.overlapped_steps > 0, "unconstrained steps still overlap (%llu)", (unsigned long long)st.overlapped_steps);
        kiln_engine_close(e);
    }
    /* jump-forward: forced literals (the schema's keys, the grammar's "the ") go in as chunks */
    e = open_engine_jf(0, 1);
    KT_CHECK(e != NULL, "open with jump-forward");
    if (e) {
        kiln_engine_stats s0, s1;
        kiln_engine_get_stats(e, &s0);
        KT_CHECK(run(e, KILN_CONSTRAINT_GRAMMAR, gb, seeds, 4, outs) == 0, "grammar run (jump-forward)");
        for (int i = 0; i < 4; i++) {
            outs[i].bytes[outs[i].n] = 0;
            if (outs[i].fin == KILN_FINISH_STOP)
                KT_CHECK(full_match("^the (cat|dog|bird) [a-z]{2,8}\\.$", outs[i].bytes) == 1, "jump-forward grammar: '%s'",
                         outs[i].bytes);
            else
                KT_CHECK(full_match("^(t|th|the|the .*)$", outs[i].bytes) == 1, "jump-forward grammar (cut): '%s'", outs[i].bytes);
        }
        const char *sch = "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":6},"
                          "\"animal\":{\"enum\":[\"cat\",\"dog\"]}},\"required\":[\"name\",\"animal\"],"
                          "\"additionalProperties\":false}";
        /* the schema needs pieces for { and " (tinystories-656K's vocabulary has neither) */
        int braces = 0;
        kiln_engine_stats vs;
        kiln_engine_get_stats(e, &vs);
        for (int id = 0; id < vs.vocab_size && !braces; id++) {
            size_t l = 0;
            const char *pc = kiln_engine_token_piece(e, id, &l);
            braces = pc && l == 1 && pc[0] == '{';
        }
        if (!braces) fprintf(stderr, "note: %s has no '{' piece: jump-forward's schema case skipped\n", G_MODEL);
        else KT_CHECK(run(e, KILN_CONSTRAINT_JSON_SCHEMA, sch, seeds, 4, outs) == 0, "schema run (jump-forward)");
        int n_tok = 0;
        for (int i = 0; braces && i < 4; i++) {
            outs[i].bytes[outs[i].n] = 0;
            n_tok += outs[i].n_ids;
            KT_CHECK(!strncmp(outs[i].bytes, "{", 1), "jump-forward schema output starts an object: '%s'", outs[i].bytes);
            if (outs[i].fin == KILN_FINISH_STOP)
                KT_CHECK(strstr(outs[i].bytes, "\"animal\"") != NULL, "jump-forward schema: '%s'", outs[i].bytes);
        }
        kiln_engine_get_stats(e, &s1);
        KT_CHECK(s1.grammar_forced_tokens > s0.grammar_forced_tokens, "forced tokens counted (%llu)",
                 (unsigned long long)(s1.grammar_forced_tokens - s0.grammar_forced_tokens));
        KT_CHECK(s1.syncs == s1.steps, "one wait per step with jump-forward");
        fprintf(stderr, "jump-forward: %llu forced tokens, %d tokens in the schema run\n",
                (unsigned long long)(s1.grammar_forced_tokens - s0.grammar_forced_tokens), n_tok);
        kiln_engine_close(e);
    }
    return kt_done();
}
