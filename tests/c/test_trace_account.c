/* kiln-layer: none (links only this layer and those below it) */
/* test_trace_account.c: the CUPTI-free half of tools/cuda_trace (trace_account.c): which CUDA
 * API names count as synchronising, nested driver calls counted once, per-step accounting of
 * syncs / GPU busy time / gaps, and the "exactly one synchronising call per step" verdict, which
 * must fail on a stream with an extra sync. The classification is cross-checked against
 * NVIDIA's own API lists (cupti_runtime_cbid.h / cupti_driver_cbid.h of the installed toolkit;
 * that part skips loudly when no toolkit is found). */
#include "test.h"
#include "../../tools/cuda_trace/trace_account.c"

/* ---- classification ---- */

static void test_classify(void) {
    const char *yes[] = {"cudaStreamSynchronize_v3020", "cudaStreamSynchronize_ptsz_v7000", "cudaDeviceSynchronize_v3020",
                         "cudaEventSynchronize_v3020", "cudaMemcpy_v3020", "cudaMemcpy_ptds_v7000", "cudaMemcpy2D_v3020",
                         "cudaMemcpyToSymbol_v3020", "cudaMemset_v3020", "cudaMalloc_v3020", "cudaMallocHost_v3020",
                         "cudaMallocManaged_v6000", "cudaFree_v3020", "cudaFreeHost_v3020", "cudaHostAlloc_v3020",
                         "cuStreamSynchronize", "cuStreamSynchronize_ptsz", "cuCtxSynchronize", "cuEventSynchronize",
                         "cuMemcpyDtoH_v2", "cuMemcpyHtoD_v2", "cuMemcpy", "cuMemsetD8_v2", "cuMemAlloc_v2",
                         "cuMemAllocHost_v2", "cuMemFree_v2", "cuMemFreeHost", "cuMemHostAlloc", "cudaThreadSynchronize"};
    const char *no[] = {"cudaMemcpyAsync_v3020", "cudaMemcpyAsync_ptsz_v7000", "cudaMemsetAsync_v3020",
                        "cudaMallocAsync_v11020", "cudaFreeAsync_v11020", "cudaMallocFromPoolAsync_v11020",
                        "cudaLaunchKernel_v7000", "cudaStreamQuery_v3020", "cudaEventQuery_v3020", "cudaEventRecord_v3020",
                        "cudaStreamWaitEvent_v3020", "cudaGetDevice_v3020", "cudaGetLastError_v3020",
                        "cuMemcpyHtoDAsync_v2", "cuMemcpyDtoHAsync_v2", "cuMemsetD32Async", "cuMemAllocAsync",
                        "cuMemFreeAsync", "cuLaunchKernel", "cuLaunchKernelEx", "cuStreamQuery", "cuEventRecord",
                        "cuCtxGetCurrent", "cuStreamWaitEvent", "cudaStreamCreateWithFlags_v5000", "", NULL};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) KT_CHECK(kiln_trace_is_sync(yes[i]), "%s should be synchronising", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        KT_CHECK(!kiln_trace_is_sync(no[i]), "%s should not be synchronising", no[i] ? no[i] : "(null)");
}

/* Every API of NVIDIA's callback-id lists: "...Synchronize..." must classify as synchronising,
 * "...Async..." must not, and each function sync.c wraps must be present and synchronising. */
static void test_classify_nvidia_lists(void) {
    const char *inc = getenv("CUDA_INCLUDE");
    char path[2][512];
    const char *dirs[] = {inc, "/usr/local/cuda/include", "/usr/local/cuda-13.0/include", "/usr/include"};
    int found = 0;
    for (size_t d = 0; d < sizeof dirs / sizeof dirs[0] && !found; d++) {
        if (!dirs[d]) continue;
        snprintf(path[0], sizeof path[0], "%s/cupti_runtime_cbid.h", dirs[d]);
        snprintf(path[1], sizeof path[1], "%s/cupti_driver_cbid.h", dirs[d]);
        found = kt_exists(path[0]) && kt_exists(path[1]);
    }
    if (!found) {
        fprintf(stderr, "SKIP (part): no cupti_runtime_cbid.h / cupti_driver_cbid.h found (set CUDA_INCLUDE); "
                        "classification checked only against the hand list\n");
        return;
    }
    const char *wrapped[] = {"cudaStreamSynchronize", "cudaEventSynchronize", "cudaDeviceSynchronize", "cudaMemcpy",
                             "cudaMemset", "cudaMalloc", "cudaFree", "cudaMallocHost", "cudaFreeHost",
                             "cuStreamSynchronize", "cuCtxSynchronize", "cuMemcpyDtoH", "cuMemAlloc", "cuMemFree"};
    int seen[sizeof wrapped / sizeof wrapped[0]] = {0};
    int n_names = 0, n_sync = 0;
    for (int h = 0; h < 2; h++) {
        FILE *f = fopen(path[h], "r");
        KT_CHECK(f != NULL, "open %s", path[h]);
        if (!f) continue;
        const char *prefix = h == 0 ? "CUPTI_RUNTIME_TRACE_CBID_" : "CUPTI_DRIVER_TRACE_CBID_";
        char line[512];
        while (fgets(line, sizeof line, f)) {
            char *p = strstr(line, prefix);
            if (!p) continue;
            p += strlen(prefix);
            char name[256];
            size_t n = 0;
            while (n + 1 < sizeof name && (p[n] == '_' || (p[n] >= '0' && p[n] <= '9') || (p[n] >= 'a' && p[n] <= 'z') ||
                                           (p[n] >= 'A' && p[n] <= 'Z')))
                name[n] = p[n], n++;
            name[n] = 0;
            if (strncmp(name, "cu", 2) != 0) continue; /* INVALID, SIZE, FORCE_INT */
            n_names++;
            int sync = kiln_trace_is_sync(name);
            n_sync += sync;
            size_t bl = base_len(name);
            if (has_infix(name, bl, "Synchronize")) KT_CHECK(sync, "%s contains Synchronize but is not classified sync", name);
            if (has_infix(name, bl, "Async")) KT_CHECK(!sync, "%s is stream-ordered but classified sync", name);
            for (size_t w = 0; w < sizeof wrapped / sizeof wrapped[0]; w++)
                if (strlen(wrapped[w]) == bl && memcmp(name, wrapped[w], bl) == 0) {
                    seen[w] = 1;
                    KT_CHECK(sync, "%s (wrapped by sync.c) not classified sync", name);
                }
        }
        fclose(f);
    }
    for (size_t w = 0; w < sizeof wrapped / sizeof wrapped[0]; w++)
        KT_CHECK(seen[w], "%s not in NVIDIA's callback lists: the classifier's names are wrong", wrapped[w]);
    KT_CHECK(n_names > 500 && n_sync > 40 && n_sync < n_names / 4, "%d names, %d synchronising", n_names, n_sync);
}

/* ---- accounting ---- */

typedef struct {
    kiln_trace_api api[256];
    size_t n_api;
    kiln_trace_gpu gpu[64];
    size_t n_gpu;
    kiln_trace_range steps[8];
    size_t n_steps;
} stream;

static void api(stream *s, const char *name, int dom, uint32_t tid, uint64_t t0, uint64_t t1) {
    s->api[s->n_api++] = (kiln_trace_api){.name = name, .t0 = t0, .t1 = t1, .tid = tid, .domain = (uint8_t)dom};
}
/* a runtime call and the driver call it makes */
static void rt(stream *s, const char *rname, const char *dname, uint32_t tid, uint64_t t0, uint64_t t1) {
    api(s, rname, KILN_TRACE_RUNTIME, tid, t0, t1);
    if (dname) api(s, dname, KILN_TRACE_DRIVER, tid, t0 + 1, t1 - 1);
}
static void gpu(stream *s, int kind, const char *name, uint64_t t0, uint64_t t1) {
    s->gpu[s->n_gpu++] = (kiln_trace_gpu){.name = name, .t0 = t0, .t1 = t1, .kind = (uint8_t)kind};
}

/* load (allocations + weight upload), then two steps at [1000,2000] and [3000,4000] on thread 7,
 * each: upload, 3 launches, one stream sync; teardown frees after. */
static void build(stream *s) {
    memset(s, 0, sizeof *s);
    rt(s, "cudaMalloc_v3020", "cuMemAlloc_v2", 7, 10, 20);
    rt(s, "cudaMemcpy_v3020", "cuMemcpyHtoD_v2", 7, 30, 60);
    rt(s, "cudaMallocHost_v3020", "cuMemAllocHost_v2", 7, 70, 80);
    for (int k = 0; k < 2; k++) {
        uint64_t b = 1000 + 2000 * (uint64_t)k;
        s->steps[s->n_steps++] = (kiln_trace_range){b, b + 1000, 7};
        rt(s, "cudaMemcpyAsync_v3020", "cuMemcpyHtoDAsync_v2", 7, b + 10, b + 20);
        for (int j = 0; j < 3; j++) rt(s, "cudaLaunchKernel_v7000", "cuLaunchKernel", 7, b + 30 + 10 * j, b + 38 + 10 * j);
        rt(s, "cudaStreamSynchronize_v3020", "cuStreamSynchronize", 7, b + 100, b + 900);
        /* GPU: copy [b+50,b+60], kernels [b+100,b+300], [b+350,b+500], [b+480,b+800] (overlap) */
        gpu(s, KILN_TRACE_MEMCPY, "memcpy HtoD", b + 50, b + 60);
        gpu(s, KILN_TRACE_KERNEL, k ? "gemm" : "gemm", b + 100, b + 300);
        gpu(s, KILN_TRACE_KERNEL, "attn", b + 350, b + 500);
        gpu(s, KILN_TRACE_KERNEL, "gemm", b + 480, b + 800);
        gpu(s, KILN_TRACE_SYNC_RECORD, "sync stream", b + 100, b + 900);
    }
    rt(s, "cudaFree_v3020", "cuMemFree_v2", 7, 5000, 5010);
}

static int run(stream *s, kiln_trace_step_stats *st, char *why, size_t why_size) {
    kiln_trace_mark_nested(s->api, s->n_api);
    kiln_trace_sort_gpu(s->gpu, s->n_gpu);
    kiln_trace_sort_ranges(s->steps, s->n_steps);
    kiln_trace_account(s->api, s->n_api, s->gpu, s->n_gpu, s->steps, s->n_steps, st);
    return kiln_trace_check(st, s->n_steps, why, why_size);
}

static void test_good_stream(void) {
    stream s;
    build(&s);
    kiln_trace_step_stats st[8];
    char why[256];
    int rc = run(&s, st, why, sizeof why);
    KT_CHECK(rc == 0, "clean stream rejected: %s", why);
    size_t nested = 0;
    for (size_t i = 0; i < s.n_api; i++) nested += s.api[i].nested;
    KT_CHECK(nested == s.n_api / 2, "%zu of %zu calls nested (every driver call is inside its runtime call)", nested, s.n_api);
    for (int k = 0; k < 2; k++) {
        KT_CHECK(st[k].n_sync == 1, "step %d: %d syncs (nested cuStreamSynchronize counted twice?)", k, st[k].n_sync);
        KT_CHECK(st[k].n_sync_names == 1 && strcmp(st[k].sync[0].name, "cudaStreamSynchronize_v3020") == 0, "step %d sync name", k);
        KT_CHECK(st[k].n_api == 5, "step %d: %d outermost API calls, want 5", k, st[k].n_api);
        KT_CHECK(st[k].n_kernels == 3 && st[k].n_copies == 1 && st[k].n_sync_records == 1, "step %d: counts %d %d %d", k,
                 st[k].n_kernels, st[k].n_copies, st[k].n_sync_records);
        /* busy: 10 (copy) + 200 + [350,800] = 450 -> 660; gaps: 40 (60->100) + 50 (300->350) */
        KT_CHECK(st[k].gpu_busy_ns == 660, "step %d busy %llu, want 660", k, (unsigned long long)st[k].gpu_busy_ns);
        KT_CHECK(st[k].gap_sum_ns == 90 && st[k].gap_max_ns == 50, "step %d gaps %llu / %llu, want 90 / 50", k,
                 (unsigned long long)st[k].gap_sum_ns, (unsigned long long)st[k].gap_max_ns);
        KT_CHECK(st[k].lead_ns == 50 && st[k].tail_ns == 200, "step %d lead %llu tail %llu", k,
                 (unsigned long long)st[k].lead_ns, (unsigned long long)st[k].tail_ns);
    }
    size_t out = kiln_trace_sync_outside(s.api, s.n_api, s.steps, s.n_steps);
    KT_CHECK(out == 4, "%zu syncs outside steps, want 4 (malloc, memcpy, mallocHost, free)", out);
    kiln_trace_kstat tab[4];
    size_t nt = kiln_trace_top_kernels(s.gpu, s.n_gpu, s.steps, s.n_steps, tab, 4);
    KT_CHECK(nt == 2 && strcmp(tab[0].name, "gemm") == 0 && tab[0].count == 4 && tab[0].ns == 1040 && tab[1].count == 2,
             "top kernels: %zu, %s x%llu %llu ns", nt, nt ? tab[0].name : "-", nt ? (unsigned long long)tab[0].count : 0ULL,
             nt ? (unsigned long long)tab[0].ns : 0ULL);
    /* the report says OK */
    FILE *f = tmpfile();
    KT_CHECK(f != NULL, "tmpfile");
    if (f) {
        int prc = kiln_trace_print_summary(f, "test", st, s.n_steps, out, tab, nt, 10);
        char buf[8192];
        rewind(f);
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = 0;
        fclose(f);
        KT_CHECK(prc == 0 && strstr(buf, "check: OK") && strstr(buf, "2 steps"), "summary:\n%s", buf);
    }
}

static void test_extra_sync_fails(void) {
    stream s;
    build(&s);
    /* a synchronous read-back in the second step, as a forgotten cudaMemcpy would make */
    rt(&s, "cudaMemcpy_v3020", "cuMemcpyDtoH_v2", 7, 3920, 3950);
    kiln_trace_step_stats st[8];
    char why[256];
    int rc = run(&s, st, why, sizeof why);
    KT_CHECK(rc != 0, "two synchronising calls in a step passed the check");
    KT_CHECK(st[0].n_sync == 1 && st[1].n_sync == 2, "syncs %d %d", st[0].n_sync, st[1].n_sync);
    KT_CHECK(strstr(why, "step 1 made 2") != NULL, "reason: %s", why);
    FILE *f = tmpfile();
    if (f) {
        int prc = kiln_trace_print_summary(f, "test", st, s.n_steps, 0, NULL, 0, 0);
        char buf[8192];
        rewind(f);
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = 0;
        fclose(f);
        KT_CHECK(prc != 0 && strstr(buf, "check: FAIL") && strstr(buf, "EXTRA SYNC"), "summary:\n%s", buf);
    }
}

/* A library (cuBLAS-like) calling the driver directly inside a step is counted; so is a driver
 * call on another thread that overlaps a runtime call in time. */
static void test_direct_driver_calls(void) {
    stream s;
    build(&s);
    api(&s, "cuMemAlloc_v2", KILN_TRACE_DRIVER, 7, 1085, 1095);     /* after the launches: top level */
    api(&s, "cuCtxSynchronize", KILN_TRACE_DRIVER, 9, 3200, 3300);  /* thread 9, inside 7's sync call */
    kiln_trace_step_stats st[8];
    char why[256];
    KT_CHECK(run(&s, st, why, sizeof why) != 0, "direct driver syncs missed");
    KT_CHECK(st[0].n_sync == 2 && st[1].n_sync == 2, "syncs %d %d, want 2 2", st[0].n_sync, st[1].n_sync);
}

static void test_no_steps_fails(void) {
    stream s;
    build(&s);
    s.n_steps = 0;
    kiln_trace_step_stats st[8];
    char why[256];
    KT_CHECK(run(&s, st, why, sizeof why) != 0 && strstr(why, "no engine steps"), "zero steps passed: %s", why);
    /* an idle step (nothing scheduled: no CUDA call) is not checked ... */
    build(&s);
    s.steps[s.n_steps++] = (kiln_trace_range){4500, 4600, 7};
    KT_CHECK(run(&s, st, why, sizeof why) == 0 && st[2].n_api == 0, "an idle step failed the check: %s", why);
    /* ... but steps that are all idle prove nothing */
    build(&s);
    s.n_api = 3, s.n_gpu = 0;
    KT_CHECK(run(&s, st, why, sizeof why) != 0 && strstr(why, "any CUDA call"), "all-idle steps passed: %s", why);
    /* a step with CUDA work but no sync at all fails */
    build(&s);
    for (size_t i = 0; i < s.n_api; i++)
        if (strncmp(s.api[i].name, "cudaStreamSynchronize", 21) == 0 && s.api[i].t0 < 2000) /* step 0 polls instead */
            s.api[i].name = "cudaStreamQuery_v3020";
    KT_CHECK(run(&s, st, why, sizeof why) != 0 && st[0].n_sync == 0 && strstr(why, "step 0 made 0"), "a step without a sync passed: %s", why);
}

int main(void) {
    test_classify();
    test_classify_nvidia_lists();
    test_good_stream();
    test_extra_sync_fails();
    test_direct_driver_calls();
    test_no_steps_fails();
    return kt_done();
}
