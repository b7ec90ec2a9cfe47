/* sync.c: the counting wrappers of sync.h, the only file of src/backend/cuda allowed to call
 * synchronising CUDA functions (checked by scripts/check_cuda_sync.sh). */
#include "backend/cuda/sync.h"
#include "util/error.h"

int kiln_cuda_error(kiln_error *err, cudaError_t e, const char *stmt, const char *file, int line) {
    kiln_status code = (e == cudaErrorMemoryAllocation) ? KILN_ERR_OOM : KILN_ERR_BACKEND;
    return kiln_err_set(err, code, file, line, "CUDA %s (%s) in %s", cudaGetErrorName(e), cudaGetErrorString(e),
                        stmt);
}

/* the injected failure of kiln_cuda_options.fail_alloc_at: the error cudaMalloc gives on a full
 * device */
static int injected(const kiln_cuda_syncs *c) { return c->fail_at && c->mallocs >= c->fail_at; }

int kiln_cuda_malloc(kiln_cuda_syncs *c, void **p, size_t n, const char *what, kiln_error *err) {
    *p = NULL;
    c->mallocs++;
    int inj = injected(c);
    cudaError_t e = inj ? cudaErrorMemoryAllocation : cudaMalloc(p, n ? n : 16);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); /* clear the sticky-free error state */
        *p = NULL;
        /* what was asked, what this backend already holds and what the device has left: enough
         * to see whether the weights, the KV pool or the scratch did not fit */
        size_t free_b = 0, total_b = 0;
        if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
            (void)cudaGetLastError();
            free_b = total_b = 0;
        }
        return KILN_ERR(err, e == cudaErrorMemoryAllocation ? KILN_ERR_OOM : KILN_ERR_BACKEND,
                        "cuda: cannot allocate %.1f MiB of device memory for %s: %s%s (this backend holds "
                        "%.1f MiB; the device has %.1f MiB free of %.1f MiB)",
                        n / 1048576.0, what, cudaGetErrorString(e), inj ? " (injected)" : "",
                        c->device_bytes / 1048576.0, free_b / 1048576.0, total_b / 1048576.0);
    }
    c->device_bytes += n;
    return KILN_OK;
}

void kiln_cuda_free(kiln_cuda_syncs *c, void *p, size_t n) {
    if (!p) return;
    c->frees++;
    c->device_bytes -= n <= c->device_bytes ? n : c->device_bytes;
    (void)cudaFree(p);
}

int kiln_cuda_host_alloc(kiln_cuda_syncs *c, void **p, size_t n, const char *what, kiln_error *err) {
    *p = NULL;
    c->mallocs++;
    int inj = injected(c);
    cudaError_t e = inj ? cudaErrorMemoryAllocation : cudaMallocHost(p, n ? n : 16);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        *p = NULL;
        return KILN_ERR(err, KILN_ERR_OOM, "cuda: cannot allocate %.1f MiB of pinned host memory for %s: %s%s",
                        n / 1048576.0, what, cudaGetErrorString(e), inj ? " (injected)" : "");
    }
    return KILN_OK;
}

void kiln_cuda_host_free(kiln_cuda_syncs *c, void *p) {
    if (!p) return;
    c->frees++;
    (void)cudaFreeHost(p);
}

int kiln_cuda_stream_sync(kiln_cuda_syncs *c, cudaStream_t s, kiln_error *err) {
    c->stream_syncs++;
    KILN_CUDA_TRY(err, cudaStreamSynchronize(s));
    return KILN_OK;
}

int kiln_cuda_event_sync(kiln_cuda_syncs *c, cudaEvent_t ev, kiln_error *err) {
    c->event_syncs++;
    KILN_CUDA_TRY(err, cudaEventSynchronize(ev));
    return KILN_OK;
}

int kiln_cuda_device_sync(kiln_cuda_syncs *c, kiln_error *err) {
    c->device_syncs++;
    KILN_CUDA_TRY(err, cudaDeviceSynchronize());
    return KILN_OK;
}

int kiln_cuda_memcpy_sync(kiln_cuda_syncs *c, void *dst, const void *src, size_t n, enum cudaMemcpyKind kind,
                          kiln_error *err) {
    c->sync_copies++;
    KILN_CUDA_TRY(err, cudaMemcpy(dst, src, n, kind));
    return KILN_OK;
}

int kiln_cuda_memset_sync(kiln_cuda_syncs *c, void *dst, int value, size_t n, kiln_error *err) {
    c->sync_copies++;
    KILN_CUDA_TRY(err, cudaMemset(dst, value, n));
    return KILN_OK;
}

uint64_t kiln_cuda_syncs_total(const kiln_cuda_syncs *c) {
    return c->stream_syncs + c->event_syncs + c->device_syncs + c->sync_copies + c->mallocs + c->frees;
}
