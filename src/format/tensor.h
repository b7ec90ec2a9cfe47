/* tensor.h: a tensor as a file format describes it: a name, an element type, a shape and a view
 * of its bytes (into a mapped file or an owned buffer). Loaders (model/) normalise every format
 * to these views without copying; backends read them once at load. */
#ifndef KILN_FORMAT_TENSOR_H
#define KILN_FORMAT_TENSOR_H
#include <stddef.h>
#include <stdint.h>
#include "format/dtype.h"

/* How the stored values of a weight are scaled back to real ones. GGUF block types carry their
 * scales inside the blocks (KILN_SCALE_NONE here: the dtype says it all); FP8 checkpoints
 * (compressed-tensors, fbgemm, Mistral's) carry them as separate f32 tensors:
 *   w[o][i] = stored[o][i] * scale[0]                          KILN_SCALE_TENSOR
 *   w[o][i] = stored[o][i] * scale[o]                          KILN_SCALE_CHANNEL
 *   w[o][i] = stored[o][i] * scale[o / block_out][i / block_in] KILN_SCALE_BLOCK (DeepSeek-style
 *                                                                128 x 128 tiles)
 * input_scale: W8A8 with a static activation scale (x_fp8 = x / input_scale[0]); NULL: the
 * backend quantizes activations dynamically (or runs W8A16). Every backend's linear entry
 * takes the tensor with this descriptor and refuses at load what it cannot run. */
typedef enum kiln_scale_kind {
    KILN_SCALE_NONE = 0,
    KILN_SCALE_TENSOR,
    KILN_SCALE_CHANNEL,
    KILN_SCALE_BLOCK
} kiln_scale_kind;

typedef struct kiln_quant {
    kiln_scale_kind kind;
    const float *scale;       /* TENSOR: [1]; CHANNEL: [out]; BLOCK: [out / block_out][in / block_in] */
    int block_out, block_in;  /* BLOCK: tile of one scale */
    const float *input_scale; /* [1] or NULL */
} kiln_quant;

const char *kiln_scale_kind_name(kiln_scale_kind k);

typedef struct kiln_tensor {
    char name[128];
    kiln_dtype dtype;
    int ndim;
    int64_t shape[4]; /* outermost first, as in PyTorch / safetensors */
    const void *data; /* into a mapped file or owned buffer */
    size_t nbytes;
    kiln_quant quant; /* zeroed (KILN_SCALE_NONE) for plain and GGUF tensors */
} kiln_tensor;

#endif
