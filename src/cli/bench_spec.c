/* bench_spec.c: `kiln bench --speculative ngram ...`: what speculation buys on a prompt set.
 *
 *   kiln bench --model PATH --speculative ngram | --draft-model PATH [--num-speculative-tokens K]
 *              [--ngram-prompt-lookup-max N] [--ngram-prompt-lookup-min N]
 *              [--prompts FILE.jsonl] [--no-chat] [--max-tokens 256] [--batch 1] [--repeat 1]
 *              [--prompt-len 256] [--json FILE] [engine options]
 *
 * The same greedy requests run twice in one process, on two engines that differ only in the
 * speculative options: plain decoding, then with speculation. Prompts: one JSON object a line
 * with "prompt" (text; rendered as one user message in the model's chat format unless --no-chat
 * or the model has none), e.g. from scripts/spec_code_edit_prompts.py; without --prompts, random
 * ids of prompt-len / 2 repeated twice (the proposer finds the repeat; acceptance then depends on
 * whether the model copies). --batch B runs at most B requests at once (max_num_seqs); at batch 1
 * the prompts alternate between the two engines one by one (a shared machine's changing load hits
 * both alike). Printed: wall time (prefill included, the same work in both), decode time (after
 * every request of a set had its first token) and generated tokens per second of each run,
 * engine steps, tokens per step, proposals, acceptance rate (accepted / proposed tokens), the
 * mean accepted length, the speedup, and how many requests gave identical tokens in both runs.
 * They must all be identical where every row's bits are independent of the step around it (the
 * cpu backend; cuda with --batch-invariant): otherwise the exit code is 1. On cuda in its default
 * mode a verification step's rows go through other kernels (GEMM tiles instead of the one-row
 * GEMV) than a plain decode's, so a near-tie may turn the other way: counted and printed.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli/bench.h"
#include "cli/cli.h"
#include "util/alloc.h"
#include "util/error.h"
#include "util/timeutil.h"

typedef struct spec_prompt {
    int32_t *ids;
    int n;
} spec_prompt;

typedef struct spec_run {
    double wall;   /* seconds, prefill included */
    double decode; /* seconds after every request of a set had its first token */
    uint64_t steps, gen, drafts, draft_tokens, accepted;
    int32_t **out; /* [n_prompts] output ids (kiln_malloc) */
    int *n_out;
} spec_run;

static void usage(void) {
    fprintf(stderr,
            "usage: kiln bench --model PATH --speculative ngram [--num-speculative-tokens K]\n"
            "         [--ngram-prompt-lookup-max N] [--ngram-prompt-lookup-min N] [--prompts FILE.jsonl] [--no-chat]\n"
            "         [--max-tokens 256] [--batch 1] [--repeat 1] [--prompt-len 256] [--json FILE] [engine options]\n");
}

static int load_prompts(kiln_engine *e, const char *path, int chat, spec_prompt **out, int *n_out, kiln_error *err) {
    FILE *f = fopen(path, "r");
    if (!f) return KILN_ERR(err, KILN_ERR_IO, "cannot open %s", path);
    spec_prompt *ps = NULL;
    int n = 0, cap = 0, rc = KILN_OK;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    while (rc == KILN_OK && (len = getline(&line, &lcap, f)) > 0) {
        json_error_t je;
        json_t *j = json_loadb(line, (size_t)len, 0, &je);
        if (!j) continue; /* blank or malformed line */
        const char *text = json_string_value(json_object_get(j, "prompt"));
        if (text) {
            if (n == cap) {
                cap = cap ? cap * 2 : 32;
                spec_prompt *np = kiln_realloc(ps, (size_t)cap * sizeof *ps);
                if (!np) rc = KILN_ERR(err, KILN_ERR_OOM, "out of memory");
                else ps = np;
            }
            if (rc == KILN_OK) {
                spec_prompt *p = &ps[n];
                if (chat) {
                    kiln_chat_msg m = {.role = "user", .content = text};
                    rc = kiln_engine_apply_chat(e, NULL, &m, 1, NULL, 1, &p->ids, &p->n, err);
                } else {
                    rc = kiln_engine_tokenize(e, text, strlen(text), 1, &p->ids, &p->n, err);
                }
                if (rc == KILN_OK) n++;
            }
        }
        json_decref(j);
    }
    free(line);
    fclose(f);
    *out = ps;
    *n_out = n;
    if (rc == KILN_OK && n == 0) rc = KILN_ERR(err, KILN_ERR_FORMAT, "%s: no {\"prompt\": ...} line", path);
    return rc;
}

/* prompts ps[0 .. np) through engine e (results at out index base ..) */
static int run_set(kiln_engine *e, const spec_prompt *ps, int np, int base, int max_tokens, spec_run *r, kiln_error *err) {
    int rc = KILN_OK;
    uint64_t *ids = kiln_calloc((size_t)np, sizeof(uint64_t));
    int *done = kiln_calloc((size_t)np, sizeof(int));
    if (!ids || !done) rc = KILN_ERR(err, KILN_ERR_OOM, "out of memory");
    kiln_engine_stats s0, s1;
    kiln_engine_get_stats(e, &s0);
    double t0 = kiln_now(), t_first = 0;
    int n_first = 0;
    for (int i = 0; i < np && !rc; i++) {
        kiln_request_params p;
        kiln_request_params_default(&p);
        p.prompt_ids = ps[i].ids;
        p.n_prompt = ps[i].n;
        kiln_engine_stats st;
        kiln_engine_get_stats(e, &st);
        int room = st.max_model_len - ps[i].n;
        p.max_tokens = max_tokens < room ? max_tokens : room;
        p.sampling.temperature = 0;
        if (p.max_tokens < 1) { rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "prompt %d (%d tokens) fills the context", i, ps[i].n); break; }
        rc = kiln_engine_add_request(e, &p, &ids[i], err);
    }
    int active = 1;
    while (!rc && active) {
        rc = kiln_engine_step(e, &active, err);
        for (int i = 0; i < np && !rc; i++) {
            if (done[i]) continue;
            kiln_output o;
            if ((rc = kiln_engine_poll(e, ids[i], &o, err))) break;
            if (o.n_new > 0) {
                int q = base + i;
                if (r->n_out[q] == 0 && ++n_first == np) t_first = kiln_now(); /* every prompt prefilled */
                int32_t *nb = kiln_realloc(r->out[q], (size_t)(r->n_out[q] + o.n_new) * sizeof(int32_t));
                if (!nb) { rc = KILN_ERR(err, KILN_ERR_OOM, "out of memory"); break; }
                r->out[q] = nb;
                memcpy(nb + r->n_out[q], o.new_ids, (size_t)o.n_new * sizeof(int32_t));
                r->n_out[q] += o.n_new;
            }
            if (o.finish) done[i] = 1;
        }
    }
    double t1 = kiln_now();
    r->wall += t1 - t0;
    r->decode += t_first > 0 ? t1 - t_first : 0;
    kiln_engine_get_stats(e, &s1);
    r->steps += s1.steps - s0.steps;
    r->gen += s1.generation_tokens_total - s0.generation_tokens_total;
    r->drafts += s1.spec_drafts - s0.spec_drafts;
    r->draft_tokens += s1.spec_draft_tokens - s0.spec_draft_tokens;
    r->accepted += s1.spec_accepted_tokens - s0.spec_accepted_tokens;
    kiln_free(ids);
    kiln_free(done);
    return rc;
}

int kiln_bench_spec(int argc, char **argv) {
    kiln_engine_options eo;
    kiln_cli_engine_defaults(&eo);
    const char *prompts = NULL, *json_path = NULL;
    int chat = 1, max_tokens = 256, batch = 1, repeat = 1, prompt_len = 256;
    for (int i = 1; i < argc; i++) {
        int r = kiln_cli_engine_opt(argc, argv, &i, &eo);
        if (r < 0) return 2;
        if (r > 0) continue;
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long x;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(); return 0; }
        if (!strcmp(a, "--no-chat")) { chat = 0; continue; }
        if (!strcmp(a, "--quiet")) continue;
        if (v && !strcmp(a, "--prompts")) { prompts = v; i++; continue; }
        if (v && !strcmp(a, "--json")) { json_path = v; i++; continue; }
        struct { const char *name; long lo, hi; int *dst; } ints[] = {
            {"--max-tokens", 1, 1 << 20, &max_tokens}, {"--batch", 1, 4096, &batch},
            {"--repeat", 1, 100, &repeat},              {"--prompt-len", 2, 1 << 20, &prompt_len},
        };
        int hit = 0;
        for (size_t k = 0; k < sizeof ints / sizeof ints[0] && !hit; k++)
            if (!strcmp(a, ints[k].name)) {
                if (!v || kiln_cli_parse_int(v, ints[k].lo, ints[k].hi, &x)) {
                    fprintf(stderr, "kiln bench: %s must be an integer in [%ld, %ld]\n", a, ints[k].lo, ints[k].hi);
                    return 2;
                }
                *ints[k].dst = (int)x;
                i++;
                hit = 1;
            }
        if (hit) continue;
        fprintf(stderr, "kiln bench: unknown or incomplete option '%s'\n", a);
        usage();
        return 2;
    }
    if (!eo.model_path) { usage(); return 2; }
    eo.max_seqs = batch;
    kiln_engine_options plain = eo;
    memset(&plain.spec, 0, sizeof plain.spec);
    plain.draft_model_path = NULL; /* a draft model alone turns speculation on */
    kiln_error err = {0};
    /* the prompts, tokenized by a plain engine that also checks the options load */
    kiln_engine *e = NULL;
    if (kiln_engine_open(&e, &plain, &err)) { kiln_cli_print_error("bench", &err); return 1; }
    spec_prompt *ps = NULL;
    int np = 0, rc = 0;
    if (prompts) {
        rc = load_prompts(e, prompts, chat && kiln_engine_has_tokenizer(e), &ps, &np, &err);
    } else { /* random ids, the first half repeated */
        np = 8;
        ps = kiln_calloc((size_t)np, sizeof *ps);
        kiln_engine_stats st;
        kiln_engine_get_stats(e, &st);
        int vocab = st.vocab_size;
        uint64_t s = 0x9E3779B97F4A7C15ull;
        for (int i = 0; ps && i < np; i++) {
            ps[i].n = prompt_len;
            ps[i].ids = kiln_malloc((size_t)prompt_len * sizeof(int32_t));
            if (!ps[i].ids) break;
            for (int t = 0; t < prompt_len; t++) {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                ps[i].ids[t] = t < prompt_len / 2 ? (int32_t)(s % (uint64_t)(vocab > 3 ? vocab - 3 : 1)) + 3
                                                  : ps[i].ids[t - prompt_len / 2];
            }
        }
        if (!ps) rc = KILN_ERR(&err, KILN_ERR_OOM, "out of memory");
    }
    kiln_engine_close(e);
    spec_run runs[2];
    memset(runs, 0, sizeof runs);
    for (int k = 0; k < 2 && !rc; k++) {
        runs[k].out = kiln_calloc((size_t)np, sizeof(int32_t *));
        runs[k].n_out = kiln_calloc((size_t)np, sizeof(int));
        if (!runs[k].out || !runs[k].n_out) rc = KILN_ERR(&err, KILN_ERR_OOM, "out of memory");
    }
    int identical = 1;
    /* both engines open at once; at batch 1 the prompts alternate between them one by one, so a
     * machine whose load changes (shared cores) slows both alike; larger batches run the set on
     * one engine, then on the other */
    kiln_engine *eng[2] = {NULL, NULL};
    for (int k = 0; k < 2 && !rc; k++) rc = kiln_engine_open(&eng[k], k ? &eo : &plain, &err);
    for (int rep = 0; rep < repeat && !rc; rep++) {
        for (int k = 0; k < 2; k++)
            for (int i = 0; i < np; i++) { kiln_free(runs[k].out[i]); runs[k].out[i] = NULL; runs[k].n_out[i] = 0; }
        fprintf(stderr, "kiln bench: repeat %d of %d: %d prompts, plain and speculative\n", rep + 1, repeat, np);
        if (batch == 1)
            for (int i = 0; i < np && !rc; i++)
                for (int k = 0; k < 2 && !rc; k++) rc = run_set(eng[k], ps + i, 1, i, max_tokens, &runs[k], &err);
        else
            for (int k = 0; k < 2 && !rc; k++) rc = run_set(eng[k], ps, np, 0, max_tokens, &runs[k], &err);
    }
    for (int k = 0; k < 2; k++) kiln_engine_close(eng[k]);
    int n_same = 0;
    for (int i = 0; i < np && !rc; i++)
        if (runs[0].n_out[i] != runs[1].n_out[i] ||
            memcmp(runs[0].out[i], runs[1].out[i], (size_t)runs[0].n_out[i] * sizeof(int32_t)) != 0)
            identical = 0;
        else
            n_same++;
    int must_match = !eo.backend || !strcmp(eo.backend, "cpu") || eo.batch_invariant > 0;
    if (rc) kiln_cli_print_error("bench", &err);
    else {
        char mach[320], card[160] = "";
        kiln_cli_machine(mach, sizeof mach);
        if (eo.backend && !strcmp(eo.backend, "cuda")) kiln_bench_card(card, sizeof card);
        const spec_run *a = &runs[0], *b = &runs[1];
        double acc = b->draft_tokens ? (double)b->accepted / (double)b->draft_tokens : 0;
        double tps_a = a->gen / a->wall, tps_b = b->gen / b->wall;
        const char *method = eo.spec.method ? eo.spec.method : "draft";
        printf("# kiln bench --speculative %s%s%s\n\n", method, eo.draft_model_path ? " --draft-model " : "",
               eo.draft_model_path ? eo.draft_model_path : "");
        printf("model %s, %s backend, %s%s%s; %d prompts (%s), greedy, max_tokens %d, batch %d, %d repeat(s); K = %d, "
               "ngram %d..%d\n\n",
               eo.model_path, eo.backend ? eo.backend : "cpu", mach, card[0] ? "; card " : "", card, np, prompts ? prompts : "random ids, repeated",
               max_tokens, batch, repeat, eo.spec.num_speculative_tokens ? eo.spec.num_speculative_tokens : 4,
               eo.spec.ngram_min ? eo.spec.ngram_min : 2, eo.spec.ngram_max ? eo.spec.ngram_max : 4);
        printf("| run | wall s | decode s | gen tokens | tok/s | steps | tokens/step | proposals | proposed | accepted |"
               " acceptance | mean accepted |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        printf("| plain | %.3f | %.3f | %llu | %.1f | %llu | %.3f | - | - | - | - | - |\n", a->wall, a->decode,
               (unsigned long long)a->gen, tps_a, (unsigned long long)a->steps,
               a->steps ? (double)a->gen / (double)a->steps : 0);
        printf("| %s | %.3f | %.3f | %llu | %.1f | %llu | %.3f | %llu | %llu | %llu | %.1f%% | %.2f |\n", method, b->wall,
               b->decode, (unsigned long long)b->gen, tps_b, (unsigned long long)b->steps,
               b->steps ? (double)b->gen / (double)b->steps : 0, (unsigned long long)b->drafts,
               (unsigned long long)b->draft_tokens, (unsigned long long)b->accepted, 100 * acc,
               b->drafts ? (double)b->accepted / (double)b->drafts : 0);
        printf("\nspeedup (wall clock, plain / speculative): %.3fx end to end, %.3fx after the first tokens; outputs "
               "identical: %s (%d of %d requests%s)\n", a->wall / b->wall, b->decode > 0 ? a->decode / b->decode : 0,
               identical ? "yes" : "NO", n_same, np, must_match ? "" : "; not batch invariant: near-ties may differ");
        if (json_path) {
            json_t *j = json_pack("{s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:f, s:f, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:b}",
                                  "schema", "kiln.bench_spec.v1", "model", eo.model_path, "machine", mach, "prompts", np,
                                  "max_tokens", max_tokens, "batch", batch, "k",
                                  eo.spec.num_speculative_tokens ? eo.spec.num_speculative_tokens : 4, "plain_wall_s",
                                  a->wall, "spec_wall_s", b->wall, "plain_steps", (json_int_t)a->steps, "spec_steps",
                                  (json_int_t)b->steps, "gen_tokens", (json_int_t)b->gen, "drafts", (json_int_t)b->drafts,
                                  "draft_tokens", (json_int_t)b->draft_tokens, "accepted", (json_int_t)b->accepted,
                                  "acceptance", acc, "identical", identical);
            if (j) {
                json_object_set_new(j, "plain_decode_s", json_real(a->decode));
                json_object_set_new(j, "spec_decode_s", json_real(b->decode));
                json_object_set_new(j, "identical_requests", json_integer(n_same));
                json_object_set_new(j, "backend", json_string(eo.backend ? eo.backend : "cpu"));
                if (card[0]) json_object_set_new(j, "card", json_string(card));
            }
            if (!j || json_dump_file(j, json_path, JSON_INDENT(2))) {
                fprintf(stderr, "kiln bench: cannot write %s\n", json_path);
                rc = 1;
            }
            json_decref(j);
        }
        if (!identical && must_match) rc = 1; /* speculation changed a greedy output: a bug, say so by the exit code */
    }
    for (int k = 0; k < 2; k++) {
        for (int i = 0; runs[k].out && i < np; i++) kiln_free(runs[k].out[i]);
        kiln_free(runs[k].out);
        kiln_free(runs[k].n_out);
    }
    for (int i = 0; i < np; i++) kiln_free(ps[i].ids);
    kiln_free(ps);
    return rc ? 1 : 0;
}
