/* llama3_tools.c: Llama 3 JSON tool calls, read incrementally (llama3_tools.h), and the grammar of
 * a forced call in that form.
 *
 * Reader phases: 0 start (skip white space and an optional <|python_tag|>, decide call or
 * content), 1 content (the whole output, emitted as it comes), 2 an object's head ({"name": "N",
 * "parameters": ), 3 the arguments value (streamed), 4 the rest of the object up to its "}",
 * 5 between objects (";" then the next "{"), 6 done (the rest is dropped), 7 an object laid out
 * otherwise, read whole when it closes, 8 and 9 its arguments and end events.
 */
#include "server/llama3_tools.h"
#include <jansson.h>
#include <string.h>
#include "grammar/grammar.h"
#include "util/alloc.h"

static const char TAG[] = "<|python_tag|>";

enum { P_START, P_CONTENT, P_HEAD, P_ARGS, P_REST, P_BETWEEN, P_DONE, P_BUFFERED, P_B_ARGS, P_B_END };
enum { NEED = 0, OK = 1, BAD = -1 };

static int ws(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }
static size_t skip_ws(const char *t, size_t i, size_t n) {
    while (i < n && ws(t[i])) i++;
    return i;
}
/* end of the JSON string literal that starts at t[i] == '"' (one past its closing quote), 0 if
 * it is not closed before n */
static size_t str_end(const char *t, size_t i, size_t n) {
    for (i++; i < n; i++) {
        if (t[i] == '\\') i++;
        else if (t[i] == '"') return i + 1;
    }
    return 0;
}
/* the literal at t[*i] equals lit (a quoted key): advance past it; NEED / OK / BAD */
static int key_is(const char *t, size_t *i, size_t n, const char *lit) {
    size_t e = str_end(t, *i, n);
    if (!e) return NEED;
    size_t l = strlen(lit);
    if (e - *i != l || memcmp(t + *i, lit, l)) return BAD;
    *i = e;
    return OK;
}

/* {"name": "N", "parameters"|"arguments": <value start>: OK with the name's span and the
 * value's start in *val; NEED when the text ends first; BAD when laid out otherwise */
static int head(const char *t, size_t i, size_t n, size_t *name_off, size_t *name_len, size_t *val) {
    int r;
    i = skip_ws(t, i + 1, n); /* past "{" */
    if (i >= n) return NEED;
    if (t[i] != '"') return BAD;
    if ((r = key_is(t, &i, n, "\"name\"")) != OK) return r;
    if ((i = skip_ws(t, i, n)) >= n) return NEED;
    if (t[i++] != ':') return BAD;
    if ((i = skip_ws(t, i, n)) >= n) return NEED;
    if (t[i] != '"') return BAD;
    size_t e = str_end(t, i, n);
    if (!e) return NEED;
    *name_off = i;
    *name_len = e - i;
    if ((i = skip_ws(t, e, n)) >= n) return NEED;
    if (t[i++] != ',') return BAD;
    if ((i = skip_ws(t, i, n)) >= n) return NEED;
    if (t[i] != '"') return BAD;
    e = str_end(t, i, n);
    if (!e) return NEED;
    if (!((e - i == 12 && !memcmp(t + i, "\"parameters\"", 12)) || (e - i == 11 && !memcmp(t + i, "\"arguments\"", 11))))
        return BAD;
    if ((i = skip_ws(t, e, n)) >= n) return NEED;
    if (t[i++] != ':') return BAD;
    if ((i = skip_ws(t, i, n)) >= n) return NEED;
    *val = i;
    return OK;
}

/* where the JSON value that starts at t[i] ends (one past it), 0 if not before n: objects,
 * arrays and strings by their closing character, other values at the next ",", "}", "]" or
 * white space */
static size_t value_end(const char *t, size_t i, size_t n) {
    if (i >= n) return 0;
    if (t[i] == '"') return str_end(t, i, n);
    if (t[i] != '{' && t[i] != '[') {
        while (i < n && !ws(t[i]) && t[i] != ',' && t[i] != '}' && t[i] != ']') i++;
        return i < n ? i : 0;
    }
    int depth = 0;
    for (; i < n; i++) {
        char c = t[i];
        if (c == '"') {
            size_t e = str_end(t, i, n);
            if (!e) return 0;
            i = e - 1;
        } else if (c == '{' || c == '[') depth++;
        else if ((c == '}' || c == ']') && --depth == 0) return i + 1;
    }
    return 0;
}

/* a whole object [o, e): a call with a string "name" and "parameters" or "arguments" (valid
 * JSON, jansson checks); the raw spans of the name and of the arguments value */
static int buffered_call(const char *t, size_t o, size_t e, kiln_llama3 *s) {
    json_error_t je;
    json_t *v = json_loadb(t + o, e - o, 0, &je);
    int ok = json_is_object(v) && json_is_string(json_object_get(v, "name")) &&
             (json_object_get(v, "parameters") || json_object_get(v, "arguments"));
    json_decref(v);
    if (!ok) return 0;
    s->name_len = s->args_len = 0;
    size_t i = skip_ws(t, o + 1, e); /* walk the top-level keys for the raw spans */
    while (i < e && t[i] == '"') {
        size_t k = i, ke = str_end(t, i, e);
        i = skip_ws(t, ke, e) + 1; /* past ":" */
        i = skip_ws(t, i, e);
        size_t ve = value_end(t, i, e);
        if (!ve) return 0;
        if (ke - k == 6 && !memcmp(t + k, "\"name\"", 6)) s->name_off = i, s->name_len = ve - i;
        else if ((ke - k == 12 && !memcmp(t + k, "\"parameters\"", 12)) ||
                 (ke - k == 11 && !memcmp(t + k, "\"arguments\"", 11) && !s->args_len))
            s->args_off = i, s->args_len = ve - i;
        i = skip_ws(t, ve, e);
        if (i < e && t[i] == ',') i = skip_ws(t, i + 1, e);
    }
    return s->name_len && s->args_len;
}

static int emit(kiln_hermes_ev *ev, kiln_hermes_kind k, size_t off, size_t len, int index) {
    ev->kind = k;
    ev->off = off;
    ev->len = len;
    ev->index = index;
    return 1;
}

/* the first object was no call: the whole output is content */
static void as_content(kiln_llama3 *s) {
    s->phase = P_CONTENT;
    s->pos = 0;
}

int kiln_llama3_next(kiln_llama3 *s, const char *t, size_t len, int final, kiln_hermes_ev *ev) {
    for (;;) {
        switch (s->phase) {
        case P_START: {
            size_t i = skip_ws(t, 0, len);
            if (i < len && len - i < sizeof TAG - 1 && !memcmp(t + i, TAG, len - i) && !final) return 0;
            if (i + sizeof TAG - 1 <= len && !memcmp(t + i, TAG, sizeof TAG - 1)) i = skip_ws(t, i + sizeof TAG - 1, len);
            if (i >= len && !final) return 0;
            if (i < len && t[i] == '{') {
                s->obj = i;
                s->phase = P_HEAD;
            } else
                as_content(s);
            continue;
        }
        case P_CONTENT:
            if (s->pos >= len) return 0;
            emit(ev, KILN_HERMES_CONTENT, s->pos, len - s->pos, 0);
            s->pos = len;
            return 1;
        case P_HEAD: {
            size_t val = 0;
            int r = head(t, s->obj, len, &s->name_off, &s->name_len, &val);
            if (r == NEED && !final) return 0;
            if (r != OK) {
                s->phase = P_BUFFERED;
                continue;
            }
            s->pos = val;
            s->begun = 1;
            s->phase = P_ARGS;
            s->depth = s->in_str = s->esc = s->started = 0;
            return emit(ev, KILN_HERMES_CALL, s->name_off, s->name_len, s->n_calls);
        }
        case P_ARGS: { /* as hermes.c: the value's bytes up to where it closes */
            size_t i = s->pos;
            int end = 0;
            for (; i < len && !end; i++) {
                char c = t[i];
                if (s->in_str) {
                    if (s->esc) s->esc = 0;
                    else if (c == '\\') s->esc = 1;
                    else if (c == '"') {
                        s->in_str = 0;
                        if (s->depth == 0) end = 1;
                    }
                    continue;
                }
                if (c == '"') s->in_str = s->started = 1;
                else if (c == '{' || c == '[') s->depth++, s->started = 1;
                else if (c == '}' || c == ']') {
                    if (--s->depth <= 0) {
                        if (s->depth < 0) i--; /* a scalar value ended by the object's "}" */
                        end = 1;
                    }
                } else if (s->started && s->depth == 0 && (c == ',' || ws(c))) {
                    i--;
                    end = 1;
                } else s->started = 1;
            }
            if (end) {
                s->phase = P_REST;
                s->depth = 1; /* inside the call's object */
                s->in_str = s->esc = 0;
            }
            if (i > s->pos) {
                size_t off = s->pos;
                s->pos = i;
                return emit(ev, KILN_HERMES_ARGS, off, i - off, s->n_calls);
            }
            if (end) continue;
            if (final) s->phase = P_DONE;
            return 0;
        }
        case P_REST: /* other keys, then the object's "}" */
            for (; s->pos < len; s->pos++) {
                char c = t[s->pos];
                if (s->in_str) {
                    if (s->esc) s->esc = 0;
                    else if (c == '\\') s->esc = 1;
                    else if (c == '"') s->in_str = 0;
                } else if (c == '"') s->in_str = 1;
                else if (c == '{' || c == '[') s->depth++;
                else if ((c == '}' || c == ']') && --s->depth == 0) {
                    s->pos++;
                    s->phase = P_BETWEEN;
                    return emit(ev, KILN_HERMES_CALL_END, 0, 0, s->n_calls++);
                }
            }
            if (final) s->phase = P_DONE;
            return 0;
        case P_BETWEEN: {
            size_t i = skip_ws(t, s->pos, len);
            if (i >= len) {
                if (final) s->phase = P_DONE;
                return 0;
            }
            if (t[i] != ';') {
                s->phase = P_DONE;
                continue;
            }
            i = skip_ws(t, i + 1, len);
            if (i >= len) {
                if (final) s->phase = P_DONE;
                return 0;
            }
            if (t[i] != '{') {
                s->phase = P_DONE;
                continue;
            }
            s->obj = i;
            s->phase = P_HEAD;
            continue;
        }
        case P_BUFFERED: {
            size_t e = value_end(t, s->obj, len);
            if (!e && !final) return 0;
            if (e && buffered_call(t, s->obj, e, s)) {
                s->pos = e;
                s->begun = 1;
                s->phase = P_B_ARGS;
                return emit(ev, KILN_HERMES_CALL, s->name_off, s->name_len, s->n_calls);
            }
            if (s->n_calls == 0) as_content(s);
            else s->phase = P_DONE;
            continue;
        }
        case P_B_ARGS:
            s->phase = P_B_END;
            return emit(ev, KILN_HERMES_ARGS, s->args_off, s->args_len, s->n_calls);
        case P_B_END:
            s->phase = P_BETWEEN;
            return emit(ev, KILN_HERMES_CALL_END, 0, 0, s->n_calls++);
        default: /* P_DONE */
            s->pos = len;
            return 0;
        }
    }
}

/* ---- the forced-call grammar ---- */
int kiln_srv_llama3_tool_grammar(const kiln_srv_request *r, char **out, kiln_srv_err *e) {
    static const kiln_srv_call_form form = {"", "", "parameters", "", "; ", "", "_-.", "letters, digits, '_', '-' or '.'"};
    return kiln_srv_forced_call_grammar(r, &form, out, e);
}

/* ---- OpenAI tool_calls from the events ---- */
/* the name of a CALL event (a JSON string) as a jansson string */
static json_t *ev_name(const char *text, const kiln_hermes_ev *ev) {
    json_t *n = ev->len ? json_loadb(text + ev->off, ev->len, JSON_DECODE_ANY, NULL) : NULL;
    if (!json_is_string(n)) {
        json_decref(n);
        n = json_string("");
    }
    return n;
}

int kiln_srv_llama3_whole(const char *text, size_t len, kiln_srv_id_fn idf, void *ictx, char **content, char **calls) {
    *content = *calls = NULL;
    kiln_llama3 s;
    memset(&s, 0, sizeof s);
    kiln_hermes_ev ev;
    kiln_buf cont = {0}, args = {0};
    json_t *arr = json_array(), *cur = NULL;
    int rc = arr ? 0 : -1;
    while (rc == 0 && kiln_llama3_next(&s, text, len, 1, &ev)) {
        if (ev.kind == KILN_HERMES_CONTENT) rc = kiln_buf_add(&cont, text + ev.off, ev.len) ? -1 : 0;
        else if (ev.kind == KILN_HERMES_CALL) {
            json_decref(cur);
            char id[48];
            idf(ictx, id, sizeof id);
            cur = json_pack("{s:s, s:s, s:{s:o}}", "id", id, "type", "function", "function", "name", ev_name(text, &ev));
            kiln_buf_clear(&args);
            if (!cur) rc = -1;
        } else if (ev.kind == KILN_HERMES_ARGS) rc = kiln_buf_add(&args, text + ev.off, ev.len) ? -1 : 0;
        else if (ev.kind == KILN_HERMES_CALL_END && cur) {
            json_object_set_new(json_object_get(cur, "function"), "arguments", kiln_srv_jstr(args.p ? args.p : "", args.len));
            json_array_append_new(arr, cur);
            cur = NULL;
        }
    }
    json_decref(cur);
    if (rc == 0 && json_array_size(arr)) {
        kiln_buf b = {0};
        if (kiln_srv_add_json(&b, arr) < 0) rc = -1;
        *calls = b.p;
    }
    json_decref(arr);
    kiln_buf_free(&cont);
    kiln_buf_free(&args);
    return rc;
}

int kiln_srv_llama3_frames(kiln_llama3 *s, const char *text, size_t len, int final, kiln_buf *b,
                           const kiln_srv_request *r, const kiln_srv_meta *m, int *first, kiln_srv_id_fn idf,
                           void *ictx) {
    kiln_hermes_ev ev;
    while (kiln_llama3_next(s, text, len, final, &ev)) {
        kiln_srv_out o = {.text = "", .finish = KILN_FINISH_NONE};
        char *cj = NULL;
        if (ev.kind == KILN_HERMES_CONTENT) {
            o.text = text + ev.off;
            o.text_len = ev.len;
        } else if (ev.kind == KILN_HERMES_CALL || ev.kind == KILN_HERMES_ARGS) {
            json_t *fn = json_object(), *c;
            if (ev.kind == KILN_HERMES_CALL) {
                char id[48];
                idf(ictx, id, sizeof id);
                json_object_set_new(fn, "name", ev_name(text, &ev));
                json_object_set_new(fn, "arguments", json_string(""));
                c = json_pack("[{s:i, s:s, s:s, s:o}]", "index", ev.index, "id", id, "type", "function", "function", fn);
            } else {
                json_object_set_new(fn, "arguments", kiln_srv_jstr(text + ev.off, ev.len));
                c = json_pack("[{s:i, s:o}]", "index", ev.index, "function", fn);
            }
            kiln_buf t = {0};
            int bad = !c || kiln_srv_add_json(&t, c) < 0;
            json_decref(c);
            if (bad) {
                kiln_buf_free(&t);
                return -1;
            }
            cj = t.p;
            o.tool_calls_json = cj;
        } else
            continue;
        int rc = kiln_srv_sse_chunk(b, r, m, &o, *first, NULL, NULL);
        kiln_free(cj);
        *first = 0;
        if (rc < 0) return -1;
    }
    return 0;
}
