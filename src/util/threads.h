/* threads.h: a fork-join thread pool for the CPU backend.
 *
 * kiln_pool_run(pool, fn, ctx) calls fn(ctx, i, n) on each of the n threads (the caller is
 * thread 0) and returns when all are done. Workers spin briefly between jobs (decode issues
 * hundreds of small jobs per token, where a condition-variable wake-up would dominate), then
 * sleep. A pool belongs to one backend instance: no process-global pool. */
#ifndef KILN_UTIL_THREADS_H
#define KILN_UTIL_THREADS_H
#include "kiln.h"

typedef struct kiln_pool kiln_pool;
typedef void (*kiln_pool_fn)(void *ctx, int ith, int nth);

int kiln_pool_create(kiln_pool **out, int n_threads, kiln_error *err); /* n_threads<=0: all cores */
void kiln_pool_destroy(kiln_pool *p);
int kiln_pool_size(const kiln_pool *p);
void kiln_pool_run(kiln_pool *p, kiln_pool_fn fn, void *ctx);
int kiln_num_cores(void);

#endif
