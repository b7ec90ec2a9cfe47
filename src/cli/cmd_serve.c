/* cmd_serve.c: `kiln serve`, the OpenAI-compatible HTTP server (src/server/).
 *
 *   kiln serve --model PATH [--host 127.0.0.1] [--port 8000] [--api-key KEY]
 *              [--served-model-name NAME] [--max-model-len N] [--max-num-seqs N]
 *              [--max-queue N] [--threads N] [--tokenizer PATH] [--chat-template NAME]
 *              [--backend cpu|cuda] [--kv-memory-mb N]
 *
 * Order of start: engine, loop thread, HTTP daemon; SIGINT/SIGTERM (blocked in every thread and
 * taken by sigtimedwait here) stop accepting connections, let in-flight requests finish (a
 * second signal aborts them), then stop the daemon, the loop and the engine. Diagnostics go to
 * stderr; the listening address is printed there once ready.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "cli/cli.h"
#include "engine/engine.h"
#include "kiln.h"
#include "server/server.h"
#include "util/log.h"

static void usage(void) {
    fprintf(stderr,
            "usage: kiln serve --model PATH [--host 127.0.0.1] [--port 8000] [--api-key KEY]\n"
            "                  [--served-model-name NAME] [--max-model-len N] [--max-num-seqs N]\n"
            "                  [--max-queue N] [--threads N] [--tokenizer PATH] [--chat-template NAME]\n"
            "                  [--backend cpu|cuda] [--kv-memory-mb N]\n"
            "Endpoints: POST /v1/completions, POST /v1/chat/completions, GET /v1/models, GET /health,\n"
            "GET /metrics, POST /tokenize, POST /detokenize (see docs/server.md).\n"
            "The API key may also come from env KILN_API_KEY.\n");
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

int kiln_cmd_serve(int argc, char **argv) {
    const char *model = NULL, *host = "127.0.0.1", *api_key = getenv("KILN_API_KEY"), *name = NULL;
    const char *tokenizer = NULL, *chat_template = NULL, *backend = "cpu";
    int port = 8000, max_model_len = 0, max_seqs = 64, max_queue = 256, threads = 0, kv_mb = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(); return 0; }
        if (!v) { fprintf(stderr, "kiln serve: %s needs a value\n", a); usage(); return 2; }
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--host")) host = v;
        else if (!strcmp(a, "--port")) rc = parse_int(a, v, 0, 65535, &port);
        else if (!strcmp(a, "--api-key")) api_key = v;
        else if (!strcmp(a, "--served-model-name")) name = v;
        else if (!strcmp(a, "--max-model-len")) rc = parse_int(a, v, 1, 1 << 24, &max_model_len);
        else if (!strcmp(a, "--max-num-seqs")) rc = parse_int(a, v, 1, 1 << 16, &max_seqs);
        else if (!strcmp(a, "--max-queue")) rc = parse_int(a, v, 1, 1 << 20, &max_queue);
        else if (!strcmp(a, "--threads")) rc = parse_int(a, v, 0, 4096, &threads);
        else if (!strcmp(a, "--kv-memory-mb")) rc = parse_int(a, v, 1, 1 << 30, &kv_mb);
        else if (!strcmp(a, "--tokenizer")) tokenizer = v;
        else if (!strcmp(a, "--chat-template")) chat_template = v;
        else if (!strcmp(a, "--backend")) backend = v;
        else { fprintf(stderr, "kiln serve: unknown option %s\n", a); usage(); return 2; }
        if (rc) return 2;
        i++;
    }
    if (!model) { fprintf(stderr, "kiln serve: --model is required\n"); usage(); return 2; }
    if (api_key && !*api_key) api_key = NULL;

    /* every thread started from here on inherits the blocked signals; sigtimedwait takes them */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    kiln_error err = {0};
    kiln_engine_options eo;
    kiln_cli_engine_defaults(&eo);
    eo.model_path = model;
    eo.tokenizer_path = tokenizer;
    eo.backend = backend;
    eo.n_threads = threads;
    eo.max_seqs = max_seqs;
    eo.max_model_len = max_model_len;
    if (kv_mb > 0) eo.kv_memory_mb = (size_t)kv_mb;
    kiln_server srv;
    memset(&srv, 0, sizeof srv);
    if (kiln_engine_open(&srv.engine, &eo, &err)) {
        fprintf(stderr, "kiln serve: %s\n", err.msg);
        return 1;
    }
    kiln_engine_stats st;
    kiln_engine_get_stats(srv.engine, &st);
    srv.tok = kiln_engine_tokenizer(srv.engine);
    srv.model_name = name ? name : model;
    srv.model_path = model;
    srv.api_key = api_key;
    srv.chat_template = chat_template;
    srv.started = (long long)time(NULL);
    srv.lim.model_name = srv.model_name;
    srv.lim.vocab_size = st.vocab_size;
    srv.lim.max_model_len = st.max_model_len;
    kiln_metrics_init(&srv.metrics);
    kiln_metrics_set_stats(&srv.metrics, &st);
    kiln_srv_loop_options lo = {.max_pending = max_seqs + max_queue};
    if (kiln_srv_loop_start(&srv.loop, srv.engine, &srv.metrics, &lo, &err)) {
        fprintf(stderr, "kiln serve: %s\n", err.msg);
        kiln_engine_close(srv.engine);
        return 1;
    }
    if (kiln_http_start(&srv, host, port, lo.max_pending + 64, &err)) {
        fprintf(stderr, "kiln serve: %s\n", err.msg);
        kiln_srv_loop_stop(srv.loop, 0);
        kiln_metrics_destroy(&srv.metrics);
        kiln_engine_close(srv.engine);
        return 1;
    }
    fprintf(stderr, "kiln serve: model '%s' (max_model_len %d, vocab %d) listening on http://%s:%d%s\n", srv.model_name,
            st.max_model_len, st.vocab_size, host, port, api_key ? " (API key required)" : "");

    int sig;
    do sig = sigwaitinfo(&sigs, NULL);
    while (sig < 0 && errno == EINTR);
    fprintf(stderr, "kiln serve: signal %d: draining %d in-flight requests (again to abort them)\n", sig,
            kiln_srv_loop_pending(srv.loop));
    atomic_store(&srv.draining, 1);
    kiln_http_quiesce(&srv);
    int hard = 0;
    for (int ticks = 0; kiln_srv_loop_pending(srv.loop) > 0 && ticks < 300;) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        if (sigtimedwait(&sigs, NULL, &ts) > 0 && !hard) {
            hard = 1;
            fprintf(stderr, "kiln serve: aborting in-flight requests\n");
            kiln_srv_loop_cancel_all(srv.loop);
        }
        if (hard) ticks++; /* after an abort, give the loop at most 30 s */
    }
    kiln_http_stop(&srv); /* closes connections; their threads release their jobs */
    kiln_srv_loop_stop(srv.loop, 0);
    kiln_metrics_destroy(&srv.metrics);
    kiln_engine_close(srv.engine);
    fprintf(stderr, "kiln serve: stopped\n");
    return 0;
}
