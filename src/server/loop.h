/* loop.h: the engine loop of `kiln serve`: one thread owns the engine and runs continuous
 * batching across every connection.
 *
 * Connection threads submit jobs (token ids + parameters) to a queue guarded by one mutex; the
 * loop thread adds them to the engine between steps, steps, polls every running request and
 * appends its output to the job (whole history: ids, logprobs, text), then wakes the job's
 * waiter through the job's condition variable. A connection that goes away cancels its job; the
 * loop aborts the engine request before the next step. The engine is touched by the loop thread
 * only (plus open/close before and after it runs).
 *
 * A job is reference counted (connection + loop); the last release frees it. Connection
 * threads never read a job's fields: kiln_srv_loop_read copies what they need under the mutex.
 */
#ifndef KILN_SERVER_LOOP_H
#define KILN_SERVER_LOOP_H
#include <pthread.h>
#include <stdint.h>
#include "kiln.h"
#include "server/metrics.h"
#include "util/buf.h"

typedef struct kiln_srv_loop kiln_srv_loop;
/* A job: one generation request between a connection thread and the loop (opaque; its output
 * grows under the loop's mutex and is read through kiln_srv_loop_read). */
typedef struct kiln_srv_job kiln_srv_job;

typedef struct kiln_srv_loop_options {
    int max_pending;        /* jobs admitted and not yet finished; more get 503 */
    int test_step_delay_ms; /* fault injection for tests: sleep this long before every engine
                             * step, so that a tiny model's request outlives a client's timeout
                             * (0 = off) */
} kiln_srv_loop_options;

int kiln_srv_loop_start(kiln_srv_loop **out, kiln_engine *e, kiln_metrics *m, const kiln_srv_loop_options *o,
                        kiln_error *err);
/* Stop the thread: with drain, waits until no job is pending first. */
void kiln_srv_loop_stop(kiln_srv_loop *l, int drain);

/* Submit: returns 0 and a job holding two references (yours and the loop's), 503 when the
 * queue is full, 500 on OOM, or 503 when the loop is stopping. p points into owner, which the
 * job frees (owner_free) with its last reference, also when submit fails. */
int kiln_srv_loop_submit(kiln_srv_loop *l, const kiln_request_params *p, void *owner,
                         void (*owner_free)(void *), kiln_srv_job **out);
/* Wait until the job has more than (n_ids, text_len) of output or is done, for at most
 * timeout_s. Returns 1 when something new is there (or done), 0 on timeout. */
int kiln_srv_loop_wait(kiln_srv_loop *l, kiln_srv_job *j, int n_ids, size_t text_len, double timeout_s);

/* A job's state and a span of its output, copied out under the loop's mutex into storage the
 * caller owns (reused from call to call; a zeroed chunk is empty; kiln_srv_chunk_free). */
typedef struct kiln_srv_chunk {
    int done;
    kiln_finish finish;
    int n_prompt, n_cached, n_output;
    int error_status;         /* != 0: the engine refused or failed the request */
    char error_msg[512];
    int n_ids_total;          /* output tokens so far */
    size_t text_total;        /* output text bytes so far */
    /* the output from (from_id, from_text) on */
    int n_ids;
    int32_t *ids;             /* [n_ids] */
    float *lps;               /* [n_ids] logprob of each token; NULL when none were asked */
    kiln_token_logprob *top;  /* [n_ids][top_stride]; NULL when top_stride is 0 */
    int top_stride;           /* the request's sampling.n_logprobs */
    kiln_buf text;            /* text bytes [from_text, text_total) */
    int cap_ids;
} kiln_srv_chunk;
/* Copy the job's state and its output from token from_id and text byte from_text on (a start
 * at or past the end copies only the state). 0, or -1 when the chunk cannot grow (OOM). */
int kiln_srv_loop_read(kiln_srv_loop *l, kiln_srv_job *j, int from_id, size_t from_text, kiln_srv_chunk *c);
void kiln_srv_chunk_free(kiln_srv_chunk *c);

void kiln_srv_loop_cancel(kiln_srv_loop *l, kiln_srv_job *j);
void kiln_srv_loop_cancel_all(kiln_srv_loop *l);
void kiln_srv_loop_release(kiln_srv_loop *l, kiln_srv_job *j);
int kiln_srv_loop_pending(kiln_srv_loop *l);
int kiln_srv_loop_alive(kiln_srv_loop *l);

#endif
