/* kiln-layer: backend (links only this layer and those below it) */
/* test_fp8.c: FP8 E4M3 conversion (util/fp8.h) and the CPU backend's FP8 linear path (issue 17).
 *
 * Oracles: the E4M3 definition evaluated with ldexp (decode of all 256 codes), round-to-nearest-
 * even checked at every midpoint between neighbouring values; ml_dtypes in
 * tests/py/test_fp8_checkpoints.py through this program's --encode mode (f32 file in, one code
 * per value on stdout). The FP8 dot kernels of every ISA this CPU has against a double
 * reference and against the scalar kernel (odd lengths, 1..4 rows); kiln_cpu_matmul with every
 * scale kind (tensor, channel, [bo, bi] blocks with partial tiles) and activation scheme
 * (weight-only, dynamic per token, static) against a double evaluation of the formula of
 * format/tensor.h, with scales from 1e-4 to 1e3, and rows bit-identical alone or in a batch. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "backend/cpu/attention.h"
#include "backend/cpu/kernels.h"
#include "test.h"
#include "util/alloc.h"
#include "util/fp8.h"

static int encode_mode(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 2;
    float x;
    while (fread(&x, 4, 1, f) == 1) putchar(kiln_f32_to_e4m3(x));
    fclose(f);
    return 0;
}

static double e4m3_def(int c) { /* the format's definition */
    int s = c >> 7, e = (c >> 3) & 15, m = c & 7;
    double v = e == 0 ? ldexp(m / 8.0, -6) : ldexp(1.0 + m / 8.0, e - 7);
    return s ? -v : v;
}

static void test_conversion(void) {
    int bad = 0;
    for (int c = 0; c < 256; c++) {
        float f = kiln_e4m3_to_f32((uint8_t)c);
        if ((c & 0x7f) == 0x7f) { bad += !isnan(f); continue; }
        bad += (double)f != e4m3_def(c);
        uint8_t back = kiln_f32_to_e4m3(f);
        bad += back != c;
    }
    KT_CHECK(bad == 0, "decode of the 256 codes and encode(decode(c)) == c: %d mismatches", bad);
    /* every midpoint between positive neighbours rounds to the even code; just above / below
     * to the upper / lower neighbour */
    int rne = 0;
    for (int c = 0; c < 0x7e; c++) {
        float a = kiln_e4m3_to_f32((uint8_t)c), b = kiln_e4m3_to_f32((uint8_t)(c + 1));
        float mid = (float)(((double)a + b) / 2);
        int even = (c & 1) ? c + 1 : c;
        rne += kiln_f32_to_e4m3(mid) != even;
        rne += kiln_f32_to_e4m3(nextafterf(mid, INFINITY)) != c + 1;
        rne += kiln_f32_to_e4m3(nextafterf(mid, -INFINITY)) != c;
        rne += kiln_f32_to_e4m3(-mid) != (0x80 | even);
    }
    KT_CHECK(rne == 0, "round to nearest even at the %d midpoints: %d wrong", 0x7e, rne);
    KT_CHECK(kiln_f32_to_e4m3(448.0f) == 0x7e && kiln_f32_to_e4m3(500.0f) == 0x7e && kiln_f32_to_e4m3(INFINITY) == 0x7e &&
                 kiln_f32_to_e4m3(-1e30f) == 0xfe,
             "saturation to +-448");
    KT_CHECK(kiln_f32_to_e4m3(NAN) == 0x7f && kiln_f32_to_e4m3(0.0f) == 0 && kiln_f32_to_e4m3(-0.0f) == 0x80 &&
                 kiln_f32_to_e4m3(0x1p-11f) == 0 && kiln_f32_to_e4m3(0x1.0001p-10f) == 1,
             "NaN, zeros, flush below 2^-10");
    KT_CHECK(kiln_fp8_act_scale(0.0f) == 1.0f / (448.0f * 512.0f) && kiln_fp8_act_scale(896.0f) == 2.0f,
             "dynamic activation scale and its floor");
}

/* random E4M3 codes, no NaN, magnitudes over the whole range */
static void rand_codes(uint8_t *w, int n, unsigned long long *s) {
    for (int i = 0; i < n; i++) {
        uint8_t c = (uint8_t)(kt_rand_u64(s) & 0xff);
        if ((c & 0x7f) == 0x7f) c ^= 1;
        w[i] = c;
    }
}

static void test_dot_kernels(void) {
    unsigned long long s = 7;
    enum { N = 1100 };
    uint8_t *w = kiln_malloc(N);
    float *x = kiln_malloc(4 * N * sizeof(float));
    rand_codes(w, N, &s);
    for (int i = 0; i < 4 * N; i++) x[i] = kt_randf(&s) * 3.0f;
    kiln_dot_fn ref = kiln_cpu_dot_lookup(KILN_DT_F8_E4M3, KILN_ISA_SCALAR);
    KT_CHECK(ref != NULL, "scalar FP8 dot kernel exists");
    const int ns[] = {1, 7, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 1000, 1100};
    for (int isa = 0; isa < KILN_ISA_COUNT && ref; isa++) {
        kiln_dot_fn fn = kiln_cpu_dot_lookup(KILN_DT_F8_E4M3, (kiln_isa)isa);
        if (!kiln_isa_supported((kiln_isa)isa)) { printf("  (isa %s not on this CPU)\n", kiln_isa_name((kiln_isa)isa)); continue; }
        KT_CHECK(fn != NULL, "%s FP8 dot kernel exists", kiln_isa_name((kiln_isa)isa));
        if (!fn) continue;
        double worst = 0, worst_scalar = 0;
        for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++)
            for (int nr = 1; nr <= 4; nr++) {
                int n = ns[k];
                float out[4], outs[4];
                fn(w, x, N, nr, n, out, 1);
                ref(w, x, N, nr, n, outs, 1);
                for (int r = 0; r < nr; r++) {
                    double d = 0, mag = 0;
                    for (int i = 0; i < n; i++) {
                        d += e4m3_def(w[i]) * x[(size_t)r * N + i];
                        mag += fabs(e4m3_def(w[i]) * x[(size_t)r * N + i]);
                    }
                    double e = fabs(out[r] - d) / (mag + 1e-30), es = fabs(out[r] - outs[r]) / (mag + 1e-30);
                    worst = e > worst ? e : worst;
                    worst_scalar = es > worst_scalar ? es : worst_scalar;
                    /* the same row alone gives the same bits (nr independence) */
                    float one;
                    fn(w, x + (size_t)r * N, N, 1, n, &one, 1);
                    if (one != out[r]) worst = 1;
                }
            }
        KT_CHECK(worst < 1e-5 && worst_scalar < 1e-5, "%s FP8 dot: error %.2g of sum|w x| against double, %.2g against scalar",
                 kiln_isa_name((kiln_isa)isa), worst, worst_scalar);
    }
    kiln_free(w);
    kiln_free(x);
}

/* the formula of format/tensor.h in double (activation rounding through util/fp8.h's own
 * rounding, computed in f32 as specified) */
static void ref_linear(const kiln_tensor *t, const float *x, int rows, double *y) {
    const kiln_quant *q = &t->quant;
    int out = (int)t->shape[0], in = (int)t->shape[1];
    int bi = q->kind == KILN_SCALE_BLOCK ? q->block_in : in, ng = (in + bi - 1) / bi;
    const uint8_t *w = t->data;
    for (int r = 0; r < rows; r++)
        for (int o = 0; o < out; o++) {
            double acc = 0;
            for (int g = 0; g < ng; g++) {
                const float *xr = x + (size_t)r * in + g * bi;
                int len = in - g * bi < bi ? in - g * bi : bi;
                float sa = 1.0f;
                if (q->act == KILN_ACT_STATIC) sa = q->input_scale[0];
                if (q->act == KILN_ACT_DYNAMIC) {
                    float amax = 0;
                    for (int k = 0; k < len; k++) amax = fabsf(xr[k]) > amax ? fabsf(xr[k]) : amax;
                    sa = kiln_fp8_act_scale(amax);
                }
                double part = 0;
                for (int k = 0; k < len; k++) {
                    double xa = q->act == KILN_ACT_NONE ? xr[k] : kiln_fp8_act_q(xr[k], sa);
                    part += xa * e4m3_def(w[(size_t)o * in + g * bi + k]);
                }
                double sw = q->kind == KILN_SCALE_TENSOR ? q->scale[0]
                            : q->kind == KILN_SCALE_CHANNEL ? q->scale[o]
                                                            : q->scale[(o / q->block_out) * ng + g];
                acc += part * sa * sw;
            }
            y[(size_t)r * out + o] = acc;
        }
}

static void test_matmul(void) {
    enum { OUT = 37, IN = 203, ROWS = 7 };
    unsigned long long s = 11;
    uint8_t *w = kiln_malloc(OUT * IN);
    float *x = kiln_malloc(ROWS * IN * sizeof(float)), *y = kiln_malloc(ROWS * OUT * sizeof(float));
    float *y1 = kiln_malloc(OUT * sizeof(float));
    double *yr = kiln_malloc(ROWS * OUT * sizeof(double));
    float scales[64 * 64], in_scale = 0.037f;
    rand_codes(w, OUT * IN, &s);
    /* rows of very different magnitudes (one near 0, one big) */
    for (int r = 0; r < ROWS; r++)
        for (int i = 0; i < IN; i++) x[r * IN + i] = kt_randf(&s) * (r == 2 ? 1e-3f : r == 5 ? 40.0f : 2.0f);
    for (int i = 0; i < 64 * 64; i++) scales[i] = powf(10.0f, -4.0f + 7.0f * (kt_randf(&s) * 0.5f + 0.5f));
    kiln_cpu_ctx ctx = {.isa = KILN_ISA_SCALAR, .pool = NULL};
    ctx.panel_floats = 8 * IN + 64;
    ctx.panel = kiln_malloc(ctx.panel_floats * sizeof(float));
    const kiln_scale_kind kinds[] = {KILN_SCALE_TENSOR, KILN_SCALE_CHANNEL, KILN_SCALE_BLOCK};
    const kiln_act_quant acts[] = {KILN_ACT_NONE, KILN_ACT_DYNAMIC, KILN_ACT_STATIC};
    for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
        if (!kiln_isa_supported((kiln_isa)isa)) continue;
        ctx.isa = (kiln_isa)isa;
        for (int ki = 0; ki < 3; ki++)
            for (int ai = 0; ai < 3; ai++) {
                if (kinds[ki] == KILN_SCALE_BLOCK && acts[ai] == KILN_ACT_STATIC) continue; /* refused at load */
                kiln_tensor t = {.name = "w", .dtype = KILN_DT_F8_E4M3, .ndim = 2, .shape = {OUT, IN}, .data = w,
                                 .nbytes = OUT * IN};
                t.quant = (kiln_quant){.kind = kinds[ki], .act = acts[ai], .scale = scales, .block_out = 16,
                                       .block_in = 48, .input_scale = acts[ai] == KILN_ACT_STATIC ? &in_scale : NULL};
                kiln_error err = {0};
                int rc = kiln_cpu_matmul(&ctx, y, x, ROWS, &t, &err);
                KT_CHECK(rc == 0, "matmul %s %s: %s", kiln_scale_kind_name(kinds[ki]), kiln_act_quant_name(acts[ai]), err.msg);
                ref_linear(&t, x, ROWS, yr);
                double worst = 0;
                int same = 1;
                for (int r = 0; r < ROWS; r++) {
                    double mag = 0;
                    for (int o = 0; o < OUT; o++) mag = fmax(mag, fabs(yr[r * OUT + o]));
                    for (int o = 0; o < OUT; o++) worst = fmax(worst, fabs(y[r * OUT + o] - yr[r * OUT + o]) / (mag + 1e-30));
                    kiln_cpu_matmul(&ctx, y1, x + (size_t)r * IN, 1, &t, &err);
                    same &= memcmp(y1, y + (size_t)r * OUT, OUT * sizeof(float)) == 0;
                }
                KT_CHECK(worst < 2e-4, "%s %s scales, %s activations: worst error %.2g of the row's largest output",
                         kiln_isa_name(ctx.isa), kiln_scale_kind_name(kinds[ki]), kiln_act_quant_name(acts[ai]), worst);
                KT_CHECK(same, "%s %s %s: a row alone is bit-identical to the row in the batch", kiln_isa_name(ctx.isa),
                         kiln_scale_kind_name(kinds[ki]), kiln_act_quant_name(acts[ai]));
            }
    }
    /* the check can fail: a scale divided instead of multiplied is far off */
    {
        kiln_tensor t = {.name = "w", .dtype = KILN_DT_F8_E4M3, .ndim = 2, .shape = {OUT, IN}, .data = w, .nbytes = OUT * IN};
        float inv = 1.0f / scales[0];
        t.quant = (kiln_quant){.kind = KILN_SCALE_TENSOR, .act = KILN_ACT_NONE, .scale = &inv};
        kiln_error err = {0};
        kiln_cpu_matmul(&ctx, y, x, ROWS, &t, &err);
        t.quant.scale = scales;
        ref_linear(&t, x, ROWS, yr);
        KT_CHECK(fabs(y[0] - yr[0]) > 1e-3 * fabs(yr[0]), "an inverted scale is detected");
        /* no scratch: refused, never run */
        kiln_cpu_ctx bare = {.isa = KILN_ISA_SCALAR};
        KT_CHECK(kiln_cpu_matmul(&bare, y, x, ROWS, &t, &err) == KILN_ERR_INVALID_ARG, "FP8 without scratch refused: %s", err.msg);
        t.quant.kind = KILN_SCALE_NONE;
        KT_CHECK(kiln_cpu_matmul(&ctx, y, x, ROWS, &t, &err) == KILN_ERR_UNSUPPORTED, "FP8 without scales refused: %s", err.msg);
    }
    kiln_free(ctx.panel);
    kiln_free(w);
    kiln_free(x);
    kiln_free(y);
    kiln_free(y1);
    kiln_free(yr);
}

/* Attention over an FP8 pool is attention over the f32 pool of its decoded values
 * (kiln_e4m3_to_f32(code) * scale): bit for bit, every ISA (the FP8 KV reference of the GPU's
 * attention kernels: decode, scale, then the f32 arithmetic). */
static void test_attention_kv8(void) {
    enum { H = 4, KV = 2, HD = 64, BS = 16, NBLK = 5, T = 3, CTX = 40, MAXLEN = 64 };
    kiln_kv_layout L8 = {.n_layers = 2, .n_kv_heads = KV, .head_dim = HD, .block_size = BS, .n_blocks = NBLK,
                         .dtype = KILN_KV_FP8_E4M3, .scale = KILN_KV_SCALE_TENSOR, .elem_bytes = 1};
    kiln_kv_layout L32 = L8;
    L32.dtype = KILN_KV_F32;
    L32.scale = KILN_KV_SCALE_NONE;
    L32.elem_bytes = 4;
    size_t n = (size_t)kiln_kv_elems(&L8);
    uint8_t *kv8 = kiln_malloc(n);
    float *kv32 = kiln_malloc(n * sizeof(float)), lut[2][256];
    const float ks = 0.37f, vs = 2.5f;
    unsigned long long s = 3;
    rand_codes(kv8, (int)n, &s);
    for (int c = 0; c < 256; c++) {
        lut[0][c] = kiln_e4m3_to_f32((uint8_t)c) * ks;
        lut[1][c] = kiln_e4m3_to_f32((uint8_t)c) * vs;
    }
    /* f32 pool of the decoded values: element offsets are the same in both layouts */
    for (int l = 0; l < 2; l++)
        for (int b = 0; b < NBLK; b++)
            for (int kv = 0; kv < 2; kv++)
                for (int h = 0; h < KV; h++)
                    for (int j = 0; j < BS * HD; j++) {
                        int64_t o = kiln_kv_offset(&L8, l, b, kv, h, 0) + j;
                        kv32[o] = lut[kv][kv8[o]];
                    }
    /* scores of magnitude ~ 1: q small against keys up to 448 * 0.37 */
    float q[T * H * HD], a8[T * H * HD], a32[T * H * HD], scores[H / KV * MAXLEN], kvbuf[BS * HD];
    for (int i = 0; i < T * H * HD; i++) q[i] = kt_randf(&s) * 0.002f;
    int32_t pos[T] = {CTX - 3, CTX - 2, CTX - 1}, qs[2] = {0, T}, bt[3] = {3, 1, 4};
    for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
        if (!kiln_isa_supported((kiln_isa)isa)) continue;
        kiln_cpu_ctx ctx = {.isa = (kiln_isa)isa};
        kiln_cpu_attn_args a = {.layout = &L8, .layer = 1, .n_tokens = T, .n_seqs = 1, .positions = pos,
                                .seq_q_start = qs, .block_table = bt, .max_blocks_per_seq = 3, .q = q, .att = a8,
                                .n_heads = H, .n_kv_heads = KV, .head_dim = HD, .scores = scores, .max_model_len = MAXLEN,
                                .kv8 = kv8, .kv8_lut = &lut[0][0], .kvbuf = kvbuf};
        kiln_cpu_attn_lookup(ctx.isa, &a.k);
        kiln_error err = {0};
        int rc = kiln_cpu_attention(&ctx, &a, &err);
        a.kv8 = NULL;
        a.kv = kv32;
        a.layout = &L32;
        a.att = a32;
        rc |= kiln_cpu_attention(&ctx, &a, &err);
        KT_CHECK(rc == 0 && memcmp(a8, a32, sizeof a8) == 0, "%s: attention over the FP8 pool == over its decoded f32 values: %s",
                 kiln_isa_name(ctx.isa), err.msg);
    }
    kiln_free(kv8);
    kiln_free(kv32);
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--encode")) return encode_mode(argv[2]);
    if (argc == 2 && !strcmp(argv[1], "--encode-nan")) {
        putchar(kiln_f32_to_e4m3(NAN));
        putchar(kiln_f32_to_e4m3(-NAN));
        return 0;
    }
    test_conversion();
    test_dot_kernels();
    test_matmul();
    test_attention_kv8();
    return kt_done();
}
