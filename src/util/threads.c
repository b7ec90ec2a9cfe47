/* threads.c: the fork-join pool (see threads.h).
 *
 * A job is published by bumping gen; spinning workers see it at once. Workers that spun out
 * sleep on a condition variable and register in `sleepers`, so kiln_pool_run takes the mutex
 * and broadcasts only when someone actually sleeps (the common decode case, back-to-back jobs,
 * is lock-free).
 *
 * Tasks are claimed with a compare-and-swap on one word, work = job id (32 bits) | n_tasks
 * (16) | next task (16). A successful claim of task c < n proves the job is still running (the
 * caller cannot return before task c is done), so fn/ctx, written before work was published,
 * are that job's; a thread that finds next >= n claims nothing and touches nothing. Each
 * finished task bumps `done`; the caller, after claiming all it can, waits for done == n. So a
 * worker that is descheduled before it claims anything never delays the caller. */
#include "util/threads.h"
#include "util/alloc.h"
#include "util/error.h"
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>

/* A worker spins this many pause iterations (~1 ms) after a job before it sleeps: long enough
 * for the gaps between one step's jobs (tens of us) and between decode steps, short enough that
 * a lone job (a tiny model's prefill) does not keep a core busy for ~10 ms afterwards (200,000,
 * the old figure, slowed stories260K's whole 256-token run by ~7 %; the default model's decode
 * and prefill were within noise either way). */
#define KILN_SPIN_ITERS 20000
/* After this many pause iterations a waiting thread also yields the CPU now and then: when
 * the pool has more threads than free cores (or other processes load the machine), a pure
 * spinner holds its core until preempted and the thread it waits for runs a time slice late. */
#define KILN_SPIN_PURE 4096
#define KILN_YIELD_EVERY 64

static inline void spin_wait(int spins) {
    if (spins >= KILN_SPIN_PURE && spins % KILN_YIELD_EVERY == 0) {
        sched_yield();
        return;
    }
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
}

struct kiln_pool {
    int n;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    _Atomic uint64_t gen;   /* bumped for each job */
    _Atomic uint64_t work;  /* job id << 32 | n_tasks << 16 | next task */
    _Atomic int done;       /* tasks of the current job finished */
    uint32_t job_id;        /* the caller's counter */
    _Atomic int sleepers;   /* workers blocked (or about to block) on cv */
    _Atomic int quit;
    kiln_pool_fn fn;        /* kiln_pool_run's fn(ctx, task, n), or NULL */
    kiln_pool_task_fn tfn;  /* kiln_pool_run_tasks's fn(ctx, base + task, thread) */
    void *ctx;
    int base;
};

/* Claim and run tasks of whatever job is current until none is left. */
static void run_claims(kiln_pool *p, int thread) {
    uint64_t w = atomic_load_explicit(&p->work, memory_order_acquire);
    for (;;) {
        int n = (int)((w >> 16) & 0xffff), c = (int)(w & 0xffff);
        if (c >= n) return;
        if (!atomic_compare_exchange_weak_explicit(&p->work, &w, w + 1, memory_order_acq_rel,
                                                   memory_order_acquire))
            continue; /* w now holds the current value */
        if (p->fn) p->fn(p->ctx, c, n);
        else p->tfn(p->ctx, p->base + c, thread);
        atomic_fetch_add_explicit(&p->done, 1, memory_order_acq_rel);
        w = atomic_load_explicit(&p->work, memory_order_acquire);
    }
}

typedef struct { kiln_pool *p; int ith; } worker_arg;

static void *worker(void *arg) {
    worker_arg *wa = arg;
    kiln_pool *p = wa->p;
    int ith = wa->ith;
    kiln_free(wa);
    uint64_t seen = 0;
    /* Until its first job a worker sleeps at once instead of spinning: a pool whose jobs all
     * stay on the caller (a tiny model: every call under the serial thresholds) then costs
     * nothing after pthread_create, where the spin before the first sleep burnt ~10 ms of CPU
     * per worker at start-up (on 2 shared cores, taken from the thread doing the work). The
     * first job pays one wake-up; from then on workers spin between jobs as before. */
    int ran = 0;
    for (;;) {
        uint64_t g;
        int spins = 0;
        while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen) {
            if (atomic_load(&p->quit)) return NULL;
            if (ran && ++spins < KILN_SPIN_ITERS) {
                spin_wait(spins);
                continue;
            }
            /* Announce the sleep before re-checking gen (both seq_cst); kiln_pool_run bumps
             * gen before reading sleepers, so either we see the new job or it sees us and
             * broadcasts under the mutex, after we are waiting. */
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while (atomic_load(&p->gen) == seen && !atomic_load(&p->quit))
                pthread_cond_wait(&p->cv, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
            spins = 0;
        }
        if (atomic_load(&p->quit)) return NULL;
        seen = g;
        ran = 1;
        run_claims(p, ith);
    }
}

int kiln_num_cores(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int kiln_pool_create(kiln_pool **out, int n_threads, kiln_error *err) {
    *out = NULL;
    if (n_threads <= 0) n_threads = kiln_num_cores();
    kiln_pool *p = kiln_calloc(1, sizeof *p);
    if (!p) return KILN_ERR(err, KILN_ERR_OOM, "thread pool: out of memory");
    p->n = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (n_threads > 1) {
        p->threads = kiln_calloc((size_t)n_threads, sizeof(pthread_t));
        if (!p->threads) { kiln_pool_destroy(p); return KILN_ERR(err, KILN_ERR_OOM, "thread pool: out of memory"); }
        for (int i = 1; i < n_threads; i++) {
            worker_arg *wa = kiln_malloc(sizeof *wa);
            if (!wa) { p->n = i; kiln_pool_destroy(p); return KILN_ERR(err, KILN_ERR_OOM, "thread pool: out of memory"); }
            wa->p = p;
            wa->ith = i;
            if (pthread_create(&p->threads[i], NULL, worker, wa) != 0) {
                kiln_free(wa);
                p->n = i;
                kiln_pool_destroy(p);
                return KILN_ERR(err, KILN_ERR_INTERNAL, "thread pool: pthread_create failed");
            }
        }
    }
    *out = p;
    return KILN_OK;
}

void kiln_pool_destroy(kiln_pool *p) {
    if (!p) return;
    atomic_store(&p->quit, 1);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->gen, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (p->threads)
        for (int i = 1; i < p->n; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    kiln_free(p->threads);
    kiln_free(p);
}

int kiln_pool_size(const kiln_pool *p) { return p ? p->n : 1; }

static void run_job(kiln_pool *p, int n, kiln_pool_fn fn, kiln_pool_task_fn tfn, void *ctx, int base) {
    p->fn = fn;
    p->base = base;
    p->tfn = tfn;
    p->ctx = ctx;
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    p->job_id++;
    atomic_store_explicit(&p->work, (uint64_t)p->job_id << 32 | (uint64_t)n << 16, memory_order_release);
    atomic_fetch_add(&p->gen, 1); /* seq_cst: pairs with the sleepers handshake in worker() */
    if (atomic_load(&p->sleepers) > 0) { /* only wake-ups cost a mutex + broadcast */
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    run_claims(p, 0);
    for (int spins = 1; atomic_load_explicit(&p->done, memory_order_acquire) < n; spins++)
        spin_wait(spins);
}

void kiln_pool_run(kiln_pool *p, kiln_pool_fn fn, void *ctx) {
    if (!p || p->n <= 1) {
        fn(ctx, 0, 1);
        return;
    }
    run_job(p, p->n, fn, NULL, ctx, 0);
}

void kiln_pool_run_tasks(kiln_pool *p, int n_tasks, kiln_pool_task_fn fn, void *ctx) {
    if (n_tasks <= 0) return;
    if (!p || p->n <= 1) {
        for (int t = 0; t < n_tasks; t++) fn(ctx, t, 0);
        return;
    }
    for (int base = 0; base < n_tasks; base += KILN_POOL_MAX_TASKS) /* the 16-bit task field */
        run_job(p, n_tasks - base < KILN_POOL_MAX_TASKS ? n_tasks - base : KILN_POOL_MAX_TASKS, NULL, fn,
                ctx, base);
}
