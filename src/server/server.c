/* server.c: the facade of `kiln serve` (server.h): options, start order, drain, stop.
 *
 * run: block SIGINT/SIGTERM first (threads inherit the mask, so only sigtimedwait here ever
 * takes them), start the engine loop, then the HTTP daemon; wait; on the first signal or
 * kiln_server_stop, set draining (new generation requests and /health get 503; the daemon
 * still accepts connections so that health checks see the 503) and wait for the loop's pending
 * jobs; a second signal or stop cancels them all
 * and gives the loop at most 30 s more. Then stop the daemon (its connection threads release
 * their jobs) and the loop.
 */
#include "server/server_internal.h"
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "engine/engine.h"
#include "util/alloc.h"
#include "util/error.h"
#include "util/json.h"

#define TICK_NS (100 * 1000 * 1000) /* how often run looks at kiln_server_stop */
#define ABORT_TICKS 300             /* after an abort, the loop gets 30 s to finish */

void kiln_server_options_default(kiln_server_options *o) {
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 8000;
    o->max_pending = 64 + 256; /* the engine's default max_seqs + vLLM-like waiting queue */
    o->timeout_keep_alive_s = 5;
    o->handle_signals = 1;
}

static void say(kiln_server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(kiln_server *s, const char *fmt, ...) {
    if (!s->log) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    s->log(s->log_ctx, line);
}

/* the whole of a (PEM) file as a string: 0, or a kiln_status with err filled */
static int read_text(const char *path, const char *what, char **out, kiln_error *err) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return KILN_ERR(err, KILN_ERR_IO, "%s %s: cannot open (%s)", what, path, strerror(errno));
    kiln_buf b = {0};
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (b.len + n > (1u << 20) || kiln_buf_add(&b, chunk, n) < 0) {
            fclose(f);
            kiln_buf_free(&b);
            return KILN_ERR(err, KILN_ERR_INVALID_ARG, "%s %s: larger than 1 MiB or out of memory", what, path);
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (bad || b.len == 0 || kiln_buf_add(&b, "", 1) < 0) {
        kiln_buf_free(&b);
        return KILN_ERR(err, KILN_ERR_IO, "%s %s: cannot read, or empty", what, path);
    }
    *out = b.p;
    return KILN_OK;
}

/* an explicit chat template must render a one-message conversation with this model's
 * vocabulary (a Mistral format needs [INST] and friends as tokens): refused at start, not on
 * every chat request */
static int probe_chat_template(kiln_server *s, kiln_error *err) {
    if (!s->chat_template || !strcmp(s->chat_template, "auto") || !s->has_tok) return KILN_OK;
    kiln_chat_msg m = {.role = "user", .content = "hi"};
    int32_t *ids = NULL;
    int n = 0;
    kiln_error e = {0};
    int rc = kiln_engine_apply_chat(s->engine, s->chat_template, &m, 1, NULL, 1, &ids, &n, &e);
    kiln_free(ids);
    if (rc == KILN_ERR_OOM) return KILN_ERR(err, KILN_ERR_OOM, "serve: out of memory");
    if (rc) return KILN_ERR(err, KILN_ERR_INVALID_ARG, "--chat-template %s cannot be used with this model: %s", s->chat_template, e.msg);
    return KILN_OK;
}

/* NULL stays NULL; 0 or -1 (out of memory) */
static int dup_opt(char **dst, const char *src) {
    *dst = NULL;
    if (!src) return 0;
    *dst = kiln_strdup(src);
    return *dst ? 0 : -1;
}

int kiln_server_open(kiln_server **out, kiln_engine *e, const kiln_server_options *o, kiln_error *err) {
    *out = NULL;
    kiln_json_enter(); /* before the HTTP threads start */
    if (!e || !o || !o->model_path || !o->host)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "serve: an engine, a model path and a host are required");
    if (o->port < 0 || o->port > 65535) return KILN_ERR(err, KILN_ERR_INVALID_ARG, "--port %d is out of range", o->port);
    kiln_server *s = kiln_calloc(1, sizeof *s);
    if (!s) return KILN_ERR(err, KILN_ERR_OOM, "serve: out of memory");
    kiln_metrics_init(&s->metrics);
    const char *key = o->api_key && *o->api_key ? o->api_key : NULL;
    if (dup_opt(&s->host, o->host) || dup_opt(&s->model_path, o->model_path) ||
        dup_opt(&s->model_name, o->model_name ? o->model_name : o->model_path) || dup_opt(&s->api_key, key) ||
        dup_opt(&s->chat_template, o->chat_template)) {
        kiln_server_close(s);
        return KILN_ERR(err, KILN_ERR_OOM, "serve: out of memory");
    }
    s->engine = e;
    {
        kiln_engine_info in;
        kiln_engine_get_info(e, &in);
        snprintf(s->metrics.weight_dtype, sizeof s->metrics.weight_dtype, "%s", in.weight_dtype ? in.weight_dtype : "?");
        snprintf(s->metrics.kv_dtype, sizeof s->metrics.kv_dtype, "%s", kiln_kv_dtype_name(in.kv_layout.dtype));
        snprintf(s->metrics.quantization, sizeof s->metrics.quantization, "%s", in.quantization);
        s->metrics.block_size = in.block_size;
        s->metrics.kv_blocks = in.kv_layout.n_blocks;
    }
    s->has_tok = kiln_engine_has_tokenizer(e);
    s->port = o->port;
    s->max_pending = o->max_pending > 0 ? o->max_pending : 320;
    s->max_conns = o->max_conns > 0 ? o->max_conns : s->max_pending + 64;
    s->max_conns_per_ip = o->max_conns_per_ip > 0 ? o->max_conns_per_ip : (s->max_conns > 32 ? s->max_conns - 16 : s->max_conns);
    s->timeout_s = o->timeout_keep_alive_s > 0 ? o->timeout_keep_alive_s : 0;
    s->handle_signals = o->handle_signals;
    s->test_step_delay_ms = o->test_step_delay_ms;
    s->log = o->log;
    s->log_ctx = o->log_ctx;
    s->started = (long long)time(NULL);
    kiln_engine_stats st;
    kiln_engine_get_stats(e, &st);
    s->lim.model_name = s->model_name;
    s->lim.vocab_size = st.vocab_size;
    s->lim.max_model_len = st.max_model_len;
    kiln_metrics_set_stats(&s->metrics, &st);
    int rc = KILN_OK;
    if (!o->ssl_keyfile != !o->ssl_certfile)
        rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "--ssl-keyfile and --ssl-certfile go together");
    else if (o->ssl_keyfile && !(rc = read_text(o->ssl_keyfile, "--ssl-keyfile", &s->tls_key, err)))
        rc = read_text(o->ssl_certfile, "--ssl-certfile", &s->tls_cert, err);
    if (!rc) rc = probe_chat_template(s, err);
    if (rc) {
        kiln_server_close(s);
        return rc;
    }
    *out = s;
    return KILN_OK;
}

/* Wait for a signal (its number) or a kiln_server_stop beyond seen_stops (0). With once, give
 * up after one tick and return -1 (the drain loop polls the pending count in between). */
static int wait_event(kiln_server *s, const sigset_t *sigs, int seen_stops, int once) {
    for (;;) {
        if (atomic_load(&s->stops) > seen_stops) return 0;
        struct timespec ts = {0, TICK_NS};
        if (s->handle_signals) {
            int sig = sigtimedwait(sigs, NULL, &ts);
            if (sig > 0) return sig;
        } else {
            nanosleep(&ts, NULL);
        }
        if (once) return atomic_load(&s->stops) > seen_stops ? 0 : -1;
    }
}

int kiln_server_run(kiln_server *s, kiln_error *err) {
    if (s->ran) return KILN_ERR(err, KILN_ERR_INVALID_ARG, "serve: kiln_server_run was already called");
    s->ran = 1;
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    if (s->handle_signals) pthread_sigmask(SIG_BLOCK, &sigs, NULL); /* before any thread starts */

    kiln_srv_loop_options lo = {.max_pending = s->max_pending, .test_step_delay_ms = s->test_step_delay_ms};
    int rc = kiln_srv_loop_start(&s->loop, s->engine, &s->metrics, &lo, err);
    if (rc) return rc;
    if ((rc = kiln_http_start(s, err))) {
        kiln_srv_loop_stop(s->loop, 0);
        s->loop = NULL;
        return rc;
    }
    say(s, "model '%s' (max_model_len %d, vocab %d) listening on %s://%s:%d%s", s->model_name,
        s->lim.max_model_len, s->lim.vocab_size, s->tls_key ? "https" : "http", s->host, s->port,
        s->api_key ? " (API key required)" : "");

    int stops = atomic_load(&s->stops);
    int sig = wait_event(s, &sigs, stops, 0);
    stops = atomic_load(&s->stops);
    if (sig > 0) say(s, "signal %d: draining %d in-flight requests (again to abort them)", sig, kiln_srv_loop_pending(s->loop));
    else say(s, "stop: draining %d in-flight requests", kiln_srv_loop_pending(s->loop));
    atomic_store(&s->draining, 1);
    int hard = 0;
    for (int ticks = 0; kiln_srv_loop_pending(s->loop) > 0 && ticks < ABORT_TICKS;) {
        int ev = wait_event(s, &sigs, stops, 1);
        stops = atomic_load(&s->stops);
        if (ev >= 0 && !hard) {
            hard = 1;
            say(s, "aborting in-flight requests");
            kiln_srv_loop_cancel_all(s->loop);
        }
        if (hard) ticks++;
    }
    kiln_http_stop(s); /* closes connections; their threads release their jobs */
    kiln_srv_loop_stop(s->loop, 0);
    s->loop = NULL;
    say(s, "stopped");
    return KILN_OK;
}

void kiln_server_stop(kiln_server *s) {
    if (s) atomic_fetch_add(&s->stops, 1);
}

void kiln_server_close(kiln_server *s) {
    if (!s) return;
    if (s->loop) kiln_srv_loop_stop(s->loop, 0); /* run failed half way */
    kiln_metrics_destroy(&s->metrics);
    kiln_free(s->host);
    kiln_free(s->model_name);
    kiln_free(s->model_path);
    kiln_free(s->api_key);
    kiln_free(s->chat_template);
    if (s->tls_key) memset(s->tls_key, 0, strlen(s->tls_key)); /* the private key */
    kiln_free(s->tls_key);
    kiln_free(s->tls_cert);
    kiln_free(s);
}
