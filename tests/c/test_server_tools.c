/* kiln-layer: server (links only this layer and those below it) */
/* test_server_tools.c: Hermes tool calls (server/hermes.c, server/tools.c), without a model.
 *   - the incremental reader fed every prefix of an output gives the same content, names and
 *     argument bytes as one pass over the whole (what makes streamed deltas equal the answer);
 *   - partial "<tool_call>" openings are held back, text after the calls is dropped;
 *   - the forced-tool grammar compiles and accepts a call of the named function only. */
#include <jansson.h>
#include "grammar/grammar.h"
#include "server/tools.h"
#include "test.h"
#include "util/alloc.h"

typedef struct {
    char content[512], args[4][512], names[4][64];
    int n_calls, ended[4];
} parsed;

static void apply(parsed *p, const char *text, const kiln_hermes_ev *ev) {
    if (ev->kind == KILN_HERMES_CONTENT) strncat(p->content, text + ev->off, ev->len);
    else if (ev->kind == KILN_HERMES_CALL) { p->n_calls = ev->index + 1; strncat(p->names[ev->index], text + ev->off, ev->len); }
    else if (ev->kind == KILN_HERMES_ARGS) strncat(p->args[ev->index], text + ev->off, ev->len);
    else if (ev->kind == KILN_HERMES_CALL_END) p->ended[ev->index] = 1;
}

static void check_text(const char *text, int want_calls, const char *want_content, const char *want_args0) {
    size_t n = strlen(text);
    parsed whole, inc;
    memset(&whole, 0, sizeof whole);
    memset(&inc, 0, sizeof inc);
    kiln_hermes h;
    kiln_hermes_ev ev;
    memset(&h, 0, sizeof h);
    while (kiln_hermes_next(&h, text, n, 1, &ev)) apply(&whole, text, &ev);
    memset(&h, 0, sizeof h);
    for (size_t k = 0; k <= n; k++)
        while (kiln_hermes_next(&h, text, k, k == n, &ev)) apply(&inc, text, &ev);
    KT_CHECK(whole.n_calls == want_calls, "%s: %d calls (want %d)", text, whole.n_calls, want_calls);
    KT_CHECK(!strcmp(whole.content, want_content), "%s: content '%s' (want '%s')", text, whole.content, want_content);
    if (want_args0) KT_CHECK(!strcmp(whole.args[0], want_args0), "%s: args '%s'", text, whole.args[0]);
    KT_CHECK(!memcmp(&whole, &inc, sizeof whole), "%s: incremental differs from whole (content '%s' vs '%s', args0 '%s' vs '%s')",
             text, inc.content, whole.content, inc.args[0], whole.args[0]);
}

int main(void) {
    check_text("Sure.\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": \"x}\\\"{\", \"b\": [1, {\"c\": 2}]}}\n</tool_call>\n"
               "<tool_call>\n{\"name\": \"g\", \"arguments\": {}}\n</tool_call> trailing",
               2, "Sure.\n", "{\"a\": \"x}\\\"{\", \"b\": [1, {\"c\": 2}]}");
    check_text("<tool_call>\n{\"name\": \"f\", \"arguments\": {\"q\": 1}}\n</tool_call>", 1, "", "{\"q\": 1}");
    check_text("no calls here <tool", 0, "no calls here <tool", NULL);
    check_text("hi <tool_call> not a call", 0, "hi <tool_call> not a call", NULL);
    check_text("a < b <tool_call>\n{\"name\": \"f\", \"arguments\": {\"q\"", 1, "a < b ", "{\"q\"");

    /* the forced grammar */
    kiln_srv_request r;
    memset(&r, 0, sizeof r);
    r.tools_json = "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":{\"type\":\"object\","
                   "\"properties\":{\"city\":{\"type\":\"string\",\"maxLength\":8}},\"required\":[\"city\"]}}},"
                   "{\"type\":\"function\",\"function\":{\"name\":\"noargs\"}}]";
    r.tool_forced = 2;
    r.tool_name = "get_weather";
    r.parallel_tool_calls = 0;
    kiln_srv_err e;
    char *gbnf = NULL;
    KT_CHECK(kiln_srv_tool_grammar(&r, &gbnf, &e) == 0, "tool grammar: %s", e.msg);
    kiln_gram g;
    kiln_error err;
    KT_CHECK(gbnf && kiln_gram_from_gbnf(&g, gbnf, strlen(gbnf), &err) == 0, "compiles: %s", err.msg);
    const char *good = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
    const char *bad[] = {"<tool_call>\n{\"name\": \"noargs\", \"arguments\": {}}\n</tool_call>",
                         "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris, France\"}}\n</tool_call>",
                         "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {}}\n</tool_call>", NULL};
    kiln_gmatch *m;
    kiln_gmatch_create(&m, &g, NULL, NULL, 0, &err);
    KT_CHECK(kiln_gmatch_accept(m, good, strlen(good), &err) == 0 && kiln_gmatch_accepting(m), "named call accepted");
    kiln_gmatch_free(m);
    for (int i = 0; bad[i]; i++) {
        kiln_gmatch_create(&m, &g, NULL, NULL, 0, &err);
        int ok = kiln_gmatch_accept(m, bad[i], strlen(bad[i]), &err) == 0 && kiln_gmatch_accepting(m);
        KT_CHECK(!ok, "refused: %s", bad[i]);
        kiln_gmatch_free(m);
    }
    kiln_gram_free(&g);
    kiln_free(gbnf);
    r.tool_forced = 1;
    r.parallel_tool_calls = 1;
    KT_CHECK(kiln_srv_tool_grammar(&r, &gbnf, &e) == 0 && strstr(gbnf, "call ::= t0 | t1"), "required: every tool");
    kiln_free(gbnf);
    return kt_done();
}
