/* kiln-layer: backend (links only this layer and those below it) */
/* test_gguf.c: the GGUF reader on good and malformed files built here, and the quantized dot
 * kernels of every ISA this CPU has against dequantize-then-dot (double precision).
 * The dequantization itself is checked bit-exactly against the gguf Python package in
 * tests/py/test_gguf_dequant.py. */
#include <stdint.h>
#include "format/quant.h"
#include "backend/cpu/kernels.h"
#include "format/gguf.h"
#include "test.h"
#include "util/alloc.h"
#include "util/fp16.h"

/* ---- a tiny GGUF writer ------------------------------------------------------------------ */

typedef struct buf { unsigned char *p; size_t n, cap; } buf;
static void put(buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put_u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(buf *b, const char *s) { put_u64(b, strlen(s)); put(b, s, strlen(s)); }
static void pad_to(buf *b, size_t a) { while (b->n % a) put(b, "", 1); }

typedef struct variant {
    uint32_t magic, version;
    int bad_strlen;      /* architecture string length points past the end */
    int huge_array;      /* array count absurd */
    uint64_t t_offset;   /* offset of tensor b */
    uint32_t t_type;     /* ggml type of tensor b */
    int dup_name;        /* tensor b named like a */
    size_t truncate_at;  /* 0: no truncation */
} variant;

static const variant k_good = {0x46554747u, 3, 0, 0, 32, 0, 0, 0};

/* kv: general.architecture str, general.alignment u32, tokens [str], nested [[i32]], f32 eps;
 * tensors: a f32 [2][4] at 0, b f32 [8] at t_offset (32 by default). */
static buf make_file(const variant *v, size_t *meta_end) {
    buf b = {0};
    put_u32(&b, v->magic);
    put_u32(&b, v->version);
    put_u64(&b, 2);
    put_u64(&b, 5);
    put_str(&b, "general.architecture");
    put_u32(&b, KILN_GGUF_STRING);
    if (v->bad_strlen) { put_u64(&b, 1u << 30); put(&b, "llama", 5); }
    else put_str(&b, "llama");
    put_str(&b, "general.alignment");
    put_u32(&b, KILN_GGUF_UINT32);
    put_u32(&b, 32);
    put_str(&b, "tokenizer.ggml.tokens");
    put_u32(&b, KILN_GGUF_ARRAY);
    put_u32(&b, KILN_GGUF_STRING);
    put_u64(&b, v->huge_array ? ((uint64_t)1 << 60) : 3);
    put_str(&b, "<s>"); put_str(&b, "hello"); put_str(&b, "world");
    put_str(&b, "test.nested");
    put_u32(&b, KILN_GGUF_ARRAY);
    put_u32(&b, KILN_GGUF_ARRAY);
    put_u64(&b, 2);
    for (int k = 0; k < 2; k++) {
        put_u32(&b, KILN_GGUF_INT32);
        put_u64(&b, 3);
        for (int32_t j = 0; j < 3; j++) put(&b, &j, 4);
    }
    put_str(&b, "llama.attention.layer_norm_rms_epsilon");
    put_u32(&b, KILN_GGUF_FLOAT32);
    float eps = 1e-5f;
    put(&b, &eps, 4);
    if (meta_end) *meta_end = b.n;
    put_str(&b, "a");
    put_u32(&b, 2);
    put_u64(&b, 4); put_u64(&b, 2);
    put_u32(&b, 0);
    put_u64(&b, 0);
    put_str(&b, v->dup_name ? "a" : "b");
    put_u32(&b, 1);
    put_u64(&b, 8);
    put_u32(&b, v->t_type);
    put_u64(&b, v->t_offset);
    pad_to(&b, 32);
    for (int i = 0; i < 16; i++) { float f = (float)i; put(&b, &f, 4); }
    if (v->truncate_at) b.n = v->truncate_at;
    return b;
}

static const char *write_tmp(const char *dir, const char *name, buf *b) {
    static char path[8][512];
    static int k;
    char *p = path[k++ & 7];
    snprintf(p, 512, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    fwrite(b->p, 1, b->n, f);
    fclose(f);
    free(b->p);
    return p;
}

/* open a bad variant: expect code and a message with the path and `needle` */
static void expect_bad(const char *dir, const char *name, const variant *v, int code,
                       const char *needle) {
    buf b = make_file(v, NULL);
    const char *path = write_tmp(dir, name, &b);
    kiln_gguf *g = NULL;
    kiln_error err = {0};
    int rc = kiln_gguf_open(&g, path, &err);
    KT_CHECK(rc == code, "%s: rc %d (%s), want %d", name, rc, err.msg, code);
    KT_CHECK(g == NULL, "%s: handle returned on error", name);
    KT_CHECK(strstr(err.msg, path) != NULL, "%s: message lacks the path: %s", name, err.msg);
    int found = 0; /* needle: alternatives separated by '|' */
    char alts[256];
    snprintf(alts, sizeof alts, "%s", needle);
    for (char *sv = NULL, *a = strtok_r(alts, "|", &sv); a; a = strtok_r(NULL, "|", &sv))
        found |= strstr(err.msg, a) != NULL;
    KT_CHECK(found, "%s: message '%s' lacks '%s'", name, err.msg, needle);
    if (g) kiln_gguf_close(g);
}

static void test_reader(const char *dir) {
    buf b = make_file(&k_good, NULL);
    const char *path = write_tmp(dir, "good.gguf", &b);
    kiln_gguf *g = NULL;
    kiln_error err = {0};
    int rc = kiln_gguf_open(&g, path, &err);
    KT_CHECK(rc == 0, "good file: %s", err.msg);
    if (rc) return;
    KT_CHECK(kiln_gguf_version(g) == 3, "version");
    kiln_gguf_str s;
    KT_CHECK(kiln_gguf_get_str(g, "general.architecture", &s) == 0 && s.len == 5 &&
                 memcmp(s.ptr, "llama", 5) == 0, "architecture");
    uint64_t u;
    KT_CHECK(kiln_gguf_get_u64(g, "general.alignment", &u) == 0 && u == 32, "alignment");
    double eps;
    KT_CHECK(kiln_gguf_get_f64(g, "llama.attention.layer_norm_rms_epsilon", &eps) == 0 &&
                 fabs(eps - 1e-5) < 1e-12, "eps");
    kiln_gguf_type et;
    uint64_t n;
    KT_CHECK(kiln_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n) == 0 && et == KILN_GGUF_STRING &&
                 n == 3, "tokens array");
    KT_CHECK(kiln_gguf_arr_str(g, "tokenizer.ggml.tokens", 2, &s) == 0 && s.len == 5 &&
                 memcmp(s.ptr, "world", 5) == 0, "tokens[2]");
    KT_CHECK(kiln_gguf_arr_str(g, "tokenizer.ggml.tokens", 3, &s) != 0, "tokens[3] out of range");
    KT_CHECK(kiln_gguf_get_arr(g, "test.nested", &et, &n) == 0 && et == KILN_GGUF_ARRAY && n == 2,
             "nested array skipped and visible as an array of arrays");
    int64_t iv;
    KT_CHECK(kiln_gguf_arr_i64(g, "test.nested", 0, &iv) != 0, "nested elements not readable");
    KT_CHECK(kiln_gguf_get_u64(g, "no.such.key", &u) != 0, "absent key");
    KT_CHECK(kiln_gguf_n_tensors(g) == 2, "tensor count");
    const kiln_gguf_tensor_info *t = kiln_gguf_find_tensor(g, "b");
    KT_CHECK(t && t->dtype == KILN_DT_F32 && t->ne[0] == 8 && t->nbytes == 32, "tensor b");
    if (t) KT_CHECK(((const float *)t->data)[0] == 8.0f, "tensor b data");
    t = kiln_gguf_find_tensor(g, "a");
    KT_CHECK(t && t->n_dims == 2 && t->ne[0] == 4 && t->ne[1] == 2 && ((const float *)t->data)[5] == 5.0f,
             "tensor a");
    KT_CHECK(kiln_gguf_find_tensor(g, "c") == NULL, "absent tensor");
    kiln_gguf_close(g);

    /* an unknown ggml type opens (only a loader that uses the tensor refuses it) */
    variant v = k_good;
    v.t_type = 99;
    b = make_file(&v, NULL);
    path = write_tmp(dir, "unknown_type.gguf", &b);
    rc = kiln_gguf_open(&g, path, &err);
    KT_CHECK(rc == 0, "unknown type: %s", err.msg);
    if (!rc) {
        t = kiln_gguf_find_tensor(g, "b");
        KT_CHECK(t && t->dtype == KILN_DT_COUNT && t->ggml_type == 99, "unknown type kept raw");
        KT_CHECK(strcmp(kiln_gguf_ggml_type_name(99), "unknown") == 0, "type name");
        kiln_gguf_close(g);
    }

    v = k_good; v.magic = 0x46554746u;
    expect_bad(dir, "bad_magic.gguf", &v, KILN_ERR_FORMAT, "bad magic");
    v = k_good; v.version = 1;
    expect_bad(dir, "v1.gguf", &v, KILN_ERR_UNSUPPORTED, "version 1");
    v = k_good; v.version = 7;
    expect_bad(dir, "v7.gguf", &v, KILN_ERR_UNSUPPORTED, "version 7");
    size_t meta_end;
    b = make_file(&k_good, &meta_end);
    free(b.p);
    for (size_t cut = 3; cut < meta_end; cut += 7) { /* truncated anywhere in the metadata */
        v = k_good; v.truncate_at = cut;
        char name[64];
        snprintf(name, sizeof name, "trunc_%zu.gguf", cut);
        expect_bad(dir, name, &v, KILN_ERR_FORMAT, cut < 4 ? "bad magic" : "truncated|past the end|absurd");
    }
    v = k_good; v.bad_strlen = 1;
    expect_bad(dir, "strlen.gguf", &v, KILN_ERR_FORMAT, "past the end");
    v = k_good; v.huge_array = 1;
    expect_bad(dir, "huge_array.gguf", &v, KILN_ERR_FORMAT, "absurd array count");
    v = k_good; v.t_offset = 1u << 20;
    expect_bad(dir, "offset_oob.gguf", &v, KILN_ERR_FORMAT, "out of bounds");
    v = k_good; v.t_offset = 32; v.truncate_at = 0;
    b = make_file(&v, NULL);
    b.n -= 4; /* tensor b's last element missing */
    {
        const char *p2 = write_tmp(dir, "data_oob.gguf", &b);
        rc = kiln_gguf_open(&g, p2, &err);
        KT_CHECK(rc == KILN_ERR_FORMAT && strstr(err.msg, "data out of bounds") && strstr(err.msg, "'b'"),
                 "data out of bounds: %d %s", rc, err.msg);
    }
    v = k_good; v.t_offset = 16;
    expect_bad(dir, "misaligned.gguf", &v, KILN_ERR_FORMAT, "alignment");
    v = k_good; v.dup_name = 1;
    expect_bad(dir, "dup.gguf", &v, KILN_ERR_FORMAT, "duplicate tensor name 'a'");
    v = k_good; v.t_type = 2; /* q4_0 with 8 elements: not a whole block */
    expect_bad(dir, "partial_block.gguf", &v, KILN_ERR_FORMAT, "multiple of the q4_0 block");
    /* a missing file */
    rc = kiln_gguf_open(&g, "/nonexistent/x.gguf", &err);
    KT_CHECK(rc == KILN_ERR_IO && strstr(err.msg, "/nonexistent/x.gguf"), "missing file: %s", err.msg);
}

/* ---- quant kernels ------------------------------------------------------------------------ */

static int isa_on_cpu(kiln_isa isa) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (isa == KILN_ISA_AVX2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (isa == KILN_ISA_AVX512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#endif
#if defined(__aarch64__)
    if (isa == KILN_ISA_NEON) return 1; /* Advanced SIMD is architectural on aarch64 */
#endif
    return isa == KILN_ISA_SCALAR;
}
static const char *isa_str(kiln_isa i) {
    static const char *n[] = {"scalar", "avx2", "avx512", "neon"};
    return (unsigned)i < sizeof n / sizeof n[0] ? n[i] : "?";
}

/* random block contents: random bytes with sane f16 scales (|d| in [1e-3, 1e-1]) */
static void rand_row(kiln_dtype dt, unsigned char *row, int n, unsigned long long *s) {
    int bb = kiln_dtype_block_bytes(dt), be = kiln_dtype_block_elems(dt);
    for (int i = 0; i < n / be * bb; i++) row[i] = (unsigned char)kt_rand_u64(s);
    for (int k = 0; k < n / be; k++) {
        unsigned char *b = row + (size_t)k * bb;
        int off[2] = {0, -1};
        if (dt == KILN_DT_Q4_1 || dt == KILN_DT_Q5_1 || dt == KILN_DT_Q4_K || dt == KILN_DT_Q5_K) off[1] = 2;
        if (dt == KILN_DT_Q6_K) off[0] = 208;
        for (int j = 0; j < 2; j++) {
            if (off[j] < 0) continue;
            float f = (0.001f + 0.099f * (kt_randf(s) * 0.5f + 0.5f)) * (kt_randf(s) < 0 ? -1 : 1);
            uint16_t h = kiln_f32_to_f16(f);
            memcpy(b + off[j], &h, 2);
        }
    }
}

static void test_quant(void) {
    const kiln_dtype types[] = {KILN_DT_Q8_0, KILN_DT_Q4_0, KILN_DT_Q4_1, KILN_DT_Q5_0,
                                KILN_DT_Q5_1, KILN_DT_Q4_K, KILN_DT_Q5_K, KILN_DT_Q6_K};
    unsigned long long seed = 0x1234567ULL;
    enum { ROWS = 24, NMAX = 1792 };
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        kiln_dtype dt = types[ti];
        int be = kiln_dtype_block_elems(dt);
        /* odd block counts exercise the tails */
        int n = be == 32 ? 32 * 37 : 256 * 7;
        size_t rb = kiln_dtype_row_bytes(dt, n);
        unsigned char *w = malloc(rb * ROWS);
        float *deq = malloc(sizeof(float) * n), *x = malloc(sizeof(float) * 4 * NMAX);
        double ref[ROWS][4];
        float got[KILN_ISA_COUNT][ROWS][4];
        for (int r = 0; r < ROWS; r++) rand_row(dt, w + r * rb, n, &seed);
        for (int i = 0; i < 4 * NMAX; i++) x[i] = kt_randf(&seed);
        for (int r = 0; r < ROWS; r++) {
            KT_CHECK(kiln_dequant_row(dt, w + r * rb, n, deq) == 0, "dequant %s", kiln_dtype_name(dt));
            for (int a = 0; a < 4; a++) {
                double s = 0;
                for (int i = 0; i < n; i++) s += (double)deq[i] * x[a * NMAX + i];
                ref[r][a] = s;
            }
        }
        KT_CHECK(kiln_dequant_row(dt, w, n + 1, deq) == -1, "dequant of a partial block refused");
        for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
            if (!isa_on_cpu((kiln_isa)isa)) {
                fprintf(stderr, "note: %s not on this CPU, its %s kernel is not run\n",
                        isa_str((kiln_isa)isa), kiln_dtype_name(dt));
                continue;
            }
            kiln_dot_fn f = kiln_cpu_dot_lookup_quant(dt, (kiln_isa)isa);
            KT_CHECK(f != NULL, "no %s kernel for %s", isa_str((kiln_isa)isa), kiln_dtype_name(dt));
            if (!f) continue;
            double num = 0, den = 0;
            int bad_nr = 0;
            for (int r = 0; r < ROWS; r++) {
                float o4[4 * 3];
                f(w + r * rb, x, NMAX, 4, n, o4, 3); /* all 4 activation rows, strided output */
                for (int a = 0; a < 4; a++) {
                    got[isa][r][a] = o4[a * 3];
                    double d = (double)o4[a * 3] - ref[r][a];
                    num += d * d;
                    den += ref[r][a] * ref[r][a];
                }
                for (int nr = 1; nr <= 3; nr++) { /* same bits whatever nr */
                    float o[4];
                    f(w + r * rb, x, NMAX, nr, n, o, 1);
                    for (int a = 0; a < nr; a++) bad_nr += memcmp(&o[a], &o4[a * 3], 4) != 0;
                }
            }
            double rel = sqrt(num / den);
            KT_CHECK(rel <= 1e-5, "%s %s: rel err %.3g vs dequantize-then-dot", kiln_dtype_name(dt),
                     isa_str((kiln_isa)isa), rel);
            KT_CHECK(bad_nr == 0, "%s %s: %d results depend on nr", kiln_dtype_name(dt),
                     isa_str((kiln_isa)isa), bad_nr);
            if (isa > 0) { /* agreement with the scalar path */
                double n2 = 0, d2 = 0;
                for (int r = 0; r < ROWS; r++)
                    for (int a = 0; a < 4; a++) {
                        double d = (double)got[isa][r][a] - got[0][r][a];
                        n2 += d * d;
                        d2 += (double)got[0][r][a] * got[0][r][a];
                    }
                KT_CHECK(sqrt(n2 / d2) <= 1e-5, "%s %s vs scalar: rel %.3g", kiln_dtype_name(dt),
                         isa_str((kiln_isa)isa), sqrt(n2 / d2));
            }
            printf("%-5s %-7s rel err %.2e\n", kiln_dtype_name(dt), isa_str((kiln_isa)isa), rel);
        }
        free(w);
        free(deq);
        free(x);
    }
    KT_CHECK(kiln_cpu_dot_lookup_quant(KILN_DT_F32, KILN_ISA_SCALAR) == NULL, "f32 is not a quant");
}

int main(void) {
    char dir[] = "/tmp/kiln_test_gguf_XXXXXX";
    if (!mkdtemp(dir)) KT_SKIP("cannot create a temp dir");
    test_reader(dir);
    test_quant();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
    return kt_done();
}
