/* test_threads.c: the fork-join pool runs every job on every thread exactly once, both for
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

int main(void) {
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
