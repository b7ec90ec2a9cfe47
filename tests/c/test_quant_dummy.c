/* kiln-layer: model (links only this layer and those below it) */
/* test_quant_dummy.c: quantized dummy weights (--dummy-quant) and the quantization type rules.
 *
 *   - kiln_dummy_f16 gives the same bits as the f32 -> f16 conversion for m * 2^-e (normal and
 *     subnormal);
 *   - kiln_dummy_qbyte blocks of every GGUF type, dequantized by format/quant.c, are finite,
 *     have a mean near 0 (|mean| < 0.15 std) and a standard deviation within a factor 2 of the dense dummy's
 *     1/sqrt(3 cols), for row lengths from 32 to 32768; their scale fields are the documented
 *     ones;
 *   - the ftype rules (llama.cpp's Q4_K_M mix, fallbacks for rows that are not whole blocks);
 *   - a quantized dummy model in the shape of mistral-tiny-random has the expected tensor
 *     types and every byte from kiln_dummy_qbyte; an unknown type is refused.
 */
#include <stdint.h>
#include "format/ftype.h"
#include "format/quant.h"
#include "model/dummy_quant.h"
#include "model/model.h"
#include "test.h"
#include "util/fp16.h"

static void test_f16(void) {
    int bad = 0;
    for (uint32_t m = 1; m < 64; m++)
        for (int e = 0; e < 40; e++) {
            float v = ldexpf((float)m, -e);
            uint16_t want = kiln_f32_to_f16(v), got = kiln_dummy_f16(m, e);
            /* exact whenever f16 holds v (always for these m unless deep in the subnormals) */
            if (kiln_f16_to_f32(want) == v) bad += want != got;
        }
    KT_CHECK(bad == 0, "kiln_dummy_f16 differs from the conversion in %d cases", bad);
}

static void test_blocks(void) {
    const kiln_dtype types[] = {KILN_DT_Q8_0, KILN_DT_Q4_0, KILN_DT_Q4_1, KILN_DT_Q5_0,
                                KILN_DT_Q5_1, KILN_DT_Q4_K, KILN_DT_Q5_K, KILN_DT_Q6_K};
    const int64_t colss[] = {32, 192, 256, 576, 1536, 5120, 32768};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++)
        for (size_t ci = 0; ci < sizeof colss / sizeof colss[0]; ci++) {
            kiln_dtype dt = types[ti];
            int64_t cols = colss[ci];
            size_t rb = kiln_dtype_row_bytes(dt, cols);
            if (!rb) continue;
            int rows = (int)(65536 / cols) + 2;
            uint8_t *w = malloc(rb * rows);
            float *y = malloc(sizeof(float) * (size_t)cols);
            uint64_t key = kiln_dummy_key(3, 5);
            for (size_t i = 0; i < rb * rows; i++) w[i] = kiln_dummy_qbyte(key, dt, (int64_t)i, cols);
            double s = 0, s2 = 0;
            int nonfinite = 0;
            for (int r = 0; r < rows; r++) {
                kiln_dequant_row(dt, w + rb * r, cols, y);
                for (int64_t i = 0; i < cols; i++) {
                    nonfinite += !isfinite(y[i]);
                    s += y[i];
                    s2 += (double)y[i] * y[i];
                }
            }
            double n = (double)rows * cols, mean = s / n, sd = sqrt(s2 / n - mean * mean);
            double want = 1.0 / sqrt(3.0 * cols), ratio = sd / want;
            KT_CHECK(nonfinite == 0, "%s cols %lld: %d values not finite", kiln_dtype_name(dt), (long long)cols, nonfinite);
            KT_CHECK(ratio > 0.5 && ratio < 2.0, "%s cols %lld: std %.3g, dense dummy %.3g", kiln_dtype_name(dt),
                     (long long)cols, sd, want);
            /* Q4_0 / Q4_1 / Q5_0 / Q5_1: uniform nibbles have mean -d/2 (0.11 / 0.05 std) */
            KT_CHECK(fabs(mean) < 0.15 * sd, "%s cols %lld: mean %.3g std %.3g", kiln_dtype_name(dt), (long long)cols,
                     mean, sd);
            /* the scale fields: d = 2^-e (and m = -8d, -16d; dmin = 7.5d, 15.5d) in every block */
            int bb = kiln_dtype_block_bytes(dt), e = kiln_dummy_qexp(dt, cols), badf = 0;
            for (size_t b = 0; b < rb * rows / (size_t)bb; b++) {
                const uint8_t *p = w + b * (size_t)bb;
                uint16_t d, m;
                memcpy(&d, p + (dt == KILN_DT_Q6_K ? 208 : 0), 2);
                memcpy(&m, p + 2, 2);
                badf += kiln_f16_to_f32(d) != ldexpf(1, -e);
                if (dt == KILN_DT_Q4_1) badf += kiln_f16_to_f32(m) != -8 * ldexpf(1, -e);
                if (dt == KILN_DT_Q5_1) badf += kiln_f16_to_f32(m) != -16 * ldexpf(1, -e);
                if (dt == KILN_DT_Q4_K) badf += kiln_f16_to_f32(m) != 7.5f * ldexpf(1, -e);
                if (dt == KILN_DT_Q5_K) badf += kiln_f16_to_f32(m) != 15.5f * ldexpf(1, -e);
            }
            KT_CHECK(badf == 0, "%s cols %lld: %d scale fields not as documented", kiln_dtype_name(dt),
                     (long long)cols, badf);
            printf("%-5s cols %6lld: std %.3e (dense dummy %.3e), mean %+.1e\n", kiln_dtype_name(dt), (long long)cols,
                   sd, want, mean);
            free(w);
            free(y);
        }
}

static void test_rules(void) {
    kiln_ftype ft;
    KT_CHECK(kiln_ftype_parse("Q4_K_M", &ft) == 0 && ft == KILN_FTYPE_Q4_K_M, "parse Q4_K_M");
    KT_CHECK(kiln_ftype_parse("q4_k", &ft) == -1 && kiln_ftype_parse("q4_k_mm", &ft) == -1, "q4_k refused");
    KT_CHECK(kiln_ftype_gguf_id(KILN_FTYPE_Q4_K_M) == 15 && kiln_ftype_gguf_id(KILN_FTYPE_BF16) == 32, "ids");
    /* 30 layers (SmolLM2): more bits in 0..2, 26..29 and 5, 8, ..., 23 */
    int more = 0;
    for (int l = 0; l < 30; l++) {
        int want = l < 3 || l >= 26 || (l - 3) % 3 == 2;
        more += kiln_ftype_more_bits(l, 30) == want;
        kiln_dtype v = kiln_ftype_tensor_type(KILN_FTYPE_Q4_K_M, KILN_WROLE_ATTN_V, l, 30, 2, 512);
        kiln_dtype q = kiln_ftype_tensor_type(KILN_FTYPE_Q4_K_M, KILN_WROLE_ATTN_Q, l, 30, 2, 512);
        kiln_dtype dn = kiln_ftype_tensor_type(KILN_FTYPE_Q4_K_M, KILN_WROLE_FFN_DOWN, l, 30, 2, 1536);
        KT_CHECK(v == (want ? KILN_DT_Q6_K : KILN_DT_Q4_K) && dn == v && q == KILN_DT_Q4_K, "layer %d: %s %s %s", l,
                 kiln_dtype_name(v), kiln_dtype_name(dn), kiln_dtype_name(q));
    }
    KT_CHECK(more == 30, "use_more_bits");
    struct { kiln_ftype ft; kiln_wrole r; int64_t cols; kiln_dtype want; } c[] = {
        {KILN_FTYPE_Q4_K_M, KILN_WROLE_OUTPUT, 576, KILN_DT_Q8_0},   /* 576 % 256: Q8_0 */
        {KILN_FTYPE_Q4_K_M, KILN_WROLE_OUTPUT, 512, KILN_DT_Q6_K},
        {KILN_FTYPE_Q8_0, KILN_WROLE_OUTPUT, 512, KILN_DT_Q8_0},
        {KILN_FTYPE_Q4_0, KILN_WROLE_OUTPUT, 512, KILN_DT_Q6_K},
        {KILN_FTYPE_Q4_0, KILN_WROLE_ATTN_O, 192, KILN_DT_Q4_0},
        {KILN_FTYPE_Q4_K_M, KILN_WROLE_ATTN_O, 192, KILN_DT_Q5_0},   /* Q4_K -> Q5_0 */
        {KILN_FTYPE_Q5_K_M, KILN_WROLE_ATTN_O, 192, KILN_DT_Q5_1},   /* Q5_K -> Q5_1 */
        {KILN_FTYPE_Q6_K, KILN_WROLE_ATTN_O, 192, KILN_DT_Q8_0},     /* Q6_K -> Q8_0 */
        {KILN_FTYPE_Q6_K, KILN_WROLE_ATTN_O, 200, KILN_DT_F16},      /* nothing fits: F16 */
        {KILN_FTYPE_Q4_K_M, KILN_WROLE_TOKEN_EMBD, 576, KILN_DT_Q5_0},
        {KILN_FTYPE_BF16, KILN_WROLE_OUTPUT, 576, KILN_DT_BF16},
        {KILN_FTYPE_Q4_K_S, KILN_WROLE_ATTN_V, 256, KILN_DT_Q5_K},   /* layer 0 */
        {KILN_FTYPE_Q4_K_M, KILN_WROLE_NORM, 256, KILN_DT_F32},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        kiln_dtype got = kiln_ftype_tensor_type(c[i].ft, c[i].r, 0, 30, 2, c[i].cols);
        KT_CHECK(got == c[i].want, "case %zu (%s, cols %lld): %s, want %s", i, kiln_ftype_name(c[i].ft),
                 (long long)c[i].cols, kiln_dtype_name(got), kiln_dtype_name(c[i].want));
    }
}

static void test_model(void) {
    const char *cfg = kt_shared("models/mistral-tiny-random/config.json");
    if (access(cfg, R_OK)) {
        fprintf(stderr, "note: %s missing, the dummy model case is skipped\n", cfg);
        return;
    }
    kiln_error err = {0};
    kiln_model *m = NULL;
    KT_CHECK(kiln_model_load_dummy_quant(&m, cfg, 9, 1, "q4_k_m", &err) == 0, "%s", err.msg);
    if (!m) return;
    KT_CHECK(!strcmp(m->dummy_quant, "q4_k_m"), "dummy_quant %s", m->dummy_quant);
    /* 3 layers: layer 2 gets more bits; o_proj rows (192) are not whole 256-blocks */
    KT_CHECK(m->tok_embd->dtype == KILN_DT_BF16 && m->lm_head->dtype == KILN_DT_Q6_K, "embd %s head %s",
             kiln_dtype_name(m->tok_embd->dtype), kiln_dtype_name(m->lm_head->dtype));
    for (int l = 0; l < 3; l++) {
        const kiln_layer_weights *L = &m->layers[l];
        kiln_dtype hi = l == 2 ? KILN_DT_Q6_K : KILN_DT_Q4_K;
        KT_CHECK(L->wq->dtype == KILN_DT_Q4_K && L->wk->dtype == KILN_DT_Q4_K && L->wv->dtype == hi &&
                     L->wo->dtype == KILN_DT_Q5_0 && L->w_gate->dtype == KILN_DT_Q4_K && L->w_up->dtype == KILN_DT_Q4_K &&
                     L->w_down->dtype == hi,
                 "layer %d types", l);
    }
    int bad = 0, norms_f32 = 1;
    for (int t = 0; t < m->n_tensors; t++) {
        const kiln_tensor *x = &m->tensors[t];
        if (x->ndim == 1) norms_f32 &= x->dtype == KILN_DT_F32;
        if (!kiln_dtype_is_quant(x->dtype)) continue;
        uint64_t key = kiln_dummy_key(9, t);
        const uint8_t *p = x->data;
        for (size_t i = 0; i < x->nbytes; i++) bad += p[i] != kiln_dummy_qbyte(key, x->dtype, (int64_t)i, x->shape[1]);
    }
    KT_CHECK(bad == 0 && norms_f32, "%d bytes differ from kiln_dummy_qbyte; norms f32 %d", bad, norms_f32);
    kiln_model_free(m);
    m = NULL;
    KT_CHECK(kiln_model_load_dummy_quant(&m, cfg, 9, 0, "q8_0", &err) == 0 && m && m->layers[0].wq->data == NULL &&
                 m->layers[0].wq->dtype == KILN_DT_Q8_0 && m->layers[0].wq->nbytes == (size_t)192 * 8 * 34,
             "q8_0 without host data: %s", err.msg);
    kiln_model_free(m);
    m = NULL;
    int rc = kiln_model_load_dummy_quant(&m, cfg, 9, 1, "q3_k", &err);
    KT_CHECK(rc == KILN_ERR_INVALID_ARG && strstr(err.msg, "q3_k") && !m, "unknown type: %d %s", rc, err.msg);
}

int main(void) {
    test_f16();
    test_blocks();
    test_rules();
    test_model();
    return kt_done();
}
