/* kiln-layer: server (links only this layer and those below it) */
/* test_server_llama3_tools.c: Llama 3 JSON tool calls (server/llama3_tools.c), without a model.
 *   - the incremental reader fed every prefix of an output gives the same content, names and
 *     argument bytes as one pass over the whole (what makes streamed deltas equal the answer);
 *   - what vLLM's llama3_json parser takes as calls: optional <|python_tag|>, "parameters" or
 *     "arguments", ";"-separated objects, keys in any order; what it leaves as content: text
 *     first, an object that is not a call; text after the calls is dropped;
 *   - the whole-output builder's OpenAI tool_calls (names, arguments JSON text, ids);
 *   - the forced-tool grammar compiles and accepts a call of the named function only. */
#include <jansson.h>
#include "grammar/grammar.h"
#include "server/llama3_tools.h"
#include "test.h"
#include "util/alloc.h"

typedef struct {
    char content[512], args[4][512], names[4][64];
    int n_calls, ended[4];
} parsed;

static void apply(parsed *p, const char *text, const kiln_hermes_ev *ev) {
    if (ev->index >= 4) return;
    if (ev->kind == KILN_HERMES_CONTENT) strncat(p->content, text + ev->off, ev->len);
    else if (ev->kind == KILN_HERMES_CALL) { p->n_calls = ev->index + 1; strncat(p->names[ev->index], text + ev->off, ev->len); }
    else if (ev->kind == KILN_HERMES_ARGS) strncat(p->args[ev->index], text + ev->off, ev->len);
    else if (ev->kind == KILN_HERMES_CALL_END) p->ended[ev->index] = 1;
}

/* want_names: the calls' names as JSON strings joined by "|"; want_args: the arguments joined by "|" */
static void check_text(const char *text, int want_ended, const char *want_content, const char *want_names,
                       const char *want_args) {
    size_t n = strlen(text);
    parsed whole, inc;
    memset(&whole, 0, sizeof whole);
    memset(&inc, 0, sizeof inc);
    kiln_llama3 s;
    kiln_hermes_ev ev;
    memset(&s, 0, sizeof s);
    while (kiln_llama3_next(&s, text, n, 1, &ev)) apply(&whole, text, &ev);
    memset(&s, 0, sizeof s);
    for (size_t k = 0; k <= n; k++)
        while (kiln_llama3_next(&s, text, k, k == n, &ev)) apply(&inc, text, &ev);
    int ended = 0;
    char names[512] = "", args[1024] = "";
    for (int i = 0; i < whole.n_calls && i < 4; i++) {
        ended += whole.ended[i];
        if (i) strcat(names, "|"), strcat(args, "|");
        strcat(names, whole.names[i]);
        strcat(args, whole.args[i]);
    }
    KT_CHECK(ended == want_ended, "%s: %d calls (want %d)", text, ended, want_ended);
    KT_CHECK(!strcmp(whole.content, want_content), "%s: content '%s' (want '%s')", text, whole.content, want_content);
    if (want_names) KT_CHECK(!strcmp(names, want_names), "%s: names '%s' (want '%s')", text, names, want_names);
    if (want_args) KT_CHECK(!strcmp(args, want_args), "%s: args '%s' (want '%s')", text, args, want_args);
    KT_CHECK(!memcmp(&whole, &inc, sizeof whole), "%s: incremental differs from whole (content '%s' vs '%s', args0 '%s' vs '%s')",
             text, whole.content, inc.content, whole.args[0], inc.args[0]);
}

static const char *jstr(json_t *o, const char *k) {
    const char *v = json_string_value(json_object_get(o, k));
    return v ? v : "";
}

static void tool_id(void *ctx, char *id, size_t cap) {
    int *k = ctx;
    snprintf(id, cap, "call%d", (*k)++);
}

int main(void) {
    check_text("{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}", 1, "", "\"get_weather\"",
               "{\"city\": \"Paris\"}");
    check_text("<|python_tag|>{\"name\": \"f\", \"arguments\": {\"a\": [1, {\"b\": \"}\\\"{\"}]}}; {\"name\": \"g\", \"parameters\": {}}",
               2, "", "\"f\"|\"g\"", "{\"a\": [1, {\"b\": \"}\\\"{\"}]}|{}");
    check_text("\n  {\"name\": \"f\", \"parameters\": {}} ;\n {\"name\": \"h\", \"parameters\": {\"y\": [1, 2]}}", 2, "",
               "\"f\"|\"h\"", "{}|{\"y\": [1, 2]}");
    check_text("{\"name\":\"f\",\"parameters\":5}", 1, "", "\"f\"", "5");
    check_text("{\"name\": \"f\", \"parameters\": \"s}\", \"id\": {\"k\": \"}\"}} trailing text", 1, "", "\"f\"", "\"s}\"");
    check_text("{\"parameters\": {\"x\": 1}, \"name\": \"f\"}", 1, "", "\"f\"", "{\"x\": 1}"); /* read whole */
    check_text("{\"name\": \"f\", \"x\": 0, \"arguments\": [true]}", 1, "", "\"f\"", "[true]");
    check_text("{\"name\": \"f\", \"parameters\": {}}; not a call", 1, "", "\"f\"", "{}");
    check_text("{\"name\": \"f\", \"parameters\": {}}; {\"answer\": 1}", 1, "", "\"f\"", "{}");
    /* content: plain text, text before JSON, JSON that is no call, a built-in tool's python */
    check_text("Hello there", 0, "Hello there", NULL, NULL);
    check_text("Sure: {\"name\": \"f\", \"parameters\": {}}", 0, "Sure: {\"name\": \"f\", \"parameters\": {}}", NULL, NULL);
    check_text("{\"answer\": 4}", 0, "{\"answer\": 4}", NULL, NULL);
    check_text("{\"name\": 5, \"parameters\": {}}", 0, "{\"name\": 5, \"parameters\": {}}", NULL, NULL);
    check_text("{\"name\": \"f\"}", 0, "{\"name\": \"f\"}", NULL, NULL);
    check_text("{\"name\": \"f\", \"parameters\": {}", 0, "", "\"f\"", "{}"); /* cut off: no end */
    check_text("{\"parameters\": {}, \"name\": \"f\"", 0, "{\"parameters\": {}, \"name\": \"f\"", NULL, NULL);
    check_text("<|python_tag|>brave_search.call(query=\"x\")", 0, "<|python_tag|>brave_search.call(query=\"x\")", NULL, NULL);
    check_text("<|python", 0, "<|python", NULL, NULL);
    check_text("   ", 0, "   ", NULL, NULL);
    check_text("", 0, "", NULL, NULL);

    /* the whole answer as OpenAI tool_calls */
    int k = 0;
    char *content = NULL, *calls = NULL;
    const char *out = "<|python_tag|>{\"name\": \"f\", \"parameters\": {\"a\": \"\\u00e9\"}}; {\"arguments\": {}, \"name\": \"g\"}";
    KT_CHECK(kiln_srv_llama3_whole(out, strlen(out), tool_id, &k, &content, &calls) == 0, "whole");
    json_t *arr = calls ? json_loads(calls, 0, NULL) : NULL;
    KT_CHECK(json_array_size(arr) == 2 && !content, "two calls, no content: %s", calls ? calls : "(none)");
    json_t *f0 = json_object_get(json_array_get(arr, 0), "function");
    json_t *c0 = json_array_get(arr, 0);
    KT_CHECK(!strcmp(jstr(f0, "name"), "f") && !strcmp(jstr(f0, "arguments"), "{\"a\": \"\\u00e9\"}") &&
                 !strcmp(jstr(c0, "id"), "call0") && !strcmp(jstr(c0, "type"), "function"),
             "call 0: %s", calls ? calls : "");
    json_decref(arr);
    kiln_free(calls);
    kiln_free(content);
    KT_CHECK(kiln_srv_llama3_whole("plain", 5, tool_id, &k, &content, &calls) == 0 && !calls && !content, "no calls");

    /* the forced grammar */
    kiln_srv_request r;
    memset(&r, 0, sizeof r);
    r.tools_json = "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":{\"type\":\"object\","
                   "\"properties\":{\"city\":{\"type\":\"string\",\"maxLength\":8}},\"required\":[\"city\"]}}},"
                   "{\"type\":\"function\",\"function\":{\"name\":\"noargs\"}}]";
    r.tool_forced = 2;
    r.tool_name = "get_weather";
    kiln_srv_err e;
    char *gbnf = NULL;
    KT_CHECK(kiln_srv_llama3_tool_grammar(&r, &gbnf, &e) == 0, "tool grammar: %s", e.msg);
    kiln_gram g;
    kiln_error err;
    KT_CHECK(gbnf && kiln_gram_from_gbnf(&g, gbnf, strlen(gbnf), &err) == 0, "compiles: %s", err.msg);
    const char *good = "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}";
    const char *bad[] = {"{\"name\": \"noargs\", \"parameters\": {}}", "{\"name\": \"get_weather\", \"parameters\": {}}",
                         "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}; {\"name\": \"get_weather\", "
                         "\"parameters\": {\"city\": \"Rome\"}}", NULL};
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
    /* required + parallel: every tool, up to 3 calls joined by "; " (what the reader splits) */
    r.tool_forced = 1;
    r.parallel_tool_calls = 1;
    KT_CHECK(kiln_srv_llama3_tool_grammar(&r, &gbnf, &e) == 0 && strstr(gbnf, "call ::= t0 | t1"), "required: every tool");
    KT_CHECK(gbnf && kiln_gram_from_gbnf(&g, gbnf, strlen(gbnf), &err) == 0, "compiles: %s", err.msg);
    const char *two = "{\"name\": \"noargs\", \"parameters\": {}}; {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Rome\"}}";
    kiln_gmatch_create(&m, &g, NULL, NULL, 0, &err);
    KT_CHECK(kiln_gmatch_accept(m, two, strlen(two), &err) == 0 && kiln_gmatch_accepting(m), "two calls accepted");
    kiln_gmatch_free(m);
    check_text(two, 2, "", "\"noargs\"|\"get_weather\"", "{}|{\"city\": \"Rome\"}");
    kiln_gram_free(&g);
    kiln_free(gbnf);
    return kt_done();
}
