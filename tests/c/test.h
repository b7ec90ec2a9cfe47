/* test.h: a tiny test harness. Each tests/c/test_*.c is one executable and one CTest case.
 *   KT_CHECK(cond, fmt, ...)  records a failure and goes on
 *   KT_SKIP(fmt, ...)         exits 77 (CTest: skipped) with the reason on stderr: a missing
 *                             fixture skips loudly, never passes
 *   kt_shared(rel)            path under ../shared (KILN_SHARED overrides)
 *   return kt_done();         prints "N passed, N failed" and exits non-zero on any failure */
#ifndef KILN_TEST_H
#define KILN_TEST_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int kt_pass, kt_fail;
#define KT_CHECK(cond, ...)                                                            \
    do {                                                                               \
        if (cond) {                                                                    \
            kt_pass++;                                                                 \
        } else {                                                                       \
            kt_fail++;                                                                 \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);            \
            fprintf(stderr, __VA_ARGS__);                                              \
            fprintf(stderr, "\n");                                                     \
        }                                                                              \
    } while (0)
#define KT_SKIP(...)                                                                   \
    do {                                                                               \
        fprintf(stderr, "SKIP: ");                                                     \
        fprintf(stderr, __VA_ARGS__);                                                  \
        fprintf(stderr, "\n");                                                         \
        exit(77);                                                                      \
    } while (0)

static inline const char *kt_shared(const char *rel) {
    static char buf[8][1024];
    static int k;
    const char *root = getenv("KILN_SHARED");
    if (!root || !*root) root = "../shared";
    char *b = buf[k++ & 7];
    snprintf(b, 1024, "%s/%s", root, rel);
    return b;
}
static inline int kt_exists(const char *path) { return access(path, R_OK) == 0; }
static inline int kt_done(void) {
    printf("%d passed, %d failed\n", kt_pass, kt_fail);
    return kt_fail ? 1 : 0;
}
/* relative L2 error ||a-b|| / ||b||; NaN anywhere gives +inf */
static inline double kt_rel_l2(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(a[i]) || isnan(b[i])) return INFINITY;
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}
/* xorshift64* for reproducible random test inputs */
static inline unsigned long long kt_rand_u64(unsigned long long *s) {
    *s ^= *s >> 12; *s ^= *s << 25; *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}
static inline float kt_randf(unsigned long long *s) { /* uniform [-1, 1) */
    return (float)((kt_rand_u64(s) >> 40) * (1.0 / 8388608.0) - 1.0);
}
#endif
