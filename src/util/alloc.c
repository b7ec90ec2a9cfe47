#include "util/alloc.h"
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static _Atomic uint64_t g_alloc_count;
static _Atomic int64_t g_fail_after = -1;

static int should_fail(void) {
    int64_t left = atomic_load(&g_fail_after);
    if (left < 0) return 0;
    if (left == 0) return 1;
    atomic_fetch_sub(&g_fail_after, 1);
    return 0;
}

void *kiln_malloc(size_t n) {
    atomic_fetch_add(&g_alloc_count, 1);
    if (should_fail()) return NULL;
    return malloc(n ? n : 1);
}
void *kiln_calloc(size_t n, size_t size) {
    atomic_fetch_add(&g_alloc_count, 1);
    if (should_fail()) return NULL;
    return calloc(n ? n : 1, size ? size : 1);
}
void *kiln_realloc(void *p, size_t n) {
    atomic_fetch_add(&g_alloc_count, 1);
    if (should_fail()) return NULL;
    return realloc(p, n ? n : 1);
}
void kiln_free(void *p) { free(p); }
char *kiln_strdup(const char *s) { return kiln_strndup(s, strlen(s)); }
char *kiln_strndup(const char *s, size_t n) {
    char *d = kiln_malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}
void *kiln_malloc_aligned(size_t n) {
    atomic_fetch_add(&g_alloc_count, 1);
    if (should_fail()) return NULL;
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? (n + 63) / 64 * 64 : 64) != 0) return NULL;
    return p;
}
void kiln_free_aligned(void *p) { free(p); }
uint64_t kiln_alloc_count(void) { return atomic_load(&g_alloc_count); }
void kiln_alloc_fail_after(int64_t after) { atomic_store(&g_fail_after, after); }
