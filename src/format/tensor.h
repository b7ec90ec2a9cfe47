/* tensor.h: a tensor as a file format describes it: a name, an element type, a shape and a view
 * of its bytes (into a mapped file or an owned buffer). Loaders (model/) normalise every format
 * to these views without copying; backends read them once at load. */
#ifndef KILN_FORMAT_TENSOR_H
#define KILN_FORMAT_TENSOR_H
#include <stddef.h>
#include <stdint.h>
#include "format/dtype.h"

typedef struct kiln_tensor {
    char name[128];
    kiln_dtype dtype;
    int ndim;
    int64_t shape[4]; /* outermost first, as in PyTorch / safetensors */
    const void *data; /* into a mapped file or owned buffer */
    size_t nbytes;
} kiln_tensor;

#endif
