#include "util/error.h"
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *kiln_status_name(kiln_status s) {
    switch (s) {
    case KILN_OK: return "ok";
    case KILN_ERR_IO: return "io error";
    case KILN_ERR_FORMAT: return "format error";
    case KILN_ERR_UNSUPPORTED: return "unsupported";
    case KILN_ERR_INVALID_ARG: return "invalid argument";
    case KILN_ERR_OOM: return "out of memory";
    case KILN_ERR_RANGE: return "out of range";
    case KILN_ERR_BACKEND: return "backend error";
    case KILN_ERR_STRICT: return "strict mode violation";
    case KILN_ERR_NOT_FOUND: return "not found";
    case KILN_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

int kiln_err_set(kiln_error *e, kiln_status code, const char *file, int line, const char *fmt, ...) {
    if (!e) return (int)code;
    e->code = code;
    e->file = file;
    e->line = line;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return (int)code;
}

void kiln_err_prefix(kiln_error *e, const char *fmt, ...) {
    if (!e) return;
    char pre[512], old[sizeof e->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    memcpy(old, e->msg, sizeof old);
    snprintf(e->msg, sizeof e->msg, "%.400s: %.600s", pre, old);
}

void kiln_err_clear(kiln_error *e) {
    if (!e) return;
    e->code = KILN_OK;
    e->file = NULL;
    e->line = 0;
    e->msg[0] = 0;
}
