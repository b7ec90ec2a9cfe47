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
 * A job is reference counted (connection + loop); the last release frees it.
 */
#ifndef KILN_SERVER_LOOP_H
#define KILN_SERVER_LOOP_H
#include <pthread.h>
#include <stdint.h>
#include "kiln.h"
#include "server/metrics.h"

typedef struct kiln_srv_loop kiln_srv_loop;

typedef struct kiln_srv_job {
    /* input, immutable after submit */
    kiln_request_params params; /* points into owner's storage */
    void *owner;                /* freed with owner_free when the last reference goes */
    void (*owner_free)(void *owner);
    int n_top_stride;           /* params.sampling.n_logprobs */
    double t_arrival;
    /* state, under the loop mutex */
    pthread_cond_t cv;
    int refs;
    int added, cancel, done;
    uint64_t req_id;
    int error_status;        /* != 0: the engine refused or failed it */
    char error_msg[512];
    int32_t *ids;            /* [n_ids] all output tokens so far */
    float *lps;              /* [n_ids] when logprobs were asked */
    kiln_token_logprob *top; /* [n_ids][n_top_stride] */
    int n_ids, cap_ids;
    char *text;              /* all output text so far */
    size_t text_len, text_cap;
    kiln_finish finish;
    int n_prompt, n_cached, n_output;
    double t_first, t_last;
    struct kiln_srv_job *next; /* queue link */
} kiln_srv_job;

typedef struct kiln_srv_loop_options {
    int max_pending; /* jobs admitted and not yet finished; more get 503 */
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
/* Copy out the job's state (under the lock) for the span [n_ids0, ...) and [text0, ...). */
typedef struct kiln_srv_snapshot {
    int n_ids;
    size_t text_len;
    int done;
    kiln_finish finish;
    int n_prompt, n_cached, n_output;
    int error_status;
    char error_msg[512];
} kiln_srv_snapshot;
void kiln_srv_loop_snapshot(kiln_srv_loop *l, kiln_srv_job *j, kiln_srv_snapshot *s);
/* Hold the loop mutex while reading a job's output arrays directly (they grow under it). */
void kiln_srv_loop_lock(kiln_srv_loop *l);
void kiln_srv_loop_unlock(kiln_srv_loop *l);
void kiln_srv_loop_cancel(kiln_srv_loop *l, kiln_srv_job *j);
void kiln_srv_loop_cancel_all(kiln_srv_loop *l);
void kiln_srv_loop_release(kiln_srv_loop *l, kiln_srv_job *j);
int kiln_srv_loop_pending(kiln_srv_loop *l);
int kiln_srv_loop_alive(kiln_srv_loop *l);

#endif
