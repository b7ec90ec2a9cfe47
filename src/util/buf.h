/* buf.h: the one growable byte buffer of kiln (text, JSON, SSE frames, token bytes).
 *
 * p[0 .. len) holds the bytes and p[len] is always 0 once anything was added, so p can be used
 * as a C string when the content has no NUL. Growth doubles the capacity (first 64 bytes)
 * through kiln_realloc; on out-of-memory a call returns -1 and leaves the buffer as it was.
 * A zeroed kiln_buf is empty and valid; kiln_buf_free returns it to that state.
 */
#ifndef KILN_UTIL_BUF_H
#define KILN_UTIL_BUF_H
#include <stdarg.h>
#include <stddef.h>

typedef struct kiln_buf {
    char *p;    /* [cap] */
    size_t len; /* bytes used, excluding the terminating 0 */
    size_t cap;
} kiln_buf;

/* room for n more bytes (+ the terminating 0): 0, or -1 on out-of-memory */
int kiln_buf_reserve(kiln_buf *b, size_t n);
/* append n bytes of s (s may be NULL when n is 0): 0 or -1 */
int kiln_buf_add(kiln_buf *b, const void *s, size_t n);
int kiln_buf_adds(kiln_buf *b, const char *s);
int kiln_buf_addc(kiln_buf *b, char c);
int kiln_buf_addf(kiln_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int kiln_buf_vaddf(kiln_buf *b, const char *fmt, va_list ap);
/* empty it, keeping the memory */
void kiln_buf_clear(kiln_buf *b);
/* hand the bytes over (NUL-terminated, free with kiln_free; never NULL unless out of memory)
 * and leave the buffer empty */
char *kiln_buf_take(kiln_buf *b, size_t *len);
void kiln_buf_free(kiln_buf *b);

#endif
