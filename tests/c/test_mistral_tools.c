/* kiln-layer: server (links only this layer and those below it) */
/* test_mistral_tools.c: the Mistral output reader and forced-call grammar (server/mistral_tools.c),
 * without a model (the token-for-token oracle is tests/py/test_mistral_tool_parse.py).
 *   - each output read whole and grown a byte at a time gives the same content, reasoning, names,
 *     ids and argument bytes (what makes streamed deltas equal the whole answer), in the v7 JSON
 *     form (usual layout streamed, another layout read whole), the v11 form with and without
 *     [CALL_ID], the v13 form, [THINK] reasoning closed and not;
 *   - held-back marker prefixes, text after the calls dropped, a [TOOL_CALLS] that is no call is
 *     content, [TOOL_CALLS] not looked for without tools;
 *   - kiln_srv_mistral_whole: ids (the model's, else 9 alphanumerics), content NULL when blank;
 *   - the forced grammar compiles, accepts a call of the named function only, and its output is
 *     read as calls. */
#include <jansson.h>
#include "grammar/grammar.h"
#include "server/mistral_tools.h"
#include "test.h"
#include "util/alloc.h"

typedef struct {
    char content[512], reasoning[256], args[4][256], names[4][64], ids[4][32];
    int n_calls, ended[4];
} parsed;

static void cat(char *dst, size_t cap, const char *s, size_t n) {
    size_t l = strlen(dst);
    if (l + n >= cap) n = cap - 1 - l;
    memcpy(dst + l, s, n);
    dst[l + n] = 0;
}

static void apply(parsed *p, const kiln_mtc_ev *ev) {
    if (ev->kind == KILN_MTC_CONTENT) cat(p->content, sizeof p->content, ev->s, ev->len);
    else if (ev->kind == KILN_MTC_REASONING) cat(p->reasoning, sizeof p->reasoning, ev->s, ev->len);
    else if (ev->index >= 4) return;
    else if (ev->kind == KILN_MTC_CALL) {
        p->n_calls = ev->index + 1;
        cat(p->names[ev->index], 64, ev->s, ev->len);
        if (ev->id) cat(p->ids[ev->index], 32, ev->id, ev->id_len);
    } else if (ev->kind == KILN_MTC_ARGS) cat(p->args[ev->index], 256, ev->s, ev->len);
    else if (ev->kind == KILN_MTC_CALL_END) p->ended[ev->index] = 1;
}

static void read_text(const char *text, int tools, parsed *whole, parsed *inc) {
    size_t n = strlen(text);
    kiln_mtc s;
    kiln_mtc_ev ev;
    memset(whole, 0, sizeof *whole);
    memset(inc, 0, sizeof *inc);
    kiln_mtc_init(&s, tools);
    while (kiln_mtc_next(&s, text, n, 1, &ev)) apply(whole, &ev);
    kiln_mtc_free(&s);
    kiln_mtc_init(&s, tools);
    for (size_t k = 0; k <= n; k++)
        while (kiln_mtc_next(&s, text, k, k == n, &ev)) apply(inc, &ev);
    kiln_mtc_free(&s);
}

static void check(const char *text, int tools, int want_calls, const char *want_content, const char *want_reasoning,
                  const char *name0, const char *id0, const char *args0) {
    parsed w, i;
    read_text(text, tools, &w, &i);
    KT_CHECK(w.n_calls == want_calls, "%s: %d calls (want %d)", text, w.n_calls, want_calls);
    KT_CHECK(!strcmp(w.content, want_content), "%s: content '%s' (want '%s')", text, w.content, want_content);
    KT_CHECK(!strcmp(w.reasoning, want_reasoning), "%s: reasoning '%s' (want '%s')", text, w.reasoning, want_reasoning);
    if (name0) KT_CHECK(!strcmp(w.names[0], name0), "%s: name '%s'", text, w.names[0]);
    if (id0) KT_CHECK(!strcmp(w.ids[0], id0), "%s: id '%s' (want '%s')", text, w.ids[0], id0);
    if (args0) KT_CHECK(!strcmp(w.args[0], args0), "%s: args '%s' (want '%s')", text, w.args[0], args0);
    for (int k = 0; k < want_calls && k < 4; k++) KT_CHECK(w.ended[k], "%s: call %d ended", text, k);
    KT_CHECK(!memcmp(&w, &i, sizeof w), "%s: grown a byte at a time differs (content '%s' vs '%s', reasoning '%s' vs '%s', args0 '%s' vs '%s')",
             text, i.content, w.content, i.reasoning, w.reasoning, i.args[0], w.args[0]);
}

static void grammar_tests(void) {
    kiln_srv_request r;
    memset(&r, 0, sizeof r);
    r.tools_json = "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":{\"type\":\"object\","
                   "\"properties\":{\"city\":{\"type\":\"string\",\"maxLength\":8}},\"required\":[\"city\"]}}},"
                   "{\"type\":\"function\",\"function\":{\"name\":\"noargs\"}}]";
    r.tool_forced = 2;
    r.tool_name = "get_weather";
    kiln_srv_err e;
    char *gbnf = NULL;
    KT_CHECK(kiln_srv_mistral_tool_grammar(&r, 11, &gbnf, &e) == 0, "tool grammar: %s", e.msg);
    kiln_gram g;
    kiln_error err;
    KT_CHECK(gbnf && kiln_gram_from_gbnf(&g, gbnf, strlen(gbnf), &err) == 0, "compiles: %s", err.msg);
    const char *good = "[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]";
    const char *bad[] = {"[{\"name\": \"noargs\", \"arguments\": {}}]",
                         "[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris, France\"}}]",
                         "[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}, {\"name\": \"get_weather\", "
                         "\"arguments\": {\"city\": \"Rome\"}}]", NULL};
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
    /* what the grammar makes the model write is read as the calls (reader mode 2: forced) */
    check(good, 2, 1, "", "", "get_weather", NULL, "{\"city\": \"Paris\"}");
    r.tool_forced = 1;
    r.parallel_tool_calls = 1;
    KT_CHECK(kiln_srv_mistral_tool_grammar(&r, 13, &gbnf, &e) == 0 && strstr(gbnf, "call ::= t0 | t1") &&
             strstr(gbnf, "{0,2}"), "required, parallel: every tool, up to 3 calls");
    kiln_free(gbnf);
}

static int n_ids;
static void idf(void *ctx, char *id, size_t cap) {
    (void)ctx;
    snprintf(id, cap, "chatcmpl-tool-%d", ++n_ids);
}

static void whole_tests(void) {
    char *content, *reasoning, *calls;
    const char *v11 = "[THINK]plan[/THINK][TOOL_CALLS]f[CALL_ID]abcDEF123[ARGS]{\"a\": 1}[TOOL_CALLS]g[ARGS]{}";
    KT_CHECK(kiln_srv_mistral_whole(v11, strlen(v11), 1, idf, NULL, &content, &reasoning, &calls) == 0, "whole");
    KT_CHECK(content == NULL && reasoning && !strcmp(reasoning, "plan"), "content NULL, reasoning 'plan'");
    json_t *a = json_loads(calls ? calls : "", 0, NULL);
    KT_CHECK(json_array_size(a) == 2, "two calls: %s", calls ? calls : "(none)");
    const char *id0 = json_string_value(json_object_get(json_array_get(a, 0), "id"));
    const char *id1 = json_string_value(json_object_get(json_array_get(a, 1), "id"));
    KT_CHECK(id0 && !strcmp(id0, "abcDEF123"), "the model's id kept: %s", id0 ? id0 : "");
    KT_CHECK(id1 && strlen(id1) == 9 && strspn(id1, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") == 9,
             "a new id: 9 alphanumerics: %s", id1 ? id1 : "");
    KT_CHECK(!strcmp(json_string_value(json_object_get(json_object_get(json_array_get(a, 1), "function"), "arguments")), "{}"),
             "arguments text");
    json_decref(a);
    kiln_free(content);
    kiln_free(reasoning);
    kiln_free(calls);
    const char *v3 = "[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {\"x\": [1]}, \"id\": \"call00001\"}]";
    KT_CHECK(kiln_srv_mistral_whole(v3, strlen(v3), 1, idf, NULL, &content, &reasoning, &calls) == 0 && calls &&
                 strstr(calls, "\"id\":\"call00001\"") && !reasoning,
             "v3: the id after the arguments is the call's: %s", calls ? calls : "");
    kiln_free(content);
    kiln_free(calls);
    KT_CHECK(kiln_srv_mistral_whole("plain", 5, 1, idf, NULL, &content, &reasoning, &calls) == 0 && !calls && !reasoning &&
                 content && !strcmp(content, "plain"), "plain text");
    kiln_free(content);
}

int main(void) {
    /* v7 JSON form, usual layout (arguments streamed) and ids after the arguments */
    check("[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {\"a\": \"x}\\\"{\", \"b\": [1, {\"c\": 2}]}, \"id\": \"abcDEF123\"}, "
          "{\"name\": \"g\", \"arguments\": {}}]",
          1, 2, "", "", "f", NULL, "{\"a\": \"x}\\\"{\", \"b\": [1, {\"c\": 2}]}");
    /* v7, another layout: read whole, its id at once */
    check("Sure.[TOOL_CALLS][{\"id\": \"abcDEF123\", \"arguments\": {\"q\": 1}, \"name\": \"f\"}]", 1, 1, "Sure.", "", "f",
          "abcDEF123", "{\"q\":1}");
    /* v11 with and without [CALL_ID], v13, text after the calls dropped */
    check("Let me.[TOOL_CALLS]get_weather[CALL_ID]abcDEF123[ARGS]{\"city\": \"東京\"}[TOOL_CALLS]now[ARGS]{} tail", 1, 2,
          "Let me.", "", "get_weather", "abcDEF123", "{\"city\": \"東京\"}");
    check("[TOOL_CALLS]f[ARGS]{\"a\": [1, 2]}", 1, 1, "", "", "f", "", "{\"a\": [1, 2]}");
    /* reasoning */
    check("[THINK]step 1, [x] 2[/THINK]Answer [1][TOOL_CALLS]f[ARGS]{}", 1, 1, "Answer [1]", "step 1, [x] 2", "f", "", "{}");
    check("[THINK]still thinking [/THI", 1, 0, "", "still thinking [/THI", NULL, NULL, NULL);
    check("before[THINK]r[/THINK]after", 0, 0, "beforeafter", "r", NULL, NULL, NULL);
    /* no calls: markers held back then released; a broken [TOOL_CALLS] is content; no tools */
    check("text [TOOL_CA", 1, 0, "text [TOOL_CA", "", NULL, NULL, NULL);
    check("a [TOOL_CALLS] b", 1, 0, "a [TOOL_CALLS] b", "", NULL, NULL, NULL);
    check("x[TOOL_CALLS]f[ARGS]{}", 0, 0, "x[TOOL_CALLS]f[ARGS]{}", "", NULL, NULL, NULL);
    /* truncated arguments (finish "length"): what came is the call's */
    check("[TOOL_CALLS]f[ARGS]{\"a\": \"unfini", 1, 1, "", "", "f", "", "{\"a\": \"unfini");
    grammar_tests();
    whole_tests();
    return kt_done();
}
