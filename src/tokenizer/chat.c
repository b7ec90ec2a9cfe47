/* chat.c: chat formats rendered straight to token ids, and Mistral tool-call parsing.
 *
 * Every piece of message text is encoded with kiln_tokenizer_encode(flags 0): never parsed for
 * control tokens, so "[INST]" or "<|im_end|>" typed by a user stays text. Control tokens are
 * looked up by name and inserted as ids.
 *
 *  mistral-v7 (mistral-common InstructRequestNormalizerV7 + InstructTokenizerV7): <s> then per turn
 *    system:    [SYSTEM_PROMPT] text [/SYSTEM_PROMPT]
 *    user:      ([AVAILABLE_TOOLS] tools-json [/AVAILABLE_TOOLS], before the last user turn only)
 *               [INST] text [/INST]
 *    assistant: text.rstrip(" ") ([TOOL_CALLS] calls-json) </s> (none when a prefix)
 *    tool:      [TOOL_RESULTS] call-id [TOOL_CONTENT] text [/TOOL_RESULTS]
 *  mistral-v11 (InstructRequestNormalizerV13 + InstructTokenizerV11): as v7 but each tool call is
 *    [TOOL_CALLS] name [CALL_ID] id [ARGS] arguments-json (no [CALL_ID] when the call has no id),
 *    and a run of tool results is put in the order of the calls they answer
 *  mistral-v13 (InstructRequestNormalizerV13 + InstructTokenizerV13): as v11 but calls are
 *    [TOOL_CALLS] name [ARGS] arguments-json, results [TOOL_RESULTS] text [/TOOL_RESULTS] (no id),
 *    and the tools go before the FIRST user turn. Both validate as MistralRequestValidatorV11/V13:
 *    tool results answer the calls before them by id; v13 ids are any text but "" and "null".
 *  mistral-v3 (mistral-common's InstructRequestNormalizer + InstructTokenizerV3, tekken v3 files):
 *    <s>; system texts joined by "\n\n" into one prompt put before the LAST user text
 *    ("system\n\nuser", one piece); runs of user (assistant) messages merged with "\n\n"; an
 *    empty user turn first when the first turn is not a user's; then per turn
 *    user:      ([AVAILABLE_TOOLS] tools-json [/AVAILABLE_TOOLS], last user turn only) [INST] text [/INST]
 *    assistant: text.rstrip(" ") | [TOOL_CALLS] [{"name", "arguments", "id"}...]   then </s>
 *    tool:      [TOOL_RESULTS] {"content": result (parsed when JSON), "call_id": id} [/TOOL_RESULTS]
 *  JSON is written as Python's json.dumps(ensure_ascii=False) does (", " and ": "), which is
 *  what mistral-common tokenizes.
 *  chatml: <|im_start|>role\ncontent<|im_end|>\n per message (one text piece "role\ncontent"),
 *    the template's literal default system prompt first when there is one (SmolLM2), and
 *    <|im_start|>assistant\n as the generation prompt. With tools, as Qwen2.5's template: the
 *    system turn (the first system message, else the template's default, else "You are a helpful
 *    assistant.") gets "\n\n# Tools ... <tools>\n{tool}...\n</tools>\n\nFor each function call ...";
 *    an assistant turn with tool_calls is "assistant[\ncontent]" + per call
 *    "\n<tool_call>\n{\"name\": \"N\", \"arguments\": ARGS}\n</tool_call>" (ARGS the arguments
 *    string parsed and written as json.dumps); consecutive tool messages share one user turn of
 *    "\n<tool_response>\nresult\n</tool_response>" pieces (vLLM's hermes parser reads the calls).
 *  llama3: <|begin_of_text|> then <|start_header_id|>role<|end_header_id|>\n\ncontent.strip()<|eot_id|>
 *    per message ("\n\n" + content one text piece; strip() is Python's, Unicode whitespace
 *    included, as Jinja's `trim` in Meta's template), <|start_header_id|>assistant<|end_header_id|>\n\n
 *    as the generation prompt. With tools, or when the model's template is Llama 3.1/3.2's (it
 *    writes "Cutting Knowledge Date"), as that template does with its defaults
 *    (tools_in_user_message true, no builtin_tools): a system turn always, "\n\n" + ["Environment:
 *    ipython\n" with tools] + "Cutting Knowledge Date: December 2023\nToday Date: D\n\n" + the
 *    first system message trimmed (D: today as "%d %b %Y" when the template calls strftime_now
 *    (3.2), else its literal date_string default, "26 Jul 2024" in 3.1); the tools (each as
 *    json.dumps(indent=4)) and their instructions go into the first user turn; an assistant turn
 *    with (exactly one) tool call is {"name": "N", "parameters": ARGS} (ARGS the arguments string
 *    parsed, as vLLM does before rendering); tool results are `ipython` turns holding the result
 *    string as JSON (the template's tojson of a string). Model output is read by
 *    src/server/llama3_tools.c (vLLM's llama3_json parser).
 *  Both Mistral formats first check the conversation as mistral-common's request validator does
 *  (mode "test": role order, the last message, tool calls answered, ids and names) and refuse
 *  what it refuses, naming the message and the rule; both merge runs of user (assistant)
 *  messages as its normaliser does ("\n\n", text parts of one message too); an assistant
 *  message with prefix set, last, is rendered without </s> (continuation).
 * The format comes from the name, else from the tokenizer's metadata: tekken config.version
 * (v3, v7, v11, v13; others refused by name), or the chat template text recognised by its markers.
 */
#include "tokenizer/chat.h"
#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "tokenizer/tok_internal.h"
#include "util/alloc.h"
#include "util/error.h"

#define OOM() KILN_ERR(err, KILN_ERR_OOM, "chat: out of memory")

/* ---- JSON as Python's json.dumps(obj, ensure_ascii=False) ---- */
static int py_str(kiln_buf *b, const char *s, size_t n) {
    if (kiln_buf_addc(b, '"')) return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char e[8];
        const char *r = NULL;
        if (c == '"') r = "\\\"";
        else if (c == '\\') r = "\\\\";
        else if (c == '\n') r = "\\n";
        else if (c == '\r') r = "\\r";
        else if (c == '\t') r = "\\t";
        else if (c == '\b') r = "\\b";
        else if (c == '\f') r = "\\f";
        else if (c < 0x20 || c == 0x7f) {
            if (c == 0x7f) { if (kiln_buf_addc(b, (char)c)) return -1; continue; }
            snprintf(e, sizeof e, "\\u%04x", c);
            r = e;
        }
        if (r ? kiln_buf_add(b, r, strlen(r)) : kiln_buf_addc(b, (char)c)) return -1;
    }
    return kiln_buf_addc(b, '"');
}
/* Python's float repr: the shortest digits that round-trip, positional when the decimal exponent
 * is in [-4, 16) ("100000.0", "0.0001"), else "1e+16" / "1.5e-05". */
static int py_real(kiln_buf *b, double v) {
    char s[64];
    if (isnan(v)) return kiln_buf_add(b, "NaN", 3);
    if (isinf(v)) return v > 0 ? kiln_buf_add(b, "Infinity", 8) : kiln_buf_add(b, "-Infinity", 9);
    int p;
    for (p = 1; p < 17; p++) { /* p significant digits */
        snprintf(s, sizeof s, "%.*e", p - 1, v);
        if (strtod(s, NULL) == v) break;
    }
    snprintf(s, sizeof s, "%.*e", p - 1, v);
    int ex = atoi(strchr(s, 'e') + 1);
    if (ex >= -4 && ex < 16) {
        snprintf(s, sizeof s, "%.*f", p - 1 - ex > 0 ? p - 1 - ex : 0, v);
        if (!strchr(s, '.')) strcat(s, ".0");
    }
    return kiln_buf_add(b, s, strlen(s));
}
static int py_dump(kiln_buf *b, json_t *v) {
    char s[32];
    size_t i;
    json_t *x;
    const char *k;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        int first = 1;
        if (kiln_buf_addc(b, '{')) return -1;
        json_object_foreach(v, k, x) {
            if ((!first && kiln_buf_add(b, ", ", 2)) || py_str(b, k, strlen(k)) || kiln_buf_add(b, ": ", 2) ||
                py_dump(b, x))
                return -1;
            first = 0;
        }
        return kiln_buf_addc(b, '}');
    }
    case JSON_ARRAY:
        if (kiln_buf_addc(b, '[')) return -1;
        json_array_foreach(v, i, x) {
            if ((i && kiln_buf_add(b, ", ", 2)) || py_dump(b, x)) return -1;
        }
        return kiln_buf_addc(b, ']');
    case JSON_STRING: return py_str(b, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        snprintf(s, sizeof s, "%lld", (long long)json_integer_value(v));
        return kiln_buf_add(b, s, strlen(s));
    case JSON_REAL: return py_real(b, json_real_value(v));
    case JSON_TRUE: return kiln_buf_add(b, "true", 4);
    case JSON_FALSE: return kiln_buf_add(b, "false", 5);
    default: return kiln_buf_add(b, "null", 4);
    }
}

/* ---- formats ---- */
typedef enum { FMT_MISTRAL_V7, FMT_CHATML, FMT_LLAMA3, FMT_MISTRAL_V3, FMT_MISTRAL_V11, FMT_MISTRAL_V13, FMT_COUNT } chat_fmt;
static const char *k_names[] = {"mistral-v7", "chatml", "llama3", "mistral-v3", "mistral-v11", "mistral-v13"};
#define KNOWN_NAMES "mistral-v13, mistral-v11, mistral-v7, mistral-v3, chatml, llama3"
/* the mistral-common tokenizer version of a Mistral format (3, 7, 11, 13), 0 for the others */
static int mistral_ver(chat_fmt f) {
    return f == FMT_MISTRAL_V3 ? 3 : f == FMT_MISTRAL_V7 ? 7 : f == FMT_MISTRAL_V11 ? 11 : f == FMT_MISTRAL_V13 ? 13 : 0;
}

static int resolve(const kiln_tokenizer *t, const char *name, chat_fmt *f, kiln_error *err) {
    if (name && *name && strcmp(name, "auto")) {
        for (int i = 0; i < FMT_COUNT; i++)
            if (!strcmp(name, k_names[i])) {
                *f = (chat_fmt)i;
                return KILN_OK;
            }
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "chat: unknown chat template \"%s\" (known: " KNOWN_NAMES ")", name);
    }
    const char *ver = kiln_tokenizer_version(t), *ct = kiln_tokenizer_chat_template(t);
    if (kiln_tokenizer_kind(t) == KILN_TOK_KIND_TEKKEN) {
        /* as mistral-common's MistralTokenizer.from_file: the file's config.version picks the
         * instruct tokenizer; a version kiln does not render is refused by name */
        static const struct { const char *v; chat_fmt f; } by_ver[] = {
            {"v3", FMT_MISTRAL_V3}, {"v7", FMT_MISTRAL_V7}, {"v11", FMT_MISTRAL_V11}, {"v13", FMT_MISTRAL_V13}};
        for (size_t i = 0; i < sizeof by_ver / sizeof by_ver[0]; i++)
            if (!strcmp(ver, by_ver[i].v)) {
                *f = by_ver[i].f;
                return KILN_OK;
            }
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED,
                        "chat: tekken version \"%s\" has no chat format in kiln (it renders v3, v7, v11 and v13); choose "
                        "one with --chat-template (" KNOWN_NAMES ")", ver);
    }
    if (!ct)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED,
                        "chat: the tokenizer has no chat template; choose one with --chat-template (" KNOWN_NAMES ")");
    if (strstr(ct, "<|im_start|>")) *f = FMT_CHATML;
    else if (strstr(ct, "<|start_header_id|>")) *f = FMT_LLAMA3;
    else if (strstr(ct, "[SYSTEM_PROMPT]") && strstr(ct, "[INST]")) *f = FMT_MISTRAL_V7;
    else
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED,
                        "chat: the model's chat template is not one kiln recognises (ChatML, Llama 3, Mistral v7); "
                        "choose one with --chat-template");
    return KILN_OK;
}

const char *kiln_chat_template_name(const kiln_tokenizer *t, const char *template_name, kiln_error *err) {
    chat_fmt f;
    return resolve(t, template_name, &f, err) ? NULL : k_names[f];
}

typedef struct enc {
    const kiln_tokenizer *t;
    tok_ivec ids;
    kiln_error *err;
} enc;

static int put_id(enc *e, int32_t id) { return tok_ivec_push(&e->ids, id) ? KILN_ERR(e->err, KILN_ERR_OOM, "chat: out of memory") : KILN_OK; }
static int put_text(enc *e, const char *s, size_t n) {
    if (n == 0) return KILN_OK;
    int32_t *ids;
    int k;
    int rc = kiln_tokenizer_encode(e->t, s, n, 0, &ids, &k, e->err);
    for (int i = 0; rc == KILN_OK && i < k; i++) rc = put_id(e, ids[i]);
    if (ids) kiln_free(ids);
    return rc;
}
static int put_str(enc *e, const char *s) { return put_text(e, s, strlen(s)); }
static int special(enc *e, const char *name, int32_t *id) {
    *id = kiln_tokenizer_token_id(e->t, name);
    if (*id < 0) return KILN_ERR(e->err, KILN_ERR_UNSUPPORTED, "chat: the vocabulary has no %s token", name);
    return KILN_OK;
}
static int put_special(enc *e, const char *name) {
    int32_t id;
    int rc = special(e, name, &id);
    return rc ? rc : put_id(e, id);
}
static int put_json(enc *e, json_t *v) {
    kiln_buf b = {0};
    int rc = py_dump(&b, v) ? KILN_ERR(e->err, KILN_ERR_OOM, "chat: out of memory") : put_text(e, b.p, b.len);
    kiln_buf_free(&b);
    return rc;
}

static int py_name_ok(const char *s, size_t lo, size_t hi, int dash);
#define FN_NAME_RULE "1 to 64 characters of a-z, A-Z, 0-9, '_' and '-'"

/* mistral-common's Tool.model_dump() of each OpenAI tool: type, function{name, description,
 * parameters}; *out NULL when there are none. */
static int mistral_tools(const char *tools_json, json_t **out, kiln_error *err) {
    *out = NULL;
    if (!tools_json || !*tools_json) return KILN_OK;
    json_error_t je;
    json_t *in = json_loads(tools_json, 0, &je);
    if (!json_is_array(in)) {
        json_decref(in);
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "chat: tools is not a JSON array");
    }
    json_t *tools = json_array(), *t;
    size_t i;
    json_array_foreach(in, i, t) {
        json_t *fn = json_object_get(t, "function"), *name = json_object_get(fn, "name");
        if (!json_is_string(name)) {
            json_decref(in);
            json_decref(tools);
            return KILN_ERR(err, KILN_ERR_INVALID_ARG, "chat: tool %zu has no function.name", i);
        }
        if (!py_name_ok(json_string_value(name), 1, 64, 1)) {
            int rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "chat: tool %zu: the function name \"%s\" must be " FN_NAME_RULE, i,
                              json_string_value(name));
            json_decref(in);
            json_decref(tools);
            return rc;
        }
        json_t *d = json_object_get(fn, "description"), *p = json_object_get(fn, "parameters");
        json_t *o = json_pack("{s:s, s:{s:O, s:s, s:o}}", "type", "function", "function", "name", name,
                              "description", json_is_string(d) ? json_string_value(d) : "",
                              "parameters", p ? json_incref(p) : json_object());
        json_array_append_new(tools, o);
    }
    json_decref(in);
    if (!json_array_size(tools)) json_decref(tools), tools = NULL;
    *out = tools;
    return KILN_OK;
}

/* Text as mistral-common's _parse_json_content after its normaliser: "" -> {}, JSON text -> the
 * value, anything else -> the text itself. */
static json_t *mistral_json_content(const char *s, size_t n) {
    if (n == 0) return json_object();
    json_error_t je;
    json_t *v = json_loadb(s, n, JSON_DECODE_ANY, &je);
    return v ? v : json_stringn(s, n);
}

/* An assistant message's OpenAI tool_calls appended to out as mistral-common's
 * _prepare_function_call (v3 and later): {name, arguments (parsed), id (unless empty or "null")}. */
static int mistral_calls(json_t *out, const char *tool_calls_json, int i, kiln_error *err) {
    json_error_t je;
    json_t *calls = json_loads(tool_calls_json, 0, &je), *tc;
    size_t k;
    int rc = KILN_OK;
    if (!json_is_array(calls)) rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "chat: message %d: tool_calls is not an array", i);
    json_array_foreach(calls, k, tc) {
        json_t *fn = json_object_get(tc, "function"), *args = json_object_get(fn, "arguments");
        json_t *id = json_object_get(tc, "id"), *pa;
        if (json_is_string(args)) pa = mistral_json_content(json_string_value(args), json_string_length(args));
        else pa = args && !json_is_null(args) ? json_incref(args) : json_object();
        json_t *o = json_pack("{s:O, s:o}", "name", json_object_get(fn, "name"), "arguments", pa);
        if (!o) {
            rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "chat: message %d: tool call %zu has no name", i, k);
            break;
        }
        if (json_is_string(id) && json_string_length(id) && strcmp(json_string_value(id), "null"))
            json_object_set(o, "id", id);
        json_array_append_new(out, o);
    }
    json_decref(calls);
    return rc;
}

static int put_tools(enc *e, json_t *tools) {
    int rc;
    if (!(rc = put_special(e, "[AVAILABLE_TOOLS]")) && !(rc = put_json(e, tools))) rc = put_special(e, "[/AVAILABLE_TOOLS]");
    return rc;
}

/* ---- mistral-common's request validator: MistralRequestValidatorV3 (mistral-v3) / V5
 * (mistral-v7) in mode "test", the one MistralTokenizer.from_file uses; what it refuses kiln
 * refuses, with the message and the rule named. Checked in its order: structure (one message,
 * the last message, role order, tool calls answered), then each message, then the tools. ---- */

static int ascii_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }
/* Python's re.match(r"^[a-zA-Z0-9_-]{lo,hi}$" (no '_' / '-' when !dash)): '$' also matches
 * before one final "\n" */
static int py_name_ok(const char *s, size_t lo, size_t hi, int dash) {
    size_t n = s ? strlen(s) : 0;
    if (n && s[n - 1] == '\n') n--;
    if (n < lo || n > hi) return 0;
    for (size_t i = 0; i < n; i++)
        if (!ascii_alnum(s[i]) && !(dash && (s[i] == '_' || s[i] == '-'))) return 0;
    return 1;
}
#define CALL_ID_RULE "9 characters of a-z, A-Z and 0-9"

/* Python truthiness of a message's content: a non-empty string or a non-empty list of parts */
static int has_content(const kiln_chat_msg *m) { return m->n_parts > 0 || (m->content && *m->content); }
static const char *a_role(const char *role) { return !strcmp(role, "assistant") ? "an assistant" : !strcmp(role, "user") ? "a user" : !strcmp(role, "tool") ? "a tool" : "a system"; }

/* the number of tool calls in an assistant message (-1: tool_calls is not a JSON array) */
static int n_calls(const kiln_chat_msg *m) {
    if (!m->tool_calls_json) return 0;
    json_error_t je;
    json_t *c = json_loads(m->tool_calls_json, 0, &je);
    int k = json_is_array(c) ? (int)json_array_size(c) : -1;
    json_decref(c);
    return k;
}

/* a v13 call id: any text but "" and "null" (MistralRequestValidatorV13); before: 9 alphanumerics */
static int call_id_ok(const char *id, int ver) {
    if (ver >= 13) return id && *id && strcmp(id, "null");
    return id && strcmp(id, "null") && py_name_ok(id, 9, 9, 0);
}
#define CALL_ID_RULE_V(ver) ((ver) >= 13 ? "not be empty or \"null\"" : "be " CALL_ID_RULE)

/* v11 and later (MistralRequestValidatorV11): each tool result answers a pending call of the
 * assistant message before it by id, once; an assistant message's call ids are unique */
static int mistral_validate_ids(const kiln_chat_msg *m, int n, kiln_error *err) {
    json_t *expected = json_object(), *observed = json_object();
    int rc = KILN_OK;
    for (int i = 1; i < n && rc == KILN_OK; i++) {
        if (!strcmp(m[i].role, "tool")) {
            const char *id = m[i].tool_call_id ? m[i].tool_call_id : "";
            if (json_object_get(observed, id))
                rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "chat: message %d: duplicate tool call id \"%s\" in tool results", i, id);
            else if (!json_object_get(expected, id))
                rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "chat: message %d: unexpected tool call id \"%s\" in tool results "
                              "(it answers no tool call of the assistant message before it)", i, id);
            else json_object_set_new(observed, id, json_true());
        } else if (!strcmp(m[i].role, "assistant")) {
            if (json_object_size(expected) != json_object_size(observed)) {
                rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "chat: message %d: the tool calls before it are not answered one tool "
                              "message each (missing tool results)", i);
                break;
            }
            json_object_clear(expected);
            json_object_clear(observed);
            json_t *calls = m[i].tool_calls_json ? json_loads(m[i].tool_calls_json, 0, NULL) : NULL, *tc;
            size_t k;
            json_array_foreach(calls, k, tc) {
                const char *id = json_string_value(json_object_get(tc, "id"));
                if (!id) id = "null";
                if (json_object_get(expected, id)) {
                    rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "chat: message %d: duplicate tool call id \"%s\" in the assistant "
                                  "message", i, id);
                    break;
                }
                json_object_set_new(expected, id, json_true());
            }
            json_decref(calls);
        }
    }
    json_decref(expected);
    json_decref(observed);
    return rc;
}

static int mistral_validate(const kiln_chat_msg *m, int n, int ver, kiln_error *err) {
    int v7 = ver >= 7;
    static const char *const roles[] = {"system", "user", "assistant", "tool"};
    /* after role r come the roles in next[r] (mistral-common's _validate_message_order) */
    static const char *const next[] = {"user, assistant or system", "assistant, system or user", "assistant, user or tool",
                                       "assistant, tool or user"};
    static const unsigned char ok[4][4] = {{1, 1, 1, 0}, {1, 1, 1, 0}, {0, 1, 1, 1}, {0, 1, 1, 1}};
    for (int i = 0; i < n; i++) {
        int r = -1;
        for (int k = 0; k < 4; k++)
            if (!strcmp(m[i].role, roles[k])) r = k;
        if (r < 0) return KILN_ERR(err, KILN_ERR_INVALID_ARG, "chat: message %d has unknown role \"%s\"", i, m[i].role);
    }
    if (n == 0) return KILN_ERR(err, KILN_ERR_INVALID_ARG, "chat: the conversation is empty (at least one message)");
    if (n == 1 && strcmp(m[0].role, "user") && strcmp(m[0].role, "system"))
        return KILN_ERR(err, KILN_ERR_INVALID_ARG,
                        "chat: a conversation of one message must be a user or system message, not %s message", a_role(m[0].role));
    const kiln_chat_msg *last = &m[n - 1];
    if (n > 1 && strcmp(last->role, "user") && strcmp(last->role, "tool") && !(!strcmp(last->role, "assistant") && last->prefix))
        return KILN_ERR(err, KILN_ERR_INVALID_ARG,
                        "chat: the last message must be a user or tool message (or an assistant message with prefix: true "
                        "to continue it), not %s message", a_role(last->role));
    for (int i = 1; i < n; i++) {
        int p = 0, c = 0;
        for (int k = 0; k < 4; k++) {
            if (!strcmp(m[i - 1].role, roles[k])) p = k;
            if (!strcmp(m[i].role, roles[k])) c = k;
        }
        if (!ok[p][c])
            return KILN_ERR(err, KILN_ERR_INVALID_ARG,
                            "chat: message %d: %s message cannot follow %s message (after %s message come %s messages)", i,
                            a_role(m[i].role), a_role(m[i - 1].role), a_role(m[i - 1].role), next[p]);
    }
    int expected = 0; /* tool results still owed to the last assistant message (from message 1 on, as mistral-common) */
    if (ver >= 11) {
        int rc = mistral_validate_ids(m, n, err);
        if (rc) return rc;
    }
    for (int i = 1; i < n && ver < 11; i++) {
        if (!strcmp(m[i].role, "tool")) {
            expected--;
        } else if (!strcmp(m[i].role, "assistant")) {
            if (expected != 0)
                return KILN_ERR(err, KILN_ERR_INVALID_ARG,
                                "chat: message %d: the tool calls before it are not answered one tool message each "
                                "(%s tool results)", i, expected > 0 ? "missing" : "too many");
            expected = n_calls(&m[i]) > 0 ? n_calls(&m[i]) : 0;
        }
    }
    for (int i = 0; i < n; i++) {
        const kiln_chat_msg *x = &m[i];
        if (!strcmp(x->role, "assistant")) {
            int nc = n_calls(x);
            if (nc < 0) return KILN_ERR(err, KILN_ERR_INVALID_ARG, "chat: message %d: tool_calls is not an array", i);
            if (!v7 && has_content(x) == (nc > 0))
                return KILN_ERR(err, KILN_ERR_INVALID_ARG,
                                "chat: message %d: an assistant message must have either content or tool calls, not %s "
                                "(mistral-v3)", i, nc > 0 ? "both" : "neither");
            if (nc > 0) {
                json_error_t je;
                json_t *calls = json_loads(x->tool_calls_json, 0, &je), *tc;
                size_t k;
                int rc = KILN_OK;
                json_array_foreach(calls, k, tc) {
                    const char *id = json_string_value(json_object_get(tc, "id"));
                    const char *fn = json_string_value(json_object_get(json_object_get(tc, "function"), "name"));
                    if (!call_id_ok(id, ver))
                        rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "chat: message %d: tool call %zu: the id \"%s\" must %s", i,
                                      k, id ? id : "null", CALL_ID_RULE_V(ver));
                    else if (!py_name_ok(fn, 1, 64, 1))
                        rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "chat: message %d: tool call %zu: the function name \"%s\" "
                                      "must be " FN_NAME_RULE, i, k, fn ? fn : "");
                    if (rc) break;
                }
                json_decref(calls);
                if (rc) return rc;
            }
            if (x->prefix && i != n - 1)
                return KILN_ERR(err, KILN_ERR_INVALID_ARG,
                                "chat: message %d: only the last message may be an assistant prefix (prefix: true)", i);
        } else if (x->prefix) {
            return KILN_ERR(err, KILN_ERR_INVALID_ARG, "chat: message %d: prefix is only for an assistant message", i);
        } else if (!strcmp(x->role, "tool")) {
            if (x->name && !py_name_ok(x->name, 1, 64, 1))
                return KILN_ERR(err, KILN_ERR_INVALID_ARG, "chat: message %d: the tool name \"%s\" must be " FN_NAME_RULE, i,
                                x->name);
            if (!x->tool_call_id) return KILN_ERR(err, KILN_ERR_INVALID_ARG, "chat: tool message %d has no tool_call_id", i);
            if (!call_id_ok(x->tool_call_id, ver))
                return KILN_ERR(err, KILN_ERR_INVALID_ARG, "chat: message %d: the tool_call_id \"%s\" must %s", i,
                                x->tool_call_id, CALL_ID_RULE_V(ver));
        } else if (!strcmp(x->role, "system") && !x->content && !x->n_parts) {
            return KILN_ERR(err, KILN_ERR_INVALID_ARG, "chat: message %d: a system message must have content", i);
        }
    }
    return KILN_OK;
}

/* ---- mistral-common's normaliser (InstructRequestNormalizer for v3, ...V7 for v7): runs of user
 * (assistant) messages merged into one turn, texts joined with "\n\n" (the text parts of one
 * message too), empty ones skipped; an assistant run keeps all tool calls and is a prefix when
 * its last message is. v3: system texts make one system prompt (joined with "\n\n") and only
 * break runs; an empty user turn goes first when the first turn is not a user's. v7: each system
 * message is a turn of its own where it stands. ---- */
typedef struct m_turn {
    char role;          /* 's', 'u', 'a', 't' */
    int prefix;         /* assistant: continued by the reply, no </s> */
    kiln_buf text;      /* joined content (tool: the result text) */
    json_t *calls;      /* assistant: prepared tool calls, NULL if none */
    const char *call_id;
    int key;            /* v13: the position of call_id among the calls it answers (m_sort_tools) */
    int m0, m1;         /* assistant: the messages [m0, m1] merged into the turn */
    json_t *segs;       /* assistant with thinking parts: [[kind, text]...] (0 text, 1 / 2 thinking
                         * closed / open), else NULL and the turn is text */
} m_turn;

static int m_join(kiln_buf *b, const char *c) {
    if (!c || !*c) return 0;
    if (b->len && kiln_buf_add(b, "\n\n", 2)) return -1;
    return kiln_buf_add(b, c, strlen(c));
}
static int m_text(kiln_buf *b, const kiln_chat_msg *m) {
    if (m->n_parts <= 0) return m_join(b, m->content);
    for (int k = 0; k < m->n_parts; k++)
        if ((!m->part_kinds || !m->part_kinds[k]) && m_join(b, m->parts[k])) return -1;
    return 0;
}
static int has_thinking(const kiln_chat_msg *m) {
    for (int k = 0; m->part_kinds && k < m->n_parts; k++)
        if (m->part_kinds[k]) return 1;
    return 0;
}

/* an assistant run with thinking parts as the normaliser keeps it: a list of chunks, runs of
 * text joined with "\n\n" (empty ones skipped) between the thinking chunks */
static json_t *m_segs(const kiln_chat_msg *m, int m0, int m1) {
    json_t *segs = json_array();
    kiln_buf cur = {0};
    int oom = !segs;
    for (int i = m0; i <= m1 && !oom; i++) {
        int np = m[i].n_parts > 0 ? m[i].n_parts : 1;
        for (int k = 0; k < np && !oom; k++) {
            const char *c = m[i].n_parts > 0 ? m[i].parts[k] : m[i].content;
            int kind = m[i].n_parts > 0 && m[i].part_kinds ? m[i].part_kinds[k] : 0;
            if (kind == 0) {
                oom |= m_join(&cur, c);
                continue;
            }
            if (cur.len) oom |= json_array_append_new(segs, json_pack("[i, s%]", 0, cur.p, cur.len)) != 0;
            kiln_buf_clear(&cur);
            oom |= json_array_append_new(segs, json_pack("[i, s]", kind, c ? c : "")) != 0;
        }
    }
    if (cur.len && !oom) oom |= json_array_append_new(segs, json_pack("[i, s%]", 0, cur.p, cur.len)) != 0;
    kiln_buf_free(&cur);
    if (oom) json_decref(segs), segs = NULL;
    return segs;
}

static int m_turns(const kiln_chat_msg *m, int n, int v7, m_turn *tu, int *nt, kiln_buf *sys, kiln_error *err) {
    int k = 0;
    if (!v7) tu[k++].role = 'u'; /* the normaliser's empty first user turn, dropped below unless needed */
    for (int i = 0; i < n; i++) {
        const char *r = m[i].role;
        int run = i > 0 && !strcmp(m[i - 1].role, r);
        if (!strcmp(r, "system")) {
            if (v7) tu[k++].role = 's';
            if (m_text(v7 ? &tu[k - 1].text : sys, &m[i])) return OOM();
        } else if (!strcmp(r, "user") || !strcmp(r, "assistant")) {
            if (!run) tu[k].m0 = i, tu[k++].role = r[0];
            m_turn *t = &tu[k - 1];
            t->m1 = i;
            if (m_text(&t->text, &m[i])) return OOM();
            if (r[0] == 'a') t->prefix |= m[i].prefix;
            if (r[0] == 'a' && m[i].tool_calls_json) {
                if (!v7 && has_content(&m[i]))
                    return KILN_ERR(err, KILN_ERR_INVALID_ARG,
                                    "chat: assistant message %d has both content and tool calls (mistral-v3 takes one)", i);
                if (!t->calls && !(t->calls = json_array())) return OOM();
                int rc = mistral_calls(t->calls, m[i].tool_calls_json, i, err);
                if (rc) return rc;
                if (!json_array_size(t->calls)) json_decref(t->calls), t->calls = NULL;
            }
        } else if (!strcmp(r, "tool")) {
            if (!m[i].tool_call_id)
                return KILN_ERR(err, KILN_ERR_INVALID_ARG, "chat: tool message %d has no tool_call_id", i);
            m_turn *t = &tu[k++];
            t->role = 't';
            t->call_id = m[i].tool_call_id;
            if (m_text(&t->text, &m[i])) return OOM();
        } else {
            return KILN_ERR(err, KILN_ERR_INVALID_ARG, "chat: message %d has unknown role \"%s\"", i, r);
        }
    }
    for (int j = 0; j < k; j++) {
        if (tu[j].role != 'a') continue;
        int think = 0;
        for (int i = tu[j].m0; i <= tu[j].m1; i++) think |= has_thinking(&m[i]);
        if (think && !(tu[j].segs = m_segs(m, tu[j].m0, tu[j].m1))) {
            *nt = k;
            return OOM();
        }
    }
    *nt = k;
    return KILN_OK;
}

static void m_turns_free(m_turn *tu, int n) {
    for (int i = 0; i < n; i++) { /* all of them: a failed m_turns leaves some filled */
        kiln_buf_free(&tu[i].text);
        json_decref(tu[i].calls);
        json_decref(tu[i].segs);
    }
    kiln_free(tu);
}

/* an assistant turn's content: text.rstrip(" ") (when there is text) */
static int put_reply_text(enc *e, const m_turn *t) {
    size_t cl = t->text.len;
    while (cl > 0 && t->text.p[cl - 1] == ' ') cl--;
    return put_text(e, t->text.p, cl);
}

/* v11 and v13's normaliser (InstructRequestNormalizerV13): each run of tool turns is put in the order of
 * the calls they answer (the calls of the assistant turns since the previous run of tool
 * turns), a result whose id was not called last, in the order given (a stable sort) */
static void m_sort_tools(m_turn *tu, int nt) {
    int since = 0; /* the first turn whose calls count */
    for (int i = 0; i < nt;) {
        if (tu[i].role != 't') {
            i++;
            continue;
        }
        int j = i;
        while (j < nt && tu[j].role == 't') j++;
        /* each turn's key: the position of its id among the calls of turns [since, i) */
        for (int k = i; k < j; k++) {
            int pos = 0, found = -1;
            for (int a = since; a < i; a++) {
                json_t *c;
                size_t q;
                json_array_foreach(tu[a].calls, q, c) {
                    const char *id = json_string_value(json_object_get(c, "id"));
                    if (id && !strcmp(id, tu[k].call_id)) found = pos; /* the last one, as a dict keeps it */
                    pos++;
                }
            }
            tu[k].key = found < 0 ? 1 << 30 : found;
        }
        for (int k = i + 1; k < j; k++) /* insertion sort: stable */
            for (int q = k; q > i && tu[q - 1].key > tu[q].key; q--) {
                m_turn t = tu[q];
                tu[q] = tu[q - 1];
                tu[q - 1] = t;
            }
        since = i = j;
    }
}

/* a list-content assistant turn (InstructTokenizerV13._encode_content_chunks): text as given (no
 * rstrip), thinking as [THINK] text [/THINK] ([/THINK] left out when not closed) */
static int put_segs(enc *e, json_t *segs) {
    json_t *sg;
    size_t k;
    int rc = KILN_OK;
    json_array_foreach(segs, k, sg) {
        int kind = (int)json_integer_value(json_array_get(sg, 0));
        json_t *tx = json_array_get(sg, 1);
        if (kind && (rc = put_special(e, "[THINK]"))) break;
        if ((rc = put_text(e, json_string_value(tx), json_string_length(tx)))) break;
        if (kind == 1 && (rc = put_special(e, "[/THINK]"))) break;
    }
    return rc;
}

/* v11 / v13 calls: per call [TOOL_CALLS] name ([CALL_ID] id, v11 when it has one) [ARGS] arguments */
static int put_calls_v11(enc *e, json_t *calls, int ver) {
    json_t *c;
    size_t k;
    int rc = KILN_OK;
    json_array_foreach(calls, k, c) {
        json_t *id = json_object_get(c, "id");
        if ((rc = put_special(e, "[TOOL_CALLS]")) || (rc = put_str(e, json_string_value(json_object_get(c, "name")))))
            break;
        if (ver < 13 && json_is_string(id) && ((rc = put_special(e, "[CALL_ID]")) || (rc = put_str(e, json_string_value(id)))))
            break;
        if ((rc = put_special(e, "[ARGS]")) || (rc = put_json(e, json_object_get(c, "arguments")))) break;
    }
    return rc;
}

/* mistral-v7, v11 and v13 (ver): the v7 normaliser's turns (v13: tool results in call order),
 * then InstructTokenizerV7 / V11 / V13 */
static int mistral_v7(enc *e, const kiln_chat_msg *m, int n, const char *tools_json, int ver) {
    kiln_error *err = e->err;
    json_t *tools = NULL;
    int nt = 0, rc, tools_at = -1;
    m_turn *tu = kiln_calloc((size_t)n + 1, sizeof *tu);
    if (!tu) return OOM();
    if ((rc = mistral_tools(tools_json, &tools, err)) || (rc = m_turns(m, n, 1, tu, &nt, NULL, err))) goto done;
    if (ver >= 11) m_sort_tools(tu, nt); /* v11 and v13 share InstructRequestNormalizerV13 */
    for (int i = 0; i < nt; i++) /* the tools go before the last user turn (v13: the first) */
        if (tu[i].role == 'u' && (ver < 13 || tools_at < 0)) tools_at = i;
    if ((rc = put_special(e, "<s>"))) goto done;
    for (int i = 0; i < nt && rc == KILN_OK; i++) {
        m_turn *t = &tu[i];
        if (t->role == 's') {
            if (!(rc = put_special(e, "[SYSTEM_PROMPT]")) && !(rc = put_text(e, t->text.p, t->text.len)))
                rc = put_special(e, "[/SYSTEM_PROMPT]");
        } else if (t->role == 'u') {
            if (i == tools_at && tools && (rc = put_tools(e, tools))) break;
            if (!(rc = put_special(e, "[INST]")) && !(rc = put_text(e, t->text.p, t->text.len))) rc = put_special(e, "[/INST]");
        } else if (t->role == 'a') {
            if (!t->text.len && !t->calls && !t->segs) {
                rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "chat: an assistant turn has neither content nor tool calls");
                break;
            }
            if (t->segs && ver < 13) {
                rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "chat: message %d: thinking content (a \"thinking\" part or "
                              "reasoning_content) is rendered by mistral-v13 only ([THINK] ... [/THINK])", t->m0);
                break;
            }
            if ((rc = t->segs ? put_segs(e, t->segs) : put_reply_text(e, t))) break;
            if (t->calls && ver >= 11) rc = put_calls_v11(e, t->calls, ver);
            else if (t->calls && (!(rc = put_special(e, "[TOOL_CALLS]")))) rc = put_json(e, t->calls);
            if (rc == KILN_OK && !t->prefix) rc = put_special(e, "</s>");
        } else if (ver >= 13) { /* [TOOL_RESULTS] content [/TOOL_RESULTS]: no call id */
            if (!(rc = put_special(e, "[TOOL_RESULTS]")) && !(rc = put_text(e, t->text.p, t->text.len)))
                rc = put_special(e, "[/TOOL_RESULTS]");
        } else {
            if (!(rc = put_special(e, "[TOOL_RESULTS]")) && !(rc = put_str(e, t->call_id)) &&
                !(rc = put_special(e, "[TOOL_CONTENT]")) && !(rc = put_text(e, t->text.p, t->text.len)))
                rc = put_special(e, "[/TOOL_RESULTS]");
        }
    }
done:
    m_turns_free(tu, n + 1);
    json_decref(tools);
    return rc;
}

/* mistral-v3: the v3 normaliser's turns, then InstructTokenizerV3 */
static int mistral_v3(enc *e, const kiln_chat_msg *m, int n, const char *tools_json) {
    kiln_error *err = e->err;
    json_t *tools = NULL;
    kiln_buf sys = {0}, txt = {0};
    int nt = 0, rc, first, last_user = 0;
    m_turn *tu = kiln_calloc((size_t)n + 1, sizeof *tu);
    if (!tu) return OOM();
    if ((rc = mistral_tools(tools_json, &tools, err)) || (rc = m_turns(m, n, 0, tu, &nt, &sys, err))) goto done;
    first = nt > 1 && tu[1].role == 'u' ? 1 : 0; /* else the empty user turn goes first */
    for (int i = first; i < nt; i++)
        if (tu[i].role == 'u') last_user = i;
    if ((rc = put_special(e, "<s>"))) goto done;
    for (int i = first; i < nt && rc == KILN_OK; i++) {
        m_turn *t = &tu[i];
        if (t->role == 'u') {
            if (i == last_user && tools && (rc = put_tools(e, tools))) break;
            kiln_buf_clear(&txt);
            if ((i == last_user && sys.len && (kiln_buf_add(&txt, sys.p, sys.len) || kiln_buf_add(&txt, "\n\n", 2))) ||
                (t->text.len && kiln_buf_add(&txt, t->text.p, t->text.len))) {
                rc = OOM();
                break;
            }
            if (!(rc = put_special(e, "[INST]")) && !(rc = put_text(e, txt.p, txt.len))) rc = put_special(e, "[/INST]");
        } else if (t->role == 'a') {
            if (t->segs) {
                rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "chat: message %d: thinking content (a \"thinking\" part or "
                              "reasoning_content) is rendered by mistral-v13 only ([THINK] ... [/THINK])", t->m0);
            } else if (t->calls && t->text.len) {
                rc = KILN_ERR(err, KILN_ERR_INVALID_ARG,
                              "chat: an assistant turn has both content and tool calls (mistral-v3 takes one)");
            } else if (t->calls) {
                if (!(rc = put_special(e, "[TOOL_CALLS]"))) rc = put_json(e, t->calls);
            } else if (t->text.len) {
                rc = put_reply_text(e, t);
            } else {
                rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "chat: an assistant turn has neither content nor tool calls");
            }
            if (rc == KILN_OK && !t->prefix) rc = put_special(e, "</s>");
        } else { /* tool: {"content": parsed result, "call_id": id} */
            json_t *o = json_pack("{s:o, s:s}", "content", mistral_json_content(t->text.p ? t->text.p : "", t->text.len),
                                  "call_id", t->call_id);
            if (!o) {
                rc = OOM();
                break;
            }
            if (!(rc = put_special(e, "[TOOL_RESULTS]")) && !(rc = put_json(e, o))) rc = put_special(e, "[/TOOL_RESULTS]");
            json_decref(o);
        }
    }
done:
    m_turns_free(tu, n + 1);
    kiln_buf_free(&sys);
    kiln_buf_free(&txt);
    json_decref(tools);
    return rc;
}
/* the literal default system prompt of a ChatML template ("<|im_start|>system\n...<|im_end|>") */
static char *chatml_default_system(const char *ct) {
    const char *p = ct ? strstr(ct, "'<|im_start|>system\n") : NULL;
    if (!p) return NULL;
    p += strlen("'<|im_start|>system\n");
    const char *q = strstr(p, "<|im_end|>");
    if (!q) return NULL;
    for (const char *r = p; r < q; r++)
        if (*r == '\'' || *r == '{' || *r == '}') return NULL; /* not a plain literal */
    return kiln_strndup(p, (size_t)(q - p));
}

static const char CHATML_TOOLS_HEAD[] =
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>";
static const char CHATML_TOOLS_TAIL[] =
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>";

/* the calls of an assistant message, Qwen2.5's way, appended to b */
static int chatml_calls(kiln_buf *b, const char *calls_json, kiln_error *err) {
    json_t *calls = json_loads(calls_json, 0, NULL);
    if (!json_is_array(calls)) { json_decref(calls); return KILN_ERR(err, KILN_ERR_INVALID_ARG, "chat: tool_calls is not a JSON array"); }
    size_t i;
    json_t *c;
    int rc = KILN_OK;
    json_array_foreach(calls, i, c) {
        json_t *f = json_object_get(c, "function");
        if (!f) f = c;
        const char *name = json_string_value(json_object_get(f, "name"));
        json_t *a = json_object_get(f, "arguments"), *parsed = NULL;
        if (json_is_string(a)) parsed = json_loads(json_string_value(a), JSON_DECODE_ANY, NULL);
        else if (!a) parsed = json_object(); /* no arguments: {} (owned here, like a parsed string) */
        if (kiln_buf_adds(b, "\n<tool_call>\n{\"name\": \"") || kiln_buf_adds(b, name ? name : "") ||
            kiln_buf_adds(b, "\", \"arguments\": ") || py_dump(b, parsed ? parsed : a) ||
            kiln_buf_adds(b, "}\n</tool_call>"))
            rc = KILN_ERR(err, KILN_ERR_OOM, "chat: out of memory");
        json_decref(parsed);
        if (rc) break;
    }
    json_decref(calls);
    return rc;
}

static int chatml(enc *e, const kiln_chat_msg *m, int n, int gen, const char *tools_json) {
    int32_t st, en;
    int rc;
    if ((rc = special(e, "<|im_start|>", &st)) || (rc = special(e, "<|im_end|>", &en))) return rc;
    json_t *tools = NULL;
    if (tools_json && strcmp(tools_json, "[]")) {
        tools = json_loads(tools_json, 0, NULL);
        if (!json_is_array(tools)) { json_decref(tools); return KILN_ERR(e->err, KILN_ERR_INVALID_ARG, "chat: tools is not a JSON array"); }
    }
    int first_sys = n > 0 && !strcmp(m[0].role, "system");
    char *def = !first_sys ? chatml_default_system(kiln_tokenizer_chat_template(e->t)) : NULL;
    kiln_buf b = {0};
    int oom = 0;
    for (int i = -1; i < n && rc == KILN_OK; i++) {
        const char *role = i < 0 ? "system" : m[i].role, *c = i < 0 ? def : m[i].content;
        if (i < 0 && !def && !tools) continue;
        if (i == 0 && first_sys && tools) continue; /* rendered at i = -1 */
        if (i < 0 && tools && first_sys) c = m[0].content;
        if (i < 0 && tools && !c) c = "You are a helpful assistant.";
        kiln_buf_clear(&b);
        if (i >= 0 && !strcmp(role, "tool") && tools) {
            int open = i == 0 || strcmp(m[i - 1].role, "tool"), close = i == n - 1 || strcmp(m[i + 1].role, "tool");
            if (open) { if ((rc = put_id(e, st))) break; oom |= kiln_buf_adds(&b, "user"); }
            oom |= kiln_buf_adds(&b, "\n<tool_response>\n") || kiln_buf_adds(&b, c ? c : "") || kiln_buf_adds(&b, "\n</tool_response>");
            if (oom) { rc = KILN_ERR(e->err, KILN_ERR_OOM, "chat: out of memory"); break; }
            if (!(rc = put_text(e, b.p, b.len)) && close && !(rc = put_id(e, en))) rc = put_str(e, "\n");
            continue;
        }
        oom |= kiln_buf_add(&b, role, strlen(role));
        if (i >= 0 && !strcmp(role, "assistant") && m[i].tool_calls_json) {
            if (c && *c) oom |= kiln_buf_addc(&b, '\n') || kiln_buf_adds(&b, c);
            if (!oom && (rc = chatml_calls(&b, m[i].tool_calls_json, e->err))) break;
        } else {
            oom |= kiln_buf_addc(&b, '\n') || (c && kiln_buf_add(&b, c, strlen(c)));
        }
        if (i < 0 && tools) {
            size_t k;
            json_t *t;
            oom |= kiln_buf_adds(&b, CHATML_TOOLS_HEAD);
            json_array_foreach(tools, k, t) oom |= kiln_buf_addc(&b, '\n') || py_dump(&b, t);
            oom |= kiln_buf_adds(&b, CHATML_TOOLS_TAIL);
        }
        if (oom) { rc = KILN_ERR(e->err, KILN_ERR_OOM, "chat: out of memory"); break; }
        if (!(rc = put_id(e, st)) && !(rc = put_text(e, b.p, b.len)) && !(rc = put_id(e, en))) rc = put_str(e, "\n");
    }
    if (rc == KILN_OK && gen && !(rc = put_id(e, st))) rc = put_str(e, "assistant\n");
    kiln_buf_free(&b);
    kiln_free(def);
    json_decref(tools);
    return rc;
}

/* Python's str.isspace() characters (what Jinja's `trim` strips), as UTF-8: the length of the one
 * that starts at p (n bytes left), 0 if none. Request text is valid UTF-8 (jansson checks). */
static size_t py_space_len(const char *p, size_t n) {
    static const char *const wide[] = {"\xc2\x85", "\xc2\xa0", "\xe1\x9a\x80", "\xe2\x80\xa8", "\xe2\x80\xa9",
                                       "\xe2\x80\xaf", "\xe2\x81\x9f", "\xe3\x80\x80"};
    if (n == 0) return 0;
    unsigned char c = (unsigned char)p[0];
    if ((c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20)) return 1;
    if (n >= 3 && c == 0xe2 && (unsigned char)p[1] == 0x80 && (unsigned char)p[2] >= 0x80 &&
        (unsigned char)p[2] <= 0x8a)
        return 3; /* U+2000..U+200A */
    for (size_t i = 0; i < sizeof wide / sizeof wide[0]; i++) {
        size_t k = strlen(wide[i]);
        if (n >= k && !memcmp(p, wide[i], k)) return k;
    }
    return 0;
}

/* content with Python's str.strip() applied (Jinja's `trim`): [*a, *z) of c */
static void py_strip(const char *c, size_t *a, size_t *z) {
    size_t k;
    *a = 0;
    *z = strlen(c);
    while ((k = py_space_len(c + *a, *z - *a)) > 0) *a += k;
    for (int again = 1; again && *z > *a;) { /* trailing: the last character is 1 to 3 bytes */
        again = 0;
        for (k = 1; k <= 3 && k <= *z - *a; k++)
            if (py_space_len(c + *z - k, k) == k) {
                *z -= k;
                again = 1;
                break;
            }
    }
}

/* json.dumps(v, ensure_ascii=False, indent=4) at nesting level lv: "{\n    \"k\": v,\n...}", empty
 * containers as "{}" / "[]" (what the Llama 3.1 template's `tojson(indent=4)` writes) */
static int py_dump_indent(kiln_buf *b, json_t *v, int lv) {
    int obj = json_is_object(v);
    if (!(obj || json_is_array(v)) || (obj ? json_object_size(v) : json_array_size(v)) == 0) return py_dump(b, v);
    if (kiln_buf_addc(b, obj ? '{' : '[')) return -1;
    const char *k;
    json_t *x;
    size_t i, n = 0;
    if (obj) {
        json_object_foreach(v, k, x) {
            if ((n++ && kiln_buf_addc(b, ',')) || kiln_buf_addf(b, "\n%*s", 4 * (lv + 1), "") ||
                py_str(b, k, strlen(k)) || kiln_buf_add(b, ": ", 2) || py_dump_indent(b, x, lv + 1))
                return -1;
        }
    } else {
        json_array_foreach(v, i, x) {
            if ((i && kiln_buf_addc(b, ',')) || kiln_buf_addf(b, "\n%*s", 4 * (lv + 1), "") || py_dump_indent(b, x, lv + 1))
                return -1;
        }
    }
    return kiln_buf_addf(b, "\n%*s", 4 * lv, "") || kiln_buf_addc(b, obj ? '}' : ']');
}

/* Llama 3.1/3.2's "Today Date": today ("%d %b %Y", English month, local time as transformers'
 * strftime_now) when the template calls strftime_now, else its literal date_string default */
static void llama31_date(const char *ct, char out[32]) {
    static const char *mon[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    const char *d = ct ? strstr(ct, "set date_string = \"") : NULL;
    if (ct && strstr(ct, "strftime_now")) {
        time_t now = time(NULL);
        struct tm tm;
        if (localtime_r(&now, &tm)) {
            snprintf(out, 32, "%02d %s %04d", tm.tm_mday, mon[tm.tm_mon % 12], tm.tm_year + 1900);
            return;
        }
    }
    if (d) {
        d += strlen("set date_string = \"");
        const char *q = strchr(d, '"');
        if (q && q - d < 31) {
            snprintf(out, 32, "%.*s", (int)(q - d), d);
            return;
        }
    }
    snprintf(out, 32, "26 Jul 2024");
}

static const char L31_TOOLS_HEAD[] =
    "Given the following functions, please respond with a JSON for a function call with its proper arguments that "
    "best answers the given prompt.\n\nRespond in the format {\"name\": function name, \"parameters\": dictionary of "
    "argument name and its value}.Do not use variables.\n\n";

/* one turn: <|start_header_id|>role<|end_header_id|> text <|eot_id|> (text one piece) */
static int llama3_turn(enc *e, const char *role, const kiln_buf *text) {
    int rc;
    if (!(rc = put_special(e, "<|start_header_id|>")) && !(rc = put_str(e, role)) &&
        !(rc = put_special(e, "<|end_header_id|>")) && !(rc = put_text(e, text->p, text->len)))
        rc = put_special(e, "<|eot_id|>");
    return rc;
}

/* "\n\n" + the one call of an assistant message as the 3.1 template writes it, appended to b */
static int llama31_call(kiln_buf *b, const char *calls_json, int i, kiln_error *err) {
    json_t *calls = json_loads(calls_json, 0, NULL);
    int rc = KILN_OK;
    if (!json_is_array(calls) || json_array_size(calls) != 1) {
        json_decref(calls);
        return KILN_ERR(err, KILN_ERR_INVALID_ARG,
                        "chat: message %d: the llama3 format takes one tool call per assistant message (the "
                        "template's \"This model only supports single tool-calls at once!\")", i);
    }
    json_t *c = json_array_get(calls, 0), *f = json_object_get(c, "function");
    if (!f) f = c;
    const char *name = json_string_value(json_object_get(f, "name"));
    json_t *a = json_object_get(f, "arguments"), *parsed = NULL;
    if (json_is_string(a)) parsed = json_loads(json_string_value(a), JSON_DECODE_ANY, NULL);
    else if (!a) parsed = json_object();
    if (kiln_buf_adds(b, "{\"name\": \"") || kiln_buf_adds(b, name ? name : "") || kiln_buf_adds(b, "\", \"parameters\": ") ||
        py_dump(b, parsed ? parsed : a) || kiln_buf_addc(b, '}'))
        rc = OOM();
    json_decref(parsed);
    json_decref(calls);
    return rc;
}

/* Llama 3.1/3.2's template (see the header): tools may be NULL */
static int llama31(enc *e, const kiln_chat_msg *m, int n, int gen, json_t *tools) {
    kiln_error *err = e->err;
    char date[32];
    llama31_date(kiln_tokenizer_chat_template(e->t), date);
    int rc = put_special(e, "<|begin_of_text|>"), i = 0;
    kiln_buf b = {0};
    size_t a, z;
    int oom = 0;
    oom |= kiln_buf_adds(&b, "\n\n") || (tools && kiln_buf_adds(&b, "Environment: ipython\n")) ||
           kiln_buf_adds(&b, "Cutting Knowledge Date: December 2023\nToday Date: ") || kiln_buf_adds(&b, date) ||
           kiln_buf_adds(&b, "\n\n");
    if (n > 0 && !strcmp(m[0].role, "system")) {
        const char *c = m[0].content ? m[0].content : "";
        py_strip(c, &a, &z);
        oom |= kiln_buf_add(&b, c + a, z - a);
        i = 1;
    }
    if (oom) rc = OOM();
    if (rc == KILN_OK) rc = llama3_turn(e, "system", &b);
    if (rc == KILN_OK && tools) {
        if (i >= n) rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "chat: the llama3 format puts the tools in the first user message, and there is none");
        kiln_buf_clear(&b);
        oom |= kiln_buf_adds(&b, "\n\n") || kiln_buf_adds(&b, L31_TOOLS_HEAD);
        size_t k;
        json_t *t;
        json_array_foreach(tools, k, t) oom |= py_dump_indent(&b, t, 0) || kiln_buf_adds(&b, "\n\n");
        if (rc == KILN_OK) {
            const char *c = m[i].content ? m[i].content : "";
            py_strip(c, &a, &z);
            oom |= kiln_buf_add(&b, c + a, z - a);
            i++;
            rc = oom ? OOM() : llama3_turn(e, "user", &b);
        }
    }
    for (; i < n && rc == KILN_OK; i++) {
        const char *c = m[i].content ? m[i].content : "";
        kiln_buf_clear(&b);
        oom = kiln_buf_adds(&b, "\n\n");
        if (m[i].tool_calls_json) {
            if (!oom && !(rc = llama31_call(&b, m[i].tool_calls_json, i, err))) rc = llama3_turn(e, "assistant", &b);
            continue;
        }
        if (!strcmp(m[i].role, "tool") || !strcmp(m[i].role, "ipython")) { /* the result string as JSON */
            oom |= py_str(&b, c, strlen(c));
            rc = oom ? OOM() : llama3_turn(e, "ipython", &b);
            continue;
        }
        py_strip(c, &a, &z);
        oom |= kiln_buf_add(&b, c + a, z - a);
        rc = oom ? OOM() : llama3_turn(e, m[i].role, &b);
    }
    kiln_buf_free(&b);
    if (rc == KILN_OK && gen && !(rc = put_special(e, "<|start_header_id|>")) && !(rc = put_str(e, "assistant")) &&
        !(rc = put_special(e, "<|end_header_id|>")))
        rc = put_str(e, "\n\n");
    return rc;
}

/* Meta's template renders header "\n\n" + content|trim as one text run between control tokens,
 * so it is encoded as one piece (a pre-tokenizer may split "\n\nword" unlike "\n\n" + "word").
 * Tools, or a Llama 3.1/3.2 template, take llama31. */
static int llama3(enc *e, const kiln_chat_msg *m, int n, int gen, const char *tools_json) {
    const char *ct = kiln_tokenizer_chat_template(e->t);
    json_t *tools = NULL;
    if (tools_json && strcmp(tools_json, "[]")) {
        tools = json_loads(tools_json, 0, NULL);
        if (!json_is_array(tools)) {
            json_decref(tools);
            return KILN_ERR(e->err, KILN_ERR_INVALID_ARG, "chat: tools is not a JSON array");
        }
    }
    if (tools || (ct && strstr(ct, "Cutting Knowledge Date"))) {
        int rc = llama31(e, m, n, gen, tools);
        json_decref(tools);
        return rc;
    }
    int rc = put_special(e, "<|begin_of_text|>");
    kiln_buf b = {0};
    for (int i = 0; i < n && rc == KILN_OK; i++) {
        const char *c = m[i].content ? m[i].content : "";
        size_t a, z;
        py_strip(c, &a, &z);
        kiln_buf_clear(&b);
        if (kiln_buf_add(&b, "\n\n", 2) || kiln_buf_add(&b, c + a, z - a)) {
            rc = KILN_ERR(e->err, KILN_ERR_OOM, "chat: out of memory");
            break;
        }
        rc = llama3_turn(e, m[i].role, &b);
    }
    kiln_buf_free(&b);
    if (rc == KILN_OK && gen && !(rc = put_special(e, "<|start_header_id|>")) && !(rc = put_str(e, "assistant")) &&
        !(rc = put_special(e, "<|end_header_id|>")))
        rc = put_str(e, "\n\n");
    return rc;
}

int kiln_chat_encode(const kiln_tokenizer *t, const char *template_name, const kiln_chat_msg *msgs,
                     int n_msgs, const char *tools_json, int add_generation_prompt, int32_t **ids,
                     int *n_ids, kiln_error *err) {
    *ids = NULL;
    *n_ids = 0;
    chat_fmt f;
    int rc = resolve(t, template_name, &f, err);
    if (rc) return rc;
    for (int i = 0; i < n_msgs; i++)
        if (!msgs[i].role) return KILN_ERR(err, KILN_ERR_INVALID_ARG, "chat: message %d has no role", i);
    int mistral = mistral_ver(f) > 0;
    for (int i = 0; i < n_msgs && !mistral; i++)
        if (msgs[i].prefix)
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED,
                            "chat: message %d: an assistant prefix (prefix: true) is supported in the mistral formats only, not %s",
                            i, k_names[f]);
    if (mistral && (rc = mistral_validate(msgs, n_msgs, mistral_ver(f), err))) return rc;
    enc e = {t, {0}, err};
    if (mistral_ver(f) >= 7) rc = mistral_v7(&e, msgs, n_msgs, tools_json, mistral_ver(f));
    else if (f == FMT_MISTRAL_V3) rc = mistral_v3(&e, msgs, n_msgs, tools_json);
    else if (f == FMT_CHATML) rc = chatml(&e, msgs, n_msgs, add_generation_prompt, tools_json);
    else rc = llama3(&e, msgs, n_msgs, add_generation_prompt, tools_json);
    if (rc) {
        tok_ivec_free(&e.ids);
        return rc;
    }
    *ids = e.ids.p ? e.ids.p : kiln_malloc(sizeof(int32_t));
    *n_ids = e.ids.n;
    return *ids ? KILN_OK : OOM();
}

int kiln_chat_end_of_turn(const kiln_tokenizer *t, const char *template_name) {
    kiln_error err;
    chat_fmt f;
    if (resolve(t, template_name, &f, &err)) return -1;
    const char *n = mistral_ver(f) ? "</s>" : f == FMT_CHATML ? "<|im_end|>" : "<|eot_id|>";
    return kiln_tokenizer_token_id(t, n);
}

/* ---- tool calls in model output ---- */
static void call_id(const char *text, size_t len, size_t k, char out[10]) {
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)k; /* FNV-1a of the text: deterministic ids */
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)text[i]) * 1099511628211ULL;
    for (int i = 0; i < 9; i++) {
        h = h * 6364136223846793005ULL + 1442695040888963407ULL;
        out[i] = al[(h >> 33) % 62];
    }
    out[9] = 0;
}

int kiln_chat_parse_tool_calls(const kiln_tokenizer *t, const char *text, size_t len, char **content,
                               char **calls_json, kiln_error *err) {
    (void)t;
    *content = NULL;
    *calls_json = NULL;
    const char *mark = "[TOOL_CALLS]";
    size_t ml = strlen(mark), at = len;
    for (size_t i = 0; i + ml <= len; i++)
        if (!memcmp(text + i, mark, ml)) {
            at = i;
            break;
        }
    if (at == len) return KILN_OK;
    json_t *out = json_array();
    const char *p = text + at + ml, *end = text + len;
    size_t k = 0;
    while (p < end) { /* one or more JSON arrays (or objects), each after [TOOL_CALLS] */
        while (p < end && isspace((unsigned char)*p)) p++;
        if (p + ml <= end && !memcmp(p, mark, ml)) {
            p += ml;
            continue;
        }
        if (p >= end) break;
        json_error_t je;
        json_t *v = json_loadb(p, (size_t)(end - p), JSON_DISABLE_EOF_CHECK | JSON_DECODE_ANY, &je);
        if (!v || (!json_is_array(v) && !json_is_object(v))) {
            json_decref(v);
            json_decref(out);
            return KILN_ERR(err, KILN_ERR_FORMAT, "chat: tool calls after [TOOL_CALLS] are not valid JSON: %s", je.text);
        }
        p += je.position;
        json_t *arr = json_is_array(v) ? v : json_pack("[O]", v), *c;
        size_t i;
        json_array_foreach(arr, i, c) {
            json_t *name = json_object_get(c, "name"), *args = json_object_get(c, "arguments");
            if (!json_is_string(name)) {
                if (arr != v) json_decref(arr);
                json_decref(v);
                json_decref(out);
                return KILN_ERR(err, KILN_ERR_FORMAT, "chat: tool call %zu has no name", k);
            }
            kiln_buf ab = {0};
            if (json_is_string(args)) kiln_buf_add(&ab, json_string_value(args), json_string_length(args));
            else {
                /* a call without "arguments" dumps {}: the empty object is ours to free (it
                 * leaked before; tests/fuzz/regressions/fuzz_chat/leak-no-arguments) */
                json_t *none = args ? NULL : json_object();
                py_dump(&ab, args ? args : none);
                json_decref(none);
            }
            char id[10];
            json_t *given = json_object_get(c, "id");
            call_id(text, len, k, id);
            json_t *o = json_pack("{s:s, s:s, s:{s:O, s:s}}", "id", json_is_string(given) ? json_string_value(given) : id,
                                  "type", "function", "function", "name", name, "arguments", ab.p ? ab.p : "{}");
            kiln_buf_free(&ab);
            json_array_append_new(out, o);
            k++;
        }
        if (arr != v) json_decref(arr);
        json_decref(v);
    }
    *calls_json = json_dumps(out, JSON_COMPACT);
    json_decref(out);
    *content = kiln_strndup(text, at);
    if (!*calls_json || !*content) {
        free(*calls_json);
        kiln_free(*content);
        *calls_json = *content = NULL;
        return OOM();
    }
    /* json_dumps allocates with malloc: hand back a kiln_malloc copy */
    char *cj = kiln_strdup(*calls_json);
    free(*calls_json);
    *calls_json = cj;
    if (!cj) {
        kiln_free(*content);
        *content = NULL;
        return OOM();
    }
    return KILN_OK;
}
