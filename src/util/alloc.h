/* alloc.h: the one allocation hook of kiln (Redis zmalloc / stb STBI_MALLOC style).
 * All library allocations go through kiln_malloc & co. so that tests can count allocations
 * (invariant I7: nothing is allocated inside the step loop) and inject failures (out-of-memory
 * paths are tested). Counters are atomics; the hook state is process-wide by necessity (malloc
 * is), but only tests touch it. */
#ifndef KILN_UTIL_ALLOC_H
#define KILN_UTIL_ALLOC_H
#include <stddef.h>
#include <stdint.h>

void *kiln_malloc(size_t n);
void *kiln_calloc(size_t n, size_t size);
void *kiln_realloc(void *p, size_t n);
void kiln_free(void *p); /* declared in kiln.h too */
char *kiln_strdup(const char *s);
char *kiln_strndup(const char *s, size_t n);
/* 64-byte aligned, for SIMD buffers; free with kiln_free_aligned. */
void *kiln_malloc_aligned(size_t n);
void kiln_free_aligned(void *p);

/* Number of allocations made so far (all threads). */
uint64_t kiln_alloc_count(void);
/* Test hook: the next `after` allocations succeed, then every one fails; -1 disables. */
void kiln_alloc_fail_after(int64_t after);

#endif
