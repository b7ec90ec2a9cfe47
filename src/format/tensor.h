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
 * (stored: KILN_DT_F8_E4M3, decoded by util/fp8.h; HF's block `weight_scale_inv` is multiplied
 * too, despite its name.) act says what happens to the activations x[T][in] (W8A8):
 *   KILN_ACT_NONE     W8A16: y = sum_i w[o][i] * x[i] with w as above (weight-only FP8)
 *   KILN_ACT_DYNAMIC  per token: s_a[t] = kiln_fp8_act_scale(max_i |x[t][i]|); with BLOCK
 *                     scales per token and group of block_in columns: s_a[t][g] over
 *                     x[t][g * block_in ..]
 *   KILN_ACT_STATIC   s_a = input_scale[0] for every token
 *   then q_a = kiln_fp8_act_q(x, s_a) and, per output (tensor / channel scales)
 *     y[t][o] = (sum_i q_a[t][i] * stored[o][i]) * (s_a[t] * s_w[o])
 *   or, with BLOCK scales, over the groups g in ascending order
 *     y[t][o] = sum_g (sum_{i in g} q_a[t][i] * stored[o][i]) * (s_a[t][g] * scale[o / block_out][g])
 *   (W8A16 is the same with q_a = x and s_a = 1). Dynamic scales are per token, never per
 *   batch, so a row's result does not depend on the other rows (I5); vLLM's dynamic per-tensor
 *   scale is taken per token here.
 * Every backend's linear entry takes the tensor with this descriptor and refuses at load what
 * it cannot run. */
typedef enum kiln_scale_kind {
    KILN_SCALE_NONE = 0,
    KILN_SCALE_TENSOR,
    KILN_SCALE_CHANNEL,
    KILN_SCALE_BLOCK
} kiln_scale_kind;

typedef enum kiln_act_quant {
    KILN_ACT_NONE = 0, /* weight-only (W8A16) */
    KILN_ACT_DYNAMIC,  /* per token (per token and block_in group with BLOCK scales) */
    KILN_ACT_STATIC    /* input_scale[0] */
} kiln_act_quant;

typedef struct kiln_quant {
    kiln_scale_kind kind;
    kiln_act_quant act;
    const float *scale;       /* TENSOR: [1]; CHANNEL: [out]; BLOCK: [out / block_out][in / block_in] */
    int block_out, block_in;  /* BLOCK: tile of one scale */
    const float *input_scale; /* [1] with KILN_ACT_STATIC, else NULL */
} kiln_quant;

const char *kiln_scale_kind_name(kiln_scale_kind k);
const char *kiln_act_quant_name(kiln_act_quant a);

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
