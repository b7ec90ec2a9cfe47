/* llama3_tools.h: Llama 3.1/3.2 JSON tool calls (vLLM's `llama3_json` parser), incrementally, and
 * the grammar of a forced tool choice in that form.
 *
 * Output that is a tool call starts (after white space) with "<|python_tag|>" or "{" and is one or
 * more JSON objects separated by ";":
 *   [<|python_tag|>] {"name": "N", "parameters": {...}} [; {"name": ..., "arguments": ...}]
 * ("parameters" is what Meta's template asks for, "arguments" is taken too). Anything else is
 * content, whole. kiln_llama3_next reads the whole output so far (text, len; final when no more
 * will come) and returns the next event (hermes.h's kinds), or 0 when it needs more text. An
 * object whose first keys are "name" then "parameters"/"arguments" has its arguments streamed as
 * they are generated (raw bytes of the value); one laid out otherwise is read when it closes and
 * checked with a JSON parser. A first object that is not a call (no string "name", no
 * arguments, bad JSON) makes the whole output content; after a call, text that does not go on
 * with ";" and another object is dropped (as vLLM).
 */
#ifndef KILN_SERVER_LLAMA3_TOOLS_H
#define KILN_SERVER_LLAMA3_TOOLS_H
#include <stddef.h>
#include "server/hermes.h" /* kiln_hermes_ev */
#include "server/tools.h"  /* kiln_srv_id_fn, kiln_srv_request */

typedef struct kiln_llama3 {
    int phase;            /* see llama3_tools.c */
    size_t pos;           /* bytes consumed */
    size_t obj;           /* where the current object's "{" is */
    size_t args_off, args_len, name_off, name_len; /* a buffered object's spans */
    int n_calls;
    int begun;            /* a call's name has been emitted (the answer is tool calls) */
    int depth, in_str, esc, started; /* the JSON value scanner */
} kiln_llama3;

int kiln_llama3_next(kiln_llama3 *s, const char *text, size_t len, int final, kiln_hermes_ev *ev);

/* the grammar text of r's forced tool choice in the Llama 3 form (*out: kiln_free); 0 or an
 * HTTP status:  root ::= call ("; " call){0,2} (parallel; else one call), call ::= t0 | t1 ...,
 * tK ::= "{\"name\": \"NAME\", \"parameters\": " tK-root "}" */
int kiln_srv_llama3_tool_grammar(const kiln_srv_request *r, char **out, kiln_srv_err *e);

/* the whole output: *content (NULL when the output is calls) and *calls (an OpenAI tool_calls
 * array, NULL when none); both kiln_malloc'd. 0, or -1 when out of memory. */
int kiln_srv_llama3_whole(const char *text, size_t len, kiln_srv_id_fn idf, void *ictx, char **content, char **calls);

/* streamed: advance s over the output so far; each event becomes an SSE chunk appended to b */
int kiln_srv_llama3_frames(kiln_llama3 *s, const char *text, size_t len, int final, kiln_buf *b,
                           const kiln_srv_request *r, const kiln_srv_meta *m, int *first, kiln_srv_id_fn idf,
                           void *ictx);
#endif
