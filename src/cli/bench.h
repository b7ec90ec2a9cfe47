/* bench.h: the engine benchmark shared by `kiln bench` and `kiln validate`.
 *
 * One run = per batch size B: B requests of random prompt ids (fixed seed) of prompt_len
 * tokens, greedy, ignore_eos, max_tokens = decode_steps + 1, stepped to completion; warmup
 * runs are discarded and the repeats give medians with their min-max spread. The machine's
 * floors come from micro-benchmarks in the same process (multi-threaded host memory read
 * bandwidth, peak FMA rate). One JSON schema ("kiln.bench.v1") is written by bench, embedded
 * by validate, and is the one later backends fill too.
 */
#ifndef KILN_CLI_BENCH_H
#define KILN_CLI_BENCH_H
#include <jansson.h>
#include <stdint.h>
#include "engine/engine.h"
#include "kiln.h"

/* batch sizes of one run (1..256 in steps: 1,2,4,8,16,24,32,48,64,96,128,160,192,224,256 is 15) */
#define KILN_BENCH_MAX_BATCHES 32
/* the automatic max_batch_tokens (batch x prompt length, for a one-step prefill) stops here: the
 * scratch is sized by it (~0.5 MB a row on the Devstral shape: 256 x 512 rows would need ~70 GB
 * on the GPU), so larger batches prefill in chunks of this many rows (32 x 512 still in one) */
#define KILN_BENCH_AUTO_MAX_TOKENS 16384

typedef struct kiln_bench_opts {
    int batches[KILN_BENCH_MAX_BATCHES];
    int n_batches;
    int prompt_len, decode_steps, warmup, repeat;
    uint64_t seed;
    int progress; /* progress lines on stderr */
    /* --json-schema FILE: every request constrained by this JSON schema (issue 18's cost of
     * constrained decoding; the text is the caller's), NULL = unconstrained */
    const char *json_schema, *json_schema_path;
} kiln_bench_opts;

typedef struct kiln_bench_stat { double med, min, max; } kiln_bench_stat;

/* One run of a set of requests through the engine (bench timing + invariant evidence). */
typedef struct kiln_bench_rec {
    double ttft, decode_time;       /* seconds: to the batch's last first token; after it */
    int decode_steps;               /* engine steps after the first tokens */
    double host_decode, backend_decode; /* engine stats deltas over the decode steps */
    uint64_t steps, syncs;          /* engine steps / backend waits of this run */
    int sync_min, sync_max;         /* per-step sync deltas */
    uint64_t allocs;                /* kiln_alloc_count deltas around kiln_engine_step */
} kiln_bench_rec;

typedef struct kiln_bench_point {
    int batch;
    kiln_bench_stat prefill_tps, decode_tps, step_ms, ttft_ms, host_ms, backend_ms;
    double decode_floor_ms, prefill_floor_ms; /* time at the floor (bandwidth / FMA rate) */
    double decode_int8_ms, prefill_int8_ms;   /* the step's / the prefill's FLOPs at the int8 dot
                                               * peak (CPU: what W x A8 could reach), 0 unknown */
    uint64_t steps, syncs, allocs;
    int sync_min, sync_max;
} kiln_bench_point;

typedef struct kiln_bench_machine {
    char cpu[256];
    int cores;
    char card[256];       /* "" on cpu */
    double mem_bw_gbs;    /* host memory read bandwidth, best of several passes */
    double fma_gflops;    /* peak f32 FMA rate on `threads` threads */
    char fma_isa[32];     /* avx512 / avx2 / scalar, or "bf16 GEMM" on cuda */
    double int8_gops;     /* peak int8 dot-product rate (2 ops per multiply-add), CPU only, 0 none */
    char int8_isa[32];    /* avx512vnni / avxvnni / avx2 */
    double amx_gops;      /* AMX-INT8 tile rate (2 ops per multiply-add), 0 where the CPU has none */
    int gpu_floors;       /* 1: mem_bw_gbs is the GPU copy bandwidth (read + write), fma_gflops
                           * its bf16 GEMM rate (kiln_cuda_probe_floors) */
    int threads;          /* threads used by the probes and the backend */
} kiln_bench_machine;

typedef struct kiln_bench_result {
    kiln_bench_opts opt;
    kiln_bench_machine mach;
    kiln_engine_info info;
    const char *model_path;
    int load_dummy;
    char dtype[16];
    char arch[32];
    int shape[7]; /* dim, hidden_dim, n_layers, n_heads, n_kv_heads, head_dim, vocab */
    int64_t params;
    size_t weight_bytes, decode_weight_bytes; /* all / read once per decode step */
    int n_experts, n_experts_used;            /* MoE (0: dense): the floors count routed experts only */
    size_t peak_rss;
    kiln_bench_point pts[KILN_BENCH_MAX_BATCHES];
    int n_pts;
    uint64_t steps, syncs, allocs; /* totals over every timed and warmup run */
    int sync_min, sync_max;
    uint64_t masks_computed, masks_cached, grammar_drains; /* --json-schema: engine stats deltas */
} kiln_bench_result;

/* Engine options bench/validate use on top of the user's: prefix cache off (repeats reuse the
 * same prompts), max_seqs >= the largest batch, one-step prefill (max_batch_tokens >=
 * B * prompt_len unless the user gave one), context = prompt + decode. Clamps prompt_len to the
 * model's context (with a warning) after the engine opened: see kiln_bench_fit. */
void kiln_bench_engine_options(kiln_engine_options *eo, const kiln_bench_opts *o, int user_mbt, int min_seqs);
/* Parse "1,2,4" into o->batches. */
int kiln_bench_parse_batches(const char *s, kiln_bench_opts *o);

void kiln_bench_probe_machine(kiln_bench_machine *m, const char *backend, int threads);
/* the first NVIDIA card's name and memory (nvidia-smi), "" when there is none */
void kiln_bench_card(char *buf, size_t cap);
/* The benchmark; the engine must be idle. */
int kiln_bench_run(kiln_engine *e, const kiln_bench_opts *o, kiln_bench_result *r, kiln_error *err);
/* Run B requests (prompts[i] of lens[i] tokens) greedily with ignore_eos and max_tokens each;
 * outputs ids [B][max_tokens] and raw logprobs [B][max_tokens] (either may be NULL). */
/* the same with every request constrained by json_schema (JSON Schema text, NULL: none) */
int kiln_bench_requests_ex(kiln_engine *e, int B, int32_t *const *prompts, const int *lens, int max_tokens,
                           const char *json_schema, int32_t *out_ids, float *out_lp, kiln_bench_rec *rec,
                           kiln_error *err);
int kiln_bench_requests(kiln_engine *e, int B, int32_t *const *prompts, const int *lens, int max_tokens,
                        int32_t *out_ids, float *out_lp, kiln_bench_rec *rec, kiln_error *err);
void kiln_bench_random_ids(int32_t *ids, int n, int vocab, uint64_t seed);

size_t kiln_bench_peak_rss(void);
/* scaling status of point i vs the base (first) point and its predecessor */
const char *kiln_bench_scaling_status(const kiln_bench_result *r, int i);

json_t *kiln_bench_to_json(const kiln_bench_result *r);
/* The Markdown sections "Throughput" and "Batch Scaling Analysis" (+ floors) to f. */
void kiln_bench_print_tables(FILE *f, const kiln_bench_result *r, const char *h);
void kiln_bench_print_header(FILE *f, const kiln_bench_result *r);

/* CLI helpers (cmd_bench.c): defaults (batches 1,2,4,8,16, prompt 512, 64 decode steps, warmup 1,
 * repeat 3, seed 1); --batch --prompt-len --decode-steps --warmup --repeat --seed --quiet
 * (1 consumed, 0 not ours, -1 bad value); clamp prompt_len to the context (-1: cannot fit). */
void kiln_bench_opts_default(kiln_bench_opts *o);
int kiln_bench_cli_opt(int argc, char **argv, int *i, kiln_bench_opts *o);
/* The command line of `kiln bench` and `kiln validate`: engine options, bench options and one
 * extra "--NAME VALUE" option of the command (bench: --json, validate: --out) into *extra.
 * Returns 0 to go on, 1 after printing help (exit 0), -1 on a bad option (exit 2). */
int kiln_bench_parse_args(int argc, char **argv, const char *cmd, const char *extra_opt, const char **extra,
                          kiln_engine_options *eo, kiln_bench_opts *bo, int *user_mbt, void (*usage)(void));
int kiln_bench_fit(kiln_engine *e, kiln_bench_opts *o, const char *cmd);
#endif
