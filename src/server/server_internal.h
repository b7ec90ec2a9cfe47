/* server_internal.h: the state of one kiln_server (server.h), shared by server.c (start, drain,
 * stop) and http.c (the handlers). Nothing outside src/server includes it.
 */
#ifndef KILN_SERVER_SERVER_INTERNAL_H
#define KILN_SERVER_SERVER_INTERNAL_H
#include <stdatomic.h>
#include "kiln.h"
#include "server/loop.h"
#include "server/metrics.h"
#include "server/openai.h"
#include "server/server.h"

struct kiln_server {
    kiln_engine *engine;       /* borrowed; the loop thread's while run runs */
    int has_tok;               /* the engine has a tokenizer (else prompts are ids only) */
    kiln_srv_loop *loop;       /* NULL outside run */
    kiln_metrics metrics;
    kiln_srv_limits lim;
    /* copies of the option strings */
    char *host, *model_name, *model_path;
    char *api_key;             /* NULL: no auth */
    char *chat_template;       /* NULL: auto */
    int port, max_pending, handle_signals, test_step_delay_ms;
    int max_conns, max_conns_per_ip, timeout_s;
    char *tls_key, *tls_cert;  /* PEM text read from the option files; NULL: plain HTTP */
    void (*log)(void *ctx, const char *line);
    void *log_ctx;
    long long started;
    atomic_ullong id_counter;
    atomic_int draining;       /* SIGINT/SIGTERM: new generation requests and /health get 503 */
    atomic_int stops;          /* kiln_server_stop calls */
    int ran;
    void *mhd;                 /* struct MHD_Daemon * */
};

/* http.c: start listening on s->host:s->port (thread per connection; connection caps,
 * timeout and TLS from s) */
int kiln_http_start(kiln_server *s, kiln_error *err);
/* close every connection and stop (after the loop drained) */
void kiln_http_stop(kiln_server *s);

#endif
