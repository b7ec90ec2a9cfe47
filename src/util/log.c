#include "util/log.h"
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>

/* The level is the one piece of process-wide state here: stderr is process-wide too. */
static _Atomic int g_level = KILN_LOG_WARN;

void kiln_log_set_level(kiln_log_level l) { atomic_store(&g_level, (int)l); }
kiln_log_level kiln_log_get_level(void) { return (kiln_log_level)atomic_load(&g_level); }

void kiln_log(kiln_log_level l, const char *fmt, ...) {
    if ((int)l > atomic_load(&g_level)) return;
    static const char *names[] = {"error", "warn", "info", "debug"};
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "kiln %s: %s\n", names[l], buf);
}
