/* openai.c: OpenAI request parsing/validation and response building (see openai.h).
 *
 * Validation follows vLLM's OpenAI server where it has a rule (n must be 1 here, max_tokens >= 1,
 * logprobs <= 20, stream_options only with stream) and the OpenAI reference ranges otherwise
 * (temperature [0, 2], penalties [-2, 2]). Integers given as integral reals (16.0) are accepted,
 * as pydantic does; booleans are never numbers. All allocation goes through kiln_malloc.
 */
#include "server/openai.h"
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "util/alloc.h"
#include "util/json.h"

/* ---- JSON into a buffer --------------------------------------------------------------- */

int kiln_srv_add_json(kiln_buf *b, const json_t *j) {
    size_t n = json_dumpb(j, NULL, 0, JSON_COMPACT);
    if (n == 0 || kiln_buf_reserve(b, n)) return -1;
    /* the dump allocates too (jansson's cycle check): it can fail the second time */
    if (json_dumpb(j, b->p + b->len, n, JSON_COMPACT) != n) {
        b->p[b->len] = 0;
        return -1;
    }
    b->len += n;
    b->p[b->len] = 0;
    return 0;
}

/* ---- errors ---------------------------------------------------------------------------- */

int kiln_srv_err_set(kiln_srv_err *e, int status, const char *param, const char *fmt, ...) {
    e->status = status;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return status;
}

const char *kiln_srv_err_type(int status) {
    switch (status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 405: return "invalid_request_error";
    case 413: return "invalid_request_error";
    case 503: return "service_unavailable";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

static json_t *err_obj(const kiln_srv_err *e) {
    json_t *o = json_object();
    json_object_set_new(o, "message", kiln_srv_jstr(e->msg, strlen(e->msg)));
    json_object_set_new(o, "type", json_string(kiln_srv_err_type(e->status)));
    json_object_set_new(o, "param", e->param[0] ? kiln_srv_jstr(e->param, strlen(e->param)) : json_null());
    json_object_set_new(o, "code", json_integer(e->status));
    json_t *root = json_object();
    json_object_set_new(root, "error", o);
    return root;
}

int kiln_srv_err_json(kiln_buf *b, const kiln_srv_err *e) {
    json_t *root = err_obj(e);
    int rc = kiln_srv_add_json(b, root);
    json_decref(root);
    return rc;
}

/* ---- UTF-8 ----------------------------------------------------------------------------- */

/* length of the valid UTF-8 sequence at s (1..4), or 0 if invalid */
static int utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int len;
    unsigned min;
    if ((c & 0xE0) == 0xC0) { len = 2; min = 0x80; c &= 0x1F; }
    else if ((c & 0xF0) == 0xE0) { len = 3; min = 0x800; c &= 0x0F; }
    else if ((c & 0xF8) == 0xF0) { len = 4; min = 0x10000; c &= 0x07; }
    else return 0;
    if ((size_t)len > n) return 0;
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
    return len;
}

int kiln_srv_json_depth_ok(const char *s, size_t n, int max_depth) {
    int depth = 0, in_str = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (in_str) {
            if (ch == '\\') i++;
            else if (ch == '"') in_str = 0;
        } else if (ch == '"') {
            in_str = 1;
        } else if (ch == '[' || ch == '{') {
            if (++depth > max_depth) return 0;
        } else if (ch == ']' || ch == '}') {
            depth--;
        }
    }
    return 1;
}

int kiln_srv_utf8_valid(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        int l = utf8_seq(u + i, n - i);
        if (!l) return 0;
        i += (size_t)l;
    }
    return 1;
}

json_t *kiln_srv_jstr(const char *s, size_t n) {
    if (!s) return json_string("");
    if (kiln_srv_utf8_valid(s, n)) return json_stringn(s, n);
    kiln_buf b = {0};
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        int l = utf8_seq(u + i, n - i);
        if (l) {
            kiln_buf_add(&b, s + i, (size_t)l);
            i += (size_t)l;
        } else {
            kiln_buf_add(&b, "\xEF\xBF\xBD", 3);
            i++;
        }
    }
    json_t *j = json_stringn(b.p ? b.p : "", b.len);
    kiln_buf_free(&b);
    return j;
}

/* ---- field readers: 0 ok / absent (value untouched), else HTTP status ------------------- */

static int get_real(json_t *root, const char *key, double lo, double hi, int lo_open, float *out,
                    kiln_srv_err *e) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) return kiln_srv_err_set(e, 400, key, "'%s' must be a number", key);
    double d = json_number_value(v);
    if (!isfinite(d) || d < lo || d > hi || (lo_open && d == lo))
        return kiln_srv_err_set(e, 400, key, "'%s' must be in %s%g, %g], got %g", key, lo_open ? "(" : "[",
                                lo, hi, d);
    *out = (float)d;
    return 0;
}

static int get_int(json_t *root, const char *key, long long lo, long long hi, long long *out,
                   kiln_srv_err *e) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    long long x;
    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d != floor(d) || fabs(d) > 9.0e18) return kiln_srv_err_set(e, 400, key, "'%s' must be an integer", key);
        x = (long long)d;
    } else {
        return kiln_srv_err_set(e, 400, key, "'%s' must be an integer", key);
    }
    if (x < lo || x > hi) return kiln_srv_err_set(e, 400, key, "'%s' must be in [%lld, %lld], got %lld", key, lo, hi, x);
    *out = x;
    return 0;
}

static int get_bool(json_t *root, const char *key, int *out, kiln_srv_err *e) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) return kiln_srv_err_set(e, 400, key, "'%s' must be a boolean", key);
    *out = json_is_true(v);
    return 0;
}

static char *own(kiln_srv_request *r, char *s) {
    if (!s) return NULL;
    char **o = kiln_realloc(r->owned, sizeof *o * (size_t)(r->n_owned + 1));
    if (!o) { kiln_free(s); return NULL; }
    r->owned = o;
    r->owned[r->n_owned++] = s;
    return s;
}

static char *dump_owned(kiln_srv_request *r, json_t *j) {
    kiln_buf b = {0};
    if (kiln_srv_add_json(&b, j) < 0) { kiln_buf_free(&b); return NULL; }
    return own(r, b.p);
}

/* ---- the parts of a request ------------------------------------------------------------ */

static int parse_ids(json_t *arr, const char *param, int vocab, int32_t **out, int *n_out, kiln_srv_err *e) {
    size_t n = json_array_size(arr);
    int32_t *ids = kiln_malloc(sizeof *ids * (n ? n : 1));
    if (!ids) return kiln_srv_err_set(e, 500, NULL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(arr, i);
        if (!json_is_integer(v)) { kiln_free(ids); return kiln_srv_err_set(e, 400, param, "'%s' must hold token ids (integers)", param); }
        long long x = json_integer_value(v);
        if (x < 0 || x >= vocab) {
            kiln_free(ids);
            return kiln_srv_err_set(e, 400, param, "token id %lld in '%s' is out of range [0, %d)", x, param, vocab);
        }
        ids[i] = (int32_t)x;
    }
    *out = ids;
    *n_out = (int)n;
    return 0;
}

static int parse_prompt(kiln_srv_request *r, const kiln_srv_limits *lim, kiln_srv_err *e) {
    json_t *p = json_object_get(r->root, "prompt");
    if (!p || json_is_null(p)) return kiln_srv_err_set(e, 400, "prompt", "'prompt' is required");
    if (json_is_string(p)) {
        r->prompt_text = json_string_value(p);
        r->prompt_len = json_string_length(p);
        return 0;
    }
    if (!json_is_array(p)) return kiln_srv_err_set(e, 400, "prompt", "'prompt' must be a string, a list of token ids, or a list with one of those");
    size_t n = json_array_size(p);
    if (n == 0) return kiln_srv_err_set(e, 400, "prompt", "'prompt' must not be empty");
    json_t *first = json_array_get(p, 0);
    if (json_is_integer(first)) return parse_ids(p, "prompt", lim->vocab_size, &r->prompt_ids, &r->n_prompt_ids, e);
    if (n > 1) return kiln_srv_err_set(e, 400, "prompt", "a list of %zu prompts is not supported: send one prompt per request", n);
    if (json_is_string(first)) {
        r->prompt_text = json_string_value(first);
        r->prompt_len = json_string_length(first);
        return 0;
    }
    if (json_is_array(first) && json_array_size(first) > 0)
        return parse_ids(first, "prompt", lim->vocab_size, &r->prompt_ids, &r->n_prompt_ids, e);
    return kiln_srv_err_set(e, 400, "prompt", "'prompt' must be a string, a list of token ids, or a list with one of those");
}

/* content: string, null, or a list of {"type": "text", "text": ...} parts (and, on an assistant
 * message, {"type": "thinking", "thinking": ..., "closed": ...}, m->part_kinds): *out the text
 * parts joined by "\n" (vLLM's join, what the chatml / llama3 formats render), m->parts the texts
 * as given (the Mistral formats join them as mistral-common does) */
static int parse_content(kiln_srv_request *r, json_t *c, kiln_chat_msg *m, const char **out, kiln_srv_err *e) {
    *out = NULL;
    if (!c || json_is_null(c)) return 0;
    if (json_is_string(c)) { *out = json_string_value(c); return 0; }
    if (!json_is_array(c)) return kiln_srv_err_set(e, 400, "messages", "message 'content' must be a string or a list of text parts");
    kiln_buf b = {0};
    kiln_buf_add(&b, "", 0);
    size_t i, np = json_array_size(c);
    json_t *part;
    const char **parts = kiln_calloc(np ? np : 1, sizeof *parts);
    unsigned char *kinds = NULL;
    int n_text = 0;
    if (!parts || !own(r, (char *)parts)) {
        kiln_buf_free(&b);
        return kiln_srv_err_set(e, 500, NULL, "out of memory");
    }
    json_array_foreach(c, i, part) {
        const char *type = json_string_value(json_object_get(part, "type"));
        json_t *t = json_object_get(part, "text");
        if (type && (!strcmp(type, "image_url") || !strcmp(type, "image") || !strcmp(type, "input_image"))) {
            kiln_buf_free(&b);
            return kiln_srv_err_set(e, 400, "messages",
                                    "image inputs (\"%s\" content parts) are not supported: kiln runs the text model "
                                    "only (a multimodal checkpoint's vision encoder is not loaded)", type);
        }
        if (type && !strcmp(type, "thinking") && json_is_string(json_object_get(part, "thinking"))) {
            /* mistral-common's ThinkChunk: an assistant's reasoning, rendered by mistral-v13 */
            json_t *closed = json_object_get(part, "closed");
            if (strcmp(m->role, "assistant") || (closed && !json_is_boolean(closed))) {
                kiln_buf_free(&b);
                return kiln_srv_err_set(e, 400, "messages", "a \"thinking\" content part is for an assistant message "
                                        "({\"type\": \"thinking\", \"thinking\": text, \"closed\": bool})");
            }
            if (!kinds && !own(r, (char *)(kinds = kiln_calloc(np, 1)))) {
                kiln_buf_free(&b);
                return kiln_srv_err_set(e, 500, NULL, "out of memory");
            }
            kinds[i] = json_is_false(closed) ? 2 : 1;
            parts[i] = json_string_value(json_object_get(part, "thinking"));
            m->part_kinds = kinds;
            continue;
        }
        if (!json_is_object(part) || !type || strcmp(type, "text") != 0 || !json_is_string(t)) {
            kiln_buf_free(&b);
            return kiln_srv_err_set(e, 400, "messages", "only text content parts ({\"type\": \"text\", \"text\": ...}) are supported");
        }
        parts[i] = json_string_value(t);
        if (n_text++ > 0) kiln_buf_add(&b, "\n", 1); /* vLLM's "\n".join of the text parts */
        if (kiln_buf_add(&b, json_string_value(t), json_string_length(t)) < 0) {
            kiln_buf_free(&b);
            return kiln_srv_err_set(e, 500, NULL, "out of memory");
        }
    }
    if (!own(r, b.p)) return kiln_srv_err_set(e, 500, NULL, "out of memory");
    *out = b.p;
    m->parts = parts;
    m->n_parts = (int)np;
    return 0;
}

/* an assistant message's "reasoning_content" (or "reasoning"): a leading closed thinking part, as
 * mistral-common's AssistantMessage.from_openai makes it (string content becomes a text part) */
static int parse_reasoning(kiln_srv_request *r, json_t *msg, kiln_chat_msg *cm, size_t i, kiln_srv_err *e) {
    json_t *rc = json_object_get(msg, "reasoning_content"), *rs = json_object_get(msg, "reasoning");
    json_t *x = rc && !json_is_null(rc) ? rc : rs && !json_is_null(rs) ? rs : NULL;
    if (!x) return 0;
    if (!json_is_string(x)) return kiln_srv_err_set(e, 400, "messages", "messages[%zu].reasoning_content must be a string", i);
    if (cm->part_kinds)
        return kiln_srv_err_set(e, 400, "messages", "messages[%zu] has both thinking parts and reasoning_content", i);
    int n = cm->n_parts > 0 ? cm->n_parts : cm->content ? 1 : 0;
    const char **parts = kiln_calloc((size_t)n + 1, sizeof *parts);
    unsigned char *kinds = kiln_calloc((size_t)n + 1, 1);
    if (!own(r, (char *)parts) || !own(r, (char *)kinds)) {
        if (!parts) kiln_free(kinds);
        return kiln_srv_err_set(e, 500, NULL, "out of memory");
    }
    parts[0] = json_string_value(x);
    kinds[0] = 1;
    for (int k = 0; k < n; k++) parts[k + 1] = cm->n_parts > 0 ? cm->parts[k] : cm->content;
    cm->parts = parts;
    cm->part_kinds = kinds;
    cm->n_parts = n + 1;
    if (!cm->content) cm->content = "";
    return 0;
}

static int parse_messages(kiln_srv_request *r, kiln_srv_err *e) {
    json_t *m = json_object_get(r->root, "messages");
    if (!m || json_is_null(m)) return kiln_srv_err_set(e, 400, "messages", "'messages' is required");
    if (!json_is_array(m)) return kiln_srv_err_set(e, 400, "messages", "'messages' must be a list");
    size_t n = json_array_size(m);
    if (n == 0) return kiln_srv_err_set(e, 400, "messages", "'messages' must not be empty");
    if (n > KILN_SRV_MAX_MESSAGES) return kiln_srv_err_set(e, 400, "messages", "at most %d messages", KILN_SRV_MAX_MESSAGES);
    r->msgs = kiln_calloc(n, sizeof *r->msgs);
    if (!r->msgs) return kiln_srv_err_set(e, 500, NULL, "out of memory");
    r->n_msgs = (int)n;
    for (size_t i = 0; i < n; i++) {
        json_t *msg = json_array_get(m, i);
        kiln_chat_msg *cm = &r->msgs[i];
        if (!json_is_object(msg)) return kiln_srv_err_set(e, 400, "messages", "messages[%zu] must be an object", i);
        const char *role = json_string_value(json_object_get(msg, "role"));
        if (!role) return kiln_srv_err_set(e, 400, "messages", "messages[%zu].role must be a string", i);
        if (!strcmp(role, "developer")) role = "system";
        if (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant") && strcmp(role, "tool"))
            return kiln_srv_err_set(e, 400, "messages", "messages[%zu].role must be system, user, assistant or tool", i);
        cm->role = role;
        int rc = parse_content(r, json_object_get(msg, "content"), cm, &cm->content, e);
        if (rc) return rc;
        if (!strcmp(role, "assistant") && (rc = parse_reasoning(r, msg, cm, i, e))) return rc;
        json_t *prefix = json_object_get(msg, "prefix"); /* mistral-common's continuation of the last assistant message */
        if (prefix && !json_is_null(prefix)) {
            if (!json_is_boolean(prefix)) return kiln_srv_err_set(e, 400, "messages", "messages[%zu].prefix must be a boolean", i);
            if (json_is_true(prefix) && strcmp(role, "assistant"))
                return kiln_srv_err_set(e, 400, "messages", "messages[%zu].prefix is only for an assistant message", i);
            cm->prefix = json_is_true(prefix);
        }
        json_t *tc = json_object_get(msg, "tool_calls");
        if (tc && !json_is_null(tc)) {
            if (strcmp(role, "assistant") || !json_is_array(tc))
                return kiln_srv_err_set(e, 400, "messages", "messages[%zu].tool_calls must be a list on an assistant message", i);
            if (json_array_size(tc) > 0 && !(cm->tool_calls_json = dump_owned(r, tc)))
                return kiln_srv_err_set(e, 500, NULL, "out of memory");
        }
        if (!cm->content && !cm->tool_calls_json && strcmp(role, "assistant"))
            return kiln_srv_err_set(e, 400, "messages", "messages[%zu].content is required", i);
        json_t *id = json_object_get(msg, "tool_call_id"), *name = json_object_get(msg, "name");
        if (id && !json_is_null(id) && !json_is_string(id))
            return kiln_srv_err_set(e, 400, "messages", "messages[%zu].tool_call_id must be a string", i);
        if (name && !json_is_null(name) && !json_is_string(name))
            return kiln_srv_err_set(e, 400, "messages", "messages[%zu].name must be a string", i);
        cm->tool_call_id = json_string_value(id);
        cm->name = json_string_value(name);
    }
    return 0;
}

static int parse_tools(kiln_srv_request *r, kiln_srv_err *e) {
    json_t *tools = json_object_get(r->root, "tools"), *choice = json_object_get(r->root, "tool_choice");
    int have_tools = tools && !json_is_null(tools);
    if (have_tools) {
        if (!json_is_array(tools)) return kiln_srv_err_set(e, 400, "tools", "'tools' must be a list");
        size_t i;
        json_t *t;
        json_array_foreach(tools, i, t) {
            const char *type = json_string_value(json_object_get(t, "type"));
            json_t *fn = json_object_get(t, "function");
            if (!json_is_object(t) || !type || strcmp(type, "function") || !json_is_object(fn) ||
                !json_is_string(json_object_get(fn, "name")))
                return kiln_srv_err_set(e, 400, "tools", "tools[%zu] must be {\"type\": \"function\", \"function\": {\"name\": ...}}", i);
        }
        if (json_array_size(tools) == 0) have_tools = 0;
    }
    r->tools_mode = have_tools ? KILN_SRV_TOOLS_AUTO : KILN_SRV_TOOLS_NONE;
    if (choice && !json_is_null(choice)) {
        if (json_is_string(choice)) {
            const char *c = json_string_value(choice);
            if (!strcmp(c, "none")) r->tools_mode = KILN_SRV_TOOLS_NONE;
            else if (!strcmp(c, "auto")) { /* as given */ }
            else if (!strcmp(c, "required")) {
                if (!have_tools) return kiln_srv_err_set(e, 400, "tool_choice", "tool_choice \"required\" needs 'tools'");
                r->tool_forced = 1;
            } else return kiln_srv_err_set(e, 400, "tool_choice", "'tool_choice' must be \"none\", \"auto\", \"required\" or a named function");
            if (!strcmp(c, "auto") && !have_tools)
                return kiln_srv_err_set(e, 400, "tool_choice", "tool_choice \"auto\" needs 'tools'");
        } else if (json_is_object(choice)) {
            const char *nm = json_string_value(json_object_get(json_object_get(choice, "function"), "name"));
            if (!nm) return kiln_srv_err_set(e, 400, "tool_choice", "a named tool_choice is {\"type\": \"function\", \"function\": {\"name\": ...}}");
            int found = 0;
            size_t i;
            json_t *t;
            if (have_tools)
                json_array_foreach(tools, i, t) found |= !strcmp(json_string_value(json_object_get(json_object_get(t, "function"), "name")), nm);
            if (!found) return kiln_srv_err_set(e, 400, "tool_choice", "tool_choice names '%.100s', which is not in 'tools'", nm);
            r->tool_forced = 2;
            r->tool_name = nm;
        } else {
            return kiln_srv_err_set(e, 400, "tool_choice", "'tool_choice' must be a string or an object");
        }
    }
    r->parallel_tool_calls = 1;
    int rc = get_bool(r->root, "parallel_tool_calls", &r->parallel_tool_calls, e);
    if (rc) return rc;
    if (r->tool_forced && r->constraint_kind)
        return kiln_srv_err_set(e, 400, "tool_choice", "a forced tool_choice cannot be combined with %s", r->constraint_param);
    if (r->tools_mode != KILN_SRV_TOOLS_NONE && !(r->tools_json = dump_owned(r, tools)))
        return kiln_srv_err_set(e, 500, NULL, "out of memory");
    return 0;
}

static int parse_stop(kiln_srv_request *r, kiln_srv_err *e) {
    json_t *s = json_object_get(r->root, "stop");
    if (!s || json_is_null(s)) return 0;
    size_t n = json_is_array(s) ? json_array_size(s) : 1;
    if (!json_is_string(s) && !json_is_array(s)) return kiln_srv_err_set(e, 400, "stop", "'stop' must be a string or a list of strings");
    if (n > KILN_SRV_MAX_STOP) return kiln_srv_err_set(e, 400, "stop", "at most %d stop strings", KILN_SRV_MAX_STOP);
    r->stops = kiln_calloc(n ? n : 1, sizeof *r->stops);
    if (!r->stops) return kiln_srv_err_set(e, 500, NULL, "out of memory");
    int k = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_is_array(s) ? json_array_get(s, i) : s;
        if (!json_is_string(v)) return kiln_srv_err_set(e, 400, "stop", "'stop' must be a string or a list of strings");
        if (json_string_length(v) == 0) continue; /* an empty stop string never matches: dropped */
        r->stops[k++] = json_string_value(v);
    }
    r->params.stop_strings = r->stops;
    r->params.n_stop_strings = k;
    return 0;
}

static int parse_logit_bias(kiln_srv_request *r, const kiln_srv_limits *lim, kiln_srv_err *e) {
    json_t *b = json_object_get(r->root, "logit_bias");
    if (!b || json_is_null(b)) return 0;
    if (!json_is_object(b)) return kiln_srv_err_set(e, 400, "logit_bias", "'logit_bias' must be an object {\"token id\": bias}");
    size_t n = json_object_size(b);
    if (n == 0) return 0;
    if (n > KILN_SRV_MAX_BIAS) return kiln_srv_err_set(e, 400, "logit_bias", "at most %d logit_bias entries", KILN_SRV_MAX_BIAS);
    r->bias_ids = kiln_malloc(sizeof *r->bias_ids * n);
    r->bias_values = kiln_malloc(sizeof *r->bias_values * n);
    if (!r->bias_ids || !r->bias_values) return kiln_srv_err_set(e, 500, NULL, "out of memory");
    const char *key;
    json_t *v;
    int k = 0;
    json_object_foreach(b, key, v) {
        char *end;
        long long id = strtoll(key, &end, 10);
        if (!*key || *end || id < 0 || id >= lim->vocab_size)
            return kiln_srv_err_set(e, 400, "logit_bias", "logit_bias key '%.40s' is not a token id in [0, %d)", key, lim->vocab_size);
        if (!json_is_number(v) || !isfinite(json_number_value(v)) || fabs(json_number_value(v)) > 100)
            return kiln_srv_err_set(e, 400, "logit_bias", "logit_bias values must be numbers in [-100, 100]");
        r->bias_ids[k] = (int32_t)id;
        r->bias_values[k] = (float)json_number_value(v);
        k++;
    }
    r->params.sampling.bias_ids = r->bias_ids;
    r->params.sampling.bias_values = r->bias_values;
    r->params.sampling.n_bias = k;
    return 0;
}

/* fields that need features kiln does not have: refused rather than ignored */
/* one constraint source: kind + text (a JSON value is dumped), at most one per request */
static int set_constraint(kiln_srv_request *r, int kind, json_t *v, const char *param, kiln_srv_err *e) {
    if (r->constraint_kind)
        return kiln_srv_err_set(e, 400, param, "'%s' and '%s' both constrain the output: give one", r->constraint_param, param);
    const char *t = "";
    size_t n = 0;
    if (json_is_string(v) && kind != KILN_CONSTRAINT_CHOICE) {
        t = json_string_value(v);
        n = json_string_length(v);
        if (kind == KILN_CONSTRAINT_JSON_SCHEMA && !n) return kiln_srv_err_set(e, 400, param, "'%s' is empty", param);
    } else if (v) {
        if (kind == KILN_CONSTRAINT_CHOICE && !json_is_array(v)) return kiln_srv_err_set(e, 400, param, "'%s' must be a list of strings", param);
        if (kind == KILN_CONSTRAINT_JSON_SCHEMA && !json_is_object(v) && !json_is_boolean(v))
            return kiln_srv_err_set(e, 400, param, "'%s' must be a JSON schema (an object)", param);
        if ((kind == KILN_CONSTRAINT_REGEX || kind == KILN_CONSTRAINT_GRAMMAR) && !json_is_string(v))
            return kiln_srv_err_set(e, 400, param, "'%s' must be a string", param);
        if (!(t = dump_owned(r, v))) return kiln_srv_err_set(e, 500, NULL, "out of memory");
        n = strlen(t);
    }
    r->constraint_kind = kind;
    r->constraint_text = t;
    r->constraint_len = n;
    r->constraint_param = param;
    return 0;
}

/* response_format, structured_outputs (vLLM >= 0.10) and the older guided_* fields */
static int parse_constraint(kiln_srv_request *r, kiln_srv_err *e) {
    json_t *root = r->root, *v = json_object_get(root, "response_format");
    int rc;
    if (v && !json_is_null(v)) {
        const char *t = json_string_value(json_object_get(v, "type"));
        if (!json_is_object(v) || !t) return kiln_srv_err_set(e, 400, "response_format", "'response_format' must be {\"type\": ...}");
        if (!strcmp(t, "json_object")) {
            if ((rc = set_constraint(r, KILN_CONSTRAINT_JSON_OBJECT, NULL, "response_format", e))) return rc;
        } else if (!strcmp(t, "json_schema")) {
            json_t *js = json_object_get(v, "json_schema"), *s = js ? json_object_get(js, "schema") : NULL;
            json_t *strict = js ? json_object_get(js, "strict") : NULL;
            if (!json_is_object(js)) return kiln_srv_err_set(e, 400, "response_format", "response_format json_schema needs 'json_schema': {\"name\", \"schema\"}");
            if (strict && !json_is_boolean(strict) && !json_is_null(strict)) return kiln_srv_err_set(e, 400, "response_format", "json_schema.strict must be a boolean");
            if (!s) s = json_object_get(js, "json_schema"); /* some clients nest it so */
            if (!s) return kiln_srv_err_set(e, 400, "response_format", "response_format json_schema has no 'schema'");
            if ((rc = set_constraint(r, KILN_CONSTRAINT_JSON_SCHEMA, s, "response_format", e))) return rc;
        } else if (strcmp(t, "text")) {
            return kiln_srv_err_set(e, 400, "response_format", "response_format type '%.64s' (known: text, json_object, json_schema)", t);
        }
    }
    static const struct { const char *name; int kind; } guided[] = {
        {"guided_json", KILN_CONSTRAINT_JSON_SCHEMA}, {"guided_regex", KILN_CONSTRAINT_REGEX},
        {"guided_choice", KILN_CONSTRAINT_CHOICE}, {"guided_grammar", KILN_CONSTRAINT_GRAMMAR}};
    for (size_t i = 0; i < sizeof guided / sizeof *guided; i++) {
        v = json_object_get(root, guided[i].name);
        if (v && !json_is_null(v) && (rc = set_constraint(r, guided[i].kind, v, guided[i].name, e))) return rc;
    }
    v = json_object_get(root, "structured_outputs");
    if (v && !json_is_null(v)) {
        if (!json_is_object(v)) return kiln_srv_err_set(e, 400, "structured_outputs", "'structured_outputs' must be an object");
        static const struct { const char *name; int kind; } so[] = {
            {"json", KILN_CONSTRAINT_JSON_SCHEMA}, {"regex", KILN_CONSTRAINT_REGEX},
            {"choice", KILN_CONSTRAINT_CHOICE}, {"grammar", KILN_CONSTRAINT_GRAMMAR}};
        for (size_t i = 0; i < sizeof so / sizeof *so; i++) {
            json_t *x = json_object_get(v, so[i].name);
            if (x && !json_is_null(x) && (rc = set_constraint(r, so[i].kind, x, "structured_outputs", e))) return rc;
        }
        json_t *jo = json_object_get(v, "json_object");
        if (json_is_true(jo) && (rc = set_constraint(r, KILN_CONSTRAINT_JSON_OBJECT, NULL, "structured_outputs", e))) return rc;
        const char *known[] = {"json", "regex", "choice", "grammar", "json_object", "disable_fallback", "disable_any_whitespace",
                               "disable_additional_properties", "whitespace_pattern", NULL};
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) {
            int ok = 0;
            for (int i = 0; known[i]; i++) ok |= !strcmp(k, known[i]);
            if (!ok && !json_is_null(x)) return kiln_srv_err_set(e, 400, "structured_outputs", "structured_outputs.%.64s is not supported", k);
        }
    }
    return 0;
}

static int refuse_unsupported(kiln_srv_request *r, kiln_srv_err *e) {
    json_t *root = r->root, *v;
    long long n = 1;
    int rc = get_int(root, "n", 1, 1 << 20, &n, e);
    if (rc) return rc;
    if (n != 1) return kiln_srv_err_set(e, 400, "n", "only n=1 is supported (got %lld): send n requests instead", n);
    long long best_of = 1;
    if ((rc = get_int(root, "best_of", 1, 1 << 20, &best_of, e))) return rc;
    if (best_of != 1) return kiln_srv_err_set(e, 400, "best_of", "only best_of=1 is supported");
    if ((rc = parse_constraint(r, e))) return rc;
    int flag = 0;
    if ((rc = get_bool(root, "echo", &flag, e))) return rc;
    if (flag) return kiln_srv_err_set(e, 400, "echo", "echo=true is not supported");
    flag = 0;
    if ((rc = get_bool(root, "use_beam_search", &flag, e))) return rc;
    if (flag) return kiln_srv_err_set(e, 400, "use_beam_search", "beam search is not supported");
    v = json_object_get(root, "suffix");
    if (v && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0))
        return kiln_srv_err_set(e, 400, "suffix", "'suffix' is not supported");
    v = json_object_get(root, "prompt_logprobs");
    if (v && !json_is_null(v)) return kiln_srv_err_set(e, 400, "prompt_logprobs", "prompt_logprobs are not supported");
    return 0;
}

static int parse_body(kiln_srv_request *r, const kiln_srv_limits *lim, kiln_srv_err *e) {
    json_t *root = r->root;
    int rc;
    json_t *model = json_object_get(root, "model");
    if (model && !json_is_null(model)) {
        if (!json_is_string(model)) return kiln_srv_err_set(e, 400, "model", "'model' must be a string");
        if (lim->model_name && strcmp(json_string_value(model), lim->model_name))
            return kiln_srv_err_set(e, 404, "model", "The model `%.200s` does not exist.", json_string_value(model));
    }
    if ((rc = refuse_unsupported(r, e))) return rc;
    if (r->kind == KILN_SRV_COMPLETION) {
        if ((rc = parse_prompt(r, lim, e))) return rc;
    } else {
        if ((rc = parse_messages(r, e))) return rc;
        if ((rc = parse_tools(r, e))) return rc;
        r->add_generation_prompt = 1;
        if ((rc = get_bool(root, "add_generation_prompt", &r->add_generation_prompt, e))) return rc;
    }
    if ((rc = get_bool(root, "stream", &r->stream, e))) return rc;
    json_t *so = json_object_get(root, "stream_options");
    if (so && !json_is_null(so)) {
        if (!r->stream) return kiln_srv_err_set(e, 400, "stream_options", "'stream_options' is only allowed with stream=true");
        if (!json_is_object(so)) return kiln_srv_err_set(e, 400, "stream_options", "'stream_options' must be an object");
        if ((rc = get_bool(so, "include_usage", &r->include_usage, e))) return rc;
    }
    long long x = -1;
    if ((rc = get_int(root, "max_tokens", 1, 1LL << 30, &x, e))) return rc;
    if (r->kind == KILN_SRV_CHAT && (rc = get_int(root, "max_completion_tokens", 1, 1LL << 30, &x, e))) return rc;
    r->max_tokens = (int)x;
    x = 0;
    if ((rc = get_int(root, "min_tokens", 0, 1LL << 30, &x, e))) return rc;
    if (r->max_tokens > 0 && x > r->max_tokens)
        return kiln_srv_err_set(e, 400, "min_tokens", "'min_tokens' (%lld) must not exceed max_tokens (%d)", x, r->max_tokens);
    r->params.min_tokens = (int)x;
    if ((rc = get_bool(root, "ignore_eos", &r->params.ignore_eos, e))) return rc;
    /* kiln extension: opt out of speculative decoding on a server that speculates */
    if ((rc = get_bool(root, "no_speculation", &r->params.no_speculation, e))) return rc;

    kiln_sampling *s = &r->params.sampling;
    s->temperature = 1.0f;
    if ((rc = get_real(root, "temperature", 0, 2, 0, &s->temperature, e))) return rc;
    if ((rc = get_real(root, "top_p", 0, 1, 1, &s->top_p, e))) return rc;
    x = 0;
    if ((rc = get_int(root, "top_k", -1, 1 << 30, &x, e))) return rc;
    s->top_k = x < 0 ? 0 : (int)x;
    if ((rc = get_real(root, "min_p", 0, 1, 0, &s->min_p, e))) return rc;
    if ((rc = get_real(root, "presence_penalty", -2, 2, 0, &s->presence_penalty, e))) return rc;
    if ((rc = get_real(root, "frequency_penalty", -2, 2, 0, &s->frequency_penalty, e))) return rc;
    if ((rc = get_real(root, "repetition_penalty", 0, 2, 1, &s->repetition_penalty, e))) return rc;
    json_t *seed = json_object_get(root, "seed");
    if (seed && !json_is_null(seed)) {
        if (!json_is_integer(seed)) return kiln_srv_err_set(e, 400, "seed", "'seed' must be an integer");
        s->seed = (uint64_t)json_integer_value(seed);
        s->has_seed = 1;
    }
    if ((rc = parse_stop(r, e))) return rc;
    json_t *sti = json_object_get(root, "stop_token_ids");
    if (sti && !json_is_null(sti)) {
        if (!json_is_array(sti)) return kiln_srv_err_set(e, 400, "stop_token_ids", "'stop_token_ids' must be a list of token ids");
        if (json_array_size(sti) > KILN_SRV_MAX_STOP_IDS)
            return kiln_srv_err_set(e, 400, "stop_token_ids", "at most %d stop_token_ids", KILN_SRV_MAX_STOP_IDS);
        if (json_array_size(sti) > 0) {
            if ((rc = parse_ids(sti, "stop_token_ids", lim->vocab_size, &r->stop_ids, &r->params.n_stop_ids, e))) return rc;
            r->params.stop_ids = r->stop_ids;
        }
    }
    if ((rc = parse_logit_bias(r, lim, e))) return rc;

    r->logprobs = -1;
    if (r->kind == KILN_SRV_COMPLETION) {
        json_t *lp = json_object_get(root, "logprobs");
        if (lp && json_is_boolean(lp)) return kiln_srv_err_set(e, 400, "logprobs", "'logprobs' must be an integer for completions");
        x = -1;
        if ((rc = get_int(root, "logprobs", 0, KILN_SRV_MAX_LOGPROBS, &x, e))) return rc;
        r->logprobs = (int)x;
        if (x >= 0) {
            s->logprobs = 1;
            s->n_logprobs = (int)x;
        }
    } else {
        int lp = 0;
        if ((rc = get_bool(root, "logprobs", &lp, e))) return rc;
        x = 0;
        if ((rc = get_int(root, "top_logprobs", 0, KILN_SRV_MAX_LOGPROBS, &x, e))) return rc;
        if (x > 0 && !lp) return kiln_srv_err_set(e, 400, "top_logprobs", "'top_logprobs' needs logprobs=true");
        r->logprobs = lp;
        r->top_logprobs = (int)x;
        s->logprobs = lp;
        if (lp) s->n_logprobs = (int)x;
    }
    return 0;
}

int kiln_srv_parse_request(kiln_srv_request *r, kiln_srv_kind kind, const char *body, size_t len,
                           const kiln_srv_limits *lim, kiln_srv_err *e) {
    kiln_json_enter(); /* the hook for callers without a server; this thread's OOM flag cleared */
    memset(r, 0, sizeof *r);
    r->kind = kind;
    kiln_request_params_default(&r->params);
    if (len > KILN_SRV_MAX_BODY) return kiln_srv_err_set(e, 413, NULL, "request body too large (%zu bytes; limit %u)", len, KILN_SRV_MAX_BODY);
    if (!kiln_srv_utf8_valid(body, len)) return kiln_srv_err_set(e, 400, NULL, "request body is not valid UTF-8");
    if (!kiln_srv_json_depth_ok(body, len, KILN_SRV_MAX_DEPTH))
        return kiln_srv_err_set(e, 400, NULL, "the request body nests deeper than %d arrays and objects", KILN_SRV_MAX_DEPTH);
    json_error_t je;
    r->root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!r->root) {
        if (kiln_json_oom(&je)) return kiln_srv_err_set(e, 500, NULL, "out of memory parsing the request body");
        return kiln_srv_err_set(e, 400, NULL, "invalid JSON at line %d column %d: %s", je.line, je.column, je.text);
    }
    if (!json_is_object(r->root)) {
        kiln_srv_request_free(r);
        return kiln_srv_err_set(e, 400, NULL, "the request body must be a JSON object");
    }
    int rc = parse_body(r, lim, e);
    if (rc) kiln_srv_request_free(r);
    return rc;
}

void kiln_srv_request_free(kiln_srv_request *r) {
    if (r->root) json_decref(r->root);
    kiln_free(r->prompt_ids);
    kiln_free(r->msgs);
    for (int i = 0; i < r->n_owned; i++) kiln_free(r->owned[i]);
    kiln_free(r->owned);
    kiln_free(r->stops);
    kiln_free(r->stop_ids);
    kiln_free(r->bias_ids);
    kiln_free(r->bias_values);
    memset(r, 0, sizeof *r);
}

/* ---- responses -------------------------------------------------------------------------- */

const char *kiln_srv_finish_str(kiln_finish f, int tool_calls) {
    switch (f) {
    case KILN_FINISH_STOP: return tool_calls ? "tool_calls" : "stop";
    case KILN_FINISH_LENGTH: return "length";
    case KILN_FINISH_ABORT: return "abort";
    default: return NULL;
    }
}

json_t *kiln_srv_usage(int n_prompt, int n_output, int n_cached) {
    json_t *u = json_object();
    json_object_set_new(u, "prompt_tokens", json_integer(n_prompt));
    json_object_set_new(u, "completion_tokens", json_integer(n_output));
    json_object_set_new(u, "total_tokens", json_integer((json_int_t)n_prompt + n_output));
    if (n_cached > 0) {
        json_t *d = json_object();
        json_object_set_new(d, "cached_tokens", json_integer(n_cached));
        json_object_set_new(u, "prompt_tokens_details", d);
    }
    return u;
}

static json_t *jlp(float lp) { return json_real(isfinite(lp) ? lp : -9999.0); }

static const char *piece_of(kiln_srv_piece_fn piece, void *pctx, int32_t id, size_t *len, char *tmp, size_t tn) {
    const char *s = piece ? piece(pctx, id, len) : NULL;
    if (!s) {
        *len = (size_t)snprintf(tmp, tn, "token_id:%d", (int)id);
        return tmp;
    }
    return s;
}

static json_t *chat_lp_entry(int32_t id, float lp, kiln_srv_piece_fn piece, void *pctx) {
    char tmp[32];
    size_t n;
    const char *s = piece_of(piece, pctx, id, &n, tmp, sizeof tmp);
    json_t *o = json_object();
    json_object_set_new(o, "token", kiln_srv_jstr(s, n));
    json_object_set_new(o, "logprob", jlp(lp));
    json_t *bytes = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(bytes, json_integer((unsigned char)s[i]));
    json_object_set_new(o, "bytes", bytes);
    return o;
}

json_t *kiln_srv_logprobs(const kiln_srv_request *r, const kiln_srv_out *o, kiln_srv_piece_fn piece,
                          void *pctx) {
    if (r->logprobs < 0 || (r->kind == KILN_SRV_CHAT && r->logprobs == 0)) return NULL;
    int n_top = o->top ? o->n_top : 0;
    if (n_top > o->top_stride) n_top = o->top_stride;
    if (r->kind == KILN_SRV_CHAT) {
        json_t *content = json_array();
        for (int i = 0; i < o->n_ids; i++) {
            json_t *e = chat_lp_entry(o->ids[i], o->lps ? o->lps[i] : 0.0f, piece, pctx);
            json_t *tops = json_array();
            for (int k = 0; k < n_top; k++) {
                const kiln_token_logprob *t = &o->top[(size_t)i * (size_t)o->top_stride + (size_t)k];
                json_array_append_new(tops, chat_lp_entry(t->id, t->logprob, piece, pctx));
            }
            json_object_set_new(e, "top_logprobs", tops);
            json_array_append_new(content, e);
        }
        json_t *lp = json_object();
        json_object_set_new(lp, "content", content);
        return lp;
    }
    json_t *tokens = json_array(), *tlp = json_array(), *tops = json_array(), *offs = json_array();
    size_t off = o->text_offset;
    for (int i = 0; i < o->n_ids; i++) {
        char tmp[32];
        size_t n;
        const char *s = piece_of(piece, pctx, o->ids[i], &n, tmp, sizeof tmp);
        json_array_append_new(tokens, kiln_srv_jstr(s, n));
        json_array_append_new(tlp, jlp(o->lps ? o->lps[i] : 0.0f));
        json_array_append_new(offs, json_integer((json_int_t)off));
        off += n;
        json_t *top = json_object();
        for (int k = 0; k < n_top; k++) {
            const kiln_token_logprob *t = &o->top[(size_t)i * (size_t)o->top_stride + (size_t)k];
            size_t tn;
            const char *ts = piece_of(piece, pctx, t->id, &tn, tmp, sizeof tmp);
            json_t *key = kiln_srv_jstr(ts, tn);
            json_object_set_new(top, json_string_value(key), jlp(t->logprob));
            json_decref(key);
        }
        json_array_append_new(tops, top);
    }
    json_t *lp = json_object();
    json_object_set_new(lp, "tokens", tokens);
    json_object_set_new(lp, "token_logprobs", tlp);
    json_object_set_new(lp, "top_logprobs", tops);
    json_object_set_new(lp, "text_offset", offs);
    return lp;
}

static json_t *base_obj(const kiln_srv_meta *m, const char *object) {
    json_t *root = json_object();
    json_object_set_new(root, "id", json_string(m->id));
    json_object_set_new(root, "object", json_string(object));
    json_object_set_new(root, "created", json_integer(m->created));
    json_object_set_new(root, "model", kiln_srv_jstr(m->model, strlen(m->model)));
    return root;
}

static json_t *jfinish(const kiln_srv_out *o) {
    const char *f = kiln_srv_finish_str(o->finish, o->tool_calls_json != NULL || o->had_tool_calls);
    return f ? json_string(f) : json_null();
}

static json_t *tool_calls_value(const char *calls_json) {
    json_t *calls = json_loads(calls_json, 0, NULL);
    if (!json_is_array(calls)) {
        json_decref(calls);
        return json_array();
    }
    return calls;
}

json_t *kiln_srv_response(const kiln_srv_request *r, const kiln_srv_meta *m, const kiln_srv_out *o,
                          kiln_srv_piece_fn piece, void *pctx) {
    kiln_json_enter(); /* jansson's setters drop what they cannot allocate: watch for it */
    int chat = r->kind == KILN_SRV_CHAT;
    json_t *root = base_obj(m, chat ? "chat.completion" : "text_completion");
    json_t *choice = json_object();
    json_object_set_new(choice, "index", json_integer(0));
    if (chat) {
        json_t *msg = json_object();
        json_object_set_new(msg, "role", json_string("assistant"));
        json_object_set_new(msg, "content", o->tool_calls_json && o->text_len == 0 ? json_null() : kiln_srv_jstr(o->text, o->text_len));
        if (o->reasoning) json_object_set_new(msg, "reasoning_content", kiln_srv_jstr(o->reasoning, o->reasoning_len));
        if (o->tool_calls_json) json_object_set_new(msg, "tool_calls", tool_calls_value(o->tool_calls_json));
        json_object_set_new(choice, "message", msg);
    } else {
        json_object_set_new(choice, "text", kiln_srv_jstr(o->text, o->text_len));
    }
    json_t *lp = kiln_srv_logprobs(r, o, piece, pctx);
    json_object_set_new(choice, "logprobs", lp ? lp : json_null());
    json_object_set_new(choice, "finish_reason", jfinish(o));
    json_t *choices = json_array();
    json_array_append_new(choices, choice);
    json_object_set_new(root, "choices", choices);
    json_object_set_new(root, "usage", kiln_srv_usage(m->n_prompt, m->n_output, m->n_cached));
    if (kiln_json_oom(NULL)) { /* a hole somewhere: no partial answer passed on as whole */
        json_decref(root);
        return NULL;
    }
    return root;
}

/* one event "data: <obj>\n\n", or nothing at all (b as it was) when an allocation failed while
 * obj was built (kiln_json_enter at the builder's start) or written */
static int sse_obj(kiln_buf *b, json_t *obj) {
    size_t len0 = b->len;
    int rc = kiln_json_oom(NULL) || !obj ? -1 : kiln_buf_add(b, "data: ", 6);
    if (!rc) rc = kiln_srv_add_json(b, obj);
    if (!rc) rc = kiln_buf_add(b, "\n\n", 2);
    if (rc && b->p) {
        b->len = len0;
        b->p[len0] = 0;
    }
    json_decref(obj);
    return rc;
}

int kiln_srv_sse_chunk(kiln_buf *b, const kiln_srv_request *r, const kiln_srv_meta *m,
                       const kiln_srv_out *o, int first, kiln_srv_piece_fn piece, void *pctx) {
    kiln_json_enter(); /* sse_obj refuses an object with holes */
    int chat = r->kind == KILN_SRV_CHAT;
    json_t *root = base_obj(m, chat ? "chat.completion.chunk" : "text_completion");
    json_t *choice = json_object();
    json_object_set_new(choice, "index", json_integer(0));
    if (chat) {
        json_t *delta = json_object();
        if (first) json_object_set_new(delta, "role", json_string("assistant"));
        if (o->reasoning_len > 0) json_object_set_new(delta, "reasoning_content", kiln_srv_jstr(o->reasoning, o->reasoning_len));
        if (o->text_len > 0 || (first && !o->tool_calls_json && !o->reasoning_len))
            json_object_set_new(delta, "content", kiln_srv_jstr(o->text, o->text_len));
        if (o->tool_calls_json) {
            json_t *calls = tool_calls_value(o->tool_calls_json);
            size_t i;
            json_t *c;
            json_array_foreach(calls, i, c)
                if (!json_object_get(c, "index")) json_object_set_new(c, "index", json_integer((json_int_t)i));
            json_object_set_new(delta, "tool_calls", calls);
        }
        json_object_set_new(choice, "delta", delta);
    } else {
        json_object_set_new(choice, "text", kiln_srv_jstr(o->text, o->text_len));
    }
    json_t *lp = o->n_ids > 0 ? kiln_srv_logprobs(r, o, piece, pctx) : NULL;
    json_object_set_new(choice, "logprobs", lp ? lp : json_null());
    json_object_set_new(choice, "finish_reason", jfinish(o));
    json_t *choices = json_array();
    json_array_append_new(choices, choice);
    json_object_set_new(root, "choices", choices);
    if (r->include_usage) json_object_set_new(root, "usage", json_null());
    return sse_obj(b, root);
}

int kiln_srv_sse_usage(kiln_buf *b, const kiln_srv_request *r, const kiln_srv_meta *m) {
    kiln_json_enter();
    json_t *root = base_obj(m, r->kind == KILN_SRV_CHAT ? "chat.completion.chunk" : "text_completion");
    json_object_set_new(root, "choices", json_array());
    json_object_set_new(root, "usage", kiln_srv_usage(m->n_prompt, m->n_output, m->n_cached));
    return sse_obj(b, root);
}

int kiln_srv_sse_done(kiln_buf *b) { return kiln_buf_add(b, "data: [DONE]\n\n", 14); }

int kiln_srv_sse_error(kiln_buf *b, const kiln_srv_err *e) {
    kiln_json_enter();
    return sse_obj(b, err_obj(e));
}
