/* mistral_tools.h: Mistral model output read incrementally (issue 18), as vLLM's mistral tool and
 * reasoning parsers read it, and the grammar of a forced tool choice in the Mistral forms.
 *
 * The output (decoded with its control tokens as text) is
 *   [content] [THINK] reasoning [/THINK] [content] [TOOL_CALLS] calls
 * with the calls in the form of the tokenizer's version:
 *   v3 / v7:  [TOOL_CALLS][{"name": "N", "arguments": {...}, "id"?: "..."}, ...]
 *   v11:      [TOOL_CALLS]N[CALL_ID]id[ARGS]{...}   once per call ([CALL_ID] id optional)
 *   v13:      [TOOL_CALLS]N[ARGS]{...}              once per call
 * (the form is recognised from the text after [TOOL_CALLS]: '[' or '{' is the JSON form).
 * kiln_mtc_next reads the whole output so far (text, len; final when no more will come) and
 * returns 1 with the next event, or 0 when it needs more text. The same events build streamed
 * deltas and the whole answer, so streamed pieces concatenated equal the whole. Content and
 * reasoning that could still be the start of a marker are held back until they cannot. v11/v13
 * arguments are streamed as their bytes come (the raw bytes of the JSON value); a v7 array is
 * read when it closes (its calls then come one after the other). Text after the calls is dropped
 * (as vLLM); a [TOOL_CALLS] that never becomes a call, before any call, is content after all.
 * With tools 0, [TOOL_CALLS] is not looked for (a request without tools). */
#ifndef KILN_SERVER_MISTRAL_TOOLS_H
#define KILN_SERVER_MISTRAL_TOOLS_H
#include <stddef.h>
#include "server/tools.h" /* kiln_srv_id_fn, kiln_srv_request */
#include "util/buf.h"

typedef enum { KILN_MTC_CONTENT = 1, KILN_MTC_REASONING, KILN_MTC_CALL, KILN_MTC_ARGS, KILN_MTC_CALL_END } kiln_mtc_kind;

typedef struct kiln_mtc_ev {
    kiln_mtc_kind kind;
    const char *s;        /* CONTENT / REASONING / ARGS: the bytes; CALL: the function name */
    size_t len;
    const char *id;       /* CALL: the call id the model wrote ([CALL_ID], or "id" of a v7 object read
                           * whole), NULL if none; CALL_END: the "id" written after a v7 call's
                           * arguments (the whole answer takes it; a stream has sent its own) */
    size_t id_len;
    int index;            /* CALL / ARGS / CALL_END: the call's index */
} kiln_mtc_ev;

typedef struct kiln_mtc {
    int tools;            /* look for [TOOL_CALLS] */
    int phase;            /* see mistral_tools.c */
    size_t pos;           /* bytes consumed */
    size_t mark;          /* where the current [TOOL_CALLS] began */
    int n_calls;
    int depth, in_str, esc, started, scalar; /* the arguments scanner */
    void *arr;            /* v7: the parsed array (json_t *) being handed out */
    size_t arr_i;
    int arr_step;
    kiln_buf a, b, c;     /* v7: the current call's name (or id), arguments text, id */
} kiln_mtc;

/* s zeroed, then tools set */
void kiln_mtc_init(kiln_mtc *s, int tools);
int kiln_mtc_next(kiln_mtc *s, const char *text, size_t len, int final, kiln_mtc_ev *ev);
void kiln_mtc_free(kiln_mtc *s);

/* the whole output: *content (NULL when blank with calls), *reasoning (NULL when none) and *calls
 * (an OpenAI tool_calls array, NULL when none); all kiln_malloc'd. Ids: the model's when it
 * wrote one, else 9 alphanumerics made from idf's (what the Mistral formats take back). 0 or -1
 * (out of memory). */
int kiln_srv_mistral_whole(const char *text, size_t len, int tools, kiln_srv_id_fn idf, void *ictx, char **content,
                           char **reasoning, char **calls);

/* streamed: advance s over the output so far; each event becomes an SSE chunk appended to b */
int kiln_srv_mistral_frames(kiln_mtc *s, const char *text, size_t len, int final, kiln_buf *b,
                            const kiln_srv_request *r, const kiln_srv_meta *m, int *first, kiln_srv_id_fn idf,
                            void *ictx);

/* the grammar of r's forced tool choice in the form of Mistral version ver (7: a JSON array of
 * {"name": "N", "arguments": ARGS} objects; 11: [TOOL_CALLS]N[CALL_ID]id[ARGS]ARGS; 13 without
 * [CALL_ID]); the control tokens as <[TOOL_CALLS]>-style token references are not needed: the
 * grammar engine matches their text. *out: kiln_free. 0 or an HTTP status. */
int kiln_srv_mistral_tool_grammar(const kiln_srv_request *r, int ver, char **out, kiln_srv_err *e);
#endif
