/* buf.c: the growable byte buffer (buf.h). */
#include "util/buf.h"
#include <stdio.h>
#include <string.h>
#include "util/alloc.h"

int kiln_buf_reserve(kiln_buf *b, size_t n) {
    if (n > (size_t)-1 / 2 - b->len - 1) return -1;
    size_t need = b->len + n + 1;
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap *= 2;
    char *p = kiln_realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

int kiln_buf_add(kiln_buf *b, const void *s, size_t n) {
    if (kiln_buf_reserve(b, n)) return -1;
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
    return 0;
}

int kiln_buf_adds(kiln_buf *b, const char *s) { return kiln_buf_add(b, s, strlen(s)); }

int kiln_buf_addc(kiln_buf *b, char c) { return kiln_buf_add(b, &c, 1); }

int kiln_buf_vaddf(kiln_buf *b, const char *fmt, va_list ap) {
    va_list ap2;
    va_copy(ap2, ap);
    char tmp[256];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap2);
    va_end(ap2);
    if (n < 0) return -1;
    if ((size_t)n < sizeof tmp) return kiln_buf_add(b, tmp, (size_t)n);
    if (kiln_buf_reserve(b, (size_t)n)) return -1;
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int kiln_buf_addf(kiln_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int rc = kiln_buf_vaddf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void kiln_buf_clear(kiln_buf *b) {
    b->len = 0;
    if (b->p) b->p[0] = 0;
}

char *kiln_buf_take(kiln_buf *b, size_t *len) {
    if (!b->p && kiln_buf_reserve(b, 0)) return NULL;
    b->p[b->len] = 0;
    char *p = b->p;
    if (len) *len = b->len;
    memset(b, 0, sizeof *b);
    return p;
}

void kiln_buf_free(kiln_buf *b) {
    kiln_free(b->p);
    memset(b, 0, sizeof *b);
}
