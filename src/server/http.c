/* http.c: libmicrohttpd glue and the endpoint handlers of `kiln serve`.
 *
 * MHD runs one thread per connection. A handler reads the whole body (at most 8 MiB: more is
 * read and dropped, then answered 413), routes, and for generation: parses and validates the
 * request (openai.c), encodes the prompt in this thread through kiln.h's thread-safe Text
 * functions (the engine itself belongs to the loop thread), checks the context length, and
 * submits a job to the engine loop (loop.c). Non-streamed answers wait for the job in this
 * thread; streamed answers are an MHD callback response whose reader blocks until the job has
 * new output, copies it out of the loop (kiln_srv_loop_read) and frames it as SSE chunks. While waiting, both look at the
 * socket every 50 ms: a client that went away cancels its job, which the loop aborts at once.
 *
 * Without libmicrohttpd (KILN_HAVE_MHD undefined) kiln_http_start fails with UNSUPPORTED.
 */
#include "server/server_internal.h"
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include "server/tools.h"
#include "server/llama3_tools.h"
#include "server/mistral_tools.h"
#include "engine/engine.h"
#include "tokenizer/chat.h"
#include "util/json.h"
#include "util/alloc.h"
#include "util/error.h"
#include "util/log.h"

#ifdef KILN_HAVE_MHD
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#define WAIT_SLICE_S 0.05

/* per-connection state: the body being read */
typedef struct conn_ctx {
    kiln_buf body;
    int too_large;
    int untimed; /* a generation answer is running: the idle timeout is off (see handle_generate) */
} conn_ctx;

/* a generation request: owned by its job once submitted */
typedef struct gen_req {
    kiln_server *srv;
    kiln_srv_request r;
    int32_t *ids;
    int n_ids;
    char id[48];
    long long created;
    int hermes; /* chat with tools in ChatML: tool calls in the Hermes form (tools.c) */
    int llama3; /* chat with tools in Llama 3's format: JSON tool calls (llama3_tools.c) */
    int mistral; /* chat in a Mistral format: [THINK] reasoning and [TOOL_CALLS] (mistral_tools.c) */
} gen_req;

static void gen_req_free(void *p) {
    gen_req *g = p;
    if (!g) return;
    kiln_srv_request_free(&g->r);
    kiln_free(g->ids);
    kiln_free(g);
}

/* ---- small helpers ------------------------------------------------------------------------ */

static enum MHD_Result send_buf(struct MHD_Connection *c, kiln_server *s, int status, const char *ctype,
                                const char *data, size_t n, const char *xname, const char *xval) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(n, (void *)data, MHD_RESPMEM_MUST_COPY);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", ctype);
    if (xname) MHD_add_response_header(resp, xname, xval); /* Retry-After, Allow */
    enum MHD_Result rc = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    kiln_metrics_count_http(&s->metrics, status);
    return rc;
}

static enum MHD_Result send_json(struct MHD_Connection *c, kiln_server *s, int status, json_t *j) {
    kiln_buf b = {0};
    int rc = j ? kiln_srv_add_json(&b, j) : -1;
    if (j) json_decref(j);
    enum MHD_Result r;
    if (rc < 0) {
        static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,\"code\":500}}";
        r = send_buf(c, s, 500, "application/json", oom, sizeof oom - 1, NULL, NULL);
    } else {
        r = send_buf(c, s, status, "application/json", b.p, b.len, NULL, NULL);
    }
    kiln_buf_free(&b);
    return r;
}

/* an error answer; allow: the Allow header of a 405 */
static enum MHD_Result send_err_allow(struct MHD_Connection *c, kiln_server *s, const kiln_srv_err *e, const char *allow) {
    kiln_buf b = {0};
    const char *xname = e->status == 503 ? "Retry-After" : allow ? "Allow" : NULL;
    const char *xval = e->status == 503 ? "1" : allow;
    enum MHD_Result r;
    if (kiln_srv_err_json(&b, e) < 0) {
        r = send_buf(c, s, e->status, "application/json", "{}", 2, xname, xval);
    } else {
        r = send_buf(c, s, e->status, "application/json", b.p, b.len, xname, xval);
    }
    kiln_buf_free(&b);
    return r;
}

static enum MHD_Result send_err(struct MHD_Connection *c, kiln_server *s, const kiln_srv_err *e) {
    return send_err_allow(c, s, e, NULL);
}

/* 405 with the route's methods in Allow */
static enum MHD_Result not_allowed(struct MHD_Connection *c, kiln_server *s, const char *method, const char *allow) {
    kiln_srv_err e;
    kiln_srv_err_set(&e, 405, NULL, "method %.40s not allowed (allowed: %s)", method, allow);
    return send_err_allow(c, s, &e, allow);
}

static enum MHD_Result fail(struct MHD_Connection *c, kiln_server *s, int status, const char *param, const char *fmt,
                            const char *arg) {
    kiln_srv_err e;
    kiln_srv_err_set(&e, status, param, fmt, arg ? arg : "");
    return send_err(c, s, &e);
}

/* 1 when the peer closed its end (or the socket failed) */
static int peer_gone(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return 0;
    struct pollfd p = {.fd = ci->connect_fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return 0;
    if (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) return 1;
    if (p.revents & POLLIN) {
        char ch;
        ssize_t n = recv(ci->connect_fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT);
        return n == 0;
    }
    return 0;
}

static void new_id(kiln_server *s, const char *prefix, char *out, size_t n) {
    unsigned long long k = atomic_fetch_add(&s->id_counter, 1) + 1;
    unsigned long long x = (unsigned long long)time(NULL) * 0x9E3779B97F4A7C15ull ^ (k * 0xBF58476D1CE4E5B9ull);
    x ^= x >> 31;
    snprintf(out, n, "%s%016llx%08llx", prefix, x, k & 0xffffffffull);
}

/* token strings of logprobs (ctx: the engine; NULL without a tokenizer: "token_id:N") */
static const char *piece_cb(void *ctx, int32_t id, size_t *len) {
    return kiln_engine_token_piece(ctx, id, len);
}

static int auth_ok(struct MHD_Connection *c, kiln_server *s) {
    if (!s->api_key) return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncmp(h, "Bearer ", 7) != 0) return 0;
    h += 7;
    /* constant time: the work depends on the key's length only, never on where the given
     * value first differs (or on its length) */
    size_t a = strlen(h), b = strlen(s->api_key);
    volatile unsigned diff = a != b;
    for (size_t i = 0; i < b; i++) diff |= (unsigned char)((i < a ? h[i] : 0) ^ s->api_key[i]);
    return diff == 0;
}

/* ---- models, tokenize, detokenize ------------------------------------------------------ */

static json_t *model_obj(kiln_server *s) {
    json_t *m = json_object();
    json_object_set_new(m, "id", kiln_srv_jstr(s->model_name, strlen(s->model_name)));
    json_object_set_new(m, "object", json_string("model"));
    json_object_set_new(m, "created", json_integer(s->started));
    json_object_set_new(m, "owned_by", json_string("kiln"));
    json_object_set_new(m, "root", kiln_srv_jstr(s->model_path, strlen(s->model_path)));
    json_object_set_new(m, "parent", json_null());
    json_object_set_new(m, "max_model_len", json_integer(s->lim.max_model_len));
    return m;
}

static enum MHD_Result handle_models(struct MHD_Connection *c, kiln_server *s, const char *which) {
    if (which) {
        if (strcmp(which, s->model_name)) return fail(c, s, 404, "model", "The model `%.200s` does not exist.", which);
        return send_json(c, s, 200, model_obj(s));
    }
    json_t *root = json_object(), *data = json_array();
    json_array_append_new(data, model_obj(s));
    json_object_set_new(root, "object", json_string("list"));
    json_object_set_new(root, "data", data);
    return send_json(c, s, 200, root);
}

static int encode_chat(kiln_server *s, kiln_srv_request *r, int32_t **ids, int *n, kiln_srv_err *e) {
    kiln_error err = {0};
    int rc = kiln_engine_apply_chat(s->engine, s->chat_template, r->msgs, r->n_msgs, r->tools_json, r->add_generation_prompt,
                              ids, n, &err);
    if (rc == KILN_OK) return 0;
    if (rc == KILN_ERR_OOM) return kiln_srv_err_set(e, 500, NULL, "out of memory");
    return kiln_srv_err_set(e, 400, "messages", "cannot apply a chat format for this model: %s", err.msg);
}

static enum MHD_Result handle_tokenize(struct MHD_Connection *c, kiln_server *s, conn_ctx *cc) {
    kiln_srv_err e;
    if (!s->has_tok) return fail(c, s, 400, NULL, "the model has no tokenizer%s", NULL);
    json_error_t je;
    if (!kiln_srv_utf8_valid(cc->body.p ? cc->body.p : "", cc->body.len))
        return fail(c, s, 400, NULL, "request body is not valid UTF-8%s", NULL);
    if (!kiln_srv_json_depth_ok(cc->body.p ? cc->body.p : "", cc->body.len, KILN_SRV_MAX_DEPTH))
        return fail(c, s, 400, NULL, "the request body nests too deep%s", NULL);
    kiln_json_enter(); /* this thread's out-of-memory flag cleared */
    json_t *root = json_loadb(cc->body.p ? cc->body.p : "", cc->body.len, 0, &je);
    if (!root && kiln_json_oom(&je)) return fail(c, s, 500, NULL, "out of memory parsing the request body%s", NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        return fail(c, s, 400, NULL, "the request body must be a JSON object%s", NULL);
    }
    int32_t *ids = NULL;
    int n = 0, status = 0;
    json_t *model = json_object_get(root, "model");
    json_t *prompt = json_object_get(root, "prompt");
    if (model && !json_is_null(model) && (!json_is_string(model) || strcmp(json_string_value(model), s->model_name))) {
        status = kiln_srv_err_set(&e, 404, "model", "The model `%.200s` does not exist.",
                                  json_is_string(model) ? json_string_value(model) : "?");
    } else if (prompt) {
        json_t *ast = json_object_get(root, "add_special_tokens");
        if (!json_is_string(prompt)) status = kiln_srv_err_set(&e, 400, "prompt", "'prompt' must be a string");
        else if (ast && !json_is_boolean(ast)) status = kiln_srv_err_set(&e, 400, "add_special_tokens", "'add_special_tokens' must be a boolean");
        else {
            kiln_error err = {0};
            int add_special = !ast || json_is_true(ast);
            if (kiln_engine_tokenize(s->engine, json_string_value(prompt), json_string_length(prompt), add_special, &ids, &n, &err))
                status = kiln_srv_err_set(&e, 400, "prompt", "cannot tokenize: %s", err.msg);
        }
    } else if (json_object_get(root, "messages")) {
        kiln_srv_request r;
        /* reuse the chat parser on the same body (validates messages, tools) */
        status = kiln_srv_parse_request(&r, KILN_SRV_CHAT, cc->body.p, cc->body.len, &s->lim, &e);
        if (!status) {
            status = encode_chat(s, &r, &ids, &n, &e);
            kiln_srv_request_free(&r);
        }
    } else {
        status = kiln_srv_err_set(&e, 400, "prompt", "give 'prompt' or 'messages'");
    }
    json_decref(root);
    if (status) {
        kiln_free(ids);
        return send_err(c, s, &e);
    }
    json_t *out = json_object(), *toks = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(toks, json_integer(ids[i]));
    kiln_free(ids);
    json_object_set_new(out, "count", json_integer(n));
    json_object_set_new(out, "max_model_len", json_integer(s->lim.max_model_len));
    json_object_set_new(out, "tokens", toks);
    json_object_set_new(out, "token_strs", json_null());
    return send_json(c, s, 200, out);
}

static enum MHD_Result handle_detokenize(struct MHD_Connection *c, kiln_server *s, conn_ctx *cc) {
    if (!s->has_tok) return fail(c, s, 400, NULL, "the model has no tokenizer%s", NULL);
    json_error_t je;
    if (!kiln_srv_utf8_valid(cc->body.p ? cc->body.p : "", cc->body.len))
        return fail(c, s, 400, NULL, "request body is not valid UTF-8%s", NULL);
    if (!kiln_srv_json_depth_ok(cc->body.p ? cc->body.p : "", cc->body.len, KILN_SRV_MAX_DEPTH))
        return fail(c, s, 400, NULL, "the request body nests too deep%s", NULL);
    kiln_json_enter(); /* this thread's out-of-memory flag cleared */
    json_t *root = json_loadb(cc->body.p ? cc->body.p : "", cc->body.len, 0, &je);
    if (!root && kiln_json_oom(&je)) return fail(c, s, 500, NULL, "out of memory parsing the request body%s", NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        return fail(c, s, 400, NULL, "the request body must be a JSON object%s", NULL);
    }
    json_t *model = json_object_get(root, "model");
    if (model && !json_is_null(model) && (!json_is_string(model) || strcmp(json_string_value(model), s->model_name))) {
        json_decref(root);
        return fail(c, s, 404, "model", "The model `%s` does not exist.", "?");
    }
    json_t *toks = json_object_get(root, "tokens");
    if (!json_is_array(toks)) {
        json_decref(root);
        return fail(c, s, 400, "tokens", "'tokens' must be a list of token ids%s", NULL);
    }
    size_t n = json_array_size(toks);
    int32_t *ids = kiln_malloc(sizeof *ids * (n ? n : 1));
    if (!ids) {
        json_decref(root);
        return fail(c, s, 500, NULL, "out of memory%s", NULL);
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(toks, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= s->lim.vocab_size) {
            kiln_free(ids);
            json_decref(root);
            kiln_srv_err e;
            kiln_srv_err_set(&e, 400, "tokens", "tokens[%zu] is not a token id in [0, %d)", i, s->lim.vocab_size);
            return send_err(c, s, &e);
        }
        ids[i] = (int32_t)json_integer_value(v);
    }
    json_decref(root);
    char *text = NULL;
    size_t len = 0;
    kiln_error err = {0};
    int rc = kiln_engine_detokenize(s->engine, ids, (int)n, 0, &text, &len, &err);
    kiln_free(ids);
    if (rc) return fail(c, s, 400, "tokens", "cannot detokenize: %s", err.msg);
    json_t *out = json_object();
    json_object_set_new(out, "prompt", kiln_srv_jstr(text, len));
    kiln_free(text);
    return send_json(c, s, 200, out);
}

/* ---- generation ------------------------------------------------------------------------- */

static void tool_id(void *ctx, char *id, size_t cap) { new_id(ctx, "chatcmpl-tool-", id, cap); }

/* A ChatML prompt ends with "<|im_start|>assistant\n": tool calls then take the Hermes form. */
static int prompt_is_chatml(kiln_server *s, const gen_req *g) {
    int k = g->n_ids < 4 ? g->n_ids : 4;
    char *t = NULL;
    size_t n = 0;
    kiln_error err;
    if (k == 0 || kiln_engine_detokenize(s->engine, g->ids + g->n_ids - k, k, 0, &t, &n, &err)) return 0;
    int yes = strstr(t, "<|im_start|>assistant") != NULL;
    kiln_free(t);
    return yes;
}

/* A Llama 3 prompt ends with "<|start_header_id|>assistant<|end_header_id|>\n\n": tool calls
 * then take Llama 3's JSON form. */
static int prompt_is_llama3(kiln_server *s, const gen_req *g) {
    int k = g->n_ids < 8 ? g->n_ids : 8; /* "assistant" may be several tokens */
    char *t = NULL;
    size_t n = 0;
    kiln_error err;
    if (k == 0 || kiln_engine_detokenize(s->engine, g->ids + g->n_ids - k, k, 0, &t, &n, &err)) return 0;
    int yes = strstr(t, "<|start_header_id|>assistant<|end_header_id|>") != NULL;
    kiln_free(t);
    return yes;
}

/* the request's constraint (response_format, structured outputs, a forced tool choice) compiled
 * against the vocabulary into g->r.params.grammar: 0, or an HTTP status naming the part */
static int compile_constraint(kiln_server *s, gen_req *g, kiln_srv_err *e) {
    kiln_srv_request *r = &g->r;
    kiln_error err = {0};
    int rc;
    if (r->tool_forced) {
        if (!g->hermes && !g->llama3 && !g->mistral)
            return kiln_srv_err_set(e, 400, "tool_choice", "a forced tool_choice needs the chatml (Hermes tool calls), llama3 or a mistral format");
        char *gbnf = NULL;
        int st = g->llama3    ? kiln_srv_llama3_tool_grammar(r, &gbnf, e)
                 : g->mistral ? kiln_srv_mistral_tool_grammar(r, g->mistral, &gbnf, e)
                              : kiln_srv_tool_grammar(r, &gbnf, e);
        if (st) return st;
        rc = kiln_engine_compile_grammar(s->engine, KILN_CONSTRAINT_GRAMMAR, gbnf, strlen(gbnf), &r->params.grammar, &err);
        kiln_free(gbnf);
        if (rc) return kiln_srv_err_set(e, rc == KILN_ERR_OOM ? 500 : 400, "tools", "cannot compile the tool call grammar: %s", err.msg);
        return 0;
    }
    if (!r->constraint_kind) return 0;
    rc = kiln_engine_compile_grammar(s->engine, (kiln_constraint_kind)r->constraint_kind, r->constraint_text, r->constraint_len,
                                     &r->params.grammar, &err);
    if (rc) return kiln_srv_err_set(e, rc == KILN_ERR_OOM ? 500 : 400, r->constraint_param, "%s: %s", r->constraint_param, err.msg);
    return 0;
}

/* how a Mistral reader looks at r's output: 0 no tools, 1 tools, 2 a forced call */
static int mistral_tools_mode(const kiln_srv_request *r) {
    return r->tools_mode == KILN_SRV_TOOLS_NONE ? 0 : r->tool_forced ? 2 : 1;
}

/* chat + tools: split the whole output into content and tool calls (ids and types filled in);
 * a Mistral format also into reasoning_content */
static void parse_tools_out(kiln_server *s, gen_req *g, const char *text, size_t len, char **content, char **calls,
                            char **reasoning) {
    *content = NULL;
    *calls = NULL;
    *reasoning = NULL;
    if (g->r.kind == KILN_SRV_CHAT && g->mistral && s->has_tok) {
        kiln_srv_mistral_whole(text, len, mistral_tools_mode(&g->r), tool_id, s, content, reasoning, calls);
        return;
    }
    if (g->r.kind != KILN_SRV_CHAT || g->r.tools_mode == KILN_SRV_TOOLS_NONE || !s->has_tok) return;
    if (g->hermes) {
        kiln_srv_hermes_whole(text, len, tool_id, s, content, calls);
        return;
    }
    if (g->llama3) {
        kiln_srv_llama3_whole(text, len, tool_id, s, content, calls);
        return;
    }
    kiln_error err = {0};
    char *cont = NULL, *cj = NULL;
    if (kiln_engine_parse_tool_calls(s->engine, text, len, &cont, &cj, &err) != KILN_OK || !cj) {
        kiln_free(cont);
        kiln_free(cj);
        return;
    }
    json_t *arr = json_loads(cj, 0, NULL);
    kiln_free(cj);
    if (!json_is_array(arr)) {
        json_decref(arr);
        kiln_free(cont);
        return;
    }
    size_t i;
    json_t *call;
    json_array_foreach(arr, i, call) {
        if (!json_is_object(call)) continue;
        if (!json_is_string(json_object_get(call, "id"))) {
            char id[48];
            new_id(s, "chatcmpl-tool-", id, sizeof id);
            json_object_set_new(call, "id", json_string(id));
        }
        if (!json_object_get(call, "type")) json_object_set_new(call, "type", json_string("function"));
    }
    kiln_buf b = {0};
    kiln_srv_add_json(&b, arr);
    json_decref(arr);
    *calls = b.p;
    *content = cont;
}

static void fill_meta(const gen_req *g, const kiln_srv_chunk *c, kiln_srv_meta *m) {
    m->id = g->id;
    m->created = g->created;
    m->model = g->srv->model_name;
    m->n_prompt = c->n_prompt > 0 ? c->n_prompt : g->n_ids;
    m->n_output = c->n_output;
    m->n_cached = c->n_cached;
}

/* how many top logprobs the request shows per token */
static int n_top_of(const gen_req *g) { return g->r.kind == KILN_SRV_CHAT ? g->r.top_logprobs : g->r.logprobs; }

/* the whole output of a finished job (c read from 0), tool calls split off when asked for */
static kiln_srv_out whole_out(kiln_server *s, gen_req *g, const kiln_srv_chunk *c, char **content, char **calls,
                              char **reasoning) {
    parse_tools_out(s, g, c->text.p ? c->text.p : "", c->text.len, content, calls, reasoning);
    kiln_srv_out o = {.text = c->text.p ? c->text.p : "", .text_len = c->text.len, .ids = c->ids, .n_ids = c->n_ids,
                      .lps = c->lps, .top = c->top, .top_stride = c->top_stride, .n_top = n_top_of(g),
                      .finish = c->finish, .tool_calls_json = *calls};
    if (*reasoning) {
        o.reasoning = *reasoning;
        o.reasoning_len = strlen(*reasoning);
    }
    if (*calls || (g->mistral && *content)) {
        o.text = *content ? *content : "";
        o.text_len = *content ? strlen(*content) : 0;
    }
    return o;
}

static enum MHD_Result answer_whole(struct MHD_Connection *c, kiln_server *s, gen_req *g, kiln_srv_job *j) {
    int n_seen = 0;
    size_t t_seen = 0;
    kiln_srv_chunk ck;
    memset(&ck, 0, sizeof ck);
    for (;;) { /* state only (a start past the end) until the job is done */
        kiln_srv_loop_wait(s->loop, j, n_seen, t_seen, WAIT_SLICE_S);
        kiln_srv_loop_read(s->loop, j, INT_MAX, SIZE_MAX, &ck);
        if (ck.done) break;
        n_seen = ck.n_ids_total;
        t_seen = ck.text_total;
        if (peer_gone(c)) {
            kiln_srv_loop_release(s->loop, j); /* cancels: the loop aborts the request */
            kiln_srv_chunk_free(&ck);
            return MHD_NO;
        }
    }
    enum MHD_Result rc;
    kiln_srv_err e;
    if (ck.error_status) {
        kiln_srv_err_set(&e, ck.error_status, NULL, "%s", ck.error_msg);
        rc = send_err(c, s, &e);
    } else if (kiln_srv_loop_read(s->loop, j, 0, 0, &ck) < 0) {
        kiln_srv_err_set(&e, 500, NULL, "out of memory");
        rc = send_err(c, s, &e);
    } else {
        char *content = NULL, *calls = NULL, *reasoning = NULL;
        kiln_srv_out o = whole_out(s, g, &ck, &content, &calls, &reasoning);
        kiln_srv_meta m;
        fill_meta(g, &ck, &m);
        rc = send_json(c, s, 200, kiln_srv_response(&g->r, &m, &o, piece_cb, s->engine));
        kiln_free(content);
        kiln_free(calls);
        kiln_free(reasoning);
    }
    kiln_srv_chunk_free(&ck);
    kiln_srv_loop_release(s->loop, j);
    return rc;
}

/* streaming state, one per streamed response */
typedef struct stream_ctx {
    kiln_server *s;
    gen_req *g; /* owned by the job */
    kiln_srv_job *j;
    struct MHD_Connection *c;
    kiln_srv_chunk ck; /* the job's output beyond what was sent, copied out of the loop */
    kiln_buf out;      /* framed bytes not yet handed to MHD */
    size_t out_off;
    int n_sent;        /* tokens already framed */
    size_t t_sent;     /* text bytes already framed */
    size_t lp_off;     /* completions logprobs: text offset of the next token */
    int first, ended;
    kiln_buf acc;      /* Hermes tool calls: the whole output so far */
    kiln_hermes hs;    /* and the reader's state over it */
    kiln_llama3 ls;    /* Llama 3 JSON tool calls: the reader's state */
    kiln_mtc ms;       /* Mistral reasoning and tool calls: the reader's state */
} stream_ctx;

static void stream_free(void *p) {
    stream_ctx *st = p;
    kiln_srv_loop_release(st->s->loop, st->j); /* cancels the job when it is not done */
    kiln_srv_chunk_free(&st->ck);
    kiln_buf_free(&st->out);
    kiln_buf_free(&st->acc);
    kiln_mtc_free(&st->ms);
    kiln_free(st);
}

/* the stream ends with an error event */
static void stream_fail(stream_ctx *st, int status, const char *msg) {
    kiln_srv_err e;
    kiln_srv_err_set(&e, status, NULL, "%s", msg);
    kiln_srv_sse_error(&st->out, &e);
    kiln_srv_sse_done(&st->out);
    st->ended = 1;
}

/* frame what the job has beyond what was sent */
static void stream_frame(stream_ctx *st) {
    kiln_server *s = st->s;
    gen_req *g = st->g;
    kiln_srv_chunk *ck = &st->ck;
    int hold = g->r.kind == KILN_SRV_CHAT && g->r.tools_mode != KILN_SRV_TOOLS_NONE; /* tools: whole text at the end */
    int hermes = hold && (g->hermes || g->llama3); /* except Hermes / Llama 3 calls: streamed as deltas */
    int mistral = g->r.kind == KILN_SRV_CHAT && g->mistral; /* Mistral: reasoning and calls as deltas */
    if (mistral) hold = 0, hermes = 1;
    if (kiln_srv_loop_read(s->loop, st->j, st->n_sent, st->t_sent, ck) < 0) {
        stream_fail(st, 500, "out of memory");
        return;
    }
    if (ck->error_status) {
        stream_fail(st, ck->error_status, ck->error_msg);
        return;
    }
    kiln_srv_meta m;
    fill_meta(g, ck, &m);
    int want_lp = g->r.kind == KILN_SRV_COMPLETION ? g->r.logprobs >= 0 : g->r.logprobs > 0;
    if (hermes) {
        if (ck->text.len && kiln_buf_add(&st->acc, ck->text.p, ck->text.len)) {
            stream_fail(st, 500, "out of memory");
            return;
        }
        if (mistral)
            kiln_srv_mistral_frames(&st->ms, st->acc.p ? st->acc.p : "", st->acc.len, ck->done, &st->out, &g->r, &m,
                                    &st->first, tool_id, s);
        else if (g->llama3)
            kiln_srv_llama3_frames(&st->ls, st->acc.p ? st->acc.p : "", st->acc.len, ck->done, &st->out, &g->r, &m,
                                   &st->first, tool_id, s);
        else
            kiln_srv_hermes_frames(&st->hs, st->acc.p ? st->acc.p : "", st->acc.len, ck->done, &st->out, &g->r, &m,
                                   &st->first, tool_id, s);
    } else if (hold) { /* tools: nothing is framed before the end */
    } else if (ck->text.len > 0 || (want_lp && ck->n_ids > 0) || (st->first && g->r.kind == KILN_SRV_CHAT) ||
               (!s->has_tok && ck->n_ids > 0)) {
        /* (a model without a tokenizer, e.g. dummy weights from a config: no text ever comes, so
         * each batch of new tokens is a chunk with empty text, and streaming clients, kiln bench
         * serve among them, still see when tokens arrive) */
        kiln_srv_out o = {.text = ck->text.p ? ck->text.p : "", .text_len = ck->text.len, .ids = ck->ids,
                          .n_ids = ck->n_ids, .lps = ck->lps, .top = ck->top, .top_stride = ck->top_stride,
                          .n_top = n_top_of(g), .text_offset = st->lp_off};
        if (kiln_srv_sse_chunk(&st->out, &g->r, &m, &o, st->first, piece_cb, s->engine)) {
            stream_fail(st, 500, "out of memory");
            return;
        }
        for (int i = 0; i < ck->n_ids; i++) {
            size_t pl = 0;
            if (kiln_engine_token_piece(s->engine, ck->ids[i], &pl)) st->lp_off += pl;
        }
        st->first = 0;
    }
    /* held output, or tokens without text yet (a partial UTF-8 sequence) and no logprobs to
     * show: counted as sent, the text follows with a later token */
    st->n_sent = ck->n_ids_total;
    st->t_sent = ck->text_total;
    if (ck->done) {
        char *content = NULL, *calls = NULL, *reasoning = NULL;
        kiln_srv_out o = {.finish = ck->finish, .text = "", .had_tool_calls = hermes && (mistral ? st->ms.n_calls > 0 : g->llama3 ? st->ls.begun : st->hs.n_calls > 0 || st->hs.phase > 0)};
        if (hold && !hermes) {
            if (kiln_srv_loop_read(s->loop, st->j, 0, 0, ck) < 0) {
                stream_fail(st, 500, "out of memory");
                return;
            }
            o = whole_out(s, g, ck, &content, &calls, &reasoning);
        }
        int rc = kiln_srv_sse_chunk(&st->out, &g->r, &m, &o, st->first, piece_cb, s->engine);
        if (!rc && g->r.include_usage) rc = kiln_srv_sse_usage(&st->out, &g->r, &m);
        kiln_free(content);
        kiln_free(calls);
        kiln_free(reasoning);
        if (rc) {
            stream_fail(st, 500, "out of memory");
            return;
        }
        kiln_srv_sse_done(&st->out);
        st->ended = 1;
    }
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    stream_ctx *st = cls;
    for (;;) {
        if (st->out_off < st->out.len) {
            size_t n = st->out.len - st->out_off;
            if (n > max) n = max;
            memcpy(buf, st->out.p + st->out_off, n);
            st->out_off += n;
            if (st->out_off == st->out.len) st->out.len = st->out_off = 0;
            return (ssize_t)n;
        }
        if (st->ended) return MHD_CONTENT_READER_END_OF_STREAM;
        kiln_srv_loop_wait(st->s->loop, st->j, st->n_sent, st->t_sent, WAIT_SLICE_S);
        stream_frame(st);
        if (st->out.len == 0 && !st->ended && peer_gone(st->c)) {
            kiln_srv_loop_cancel(st->s->loop, st->j);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
}

static enum MHD_Result handle_generate(struct MHD_Connection *c, kiln_server *s, conn_ctx *cc, kiln_srv_kind kind) {
    kiln_srv_err e;
    if (atomic_load(&s->draining)) {
        kiln_srv_err_set(&e, 503, NULL, "the server is shutting down");
        return send_err(c, s, &e);
    }
    gen_req *g = kiln_calloc(1, sizeof *g);
    if (!g) return fail(c, s, 500, NULL, "out of memory%s", NULL);
    g->srv = s;
    int status = kiln_srv_parse_request(&g->r, kind, cc->body.p ? cc->body.p : "", cc->body.len, &s->lim, &e);
    if (!status) {
        kiln_error err = {0};
        if (kind == KILN_SRV_CHAT) {
            if (!s->has_tok) status = kiln_srv_err_set(&e, 400, "messages", "the model has no tokenizer: chat needs one");
            else status = encode_chat(s, &g->r, &g->ids, &g->n_ids, &e);
        } else if (g->r.prompt_ids) {
            g->ids = g->r.prompt_ids;
            g->n_ids = g->r.n_prompt_ids;
            g->r.prompt_ids = NULL;
        } else if (!s->has_tok) {
            status = kiln_srv_err_set(&e, 400, "prompt", "the model has no tokenizer: give the prompt as token ids");
        } else if (kiln_engine_tokenize(s->engine, g->r.prompt_text, g->r.prompt_len, 1, &g->ids, &g->n_ids, &err)) {
            status = kiln_srv_err_set(&e, err.code == KILN_ERR_OOM ? 500 : 400, "prompt", "cannot tokenize the prompt: %s", err.msg);
        }
    }
    int max_len = s->lim.max_model_len;
    if (!status && g->n_ids == 0) status = kiln_srv_err_set(&e, 400, kind == KILN_SRV_CHAT ? "messages" : "prompt", "the prompt is empty (0 tokens)");
    if (!status && g->n_ids >= max_len)
        status = kiln_srv_err_set(&e, 400, kind == KILN_SRV_CHAT ? "messages" : "prompt",
                                  "This model's maximum context length is %d tokens. However, your prompt has %d tokens, leaving no room to generate.",
                                  max_len, g->n_ids);
    if (!status) {
        int mt = g->r.max_tokens;
        if (mt < 0 && kind == KILN_SRV_COMPLETION) mt = 16; /* vLLM's default for completions */
        if (mt > 0 && (long long)g->n_ids + mt > max_len) {
            if (g->r.max_tokens < 0) mt = max_len - g->n_ids; /* the default shrinks to fit */
            else
                status = kiln_srv_err_set(&e, 400, "max_tokens",
                                          "This model's maximum context length is %d tokens. However, you requested %lld tokens (%d in the prompt, %d for the completion). Please reduce the length of the prompt or the completion.",
                                          max_len, (long long)g->n_ids + mt, g->n_ids, mt);
        }
        g->r.params.max_tokens = mt > 0 ? mt : -1;
        if (!status && g->r.params.min_tokens > 0 && mt > 0 && g->r.params.min_tokens > mt)
            status = kiln_srv_err_set(&e, 400, "min_tokens", "'min_tokens' exceeds the tokens left to generate (%d)", mt);
    }
    if (!status && kind == KILN_SRV_CHAT && g->r.tools_mode != KILN_SRV_TOOLS_NONE) g->hermes = prompt_is_chatml(s, g);
    if (!status && kind == KILN_SRV_CHAT && g->r.tools_mode != KILN_SRV_TOOLS_NONE && !g->hermes)
        g->llama3 = prompt_is_llama3(s, g);
    if (!status && kind == KILN_SRV_CHAT && !g->hermes && !g->llama3) {
        /* a Mistral format with tools, or a vocabulary with [THINK] (a reasoning model): the output
         * goes through the Mistral reader (else it is plain text, logprobs streamed as usual) */
        kiln_error terr;
        const kiln_tokenizer *tk = kiln_engine_tokenizer(s->engine);
        const char *fmt = kiln_chat_template_name(tk, s->chat_template, &terr);
        if (fmt && !strncmp(fmt, "mistral-", 8) &&
            (g->r.tools_mode != KILN_SRV_TOOLS_NONE || kiln_tokenizer_token_id(tk, "[THINK]") >= 0))
            g->mistral = atoi(fmt + 9);
    }
    if (!status) status = compile_constraint(s, g, &e);
    if (status) {
        kiln_grammar_free(g->r.params.grammar);
        gen_req_free(g);
        return send_err(c, s, &e);
    }
    g->r.params.prompt_ids = g->ids;
    g->r.params.n_prompt = g->n_ids;
    /* MHD's connection timeout counts idle time even while this thread waits for the engine
     * (a queued request, a slow first token, a blocked stream reader), and would cut the answer:
     * it is off until the request completes (on_completed turns it back on). A client that goes
     * away is still noticed by peer_gone. */
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
    cc->untimed = 1;
    g->created = (long long)time(NULL);
    new_id(s, kind == KILN_SRV_CHAT ? "chatcmpl-" : "cmpl-", g->id, sizeof g->id);
    int stream = g->r.stream;
    kiln_srv_job *j = NULL;
    status = kiln_srv_loop_submit(s->loop, &g->r.params, g, gen_req_free, &j); /* g now belongs to the job */
    if (status) {
        kiln_srv_err_set(&e, status, NULL, status == 503 ? "the server is busy: the waiting queue is full (retry later)" : "out of memory");
        return send_err(c, s, &e);
    }
    if (!stream) return answer_whole(c, s, g, j);

    stream_ctx *st = kiln_calloc(1, sizeof *st);
    if (!st) {
        kiln_srv_loop_release(s->loop, j);
        return fail(c, s, 500, NULL, "out of memory%s", NULL);
    }
    st->s = s;
    st->g = g;
    st->j = j;
    st->c = c;
    st->first = 1;
    kiln_mtc_init(&st->ms, mistral_tools_mode(&g->r));
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_read, st, stream_free);
    if (!resp) {
        stream_free(st);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    enum MHD_Result rc = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    kiln_metrics_count_http(&s->metrics, 200);
    return rc;
}

/* ---- routing ------------------------------------------------------------------------------ */

static enum MHD_Result count_kv(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
    (void)kind;
    size_t *n = cls;
    *n += (key ? strlen(key) : 0) + (value ? strlen(value) : 0) + 4; /* ": " and CRLF, or "?=&" */
    return MHD_YES;
}

/* 1 when a Content-Type header names application/json (case-insensitive, parameters such as
 * "; charset=utf-8" allowed) */
static int is_json_type(const char *ct) {
    if (!ct) return 0;
    while (*ct == ' ' || *ct == '\t') ct++;
    static const char want[] = "application/json";
    if (strncasecmp(ct, want, sizeof want - 1)) return 0;
    ct += sizeof want - 1;
    while (*ct == ' ' || *ct == '\t') ct++;
    return *ct == 0 || *ct == ';';
}

typedef enum route_id {
    R_NONE = 0, R_HEALTH, R_METRICS, R_VERSION, R_TOKENIZE, R_DETOKENIZE, R_MODELS, R_MODEL, R_COMPLETIONS, R_CHAT
} route_id;

static route_id find_route(const char *url) {
    if (!strcmp(url, "/health")) return R_HEALTH;
    if (!strcmp(url, "/metrics")) return R_METRICS;
    if (!strcmp(url, "/version")) return R_VERSION;
    if (!strcmp(url, "/tokenize")) return R_TOKENIZE;
    if (!strcmp(url, "/detokenize")) return R_DETOKENIZE;
    if (!strcmp(url, "/v1/models")) return R_MODELS;
    if (!strncmp(url, "/v1/models/", 11) && url[11]) return R_MODEL;
    if (!strcmp(url, "/v1/completions")) return R_COMPLETIONS;
    if (!strcmp(url, "/v1/chat/completions")) return R_CHAT;
    return R_NONE;
}

static enum MHD_Result route(struct MHD_Connection *c, kiln_server *s, const char *url, const char *method, conn_ctx *cc) {
    int get = !strcmp(method, "GET") || !strcmp(method, "HEAD"), post = !strcmp(method, "POST");
    /* URL and header limits: MHD's per-connection pool is larger than these (kiln_http_start),
     * so such requests reach this handler and get a JSON answer */
    size_t ulen = strlen(url), hlen = 0;
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, count_kv, &ulen);
    MHD_get_connection_values(c, MHD_HEADER_KIND, count_kv, &hlen);
    if (ulen > KILN_SRV_MAX_URL) {
        kiln_srv_err e;
        kiln_srv_err_set(&e, 414, NULL, "request URL too long (%zu bytes; limit %u)", ulen, KILN_SRV_MAX_URL);
        return send_err(c, s, &e);
    }
    if (hlen > KILN_SRV_MAX_HEADERS) {
        kiln_srv_err e;
        kiln_srv_err_set(&e, 431, NULL, "request headers too large (%zu bytes; limit %u)", hlen, KILN_SRV_MAX_HEADERS);
        return send_err(c, s, &e);
    }
    route_id r = find_route(url);
    /* every /v1/ path needs the key, known or not (as vLLM: 401 before 404) */
    if (!strncmp(url, "/v1/", 4) && !auth_ok(c, s))
        return fail(c, s, 401, NULL, "invalid or missing API key (Authorization: Bearer <key>)%s", NULL);
    if (r == R_NONE) return fail(c, s, 404, NULL, "unknown route %.200s", url);
    int is_post = r == R_TOKENIZE || r == R_DETOKENIZE || r == R_COMPLETIONS || r == R_CHAT;
    if (is_post ? !post : !get) return not_allowed(c, s, method, is_post ? "POST" : "GET, HEAD");
    if (cc->too_large) {
        kiln_srv_err e;
        kiln_srv_err_set(&e, 413, NULL, "request body too large (limit %u bytes)", KILN_SRV_MAX_BODY);
        return send_err(c, s, &e);
    }
    if (is_post && !is_json_type(MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type")))
        return fail(c, s, 415, NULL, "Unsupported Media Type: only 'application/json' is allowed%s", NULL);
    switch (r) {
    case R_HEALTH:
        if (atomic_load(&s->draining)) return fail(c, s, 503, NULL, "the server is shutting down%s", NULL);
        if (!kiln_srv_loop_alive(s->loop)) return fail(c, s, 503, NULL, "the engine loop has stopped%s", NULL);
        return send_buf(c, s, 200, "application/json", "{}", 2, NULL, NULL);
    case R_METRICS: {
        kiln_buf b = {0};
        kiln_metrics_render(&s->metrics, s->model_name, &b);
        enum MHD_Result rc = send_buf(c, s, 200, "text/plain; version=0.0.4; charset=utf-8", b.p ? b.p : "", b.len, NULL, NULL);
        kiln_buf_free(&b);
        return rc;
    }
    case R_VERSION: {
        static const char v[] = "{\"version\":\"" KILN_VERSION "\"}";
        return send_buf(c, s, 200, "application/json", v, sizeof v - 1, NULL, NULL);
    }
    case R_TOKENIZE: return handle_tokenize(c, s, cc);
    case R_DETOKENIZE: return handle_detokenize(c, s, cc);
    case R_MODELS: return handle_models(c, s, NULL);
    case R_MODEL: return handle_models(c, s, url + 11);
    case R_COMPLETIONS: return handle_generate(c, s, cc, KILN_SRV_COMPLETION);
    case R_CHAT: return handle_generate(c, s, cc, KILN_SRV_CHAT);
    default: return fail(c, s, 404, NULL, "unknown route %.200s", url);
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls) {
    (void)version;
    kiln_server *s = cls;
    conn_ctx *cc = *con_cls;
    if (!cc) {
        cc = kiln_calloc(1, sizeof *cc);
        if (!cc) return MHD_NO;
        *con_cls = cc;
        /* a declared body far above the limit is refused before it is read */
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > 8ull * KILN_SRV_MAX_BODY) {
            cc->too_large = 1;
            return route(c, s, url, method, cc);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!cc->too_large) {
            if (cc->body.len + *upload_data_size > KILN_SRV_MAX_BODY) {
                cc->too_large = 1;
                kiln_buf_free(&cc->body);
            } else if (kiln_buf_add(&cc->body, upload_data, *upload_data_size) < 0) {
                return MHD_NO;
            }
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    return route(c, s, url, method, cc);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    kiln_server *s = cls;
    (void)toe;
    conn_ctx *cc = *con_cls;
    if (cc) {
        /* the keep-alive wait for the next request is timed again (and restarts now) */
        if (cc->untimed && c) MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned)s->timeout_s);
        kiln_buf_free(&cc->body);
        kiln_free(cc);
        *con_cls = NULL;
    }
}

int kiln_http_start(kiln_server *s, kiln_error *err) {
    struct sockaddr_in a4;
    struct sockaddr_in6 a6;
    struct sockaddr *sa;
    const char *host = s->host;
    int port = s->port;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    memset(&a4, 0, sizeof a4);
    memset(&a6, 0, sizeof a6);
    if (port < 0 || port > 65535) return KILN_ERR(err, KILN_ERR_INVALID_ARG, "--port %d is out of range", port);
    if (inet_pton(AF_INET, host, &a4.sin_addr) == 1) {
        a4.sin_family = AF_INET;
        a4.sin_port = htons((uint16_t)port);
        sa = (struct sockaddr *)&a4;
    } else if (inet_pton(AF_INET6, host, &a6.sin6_addr) == 1) {
        a6.sin6_family = AF_INET6;
        a6.sin6_port = htons((uint16_t)port);
        sa = (struct sockaddr *)&a6;
        flags |= MHD_USE_IPv6;
    } else {
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "--host %s is not an IPv4 or IPv6 address", host);
    }
    if (s->tls_key) {
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "this libmicrohttpd has no TLS support: --ssl-keyfile cannot be used");
        flags |= MHD_USE_TLS;
    }
    struct MHD_OptionItem opts[] = {
        {MHD_OPTION_SOCK_ADDR, 0, sa},
        {MHD_OPTION_CONNECTION_LIMIT, s->max_conns, NULL},
        {MHD_OPTION_PER_IP_CONNECTION_LIMIT, s->max_conns_per_ip, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT, s->timeout_s, NULL},
        {MHD_OPTION_CONNECTION_MEMORY_LIMIT, (intptr_t)KILN_SRV_CONN_MEMORY, NULL},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, s},
        {s->tls_key ? MHD_OPTION_HTTPS_MEM_KEY : MHD_OPTION_END, 0, s->tls_key},
        {s->tls_key ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, 0, s->tls_cert},
        {MHD_OPTION_END, 0, NULL},
    };
    struct MHD_Daemon *d = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, s, MHD_OPTION_ARRAY, opts,
                                            MHD_OPTION_END);
    if (!d)
        return KILN_ERR(err, KILN_ERR_IO, "cannot listen on %s:%d (address in use?%s)", host, port,
                        s->tls_key ? " or the TLS key and certificate are unusable" : "");
    s->mhd = d;
    return KILN_OK;
}

void kiln_http_stop(kiln_server *s) {
    if (s->mhd) MHD_stop_daemon(s->mhd);
    s->mhd = NULL;
}

#else /* no libmicrohttpd */

int kiln_http_start(kiln_server *s, kiln_error *err) {
    (void)s;
    return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "kiln was built without libmicrohttpd: `kiln serve` is unavailable");
}
void kiln_http_stop(kiln_server *s) { (void)s; }

#endif
