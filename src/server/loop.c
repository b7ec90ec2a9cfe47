/* loop.c: the engine loop thread (see loop.h).
 *
 * Per iteration: take new jobs and cancellations from the shared queue (under the mutex), then
 * without the mutex add new requests and abort cancelled ones, run one engine step, poll every
 * active request, and append the outputs to the jobs under the mutex (one lock per iteration,
 * not per token). Idle: sleeps on a condition variable until a job arrives. The stats snapshot
 * for /metrics is refreshed every iteration.
 */
#include "server/loop.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "util/alloc.h"
#include "util/error.h"
#include "util/log.h"
#include "util/timeutil.h"

struct kiln_srv_job {
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
    kiln_buf text;           /* all output text so far */
    kiln_finish finish;
    int n_prompt, n_cached, n_output;
    double t_first, t_last;
    struct kiln_srv_job *next; /* queue link */
};

struct kiln_srv_loop {
    kiln_engine *engine;
    kiln_metrics *metrics;
    int max_pending;
    int step_delay_ms;      /* kiln_srv_loop_options.test_step_delay_ms */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t wake;    /* loop: new job, cancel or stop */
    pthread_cond_t drained; /* stop(drain): pending reached 0 */
    kiln_srv_job *queue_head, *queue_tail; /* submitted, not yet taken by the loop */
    int pending;            /* admitted and not finished */
    int stopping, alive;
    int cancels;            /* cancellations since the loop last looked */
    /* loop thread only */
    kiln_srv_job **active;
    int n_active, cap_active;
};

static void job_free(kiln_srv_job *j) {
    if (!j->added) kiln_grammar_free(j->params.grammar); /* added: the engine owns it */
    if (j->owner_free) j->owner_free(j->owner);
    pthread_cond_destroy(&j->cv);
    kiln_free(j->ids);
    kiln_free(j->lps);
    kiln_free(j->top);
    kiln_buf_free(&j->text);
    kiln_free(j);
}

/* under mu */
static void job_unref(kiln_srv_job *j) {
    if (--j->refs == 0) job_free(j);
}

static void ts_after(struct timespec *ts, double s) {
    clock_gettime(CLOCK_REALTIME, ts);
    long long ns = (long long)ts->tv_nsec + (long long)(s * 1e9);
    ts->tv_sec += (time_t)(ns / 1000000000LL);
    ts->tv_nsec = (long)(ns % 1000000000LL);
}

/* under mu: append one poll's output to the job */
static int job_append(kiln_srv_job *j, const kiln_output *o) {
    if (o->n_new > 0) {
        int need = j->n_ids + o->n_new;
        if (need > j->cap_ids) {
            int cap = j->cap_ids ? j->cap_ids : 64;
            while (cap < need) cap *= 2;
            int32_t *ids = kiln_realloc(j->ids, sizeof *ids * (size_t)cap);
            if (!ids) return -1;
            j->ids = ids;
            if (o->logprobs || j->lps) {
                float *lps = kiln_realloc(j->lps, sizeof *lps * (size_t)cap);
                if (!lps) return -1;
                j->lps = lps;
            }
            if (j->n_top_stride > 0) {
                kiln_token_logprob *top = kiln_realloc(j->top, sizeof *top * (size_t)cap * (size_t)j->n_top_stride);
                if (!top) return -1;
                j->top = top;
            }
            j->cap_ids = cap;
        }
        memcpy(j->ids + j->n_ids, o->new_ids, sizeof *j->ids * (size_t)o->n_new);
        if (j->lps) {
            for (int i = 0; i < o->n_new; i++) j->lps[j->n_ids + i] = o->logprobs ? o->logprobs[i] : 0.0f;
        }
        if (j->top) {
            size_t stride = (size_t)j->n_top_stride;
            for (int i = 0; i < o->n_new; i++) {
                kiln_token_logprob *dst = j->top + (size_t)(j->n_ids + i) * stride;
                for (size_t k = 0; k < stride; k++) {
                    if (o->top && (int)k < o->n_logprobs) dst[k] = o->top[(size_t)i * (size_t)o->n_logprobs + k];
                    else { dst[k].id = 0; dst[k].logprob = -9999.0f; }
                }
            }
        }
        j->n_ids += o->n_new;
    }
    if (o->text_len > 0 && kiln_buf_add(&j->text, o->text_delta, o->text_len) < 0) return -1;
    j->n_prompt = o->n_prompt_tokens;
    j->n_cached = o->n_cached_tokens;
    j->n_output = o->n_output_tokens;
    return 0;
}

/* under mu: the job leaves the loop */
static void job_finish(kiln_srv_loop *l, kiln_srv_job *j, kiln_finish f, int status, const char *msg) {
    j->done = 1;
    j->finish = f;
    if (status) {
        j->error_status = status;
        snprintf(j->error_msg, sizeof j->error_msg, "%s", msg ? msg : "engine error");
    }
    double now = kiln_now();
    kiln_metrics_request_done(l->metrics, f, j->n_prompt, j->n_output,
                              j->t_first > 0 ? j->t_first - j->t_arrival : -1, now - j->t_arrival);
    pthread_cond_broadcast(&j->cv);
    l->pending--;
    if (l->pending == 0) pthread_cond_broadcast(&l->drained);
    job_unref(j);
}

static int active_push(kiln_srv_loop *l, kiln_srv_job *j) {
    if (l->n_active == l->cap_active) {
        int cap = l->cap_active ? l->cap_active * 2 : 64;
        kiln_srv_job **a = kiln_realloc(l->active, sizeof *a * (size_t)cap);
        if (!a) return -1;
        l->active = a;
        l->cap_active = cap;
    }
    l->active[l->n_active++] = j;
    return 0;
}

static void *loop_main(void *arg) {
    kiln_srv_loop *l = arg;
    long delay_ms = l->step_delay_ms; /* fault injection (tests): slow every step down */
    kiln_error err = {0};
    kiln_srv_job *fresh = NULL;
    for (;;) {
        /* 1. take new jobs; sleep when idle */
        pthread_mutex_lock(&l->mu);
        while (!l->queue_head && l->n_active == 0 && !(l->stopping && l->pending == 0)) {
            kiln_engine_stats st;
            kiln_engine_get_stats(l->engine, &st);
            kiln_metrics_set_stats(l->metrics, &st);
            pthread_cond_wait(&l->wake, &l->mu);
        }
        if (l->stopping && l->pending == 0 && !l->queue_head && l->n_active == 0) {
            pthread_mutex_unlock(&l->mu);
            break;
        }
        fresh = l->queue_head;
        l->queue_head = l->queue_tail = NULL;
        l->cancels = 0;
        /* cancelled jobs: abort (the engine is only touched by this thread; the flag is read
         * under the mutex, the abort happens right below) */
        for (int i = 0; i < l->n_active; i++) {
            kiln_srv_job *j = l->active[i];
            if (j->cancel && !j->done) {
                kiln_engine_abort(l->engine, j->req_id, &err);
                kiln_output o;
                if (kiln_engine_poll(l->engine, j->req_id, &o, &err) == KILN_OK) job_append(j, &o);
                job_finish(l, j, KILN_FINISH_ABORT, 0, NULL);
                l->active[i--] = l->active[--l->n_active];
            }
        }
        /* 2. add new jobs */
        while (fresh) {
            kiln_srv_job *j = fresh;
            fresh = j->next;
            j->next = NULL;
            if (j->cancel) {
                job_finish(l, j, KILN_FINISH_ABORT, 0, NULL);
                continue;
            }
            uint64_t id = 0;
            int rc = kiln_engine_add_request(l->engine, &j->params, &id, &err);
            if (rc != KILN_OK) {
                int status = rc == KILN_ERR_INVALID_ARG || rc == KILN_ERR_RANGE || rc == KILN_ERR_UNSUPPORTED ? 400 : 500;
                job_finish(l, j, KILN_FINISH_ABORT, status, err.msg);
                continue;
            }
            j->req_id = id;
            j->added = 1;
            if (active_push(l, j) < 0) {
                kiln_engine_abort(l->engine, id, &err);
                job_finish(l, j, KILN_FINISH_ABORT, 500, "out of memory");
            }
        }
        pthread_mutex_unlock(&l->mu);
        if (l->n_active == 0) continue;

        /* 3. one engine step, without the mutex */
        if (delay_ms > 0) nanosleep(&(struct timespec){delay_ms / 1000, (delay_ms % 1000) * 1000000L}, NULL);
        int n_left = 0;
        int rc = kiln_engine_step(l->engine, &n_left, &err);
        double now = kiln_now();
        pthread_mutex_lock(&l->mu);
        if (rc != KILN_OK) {
            KILN_WARN("serve: engine step failed: %s; failing %d requests", err.msg, l->n_active);
            char msg[600];
            snprintf(msg, sizeof msg, "engine step failed: %.500s", err.msg);
            for (int i = 0; i < l->n_active; i++) {
                kiln_error e2 = {0};
                kiln_engine_abort(l->engine, l->active[i]->req_id, &e2);
                kiln_output o;
                kiln_engine_poll(l->engine, l->active[i]->req_id, &o, &e2);
                job_finish(l, l->active[i], KILN_FINISH_ABORT, 500, msg);
            }
            l->n_active = 0;
        }
        /* 4. poll every active request */
        for (int i = 0; i < l->n_active; i++) {
            kiln_srv_job *j = l->active[i];
            kiln_output o;
            memset(&o, 0, sizeof o);
            if (kiln_engine_poll(l->engine, j->req_id, &o, &err) != KILN_OK) {
                job_finish(l, j, KILN_FINISH_ABORT, 500, err.msg);
                l->active[i--] = l->active[--l->n_active];
                continue;
            }
            if (o.n_new > 0) {
                if (j->t_first <= 0) j->t_first = now;
                else kiln_metrics_observe_itl(l->metrics, now - j->t_last, o.n_new);
                j->t_last = now;
            }
            if (job_append(j, &o) < 0) {
                kiln_engine_abort(l->engine, j->req_id, &err);
                if (o.finish == KILN_FINISH_NONE) kiln_engine_poll(l->engine, j->req_id, &o, &err);
                job_finish(l, j, KILN_FINISH_ABORT, 500, "out of memory");
                l->active[i--] = l->active[--l->n_active];
                continue;
            }
            if (o.finish != KILN_FINISH_NONE) {
                job_finish(l, j, o.finish, 0, NULL);
                l->active[i--] = l->active[--l->n_active];
            } else if (o.n_new > 0 || o.text_len > 0) {
                pthread_cond_broadcast(&j->cv);
            }
        }
        kiln_engine_stats st;
        kiln_engine_get_stats(l->engine, &st);
        kiln_metrics_set_stats(l->metrics, &st);
        pthread_mutex_unlock(&l->mu);
    }
    pthread_mutex_lock(&l->mu);
    l->alive = 0;
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

int kiln_srv_loop_start(kiln_srv_loop **out, kiln_engine *e, kiln_metrics *m, const kiln_srv_loop_options *o,
                        kiln_error *err) {
    kiln_srv_loop *l = kiln_calloc(1, sizeof *l);
    if (!l) return KILN_ERR(err, KILN_ERR_OOM, "serve: out of memory");
    l->engine = e;
    l->metrics = m;
    l->max_pending = o && o->max_pending > 0 ? o->max_pending : 256;
    l->step_delay_ms = o && o->test_step_delay_ms > 0 ? o->test_step_delay_ms : 0;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->wake, NULL);
    pthread_cond_init(&l->drained, NULL);
    l->alive = 1;
    if (pthread_create(&l->thread, NULL, loop_main, l) != 0) {
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->wake);
        pthread_cond_destroy(&l->drained);
        kiln_free(l);
        return KILN_ERR(err, KILN_ERR_INTERNAL, "serve: cannot start the engine loop thread");
    }
    *out = l;
    return KILN_OK;
}

void kiln_srv_loop_stop(kiln_srv_loop *l, int drain) {
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    l->stopping = 1;
    if (!drain) {
        for (kiln_srv_job *j = l->queue_head; j; j = j->next) j->cancel = 1;
        for (int i = 0; i < l->n_active; i++) l->active[i]->cancel = 1;
    }
    pthread_cond_broadcast(&l->wake);
    /* the thread exits once nothing is pending */
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->wake);
    pthread_cond_destroy(&l->drained);
    kiln_free(l->active);
    kiln_free(l);
}

int kiln_srv_loop_submit(kiln_srv_loop *l, const kiln_request_params *p, void *owner,
                         void (*owner_free)(void *), kiln_srv_job **out) {
    *out = NULL;
    kiln_srv_job *j = kiln_calloc(1, sizeof *j);
    if (!j) {
        if (owner_free) owner_free(owner);
        return 500;
    }
    j->owner = owner;
    j->owner_free = owner_free;
    j->params = *p;
    j->n_top_stride = p->sampling.n_logprobs;
    j->t_arrival = kiln_now();
    j->refs = 2;
    pthread_cond_init(&j->cv, NULL);
    pthread_mutex_lock(&l->mu);
    if (l->stopping || !l->alive || l->pending >= l->max_pending) {
        pthread_mutex_unlock(&l->mu);
        job_free(j);
        return 503;
    }
    l->pending++;
    if (l->queue_tail) l->queue_tail->next = j;
    else l->queue_head = j;
    l->queue_tail = j;
    pthread_cond_signal(&l->wake);
    pthread_mutex_unlock(&l->mu);
    *out = j;
    return 0;
}

int kiln_srv_loop_wait(kiln_srv_loop *l, kiln_srv_job *j, int n_ids, size_t text_len, double timeout_s) {
    struct timespec ts;
    ts_after(&ts, timeout_s);
    pthread_mutex_lock(&l->mu);
    int r = 1;
    while (!j->done && j->n_ids <= n_ids && j->text.len <= text_len) {
        if (pthread_cond_timedwait(&j->cv, &l->mu, &ts) == ETIMEDOUT) {
            r = j->done || j->n_ids > n_ids || j->text.len > text_len;
            break;
        }
    }
    pthread_mutex_unlock(&l->mu);
    return r;
}

/* grow the chunk's arrays to n tokens (lps / top as the job keeps them) */
static int chunk_reserve(kiln_srv_chunk *c, int n, int with_lps, int stride) {
    if (n <= c->cap_ids && (!with_lps || c->lps) && (!stride || c->top)) return 0;
    int cap = c->cap_ids > n ? c->cap_ids : n;
    int32_t *ids = kiln_realloc(c->ids, sizeof *ids * (size_t)cap);
    if (!ids) return -1;
    c->ids = ids;
    if (with_lps) {
        float *lps = kiln_realloc(c->lps, sizeof *lps * (size_t)cap);
        if (!lps) return -1;
        c->lps = lps;
    }
    if (stride) {
        kiln_token_logprob *top = kiln_realloc(c->top, sizeof *top * (size_t)cap * (size_t)stride);
        if (!top) return -1;
        c->top = top;
    }
    c->cap_ids = cap;
    return 0;
}

int kiln_srv_loop_read(kiln_srv_loop *l, kiln_srv_job *j, int from_id, size_t from_text, kiln_srv_chunk *c) {
    int rc = 0;
    pthread_mutex_lock(&l->mu);
    c->done = j->done;
    c->finish = j->finish;
    c->n_prompt = j->n_prompt;
    c->n_cached = j->n_cached;
    c->n_output = j->n_output;
    c->error_status = j->error_status;
    memcpy(c->error_msg, j->error_msg, sizeof c->error_msg);
    c->n_ids_total = j->n_ids;
    c->text_total = j->text.len;
    c->top_stride = j->n_top_stride;
    c->n_ids = 0;
    kiln_buf_clear(&c->text);
    int n = from_id >= 0 && from_id < j->n_ids ? j->n_ids - from_id : 0;
    int stride = j->top ? j->n_top_stride : 0, has_lps = j->lps != NULL;
    if (n > 0 && chunk_reserve(c, n, has_lps, stride) == 0) {
        memcpy(c->ids, j->ids + from_id, sizeof *c->ids * (size_t)n);
        if (j->lps) memcpy(c->lps, j->lps + from_id, sizeof *c->lps * (size_t)n);
        if (stride)
            memcpy(c->top, j->top + (size_t)from_id * (size_t)stride, sizeof *c->top * (size_t)n * (size_t)stride);
        c->n_ids = n;
    } else if (n > 0) {
        rc = -1;
    }
    if (!rc && from_text < j->text.len && kiln_buf_add(&c->text, j->text.p + from_text, j->text.len - from_text) < 0) rc = -1;
    pthread_mutex_unlock(&l->mu);
    /* what the job does not keep is not shown, whatever an earlier read left in the chunk */
    if (!has_lps) { kiln_free(c->lps); c->lps = NULL; }
    if (!stride) { kiln_free(c->top); c->top = NULL; }
    return rc;
}

void kiln_srv_chunk_free(kiln_srv_chunk *c) {
    kiln_free(c->ids);
    kiln_free(c->lps);
    kiln_free(c->top);
    kiln_buf_free(&c->text);
    memset(c, 0, sizeof *c);
}

void kiln_srv_loop_cancel(kiln_srv_loop *l, kiln_srv_job *j) {
    pthread_mutex_lock(&l->mu);
    if (!j->done && !j->cancel) {
        j->cancel = 1;
        l->cancels++;
        pthread_cond_signal(&l->wake);
    }
    pthread_mutex_unlock(&l->mu);
}

void kiln_srv_loop_cancel_all(kiln_srv_loop *l) {
    pthread_mutex_lock(&l->mu);
    for (kiln_srv_job *j = l->queue_head; j; j = j->next) j->cancel = 1;
    for (int i = 0; i < l->n_active; i++) l->active[i]->cancel = 1;
    l->cancels++;
    pthread_cond_signal(&l->wake);
    pthread_mutex_unlock(&l->mu);
}

void kiln_srv_loop_release(kiln_srv_loop *l, kiln_srv_job *j) {
    if (!j) return;
    pthread_mutex_lock(&l->mu);
    if (!j->done && !j->cancel) {
        j->cancel = 1;
        l->cancels++;
        pthread_cond_signal(&l->wake);
    }
    job_unref(j);
    pthread_mutex_unlock(&l->mu);
}

int kiln_srv_loop_pending(kiln_srv_loop *l) {
    pthread_mutex_lock(&l->mu);
    int n = l->pending;
    pthread_mutex_unlock(&l->mu);
    return n;
}

int kiln_srv_loop_alive(kiln_srv_loop *l) {
    pthread_mutex_lock(&l->mu);
    int a = l->alive;
    pthread_mutex_unlock(&l->mu);
    return a;
}
