/* tools.c: forced tool calls as a grammar, and Hermes-form output as OpenAI tool_calls (tools.h). */
#include <string.h>
#include "grammar/grammar.h"
#include "server/tools.h"
#include "util/alloc.h"

/* a name of letters, digits and the form's extra characters, up to 64 (NULL: not a name) */
static int name_ok(const char *s, const char *extra) {
    if (!s || !*s || strlen(s) > 64) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || strchr(extra, *s)))
            return 0;
    return 1;
}

int kiln_srv_forced_call_grammar(const kiln_srv_request *r, const kiln_srv_call_form *f, char **out, kiln_srv_err *e) {
    *out = NULL;
    json_t *tools = json_loads(r->tools_json ? r->tools_json : "[]", 0, NULL);
    kiln_buf b = {0}, calls = {0};
    int status = 0, k = 0;
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        json_t *fn = json_object_get(t, "function");
        const char *name = json_string_value(json_object_get(fn, "name"));
        if (r->tool_forced == 2 && (!name || strcmp(name, r->tool_name))) continue;
        if (!name_ok(name, f->name_chars)) {
            status = kiln_srv_err_set(e, 400, "tools", "tools[%zu]: a forced tool call needs a name of %s (up to 64)", i,
                                      f->name_rule);
            break;
        }
        json_t *params = json_object_get(fn, "parameters");
        char prefix[32], *text = NULL;
        snprintf(prefix, sizeof prefix, "t%d-", k);
        char *ps = params && !json_is_null(params) ? json_dumps(params, JSON_COMPACT) : NULL;
        kiln_error err = {0};
        int rc = kiln_json_schema_to_gbnf(ps, prefix, &text, &err);
        free(ps);
        if (rc) {
            status = kiln_srv_err_set(e, rc == KILN_ERR_OOM ? 500 : 400, "tools", "tools[%zu] (%s) parameters: %s", i, name, err.msg);
            break;
        }
        kiln_buf_adds(&b, text);
        kiln_free(text);
        kiln_buf_addf(&b, "t%d ::= \"%s{\\\"name\\\": \\\"%s\\\", \\\"%s\\\": \" t%d-root \"}%s\"\n", k, f->call_open, name,
                      f->args_key, k, f->call_close);
        kiln_buf_addf(&calls, "%st%d", k ? " | " : "", k);
        k++;
    }
    json_decref(tools);
    if (!status && k == 0) status = kiln_srv_err_set(e, 400, "tool_choice", "no tool to call");
    if (!status) {
        kiln_buf_addf(&b, "call ::= %s\n", calls.p);
        kiln_buf_adds(&b, "root ::= ");
        if (*f->list_open) kiln_buf_addf(&b, "\"%s\" ", f->list_open);
        kiln_buf_adds(&b, "call");
        if (r->parallel_tool_calls) kiln_buf_addf(&b, " (\"%s\" call){0,2}", f->sep);
        if (*f->list_close) kiln_buf_addf(&b, " \"%s\"", f->list_close);
        kiln_buf_adds(&b, "\n");
        if (!b.p) status = kiln_srv_err_set(e, 500, NULL, "out of memory");
    }
    kiln_buf_free(&calls);
    if (status) {
        kiln_buf_free(&b);
        return status;
    }
    *out = kiln_buf_take(&b, NULL);
    return 0;
}

int kiln_srv_tool_grammar(const kiln_srv_request *r, char **out, kiln_srv_err *e) {
    static const kiln_srv_call_form hermes = {"<tool_call>\\n", "\\n</tool_call>", "arguments", "", "\\n", "", "_-.",
                                              "letters, digits, '_', '-' or '.'"};
    return kiln_srv_forced_call_grammar(r, &hermes, out, e);
}

/* the name of a CALL event (a JSON string) as a jansson string */
static json_t *ev_name(const char *text, const kiln_hermes_ev *ev) {
    json_t *n = ev->len ? json_loadb(text + ev->off, ev->len, JSON_DECODE_ANY, NULL) : NULL;
    if (!json_is_string(n)) { json_decref(n); n = json_string(""); }
    return n;
}

int kiln_srv_hermes_whole(const char *text, size_t len, kiln_srv_id_fn idf, void *ictx, char **content, char **calls) {
    *content = *calls = NULL;
    kiln_hermes h;
    memset(&h, 0, sizeof h);
    kiln_hermes_ev ev;
    kiln_buf cont = {0}, args = {0};
    json_t *arr = json_array(), *cur = NULL;
    while (kiln_hermes_next(&h, text, len, 1, &ev)) {
        if (ev.kind == KILN_HERMES_CONTENT) kiln_buf_add(&cont, text + ev.off, ev.len);
        else if (ev.kind == KILN_HERMES_CALL) {
            json_decref(cur);
            cur = json_object();
            char id[48];
            idf(ictx, id, sizeof id);
            json_object_set_new(cur, "id", json_string(id));
            json_object_set_new(cur, "type", json_string("function"));
            json_t *fn = json_object();
            json_object_set_new(fn, "name", ev_name(text, &ev));
            json_object_set_new(cur, "function", fn);
            kiln_buf_clear(&args);
        } else if (ev.kind == KILN_HERMES_ARGS) kiln_buf_add(&args, text + ev.off, ev.len);
        else if (ev.kind == KILN_HERMES_CALL_END && cur) {
            json_object_set_new(json_object_get(cur, "function"), "arguments", kiln_srv_jstr(args.p ? args.p : "", args.len));
            json_array_append_new(arr, cur);
            cur = NULL;
        }
    }
    json_decref(cur);
    int rc = 0;
    if (json_array_size(arr)) {
        kiln_buf b = {0};
        if (kiln_srv_add_json(&b, arr) < 0) rc = -1;
        *calls = b.p;
        int blank = 1;
        for (size_t i = 0; i < cont.len; i++) blank &= cont.p[i] == ' ' || cont.p[i] == '\n';
        if (!blank) *content = kiln_buf_take(&cont, NULL);
    }
    json_decref(arr);
    kiln_buf_free(&cont);
    kiln_buf_free(&args);
    return rc;
}

int kiln_srv_hermes_frames(kiln_hermes *h, const char *text, size_t len, int final, kiln_buf *b,
                           const kiln_srv_request *r, const kiln_srv_meta *m, int *first, kiln_srv_id_fn idf,
                           void *ictx) {
    kiln_hermes_ev ev;
    while (kiln_hermes_next(h, text, len, final, &ev)) {
        kiln_srv_out o = {.text = "", .finish = KILN_FINISH_NONE};
        char *cj = NULL;
        if (ev.kind == KILN_HERMES_CONTENT) {
            o.text = text + ev.off;
            o.text_len = ev.len;
        } else if (ev.kind == KILN_HERMES_CALL || ev.kind == KILN_HERMES_ARGS) {
            json_t *arr = json_array(), *c = json_object(), *fn = json_object();
            json_object_set_new(c, "index", json_integer(ev.index));
            if (ev.kind == KILN_HERMES_CALL) {
                char id[48];
                idf(ictx, id, sizeof id);
                json_object_set_new(c, "id", json_string(id));
                json_object_set_new(c, "type", json_string("function"));
                json_object_set_new(fn, "name", ev_name(text, &ev));
                json_object_set_new(fn, "arguments", json_string(""));
            } else {
                json_object_set_new(fn, "arguments", kiln_srv_jstr(text + ev.off, ev.len));
            }
            json_object_set_new(c, "function", fn);
            json_array_append_new(arr, c);
            kiln_buf t = {0};
            kiln_srv_add_json(&t, arr);
            json_decref(arr);
            cj = t.p;
            o.tool_calls_json = cj;
        } else continue;
        int rc = kiln_srv_sse_chunk(b, r, m, &o, *first, NULL, NULL);
        kiln_free(cj);
        *first = 0;
        if (rc < 0) return -1;
    }
    return 0;
}
