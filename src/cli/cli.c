/* cli.c: option parsing shared by the commands. */
#include "cli/cli.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "format/ftype.h"
#include "util/alloc.h"
#include "util/threads.h"

int kiln_cli_parse_int(const char *s, long lo, long hi, long *v) {
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (errno || *end || x < lo || x > hi) return -1;
    *v = x;
    return 0;
}

int kiln_cli_parse_float(const char *s, double *v) {
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (errno || *end) return -1;
    *v = x;
    return 0;
}

int kiln_cli_parse_ids(const char *s, int32_t **ids, int *n) {
    *ids = NULL;
    *n = 0;
    size_t cap = 1;
    for (const char *p = s; *p; p++) cap += *p == ',';
    int32_t *v = kiln_malloc(cap * sizeof(int32_t));
    if (!v) return -1;
    int k = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (end == p || errno || x < 0 || x > INT32_MAX) { kiln_free(v); return -1; }
        v[k++] = (int32_t)x;
        p = end;
        while (*p == ' ') p++;
        if (*p == ',') p++;
        else if (*p) { kiln_free(v); return -1; }
    }
    if (k == 0) { kiln_free(v); return -1; }
    *ids = v;
    *n = k;
    return 0;
}

int kiln_cli_engine_opt(int argc, char **argv, int *i, kiln_engine_options *o) {
    const char *a = argv[*i];
    const char *val = *i + 1 < argc ? argv[*i + 1] : NULL;
    long x;
#define NEEDVAL() do { if (!val) { fprintf(stderr, "kiln: %s needs a value\n", a); return -1; } (*i)++; } while (0)
    if (!strcmp(a, "--model") || !strcmp(a, "-m")) { NEEDVAL(); o->model_path = val; return 1; }
    if (!strcmp(a, "--tokenizer")) { NEEDVAL(); o->tokenizer_path = val; return 1; }
    if (!strcmp(a, "--backend")) { NEEDVAL(); o->backend = val; return 1; }
    if (!strcmp(a, "--no-prefix-cache")) { o->enable_prefix_cache = -1; return 1; }
    if (!strcmp(a, "--jump-forward")) { o->jump_forward = 1; return 1; } /* constrained decoding's forced tokens */
    if (!strcmp(a, "--load-format")) {
        NEEDVAL();
        if (!strcmp(val, "dummy")) o->load_dummy = 1;
        else if (!strcmp(val, "auto")) o->load_dummy = 0;
        else { fprintf(stderr, "kiln: --load-format must be auto or dummy (got '%s')\n", val); return -1; }
        return 1;
    }
    struct { const char *name; long lo, hi; int *dst; } ints[] = {
        {"--threads", 0, 1024, &o->n_threads},         {"--max-model-len", 1, 1 << 24, &o->max_model_len},
        {"--max-num-seqs", 1, 4096, &o->max_seqs},      {"--max-batch-tokens", 1, 1 << 20, &o->max_batch_tokens},
        {"--kv-blocks", 1, 1 << 26, &o->kv_blocks},     {"--block-size", 1, 1024, &o->kv_block_size},
        {"--num-speculative-tokens", 1, KILN_SPEC_MAX_TOKENS, &o->spec.num_speculative_tokens},
        {"--ngram-prompt-lookup-max", 1, 64, &o->spec.ngram_max},
        {"--ngram-prompt-lookup-min", 1, 64, &o->spec.ngram_min},
    };
    for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++)
        if (!strcmp(a, ints[k].name)) {
            NEEDVAL();
            if (kiln_cli_parse_int(val, ints[k].lo, ints[k].hi, &x)) {
                fprintf(stderr, "kiln: %s must be an integer in [%ld, %ld] (got '%s')\n", a, ints[k].lo, ints[k].hi, val);
                return -1;
            }
            *ints[k].dst = (int)x;
            return 1;
        }
    if (!strcmp(a, "--kv-memory-mb")) {
        NEEDVAL();
        if (kiln_cli_parse_int(val, 1, 1L << 30, &x)) { fprintf(stderr, "kiln: bad --kv-memory-mb '%s'\n", val); return -1; }
        o->kv_memory_mb = (size_t)x;
        return 1;
    }
    if (!strcmp(a, "--kv-memory-fraction") || !strcmp(a, "--gpu-memory-utilization")) {
        NEEDVAL();
        double f;
        if (kiln_cli_parse_float(val, &f) || !(f > 0 && f <= 0.95)) {
            fprintf(stderr, "kiln: %s must be in (0, 0.95] (got '%s')\n", a, val);
            return -1;
        }
        o->kv_memory_fraction = f;
        return 1;
    }
    if (!strcmp(a, "--dummy-quant")) {
        NEEDVAL();
        kiln_ftype ft;
        if (kiln_ftype_parse(val, &ft)) {
            fprintf(stderr, "kiln: --dummy-quant must be one of f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, "
                            "q4_k_s, q4_k_m, q5_k_s, q5_k_m, q6_k (got '%s')\n", val);
            return -1;
        }
        o->dummy_quant = val;
        return 1;
    }
    if (!strcmp(a, "--kv-cache-dtype")) { NEEDVAL(); o->kv_cache_dtype = val; return 1; }
    if (!strcmp(a, "--quantization") || !strcmp(a, "-q")) {
        NEEDVAL();
        if (strcmp(val, "fp8") != 0 && strcmp(val, "fp8-per-channel") != 0) {
            fprintf(stderr, "kiln: --quantization must be fp8 or fp8-per-channel (got '%s')\n", val);
            return -1;
        }
        o->quantization = val;
        return 1;
    }
    if (!strcmp(a, "--speculative-model") || !strcmp(a, "--draft-model")) { NEEDVAL(); o->draft_model_path = val; return 1; }
    if (!strcmp(a, "--speculative")) { /* the proposer: ngram (a draft model: --draft-model) */
        NEEDVAL();
        if (strcmp(val, "ngram") != 0 && strcmp(val, "off") != 0) {
            fprintf(stderr, "kiln: --speculative must be ngram or off (got '%s')\n", val);
            return -1;
        }
        o->spec.method = strcmp(val, "off") ? val : NULL;
        return 1;
    }
    if (!strcmp(a, "--devices")) { /* "0,1,3": device ordinals */
        NEEDVAL();
        int32_t *ids = NULL;
        int n = 0;
        if (kiln_cli_parse_ids(val, &ids, &n) || n > KILN_MAX_DEVICES) {
            kiln_free(ids);
            fprintf(stderr, "kiln: --devices takes up to %d device ordinals, e.g. 0,1 (got '%s')\n", KILN_MAX_DEVICES, val);
            return -1;
        }
        for (int k = 0; k < n; k++) o->devices[k] = ids[k];
        o->n_devices = n;
        kiln_free(ids);
        return 1;
    }
    if (!strcmp(a, "--tensor-parallel-size") || !strcmp(a, "-tp")) { /* ranks (cuda: devices 0 .. n-1, as vLLM) */
        NEEDVAL();
        if (kiln_cli_parse_int(val, 1, KILN_MAX_DEVICES, &x)) {
            fprintf(stderr, "kiln: %s must be in [1, %d] (got '%s')\n", a, KILN_MAX_DEVICES, val);
            return -1;
        }
        o->tensor_parallel_size = (int)x;
        return 1;
    }
    /* the chunked-prefill ITL policy (kiln_sched_options, docs/scheduling.md) */
    if (!strcmp(a, "--max-itl-ms")) {
        NEEDVAL();
        double f;
        if (kiln_cli_parse_float(val, &f) || !(f >= 0 && f <= 1e6)) {
            fprintf(stderr, "kiln: --max-itl-ms must be a number of ms >= 0 (0 = off) (got '%s')\n", val);
            return -1;
        }
        o->sched.max_itl_ms = f;
        return 1;
    }
    if (!strcmp(a, "--max-step-ms")) { /* the step budget: every step, decode rows or not */
        NEEDVAL();
        double f;
        if (kiln_cli_parse_float(val, &f) || !(f >= 0 && f <= 1e6)) {
            fprintf(stderr, "kiln: --max-step-ms must be a number of ms >= 0 (0 = off) (got '%s')\n", val);
            return -1;
        }
        o->sched.max_step_ms = f;
        return 1;
    }
    if (!strcmp(a, "--min-prefill-chunk")) {
        NEEDVAL();
        if (kiln_cli_parse_int(val, 1, 1 << 20, &x)) { fprintf(stderr, "kiln: bad --min-prefill-chunk '%s'\n", val); return -1; }
        o->sched.min_prefill_chunk = (int)x;
        return 1;
    }
    if (!strcmp(a, "--step-cost")) { /* FIXED_MS,TOKEN_MS,ROW_MS[,KKEY_MS]: the cost model's calibration */
        NEEDVAL();
        double v[4] = {0, 0, 0, 0};
        char extra;
        int n = sscanf(val, "%lf,%lf,%lf,%lf%c", &v[0], &v[1], &v[2], &v[3], &extra);
        if ((n != 3 && n != 4) || !(v[0] >= 0 && v[1] >= 0 && v[2] >= 0 && v[3] >= 0)) {
            fprintf(stderr, "kiln: --step-cost takes FIXED_MS,TOKEN_MS,ROW_MS[,KKEY_MS] (>= 0; KKEY_MS: per 1,024 keys "
                    "attended), e.g. 8,0.02,0.05 (got '%s')\n", val);
            return -1;
        }
        o->sched.cost_fixed_ms = v[0];
        o->sched.cost_token_ms = v[1];
        o->sched.cost_row_ms = v[2];
        o->sched.cost_kkey_ms = v[3];
        return 1;
    }
    if (!strcmp(a, "--no-step-cost-learn")) { o->sched.cost_learn = -1; return 1; }
    if (!strcmp(a, "--seed-weights")) {
        NEEDVAL();
        if (kiln_cli_parse_int(val, 0, 1L << 62, &x)) { fprintf(stderr, "kiln: bad --seed-weights '%s'\n", val); return -1; }
        o->dummy_seed = (uint64_t)x;
        return 1;
    }
#undef NEEDVAL
    return 0;
}

void kiln_cli_print_error(const char *cmd, const kiln_error *err) {
    fprintf(stderr, "kiln %s: error: %s\n", cmd, err->msg[0] ? err->msg : kiln_status_name(err->code));
}

void kiln_cli_machine(char *buf, size_t cap) {
    char model[256] = "unknown CPU";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "model name", 10)) {
                char *c = strchr(line, ':');
                if (c) {
                    c++;
                    while (*c == ' ') c++;
                    c[strcspn(c, "\n")] = 0;
                    snprintf(model, sizeof model, "%s", c);
                }
                break;
            }
        fclose(f);
    }
    snprintf(buf, cap, "%s, %d cores", model, kiln_num_cores());
}
