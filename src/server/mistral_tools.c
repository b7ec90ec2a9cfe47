/* mistral_tools.c: Mistral output ([THINK] reasoning, content, tool calls in the v3/v7 JSON form
 * or the v11/v13 [ARGS] form) read incrementally, and the forced-call grammar (mistral_tools.h).
 *
 * Reader phases: M_CONTENT (content, looking for [THINK] and [TOOL_CALLS]), M_THINK (reasoning up
 * to [/THINK]), M_HEAD (just after [TOOL_CALLS]: which form), M_V11 (a v11/v13 head: name,
 * [CALL_ID] id, [ARGS]), M_ARGS (an arguments value, streamed), M_AFTER (after a v11 call or a v7
 * array: another [TOOL_CALLS], or the end), M_JOBJ (in a v7 array: the next object, "," or "]"),
 * M_JREST (the rest of a v7 object after its arguments), M_JBUF (a v7 object laid out otherwise,
 * read whole: its CALL, ARGS and CALL_END in turn), M_DONE (the rest is dropped).
 */
#include "server/mistral_tools.h"
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "grammar/grammar.h"
#include "util/alloc.h"

static const char TC[] = "[TOOL_CALLS]", THINK[] = "[THINK]", ETHINK[] = "[/THINK]", ARGS[] = "[ARGS]",
                  CID[] = "[CALL_ID]";
enum { M_CONTENT, M_THINK, M_HEAD, M_V11, M_ARGS, M_AFTER, M_JOBJ, M_JREST, M_JBUF, M_DONE };
enum { NEED = 0, OK = 1, BAD = -1 };

void kiln_mtc_init(kiln_mtc *s, int tools) {
    memset(s, 0, sizeof *s);
    s->tools = tools;
    if (tools == 2) s->phase = M_HEAD; /* a forced call: the output is the calls, in the JSON form */
}

void kiln_mtc_free(kiln_mtc *s) {
    json_decref((json_t *)s->arr);
    s->arr = NULL;
    kiln_buf_free(&s->a);
    kiln_buf_free(&s->b);
    kiln_buf_free(&s->c);
}

static int ws(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }
static size_t skip_ws(const char *t, size_t i, size_t n) {
    while (i < n && ws(t[i])) i++;
    return i;
}
static const char *find(const char *t, size_t from, size_t n, const char *lit) {
    size_t l = strlen(lit);
    for (size_t i = from; i + l <= n; i++)
        if (t[i] == lit[0] && !memcmp(t + i, lit, l)) return t + i;
    return NULL;
}
/* the length of the longest end of t[from, n) that begins lit (a marker still coming) */
static size_t partial(const char *t, size_t from, size_t n, const char *lit) {
    size_t l = strlen(lit), best = 0;
    for (size_t k = 1; k < l && k <= n - from; k++)
        if (!memcmp(t + n - k, lit, k)) best = k;
    return best;
}
/* one past the JSON string literal at t[i] == '"', 0 if not closed before n */
static size_t str_end(const char *t, size_t i, size_t n) {
    for (i++; i < n; i++) {
        if (t[i] == '\\') i++;
        else if (t[i] == '"') return i + 1;
    }
    return 0;
}
/* {"name": "N", "arguments": <value>: OK with the name's literal span and the value's start */
static int jhead(const char *t, size_t i, size_t n, size_t *no, size_t *nl, size_t *val) {
    static const char *const want[] = {"\"name\"", ":", NULL, ",", "\"arguments\"", ":"};
    for (int k = 0; k < 6; k++) {
        i = skip_ws(t, k == 0 ? i + 1 : i, n); /* past "{" first */
        if (i >= n) return NEED;
        if (!want[k] || want[k][0] == '"') {
            if (t[i] != '"') return BAD;
            size_t e = str_end(t, i, n);
            if (!e) return NEED;
            if (want[k] && (e - i != strlen(want[k]) || memcmp(t + i, want[k], e - i))) return BAD;
            if (!want[k]) *no = i, *nl = e - i;
            i = e;
        } else if (t[i++] != want[k][0]) {
            return BAD;
        }
    }
    if ((i = skip_ws(t, i, n)) >= n) return NEED;
    *val = i;
    return OK;
}
/* one past the JSON value at t[i] (objects / arrays / strings by their closing character,
 * scalars at a delimiter), 0 if it does not end before n */
static size_t value_end(const char *t, size_t i, size_t n) {
    if (i >= n) return 0;
    if (t[i] == '"') return str_end(t, i, n);
    if (t[i] != '{' && t[i] != '[') {
        for (; i < n; i++)
            if (strchr(",}] \n\t\r[", t[i])) return i;
        return 0;
    }
    int d = 0, in = 0;
    for (; i < n; i++) {
        char c = t[i];
        if (in) {
            if (c == '\\') i++;
            else if (c == '"') in = 0;
        } else if (c == '"') in = 1;
        else if (c == '{' || c == '[') d++;
        else if ((c == '}' || c == ']') && --d == 0) return i + 1;
    }
    return 0;
}

static int emit(kiln_mtc_ev *ev, kiln_mtc_kind k, const char *s, size_t len, int index) {
    memset(ev, 0, sizeof *ev);
    ev->kind = k;
    ev->s = s;
    ev->len = len;
    ev->index = index;
    return 1;
}

/* the arguments value from s->pos: the bytes available as ARGS, CALL_END when it has ended */
static int args_step(kiln_mtc *s, const char *t, size_t n, int final, kiln_mtc_ev *ev, int next_phase) {
    size_t i = s->pos;
    if (!s->started) {
        i = s->pos = skip_ws(t, i, n);
        if (i >= n) {
            if (!final) return 0;
            s->phase = next_phase;
            return emit(ev, KILN_MTC_CALL_END, NULL, 0, s->n_calls - 1);
        }
        s->started = 1;
        s->scalar = t[i] != '{' && t[i] != '[';
        s->depth = 0;
        s->in_str = s->esc = 0;
    }
    int done = s->started == 2; /* 2: the value has ended, its last bytes were sent */
    if (done) {
    } else if (s->scalar) { /* a string or a bare value: value_end once it has ended */
        size_t e = value_end(t, i, n);
        if (!e && !final) return 0;
        i = e ? e : n;
        done = 1;
    } else {
        for (; i < n && !done; i++) {
            char c = t[i];
            if (s->in_str) {
                if (s->esc) s->esc = 0;
                else if (c == '\\') s->esc = 1;
                else if (c == '"') s->in_str = 0;
            } else if (c == '"') s->in_str = 1;
            else if (c == '{' || c == '[') s->depth++;
            else if ((c == '}' || c == ']') && --s->depth == 0) done = 1;
        }
        done |= final;
    }
    if (i > s->pos) {
        size_t from = s->pos;
        s->pos = i;
        if (done) s->started = 2;
        return emit(ev, KILN_MTC_ARGS, t + from, i - from, s->n_calls - 1);
    }
    if (!done) return 0;
    s->started = 0;
    s->phase = next_phase;
    if (next_phase == M_JREST) { /* the JSON form's CALL_END comes when its object closes */
        s->depth = 1;
        s->in_str = s->esc = 0;
        s->mark = s->pos;
        return 2;
    }
    return emit(ev, KILN_MTC_CALL_END, NULL, 0, s->n_calls - 1);
}

/* the "id" string among the members in t[i, n) (what follows the arguments), into s->a */
static void rest_id(kiln_mtc *s, const char *t, size_t i, size_t n) {
    kiln_buf_clear(&s->a);
    for (;;) {
        i = skip_ws(t, i, n);
        if (i < n && t[i] == ',') i = skip_ws(t, i + 1, n);
        if (i >= n || t[i] != '"') return;
        size_t ke = str_end(t, i, n);
        if (!ke) return;
        int is_id = ke - i == 4 && !memcmp(t + i, "\"id\"", 4);
        i = skip_ws(t, ke, n);
        if (i >= n || t[i] != ':') return;
        i = skip_ws(t, i + 1, n);
        size_t ve = value_end(t, i, n);
        if (!ve) return;
        if (is_id && t[i] == '"') {
            json_t *v = json_loadb(t + i, ve - i, JSON_DECODE_ANY, NULL);
            if (json_is_string(v)) kiln_buf_add(&s->a, json_string_value(v), json_string_length(v));
            json_decref(v);
            return;
        }
        i = ve;
    }
}

/* a [TOOL_CALLS] that never became a call: content after all when no call came before it */
static int not_a_call(kiln_mtc *s, const char *t, size_t n, kiln_mtc_ev *ev) {
    s->phase = M_DONE;
    if (s->n_calls || s->tools == 2) return 0;
    s->pos = n;
    return emit(ev, KILN_MTC_CONTENT, t + s->mark, n - s->mark, 0);
}

int kiln_mtc_next(kiln_mtc *s, const char *t, size_t n, int final, kiln_mtc_ev *ev) {
    for (;;) {
        size_t i = s->pos;
        switch (s->phase) {
        case M_CONTENT:
        case M_THINK: {
            int th = s->phase == M_THINK;
            const char *a = th ? find(t, i, n, ETHINK) : find(t, i, n, THINK);
            const char *b = !th && s->tools ? find(t, i, n, TC) : NULL;
            const char *m = a && (!b || a < b) ? a : b;
            size_t end = m ? (size_t)(m - t) : n;
            if (!m && !final) {
                size_t h = th ? partial(t, i, n, ETHINK) : partial(t, i, n, THINK);
                size_t h2 = !th && s->tools ? partial(t, i, n, TC) : 0;
                end = n - (h > h2 ? h : h2);
            }
            if (end > i) {
                s->pos = end;
                return emit(ev, th ? KILN_MTC_REASONING : KILN_MTC_CONTENT, t + i, end - i, 0);
            }
            if (!m) return 0;
            if (m == a) {
                s->pos = end + strlen(th ? ETHINK : THINK);
                s->phase = th ? M_CONTENT : M_THINK;
            } else {
                s->mark = end;
                s->pos = end + strlen(TC);
                s->phase = M_HEAD;
            }
            continue;
        }
        case M_HEAD: {
            size_t j = s->tools == 2 ? skip_ws(t, i, n) : i;
            if (j >= n) return final ? not_a_call(s, t, n, ev) : 0;
            if (t[j] == '[' && !(n - j >= strlen(ARGS) && !memcmp(t + j, ARGS, strlen(ARGS)))) {
                s->pos = j + 1;
                s->phase = M_JOBJ;
            } else if (t[j] == '{') {
                s->pos = j; /* one object, not in an array */
                s->phase = M_JOBJ;
            } else {
                s->phase = M_V11;
            }
            continue;
        }
        case M_V11: {
            const char *a = find(t, i, n, ARGS), *c = find(t, i, n, CID);
            if (!a) return final ? not_a_call(s, t, n, ev) : 0;
            const char *ne = c && c < a ? c : a;
            memset(ev, 0, sizeof *ev);
            ev->kind = KILN_MTC_CALL;
            ev->s = t + i;
            ev->len = (size_t)(ne - (t + i));
            if (c && c < a) {
                ev->id = c + strlen(CID);
                ev->id_len = (size_t)(a - ev->id);
            }
            ev->index = s->n_calls++;
            s->pos = (size_t)(a - t) + strlen(ARGS);
            s->phase = M_ARGS;
            s->started = 0;
            return 1;
        }
        case M_ARGS: {
            int r = args_step(s, t, n, final, ev, s->arr_step ? M_JREST : M_AFTER);
            if (r == 2) continue;
            return r;
        }
        case M_AFTER: {
            size_t j = skip_ws(t, i, n);
            if (j < n && n - j >= strlen(TC) && !memcmp(t + j, TC, strlen(TC))) {
                s->mark = j;
                s->pos = j + strlen(TC);
                s->arr_step = 0;
                s->phase = M_HEAD;
                continue;
            }
            if (!final && (j >= n || partial(t, j, n, TC) == n - j)) return 0;
            s->phase = M_DONE;
            continue;
        }
        case M_JOBJ: {
            size_t j = skip_ws(t, i, n);
            if (j < n && t[j] == ',') j = skip_ws(t, j + 1, n);
            if (j >= n) return final ? not_a_call(s, t, n, ev) : 0;
            if (t[j] == ']') {
                s->pos = j + 1;
                s->phase = M_AFTER;
                continue;
            }
            if (t[j] != '{') {
                s->phase = M_DONE;
                continue;
            }
            size_t no = 0, nl = 0, val = 0;
            int h = jhead(t, j, n, &no, &nl, &val);
            if (h == NEED && !final) return 0;
            if (h == OK) {
                json_t *name = json_loadb(t + no, nl, JSON_DECODE_ANY, NULL);
                kiln_buf_clear(&s->a);
                if (json_is_string(name)) kiln_buf_add(&s->a, json_string_value(name), json_string_length(name));
                json_decref(name);
                s->pos = val;
                s->arr_step = 1;
                s->started = 0;
                s->phase = M_ARGS;
                return emit(ev, KILN_MTC_CALL, s->a.p ? s->a.p : "", s->a.len, s->n_calls++);
            }
            /* laid out otherwise: read the object whole when it closes */
            size_t e = value_end(t, j, n);
            if (!e) return final ? not_a_call(s, t, n, ev) : 0;
            json_t *o = json_loadb(t + j, e - j, 0, NULL), *nm = json_object_get(o, "name");
            json_t *ag = json_object_get(o, "arguments"), *oid = json_object_get(o, "id");
            if (!json_is_string(nm)) {
                json_decref(o);
                s->pos = e;
                if (!s->n_calls) return not_a_call(s, t, n, ev);
                s->phase = M_DONE;
                continue;
            }
            kiln_buf_clear(&s->a);
            kiln_buf_clear(&s->b);
            kiln_buf_add(&s->a, json_string_value(nm), json_string_length(nm));
            if (json_is_string(ag)) kiln_buf_add(&s->b, json_string_value(ag), json_string_length(ag));
            else {
                char *d = ag ? json_dumps(ag, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
                kiln_buf_adds(&s->b, d ? d : "{}");
                free(d);
            }
            kiln_buf_clear(&s->c);
            if (json_is_string(oid)) kiln_buf_add(&s->c, json_string_value(oid), json_string_length(oid));
            json_decref(o);
            s->pos = e;
            s->phase = M_JBUF;
            s->arr_step = 1;
            emit(ev, KILN_MTC_CALL, s->a.p ? s->a.p : "", s->a.len, s->n_calls++);
            if (s->c.len) ev->id = s->c.p, ev->id_len = s->c.len;
            return 1;
        }
        case M_JBUF:
            if (s->arr_step == 1) {
                s->arr_step = 2;
                return emit(ev, KILN_MTC_ARGS, s->b.p ? s->b.p : "", s->b.len, s->n_calls - 1);
            }
            s->phase = M_JOBJ;
            return emit(ev, KILN_MTC_CALL_END, NULL, 0, s->n_calls - 1);
        case M_JREST: /* skip to the object's closing "}" (s->depth counts from inside it) */
            for (; i < n; i++) {
                char c = t[i];
                if (s->in_str) {
                    if (s->esc) s->esc = 0;
                    else if (c == '\\') s->esc = 1;
                    else if (c == '"') s->in_str = 0;
                } else if (c == '"') s->in_str = 1;
                else if (c == '{' || c == '[') s->depth++;
                else if ((c == '}' || c == ']') && --s->depth == 0) {
                    rest_id(s, t, s->mark, i);
                    s->pos = i + 1;
                    s->phase = M_JOBJ;
                    emit(ev, KILN_MTC_CALL_END, NULL, 0, s->n_calls - 1);
                    if (s->a.len) ev->id = s->a.p, ev->id_len = s->a.len;
                    return 1;
                }
            }
            s->pos = n;
            if (!final) return 0;
            s->phase = M_DONE;
            return emit(ev, KILN_MTC_CALL_END, NULL, 0, s->n_calls - 1);
        default:
            s->pos = n;
            return 0;
        }
    }
}

/* 9 alphanumerics from the server's id (the Mistral formats want them back so) */
static void mistral_id(kiln_srv_id_fn idf, void *ictx, char out[10]) {
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    char raw[48];
    idf(ictx, raw, sizeof raw);
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = raw; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    for (int i = 0; i < 9; i++) {
        h = h * 6364136223846793005ULL + 1442695040888963407ULL;
        out[i] = al[(h >> 33) % 62];
    }
    out[9] = 0;
}

/* a CALL event's id: the model's, else a new one */
static json_t *call_id_of(const kiln_mtc_ev *ev, kiln_srv_id_fn idf, void *ictx) {
    char id[10];
    if (ev->id && ev->id_len) return json_stringn(ev->id, ev->id_len);
    mistral_id(idf, ictx, id);
    return json_string(id);
}

int kiln_srv_mistral_whole(const char *text, size_t len, int tools, kiln_srv_id_fn idf, void *ictx, char **content,
                           char **reasoning, char **calls) {
    *content = *reasoning = *calls = NULL;
    kiln_mtc s;
    kiln_mtc_init(&s, tools);
    kiln_mtc_ev ev;
    kiln_buf cont = {0}, reas = {0}, args = {0};
    json_t *arr = json_array(), *cur = NULL;
    int oom = !arr, any_reasoning = 0;
    while (!oom && kiln_mtc_next(&s, text, len, 1, &ev)) {
        if (ev.kind == KILN_MTC_CONTENT) oom |= kiln_buf_add(&cont, ev.s, ev.len);
        else if (ev.kind == KILN_MTC_REASONING) any_reasoning = 1, oom |= kiln_buf_add(&reas, ev.s, ev.len);
        else if (ev.kind == KILN_MTC_CALL) {
            json_decref(cur);
            cur = json_pack("{s:o, s:s, s:{s:s%}}", "id", call_id_of(&ev, idf, ictx), "type", "function", "function",
                            "name", ev.s, ev.len);
            oom |= !cur;
            kiln_buf_clear(&args);
        } else if (ev.kind == KILN_MTC_ARGS) oom |= kiln_buf_add(&args, ev.s, ev.len);
        else if (ev.kind == KILN_MTC_CALL_END && cur) {
            if (ev.id) json_object_set_new(cur, "id", json_stringn(ev.id, ev.id_len)); /* v3/v7: "id" after the arguments */
            json_object_set_new(json_object_get(cur, "function"), "arguments", json_stringn(args.p ? args.p : "", args.len));
            json_array_append_new(arr, cur);
            cur = NULL;
        }
    }
    /* a reasoning block seen (even empty) is reported; the THINK markers themselves never are */
    if (s.phase == M_THINK) any_reasoning = 1;
    json_decref(cur);
    kiln_mtc_free(&s);
    if (!oom && json_array_size(arr)) {
        char *d = json_dumps(arr, JSON_COMPACT);
        *calls = d ? kiln_strdup(d) : NULL;
        free(d);
        oom |= !*calls;
        int blank = 1;
        for (size_t i = 0; i < cont.len; i++) blank &= ws(cont.p[i]);
        if (!blank) *content = kiln_buf_take(&cont, NULL);
    } else if (!oom) {
        *content = kiln_buf_take(&cont, NULL);
        if (!*content) *content = kiln_strdup(""), oom |= !*content;
    }
    if (!oom && any_reasoning) {
        *reasoning = kiln_buf_take(&reas, NULL);
        if (!*reasoning) *reasoning = kiln_strdup(""), oom |= !*reasoning;
    }
    json_decref(arr);
    kiln_buf_free(&cont);
    kiln_buf_free(&reas);
    kiln_buf_free(&args);
    if (oom) {
        kiln_free(*content);
        kiln_free(*reasoning);
        kiln_free(*calls);
        *content = *reasoning = *calls = NULL;
        return -1;
    }
    return 0;
}

int kiln_srv_mistral_frames(kiln_mtc *s, const char *text, size_t len, int final, kiln_buf *b,
                            const kiln_srv_request *r, const kiln_srv_meta *m, int *first, kiln_srv_id_fn idf,
                            void *ictx) {
    kiln_mtc_ev ev;
    while (kiln_mtc_next(s, text, len, final, &ev)) {
        kiln_srv_out o = {.text = "", .finish = KILN_FINISH_NONE};
        char *cj = NULL;
        if (ev.kind == KILN_MTC_CONTENT) {
            o.text = ev.s;
            o.text_len = ev.len;
        } else if (ev.kind == KILN_MTC_REASONING) {
            o.reasoning = ev.s;
            o.reasoning_len = ev.len;
        } else if (ev.kind == KILN_MTC_CALL || ev.kind == KILN_MTC_ARGS) {
            json_t *c = ev.kind == KILN_MTC_CALL
                            ? json_pack("[{s:i, s:o, s:s, s:{s:s%, s:s}}]", "index", ev.index, "id", call_id_of(&ev, idf, ictx),
                                        "type", "function", "function", "name", ev.s, ev.len, "arguments", "")
                            : json_pack("[{s:i, s:{s:s%}}]", "index", ev.index, "function", "arguments", ev.s, ev.len);
            char *d = c ? json_dumps(c, JSON_COMPACT) : NULL;
            json_decref(c);
            cj = d ? kiln_strdup(d) : NULL;
            free(d);
            if (!cj) return -1;
            o.tool_calls_json = cj;
        } else continue;
        if (ev.len == 0 && (ev.kind == KILN_MTC_CONTENT || ev.kind == KILN_MTC_REASONING || ev.kind == KILN_MTC_ARGS)) {
            kiln_free(cj);
            continue;
        }
        int rc = kiln_srv_sse_chunk(b, r, m, &o, *first, NULL, NULL);
        kiln_free(cj);
        *first = 0;
        if (rc < 0) return -1;
    }
    return 0;
}

int kiln_srv_mistral_tool_grammar(const kiln_srv_request *r, int ver, char **out, kiln_srv_err *e) {
    (void)ver; /* every version: the JSON array form (see the header) */
    static const kiln_srv_call_form form = {"", "", "arguments", "[", ", ", "]", "_-", "letters, digits, '_' or '-'"};
    return kiln_srv_forced_call_grammar(r, &form, out, e);
}
