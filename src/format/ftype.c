/* ftype.c: whole-model quantization types and their per-tensor type rules (ftype.h). */
#include "format/ftype.h"
#include <ctype.h>
#include <string.h>

static const struct {
    const char *name;
    uint32_t gguf_id;
    kiln_dtype base;
} k_ft[KILN_FTYPE_COUNT] = {
    [KILN_FTYPE_F32] = {"f32", 0, KILN_DT_F32},         [KILN_FTYPE_F16] = {"f16", 1, KILN_DT_F16},
    [KILN_FTYPE_BF16] = {"bf16", 32, KILN_DT_BF16},     [KILN_FTYPE_Q8_0] = {"q8_0", 7, KILN_DT_Q8_0},
    [KILN_FTYPE_Q4_0] = {"q4_0", 2, KILN_DT_Q4_0},      [KILN_FTYPE_Q4_1] = {"q4_1", 3, KILN_DT_Q4_1},
    [KILN_FTYPE_Q5_0] = {"q5_0", 8, KILN_DT_Q5_0},      [KILN_FTYPE_Q5_1] = {"q5_1", 9, KILN_DT_Q5_1},
    [KILN_FTYPE_Q4_K_S] = {"q4_k_s", 14, KILN_DT_Q4_K}, [KILN_FTYPE_Q4_K_M] = {"q4_k_m", 15, KILN_DT_Q4_K},
    [KILN_FTYPE_Q5_K_S] = {"q5_k_s", 16, KILN_DT_Q5_K}, [KILN_FTYPE_Q5_K_M] = {"q5_k_m", 17, KILN_DT_Q5_K},
    [KILN_FTYPE_Q6_K] = {"q6_k", 18, KILN_DT_Q6_K},
};

int kiln_ftype_parse(const char *s, kiln_ftype *out) {
    if (!s) return -1;
    for (int f = 0; f < KILN_FTYPE_COUNT; f++) {
        const char *n = k_ft[f].name;
        size_t i = 0;
        while (n[i] && s[i] && tolower((unsigned char)s[i]) == n[i]) i++;
        if (!n[i] && !s[i]) {
            *out = (kiln_ftype)f;
            return 0;
        }
    }
    return -1;
}

const char *kiln_ftype_name(kiln_ftype ft) { return (unsigned)ft < KILN_FTYPE_COUNT ? k_ft[ft].name : "?"; }
uint32_t kiln_ftype_gguf_id(kiln_ftype ft) { return (unsigned)ft < KILN_FTYPE_COUNT ? k_ft[ft].gguf_id : 0; }
kiln_dtype kiln_ftype_base(kiln_ftype ft) { return (unsigned)ft < KILN_FTYPE_COUNT ? k_ft[ft].base : KILN_DT_F32; }

int kiln_ftype_more_bits(int l, int n) { return l < n / 8 || l >= 7 * n / 8 || (l - n / 8) % 3 == 2; }

kiln_dtype kiln_ftype_fallback(kiln_dtype dt, int64_t cols) {
    if (!kiln_dtype_is_quant(dt)) return dt;
    if (cols % kiln_dtype_block_elems(dt) == 0) return dt;
    switch (dt) {
    case KILN_DT_Q4_K: dt = KILN_DT_Q5_0; break;
    case KILN_DT_Q5_K: dt = KILN_DT_Q5_1; break;
    case KILN_DT_Q6_K: dt = KILN_DT_Q8_0; break;
    default: break;
    }
    return cols % kiln_dtype_block_elems(dt) == 0 ? dt : KILN_DT_F16;
}

kiln_dtype kiln_ftype_tensor_type(kiln_ftype ft, kiln_wrole role, int layer, int n_layers, int ndim,
                                  int64_t cols) {
    if (ndim < 2 || role == KILN_WROLE_NORM) return KILN_DT_F32;
    kiln_dtype t = kiln_ftype_base(ft);
    if (!kiln_dtype_is_quant(t)) return t;
    int km = ft == KILN_FTYPE_Q4_K_M || ft == KILN_FTYPE_Q5_K_M;
    switch (role) {
    case KILN_WROLE_OUTPUT:
        /* llama.cpp: Q8_0 when the row is not a whole number of 256-blocks; else Q6_K unless
         * the model's type is Q8_0 */
        if (cols % 256) return KILN_DT_Q8_0;
        return t == KILN_DT_Q8_0 ? t : KILN_DT_Q6_K;
    case KILN_WROLE_ATTN_V:
        if (km && kiln_ftype_more_bits(layer, n_layers)) t = KILN_DT_Q6_K;
        else if (ft == KILN_FTYPE_Q4_K_S && layer < 4) t = KILN_DT_Q5_K;
        break;
    case KILN_WROLE_FFN_DOWN:
        if (km && kiln_ftype_more_bits(layer, n_layers)) t = KILN_DT_Q6_K;
        else if (ft == KILN_FTYPE_Q4_K_S && layer < n_layers / 8) t = KILN_DT_Q5_K;
        break;
    default: break;
    }
    return kiln_ftype_fallback(t, cols);
}
