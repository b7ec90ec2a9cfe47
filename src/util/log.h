/* log.h: diagnostics to stderr (stdout is reserved for generated text and data).
 * The level comes from KILN_LOG (error|warn|info|debug), read by the CLI and passed in. */
#ifndef KILN_UTIL_LOG_H
#define KILN_UTIL_LOG_H

typedef enum { KILN_LOG_ERROR = 0, KILN_LOG_WARN, KILN_LOG_INFO, KILN_LOG_DEBUG } kiln_log_level;
void kiln_log_set_level(kiln_log_level l);
kiln_log_level kiln_log_get_level(void);
void kiln_log(kiln_log_level l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define KILN_INFO(...) kiln_log(KILN_LOG_INFO, __VA_ARGS__)
#define KILN_WARN(...) kiln_log(KILN_LOG_WARN, __VA_ARGS__)
#define KILN_DEBUG(...) kiln_log(KILN_LOG_DEBUG, __VA_ARGS__)

#endif
