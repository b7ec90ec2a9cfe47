/* server.h: `kiln serve`, the OpenAI-compatible HTTP server, behind one facade.
 *
 *   kiln_server_options o;
 *   kiln_server_options_default(&o);  ... fill o ...
 *   kiln_server_open(&s, engine, &o, &err);   state only: no thread, no socket yet
 *   kiln_server_run(s, &err);                 start, serve, drain, stop (blocks)
 *   kiln_server_close(s);                     free; the engine stays the caller's to close
 *
 * run owns the start order (the engine loop thread, then the HTTP daemon), the threads and the
 * drain: on the first SIGINT/SIGTERM (or kiln_server_stop) new generation requests and /health
 * get 503 (connections are still accepted, so a load balancer sees the 503), running ones
 * finish; a second one aborts them;
 * then the daemon, its connections and the loop stop and run returns 0. The server borrows the
 * engine: only its loop thread touches it while run runs (connection threads use the
 * thread-safe "Text" functions of kiln.h).
 */
#ifndef KILN_SERVER_SERVER_H
#define KILN_SERVER_SERVER_H
#include "kiln.h"

typedef struct kiln_server kiln_server;

typedef struct kiln_server_options {
    const char *host;          /* IPv4 or IPv6 address to listen on ("127.0.0.1") */
    int port;                  /* 8000 */
    const char *model_path;    /* shown as "root" in /v1/models (required) */
    const char *model_name;    /* the served name requests must use; NULL: model_path */
    const char *api_key;       /* NULL or "": no auth; else "Authorization: Bearer KEY" */
    const char *chat_template; /* NULL: chosen from the tokenizer's metadata */
    int max_pending;           /* requests admitted (running + waiting) before 503 (320) */
    int max_conns;             /* open connections at most (0: max_pending + 64); more are closed
                                * at once by libmicrohttpd */
    int max_conns_per_ip;      /* open connections from one client address (0: max_conns - 16,
                                * so one address never takes the last 16) */
    int timeout_keep_alive_s;  /* idle timeout of a connection, in seconds (5, as uvicorn's
                                * --timeout-keep-alive): reading the head or the body, or waiting
                                * for the next keep-alive request; off while a generation answer
                                * is produced (0 = never) */
    const char *ssl_keyfile;   /* PEM private key: serve HTTPS (needs ssl_certfile); NULL: HTTP */
    const char *ssl_certfile;  /* PEM certificate (chain) */
    int handle_signals;        /* 1: run blocks SIGINT/SIGTERM in the calling thread (and so in
                                * every thread it starts; they stay blocked after it returns)
                                * and drains on them; 0: only kiln_server_stop ends run (1).
                                * Threads started before run (the engine's CPU pool, at
                                * kiln_engine_open) must have them blocked too: block them before
                                * opening the engine, as `kiln serve` does */
    int test_step_delay_ms;    /* fault injection for tests: the loop sleeps this long before
                                * every engine step, so a tiny model's request outlives a
                                * client's timeout (0 = off) */
    /* progress lines ("listening on ...", "draining ...", "stopped"), without a newline;
     * NULL: none */
    void (*log)(void *ctx, const char *line);
    void *log_ctx;
} kiln_server_options;

void kiln_server_options_default(kiln_server_options *o);
/* Check the options and build the server's state around e (borrowed: it must outlive the
 * server). The option strings are copied. */
int kiln_server_open(kiln_server **out, kiln_engine *e, const kiln_server_options *o, kiln_error *err);
/* Start the engine loop and the HTTP daemon, serve until a signal (handle_signals) or
 * kiln_server_stop, drain, and stop both. Returns 0 after a clean stop, else a kiln_status
 * (cannot listen, cannot start a thread). Call at most once per server. */
int kiln_server_run(kiln_server *s, kiln_error *err);
/* Ask run to drain and return, from any thread (a signal handler excepted); a second call
 * aborts the requests still running, as a second signal does. */
void kiln_server_stop(kiln_server *s);
void kiln_server_close(kiln_server *s);

#endif
