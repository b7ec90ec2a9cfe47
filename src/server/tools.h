/* tools.h: forced tool calls and Hermes-form tool-call output for `kiln serve` (ChatML models).
 *
 * A forced tool_choice ("required", or a named function) becomes a GBNF grammar:
 *   root ::= call ("\n" call){0,2}          (parallel_tool_calls; else one call)
 *   call ::= t0 | t1 | ...                  (the named function only, when named)
 *   tK   ::= "<tool_call>\n{\"name\": \"NAME\", \"arguments\": " tK-root "}\n</tool_call>"
 * with each function's parameters schema compiled by the grammar layer under the prefix "tK-"
 * (no parameters: any JSON object). Up to 3 calls in parallel mode keep a model from calling
 * forever. The output is then read by hermes.c, whole or streamed.
 */
#ifndef KILN_SERVER_TOOLS_H
#define KILN_SERVER_TOOLS_H
#include "server/hermes.h"
#include "server/openai.h"

/* How one chat format writes a forced call (every string is GBNF literal text, escapes included):
 *   tK   ::= "<call_open>{\"name\": \"NAME\", \"<args_key>\": " tK-root "}<call_close>"
 *   root ::= "<list_open>" call ("<sep>" call){0,2} "<list_close>"   (empty literals left out;
 *                                                                     the repeat with parallel calls only)
 * Hermes (above), Llama 3 (no wrapper, "parameters", "; " between calls) and Mistral (a JSON array
 * "[" ... ", " ... "]") differ only in these. */
typedef struct {
    const char *call_open, *call_close, *args_key, *list_open, *sep, *list_close;
    const char *name_chars; /* allowed in a function name beside letters and digits */
    const char *name_rule;  /* the same in words, for the 400 */
} kiln_srv_call_form;

/* the grammar text of r's forced tool choice in form f (*out: free with kiln_free); 0 or an HTTP status */
int kiln_srv_forced_call_grammar(const kiln_srv_request *r, const kiln_srv_call_form *f, char **out, kiln_srv_err *e);

/* the Hermes form (Qwen2.5 / ChatML) */
int kiln_srv_tool_grammar(const kiln_srv_request *r, char **out, kiln_srv_err *e);

typedef void (*kiln_srv_id_fn)(void *ctx, char *id, size_t cap);

/* the whole output: *content (text before the calls, NULL when blank) and *calls (an OpenAI
 * tool_calls array, NULL when no call is complete); both kiln_malloc'd */
int kiln_srv_hermes_whole(const char *text, size_t len, kiln_srv_id_fn idf, void *ictx, char **content, char **calls);

/* streamed: advance h over the output so far; each event becomes an SSE chunk appended to b
 * (content text, or a tool_calls delta with its index). *first: the role delta is due. */
int kiln_srv_hermes_frames(kiln_hermes *h, const char *text, size_t len, int final, kiln_buf *b,
                           const kiln_srv_request *r, const kiln_srv_meta *m, int *first, kiln_srv_id_fn idf,
                           void *ictx);
#endif
