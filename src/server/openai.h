/* openai.h: the OpenAI-compatible wire format of `kiln serve`, with no HTTP and no engine.
 *
 * Parsing: a request body (bytes) -> kiln_srv_request (validated sampling parameters, the prompt
 * as text or ids, or the chat messages) or an error with its HTTP status and the OpenAI error
 * shape {"error": {"message", "type", "param", "code"}}. Unknown fields are ignored (as vLLM
 * does by default). Prompt tokenization and the context-length check happen later (http.c),
 * because they need the tokenizer. This is the one reader of OpenAI chat messages in kiln:
 * `kiln tokenize --chat` parses its request file here too.
 *
 * Building: responses (completion, chat completion), SSE chunks ("data: {...}\n\n", "data:
 * [DONE]\n\n"), usage objects and logprobs, from spans of generated output (kiln_srv_out).
 * Token strings for logprobs come through a callback (the tokenizer's pieces), so this file is
 * testable without a model. Every string put into JSON is made valid UTF-8 first.
 */
#ifndef KILN_SERVER_OPENAI_H
#define KILN_SERVER_OPENAI_H
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include "kiln.h"
#include "util/buf.h"

#define KILN_SRV_MAX_BODY (8u << 20) /* 8 MiB: larger bodies get 413 */
#define KILN_SRV_MAX_LOGPROBS 20
#define KILN_SRV_MAX_STOP 64
#define KILN_SRV_MAX_URL (8u << 10)        /* path + query string: longer gets 414 */
#define KILN_SRV_MAX_HEADERS (32u << 10)   /* all header lines together: more gets 431 */
#define KILN_SRV_CONN_MEMORY (256u << 10)  /* libmicrohttpd's per-connection pool: requests whose
                                            * head does not fit are answered by libmicrohttpd */
#define KILN_SRV_MAX_DEPTH 64              /* JSON nesting (arrays + objects): deeper gets 400 */
#define KILN_SRV_MAX_MESSAGES 4096         /* chat messages per request */
#define KILN_SRV_MAX_BIAS 1024             /* logit_bias entries */
#define KILN_SRV_MAX_STOP_IDS 1024         /* stop_token_ids entries */

/* compact JSON dump of j appended to b (util/buf.h): 0 or -1 on out-of-memory */
int kiln_srv_add_json(kiln_buf *b, const json_t *j);

/* An error answer: HTTP status + OpenAI error object fields. */
typedef struct kiln_srv_err {
    int status;
    char param[64]; /* "" = null */
    char msg[768];
} kiln_srv_err;
int kiln_srv_err_set(kiln_srv_err *e, int status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5))); /* returns status */
const char *kiln_srv_err_type(int status);
/* {"error": {...}} as a NUL-terminated string in b */
int kiln_srv_err_json(kiln_buf *b, const kiln_srv_err *e);

int kiln_srv_utf8_valid(const char *s, size_t n);
/* 0 when the JSON text nests arrays and objects deeper than max_depth (strings skipped; the
 * text need not be valid JSON), else 1; a cheap check before jansson builds the tree */
int kiln_srv_json_depth_ok(const char *s, size_t n, int max_depth);
/* a JSON string of n bytes; invalid UTF-8 sequences become U+FFFD (never NULL unless OOM) */
json_t *kiln_srv_jstr(const char *s, size_t n);

typedef enum kiln_srv_kind { KILN_SRV_COMPLETION = 0, KILN_SRV_CHAT } kiln_srv_kind;

typedef struct kiln_srv_limits {
    const char *model_name; /* requests naming another model get 404 */
    int vocab_size;         /* token ids (prompt ids, logit_bias, stop_token_ids) below this */
    int max_model_len;
} kiln_srv_limits;

enum { KILN_SRV_TOOLS_NONE = 0, KILN_SRV_TOOLS_AUTO = 1 };

typedef struct kiln_srv_request {
    kiln_srv_kind kind;
    json_t *root; /* the parsed body: the strings below point into it */
    /* completions: either text or ids */
    const char *prompt_text;
    size_t prompt_len;
    int32_t *prompt_ids; /* kiln_malloc'd */
    int n_prompt_ids;
    /* chat */
    kiln_chat_msg *msgs; /* [n_msgs] */
    int n_msgs;
    char **owned;        /* [n_owned] strings the messages point to (joined parts, dumps) */
    int n_owned;
    char *tools_json;    /* NULL: no tools (or tool_choice "none") */
    int tools_mode;
    int add_generation_prompt;
    int tool_forced;     /* 0: as tools_mode says; 1: tool_choice "required"; 2: a named function */
    const char *tool_name; /* tool_choice's function name (tool_forced 2) */
    int parallel_tool_calls; /* default 1 */
    /* constrained decoding (both kinds): response_format, structured_outputs, guided_* */
    int constraint_kind; /* kiln_constraint_kind, 0: none */
    const char *constraint_text; /* owned by the request (a dump or a string of the body) */
    size_t constraint_len;
    const char *constraint_param; /* the field it came from, for a 400 naming it */
    /* both */
    int stream;
    int include_usage;
    int max_tokens;      /* -1: not given */
    int logprobs;        /* completions: top-n (-1 = off); chat: 0/1 */
    int top_logprobs;    /* chat: top-n */
    int echo_unused;
    kiln_request_params params; /* sampling, stops, min_tokens, ignore_eos; prompt filled later */
    const char **stops;  /* [params.n_stop_strings] */
    int32_t *stop_ids;
    int32_t *bias_ids;
    float *bias_values;
} kiln_srv_request;

/* Parse and validate a body. Returns 0, or the HTTP status with e filled (r is then freed). */
int kiln_srv_parse_request(kiln_srv_request *r, kiln_srv_kind kind, const char *body, size_t len,
                           const kiln_srv_limits *lim, kiln_srv_err *e);
void kiln_srv_request_free(kiln_srv_request *r);

/* ---- responses ---------------------------------------------------------------------- */

typedef const char *(*kiln_srv_piece_fn)(void *ctx, int32_t id, size_t *len);

/* A span of generated output (what a chunk or a whole response carries). */
typedef struct kiln_srv_out {
    const char *text;
    size_t text_len;
    const int32_t *ids;
    int n_ids;
    const float *lps;               /* [n_ids] logprob of each token, or NULL */
    const kiln_token_logprob *top;  /* [n_ids][top_stride], or NULL */
    int top_stride;
    int n_top;                      /* how many top entries to show (<= top_stride) */
    size_t text_offset;             /* completions logprobs: offset of this span's text */
    const char *tool_calls_json;    /* chat: OpenAI tool_calls array, or NULL (streamed deltas carry
                                     * their own "index"; others are numbered by position) */
    int had_tool_calls;             /* finish_reason "tool_calls" even without tool_calls_json here */
    const char *reasoning;          /* chat: reasoning_content (Mistral [THINK] ... [/THINK]), NULL if none */
    size_t reasoning_len;
    kiln_finish finish;             /* NONE while streaming */
} kiln_srv_out;

typedef struct kiln_srv_meta {
    const char *id;   /* "cmpl-..." / "chatcmpl-..." */
    long long created;
    const char *model;
    int n_prompt, n_output, n_cached;
} kiln_srv_meta;

const char *kiln_srv_finish_str(kiln_finish f, int tool_calls);
json_t *kiln_srv_usage(int n_prompt, int n_output, int n_cached);
/* logprobs object of a span: completions or chat shape (NULL when the request asked none) */
json_t *kiln_srv_logprobs(const kiln_srv_request *r, const kiln_srv_out *o, kiln_srv_piece_fn piece,
                          void *pctx);
/* whole non-streamed response */
json_t *kiln_srv_response(const kiln_srv_request *r, const kiln_srv_meta *m, const kiln_srv_out *o,
                          kiln_srv_piece_fn piece, void *pctx);
/* one SSE chunk appended to b ("data: {...}\n\n"); first: chat's role delta */
int kiln_srv_sse_chunk(kiln_buf *b, const kiln_srv_request *r, const kiln_srv_meta *m,
                       const kiln_srv_out *o, int first, kiln_srv_piece_fn piece, void *pctx);
/* the usage-only chunk (stream_options.include_usage) */
int kiln_srv_sse_usage(kiln_buf *b, const kiln_srv_request *r, const kiln_srv_meta *m);
int kiln_srv_sse_done(kiln_buf *b);
int kiln_srv_sse_error(kiln_buf *b, const kiln_srv_err *e);

#endif
