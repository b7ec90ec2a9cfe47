/* backend.c: backend registry. */
#include "backend/backend.h"
#include <string.h>

#ifndef KILN_HAVE_CUDA
const kiln_backend_ops *kiln_backend_cuda_ops(void) { return NULL; }
#endif

const kiln_backend_ops *kiln_backend_find(const char *name) {
    if (!name || !*name || strcmp(name, "cpu") == 0) return kiln_backend_cpu_ops();
    if (strcmp(name, "cuda") == 0) return kiln_backend_cuda_ops();
    return NULL;
}
