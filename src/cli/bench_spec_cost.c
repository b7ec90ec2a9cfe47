/* bench_spec_cost.c: `kiln bench --spec-cost K,...`: what a speculative verification step costs.
 *
 *   kiln bench --model PATH --spec-cost 1,2,3,4,5,6,8 [--batch 1,8,16] [--prompt-len 128]
 *              [--decode-steps 32] [--json FILE] [engine options, e.g. --backend cuda
 *              --load-format dummy]
 *
 * For each batch size B and K: B requests with random prompts are prefilled, then every step is
 * timed while all B decode. The plain engines draw on the device where the backend does
 * (its fastest decode: decode graphs, overlapped steps; "plain") and on the host ("plain host",
 * the sampling a speculating engine uses); the speculating engines propose K tokens for every
 * sequence every step (spec.propose_always: K copies of the last token, so each step has exactly
 * B x (K + 1) rows, whatever gets accepted), which is the verification step at that K. Printed:
 * ms per step of each, and the ratio of each verification step to the plain step. With an
 * acceptance measured elsewhere (tokens per step t at that K, `kiln bench --speculative`), the
 * speedup at batch B is t x plain / verification. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli/bench.h"
#include "cli/cli.h"
#include "util/alloc.h"
#include "util/error.h"
#include "util/timeutil.h"

#define SC_MAX 16 /* entries of --spec-cost and --batch */

/* "1,2,4" -> out[0 .. *n), at most SC_MAX values in [lo, hi] */
static int parse_list(const char *s, int lo, int hi, int *out, int *n) {
    int32_t *v;
    if (kiln_cli_parse_ids(s, &v, n)) return -1;
    int ok = *n <= SC_MAX;
    for (int i = 0; ok && i < *n; i++) ok = v[i] >= lo && v[i] <= hi;
    for (int i = 0; ok && i < *n; i++) out[i] = v[i];
    kiln_free(v);
    return ok ? 0 : -1;
}

/* ms per step with b sequences decoding (after their prefill), over `steps` timed steps */
static int time_steps(kiln_engine *e, int b, int prompt_len, int steps, int vocab, double *ms, kiln_error *err) {
    uint64_t ids[64];
    int32_t *prompt = kiln_malloc((size_t)prompt_len * sizeof(int32_t));
    if (!prompt) return KILN_ERR(err, KILN_ERR_OOM, "out of memory");
    int rc = KILN_OK;
    for (int i = 0; i < b && !rc; i++) {
        kiln_bench_random_ids(prompt, prompt_len, vocab, (uint64_t)b * 1000 + (uint64_t)i);
        kiln_request_params p;
        kiln_request_params_default(&p);
        p.prompt_ids = prompt;
        p.n_prompt = prompt_len;
        p.max_tokens = (steps + 8) * (KILN_SPEC_MAX_TOKENS + 1);
        p.ignore_eos = 1;
        p.sampling.temperature = 0;
        rc = kiln_engine_add_request(e, &p, &ids[i], err);
    }
    kiln_free(prompt);
    /* prefill, until every request has a token; then 3 untimed steps */
    int active = 1, have = 0, warm = 0;
    int got[64] = {0};
    while (!rc && active && (have < b || warm < 3)) {
        if (have == b) warm++;
        rc = kiln_engine_step(e, &active, err);
        for (int i = 0; i < b && !rc; i++) {
            kiln_output o;
            if ((rc = kiln_engine_poll(e, ids[i], &o, err))) break;
            if (o.n_new > 0 && !got[i]) { got[i] = 1; have++; }
        }
    }
    kiln_engine_stats s0, s1;
    kiln_engine_get_stats(e, &s0);
    double t0 = kiln_now();
    for (int k = 0; k < steps && !rc && active; k++) {
        rc = kiln_engine_step(e, &active, err);
        for (int i = 0; i < b && !rc; i++) {
            kiln_output o;
            rc = kiln_engine_poll(e, ids[i], &o, err);
        }
    }
    double t1 = kiln_now();
    kiln_engine_get_stats(e, &s1);
    if (!rc && s1.n_running != b)
        rc = KILN_ERR(err, KILN_ERR_INTERNAL, "spec-cost: %d of %d sequences running at the end", s1.n_running, b);
    uint64_t n = s1.steps - s0.steps;
    *ms = n ? 1e3 * (t1 - t0) / (double)n : 0;
    if (n) /* K per sequence and step when verifying, 0 plain */
        fprintf(stderr, "kiln bench --spec-cost: batch %d: %llu steps, %.2f tokens proposed and %.2f accepted per sequence "
                "and step\n", b, (unsigned long long)n, (double)(s1.spec_draft_tokens - s0.spec_draft_tokens) / (double)n / b,
                (double)(s1.spec_accepted_tokens - s0.spec_accepted_tokens) / (double)n / b);
    for (int i = 0; i < b; i++) { /* abort and drain */
        kiln_error e2;
        kiln_engine_abort(e, ids[i], &e2);
    }
    while (active) {
        kiln_error e2;
        if (kiln_engine_step(e, &active, &e2)) break;
        for (int i = 0; i < b; i++) {
            kiln_output o;
            kiln_engine_poll(e, ids[i], &o, &e2);
        }
    }
    return rc;
}

int kiln_bench_spec_cost(int argc, char **argv) {
    kiln_engine_options eo;
    kiln_cli_engine_defaults(&eo);
    int ks[SC_MAX], nk = 0, bs[SC_MAX] = {1, 8, 16}, nb = 3, prompt_len = 128, steps = 32;
    const char *json_path = NULL;
    for (int i = 1; i < argc; i++) {
        int r = kiln_cli_engine_opt(argc, argv, &i, &eo);
        if (r < 0) return 2;
        if (r > 0) continue;
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long x;
        if (v && !strcmp(a, "--spec-cost")) {
            if (parse_list(v, 1, KILN_SPEC_MAX_TOKENS, ks, &nk)) {
                fprintf(stderr, "kiln bench: --spec-cost takes up to %d values of K in 1..%d, comma-separated\n", SC_MAX,
                        KILN_SPEC_MAX_TOKENS);
                return 2;
            }
        } else if (v && !strcmp(a, "--batch")) {
            if (parse_list(v, 1, 64, bs, &nb)) {
                fprintf(stderr, "kiln bench: --batch takes up to %d sizes in 1..64, comma-separated\n", SC_MAX);
                return 2;
            }
        } else if (v && !strcmp(a, "--prompt-len") && !kiln_cli_parse_int(v, 2, 1 << 16, &x)) {
            prompt_len = (int)x;
        } else if (v && !strcmp(a, "--decode-steps") && !kiln_cli_parse_int(v, 1, 1 << 16, &x)) {
            steps = (int)x;
        } else if (v && !strcmp(a, "--json")) {
            json_path = v;
        } else {
            fprintf(stderr, "kiln bench: unknown or incomplete option '%s'\nusage: kiln bench --model PATH --spec-cost "
                            "K,... [--batch 1,8,16] [--prompt-len 128] [--decode-steps 32] [--json FILE] [engine options]\n",
                    a);
            return 2;
        }
        i++;
    }
    if (!eo.model_path || nk == 0) {
        fprintf(stderr, "kiln bench --spec-cost: --model and a list of K are needed\n");
        return 2;
    }
    int bmax = 1;
    for (int j = 0; j < nb; j++) bmax = bs[j] > bmax ? bs[j] : bmax;
    eo.max_seqs = bmax;
    int kmax = 1;
    for (int j = 0; j < nk; j++) kmax = ks[j] > kmax ? ks[j] : kmax;
    if (eo.max_batch_tokens < bmax * (kmax + 1)) eo.max_batch_tokens = bmax * (kmax + 1) > 512 ? bmax * (kmax + 1) : 512;
    /* columns: plain (device sampling where the backend has it), plain host, then each K */
    int ncol = 2 + nk;
    double ms[SC_MAX][2 + SC_MAX];
    memset(ms, 0, sizeof ms);
    kiln_error err = {0};
    int rc = 0;
    for (int c = 0; c < ncol && !rc; c++) {
        kiln_engine_options o = eo;
        memset(&o.spec, 0, sizeof o.spec);
        o.draft_model_path = NULL;
        if (c == 1) o.host_sampling = 1;
        if (c >= 2) {
            o.spec.method = "ngram";
            o.spec.num_speculative_tokens = ks[c - 2];
            o.spec.propose_always = 1;
        }
        kiln_engine *e = NULL;
        if ((rc = kiln_engine_open(&e, &o, &err))) break;
        kiln_engine_stats st;
        kiln_engine_get_stats(e, &st);
        if (prompt_len + (steps + 8) * (kmax + 1) > st.max_model_len) {
            rc = KILN_ERR(&err, KILN_ERR_INVALID_ARG, "prompt %d + %d steps of up to %d tokens exceed the context %d",
                          prompt_len, steps + 8, kmax + 1, st.max_model_len);
        }
        for (int j = 0; j < nb && !rc; j++) {
            rc = time_steps(e, bs[j], prompt_len, steps, st.vocab_size, &ms[j][c], &err);
            fprintf(stderr, "kiln bench --spec-cost: %s batch %d: %.3f ms a step\n",
                    c == 0 ? "plain" : c == 1 ? "plain host" : "verify", bs[j], ms[j][c]);
        }
        kiln_engine_close(e);
    }
    if (rc) {
        kiln_cli_print_error("bench", &err);
        return 1;
    }
    char mach[320], card[160] = "";
    kiln_cli_machine(mach, sizeof mach);
    if (eo.backend && !strcmp(eo.backend, "cuda")) kiln_bench_card(card, sizeof card);
    printf("# kiln bench --spec-cost: the verification step against a plain decode step\n\n");
    printf("model %s, %s backend%s, %s%s%s; prompt %d, %d timed steps; ms per step (ratio to plain)\n\n", eo.model_path,
           eo.backend ? eo.backend : "cpu", eo.batch_invariant > 0 ? " (batch invariant)" : "", mach,
           card[0] ? "; card " : "", card, prompt_len, steps);
    printf("| batch | plain | plain, host sampling |");
    for (int j = 0; j < nk; j++) printf(" K = %d |", ks[j]);
    printf("\n|---|---|---|");
    for (int j = 0; j < nk; j++) printf("---|");
    printf("\n");
    json_t *rows = json_array();
    for (int b = 0; b < nb; b++) {
        printf("| %d | %.3f | %.3f (%.3fx) |", bs[b], ms[b][0], ms[b][1], ms[b][1] / ms[b][0]);
        json_t *kj = json_object();
        for (int j = 0; j < nk; j++) {
            printf(" %.3f (%.3fx) |", ms[b][2 + j], ms[b][2 + j] / ms[b][0]);
            char key[16];
            snprintf(key, sizeof key, "%d", ks[j]);
            json_object_set_new(kj, key, json_real(ms[b][2 + j]));
        }
        printf("\n");
        json_array_append_new(rows, json_pack("{s:i, s:f, s:f, s:o}", "batch", bs[b], "plain_ms", ms[b][0],
                                              "plain_host_ms", ms[b][1], "verify_ms", kj));
    }
    if (json_path) {
        json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:i, s:i, s:o}", "schema", "kiln.bench_spec_cost.v1", "model",
                              eo.model_path, "backend", eo.backend ? eo.backend : "cpu", "machine", mach, "prompt_len",
                              prompt_len, "steps", steps, "rows", rows);
        if (j && card[0]) json_object_set_new(j, "card", json_string(card));
        if (!j || json_dump_file(j, json_path, JSON_INDENT(2))) {
            fprintf(stderr, "kiln bench: cannot write %s\n", json_path);
            rc = 1;
        }
        json_decref(j);
    } else {
        json_decref(rows);
    }
    return rc ? 1 : 0;
}
