/* kiln-layer: server (links only this layer and those below it) */
/* test_server_facade.c: the facade of `kiln serve` (src/server/server.h) without a client:
 * option checks at open, and run ended by kiln_server_stop from another thread (the signal
 * path is walked by tests/py/test_server.py on the kiln binary): run starts the loop and the
 * daemon, says it listens, drains, says it stopped and returns 0; a second run is refused.
 * Model: stories260K (ids and its tokenizer). */
#include "test.h"
#include <pthread.h>
#include <string.h>
#include <time.h>
#include "server/server.h"

typedef struct log_seen {
    pthread_mutex_t mu;
    int listening, stopped;
} log_seen;

static void on_log(void *ctx, const char *line) {
    log_seen *l = ctx;
    pthread_mutex_lock(&l->mu);
    if (strstr(line, "listening on http://127.0.0.1:")) l->listening++;
    if (!strcmp(line, "stopped")) l->stopped++;
    pthread_mutex_unlock(&l->mu);
}

typedef struct run_arg {
    kiln_server *s;
    int rc;
    kiln_error err;
} run_arg;

static void *run_main(void *p) {
    run_arg *a = p;
    a->rc = kiln_server_run(a->s, &a->err);
    return NULL;
}

static void test_open_refusals(kiln_engine *e) {
    kiln_server_options o;
    kiln_server_options_default(&o);
    KT_CHECK(o.port == 8000 && !strcmp(o.host, "127.0.0.1") && o.handle_signals == 1 && o.test_step_delay_ms == 0,
             "defaults");
    kiln_server *s = NULL;
    kiln_error err = {0};
    KT_CHECK(kiln_server_open(&s, e, &o, &err) == KILN_ERR_INVALID_ARG && !s, "no model path: refused");
    o.model_path = "m";
    o.port = 70000;
    KT_CHECK(kiln_server_open(&s, e, &o, &err) == KILN_ERR_INVALID_ARG && !s, "port 70000: refused");
    KT_CHECK(kiln_server_open(&s, NULL, &o, &err) == KILN_ERR_INVALID_ARG && !s, "no engine: refused");
    kiln_server_close(NULL); /* a no-op */
}

static void test_run_stop(kiln_engine *e) {
    log_seen seen = {.listening = 0};
    pthread_mutex_init(&seen.mu, NULL);
    kiln_server_options o;
    kiln_server_options_default(&o);
    o.model_path = "stories260K";
    o.port = 0; /* any free port */
    o.handle_signals = 0;
    o.api_key = "";
    o.log = on_log;
    o.log_ctx = &seen;
    kiln_server *s = NULL;
    kiln_error err = {0};
    int rc = kiln_server_open(&s, e, &o, &err);
    KT_CHECK(rc == KILN_OK && s, "open: %s", err.msg);
    if (rc) return;
    run_arg a = {.s = s};
    pthread_t th;
    pthread_create(&th, NULL, run_main, &a);
    int up = 0;
    for (int i = 0; i < 200 && !up; i++) { /* at most 10 s */
        pthread_mutex_lock(&seen.mu);
        up = seen.listening;
        pthread_mutex_unlock(&seen.mu);
        if (!up) nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
    }
    kiln_server_stop(s);
    pthread_join(th, NULL);
    if (a.rc == KILN_ERR_UNSUPPORTED) { /* built without libmicrohttpd */
        kiln_server_close(s);
        KT_SKIP("no libmicrohttpd: %s", a.err.msg);
    }
    KT_CHECK(up == 1, "run said it listens");
    KT_CHECK(a.rc == KILN_OK, "run after stop: %d %s", a.rc, a.err.msg);
    KT_CHECK(seen.stopped == 1, "run said it stopped");
    KT_CHECK(kiln_server_run(s, &err) == KILN_ERR_INVALID_ARG, "a second run is refused");
    kiln_server_close(s);
    pthread_mutex_destroy(&seen.mu);
}

int main(void) {
    const char *model = kt_shared("models/stories260K/stories260K.bin");
    const char *tok = kt_shared("models/stories260K/tok512.bin");
    if (!kt_exists(model)) KT_SKIP("stories260K not found under %s", kt_shared(""));
    kiln_engine_options eo;
    kiln_engine_options_default(&eo);
    eo.model_path = model;
    eo.tokenizer_path = tok;
    eo.max_seqs = 4;
    eo.kv_memory_mb = 16;
    kiln_engine *e = NULL;
    kiln_error err = {0};
    if (kiln_engine_open(&e, &eo, &err)) {
        fprintf(stderr, "open: %s\n", err.msg);
        return 1;
    }
    test_open_refusals(e);
    test_run_stop(e);
    kiln_engine_close(e);
    return kt_done();
}
