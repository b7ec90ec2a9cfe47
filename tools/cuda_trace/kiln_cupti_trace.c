/* kiln_cupti_trace.c: a CUPTI injection library that traces kiln (or any CUDA program) and
 * checks invariant I1: every engine step makes exactly one synchronising CUDA call.
 *
 *   CUDA_INJECTION64_PATH=/path/libkiln_cupti_trace.so kiln bench --backend cuda ...
 *
 * libcuda loads the library at cuInit and calls InitializeInjection(), which
 *   - subscribes to every runtime and driver API callback: name, thread, enter / exit time
 *     (cuptiGetTimestamp) of each call go to a fixed-size array (slot index carried from enter to
 *     exit in cbInfo->correlationData);
 *   - subscribes to NVTX callbacks: kiln_engine_step (src/engine/engine.c) is wrapped in the
 *     backend's range hooks, on cuda nvtxRangePushA("kiln_step") / nvtxRangePop() from
 *     libkiln_cuda.so (src/backend/cuda/cuda_backend.c); NVTX reaches CUPTI only when
 *     NVTX_INJECTION64_PATH names libcupti, so the library sets it (to the libcupti it is linked
 *     against, found with dladdr) unless already set: NVTX reads it at its first call, which
 *     comes after cuInit;
 *   - enables activity records for kernels, copies, memsets and synchronisations (GPU start /
 *     end times), delivered in 8 MiB buffers on CUPTI's thread;
 *   - registers an atexit handler that flushes CUPTI, hands the events to trace_account.c and
 *     writes the text summary (stderr and $KILN_TRACE_SUMMARY) and a Chrome trace JSON
 *     ($KILN_TRACE_OUT, default kiln_trace.json; open it in ui.perfetto.dev).
 * Steps are the kiln_step ranges; with none seen (NVTX not injected) the summary falls back to the
 * intervals between consecutive outermost cudaStreamSynchronize calls of the busiest thread and
 * says so. Synchronising calls outside steps (load, teardown) are reported, not checked.
 *
 * Memory is bounded: KILN_TRACE_MAX_API (default 1M API calls, 32 B each), KILN_TRACE_MAX_GPU
 * (1M GPU records, 40 B each), 64K steps; what does not fit is counted and reported as dropped.
 * Any CUPTI call that fails prints a warning and the feature is skipped: the traced program runs
 * on. This is a tool, not library code: it uses malloc and global state (one per process).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <cupti.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "trace_account.h"

#define STEP_NAME "kiln_step"
#define BUF_SIZE (8u << 20)
#define NAME_SLOTS 8192 /* distinct kernel names kept (power of two) */
#define STACK_DEPTH 64  /* NVTX push/pop nesting per thread */
#define TOP_CAP 512

/* nvtxRangePushA's parameters as CUPTI passes them (nvtxRangePushA_params of
 * generated_nvtx_meta.h, which would pull in every NVTX header) */
typedef struct {
    const char *message;
} push_a_params;

static struct {
    kiln_trace_api *api;
    size_t cap_api;
    atomic_size_t n_api;
    kiln_trace_gpu *gpu;
    size_t cap_gpu;
    atomic_size_t n_gpu;
    kiln_trace_range *steps;
    size_t cap_steps;
    atomic_size_t n_steps;
    atomic_size_t cupti_dropped; /* activity records CUPTI itself dropped */
    atomic_size_t buffers_failed;
    atomic_size_t nvtx_pushes;   /* any nvtxRangePush seen (tells whether NVTX reached CUPTI) */
    atomic_int stopped, finished;
    CUpti_SubscriberHandle sub;
    int activity_ok;
    pthread_mutex_t name_mu;
    const char *names[NAME_SLOTS];
    size_t n_names;
} g = {.name_mu = PTHREAD_MUTEX_INITIALIZER};

static _Thread_local uint32_t tl_tid;
static _Thread_local int tl_depth;
static _Thread_local struct {
    uint64_t t0;
    int is_step;
} tl_stack[STACK_DEPTH];

static uint32_t my_tid(void) {
    if (!tl_tid) tl_tid = (uint32_t)syscall(SYS_gettid);
    return tl_tid;
}

static uint64_t now_ns(void) {
    uint64_t t = 0;
    if (cuptiGetTimestamp(&t) != CUPTI_SUCCESS) t = 0;
    return t;
}

static int warn_cupti(CUptiResult r, const char *what) {
    if (r == CUPTI_SUCCESS) return 0;
    const char *s = NULL;
    if (cuptiGetResultString(r, &s) != CUPTI_SUCCESS || !s) s = "?";
    fprintf(stderr, "kiln_cupti_trace: warning: %s failed: %s (%d); going on without it\n", what, s, (int)r);
    return 1;
}

static size_t env_size(const char *name, size_t def) {
    const char *v = getenv(name);
    if (!v || !*v) return def;
    char *end;
    unsigned long long x = strtoull(v, &end, 10);
    return (*end || x == 0 || x > (1ULL << 32)) ? def : (size_t)x;
}

/* ---- host side: API and NVTX callbacks --------------------------------------------------------- */

static void on_api(CUpti_CallbackDomain dom, const CUpti_CallbackData *cb) {
    if (cb->callbackSite == CUPTI_API_ENTER) {
        size_t i = atomic_fetch_add_explicit(&g.n_api, 1, memory_order_relaxed);
        if (i < g.cap_api) {
            kiln_trace_api *a = &g.api[i];
            a->name = cb->functionName; /* a global constant string (cupti_callbacks.h) */
            a->tid = my_tid();
            a->domain = dom == CUPTI_CB_DOMAIN_RUNTIME_API ? KILN_TRACE_RUNTIME : KILN_TRACE_DRIVER;
            a->nested = 0;
            a->t1 = 0;
            a->t0 = now_ns();
            *cb->correlationData = i + 1;
        } else {
            *cb->correlationData = 0;
        }
    } else if (cb->callbackSite == CUPTI_API_EXIT) {
        uint64_t i = *cb->correlationData;
        if (i && i <= g.cap_api) g.api[i - 1].t1 = now_ns();
    }
}

static void on_nvtx(CUpti_CallbackId cbid, const CUpti_NvtxData *nd) {
    if (cbid == CUPTI_CBID_NVTX_nvtxRangePushA || cbid == CUPTI_CBID_NVTX_nvtxRangePushW ||
        cbid == CUPTI_CBID_NVTX_nvtxRangePushEx) {
        atomic_fetch_add_explicit(&g.nvtx_pushes, 1, memory_order_relaxed);
        int is_step = 0;
        if (cbid == CUPTI_CBID_NVTX_nvtxRangePushA) {
            const push_a_params *p = nd->functionParams;
            is_step = p && p->message && strcmp(p->message, STEP_NAME) == 0;
        }
        if (tl_depth < STACK_DEPTH) tl_stack[tl_depth].t0 = now_ns(), tl_stack[tl_depth].is_step = is_step;
        tl_depth++;
    } else if (cbid == CUPTI_CBID_NVTX_nvtxRangePop) {
        if (tl_depth <= 0) return;
        tl_depth--;
        if (tl_depth >= STACK_DEPTH || !tl_stack[tl_depth].is_step) return;
        size_t i = atomic_fetch_add_explicit(&g.n_steps, 1, memory_order_relaxed);
        if (i < g.cap_steps) g.steps[i] = (kiln_trace_range){tl_stack[tl_depth].t0, now_ns(), my_tid()};
    }
}

static void CUPTIAPI on_callback(void *userdata, CUpti_CallbackDomain dom, CUpti_CallbackId cbid, const void *data) {
    (void)userdata;
    if (atomic_load_explicit(&g.stopped, memory_order_relaxed) || !data) return;
    if (dom == CUPTI_CB_DOMAIN_RUNTIME_API || dom == CUPTI_CB_DOMAIN_DRIVER_API)
        on_api(dom, (const CUpti_CallbackData *)data);
    else if (dom == CUPTI_CB_DOMAIN_NVTX)
        on_nvtx(cbid, (const CUpti_NvtxData *)data);
}

/* ---- GPU side: activity buffers ---------------------------------------------------------------- */

/* FNV-1a over the string; open addressing; the table only grows (interned names live to exit) */
static const char *intern(const char *s) {
    if (!s) return "(unnamed)";
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = s; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    const char *r = "(name table full)";
    pthread_mutex_lock(&g.name_mu);
    for (size_t k = 0; k < NAME_SLOTS; k++) {
        size_t j = (size_t)(h + k) & (NAME_SLOTS - 1);
        if (!g.names[j]) {
            if (g.n_names + 1 >= NAME_SLOTS / 2) break; /* keep probing short */
            char *c = strdup(s);
            if (!c) break;
            g.names[j] = c;
            g.n_names++;
            r = c;
            break;
        }
        if (strcmp(g.names[j], s) == 0) { r = g.names[j]; break; }
    }
    pthread_mutex_unlock(&g.name_mu);
    return r;
}

static void add_gpu(const char *name, uint64_t t0, uint64_t t1, uint64_t bytes, uint32_t stream, int kind) {
    size_t i = atomic_fetch_add_explicit(&g.n_gpu, 1, memory_order_relaxed);
    if (i < g.cap_gpu)
        g.gpu[i] = (kiln_trace_gpu){.name = name, .t0 = t0, .t1 = t1, .bytes = bytes, .stream = stream, .kind = (uint8_t)kind};
}

static const char *copy_name(uint8_t kind) {
    switch (kind) {
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOD: return "memcpy HtoD";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOH: return "memcpy DtoH";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOD: return "memcpy DtoD";
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOH: return "memcpy HtoH";
    case CUPTI_ACTIVITY_MEMCPY_KIND_PTOP: return "memcpy PtoP";
    default: return "memcpy";
    }
}

static const char *sync_name(CUpti_ActivitySynchronizationType t) {
    switch (t) {
    case CUPTI_ACTIVITY_SYNCHRONIZATION_TYPE_EVENT_SYNCHRONIZE: return "sync: event";
    case CUPTI_ACTIVITY_SYNCHRONIZATION_TYPE_STREAM_WAIT_EVENT: return "sync: stream wait event";
    case CUPTI_ACTIVITY_SYNCHRONIZATION_TYPE_STREAM_SYNCHRONIZE: return "sync: stream";
    case CUPTI_ACTIVITY_SYNCHRONIZATION_TYPE_CONTEXT_SYNCHRONIZE: return "sync: context";
    default: return "sync: other";
    }
}

static void on_record(const CUpti_Activity *rec) {
    switch (rec->kind) {
    case CUPTI_ACTIVITY_KIND_KERNEL:
    case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL: {
        const CUpti_ActivityKernel10 *k = (const CUpti_ActivityKernel10 *)rec;
        add_gpu(intern(k->name), k->start, k->end, 0, k->streamId, KILN_TRACE_KERNEL);
        break;
    }
    case CUPTI_ACTIVITY_KIND_MEMCPY: {
        const CUpti_ActivityMemcpy6 *m = (const CUpti_ActivityMemcpy6 *)rec;
        add_gpu(copy_name(m->copyKind), m->start, m->end, m->bytes, m->streamId, KILN_TRACE_MEMCPY);
        break;
    }
    case CUPTI_ACTIVITY_KIND_MEMSET: {
        const CUpti_ActivityMemset4 *m = (const CUpti_ActivityMemset4 *)rec;
        add_gpu("memset", m->start, m->end, m->bytes, m->streamId, KILN_TRACE_MEMSET);
        break;
    }
    case CUPTI_ACTIVITY_KIND_SYNCHRONIZATION: {
        const CUpti_ActivitySynchronization2 *s = (const CUpti_ActivitySynchronization2 *)rec;
        add_gpu(sync_name(s->type), s->start, s->end, 0, s->streamId, KILN_TRACE_SYNC_RECORD);
        break;
    }
    default: break;
    }
}

static void CUPTIAPI buffer_requested(uint8_t **buffer, size_t *size, size_t *max_records) {
    *buffer = aligned_alloc(8, BUF_SIZE);
    *size = *buffer ? BUF_SIZE : 0;
    *max_records = 0;
    if (!*buffer) atomic_fetch_add(&g.buffers_failed, 1);
}

static void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t stream, uint8_t *buffer, size_t size, size_t valid) {
    (void)size;
    if (!buffer) return;
    CUpti_Activity *rec = NULL;
    if (valid > 0) {
        while (cuptiActivityGetNextRecord(buffer, valid, &rec) == CUPTI_SUCCESS) on_record(rec);
        size_t dropped = 0;
        if (cuptiActivityGetNumDroppedRecords(ctx, stream, &dropped) == CUPTI_SUCCESS && dropped)
            atomic_fetch_add(&g.cupti_dropped, dropped);
    }
    free(buffer);
}

/* ---- exit: account, summarise, write the trace ------------------------------------------------- */

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

static double rel_us(uint64_t t, uint64_t base) { return t >= base ? (t - base) / 1e3 : -((base - t) / 1e3); }

static void write_json(const char *path, const kiln_trace_api *api, size_t n_api, const kiln_trace_gpu *gpu,
                       size_t n_gpu, const kiln_trace_range *steps, size_t n_steps, const kiln_trace_step_stats *st) {
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "kiln_cupti_trace: cannot write %s\n", path);
        return;
    }
    uint64_t base = UINT64_MAX;
    if (n_api && api[0].t0 < base) base = api[0].t0;
    if (n_gpu && gpu[0].t0 < base) base = gpu[0].t0;
    if (n_steps && steps[0].t0 < base) base = steps[0].t0;
    if (base == UINT64_MAX) base = 0;
    fprintf(f, "{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n");
    fprintf(f, "{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":1,\"args\":{\"name\":\"CPU (API calls, kiln_step)\"}},\n");
    fprintf(f, "{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":2,\"args\":{\"name\":\"GPU (tid = stream; 0 = sync records)\"}}");
    for (size_t k = 0; k < n_steps; k++) {
        fprintf(f, ",\n{\"ph\":\"X\",\"cat\":\"step\",\"name\":\"kiln_step %zu\",\"pid\":1,\"tid\":%u,\"ts\":%.3f,\"dur\":%.3f,"
                   "\"args\":{\"syncs\":%d,\"kernels\":%d,\"gpu_busy_us\":%.3f,\"gap_max_us\":%.3f}}",
                k, steps[k].tid, rel_us(steps[k].t0, base), (steps[k].t1 - steps[k].t0) / 1e3, st[k].n_sync,
                st[k].n_kernels, st[k].gpu_busy_ns / 1e3, st[k].gap_max_ns / 1e3);
    }
    for (size_t i = 0; i < n_api; i++) {
        const kiln_trace_api *a = &api[i];
        int sync = !a->nested && kiln_trace_is_sync(a->name);
        uint64_t t1 = a->t1 > a->t0 ? a->t1 : a->t0;
        fprintf(f, ",\n{\"ph\":\"X\",\"cat\":\"%s\",\"name\":", sync ? "sync" : a->nested ? "driver (nested)"
                                                                : a->domain == KILN_TRACE_RUNTIME ? "runtime" : "driver");
        json_str(f, a->name);
        fprintf(f, ",\"pid\":1,\"tid\":%u,\"ts\":%.3f,\"dur\":%.3f%s}", a->tid, rel_us(a->t0, base), (t1 - a->t0) / 1e3,
                sync ? ",\"args\":{\"synchronising\":1}" : "");
    }
    for (size_t i = 0; i < n_gpu; i++) {
        const kiln_trace_gpu *q = &gpu[i];
        static const char *const cat[] = {"", "kernel", "memcpy", "memset", "sync record"};
        fprintf(f, ",\n{\"ph\":\"X\",\"cat\":\"%s\",\"name\":", cat[q->kind <= 4 ? q->kind : 0]);
        json_str(f, q->name);
        fprintf(f, ",\"pid\":2,\"tid\":%u,\"ts\":%.3f,\"dur\":%.3f", q->kind == KILN_TRACE_SYNC_RECORD ? 0u : q->stream,
                rel_us(q->t0, base), (q->t1 > q->t0 ? q->t1 - q->t0 : 0) / 1e3);
        if (q->bytes) fprintf(f, ",\"args\":{\"bytes\":%llu}", (unsigned long long)q->bytes);
        fputc('}', f);
    }
    fprintf(f, "\n]}\n");
    if (fclose(f) == 0) fprintf(stderr, "kiln_cupti_trace: wrote %s (open in ui.perfetto.dev)\n", path);
}

/* Fallback steps: (end of one outermost cudaStreamSynchronize, end of the next] on the thread
 * that made the most of them. */
static size_t fallback_steps(const kiln_trace_api *api, size_t n_api, kiln_trace_range *out, size_t cap) {
    uint32_t best = 0;
    size_t best_n = 0;
    for (int pass = 0; pass < 2; pass++) { /* pass 0: pick the thread (first 16 seen); pass 1: ranges */
        uint32_t tids[16];
        size_t cnt[16] = {0}, nt = 0, n = 0;
        uint64_t prev = 0;
        int have = 0;
        for (size_t i = 0; i < n_api; i++) {
            const kiln_trace_api *a = &api[i];
            if (a->nested || a->domain != KILN_TRACE_RUNTIME || strncmp(a->name, "cudaStreamSynchronize", 21) != 0) continue;
            uint64_t end = a->t1 > a->t0 ? a->t1 : a->t0;
            if (pass == 0) {
                size_t j = 0;
                while (j < nt && tids[j] != a->tid) j++;
                if (j == nt && nt < 16) tids[nt++] = a->tid;
                if (j < nt && ++cnt[j] > best_n) best_n = cnt[j], best = a->tid;
            } else if (a->tid == best) {
                if (have && n < cap) out[n++] = (kiln_trace_range){prev + 1, end, best};
                prev = end, have = 1;
            }
        }
        if (pass == 1) return n;
    }
    return 0;
}

static void finish(void) {
    if (atomic_exchange(&g.finished, 1)) return;
    if (g.activity_ok) warn_cupti(cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED), "cuptiActivityFlushAll");
    atomic_store(&g.stopped, 1);
    size_t n_api = atomic_load(&g.n_api), n_gpu = atomic_load(&g.n_gpu), n_steps = atomic_load(&g.n_steps);
    size_t drop_api = n_api > g.cap_api ? n_api - g.cap_api : 0, drop_gpu = n_gpu > g.cap_gpu ? n_gpu - g.cap_gpu : 0;
    size_t drop_steps = n_steps > g.cap_steps ? n_steps - g.cap_steps : 0;
    n_api -= drop_api, n_gpu -= drop_gpu, n_steps -= drop_steps;

    kiln_trace_mark_nested(g.api, n_api);
    kiln_trace_sort_gpu(g.gpu, n_gpu);
    const char *source = "NVTX kiln_step ranges";
    if (n_steps == 0) {
        n_steps = fallback_steps(g.api, n_api, g.steps, g.cap_steps);
        source = atomic_load(&g.nvtx_pushes)
                     ? "FALLBACK: no kiln_step range seen (NVTX ranges were seen: not a kiln CUDA build?); "
                       "steps = intervals between cudaStreamSynchronize calls"
                     : "FALLBACK: NVTX never reached CUPTI (NVTX_INJECTION64_PATH?); "
                       "steps = intervals between cudaStreamSynchronize calls";
    }
    kiln_trace_sort_ranges(g.steps, n_steps);
    kiln_trace_step_stats *st = calloc(n_steps ? n_steps : 1, sizeof *st);
    kiln_trace_kstat *top = calloc(TOP_CAP, sizeof *top);
    if (!st || !top) {
        fprintf(stderr, "kiln_cupti_trace: out of memory for the summary\n");
        free(st), free(top);
        return;
    }
    kiln_trace_account(g.api, n_api, g.gpu, n_gpu, g.steps, n_steps, st);
    size_t outside = kiln_trace_sync_outside(g.api, n_api, g.steps, n_steps);
    size_t n_top = kiln_trace_top_kernels(g.gpu, n_gpu, g.steps, n_steps, top, TOP_CAP);

    const char *sum_path = getenv("KILN_TRACE_SUMMARY");
    FILE *outs[2] = {stderr, sum_path && *sum_path ? fopen(sum_path, "w") : NULL};
    if (sum_path && *sum_path && !outs[1]) fprintf(stderr, "kiln_cupti_trace: cannot write %s\n", sum_path);
    for (int o = 0; o < 2; o++) {
        FILE *f = outs[o];
        if (!f) continue;
        fprintf(f, "kiln_cupti_trace: %zu API calls (%zu dropped, cap %zu), %zu GPU records (%zu dropped, cap %zu; "
                   "CUPTI dropped %zu, buffers failed %zu), %zu steps (%zu dropped), %zu NVTX pushes\n",
                n_api, drop_api, g.cap_api, n_gpu, drop_gpu, g.cap_gpu, atomic_load(&g.cupti_dropped),
                atomic_load(&g.buffers_failed), n_steps, drop_steps, atomic_load(&g.nvtx_pushes));
        if (drop_api || drop_gpu || atomic_load(&g.cupti_dropped))
            fprintf(f, "kiln_cupti_trace: WARNING: records were dropped; raise KILN_TRACE_MAX_API / KILN_TRACE_MAX_GPU "
                       "or trace fewer steps (the check covers only what was recorded)\n");
        kiln_trace_print_summary(f, source, st, n_steps, outside, top, n_top, 15);
    }
    if (outs[1]) fclose(outs[1]);
    const char *json = getenv("KILN_TRACE_OUT");
    if (!json || !*json) json = "kiln_trace.json";
    if (strcmp(json, "-") != 0) write_json(json, g.api, n_api, g.gpu, n_gpu, g.steps, n_steps, st);
    free(st);
    free(top);
}

/* ---- entry point ------------------------------------------------------------------------------- */

__attribute__((visibility("default"))) int InitializeInjection(void); /* the documented CUDA_INJECTION64_PATH entry point */

int InitializeInjection(void) {
    static atomic_int once;
    if (atomic_exchange(&once, 1)) return 1;
    g.cap_api = env_size("KILN_TRACE_MAX_API", 1u << 20);
    g.cap_gpu = env_size("KILN_TRACE_MAX_GPU", 1u << 20);
    g.cap_steps = 1u << 16;
    /* calloc: pages are only touched as records arrive */
    g.api = calloc(g.cap_api, sizeof *g.api);
    g.gpu = calloc(g.cap_gpu, sizeof *g.gpu);
    g.steps = calloc(g.cap_steps, sizeof *g.steps);
    if (!g.api || !g.gpu || !g.steps) {
        fprintf(stderr, "kiln_cupti_trace: cannot allocate the trace buffers; not tracing\n");
        return 1;
    }
    CUptiResult r = cuptiSubscribe(&g.sub, on_callback, NULL);
    if (warn_cupti(r, "cuptiSubscribe")) {
        fprintf(stderr, "kiln_cupti_trace: not tracing%s\n",
                r == CUPTI_ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED ? " (another CUPTI client, e.g. a profiler, is active)" : "");
        return 1;
    }
    warn_cupti(cuptiEnableDomain(1, g.sub, CUPTI_CB_DOMAIN_RUNTIME_API), "enable runtime API callbacks");
    warn_cupti(cuptiEnableDomain(1, g.sub, CUPTI_CB_DOMAIN_DRIVER_API), "enable driver API callbacks");
    warn_cupti(cuptiEnableDomain(1, g.sub, CUPTI_CB_DOMAIN_NVTX), "enable NVTX callbacks");
    if (!warn_cupti(cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed), "cuptiActivityRegisterCallbacks")) {
        g.activity_ok = 1;
        warn_cupti(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL), "kernel activity");
        warn_cupti(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMCPY), "memcpy activity");
        warn_cupti(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMSET), "memset activity");
        warn_cupti(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_SYNCHRONIZATION), "synchronization activity");
    }
    /* route NVTX (kiln's kiln_step ranges) to the libcupti this library uses */
    const char *nvtx = getenv("NVTX_INJECTION64_PATH");
    if (!nvtx || !*nvtx) {
        Dl_info di;
        if (dladdr((void *)cuptiSubscribe, &di) && di.dli_fname) {
            setenv("NVTX_INJECTION64_PATH", di.dli_fname, 0);
            nvtx = di.dli_fname;
        }
    }
    fprintf(stderr, "kiln_cupti_trace: tracing (NVTX_INJECTION64_PATH=%s)\n", nvtx ? nvtx : "(unset: no step ranges)");
    atexit(finish);
    return 1;
}
