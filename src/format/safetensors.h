/* safetensors.h: reader for .safetensors files (mmapped, tensors used in place).
 *
 * Layout: u64 little-endian header length N, N bytes of JSON
 *   {"__metadata__": {...}, "<name>": {"dtype": "BF16", "shape": [..], "data_offsets": [b, e]}, ...}
 * then the data area; offsets are relative to the data area (8 + N). Only BF16 / F16 / F32 and
 * F8_E4M3 (FP8, whose scales are other tensors: model/fp8.c) are accepted; F8_E5M2 is refused
 * by name. Every length and offset is checked: a malformed file is refused with a message that
 * names the file and the problem. Tensors may overlap or come in any order as long as each lies
 * inside the data area and its byte length equals dtype size x prod(shape).
 */
#ifndef KILN_FORMAT_SAFETENSORS_H
#define KILN_FORMAT_SAFETENSORS_H
#include "format/tensor.h"
#include "kiln.h"
#include "util/mapfile.h"

typedef struct kiln_safetensors {
    kiln_mapfile map;
    kiln_tensor *tensors; /* [n_tensors], data points into map */
    int n_tensors;
} kiln_safetensors;

int kiln_safetensors_open(kiln_safetensors *st, const char *path, kiln_error *err);
void kiln_safetensors_close(kiln_safetensors *st);


#endif
