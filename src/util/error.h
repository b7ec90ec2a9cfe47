/* error.h: status codes and the error record every library function fills.
 * KILN_ERR(err, code, fmt, ...) records code, source file/line and a message, and evaluates to
 * the code, so library code writes `return KILN_ERR(err, KILN_ERR_FORMAT, "%s: ...", path);`. */
#ifndef KILN_UTIL_ERROR_H
#define KILN_UTIL_ERROR_H
#include "kiln.h"

int kiln_err_set(kiln_error *e, kiln_status code, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
#define KILN_ERR(e, code, ...) kiln_err_set((e), (code), __FILE__, __LINE__, __VA_ARGS__)
/* Prepend context to an existing error message ("loading X: <old message>"). */
void kiln_err_prefix(kiln_error *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void kiln_err_clear(kiln_error *e);

#endif
