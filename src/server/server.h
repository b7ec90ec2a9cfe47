/* server.h: the `kiln serve` process state shared by the HTTP layer and the CLI command.
 *
 * One kiln_server per process run: the engine (owned by the loop thread once started), the
 * engine's tokenizer (read-only; used by connection threads to encode prompts and render chat
 * formats, never mutated), the loop, the metrics and the HTTP daemon.
 */
#ifndef KILN_SERVER_SERVER_H
#define KILN_SERVER_SERVER_H
#include <stdatomic.h>
#include "kiln.h"
#include "server/loop.h"
#include "server/metrics.h"
#include "server/openai.h"
#include "tokenizer/tokenizer.h"

typedef struct kiln_server {
    kiln_engine *engine;
    const kiln_tokenizer *tok; /* NULL: the model has no tokenizer (ids-only prompts) */
    kiln_srv_loop *loop;
    kiln_metrics metrics;
    kiln_srv_limits lim;
    const char *model_name;
    const char *model_path;
    const char *api_key;       /* NULL: no auth */
    const char *chat_template; /* NULL: auto */
    long long started;
    atomic_ullong id_counter;
    atomic_int draining;       /* SIGINT/SIGTERM: new generation requests get 503 */
    void *mhd;                 /* struct MHD_Daemon * */
} kiln_server;

/* start listening (thread per connection); max_conns caps open connections */
int kiln_http_start(kiln_server *s, const char *host, int port, int max_conns, kiln_error *err);
/* stop accepting new connections (drain) */
void kiln_http_quiesce(kiln_server *s);
/* close every connection and stop (after the loop drained) */
void kiln_http_stop(kiln_server *s);

#endif
