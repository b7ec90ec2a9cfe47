#include "format/dtype.h"
#include "format/tensor.h"

static const struct { const char *name; int elems, bytes; } k_dt[KILN_DT_COUNT] = {
    [KILN_DT_F32] = {"f32", 1, 4},      [KILN_DT_F16] = {"f16", 1, 2},
    [KILN_DT_BF16] = {"bf16", 1, 2},    [KILN_DT_Q8_0] = {"q8_0", 32, 34},
    [KILN_DT_Q4_0] = {"q4_0", 32, 18},  [KILN_DT_Q4_1] = {"q4_1", 32, 20},
    [KILN_DT_Q4_K] = {"q4_k", 256, 144}, [KILN_DT_Q5_K] = {"q5_k", 256, 176},
    [KILN_DT_Q6_K] = {"q6_k", 256, 210}, [KILN_DT_I32] = {"i32", 1, 4},
    [KILN_DT_F8_E4M3] = {"f8_e4m3", 1, 1}, [KILN_DT_F8_E5M2] = {"f8_e5m2", 1, 1},
    [KILN_DT_Q5_0] = {"q5_0", 32, 22},  [KILN_DT_Q5_1] = {"q5_1", 32, 24},
};

const char *kiln_dtype_name(kiln_dtype t) { return (unsigned)t < KILN_DT_COUNT ? k_dt[t].name : "?"; }
int kiln_dtype_block_elems(kiln_dtype t) { return (unsigned)t < KILN_DT_COUNT ? k_dt[t].elems : 0; }
int kiln_dtype_block_bytes(kiln_dtype t) { return (unsigned)t < KILN_DT_COUNT ? k_dt[t].bytes : 0; }
int kiln_dtype_is_quant(kiln_dtype t) {
    return (t >= KILN_DT_Q8_0 && t <= KILN_DT_Q6_K) || t == KILN_DT_Q5_0 || t == KILN_DT_Q5_1;
}
int kiln_dtype_is_fp8(kiln_dtype t) { return t == KILN_DT_F8_E4M3 || t == KILN_DT_F8_E5M2; }
size_t kiln_dtype_row_bytes(kiln_dtype t, int64_t n) {
    if ((unsigned)t >= KILN_DT_COUNT || n < 0) return 0;
    int e = k_dt[t].elems;
    if (n % e) return 0;
    return (size_t)(n / e) * (size_t)k_dt[t].bytes;
}

const char *kiln_scale_kind_name(kiln_scale_kind k) {
    switch (k) {
    case KILN_SCALE_NONE: return "none";
    case KILN_SCALE_TENSOR: return "per-tensor";
    case KILN_SCALE_CHANNEL: return "per-channel";
    case KILN_SCALE_BLOCK: return "per-block";
    }
    return "?";
}

const char *kiln_act_quant_name(kiln_act_quant a) {
    switch (a) {
    case KILN_ACT_NONE: return "weight-only";
    case KILN_ACT_DYNAMIC: return "dynamic per-token";
    case KILN_ACT_STATIC: return "static";
    }
    return "?";
}
