/* kiln-layer: engine (links only this layer and those below it) */
/* test_engine_grammar.c: constrained decoding through the public API (kiln.h), stories260K.
 *   - sampled outputs (temperature 1, several seeds) under a regex and a GBNF grammar: the bytes
 *     of the output tokens form a sentence of the grammar, and a request that stops does so only
 *     where the sentence is complete;
 *   - a batch of constrained requests equals each run alone (I5 with masks);
 *   - compile errors name the part; an engine whose backend draws the tokens refuses a constrained
 *     request (and the grammar stays the caller's). */
#include <regex.h>
#include "kiln.h"
#include "test.h"

static const char *g_model, *g_tok;

static kiln_engine *open_engine(int backend_sampling) {
    kiln_engine_options o;
    kiln_engine_options_default(&o);
    o.model_path = g_model;
    o.tokenizer_path = g_tok;
    o.max_seqs = 8;
    o.kv_memory_mb = 16;
    o.cpu.backend_sampling = backend_sampling;
    kiln_engine *e = NULL;
    kiln_error err = {0};
    if (kiln_engine_open(&e, &o, &err)) fprintf(stderr, "open: %s\n", err.msg);
    return e;
}

typedef struct {
    char bytes[2048];
    size_t n;
    int32_t ids[256];
    int n_ids;
    kiln_finish fin;
} out_t;

/* run n requests (all added at once) to the end; grammars compiled from (kind, src) */
static int run(kiln_engine *e, int kind, const char *src, const uint64_t *seeds, int n, out_t *outs) {
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
        if (kiln_engine_compile_grammar(e, (kiln_constraint_kind)kind, src, strlen(src), &p.grammar, &err)) {
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

static int full_match(const char *re, const char *s) {
    regex_t r;
    if (regcomp(&r, re, REG_EXTENDED | REG_NOSUB)) return -1;
    int ok = regexec(&r, s, 0, NULL, 0) == 0;
    regfree(&r);
    return ok;
}

int main(void) {
    g_model = kt_shared("models/stories260K/stories260K.bin");
    g_tok = kt_shared("models/stories260K/tok512.bin");
    if (!kt_exists(g_model) || !kt_exists(g_tok)) KT_SKIP("stories260K not found under %s", kt_shared(""));
    kiln_engine *e = open_engine(0);
    if (!e) KT_SKIP("cannot open stories260K");
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
    /* compile errors name the part */
    kiln_error err = {0};
    kiln_grammar *g = NULL;
    const char *bad = "{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"string\",\"format\":\"uri\"}}}";
    int rc = kiln_engine_compile_grammar(e, KILN_CONSTRAINT_JSON_SCHEMA, bad, strlen(bad), &g, &err);
    KT_CHECK(rc == KILN_ERR_UNSUPPORTED && strstr(err.msg, "'format'") && strstr(err.msg, "/properties/x"), "schema error: %s", err.msg);
    rc = kiln_engine_compile_grammar(e, KILN_CONSTRAINT_GRAMMAR, "root ::= x", 10, &g, &err);
    KT_CHECK(rc == KILN_ERR_INVALID_ARG && strstr(err.msg, "'x'"), "grammar error: %s", err.msg);
    kiln_engine_close(e);
    /* backend sampling: refused, the grammar stays the caller's */
    e = open_engine(1);
    if (e) {
        int32_t *prompt = NULL, np = 0;
        kiln_engine_tokenize(e, "Once", 4, 1, &prompt, &np, &err);
        kiln_request_params p;
        kiln_request_params_default(&p);
        p.prompt_ids = prompt;
        p.n_prompt = np;
        p.max_tokens = 4;
        KT_CHECK(kiln_engine_compile_grammar(e, KILN_CONSTRAINT_REGEX, "a+", 2, &p.grammar, &err) == 0, "compile");
        uint64_t id;
        rc = kiln_engine_add_request(e, &p, &id, &err);
        KT_CHECK(rc == KILN_ERR_UNSUPPORTED && strstr(err.msg, "host_sampling"), "backend sampling refuses: %d %s", rc, err.msg);
        kiln_grammar_free(p.grammar);
        kiln_free(prompt);
        kiln_engine_close(e);
    }
    return kt_done();
}
