/* cmd_bench.c: `kiln bench` (engine throughput per batch size) and the dispatch to
 * `kiln bench serve` (cmd_bench_serve.c).
 *
 *   kiln bench --model PATH | --load-format dummy --model CONFIG.json [--backend cpu|cuda]
 *              [--batch 1,2,4,8,16] [--prompt-len 512] [--decode-steps 64] [--warmup 1]
 *              [--repeat 3] [--seed 1] [--json FILE] [--threads N] [--json-schema FILE] [engine options]
 * --json-schema: every request constrained by the schema in FILE (the cost of constrained
 * decoding beside an unconstrained run of the same command).
 * Markdown tables to stdout, progress to stderr, the kiln.bench.v1 JSON to --json.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli/bench.h"
#include "cli/cli.h"
#include "util/alloc.h"
#include "util/error.h"
#include "util/mapfile.h"

void kiln_bench_opts_default(kiln_bench_opts *o) {
    memset(o, 0, sizeof *o);
    int b[] = {1, 2, 4, 8, 16};
    memcpy(o->batches, b, sizeof b);
    o->n_batches = 5;
    o->prompt_len = 512;
    o->decode_steps = 64;
    o->warmup = 1;
    o->repeat = 3;
    o->seed = 1;
    o->progress = 1;
}

int kiln_bench_parse_args(int argc, char **argv, const char *cmd, const char *extra_opt, const char **extra,
                          kiln_engine_options *eo, kiln_bench_opts *bo, int *user_mbt, void (*usage)(void)) {
    kiln_cli_engine_defaults(eo);
    eo->max_seqs = 0;
    kiln_bench_opts_default(bo);
    *user_mbt = getenv("KILN_MAX_BATCH_TOKENS") != NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--max-batch-tokens")) *user_mbt = 1;
        int r = kiln_cli_engine_opt(argc, argv, &i, eo);
        if (r < 0) return -1;
        if (r > 0) continue;
        if ((r = kiln_bench_cli_opt(argc, argv, &i, bo)) < 0) return -1;
        if (r > 0) continue;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { usage(); return 1; }
        if (!strcmp(argv[i], extra_opt) && i + 1 < argc) { *extra = argv[++i]; continue; }
        fprintf(stderr, "kiln %s: unknown or incomplete option '%s'\n", cmd, argv[i]);
        usage();
        return -1;
    }
    if (!eo->model_path) { usage(); return -1; }
    return 0;
}

int kiln_bench_cli_opt(int argc, char **argv, int *i, kiln_bench_opts *o) {
    const char *a = argv[*i], *val = *i + 1 < argc ? argv[*i + 1] : NULL;
    long x;
    if (!strcmp(a, "--quiet")) { o->progress = 0; return 1; }
    if (!strcmp(a, "--batch")) {
        if (!val || kiln_bench_parse_batches(val, o)) {
            fprintf(stderr, "kiln: --batch needs a list of 1..%d batch sizes in 1..4096, e.g. 1,2,4,8,16,32,64,128,256\n", KILN_BENCH_MAX_BATCHES);
            return -1;
        }
        (*i)++;
        return 1;
    }
    struct { const char *name; long lo, hi; int *dst; } ints[] = {
        {"--prompt-len", 1, 1 << 20, &o->prompt_len}, {"--decode-steps", 1, 1 << 20, &o->decode_steps},
        {"--warmup", 0, 100, &o->warmup},             {"--repeat", 1, 1000, &o->repeat},
    };
    for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++)
        if (!strcmp(a, ints[k].name)) {
            if (!val || kiln_cli_parse_int(val, ints[k].lo, ints[k].hi, &x)) {
                fprintf(stderr, "kiln: %s must be an integer in [%ld, %ld]\n", a, ints[k].lo, ints[k].hi);
                return -1;
            }
            *ints[k].dst = (int)x;
            (*i)++;
            return 1;
        }
    if (!strcmp(a, "--json-schema")) {
        if (!val) { fprintf(stderr, "kiln: --json-schema needs a file\n"); return -1; }
        o->json_schema_path = val;
        (*i)++;
        return 1;
    }
    if (!strcmp(a, "--seed")) {
        if (!val || kiln_cli_parse_int(val, 0, 1L << 62, &x)) { fprintf(stderr, "kiln: --seed must be >= 0\n"); return -1; }
        o->seed = (uint64_t)x;
        (*i)++;
        return 1;
    }
    return 0;
}

int kiln_bench_fit(kiln_engine *e, kiln_bench_opts *o, const char *cmd) {
    kiln_engine_info in;
    kiln_engine_get_info(e, &in);
    if (o->prompt_len + o->decode_steps + 1 > in.max_model_len) {
        int pl = in.max_model_len - o->decode_steps - 1;
        if (pl < 1) {
            fprintf(stderr, "kiln %s: --decode-steps %d does not fit the context of %d tokens\n", cmd, o->decode_steps, in.max_model_len);
            return -1;
        }
        fprintf(stderr, "kiln %s: warning: prompt %d + %d decode steps exceed the context of %d tokens; using --prompt-len %d\n",
                cmd, o->prompt_len, o->decode_steps, in.max_model_len, pl);
        o->prompt_len = pl;
    }
    return 0;
}

static void usage(void) {
    fprintf(stderr,
            "usage: kiln bench --model PATH | --load-format dummy --model CONFIG.json [--backend cpu|cuda]\n"
            "         [--batch 1,2,4,8,16] [--prompt-len 512] [--decode-steps 64] [--warmup 1] [--repeat 3]\n"
            "         [--seed 1] [--json FILE] [--threads N] [--quiet] [--json-schema FILE] [engine options]\n"
            "       kiln bench serve --url http://127.0.0.1:8000 [...]   (kiln bench serve --help)\n"
            "       kiln bench --model PATH --speculative ngram [...]   (kiln bench --speculative ngram --help)\n"
            "       kiln bench --model PATH --spec-cost 1,2,4,8 [--batch 1,8,16] [...]   (verification step cost)\n");
}

int kiln_cmd_bench(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "serve")) return kiln_cmd_bench_serve(argc - 1, argv + 1);
    for (int i = 1; i < argc; i++) /* the cost of a verification step (bench_spec_cost.c) */
        if (!strcmp(argv[i], "--spec-cost")) return kiln_bench_spec_cost(argc, argv);
    for (int i = 1; i < argc; i++) /* speculative decoding: its own comparison (bench_spec.c) */
        if (!strcmp(argv[i], "--speculative") || !strcmp(argv[i], "--draft-model")) return kiln_bench_spec(argc, argv);
    kiln_engine_options eo;
    kiln_bench_opts bo;
    const char *json_path = NULL;
    int user_mbt;
    int pr = kiln_bench_parse_args(argc, argv, "bench", "--json", &json_path, &eo, &bo, &user_mbt, usage);
    if (pr) return pr > 0 ? 0 : 2;
    kiln_bench_engine_options(&eo, &bo, user_mbt, 1);
    char *schema = NULL;
    if (bo.json_schema_path) {
        size_t n = 0;
        kiln_error rerr = {0};
        if (kiln_read_file(bo.json_schema_path, &schema, &n, &rerr)) { kiln_cli_print_error("bench", &rerr); return 2; }
        bo.json_schema = schema;
    }
    kiln_bench_result res;
    memset(&res, 0, sizeof res);
    res.model_path = eo.model_path;
    res.load_dummy = eo.load_dummy;
    if (bo.progress) fprintf(stderr, "kiln bench: measuring memory bandwidth and FMA rate\n");
    kiln_bench_probe_machine(&res.mach, eo.backend, eo.n_threads);
    kiln_error err = {0};
    kiln_engine *e = NULL;
    if (bo.progress) fprintf(stderr, "kiln bench: loading %s\n", eo.model_path);
    int rc = 0;
    if (kiln_engine_open(&e, &eo, &err)) { kiln_cli_print_error("bench", &err); kiln_free(schema); return 1; }
    if (kiln_bench_fit(e, &bo, "bench")) rc = 2;
    else if (kiln_bench_run(e, &bo, &res, &err)) { kiln_cli_print_error("bench", &err); rc = 1; }
    if (!rc) {
        printf("# kiln bench\n\n");
        kiln_bench_print_header(stdout, &res);
        printf("\n");
        kiln_bench_print_tables(stdout, &res, "##");
        if (json_path) {
            json_t *j = kiln_bench_to_json(&res);
            if (json_dump_file(j, json_path, JSON_INDENT(2) | JSON_REAL_PRECISION(8))) {
                fprintf(stderr, "kiln bench: cannot write %s\n", json_path);
                rc = 1;
            }
            json_decref(j);
        }
    }
    kiln_engine_close(e);
    kiln_free(schema);
    return rc;
}
