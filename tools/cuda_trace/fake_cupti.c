/* fake_cupti.c: a stand-in for libcupti so the injection library (kiln_cupti_trace.c) can be run
 * end to end on a machine without a GPU (scripts/cuda_trace.sh --selftest).
 *
 * Built as a shared library (soname libcupti.so.13) it implements the few CUPTI entry points the
 * tracer uses, with the real prototypes of <cupti.h>: subscribe / enable (remembers the callback),
 * a fake clock, activity buffers (records queued by fake_kernel, handed over on flush). Built with
 * -DFAKE_CUPTI_DRIVER it is instead a small program that plays libcuda and a kiln run: it dlopens
 * the tracer, calls InitializeInjection, makes load-time calls, three "kiln_step" NVTX ranges with
 * launches and one stream sync each (mode "extra": a synchronous cudaMemcpy in step 1; "nonvtx": no
 * ranges, so the tracer falls back to stream-sync intervals) and exits,
 * so the tracer's atexit summary can be checked.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <cupti.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fake_call(const char *rname, const char *dname, uint64_t dur);
void fake_driver_call(const char *dname, uint64_t dur);
void fake_nvtx_push(const char *msg);
void fake_nvtx_pop(void);
void fake_kernel(const char *name, uint64_t dur);

#ifndef FAKE_CUPTI_DRIVER

static uint64_t clock_ns = 1000000;
static CUpti_CallbackFunc sub_cb;
static void *sub_ud;
static CUpti_BuffersCallbackRequestFunc buf_req;
static CUpti_BuffersCallbackCompleteFunc buf_done;
static CUpti_ActivityKernel10 queued[64];
static int n_queued;

CUptiResult CUPTIAPI cuptiGetTimestamp(uint64_t *timestamp) {
    *timestamp = clock_ns += 10;
    return CUPTI_SUCCESS;
}

CUptiResult CUPTIAPI cuptiGetResultString(CUptiResult result, const char **str) {
    *str = result == CUPTI_SUCCESS ? "success" : "fake error";
    return CUPTI_SUCCESS;
}

CUptiResult CUPTIAPI cuptiSubscribe(CUpti_SubscriberHandle *subscriber, CUpti_CallbackFunc callback, void *userdata) {
    static int handle;
    *subscriber = (CUpti_SubscriberHandle)&handle;
    sub_cb = callback, sub_ud = userdata;
    return CUPTI_SUCCESS;
}

CUptiResult CUPTIAPI cuptiEnableDomain(uint32_t enable, CUpti_SubscriberHandle subscriber, CUpti_CallbackDomain domain) {
    (void)enable, (void)subscriber;
    return domain == CUPTI_CB_DOMAIN_STATE ? CUPTI_ERROR_NOT_SUPPORTED : CUPTI_SUCCESS;
}

CUptiResult CUPTIAPI cuptiActivityRegisterCallbacks(CUpti_BuffersCallbackRequestFunc funcBufferRequested,
                                                    CUpti_BuffersCallbackCompleteFunc funcBufferCompleted) {
    buf_req = funcBufferRequested, buf_done = funcBufferCompleted;
    return CUPTI_SUCCESS;
}

CUptiResult CUPTIAPI cuptiActivityEnable(CUpti_ActivityKind kind) {
    /* like a CUPTI without synchronization records: the tracer must go on */
    return kind == CUPTI_ACTIVITY_KIND_SYNCHRONIZATION ? CUPTI_ERROR_NOT_SUPPORTED : CUPTI_SUCCESS;
}

CUptiResult CUPTIAPI cuptiActivityFlushAll(uint32_t flag) {
    (void)flag;
    if (!n_queued) return CUPTI_SUCCESS;
    uint8_t *buf = NULL;
    size_t size = 0, max = 0;
    buf_req(&buf, &size, &max);
    if (!buf || size < (size_t)n_queued * sizeof queued[0]) return CUPTI_ERROR_UNKNOWN;
    memcpy(buf, queued, (size_t)n_queued * sizeof queued[0]);
    size_t valid = (size_t)n_queued * sizeof queued[0];
    n_queued = 0;
    buf_done(NULL, 0, buf, size, valid);
    return CUPTI_SUCCESS;
}

CUptiResult CUPTIAPI cuptiActivityGetNextRecord(uint8_t *buffer, size_t validBufferSizeBytes, CUpti_Activity **record) {
    uint8_t *next = *record ? (uint8_t *)*record + sizeof(CUpti_ActivityKernel10) : buffer;
    if (next + sizeof(CUpti_ActivityKernel10) > buffer + validBufferSizeBytes) return CUPTI_ERROR_MAX_LIMIT_REACHED;
    *record = (CUpti_Activity *)next;
    return CUPTI_SUCCESS;
}

CUptiResult CUPTIAPI cuptiActivityGetNumDroppedRecords(CUcontext context, uint32_t streamId, size_t *dropped) {
    (void)context, (void)streamId;
    *dropped = 0;
    return CUPTI_SUCCESS;
}

static void api(CUpti_CallbackDomain dom, const char *name, CUpti_ApiCallbackSite site, uint64_t *corr) {
    CUpti_CallbackData d;
    memset(&d, 0, sizeof d);
    d.callbackSite = site;
    d.functionName = name;
    d.correlationData = corr;
    sub_cb(sub_ud, dom, 0, &d);
}

void fake_call(const char *rname, const char *dname, uint64_t dur) {
    uint64_t cr = 0, cd = 0;
    api(CUPTI_CB_DOMAIN_RUNTIME_API, rname, CUPTI_API_ENTER, &cr);
    if (dname) api(CUPTI_CB_DOMAIN_DRIVER_API, dname, CUPTI_API_ENTER, &cd);
    clock_ns += dur;
    if (dname) api(CUPTI_CB_DOMAIN_DRIVER_API, dname, CUPTI_API_EXIT, &cd);
    api(CUPTI_CB_DOMAIN_RUNTIME_API, rname, CUPTI_API_EXIT, &cr);
}

void fake_driver_call(const char *dname, uint64_t dur) {
    uint64_t cd = 0;
    api(CUPTI_CB_DOMAIN_DRIVER_API, dname, CUPTI_API_ENTER, &cd);
    clock_ns += dur;
    api(CUPTI_CB_DOMAIN_DRIVER_API, dname, CUPTI_API_EXIT, &cd);
}

void fake_nvtx_push(const char *msg) {
    struct { const char *message; } p = {msg};
    CUpti_NvtxData d = {.functionName = "nvtxRangePushA", .functionParams = &p};
    sub_cb(sub_ud, CUPTI_CB_DOMAIN_NVTX, CUPTI_CBID_NVTX_nvtxRangePushA, &d);
}

void fake_nvtx_pop(void) {
    CUpti_NvtxData d = {.functionName = "nvtxRangePop"};
    sub_cb(sub_ud, CUPTI_CB_DOMAIN_NVTX, CUPTI_CBID_NVTX_nvtxRangePop, &d);
}

void fake_kernel(const char *name, uint64_t dur) {
    if (n_queued == 64) return;
    CUpti_ActivityKernel10 *k = &queued[n_queued++];
    memset(k, 0, sizeof *k);
    k->kind = CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL;
    k->start = clock_ns + 5;
    k->end = clock_ns + 5 + dur;
    k->streamId = 7;
    k->name = name;
}

#else /* the driver program */

#include <dlfcn.h>

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: fake_app TRACER.so good|extra|nonvtx\n"); return 2; }
    void *h = dlopen(argv[1], RTLD_NOW);
    if (!h) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 2; }
    int (*init)(void) = (int (*)(void))dlsym(h, "InitializeInjection");
    if (!init || init() != 1) { fprintf(stderr, "InitializeInjection missing or failed\n"); return 2; }
    const char *nv = getenv("NVTX_INJECTION64_PATH");
    if (!nv || !strstr(nv, "libcupti.so")) { fprintf(stderr, "NVTX_INJECTION64_PATH not set to libcupti: %s\n", nv ? nv : "(unset)"); return 3; }
    int extra = strcmp(argv[2], "extra") == 0, nvtx = strcmp(argv[2], "nonvtx") != 0;
    /* load: allocations and the weight upload, not counted against steps */
    fake_call("cudaMalloc_v3020", "cuMemAlloc_v2", 100);
    fake_call("cudaMemcpy_v3020", "cuMemcpyHtoD_v2", 500);
    fake_call("cudaMallocHost_v3020", "cuMemAllocHost_v2", 100);
    for (int s = 0; s < 3; s++) {
        if (nvtx) fake_nvtx_push("kiln_step");
        fake_call("cudaMemcpyAsync_v3020", "cuMemcpyHtoDAsync_v2", 20);
        for (int k = 0; k < 3; k++) {
            fake_kernel(k == 1 ? "attention" : "gemm", 200);
            fake_call("cudaLaunchKernel_v7000", "cuLaunchKernel", 20);
        }
        if (s == 2) { /* another library's range and a direct driver query inside a step */
            fake_nvtx_push("cublas");
            fake_driver_call("cuCtxGetCurrent", 5);
            fake_nvtx_pop();
        }
        if (extra && s == 1) fake_call("cudaMemcpy_v3020", "cuMemcpyDtoH_v2", 50);
        fake_call("cudaStreamSynchronize_v3020", "cuStreamSynchronize", 900);
        if (nvtx) fake_nvtx_pop();
    }
    fake_call("cudaFree_v3020", "cuMemFree_v2", 100);
    return 0; /* the tracer's atexit handler writes the summary */
}
#endif
