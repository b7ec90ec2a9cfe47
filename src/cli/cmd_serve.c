/* cmd_serve.c: `kiln serve`, the OpenAI-compatible HTTP server (src/server/).
 *
 *   kiln serve --model PATH [--host 127.0.0.1] [--port 8000] [--api-key KEY]
 *              [--served-model-name NAME] [--max-model-len N] [--max-num-seqs N]
 *              [--max-queue N] [--threads N] [--tokenizer PATH] [--chat-template NAME]
 *              [--backend cpu|cuda] [--kv-memory-mb N] [--quantization fp8] [--kv-cache-dtype fp8]
 *              [--max-connections-per-ip N]
 *              [--speculative ngram --num-speculative-tokens K --ngram-prompt-lookup-max N
 *               --ngram-prompt-lookup-min N] [--draft-model PATH]
 *              [--timeout-keep-alive S] [--ssl-keyfile PEM --ssl-certfile PEM]
 *              [--load-format dummy] [--max-batch-tokens N] [--max-itl-ms MS ...] [--max-step-ms MS]
 *              and every other engine option of kiln_cli_engine_opt (cli.h)
 *
 * On the CPU backend the step budgets default on (SERVE_CPU_*: --max-itl-ms 50, --max-step-ms
 * 500, --min-prefill-chunk 4): a CPU step is slow enough that one 4,000-token prompt taken in
 * max_batch_tokens chunks would stall every decode and every new request for seconds. A flag or
 * its variable (KILN_MAX_ITL_MS, KILN_MAX_STEP_MS; 0 = off) overrides.
 *
 * Flags (and the environment, env.c) become kiln_server_options; the engine is opened here and
 * lent to the server facade (src/server/server.h), whose run owns the threads, the signals and
 * the drain. Diagnostics go to stderr; the listening address is printed there once ready.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli/cli.h"
#include "kiln.h"
#include "server/server.h"
#include "util/log.h"

static void usage(void) {
    fprintf(stderr,
            "usage: kiln serve --model PATH [--host 127.0.0.1] [--port 8000] [--api-key KEY]\n"
            "                  [--served-model-name NAME] [--max-model-len N] [--max-num-seqs N]\n"
            "                  [--max-queue N] [--threads N] [--tokenizer PATH] [--chat-template NAME]\n"
            "                  [--backend cpu|cuda] [--kv-memory-mb N] [--quantization fp8] [--kv-cache-dtype fp8]\n"
            "                  [--max-connections-per-ip N]\n"
            "                  [--speculative ngram --num-speculative-tokens K --ngram-prompt-lookup-max N\n"
            "                   --ngram-prompt-lookup-min N] [--draft-model PATH]\n"
            "                  [--timeout-keep-alive S] [--ssl-keyfile PEM --ssl-certfile PEM]\n"
            "                  [--load-format auto|dummy] [--max-batch-tokens N] [--block-size N] [--kv-blocks N]\n"
            "                  [--max-itl-ms MS] [--max-step-ms MS] [--min-prefill-chunk N]\n"
            "                  [--step-cost FIXED,TOKEN,ROW[,KKEY]] [--no-step-cost-learn]\n"
            "                  (cpu backend defaults: --max-itl-ms 50 --max-step-ms 500 --min-prefill-chunk 4)\n"
            "                  (and every engine option of `kiln generate`)\n"
            "Endpoints: POST /v1/completions, POST /v1/chat/completions, GET /v1/models, GET /health,\n"
            "GET /metrics, POST /tokenize, POST /detokenize (see docs/server.md).\n"
            "The API key may also come from env KILN_API_KEY.\n");
}

/* the CPU backend's step budgets (see the top) */
#define SERVE_CPU_MAX_ITL_MS 50.0
#define SERVE_CPU_MAX_STEP_MS 500.0
#define SERVE_CPU_MIN_CHUNK 4

static int env_set(const char *name) {
    const char *v = getenv(name);
    return v && *v;
}

static int parse_int(const char *opt, const char *v, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || !*v || *end || errno || x < lo || x > hi) {
        fprintf(stderr, "kiln serve: %s needs an integer in [%d, %d]\n", opt, lo, hi);
        return -1;
    }
    *out = (int)x;
    return 0;
}

static void log_line(void *ctx, const char *line) {
    (void)ctx;
    fprintf(stderr, "kiln serve: %s\n", line);
}

/* the server a stop signal goes to (signal handlers are process-wide: this is the CLI's) */
static _Atomic(kiln_server *) g_serving;
static void on_stop_signal(int sig) {
    (void)sig;
    kiln_server *s = atomic_load(&g_serving);
    if (s) kiln_server_stop(s);
}

int kiln_cmd_serve(int argc, char **argv) {
    kiln_server_options so;
    kiln_cli_server_defaults(&so); /* KILN_API_KEY, KILN_TEST_STEP_DELAY_MS */
    kiln_engine_options eo;
    kiln_cli_engine_defaults(&eo); /* KILN_* of the README; the flags below win */
    int max_queue = 256;
    /* -1: not set by a variable or a flag (then the backend's serve default, below) */
    if (!env_set("KILN_MAX_ITL_MS")) eo.sched.max_itl_ms = -1;
    if (!env_set("KILN_MAX_STEP_MS")) eo.sched.max_step_ms = -1;
    if (eo.sched.min_prefill_chunk == 0) eo.sched.min_prefill_chunk = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(); return 0; }
        /* the engine options every command shares (cli.c): --model, --backend, --load-format,
         * --max-num-seqs, --max-batch-tokens, --max-itl-ms, ... */
        int eng = kiln_cli_engine_opt(argc, argv, &i, &eo);
        if (eng < 0) return 2;
        if (eng > 0) continue;
        if (!v) { fprintf(stderr, "kiln serve: %s needs a value\n", a); usage(); return 2; }
        if (!strcmp(a, "--host")) so.host = v;
        else if (!strcmp(a, "--port")) rc = parse_int(a, v, 0, 65535, &so.port);
        else if (!strcmp(a, "--api-key")) so.api_key = v;
        else if (!strcmp(a, "--served-model-name")) so.model_name = v;
        else if (!strcmp(a, "--max-queue")) rc = parse_int(a, v, 1, 1 << 20, &max_queue);
        else if (!strcmp(a, "--chat-template")) so.chat_template = v;
        else if (!strcmp(a, "--max-connections-per-ip")) rc = parse_int(a, v, 1, 1 << 20, &so.max_conns_per_ip);
        else if (!strcmp(a, "--timeout-keep-alive")) rc = parse_int(a, v, 0, 86400, &so.timeout_keep_alive_s);
        else if (!strcmp(a, "--ssl-keyfile")) so.ssl_keyfile = v;
        else if (!strcmp(a, "--ssl-certfile")) so.ssl_certfile = v;
        else { fprintf(stderr, "kiln serve: unknown option %s\n", a); usage(); return 2; }
        if (rc) return 2;
        i++;
    }
    int on_cpu = !eo.backend || !strcmp(eo.backend, "cpu");
    int budgets = eo.sched.max_itl_ms < 0 || eo.sched.max_step_ms < 0;
    if (eo.sched.max_itl_ms < 0) eo.sched.max_itl_ms = on_cpu ? SERVE_CPU_MAX_ITL_MS : 0;
    if (eo.sched.max_step_ms < 0) eo.sched.max_step_ms = on_cpu ? SERVE_CPU_MAX_STEP_MS : 0;
    if (eo.sched.min_prefill_chunk < 0) eo.sched.min_prefill_chunk = on_cpu && budgets ? SERVE_CPU_MIN_CHUNK : 0;
    const char *model = eo.model_path;
    int max_seqs = eo.max_seqs;
    if (!model) { fprintf(stderr, "kiln serve: --model is required\n"); usage(); return 2; }
    so.model_path = model;
    so.max_pending = max_seqs + max_queue;
    so.log = log_line;
    /* a client that goes away mid-answer must not kill the process */
    signal(SIGPIPE, SIG_IGN);
    /* SIGINT/SIGTERM blocked before the engine opens: its CPU thread pool is created there and
     * inherits this mask; a thread with them unblocked would take a SIGTERM by its default action
     * (the process dies instead of draining), so kiln_server_run's own block comes too late */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    /* ... and a handler as well, for a thread that started before this block with the signals
     * open (a sanitizer's background thread does: under TSan a SIGTERM taken there by its default
     * action killed the process mid-drain): the handler asks the server to stop, what
     * kiln_server_run's sigtimedwait would have done. An atomic add: async-signal-safe. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    kiln_error err = {0};
    kiln_engine *engine = NULL;
    kiln_server *srv = NULL;
    int rc = kiln_engine_open(&engine, &eo, &err);
    if (!rc && (eo.sched.max_itl_ms > 0 || eo.sched.max_step_ms > 0))
        fprintf(stderr, "kiln serve: chunked-prefill budgets: steps with decode rows under %g ms, every step under %g ms "
                "(0 = off; min chunk %d, step cost %s %g + %g/prefill row + %g/decode row + %g/1024 keys ms)\n",
                eo.sched.max_itl_ms, eo.sched.max_step_ms, eo.sched.min_prefill_chunk > 0 ? eo.sched.min_prefill_chunk : 16,
                eo.sched.cost_learn < 0 ? "fixed at" : "learned from", eo.sched.cost_fixed_ms, eo.sched.cost_token_ms,
                eo.sched.cost_row_ms, eo.sched.cost_kkey_ms);
    if (!rc) rc = kiln_server_open(&srv, engine, &so, &err);
    if (!rc) atomic_store(&g_serving, srv);
    if (!rc) rc = kiln_server_run(srv, &err);
    atomic_store(&g_serving, NULL);
    if (rc) fprintf(stderr, "kiln serve: %s\n", err.msg);
    kiln_server_close(srv);
    kiln_engine_close(engine);
    return rc ? 1 : 0;
}
