/* ftype.h: whole-model quantization types ("file types": llama.cpp's LLAMA_FTYPE_MOSTLY_*) and
 * the per-tensor type each one gives, following llama.cpp's llama_tensor_get_type for the
 * llama architecture without an importance matrix:
 *
 *   f32 / f16 / bf16      every 2-D weight in that type (norms f32)
 *   q8_0, q4_0, q4_1,     every 2-D weight in the type, except the LM head (output.weight, or the
 *   q5_0, q5_1, q6_k      token embedding when it is tied): Q6_K (q8_0 keeps Q8_0)
 *   q4_k_s                Q4_K; attn_v of layers 0..3 and ffn_down of layers < L/8: Q5_K;
 *                         LM head Q6_K
 *   q4_k_m / q5_k_m       Q4_K / Q5_K; attn_v and ffn_down of the layers where
 *                         use_more_bits(l) = l < L/8 || l >= 7L/8 || (l - L/8) % 3 == 2: Q6_K;
 *                         LM head Q6_K
 *   q5_k_s                Q5_K; LM head Q6_K
 * A row length (cols) that is not a whole number of the chosen type's blocks falls back as
 * llama.cpp does: Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0 (LM head with cols % 256: Q8_0),
 * and to F16 when even 32 does not divide it. 1-D tensors (norms) are always F32.
 */
#ifndef KILN_FORMAT_FTYPE_H
#define KILN_FORMAT_FTYPE_H
#include <stdint.h>
#include "format/dtype.h"

typedef enum kiln_ftype {
    KILN_FTYPE_F32 = 0,
    KILN_FTYPE_F16,
    KILN_FTYPE_BF16,
    KILN_FTYPE_Q8_0,
    KILN_FTYPE_Q4_0,
    KILN_FTYPE_Q4_1,
    KILN_FTYPE_Q5_0,
    KILN_FTYPE_Q5_1,
    KILN_FTYPE_Q4_K_S,
    KILN_FTYPE_Q4_K_M,
    KILN_FTYPE_Q5_K_S,
    KILN_FTYPE_Q5_K_M,
    KILN_FTYPE_Q6_K,
    KILN_FTYPE_COUNT
} kiln_ftype;

/* The role of a weight in a llama-family model (what the type rules look at). */
typedef enum kiln_wrole {
    KILN_WROLE_TOKEN_EMBD = 0,
    KILN_WROLE_OUTPUT, /* the LM head; a tied token embedding is passed as OUTPUT */
    KILN_WROLE_ATTN_Q,
    KILN_WROLE_ATTN_K,
    KILN_WROLE_ATTN_V,
    KILN_WROLE_ATTN_O,
    KILN_WROLE_FFN_GATE,
    KILN_WROLE_FFN_UP,
    KILN_WROLE_FFN_DOWN,
    KILN_WROLE_NORM,
    KILN_WROLE_OTHER
} kiln_wrole;

/* "q4_k_m" (case-insensitive, llama.cpp's names) -> 0, else -1. */
int kiln_ftype_parse(const char *s, kiln_ftype *out);
const char *kiln_ftype_name(kiln_ftype ft); /* "q4_k_m" */
/* The value of GGUF's general.file_type (llama_ftype: F32 0, F16 1, Q4_0 2, Q4_1 3, Q8_0 7,
 * Q5_0 8, Q5_1 9, Q4_K_S 14, Q4_K_M 15, Q5_K_S 16, Q5_K_M 17, Q6_K 18, BF16 32). */
uint32_t kiln_ftype_gguf_id(kiln_ftype ft);
/* The base type of ft (Q4_K for q4_k_m). */
kiln_dtype kiln_ftype_base(kiln_ftype ft);
/* llama.cpp's use_more_bits(layer, n_layers). */
int kiln_ftype_more_bits(int layer, int n_layers);
/* The type of one tensor: role, its layer (0 .. n_layers-1; ignored for non-layer roles), its
 * row length cols (ndim == 1: pass ndim 1, always F32). */
kiln_dtype kiln_ftype_tensor_type(kiln_ftype ft, kiln_wrole role, int layer, int n_layers, int ndim,
                                  int64_t cols);
/* The fallback of a block type for rows of cols elements (as above; dt itself when it fits). */
kiln_dtype kiln_ftype_fallback(kiln_dtype dt, int64_t cols);

#endif
