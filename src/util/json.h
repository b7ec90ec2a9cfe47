/* json.h: jansson under kiln's allocation hook.
 * kiln parses config.json, tokenizer.json, safetensors headers and requests with jansson, whose
 * allocations would otherwise bypass kiln_malloc: not counted, and out of reach of
 * kiln_alloc_fail_after, so the fault tests could not fail them. kiln_json_enter() routes them
 * through kiln_malloc / kiln_free. */
#ifndef KILN_UTIL_JSON_H
#define KILN_UTIL_JSON_H
#include <jansson.h>
#include "util/error.h"

/* Called at the library's entries that parse JSON (kiln_engine_open, kiln_model_load and the
 * dummy loader, kiln_tokenizer_load_ex, kiln_server_open, kiln_srv_parse_request), before they
 * start any thread of their own. Two things:
 *  1. once per process (pthread_once), install kiln_malloc / kiln_free as jansson's allocator.
 *     Why a process-global: jansson's hook is one (json_set_alloc_funcs takes no context). Why
 *     it is safe: kiln_malloc is malloc (plus a counter and the test hook) and kiln_free is
 *     free, so a value allocated before the switch and freed after it, or the reverse, is freed
 *     right; it is installed only while jansson still has its defaults (malloc / free), so a
 *     host program that set its own allocator keeps it (kiln's JSON is then neither counted
 *     nor faultable, nothing else changes); pthread_once orders the write before every later
 *     kiln entry. The one race left is a host thread already inside jansson at the moment of
 *     kiln's first entry: a host using jansson on other threads calls a kiln entry first (or
 *     sets its own allocator), as kiln.h says above kiln_engine_open.
 *  2. clear this thread's "a jansson allocation failed" flag (kiln_json_oom). */
void kiln_json_enter(void);

/* After a failed json_load*: 1 when it failed for want of memory (a jansson allocation failed on
 * this thread since the last kiln_json_enter / kiln_json_oom, or jansson said so), else 0 (the
 * text is not valid JSON). Clears the flag. Why a flag: jansson reports a failed allocation
 * inconsistently (an empty error text at line -1, or a syntax error where the lexer's buffer
 * could not grow), so its error code alone would call an out-of-memory a format error. */
int kiln_json_oom(const json_error_t *je);

/* The error of a failed json_load* of `path`: KILN_ERR_OOM naming the file when memory ran out,
 * else KILN_ERR_FORMAT with the caller's message (format and arguments). */
#define KILN_JSON_FAIL(err, je, path, ...)                                                          \
    (kiln_json_oom(je) ? KILN_ERR(err, KILN_ERR_OOM, "%s: out of memory parsing JSON", (path))     \
                       : KILN_ERR(err, KILN_ERR_FORMAT, __VA_ARGS__))

#endif
