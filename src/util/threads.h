/* threads.h: a fork-join thread pool for the CPU backend.
 *
 * A job is a set of tasks 0..n_tasks-1; each task runs exactly once, on whichever thread claims
 * it first (the caller claims too), and the call returns when all tasks are done. Nothing waits
 * for a thread that has not shown up: on a loaded machine, where a worker may be descheduled
 * for a whole time slice, the caller just runs the remaining tasks itself. A result must
 * therefore never depend on which thread runs a task (it is given for per-thread scratch only).
 *
 * kiln_pool_run(pool, fn, ctx) is the n-task job fn(ctx, i, n), i < n = pool size (task i is
 * "share i of n"; usually, but not necessarily, run by thread i).
 * Workers spin briefly between jobs (decode issues hundreds of small jobs per token, where a
 * condition-variable wake-up would dominate), then sleep. A pool belongs to one backend
 * instance: no process-global pool. */
#ifndef KILN_UTIL_THREADS_H
#define KILN_UTIL_THREADS_H
#include "kiln.h"

typedef struct kiln_pool kiln_pool;
typedef void (*kiln_pool_fn)(void *ctx, int ith, int nth);

int kiln_pool_create(kiln_pool **out, int n_threads, kiln_error *err); /* n_threads<=0: all cores */
void kiln_pool_destroy(kiln_pool *p);
int kiln_pool_size(const kiln_pool *p);
void kiln_pool_run(kiln_pool *p, kiln_pool_fn fn, void *ctx);
/* fn(ctx, task, thread) for task in [0, n_tasks), thread in [0, pool size) the runner's index
 * (distinct among concurrently running tasks). More than KILN_POOL_MAX_TASKS tasks run as
 * several jobs in a row. */
#define KILN_POOL_MAX_TASKS 65535
typedef void (*kiln_pool_task_fn)(void *ctx, int task, int thread);
void kiln_pool_run_tasks(kiln_pool *p, int n_tasks, kiln_pool_task_fn fn, void *ctx);
int kiln_num_cores(void);

#endif
