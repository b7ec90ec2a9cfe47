/* sync.h: the one door for every synchronising CUDA call (invariant I1).
 *
 * Stream/event/device synchronisation, synchronous copies, cudaMalloc/cudaFree and pinned host
 * allocation all go through these wrappers, which count every call in a kiln_cuda_syncs record
 * owned by the caller (no global state). scripts/check_cuda_sync.sh fails the build's lint test
 * when any other file of src/backend/cuda calls one of them directly. A step makes exactly one
 * call: kiln_cuda_event_sync() on the step's event in finish_step (a second step may already be
 * queued behind it: overlapped scheduling); everything else happens at create/destroy.
 * Errors are routed into kiln_error (KILN_ERR_BACKEND / KILN_ERR_OOM), never exit.
 */
#ifndef KILN_CUDA_SYNC_H
#define KILN_CUDA_SYNC_H
#include <stddef.h>
#include <stdint.h>
#include <cuda_runtime_api.h>
#include "kiln.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kiln_cuda_syncs {
    uint64_t stream_syncs;  /* cudaStreamSynchronize */
    uint64_t event_syncs;   /* cudaEventSynchronize */
    uint64_t device_syncs;  /* cudaDeviceSynchronize */
    uint64_t sync_copies;   /* synchronous cudaMemcpy and cudaMemset */
    uint64_t mallocs;       /* cudaMalloc + cudaMallocHost */
    uint64_t frees;         /* cudaFree + cudaFreeHost */
    size_t device_bytes;    /* bytes currently held through kiln_cuda_malloc */
    uint64_t fail_at;       /* fault injection (kiln_cuda_options.fail_alloc_at): the allocation
                             * whose `mallocs` count reaches this fails as out of memory; 0 = off */
} kiln_cuda_syncs;

/* A CUDA error as a kiln error: "CUDA <name> (<string>) in <stmt>" at file:line. */
int kiln_cuda_error(kiln_error *err, cudaError_t e, const char *stmt, const char *file, int line);
#define KILN_CUDA_TRY(err, call)                                                             \
    do {                                                                                     \
        cudaError_t e_ = (call);                                                             \
        if (e_ != cudaSuccess) return kiln_cuda_error((err), e_, #call, __FILE__, __LINE__); \
    } while (0)

int kiln_cuda_malloc(kiln_cuda_syncs *c, void **p, size_t n, const char *what, kiln_error *err);
void kiln_cuda_free(kiln_cuda_syncs *c, void *p, size_t n); /* p may be NULL; n: bytes, for the tally */
int kiln_cuda_host_alloc(kiln_cuda_syncs *c, void **p, size_t n, const char *what, kiln_error *err);
void kiln_cuda_host_free(kiln_cuda_syncs *c, void *p);
int kiln_cuda_stream_sync(kiln_cuda_syncs *c, cudaStream_t s, kiln_error *err);
int kiln_cuda_event_sync(kiln_cuda_syncs *c, cudaEvent_t ev, kiln_error *err);
int kiln_cuda_device_sync(kiln_cuda_syncs *c, kiln_error *err);
int kiln_cuda_memcpy_sync(kiln_cuda_syncs *c, void *dst, const void *src, size_t n, enum cudaMemcpyKind kind,
                          kiln_error *err);
int kiln_cuda_memset_sync(kiln_cuda_syncs *c, void *dst, int value, size_t n, kiln_error *err);
/* The counters of a CUDA backend (NULL if b is not one): tests check I1 with them. */
struct kiln_backend;
const kiln_cuda_syncs *kiln_backend_cuda_syncs(const struct kiln_backend *b);
/* steps the cuda backend replayed from a decode graph (0 for other backends) */
uint64_t kiln_backend_cuda_graph_steps(const struct kiln_backend *b);
/* steps run through the piecewise graphs (all but attention and the LM head / sampling) */
uint64_t kiln_backend_cuda_piece_steps(const struct kiln_backend *b);
/* L2 prefetches captured into the decode graphs (kiln_cuda_options.l2_prefetch_mb) */
uint64_t kiln_backend_cuda_l2pf_forks(const struct kiln_backend *b);
/* Total synchronising calls so far (all kinds). */
uint64_t kiln_cuda_syncs_total(const kiln_cuda_syncs *c);

#ifdef __cplusplus
}
#endif
#endif
