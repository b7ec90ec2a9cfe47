/* kiln-layer: util (links only this layer and those below it) */
/* test_threads.c: the fork-join pool runs every task of a job exactly once (kiln_pool_run_tasks,
 * and kiln_pool_run's n shares), both for
 * back-to-back jobs (workers spinning) and after idle gaps (workers asleep on the condition
 * variable: the lost-wake-up case of the sleepers handshake). */
#include <stdatomic.h>
#include <time.h>
#include "test.h"
#include "util/threads.h"

typedef struct { _Atomic int calls[8]; _Atomic int bad_nth; int nth_want; } job;

static void count(void *ctx, int ith, int nth) {
    job *j = ctx;
    if (nth != j->nth_want) atomic_fetch_add(&j->bad_nth, 1);
    atomic_fetch_add(&j->calls[ith], 1);
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* kiln_pool_run_tasks: every task exactly once per job (also past the 16-bit task field),
 * thread indices in range, and no two tasks at once on one thread index. */
typedef struct { _Atomic int *runs; _Atomic int busy[8]; _Atomic int bad; int nth; } tjob;

static void task(void *ctx, int t, int thread) {
    tjob *j = ctx;
    if (thread < 0 || thread >= j->nth || atomic_fetch_add(&j->busy[thread], 1) != 0) atomic_fetch_add(&j->bad, 1);
    atomic_fetch_add(&j->runs[t], 1);
    if (thread >= 0 && thread < j->nth) atomic_fetch_sub(&j->busy[thread], 1);
}

static void test_tasks(void) {
    static const int counts[] = {1, 2, 3, 17, 1000, 70000};
    for (int n = 1; n <= 3; n++) {
        kiln_pool *p;
        kiln_error err = {0};
        KT_CHECK(kiln_pool_create(&p, n, &err) == 0, "create %d", n);
        for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
            int nt = counts[c], reps = nt > 1000 ? 2 : 200;
            tjob j = {.nth = n};
            j.runs = calloc((size_t)nt, sizeof(_Atomic int));
            for (int r = 0; r < reps; r++) kiln_pool_run_tasks(p, nt, task, &j);
            int wrong = 0;
            for (int t = 0; t < nt; t++) wrong += atomic_load(&j.runs[t]) != reps;
            KT_CHECK(wrong == 0, "pool %d, %d tasks: %d tasks not run exactly %d times", n, nt, wrong, reps);
            KT_CHECK(atomic_load(&j.bad) == 0, "pool %d, %d tasks: bad thread index", n, nt);
            free(j.runs);
        }
        kiln_pool_destroy(p);
    }
}

int main(void) {
    test_tasks();
    for (int n = 1; n <= 4; n++) {
        kiln_pool *p;
        kiln_error err = {0};
        KT_CHECK(kiln_pool_create(&p, n, &err) == 0, "create %d: %s", n, err.msg);
        KT_CHECK(kiln_pool_size(p) == n, "size %d", kiln_pool_size(p));
        job j = {.nth_want = n};
        const int fast = n <= 2 ? 20000 : 2000; /* n > cores: oversubscribed, slower */
        for (int k = 0; k < fast; k++) kiln_pool_run(p, count, &j);
        int gaps = 0;
        for (int k = 0; k < 12; k++) { /* idle gaps long enough for workers to block */
            sleep_ms(k % 3 == 0 ? 60 : 1 + k);
            kiln_pool_run(p, count, &j);
            kiln_pool_run(p, count, &j);
            gaps += 2;
        }
        for (int t = 0; t < n; t++)
            KT_CHECK(atomic_load(&j.calls[t]) == fast + gaps, "pool %d thread %d ran %d of %d jobs", n, t,
                     atomic_load(&j.calls[t]), fast + gaps);
        KT_CHECK(atomic_load(&j.bad_nth) == 0, "nth mismatch");
        kiln_pool_destroy(p);
    }
    return kt_done();
}
