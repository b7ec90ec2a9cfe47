/* trace_account.h: the CUPTI-free half of tools/cuda_trace (the profiler trace that checks
 * invariant I1, "one synchronising call per engine step").
 *
 * The injection library (kiln_cupti_trace.c) only records raw events: host API calls (name,
 * thread, enter/exit ns), GPU activity (kernels, copies, memsets, sync records) and the step
 * ranges (NVTX "kiln_step" push/pop around kiln_engine_step). Everything that decides what the
 * trace proves lives here, in plain C with no CUDA headers, so tests/c/test_trace_account.c can
 * feed it made-up event streams:
 *   - kiln_trace_is_sync(): which runtime / driver API names synchronise the host with the GPU;
 *   - kiln_trace_mark_nested(): a driver call made inside a runtime call of the same thread is
 *     the runtime call's implementation and is not counted again;
 *   - kiln_trace_account(): per step, the outermost synchronising calls entered inside it (any
 *     thread), API call count, GPU busy time, idle gaps and kernel count;
 *   - kiln_trace_check() / kiln_trace_print_summary(): the verdict and the text report.
 * No allocation: callers pass every buffer. All times are ns on one clock (cuptiGetTimestamp and
 * CUPTI activity timestamps share it).
 */
#ifndef KILN_TRACE_ACCOUNT_H
#define KILN_TRACE_ACCOUNT_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum { KILN_TRACE_RUNTIME = 1, KILN_TRACE_DRIVER = 2 };
enum { KILN_TRACE_KERNEL = 1, KILN_TRACE_MEMCPY = 2, KILN_TRACE_MEMSET = 3, KILN_TRACE_SYNC_RECORD = 4 };

typedef struct kiln_trace_api {
    const char *name; /* API function name as CUPTI gives it ("cudaMemcpy_v3020", "cuMemAlloc_v2") */
    uint64_t t0, t1;  /* enter / exit; t1 == 0: exit never seen (treated as t0) */
    uint32_t tid;     /* OS thread id */
    uint8_t domain;   /* KILN_TRACE_RUNTIME / KILN_TRACE_DRIVER */
    uint8_t nested;   /* set by kiln_trace_mark_nested */
} kiln_trace_api;

typedef struct kiln_trace_gpu {
    const char *name; /* kernel name, "memcpy HtoD", "memset", "sync stream" ... */
    uint64_t t0, t1;
    uint64_t bytes;   /* copies / memsets */
    uint32_t stream;
    uint8_t kind;     /* KILN_TRACE_KERNEL ... */
} kiln_trace_gpu;

typedef struct kiln_trace_range {
    uint64_t t0, t1;
    uint32_t tid;
} kiln_trace_range;

#define KILN_TRACE_STEP_NAMES 6
typedef struct kiln_trace_step_stats {
    uint64_t t0, t1;
    int n_sync;                  /* outermost synchronising API calls entered in [t0, t1], any thread */
    int n_sync_names;            /* distinct names in sync[] (the rest fold into n_sync_more) */
    struct { const char *name; int count; } sync[KILN_TRACE_STEP_NAMES];
    int n_sync_more;
    int n_api;                   /* outermost API calls entered in the step */
    int n_kernels, n_copies, n_memsets, n_sync_records;
    uint64_t gpu_busy_ns;        /* union of kernel / copy / memset intervals clipped to the step */
    uint64_t gap_sum_ns, gap_max_ns; /* GPU idle time between the step's first GPU start and last GPU end */
    uint64_t lead_ns, tail_ns;   /* step start -> first GPU start; last GPU end -> step end */
} kiln_trace_step_stats;

typedef struct kiln_trace_kstat {
    const char *name;
    uint64_t count, ns;
} kiln_trace_kstat;

/* 1 if the API function (CUPTI name, version suffix allowed) blocks the host until GPU work
 * completes or implicitly synchronises the device (sync, synchronous copy/memset, allocation). */
int kiln_trace_is_sync(const char *name);
/* Sorts api by (t0, runtime before driver) and flags driver calls nested in a runtime call of
 * the same thread (enter and exit inside the runtime call's). */
void kiln_trace_mark_nested(kiln_trace_api *api, size_t n);
/* Sorts by start time. */
void kiln_trace_sort_gpu(kiln_trace_gpu *g, size_t n);
void kiln_trace_sort_ranges(kiln_trace_range *r, size_t n);
/* api: marked and sorted (kiln_trace_mark_nested); gpu, steps: sorted. Fills out[n_steps]. */
void kiln_trace_account(const kiln_trace_api *api, size_t n_api, const kiln_trace_gpu *gpu, size_t n_gpu,
                        const kiln_trace_range *steps, size_t n_steps, kiln_trace_step_stats *out);
/* Outermost synchronising calls outside every step (load / teardown: reported, not checked). */
size_t kiln_trace_sync_outside(const kiln_trace_api *api, size_t n_api, const kiln_trace_range *steps, size_t n_steps);
/* 0 when some step made CUDA calls and every such step made exactly one synchronising call; else
 * 1 with a reason. Idle steps (no CUDA API call at all: nothing was scheduled) are not checked. */
int kiln_trace_check(const kiln_trace_step_stats *s, size_t n_steps, char *why, size_t why_size);
/* Kernels that start inside a step, aggregated by name into tab[cap] (sorted by time, largest
 * first); returns the number of entries (names past cap are dropped). */
size_t kiln_trace_top_kernels(const kiln_trace_gpu *gpu, size_t n_gpu, const kiln_trace_range *steps, size_t n_steps,
                              kiln_trace_kstat *tab, size_t cap);
/* The text report; returns kiln_trace_check's result. steps_source: "NVTX kiln_step ranges" ... */
int kiln_trace_print_summary(FILE *f, const char *steps_source, const kiln_trace_step_stats *s, size_t n_steps,
                             size_t sync_outside, const kiln_trace_kstat *top, size_t n_top, size_t top_show);

#endif
