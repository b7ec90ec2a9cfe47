/* dtype.h: element types of weights, as stored in checkpoint files. Quantized types are GGUF's
 * block formats: a row of n elements is n / block_elems blocks of block_bytes each. */
#ifndef KILN_FORMAT_DTYPE_H
#define KILN_FORMAT_DTYPE_H
#include <stddef.h>
#include <stdint.h>

typedef enum kiln_dtype {
    KILN_DT_F32 = 0,
    KILN_DT_F16,
    KILN_DT_BF16,
    KILN_DT_Q8_0, /* 32 elems: f16 d, int8 q[32]                     = 34 bytes */
    KILN_DT_Q4_0, /* 32 elems: f16 d, nibbles[16]                    = 18 bytes */
    KILN_DT_Q4_1, /* 32 elems: f16 d, f16 m, nibbles[16]             = 20 bytes */
    KILN_DT_Q4_K, /* 256 elems                                       = 144 bytes */
    KILN_DT_Q5_K, /* 256 elems                                       = 176 bytes */
    KILN_DT_Q6_K, /* 256 elems                                       = 210 bytes */
    KILN_DT_I32,  /* metadata-like tensors only */
    KILN_DT_F8_E4M3, /* 1 byte: FP8 (OCP E4M3, max 448), with scales in a kiln_quant descriptor */
    KILN_DT_F8_E5M2, /* 1 byte: FP8 (OCP E5M2) */
    KILN_DT_Q5_0, /* 32 elems: f16 d, u8 qh[4], nibbles[16]           = 22 bytes */
    KILN_DT_Q5_1, /* 32 elems: f16 d, f16 m, u8 qh[4], nibbles[16]    = 24 bytes */
    KILN_DT_COUNT
} kiln_dtype;

const char *kiln_dtype_name(kiln_dtype t);
int kiln_dtype_block_elems(kiln_dtype t);
int kiln_dtype_block_bytes(kiln_dtype t);
int kiln_dtype_is_quant(kiln_dtype t); /* a GGUF block type (scales inside the blocks) */
int kiln_dtype_is_fp8(kiln_dtype t);
/* bytes of n elements (n a multiple of the block size); 0 when it is not. */
size_t kiln_dtype_row_bytes(kiln_dtype t, int64_t n);

#endif
