/* trace_account.c: classification and per-step accounting of a CUDA trace (see trace_account.h).
 * Pure C11 + stdio, no CUDA: the injection library and tests/c/test_trace_account.c share it. */
#include "trace_account.h"
#include <stdlib.h>
#include <string.h>

/* ---- classification ------------------------------------------------------------------------ */

/* CUPTI names carry suffixes ("cudaMemcpy_v3020", "cudaStreamSynchronize_ptsz_v7000",
 * "cuMemcpyDtoH_v2"); CUDA API names themselves have no '_', so the base is the part before it. */
static size_t base_len(const char *name) {
    const char *u = strchr(name, '_');
    return u ? (size_t)(u - name) : strlen(name);
}

static int has_prefix(const char *s, size_t n, const char *p) {
    size_t k = strlen(p);
    return n >= k && memcmp(s, p, k) == 0;
}

static int has_infix(const char *s, size_t n, const char *p) {
    size_t k = strlen(p);
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(s + i, p, k) == 0) return 1;
    return 0;
}

int kiln_trace_is_sync(const char *name) {
    if (!name) return 0;
    size_t n = base_len(name);
    /* blocking waits, pinned-host registration, device teardown */
    static const char *const exact[] = {
        "cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaThreadSynchronize", "cudaEventSynchronize",
        "cudaHostAlloc",         "cudaHostRegister",      "cudaHostUnregister",    "cudaDeviceReset",
        "cuStreamSynchronize",   "cuCtxSynchronize",      "cuEventSynchronize",    "cuMemHostAlloc",
        "cuMemHostRegister",     "cuMemHostUnregister",   "cuCtxDestroy",          "cuDevicePrimaryCtxReset",
    };
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
        if (strlen(exact[i]) == n && memcmp(name, exact[i], n) == 0) return 1;
    /* copies, memsets, allocations and frees, unless stream-ordered (...Async) */
    static const char *const families[] = {"cudaMemcpy", "cudaMemset", "cudaMalloc", "cudaFree",
                                           "cuMemcpy",   "cuMemset",   "cuMemAlloc", "cuMemFree"};
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++)
        if (has_prefix(name, n, families[i])) return !has_infix(name, n, "Async");
    return 0;
}

/* ---- sorting and nesting ------------------------------------------------------------------- */

static uint64_t api_end(const kiln_trace_api *a) { return a->t1 > a->t0 ? a->t1 : a->t0; }

static int cmp_u64(uint64_t a, uint64_t b) { return (a > b) - (a < b); }

/* (tid, t0, runtime first, longer first) */
static int cmp_api_thread(const void *pa, const void *pb) {
    const kiln_trace_api *a = pa, *b = pb;
    int c;
    if ((c = cmp_u64(a->tid, b->tid))) return c;
    if ((c = cmp_u64(a->t0, b->t0))) return c;
    if ((c = cmp_u64(a->domain, b->domain))) return c;
    return cmp_u64(api_end(b), api_end(a));
}

static int cmp_api_time(const void *pa, const void *pb) {
    const kiln_trace_api *a = pa, *b = pb;
    int c;
    if ((c = cmp_u64(a->t0, b->t0))) return c;
    if ((c = cmp_u64(a->domain, b->domain))) return c;
    return cmp_u64(a->tid, b->tid);
}

void kiln_trace_mark_nested(kiln_trace_api *api, size_t n) {
    if (n == 0) return;
    qsort(api, n, sizeof *api, cmp_api_thread);
    uint32_t tid = api[0].tid;
    int open = 0; /* a runtime call seen on this thread */
    uint64_t rt0 = 0, rt1 = 0;
    for (size_t i = 0; i < n; i++) {
        kiln_trace_api *a = &api[i];
        if (a->tid != tid) { tid = a->tid; open = 0; }
        a->nested = 0;
        if (a->domain == KILN_TRACE_RUNTIME) {
            open = 1, rt0 = a->t0, rt1 = api_end(a);
        } else if (open && a->t0 >= rt0 && api_end(a) <= rt1) {
            a->nested = 1;
        }
    }
    qsort(api, n, sizeof *api, cmp_api_time);
}

static int cmp_gpu(const void *pa, const void *pb) {
    const kiln_trace_gpu *a = pa, *b = pb;
    int c = cmp_u64(a->t0, b->t0);
    return c ? c : cmp_u64(a->t1, b->t1);
}

void kiln_trace_sort_gpu(kiln_trace_gpu *g, size_t n) {
    if (n) qsort(g, n, sizeof *g, cmp_gpu);
}

static int cmp_range(const void *pa, const void *pb) {
    const kiln_trace_range *a = pa, *b = pb;
    int c = cmp_u64(a->t0, b->t0);
    return c ? c : cmp_u64(a->t1, b->t1);
}

void kiln_trace_sort_ranges(kiln_trace_range *r, size_t n) {
    if (n) qsort(r, n, sizeof *r, cmp_range);
}

/* ---- accounting ---------------------------------------------------------------------------- */

/* First i < n with t0(i) >= t in an array sorted by t0, whose element i has its t0 field at
 * t0_first + i * stride bytes (the API records and the GPU activities alike). */
static size_t lower_t0(const void *t0_first, size_t n, size_t stride, uint64_t t) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint64_t v;
        memcpy(&v, (const char *)t0_first + mid * stride, sizeof v);
        if (v < t) lo = mid + 1; else hi = mid;
    }
    return lo;
}

/* index of the step containing t (steps sorted, non-overlapping), or -1 */
static long step_of(const kiln_trace_range *s, size_t n, uint64_t t) {
    size_t lo = 0, hi = n;
    while (lo < hi) { /* first step with t0 > t */
        size_t mid = lo + (hi - lo) / 2;
        if (s[mid].t0 <= t) lo = mid + 1; else hi = mid;
    }
    if (lo == 0) return -1;
    return t <= s[lo - 1].t1 ? (long)(lo - 1) : -1;
}

static void add_sync_name(kiln_trace_step_stats *st, const char *name) {
    st->n_sync++;
    for (int i = 0; i < st->n_sync_names; i++)
        if (st->sync[i].name == name || strcmp(st->sync[i].name, name) == 0) { st->sync[i].count++; return; }
    if (st->n_sync_names < KILN_TRACE_STEP_NAMES) {
        st->sync[st->n_sync_names].name = name;
        st->sync[st->n_sync_names++].count = 1;
    } else {
        st->n_sync_more++;
    }
}

void kiln_trace_account(const kiln_trace_api *api, size_t n_api, const kiln_trace_gpu *gpu, size_t n_gpu,
                        const kiln_trace_range *steps, size_t n_steps, kiln_trace_step_stats *out) {
    uint64_t max_dur = 0;
    for (size_t i = 0; i < n_gpu; i++)
        if (gpu[i].t1 > gpu[i].t0 && gpu[i].t1 - gpu[i].t0 > max_dur) max_dur = gpu[i].t1 - gpu[i].t0;
    for (size_t k = 0; k < n_steps; k++) {
        const kiln_trace_range *s = &steps[k];
        kiln_trace_step_stats *st = &out[k];
        memset(st, 0, sizeof *st);
        st->t0 = s->t0, st->t1 = s->t1;
        for (size_t i = n_api ? lower_t0(&api->t0, n_api, sizeof *api, s->t0) : 0; i < n_api && api[i].t0 <= s->t1;
             i++) {
            if (api[i].nested) continue;
            st->n_api++;
            if (kiln_trace_is_sync(api[i].name)) add_sync_name(st, api[i].name);
        }
        int any = 0;
        uint64_t first = 0, cur0 = 0, cur1 = 0;
        uint64_t from = s->t0 > max_dur ? s->t0 - max_dur : 0;
        for (size_t i = n_gpu ? lower_t0(&gpu->t0, n_gpu, sizeof *gpu, from) : 0; i < n_gpu && gpu[i].t0 <= s->t1;
             i++) {
            const kiln_trace_gpu *g = &gpu[i];
            int starts_in = g->t0 >= s->t0;
            if (g->kind == KILN_TRACE_SYNC_RECORD) { st->n_sync_records += starts_in; continue; }
            if (starts_in) {
                st->n_kernels += g->kind == KILN_TRACE_KERNEL;
                st->n_copies += g->kind == KILN_TRACE_MEMCPY;
                st->n_memsets += g->kind == KILN_TRACE_MEMSET;
            }
            uint64_t c0 = g->t0 > s->t0 ? g->t0 : s->t0, c1 = g->t1 < s->t1 ? g->t1 : s->t1;
            if (c1 < c0) continue; /* ended before the step */
            if (!any) {
                any = 1, first = cur0 = c0, cur1 = c1;
            } else if (c0 > cur1) {
                uint64_t gap = c0 - cur1;
                st->gpu_busy_ns += cur1 - cur0;
                st->gap_sum_ns += gap;
                if (gap > st->gap_max_ns) st->gap_max_ns = gap;
                cur0 = c0, cur1 = c1;
            } else if (c1 > cur1) {
                cur1 = c1;
            }
        }
        if (any) {
            st->gpu_busy_ns += cur1 - cur0;
            st->lead_ns = first - s->t0;
            st->tail_ns = s->t1 - cur1;
        } else {
            st->lead_ns = s->t1 - s->t0;
        }
    }
}

size_t kiln_trace_sync_outside(const kiln_trace_api *api, size_t n_api, const kiln_trace_range *steps,
                               size_t n_steps) {
    size_t n = 0;
    for (size_t i = 0; i < n_api; i++)
        if (!api[i].nested && kiln_trace_is_sync(api[i].name) && step_of(steps, n_steps, api[i].t0) < 0) n++;
    return n;
}

int kiln_trace_check(const kiln_trace_step_stats *s, size_t n_steps, char *why, size_t why_size) {
    if (why_size) why[0] = 0;
    if (n_steps == 0) {
        snprintf(why, why_size, "no engine steps seen (no kiln_step NVTX ranges and no stream syncs)");
        return 1;
    }
    size_t bad = 0, first = 0, idle = 0;
    for (size_t k = 0; k < n_steps; k++) {
        if (s[k].n_api == 0) { idle++; continue; } /* nothing scheduled: no CUDA call at all */
        if (s[k].n_sync != 1 && bad++ == 0) first = k;
    }
    if (idle == n_steps) {
        snprintf(why, why_size, "none of the %zu steps made any CUDA call", n_steps);
        return 1;
    }
    if (!bad) return 0;
    const kiln_trace_step_stats *f = &s[first];
    int n = snprintf(why, why_size, "%zu of %zu steps did not make exactly one synchronising call (first: step %zu made %d",
                     bad, n_steps, first, f->n_sync);
    for (int i = 0; i < f->n_sync_names && n > 0 && (size_t)n < why_size; i++)
        n += snprintf(why + n, why_size - (size_t)n, "%s%s x%d", i ? ", " : ": ", f->sync[i].name, f->sync[i].count);
    if (n > 0 && (size_t)n < why_size) snprintf(why + n, why_size - (size_t)n, ")");
    return 1;
}

static int cmp_kstat(const void *pa, const void *pb) {
    const kiln_trace_kstat *a = pa, *b = pb;
    return cmp_u64(b->ns, a->ns);
}

size_t kiln_trace_top_kernels(const kiln_trace_gpu *gpu, size_t n_gpu, const kiln_trace_range *steps, size_t n_steps,
                              kiln_trace_kstat *tab, size_t cap) {
    size_t n = 0;
    for (size_t i = 0; i < n_gpu; i++) {
        const kiln_trace_gpu *g = &gpu[i];
        if (g->kind != KILN_TRACE_KERNEL || !g->name || step_of(steps, n_steps, g->t0) < 0) continue;
        size_t j = 0;
        while (j < n && tab[j].name != g->name && strcmp(tab[j].name, g->name) != 0) j++;
        if (j == n) {
            if (n == cap) continue;
            tab[n].name = g->name, tab[n].count = 0, tab[n].ns = 0, n++;
        }
        tab[j].count++;
        tab[j].ns += g->t1 > g->t0 ? g->t1 - g->t0 : 0;
    }
    if (n) qsort(tab, n, sizeof *tab, cmp_kstat);
    return n;
}

/* ---- report -------------------------------------------------------------------------------- */

static double ms(uint64_t ns) { return ns / 1e6; }

int kiln_trace_print_summary(FILE *f, const char *steps_source, const kiln_trace_step_stats *s, size_t n_steps,
                             size_t sync_outside, const kiln_trace_kstat *top, size_t n_top, size_t top_show) {
    fprintf(f, "== kiln cuda trace: %zu steps (%s)\n", n_steps, steps_source);
    fprintf(f, "%5s %9s %5s %8s %7s %9s %9s %9s %8s %8s  %s\n", "step", "dur_ms", "syncs", "api", "kernels",
            "busy_ms", "gaps_ms", "maxgap_us", "lead_ms", "tail_ms", "synchronising calls");
    uint64_t dur = 0, busy = 0, gaps = 0, gmax = 0;
    long syncs = 0, kernels = 0, api = 0, idle = 0;
    for (size_t k = 0; k < n_steps; k++) {
        const kiln_trace_step_stats *t = &s[k];
        uint64_t d = t->t1 - t->t0;
        fprintf(f, "%5zu %9.3f %5d %8d %7d %9.3f %9.3f %9.1f %8.3f %8.3f  ", k, ms(d), t->n_sync, t->n_api, t->n_kernels,
                ms(t->gpu_busy_ns), ms(t->gap_sum_ns), t->gap_max_ns / 1e3, ms(t->lead_ns), ms(t->tail_ns));
        for (int i = 0; i < t->n_sync_names; i++)
            fprintf(f, "%s%s x%d", i ? ", " : "", t->sync[i].name, t->sync[i].count);
        if (t->n_sync_more) fprintf(f, ", +%d more", t->n_sync_more);
        if (t->n_api == 0) fprintf(f, "idle (no CUDA call: not checked)");
        else if (t->n_sync != 1) fprintf(f, "   <-- %s", t->n_sync ? "EXTRA SYNC" : "NO SYNC");
        idle += t->n_api == 0;
        fputc('\n', f);
        dur += d, busy += t->gpu_busy_ns, gaps += t->gap_sum_ns;
        if (t->gap_max_ns > gmax) gmax = t->gap_max_ns;
        syncs += t->n_sync, kernels += t->n_kernels, api += t->n_api;
    }
    fprintf(f, "total %9.3f %5ld %8ld %7ld %9.3f %9.3f %9.1f   GPU busy %.1f%% of step time\n", ms(dur), syncs, api,
            kernels, ms(busy), ms(gaps), gmax / 1e3, dur ? 100.0 * busy / dur : 0.0);
    fprintf(f, "idle steps (no CUDA call, not checked): %ld\n", idle);
    fprintf(f, "synchronising calls outside steps (load / teardown, not checked): %zu\n", sync_outside);
    if (n_top) {
        uint64_t all = 0;
        for (size_t i = 0; i < n_top; i++) all += top[i].ns;
        fprintf(f, "top kernels by GPU time inside steps:\n%10s %6s %8s %10s  %s\n", "ms", "%", "count", "avg_us", "name");
        for (size_t i = 0; i < n_top && i < top_show; i++)
            fprintf(f, "%10.3f %6.1f %8llu %10.2f  %.160s\n", ms(top[i].ns), all ? 100.0 * top[i].ns / all : 0.0,
                    (unsigned long long)top[i].count, top[i].count ? top[i].ns / 1e3 / top[i].count : 0.0, top[i].name);
    }
    char why[256];
    int rc = kiln_trace_check(s, n_steps, why, sizeof why);
    if (rc) fprintf(f, "check: FAIL: %s\n", why);
    else fprintf(f, "check: OK: each of %ld steps with CUDA work made exactly one synchronising call\n", (long)n_steps - idle);
    return rc;
}
