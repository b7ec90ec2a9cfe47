/* kiln-layer: backend (links only this layer and those below it) */
/* test_cpu_ops.c: the CPU backend's numerical ops against float64 / long double references.
 *
 * For every ISA this CPU supports and every dense weight dtype (f32, f16, bf16):
 *   - matmul vs a float64 reference on the exactly-converted weights (rel L2 < 1e-5 per row),
 *   - each ISA vs scalar (rel L2 < 1e-5),
 *   - bit-identical rows whether computed in batches of 1, 2, 3, 4, 7 or 30 rows (row tiles),
 *     with 1, 2 or 3 threads, and through the dot kernel directly with odd strides;
 * RoPE (both styles, theta 1e4 and 1e9, positions up to 131072) vs long double, plus a check
 * that a float32-angle RoPE *fails* the same tolerance (the test can fail); RMSNorm, SwiGLU
 * and softmax vs double; cpu.isa (KILN_CPU_ISA) parsing; error paths; no allocation in matmul.
 * Outputs are poisoned with NaN before every run, so an unwritten element fails. */
#include <errno.h>
#include <stdint.h>
#include "format/quant.h"
#include "test.h"
#include "backend/cpu/kernels.h"
#include "util/alloc.h"
#include "util/fp16.h"

#define TOL 1e-5

static void poison(float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = NAN;
}

static int all_finite(const float *y, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(y[i])) return 0;
    return 1;
}

/* A random weight [n_out][n_in] of dtype dt and its exact f64 value. */
typedef struct {
    kiln_tensor t;
    void *data;
    double *ref; /* [n_out][n_in] */
} weight;

static void weight_make(weight *w, kiln_dtype dt, int n_out, int n_in, unsigned long long *seed) {
    memset(w, 0, sizeof *w);
    size_t esz = dt == KILN_DT_F32 ? 4 : 2, cnt = (size_t)n_out * n_in;
    w->data = malloc(cnt * esz);
    w->ref = malloc(cnt * sizeof(double));
    for (size_t i = 0; i < cnt; i++) {
        float v = kt_randf(seed);
        if (dt == KILN_DT_F32) {
            ((float *)w->data)[i] = v;
            w->ref[i] = v;
        } else if (dt == KILN_DT_F16) {
            uint16_t h = kiln_f32_to_f16(v);
            ((uint16_t *)w->data)[i] = h;
            w->ref[i] = kiln_f16_to_f32(h);
        } else {
            uint16_t h = kiln_f32_to_bf16(v);
            ((uint16_t *)w->data)[i] = h;
            w->ref[i] = kiln_bf16_to_f32(h);
        }
    }
    snprintf(w->t.name, sizeof w->t.name, "w_%s_%dx%d", kiln_dtype_name(dt), n_out, n_in);
    w->t.dtype = dt;
    w->t.ndim = 2;
    w->t.shape[0] = n_out;
    w->t.shape[1] = n_in;
    w->t.data = w->data;
    w->t.nbytes = cnt * esz;
}

static void weight_free(weight *w) {
    free(w->data);
    free(w->ref);
}

static const kiln_dtype k_dtypes[] = {KILN_DT_F32, KILN_DT_F16, KILN_DT_BF16};
static const struct { int rows, out, in; } k_shapes[] = {
    {1, 48, 48}, {3, 100, 100}, {7, 33, 5123}, {5, 257, 1000}, {2, 1, 17},
    {1, 5, 1},   {4, 64, 64},   {30, 21, 5120}, {9, 130, 96},  {2, 16, 4096},
};

static void test_matmul(kiln_pool *pools[3]) {
    unsigned long long seed = 0x1234567ULL;
    for (size_t si = 0; si < sizeof k_shapes / sizeof k_shapes[0]; si++) {
        int R = k_shapes[si].rows, O = k_shapes[si].out, N = k_shapes[si].in;
        float *x = malloc(sizeof(float) * R * N);
        for (int i = 0; i < R * N; i++) x[i] = kt_randf(&seed);
        float *y = malloc(sizeof(float) * R * O), *yref = malloc(sizeof(float) * R * O);
        float *yscalar = malloc(sizeof(float) * R * O), *y1 = malloc(sizeof(float) * R * O);
        for (size_t di = 0; di < 3; di++) {
            kiln_dtype dt = k_dtypes[di];
            weight w;
            weight_make(&w, dt, O, N, &seed);
            for (int r = 0; r < R; r++)
                for (int o = 0; o < O; o++) {
                    double s = 0;
                    for (int i = 0; i < N; i++) s += w.ref[(size_t)o * N + i] * (double)x[(size_t)r * N + i];
                    yref[(size_t)r * O + o] = (float)s;
                }
            for (int isa = 0; isa < KILN_ISA_COUNT; isa++) {
                if (!kiln_isa_supported((kiln_isa)isa)) continue;
                const char *iname = kiln_isa_name((kiln_isa)isa);
                kiln_error err = {0};
                /* reference run: one thread, all rows at once */
                kiln_cpu_ctx c1 = {.isa = (kiln_isa)isa, .pool = pools[0]};
                poison(y1, (size_t)R * O);
                int rc = kiln_cpu_matmul(&c1, y1, x, R, &w.t, &err);
                KT_CHECK(rc == 0, "%s %s: matmul failed: %s", iname, w.t.name, err.msg);
                KT_CHECK(all_finite(y1, (size_t)R * O), "%s %s: unwritten outputs", iname, w.t.name);
                for (int r = 0; r < R; r++) {
                    double e = kt_rel_l2(y1 + (size_t)r * O, yref + (size_t)r * O, (size_t)O);
                    KT_CHECK(e < TOL, "%s %s rows %d row %d: rel err %.3g vs float64", iname, w.t.name, R, r, e);
                }
                if (isa == KILN_ISA_SCALAR) {
                    memcpy(yscalar, y1, sizeof(float) * R * O);
                } else {
                    double e = kt_rel_l2(y1, yscalar, (size_t)R * O);
                    KT_CHECK(e < TOL, "%s %s: rel err %.3g vs scalar", iname, w.t.name, e);
                }
                /* bit-identical whatever the batch split and the thread count */
                static const int splits[] = {1, 2, 3, 4, 7, 30};
                for (int pi = 0; pi < 3; pi++) {
                    kiln_cpu_ctx c = {.isa = (kiln_isa)isa, .pool = pools[pi]};
                    for (size_t k = 0; k < sizeof splits / sizeof splits[0]; k++) {
                        int b = splits[k];
                        if (b > R && b != 1) continue;
                        poison(y, (size_t)R * O);
                        for (int r0 = 0; r0 < R; r0 += b) {
                            int nr = R - r0 < b ? R - r0 : b;
                            rc = kiln_cpu_matmul(&c, y + (size_t)r0 * O, x + (size_t)r0 * N, nr, &w.t, &err);
                            KT_CHECK(rc == 0, "matmul failed: %s", err.msg);
                        }
                        KT_CHECK(memcmp(y, y1, sizeof(float) * R * O) == 0,
                                 "%s %s: batches of %d rows with %d threads differ from 1 thread all rows",
                                 iname, w.t.name, b, kiln_pool_size(pools[pi]));
                    }
                }
                /* the kernel itself: nr 1..4 with odd strides vs nr = 1 */
                kiln_dot_fn fn = kiln_cpu_dot_lookup(dt, (kiln_isa)isa);
                KT_CHECK(fn != NULL, "%s: no kernel for %s", iname, kiln_dtype_name(dt));
                if (fn) {
                    int nrmax = R < 4 ? R : 4;
                    size_t ldx = (size_t)N + 3, ldo = 5;
                    float *xs = malloc(sizeof(float) * ldx * 4), out[20], one;
                    for (int r = 0; r < nrmax; r++) memcpy(xs + r * ldx, x + (size_t)r * N, sizeof(float) * N);
                    for (int nr = 1; nr <= nrmax; nr++) {
                        poison(out, 20);
                        fn(w.data, xs, ldx, nr, N, out, ldo);
                        for (int r = 0; r < nr; r++) {
                            fn(w.data, xs + r * ldx, ldx, 1, N, &one, 1);
                            KT_CHECK(memcmp(&out[r * ldo], &one, 4) == 0 && memcmp(&one, &y1[(size_t)r * O], 4) == 0,
                                     "%s %s: dot nr=%d row %d: %.9g vs %.9g", iname, w.t.name, nr, r,
                                     out[r * ldo], one);
                        }
                    }
                    free(xs);
                }
            }
            weight_free(&w);
        }
        free(x); free(y); free(yref); free(yscalar); free(y1);
    }
}

static void test_matmul_errors(kiln_pool *pool) {
    unsigned long long seed = 99;
    weight w;
    weight_make(&w, KILN_DT_BF16, 64, 256, &seed);
    float x[2 * 256], y[2 * 64];
    for (int i = 0; i < 2 * 256; i++) x[i] = kt_randf(&seed);
    kiln_cpu_ctx c = {.isa = kiln_isa_best(), .pool = pool};
    kiln_error err = {0};
    /* no allocation in the hot path */
    uint64_t a0 = kiln_alloc_count();
    for (int k = 0; k < 10; k++) kiln_cpu_matmul(&c, y, x, 2, &w.t, &err);
    KT_CHECK(kiln_alloc_count() == a0, "matmul allocated %llu times", (unsigned long long)(kiln_alloc_count() - a0));

    kiln_tensor t = w.t;
    t.dtype = KILN_DT_I32;
    t.nbytes = 64 * 256 * 4;
    int rc = kiln_cpu_matmul(&c, y, x, 2, &t, &err);
    KT_CHECK(rc == KILN_ERR_UNSUPPORTED, "i32 weight: rc %d", rc);
    KT_CHECK(strstr(err.msg, "i32") != NULL, "message names the dtype: %s", err.msg);
    t = w.t;
    t.ndim = 1;
    rc = kiln_cpu_matmul(&c, y, x, 2, &t, &err);
    KT_CHECK(rc == KILN_ERR_INVALID_ARG, "1-D weight: rc %d", rc);
    t = w.t;
    t.nbytes -= 2;
    rc = kiln_cpu_matmul(&c, y, x, 2, &t, &err);
    KT_CHECK(rc == KILN_ERR_INVALID_ARG, "short data: rc %d (%s)", rc, err.msg);
    t = w.t;
    t.dtype = KILN_DT_Q8_0; /* 256 columns = 8 blocks: fine; 250 would not be */
    t.shape[1] = 250;
    rc = kiln_cpu_matmul(&c, y, x, 2, &t, &err);
    KT_CHECK(rc == KILN_ERR_INVALID_ARG, "q8_0 with 250 columns: rc %d", rc);
    rc = kiln_cpu_matmul(&c, y, x, -1, &w.t, &err);
    KT_CHECK(rc == KILN_ERR_INVALID_ARG, "negative rows: rc %d", rc);
    rc = kiln_cpu_matmul(&c, y, x, 0, &w.t, &err);
    KT_CHECK(rc == 0, "zero rows is a no-op: rc %d", rc);
    KT_CHECK(kiln_cpu_dot_lookup(KILN_DT_I32, KILN_ISA_SCALAR) == NULL, "no i32 kernel");
    KT_CHECK(kiln_cpu_dot_lookup(KILN_DT_F32, KILN_ISA_COUNT) == NULL, "bad isa: NULL");
    weight_free(&w);
}

static void test_row_to_f32(void) {
    /* every f16 bit pattern vs the exact converter; IEEE values by hand */
    uint16_t *h = malloc(65536 * 2);
    float *f = malloc(65536 * 4);
    for (int i = 0; i < 65536; i++) h[i] = (uint16_t)i;
    KT_CHECK(kiln_row_to_f32(KILN_DT_F16, h, 65536, f) == 0, "f16 row");
    int bad = 0;
    for (int i = 0; i < 65536; i++) {
        float e = kiln_f16_to_f32((uint16_t)i);
        if (memcmp(&e, &f[i], 4) != 0) bad++;
    }
    KT_CHECK(bad == 0, "%d f16 patterns convert differently", bad);
    KT_CHECK(f[0x3c00] == 1.0f && f[0x0001] == 0x1p-24f && f[0x7bff] == 65504.0f && f[0xc000] == -2.0f &&
                 f[0x03ff] == 1023 * 0x1p-24f && isinf(f[0x7c00]) && isnan(f[0x7e00]) && signbit(f[0x8000]),
             "f16 known values");
    KT_CHECK(kiln_row_to_f32(KILN_DT_BF16, h, 65536, f) == 0, "bf16 row");
    KT_CHECK(f[0x3f80] == 1.0f && f[0xc040] == -3.0f && f[0x0001] == 0x1p-133f, "bf16 known values");
    float src[5] = {1, -2, 3.5f, 0, 1e-30f}, dst[5];
    KT_CHECK(kiln_row_to_f32(KILN_DT_F32, src, 5, dst) == 0 && memcmp(src, dst, sizeof src) == 0, "f32 row");
    KT_CHECK(kiln_row_to_f32(KILN_DT_I32, src, 5, dst) == KILN_ERR_UNSUPPORTED, "i32 row unsupported");
    free(h);
    free(f);
}

/* ---- RoPE ---- */

static void rope_ref(long double *v, int hd, long double pos, long double theta, kiln_rope_style st) {
    int half = hd / 2;
    for (int i = 0; i < half; i++) {
        long double a = pos * powl(theta, -2.0L * i / hd);
        long double c = cosl(a), s = sinl(a);
        int i0 = st == KILN_ROPE_HALF ? i : 2 * i, i1 = st == KILN_ROPE_HALF ? i + half : 2 * i + 1;
        long double x0 = v[i0], x1 = v[i1];
        v[i0] = x0 * c - x1 * s;
        v[i1] = x1 * c + x0 * s;
    }
}

/* What a float32-angle implementation (HF's arithmetic) gives: used to show the test bites. */
static void rope_f32(float *v, int hd, int pos, float theta, kiln_rope_style st) {
    int half = hd / 2;
    for (int i = 0; i < half; i++) {
        float inv = 1.0f / powf(theta, (float)(2 * i) / (float)hd);
        float a = (float)pos * inv, c = cosf(a), s = sinf(a);
        int i0 = st == KILN_ROPE_HALF ? i : 2 * i, i1 = st == KILN_ROPE_HALF ? i + half : 2 * i + 1;
        float x0 = v[i0], x1 = v[i1];
        v[i0] = x0 * c - x1 * s;
        v[i1] = x1 * c + x0 * s;
    }
}

static double rel_l2_ld(const float *a, const long double *b, int n) {
    long double num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        if (isnan(a[i])) return INFINITY;
        long double d = a[i] - b[i];
        num += d * d;
        den += b[i] * b[i];
    }
    return (double)sqrtl(num / den);
}

static void test_rope(void) {
    static const int32_t positions[] = {0, 1, 7, 1000, 4097, 65535, 131071, 131072};
    const int R = (int)(sizeof positions / sizeof positions[0]);
    static const int hds[] = {128, 64, 96, 160};
    static const double thetas[] = {1e4, 1e9};
    unsigned long long seed = 4242;
    double worst = 0, worst_f32 = 0;
    for (int hi = 0; hi < 4; hi++)
        for (int ti = 0; ti < 2; ti++)
            for (int st = 0; st < 2; st++) {
                int hd = hds[hi], H = 3;
                size_t cnt = (size_t)R * H * hd;
                float *x = malloc(cnt * 4), *x0 = malloc(cnt * 4), *xf = malloc(hd * 4);
                long double *ref = malloc(hd * sizeof(long double));
                for (size_t i = 0; i < cnt; i++) x0[i] = x[i] = kt_randf(&seed);
                kiln_cpu_rope(x, positions, R, H, hd, thetas[ti], (kiln_rope_style)st);
                for (int r = 0; r < R; r++)
                    for (int h = 0; h < H; h++) {
                        size_t off = ((size_t)r * H + h) * hd;
                        for (int i = 0; i < hd; i++) ref[i] = x0[off + i];
                        rope_ref(ref, hd, positions[r], thetas[ti], (kiln_rope_style)st);
                        double e = rel_l2_ld(x + off, ref, hd);
                        if (e > worst) worst = e;
                        KT_CHECK(e < TOL, "rope hd %d theta %g %s pos %d head %d: rel err %.3g", hd, thetas[ti],
                                 st ? "interleaved" : "half", positions[r], h, e);
                        memcpy(xf, x0 + off, hd * 4);
                        rope_f32(xf, hd, positions[r], (float)thetas[ti], (kiln_rope_style)st);
                        e = rel_l2_ld(xf, ref, hd);
                        if (e > worst_f32) worst_f32 = e;
                    }
                free(x); free(x0); free(xf); free(ref);
            }
    printf("rope: worst rel err %.3g (a float32-angle rope: %.3g)\n", worst, worst_f32);
    KT_CHECK(worst_f32 > TOL, "the rope test cannot tell a float32-angle implementation (%.3g)", worst_f32);
    /* pos 0 is the identity; the two styles pair different elements */
    float v[8] = {1, 2, 3, 4, 5, 6, 7, 8}, u[8];
    int32_t p0 = 0, p1 = 1;
    memcpy(u, v, sizeof v);
    kiln_cpu_rope(u, &p0, 1, 1, 8, 1e4, KILN_ROPE_HALF);
    KT_CHECK(memcmp(u, v, sizeof v) == 0, "pos 0 is the identity");
    kiln_cpu_rope(u, &p1, 1, 1, 8, 1e4, KILN_ROPE_HALF);
    /* HALF, i = 0, angle 1: (v0, v4) = (1, 5) -> (cos1 - 5 sin1, 5 cos1 + sin1) */
    KT_CHECK(fabs(u[0] - (cos(1.0) - 5 * sin(1.0))) < 1e-6 && fabs(u[4] - (5 * cos(1.0) + sin(1.0))) < 1e-6,
             "half pairs (0, 4): %g %g", u[0], u[4]);
    memcpy(u, v, sizeof v);
    kiln_cpu_rope(u, &p1, 1, 1, 8, 1e4, KILN_ROPE_INTERLEAVED);
    KT_CHECK(fabs(u[0] - (cos(1.0) - 2 * sin(1.0))) < 1e-6 && fabs(u[1] - (2 * cos(1.0) + sin(1.0))) < 1e-6,
             "interleaved pairs (0, 1): %g %g", u[0], u[1]);
}

/* ---- RMSNorm, SwiGLU, softmax ---- */

static void test_rmsnorm(kiln_pool *pools[3]) {
    unsigned long long seed = 777;
    static const int ns[] = {1, 48, 100, 5120, 5123};
    for (int k = 0; k < 5; k++) {
        int n = ns[k], R = n >= 5120 ? 17 : 3; /* 17 x 5120 > the parallel threshold */
        float *x = malloc(sizeof(float) * R * n), *w = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * R * n);
        float *y2 = malloc(sizeof(float) * R * n), *ref = malloc(sizeof(float) * n);
        for (int i = 0; i < R * n; i++) x[i] = kt_randf(&seed) * (i % 7 == 0 ? 30.0f : 1.0f);
        for (int i = 0; i < n; i++) w[i] = 1.0f + kt_randf(&seed);
        float eps = 1e-5f;
        kiln_cpu_ctx c = {.isa = KILN_ISA_SCALAR, .pool = pools[0]}, c2 = {.isa = KILN_ISA_SCALAR, .pool = pools[1]};
        poison(y, (size_t)R * n);
        kiln_cpu_rmsnorm(&c, y, x, w, R, n, eps);
        for (int r = 0; r < R; r++) {
            double ss = 0;
            for (int i = 0; i < n; i++) ss += (double)x[r * n + i] * x[r * n + i];
            double inv = 1.0 / sqrt(ss / n + eps);
            for (int i = 0; i < n; i++) ref[i] = (float)(x[r * n + i] * inv * w[i]);
            double e = kt_rel_l2(y + (size_t)r * n, ref, n);
            KT_CHECK(e < TOL, "rmsnorm n %d row %d: rel err %.3g", n, r, e);
        }
        poison(y2, (size_t)R * n);
        kiln_cpu_rmsnorm(&c2, y2, x, w, R, n, eps);
        KT_CHECK(memcmp(y, y2, sizeof(float) * R * n) == 0, "rmsnorm n %d: 2 threads differ", n);
        kiln_cpu_rmsnorm(&c, x, x, w, R, n, eps); /* in place */
        KT_CHECK(memcmp(y, x, sizeof(float) * R * n) == 0, "rmsnorm n %d: in place differs", n);
        free(x); free(w); free(y); free(y2); free(ref);
    }
}

static void test_swiglu(kiln_pool *pools[3]) {
    unsigned long long seed = 31337;
    int R = 5, n = 14336; /* 5 x 14336 > the parallel threshold */
    size_t cnt = (size_t)R * n;
    float *g = malloc(cnt * 4), *u = malloc(cnt * 4), *y = malloc(cnt * 4), *y2 = malloc(cnt * 4), *ref = malloc(cnt * 4);
    for (size_t i = 0; i < cnt; i++) {
        g[i] = kt_randf(&seed) * 12.0f;
        u[i] = kt_randf(&seed) * 3.0f;
        double gd = g[i];
        ref[i] = (float)(gd / (1.0 + exp(-gd)) * u[i]);
    }
    g[0] = -100.0f; ref[0] = (float)(-100.0 / (1.0 + exp(100.0)) * u[0]);
    g[1] = 100.0f;  ref[1] = (float)(100.0 * u[1]);
    kiln_cpu_ctx c = {.isa = KILN_ISA_SCALAR, .pool = pools[0]}, c2 = {.isa = KILN_ISA_SCALAR, .pool = pools[1]};
    poison(y, cnt);
    kiln_cpu_swiglu(&c, y, g, u, R, n);
    double worst = 0;
    for (size_t i = 0; i < cnt; i++) {
        double e = fabs((double)y[i] - ref[i]) / (fabs((double)ref[i]) + 1e-30);
        if (isnan(y[i]) || (ref[i] != 0 && e > worst)) worst = isnan(y[i]) ? INFINITY : e;
    }
    KT_CHECK(worst < TOL, "swiglu worst per-element rel err %.3g", worst);
    poison(y2, cnt);
    kiln_cpu_swiglu(&c2, y2, g, u, R, n);
    KT_CHECK(memcmp(y, y2, cnt * 4) == 0, "swiglu: 2 threads differ");
    /* no context (single-threaded callers, e.g. the GPU tests' reference): the best ISA's result */
    kiln_cpu_ctx cb = {.isa = kiln_isa_best(), .pool = NULL};
    poison(y2, cnt);
    kiln_cpu_swiglu(&cb, y2, g, u, R, n);
    float *y3 = malloc(cnt * 4);
    poison(y3, cnt);
    kiln_cpu_swiglu(NULL, y3, g, u, R, n);
    KT_CHECK(memcmp(y2, y3, cnt * 4) == 0, "swiglu: NULL context differs from the best ISA's");
    free(y3);
    kiln_cpu_swiglu(&c, g, g, u, R, n);
    KT_CHECK(memcmp(y, g, cnt * 4) == 0, "swiglu: in place differs");
    free(g); free(u); free(y); free(y2); free(ref);
}

static void test_softmax(void) {
    unsigned long long seed = 5;
    static const int ns[] = {1, 2, 17, 100, 1000, 32768};
    for (int k = 0; k < 6; k++) {
        int n = ns[k];
        float *x = malloc(n * 4), *ref = malloc(n * 4);
        for (int i = 0; i < n; i++) x[i] = kt_randf(&seed) * 40.0f + 500.0f; /* exp would overflow naively */
        if (n > 2) x[n / 2] = -INFINITY; /* a masked score */
        double mx = -INFINITY, s = 0;
        for (int i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
        for (int i = 0; i < n; i++) s += exp((double)x[i] - mx);
        for (int i = 0; i < n; i++) ref[i] = (float)(exp((double)x[i] - mx) / s);
        kiln_cpu_softmax(x, n);
        double e = kt_rel_l2(x, ref, n), tot = 0;
        for (int i = 0; i < n; i++) tot += x[i];
        KT_CHECK(e < TOL, "softmax n %d: rel err %.3g", n, e);
        KT_CHECK(fabs(tot - 1.0) < 1e-5, "softmax n %d sums to %.9g", n, tot);
        if (n > 2) KT_CHECK(x[n / 2] == 0.0f, "masked score -> 0");
        free(x); free(ref);
    }
}

/* ---- ISA selection ---- */

static void test_isa(void) {
    kiln_isa best = kiln_isa_best(), isa;
    kiln_error err = {0};
    printf("isa: best %s (avx2 %d, avx512 %d, neon %d)\n", kiln_isa_name(best), kiln_isa_supported(KILN_ISA_AVX2),
           kiln_isa_supported(KILN_ISA_AVX512), kiln_isa_supported(KILN_ISA_NEON));
    KT_CHECK(kiln_isa_supported(KILN_ISA_SCALAR), "scalar always supported");
    KT_CHECK(kiln_isa_supported(best), "best is supported");
    for (int i = best + 1; i < KILN_ISA_COUNT; i++) KT_CHECK(!kiln_isa_supported((kiln_isa)i), "above best: %d", i);
    KT_CHECK(!kiln_isa_supported(KILN_ISA_COUNT), "bad isa unsupported");
    KT_CHECK(strcmp(kiln_isa_name(KILN_ISA_AVX512), "avx512") == 0 && strcmp(kiln_isa_name(KILN_ISA_NEON), "neon") == 0,
             "names");
    /* the levels of one architecture only: an x86-64 build has no NEON, an aarch64 one no AVX */
    KT_CHECK(!(kiln_isa_supported(KILN_ISA_NEON) && kiln_isa_supported(KILN_ISA_AVX2)), "neon and avx2 both supported");
#if defined(__aarch64__) && defined(KILN_ARM64)
    KT_CHECK(best == KILN_ISA_NEON, "aarch64: best is neon, not %s", kiln_isa_name(best));
#endif
    KT_CHECK(kiln_isa_select(NULL, &isa, &err) == 0 && isa == best, "unset -> best");
    KT_CHECK(kiln_isa_select("", &isa, &err) == 0 && isa == best, "empty -> best");
    KT_CHECK(kiln_isa_select("scalar", &isa, &err) == 0 && isa == KILN_ISA_SCALAR, "scalar");
    static const char *bad[] = {"avx", "sse4", "avx-512", "avx2 ", "sve", "1"};
    for (int i = 0; i < 6; i++) {
        err.msg[0] = 0;
        int rc = kiln_isa_select(bad[i], &isa, &err);
        KT_CHECK(rc == KILN_ERR_INVALID_ARG, "'%s': rc %d", bad[i], rc);
        KT_CHECK(strstr(err.msg, "KILN_CPU_ISA") && strstr(err.msg, bad[i]), "'%s': message: %s", bad[i], err.msg);
    }
    static const char *names[] = {"avx2", "AVX512", "neon", "Neon"};
    kiln_isa want[] = {KILN_ISA_AVX2, KILN_ISA_AVX512, KILN_ISA_NEON, KILN_ISA_NEON};
    for (int i = 0; i < 4; i++) {
        err.msg[0] = 0;
        int rc = kiln_isa_select(names[i], &isa, &err);
        if (kiln_isa_supported(want[i]))
            KT_CHECK(rc == 0 && isa == want[i], "%s: rc %d isa %s", names[i], rc, kiln_isa_name(isa));
        else /* the message names the option and the best level there is */
            KT_CHECK(rc == KILN_ERR_UNSUPPORTED && strstr(err.msg, "KILN_CPU_ISA") && strstr(err.msg, kiln_isa_name(best)),
                     "%s unsupported: rc %d (%s)", names[i], rc, err.msg);
        if (rc) printf("  %s: %s\n", names[i], err.msg);
    }
}

int main(void) {
    kiln_pool *pools[3] = {0};
    kiln_error err = {0};
    for (int i = 0; i < 3; i++)
        if (kiln_pool_create(&pools[i], i + 1, &err) != 0) {
            fprintf(stderr, "pool: %s\n", err.msg);
            return 1;
        }
    test_isa();
    test_row_to_f32();
    test_matmul(pools);
    test_matmul_errors(pools[1]);
    test_rope();
    test_rmsnorm(pools);
    test_swiglu(pools);
    test_softmax();
    for (int i = 0; i < 3; i++) kiln_pool_destroy(pools[i]);
    return kt_done();
}
