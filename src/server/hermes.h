/* hermes.h: tool calls in the Hermes / Qwen2.5 form (vLLM's `hermes` parser), incrementally.
 *
 *   [content] <tool_call>\n{"name": "N", "arguments": {...}}\n</tool_call> [\n<tool_call>...]
 *
 * kiln_hermes_next reads the whole output so far (text, len; final when no more will come) and
 * returns the next event, or 0 when it needs more text. The same events build the streamed
 * deltas and the whole answer, so the streamed arguments concatenated equal the whole ones:
 * both are the raw bytes of the arguments value as generated. Content that could still be the
 * start of "<tool_call>" is held back until it cannot. Text after the calls is dropped (as vLLM).
 * An opening that never becomes a call (no "arguments" by the end) is content after all, when it
 * is the first: the output then has no calls, streamed or whole.
 */
#ifndef KILN_SERVER_HERMES_H
#define KILN_SERVER_HERMES_H
#include <stddef.h>

typedef enum { KILN_HERMES_CONTENT = 1, KILN_HERMES_CALL, KILN_HERMES_ARGS, KILN_HERMES_CALL_END } kiln_hermes_kind;

typedef struct kiln_hermes_ev {
    kiln_hermes_kind kind;
    size_t off, len;   /* CONTENT / ARGS: the bytes text[off .. off + len); CALL: the name's JSON string */
    int index;         /* the call's index */
} kiln_hermes_ev;

typedef struct kiln_hermes {
    int phase;         /* 0 content, 1 head, 2 arguments, 3 tail, 4 after the calls */
    size_t pos;        /* bytes consumed */
    size_t open_pos;   /* where the last "<tool_call>" began */
    int n_calls;
    int depth, in_str, esc, started; /* the arguments scanner */
} kiln_hermes;

int kiln_hermes_next(kiln_hermes *h, const char *text, size_t len, int final, kiln_hermes_ev *ev);

#endif
