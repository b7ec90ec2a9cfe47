/* kiln-layer: format (links only this layer and those below it) */
/* test_quantize.c: kiln_quantize_row for every GGUF type kiln writes, through kiln's own
 * dequantization: relative RMSE of the round trip on Gaussian rows and on heavy-tailed rows
 * (Laplace with a few large outliers, like real weight rows), each under a per-type bound, and
 * the order of the K-quants (Q6_K < Q5_K < Q4_K) and of the 32-element types; re-quantizing a
 * dequantized Q8_0 / Q4_0 row gives the same values back (a fixed point of GGML's rounding);
 * zero rows, partial blocks, the float types and the GGUF writer (every metadata value type,
 * tensors read back by gguf.c). gguf-py's quantizers are compared bit for bit in
 * tests/py/test_quantize.py.
 */
#include <stdint.h>
#include "format/gguf.h"
#include "format/gguf_write.h"
#include "format/quant.h"
#include "format/quantize.h"
#include "test.h"
#include "util/fp16.h"

static uint64_t rs = 0x9e3779b97f4a7c15ULL;
static double urand(void) {
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return ((double)(rs >> 11) + 0.5) / 9007199254740992.0;
}
static float gauss(void) { return (float)(sqrt(-2 * log(urand())) * cos(6.283185307179586 * urand())); }

static double rel_rmse(kiln_dtype dt, const float *x, int64_t n) {
    size_t rb = kiln_dtype_row_bytes(dt, n);
    uint8_t *q = malloc(rb);
    float *y = malloc(sizeof(float) * (size_t)n);
    KT_CHECK(kiln_quantize_row(dt, x, n, q) == 0, "quantize %s", kiln_dtype_name(dt));
    kiln_row_to_f32(dt, q, n, y);
    double e = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        e += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
        s += (double)x[i] * x[i];
    }
    free(q);
    free(y);
    return sqrt(e / s);
}

static void test_rmse(void) {
    enum { N = 256 * 64 };
    float *g = malloc(sizeof(float) * N), *h = malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++) {
        g[i] = 0.02f * gauss();
        double u = urand() - 0.5; /* Laplace, scale 0.01 */
        h[i] = (float)(-0.01 * (u < 0 ? -1 : 1) * log(1 - 2 * fabs(u)));
        if (urand() < 0.002) h[i] *= 12; /* outliers */
    }
    struct { kiln_dtype dt; double bound_g, bound_h; } c[] = {
        {KILN_DT_F16, 1e-3, 1e-3},   {KILN_DT_BF16, 4e-3, 4e-3},  {KILN_DT_Q8_0, 0.007, 0.011},
        {KILN_DT_Q6_K, 0.025, 0.03}, {KILN_DT_Q5_K, 0.045, 0.055}, {KILN_DT_Q5_1, 0.05, 0.07},
        {KILN_DT_Q5_0, 0.06, 0.08},  {KILN_DT_Q4_K, 0.09, 0.11},  {KILN_DT_Q4_1, 0.10, 0.14},
        {KILN_DT_Q4_0, 0.12, 0.16},
    };
    double r[KILN_DT_COUNT][2];
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        r[c[i].dt][0] = rel_rmse(c[i].dt, g, N);
        r[c[i].dt][1] = rel_rmse(c[i].dt, h, N);
        printf("%-5s relative rmse: gaussian %.4f (bound %.3f), heavy-tailed %.4f (bound %.3f)\n",
               kiln_dtype_name(c[i].dt), r[c[i].dt][0], c[i].bound_g, r[c[i].dt][1], c[i].bound_h);
        KT_CHECK(r[c[i].dt][0] < c[i].bound_g && r[c[i].dt][1] < c[i].bound_h, "%s: %.4f %.4f",
                 kiln_dtype_name(c[i].dt), r[c[i].dt][0], r[c[i].dt][1]);
    }
    for (int k = 0; k < 2; k++) {
        KT_CHECK(r[KILN_DT_Q8_0][k] < r[KILN_DT_Q6_K][k] && r[KILN_DT_Q6_K][k] < r[KILN_DT_Q5_K][k] &&
                     r[KILN_DT_Q5_K][k] < r[KILN_DT_Q4_K][k],
                 "order q8_0 < q6_k < q5_k < q4_k (%d)", k);
        /* the K-quants' search beats the plain 32-element types of the same bits */
        KT_CHECK(r[KILN_DT_Q4_K][k] < r[KILN_DT_Q4_1][k] && r[KILN_DT_Q5_K][k] < r[KILN_DT_Q5_1][k],
                 "q4_k < q4_1, q5_k < q5_1 (%d)", k);
        KT_CHECK(r[KILN_DT_Q5_1][k] < r[KILN_DT_Q4_1][k] && r[KILN_DT_Q5_0][k] < r[KILN_DT_Q4_0][k], "5 < 4 bits");
    }
    free(g);
    free(h);
}

static void test_edges(void) {
    const kiln_dtype types[] = {KILN_DT_Q8_0, KILN_DT_Q4_0, KILN_DT_Q4_1, KILN_DT_Q5_0,
                                KILN_DT_Q5_1, KILN_DT_Q4_K, KILN_DT_Q5_K, KILN_DT_Q6_K};
    float z[512] = {0}, y[512], x[512];
    uint8_t q[1024], q2[1024];
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        kiln_dtype dt = types[i];
        int be = kiln_dtype_block_elems(dt);
        KT_CHECK(kiln_quantize_row(dt, z, 256, q) == 0 && kiln_dequant_row(dt, q, 256, y) == 0, "zeros %s",
                 kiln_dtype_name(dt));
        int nz = 0;
        for (int k = 0; k < 256; k++) nz += y[k] != 0;
        KT_CHECK(nz == 0, "%s: zero row gives %d non-zeros", kiln_dtype_name(dt), nz);
        KT_CHECK(kiln_quantize_row(dt, z, be + 1, q) == -1, "%s: partial block refused", kiln_dtype_name(dt));
        /* constant and one-hot blocks stay finite and close */
        for (int k = 0; k < 512; k++) x[k] = k % 97 == 0 ? 1.0f : 0.25f;
        kiln_quantize_row(dt, x, 512, q);
        kiln_dequant_row(dt, q, 512, y);
        double worst = 0;
        for (int k = 0; k < 512; k++) worst = fmax(worst, fabs((double)y[k] - x[k]));
        KT_CHECK(worst < 0.1, "%s: worst error %.3g on a two-valued row", kiln_dtype_name(dt), worst);
    }
    /* Q8_0 / Q4_0 / Q5_0: the dequantized row is a fixed point */
    const kiln_dtype fp[] = {KILN_DT_Q8_0, KILN_DT_Q4_0, KILN_DT_Q5_0};
    for (size_t i = 0; i < 3; i++) {
        for (int k = 0; k < 512; k++) x[k] = gauss();
        kiln_quantize_row(fp[i], x, 512, q);
        kiln_dequant_row(fp[i], q, 512, y);
        kiln_quantize_row(fp[i], y, 512, q2);
        KT_CHECK(!memcmp(q, q2, kiln_dtype_row_bytes(fp[i], 512)), "%s: requantizing changes the blocks",
                 kiln_dtype_name(fp[i]));
    }
    KT_CHECK(kiln_quantize_row(KILN_DT_I32, x, 32, q) == -1, "i32 refused");
}

static int fill_seq(void *ctx, int i, void *dst, size_t nbytes, kiln_error *err) {
    (void)ctx;
    (void)err;
    for (size_t k = 0; k < nbytes; k++) ((uint8_t *)dst)[k] = (uint8_t)(k * 7 + (size_t)i);
    return KILN_OK;
}

static void test_writer(void) {
    char path[] = "/tmp/kiln_test_quantize_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return;
    close(fd);
    kiln_gguf_writer *w = kiln_gguf_writer_new();
    int32_t ia[3] = {-1, 2, 3};
    float fa[2] = {0.5f, -2};
    const char *sa[3] = {"a", "", "hello"};
    int rc = kiln_gguf_set_u8(w, "t.u8", 200) | kiln_gguf_set_i8(w, "t.i8", -100) | kiln_gguf_set_u16(w, "t.u16", 60000) |
             kiln_gguf_set_i16(w, "t.i16", -30000) | kiln_gguf_set_u32(w, "t.u32", 4000000000u) |
             kiln_gguf_set_i32(w, "t.i32", -2000000000) | kiln_gguf_set_u64(w, "t.u64", 1ULL << 50) |
             kiln_gguf_set_i64(w, "t.i64", -(1LL << 50)) | kiln_gguf_set_f32(w, "t.f32", 1.5f) |
             kiln_gguf_set_f64(w, "t.f64", 0.1) | kiln_gguf_set_bool(w, "t.bool", 1) | kiln_gguf_set_str(w, "t.str", "kiln") |
             kiln_gguf_set_arr(w, "t.ai32", KILN_GGUF_INT32, ia, 3) | kiln_gguf_set_arr(w, "t.af32", KILN_GGUF_FLOAT32, fa, 2) |
             kiln_gguf_set_arr_str(w, "t.astr", sa, NULL, 3) | kiln_gguf_set_u32(w, "t.u32", 7); /* replaces */
    KT_CHECK(rc == 0, "setters");
    int64_t s1[2] = {3, 64}, s2[1] = {5}, s3[2] = {2, 256};
    KT_CHECK(kiln_gguf_add_tensor(w, "a", KILN_DT_Q4_0, 2, s1) == 0 && kiln_gguf_add_tensor(w, "b", KILN_DT_F32, 1, s2) == 1 &&
                 kiln_gguf_add_tensor(w, "c", KILN_DT_Q6_K, 2, s3) == 2,
             "tensors");
    KT_CHECK(kiln_gguf_add_tensor(w, "a", KILN_DT_F32, 1, s2) == -1, "duplicate refused");
    KT_CHECK(kiln_gguf_add_tensor(w, "d", KILN_DT_Q4_K, 2, s1) == -1, "64 columns of q4_k refused");
    kiln_error err = {0};
    KT_CHECK(kiln_gguf_write(w, path, fill_seq, NULL, &err) == KILN_OK, "write: %s", err.msg);
    kiln_gguf_writer_free(w);
    kiln_gguf *g = NULL;
    KT_CHECK(kiln_gguf_open(&g, path, &err) == KILN_OK, "read back: %s", err.msg);
    if (g) {
        uint64_t u;
        int64_t i;
        double f;
        int b;
        kiln_gguf_str s;
        KT_CHECK(kiln_gguf_version(g) == 3 && kiln_gguf_n_kv(g) == 15, "version / kv count %llu",
                 (unsigned long long)kiln_gguf_n_kv(g));
        KT_CHECK(!kiln_gguf_get_u64(g, "t.u8", &u) && u == 200 && !kiln_gguf_get_i64(g, "t.i8", &i) && i == -100, "8");
        KT_CHECK(!kiln_gguf_get_u64(g, "t.u16", &u) && u == 60000 && !kiln_gguf_get_i64(g, "t.i16", &i) && i == -30000, "16");
        KT_CHECK(!kiln_gguf_get_u64(g, "t.u32", &u) && u == 7 && !kiln_gguf_get_i64(g, "t.i32", &i) && i == -2000000000, "32");
        KT_CHECK(!kiln_gguf_get_u64(g, "t.u64", &u) && u == 1ULL << 50 && !kiln_gguf_get_i64(g, "t.i64", &i) &&
                     i == -(1LL << 50), "64");
        KT_CHECK(!kiln_gguf_get_f64(g, "t.f32", &f) && f == 1.5 && !kiln_gguf_get_f64(g, "t.f64", &f) && f == 0.1, "floats");
        KT_CHECK(!kiln_gguf_get_bool(g, "t.bool", &b) && b == 1, "bool");
        KT_CHECK(!kiln_gguf_get_str(g, "t.str", &s) && s.len == 4 && !memcmp(s.ptr, "kiln", 4), "str");
        KT_CHECK(!kiln_gguf_arr_i64(g, "t.ai32", 0, &i) && i == -1 && !kiln_gguf_arr_f64(g, "t.af32", 1, &f) && f == -2,
                 "arrays");
        KT_CHECK(!kiln_gguf_arr_str(g, "t.astr", 2, &s) && s.len == 5 && !kiln_gguf_arr_str(g, "t.astr", 1, &s) && s.len == 0,
                 "string array");
        const kiln_gguf_tensor_info *t = kiln_gguf_find_tensor(g, "c");
        KT_CHECK(t && t->dtype == KILN_DT_Q6_K && t->ne[0] == 256 && t->ne[1] == 2 && t->nbytes == 420 &&
                     ((const uint8_t *)t->data)[5] == (uint8_t)(5 * 7 + 2) && ((uintptr_t)t->data % 32) == 0,
                 "tensor c");
        /* raw copy round trip */
        kiln_gguf_writer *w2 = kiln_gguf_writer_new();
        for (uint64_t k = 0; k < kiln_gguf_n_kv(g); k++) {
            uint64_t len;
            const void *raw = kiln_gguf_kv_raw(g, (int64_t)k, &len);
            kiln_gguf_str key = kiln_gguf_kv_key(g, (int64_t)k);
            kiln_gguf_set_raw(w2, key.ptr, key.len, kiln_gguf_kv_type(g, (int64_t)k), raw, len);
        }
        char p2[1100];
        snprintf(p2, sizeof p2, "%s.2", path);
        KT_CHECK(kiln_gguf_write(w2, p2, fill_seq, NULL, &err) == KILN_OK, "%s", err.msg);
        kiln_gguf_writer_free(w2);
        kiln_gguf *g2 = NULL;
        KT_CHECK(kiln_gguf_open(&g2, p2, &err) == KILN_OK && kiln_gguf_n_kv(g2) == 15 &&
                     !kiln_gguf_arr_str(g2, "t.astr", 0, &s) && s.len == 1 && s.ptr[0] == 'a',
                 "raw copy: %s", err.msg);
        kiln_gguf_close(g2);
        remove(p2);
        kiln_gguf_close(g);
    }
    remove(path);
}

int main(void) {
    test_rmse();
    test_edges();
    test_writer();
    return kt_done();
}
