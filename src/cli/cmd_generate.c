/* cmd_generate.c: `kiln generate` (stream generated text) and `kiln logits` (dump logits). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli/cli.h"
#include "engine/engine.h"
#include "util/alloc.h"
#include "util/error.h"
#include "util/timeutil.h"

static void usage_generate(void) {
    fprintf(stderr,
            "usage: kiln generate --model PATH [--prompt TEXT | --prompt-ids 1,2,3] [-n N]\n"
            "         [--temperature T] [--top-k K] [--top-p P] [--min-p P] [--seed S]\n"
            "         [--tokenizer PATH] [--threads N] [--backend cpu|cuda] [--ids] [--no-bos]\n"
            "  temperature 0 = greedy; defaults come from generation_config.json, else 1.0\n");
}

int kiln_cmd_generate(int argc, char **argv) {
    kiln_engine_options o;
    kiln_cli_engine_defaults(&o);
    const char *prompt = NULL, *prompt_ids = NULL;
    long n = 256;
    double temp = -1, top_p = -1, min_p = 0, v;
    long top_k = -2, seed = -1;
    int print_ids = 0, no_bos = 0;
    for (int i = 1; i < argc; i++) {
        int r = kiln_cli_engine_opt(argc, argv, &i, &o);
        if (r < 0) return 2;
        if (r > 0) continue;
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--ids")) { print_ids = 1; continue; }
        if (!strcmp(a, "--no-bos")) { no_bos = 1; continue; }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage_generate(); return 0; }
        if (!val) { fprintf(stderr, "kiln generate: unknown or incomplete option '%s'\n", a); usage_generate(); return 2; }
        i++;
        if (!strcmp(a, "--prompt") || !strcmp(a, "-p")) prompt = val;
        else if (!strcmp(a, "--prompt-ids")) prompt_ids = val;
        else if (!strcmp(a, "-n") || !strcmp(a, "--max-tokens")) {
            if (kiln_cli_parse_int(val, 1, 1 << 24, &n)) { fprintf(stderr, "kiln generate: -n must be a positive integer\n"); return 2; }
        } else if (!strcmp(a, "--temperature") || !strcmp(a, "-t")) {
            if (kiln_cli_parse_float(val, &temp) || temp < 0) { fprintf(stderr, "kiln generate: --temperature must be >= 0\n"); return 2; }
        } else if (!strcmp(a, "--top-p")) {
            if (kiln_cli_parse_float(val, &top_p) || !(top_p > 0 && top_p <= 1)) { fprintf(stderr, "kiln generate: --top-p must be in (0, 1]\n"); return 2; }
        } else if (!strcmp(a, "--min-p")) {
            if (kiln_cli_parse_float(val, &min_p) || !(min_p >= 0 && min_p <= 1)) { fprintf(stderr, "kiln generate: --min-p must be in [0, 1]\n"); return 2; }
        } else if (!strcmp(a, "--top-k")) {
            if (kiln_cli_parse_int(val, -1, 1 << 24, &top_k)) { fprintf(stderr, "kiln generate: --top-k must be >= 0\n"); return 2; }
        } else if (!strcmp(a, "--seed") || !strcmp(a, "-s")) {
            if (kiln_cli_parse_int(val, 0, 1L << 62, &seed)) { fprintf(stderr, "kiln generate: --seed must be >= 0\n"); return 2; }
        } else { fprintf(stderr, "kiln generate: unknown option '%s'\n", a); usage_generate(); return 2; }
        (void)v;
    }
    if (!o.model_path) { usage_generate(); return 2; }
    if (!prompt && !prompt_ids) prompt = "";
    o.skip_tokenizer = prompt_ids && print_ids; /* ids in, ids out: no tokenizer needed */
    kiln_error err = {0};
    kiln_engine *e = NULL;
    double t0 = kiln_now();
    if (kiln_engine_open(&e, &o, &err)) { kiln_cli_print_error("generate", &err); return 1; }
    double t_load = kiln_now() - t0;
    const kiln_config *mc = &kiln_engine_model(e)->cfg;
    int32_t *ids = NULL;
    int n_ids = 0;
    if (prompt_ids) {
        if (kiln_cli_parse_ids(prompt_ids, &ids, &n_ids)) {
            fprintf(stderr, "kiln generate: --prompt-ids must be a comma-separated list of token ids\n");
            kiln_engine_close(e);
            return 2;
        }
    } else if (kiln_engine_tokenize(e, prompt, strlen(prompt), !no_bos, &ids, &n_ids, &err)) {
        kiln_cli_print_error("generate", &err);
        kiln_engine_close(e);
        return 1;
    }
    kiln_request_params p;
    kiln_request_params_default(&p);
    p.prompt_ids = ids;
    p.n_prompt = n_ids;
    p.max_tokens = (int)n;
    p.sampling.temperature = temp >= 0 ? (float)temp : mc->has_temperature ? mc->gen_temperature : 1.0f;
    p.sampling.top_p = top_p > 0 ? (float)top_p : mc->has_top_p ? mc->gen_top_p : 1.0f;
    p.sampling.top_k = top_k >= -1 ? (int)top_k : mc->has_top_k ? mc->gen_top_k : 0;
    p.sampling.min_p = (float)min_p;
    if (seed >= 0) { p.sampling.seed = (uint64_t)seed; p.sampling.has_seed = 1; }
    uint64_t id;
    int rc = 0;
    if (kiln_engine_add_request(e, &p, &id, &err)) {
        kiln_cli_print_error("generate", &err);
        rc = 1;
    }
    double t1 = kiln_now(), t_first = 0;
    int n_out = 0;
    while (!rc) {
        int active;
        if (kiln_engine_step(e, &active, &err)) { kiln_cli_print_error("generate", &err); rc = 1; break; }
        kiln_output out;
        if (kiln_engine_poll(e, id, &out, &err)) { kiln_cli_print_error("generate", &err); rc = 1; break; }
        if (out.n_new > 0 && n_out == 0) t_first = kiln_now() - t1;
        n_out += out.n_new;
        if (print_ids) {
            for (int k = 0; k < out.n_new; k++) printf("%s%d", n_out - out.n_new + k ? " " : "", out.new_ids[k]);
        } else {
            fwrite(out.text_delta, 1, out.text_len, stdout);
        }
        fflush(stdout);
        if (out.finish != KILN_FINISH_NONE) break;
    }
    double t_all = kiln_now() - t1;
    printf("\n");
    if (!rc)
        fprintf(stderr, "kiln generate: %d prompt tokens, %d generated; load %.2f s, prompt %.1f tok/s, decode %.1f tok/s\n",
                n_ids, n_out, t_load, t_first > 0 ? n_ids / t_first : 0.0,
                n_out > 1 && t_all > t_first ? (n_out - 1) / (t_all - t_first) : 0.0);
    kiln_free(ids);
    kiln_engine_close(e);
    return rc;
}

int kiln_cmd_logits(int argc, char **argv) {
    kiln_engine_options o;
    kiln_cli_engine_defaults(&o);
    const char *ids_s = NULL, *out_path = NULL;
    for (int i = 1; i < argc; i++) {
        int r = kiln_cli_engine_opt(argc, argv, &i, &o);
        if (r < 0) return 2;
        if (r > 0) continue;
        if (i + 1 >= argc) { fprintf(stderr, "kiln logits: unknown or incomplete option '%s'\n", argv[i]); return 2; }
        if (!strcmp(argv[i], "--prompt-ids")) ids_s = argv[++i];
        else if (!strcmp(argv[i], "--out")) out_path = argv[++i];
        else { fprintf(stderr, "kiln logits: unknown option '%s'\n", argv[i]); return 2; }
    }
    o.skip_tokenizer = 1;
    if (!o.model_path || !ids_s || !out_path) {
        fprintf(stderr, "usage: kiln logits --model PATH --prompt-ids 1,2,3 --out FILE  (f32 [tokens][vocab], little-endian)\n");
        return 2;
    }
    int32_t *ids;
    int n;
    if (kiln_cli_parse_ids(ids_s, &ids, &n)) { fprintf(stderr, "kiln logits: bad --prompt-ids\n"); return 2; }
    kiln_error err = {0};
    kiln_engine *e = NULL;
    if (kiln_engine_open(&e, &o, &err)) { kiln_cli_print_error("logits", &err); kiln_free(ids); return 1; }
    int V = kiln_engine_model(e)->cfg.vocab_size;
    float *buf = kiln_malloc((size_t)n * V * sizeof(float));
    int rc = 0;
    if (!buf) { fprintf(stderr, "kiln logits: out of memory\n"); rc = 1; }
    else if (kiln_engine_prompt_logits(e, ids, n, buf, &err)) { kiln_cli_print_error("logits", &err); rc = 1; }
    else {
        FILE *f = fopen(out_path, "wb");
        if (!f || fwrite(buf, sizeof(float), (size_t)n * V, f) != (size_t)n * V) {
            fprintf(stderr, "kiln logits: cannot write %s\n", out_path);
            rc = 1;
        }
        if (f) fclose(f);
        if (!rc) fprintf(stderr, "kiln logits: wrote %d x %d f32 to %s\n", n, V, out_path);
        kiln_engine_stats st;
        kiln_engine_get_stats(e, &st);
        if (!rc) fprintf(stderr, "kiln logits: KV blocks in use at most %d of %d\n", st.kv_blocks_peak,
                         st.kv_blocks_total);
    }
    kiln_free(buf);
    kiln_free(ids);
    kiln_engine_close(e);
    return rc;
}
