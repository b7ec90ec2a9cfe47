/* kiln-layer: contract (links only this layer and those below it) */
/* test_grammar.c: the grammar engine (src/grammar).
 *   - GBNF, regex, choice and JSON Schema grammars accept and refuse byte strings as expected;
 *   - compile errors name the part (undefined rule, left recursion, unsupported keyword);
 *   - token masks over a small vocabulary equal a brute-force check of every token, cached and
 *     not. */
#include <stdint.h>
#include "grammar/grammar.h"
#include "test.h"
#include "util/alloc.h"

static int matches(const kiln_gram *g, const char *s) {
    kiln_gmatch *m;
    kiln_error err;
    if (kiln_gmatch_create(&m, g, NULL, NULL, 0, &err)) return -1;
    int ok = kiln_gmatch_accept(m, s, strlen(s), &err) == KILN_OK && kiln_gmatch_accepting(m);
    kiln_gmatch_free(m);
    return ok;
}

static void expect(const char *what, int kind, const char *src, const char *const *yes, const char *const *no) {
    kiln_gram g;
    kiln_error err;
    int rc = kind == 0 ? kiln_gram_from_gbnf(&g, src, strlen(src), &err)
           : kind == 1 ? kiln_gram_from_regex(&g, src, strlen(src), &err)
           : kind == 2 ? kiln_gram_from_json_schema(&g, src, &err)
                       : kiln_gram_from_choice(&g, src, strlen(src), &err);
    KT_CHECK(rc == 0, "%s: compile: %s", what, err.msg);
    if (rc) return;
    for (int i = 0; yes[i]; i++) KT_CHECK(matches(&g, yes[i]) == 1, "%s: should match %.60s", what, yes[i]);
    for (int i = 0; no[i]; i++) KT_CHECK(matches(&g, no[i]) == 0, "%s: should not match %.60s", what, no[i]);
    kiln_gram_free(&g);
}

static void expect_error(const char *what, int kind, const char *src, const char *needle) {
    kiln_gram g;
    kiln_error err;
    memset(&err, 0, sizeof err);
    int rc = kind == 0 ? kiln_gram_from_gbnf(&g, src, strlen(src), &err)
           : kind == 1 ? kiln_gram_from_regex(&g, src, strlen(src), &err)
                       : kiln_gram_from_json_schema(&g, src, &err);
    KT_CHECK(rc != 0 && strstr(err.msg, needle), "%s: error naming '%s' (got rc %d: %s)", what, needle, rc, err.msg);
    if (!rc) kiln_gram_free(&g);
}

static void test_masks(void) {
    /* a vocabulary of pieces; token 0 is "special" */
    static const char *const V[] = {"<s>", "{", "}", "\"", "a", "ab", "\"a", "b\"", ",", ":", " ", "1", "12", "-",
                                    "\xc3\xa9", "\xc3", "\xa9", "true", "tr", "ue", "{\"", "\":", "null", "x"};
    int n = (int)(sizeof V / sizeof V[0]);
    size_t lens[64];
    uint8_t skip[64] = {1};
    for (int i = 0; i < n; i++) lens[i] = strlen(V[i]);
    kiln_token_trie t;
    kiln_error err;
    KT_CHECK(kiln_token_trie_build(&t, n, V, lens, skip, &err) == 0, "trie: %s", err.msg);
    const char *schema = "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"maxLength\":3},"
                         "\"ab\":{\"type\":\"integer\",\"minimum\":-5,\"maximum\":12},\"t\":{\"enum\":[true,null]}},"
                         "\"required\":[\"a\"]}";
    kiln_gram g;
    KT_CHECK(kiln_gram_from_json_schema(&g, schema, &err) == 0, "schema: %s", err.msg);
    kiln_gmatch *m, *mn;
    kiln_gscratch *ws;
    KT_CHECK(kiln_gscratch_create(&ws, t.max_depth, &err) == 0, "scratch: %s", err.msg);
    KT_CHECK(kiln_gmatch_create(&m, &g, &t, NULL, 8, &err) == 0, "matcher: %s", err.msg);
    KT_CHECK(kiln_gmatch_create(&mn, &g, &t, NULL, 0, &err) == 0, "matcher: %s", err.msg);
    /* walk a valid document token by token, checking each mask against brute force */
    const int path[] = {20, 4, 21, 3, 14, 3, 8, 3, 5, 21, 13, 11};
    uint32_t mask[2];
    int bad = 0;
    for (int step = 0; step <= (int)(sizeof path / sizeof path[0]); step++) {
        uint32_t mask2[2];
        KT_CHECK(kiln_gmatch_mask(m, ws, mask, &err) == 0, "mask: %s", err.msg);
        KT_CHECK(kiln_gmatch_mask(mn, ws, mask2, &err) == 0, "mask: %s", err.msg);
        KT_CHECK(mask[0] == mask2[0], "cached and uncached masks differ at step %d", step);
        for (int tok = 0; tok < n; tok++) {
            int allowed = mask[tok >> 5] >> (tok & 31) & 1;
            kiln_gmatch *c;
            int want = 0;
            if (tok != 0) { /* brute force: a fresh matcher fed the prefix, then the token */
                kiln_gmatch_create(&c, &g, NULL, NULL, 0, &err);
                for (int k = 0; k < step; k++) kiln_gmatch_accept(c, V[path[k]], lens[path[k]], &err);
                want = kiln_gmatch_accept(c, V[tok], lens[tok], &err) == KILN_OK;
                kiln_gmatch_free(c);
            }
            if (allowed != want) bad++;
        }
        if (step < (int)(sizeof path / sizeof path[0])) {
            KT_CHECK(kiln_gmatch_accept(m, V[path[step]], lens[path[step]], &err) == 0, "accept step %d: %s", step, err.msg);
            kiln_gmatch_accept(mn, V[path[step]], lens[path[step]], &err);
        }
    }
    KT_CHECK(bad == 0, "masks differ from brute force in %d places", bad);
    KT_CHECK(kiln_gmatch_accept(m, "}", 1, &err) == 0 && kiln_gmatch_accepting(m) && kiln_gmatch_done(m), "document complete");
    uint64_t comp, cached;
    kiln_gmatch_stats(m, &comp, &cached);
    KT_CHECK(comp > 0, "masks computed");
    kiln_gmatch_free(m);
    kiln_gmatch_free(mn);
    kiln_gscratch_free(ws);
    kiln_gram_free(&g);
    kiln_token_trie_free(&t);
}

int main(void) {
    const char *arith = "root ::= expr\nexpr ::= term ((\"+\" | \"-\") term)*\nterm ::= [0-9]+ | \"(\" expr \")\"\n";
    expect("gbnf arith", 0, arith, (const char *const[]){"1", "1+2", "(1+2)-30", NULL},
           (const char *const[]){"", "+", "1+", "(1", "a", NULL});
    expect("gbnf classes", 0, "root ::= [^\"\\\\]{2,3} \"é\" . [a-c-]? # comment\n",
           (const char *const[]){"ab\xc3\xa9x", "\xe2\x82\xac\xe2\x82\xac\xc3\xa9\xf0\x9f\x98\x80-", "abc\xc3\xa9zb", NULL},
           (const char *const[]){"a\xc3\xa9x", "a\"\xc3\xa9x", "ab\xc3\xa9", NULL});
    expect("gbnf regex terminal", 0, "root ::= \"id=\" /[a-z]+[0-9]{2}/\n", (const char *const[]){"id=ab12", NULL},
           (const char *const[]){"id=12", "id=ab1", NULL});
    expect("regex", 1, "^(\\d{3}-)?\\d{4}|[A-Z][a-z]*(?:, [A-Z][a-z]*)*$",
           (const char *const[]){"555-1234", "1234", "Alice", "Alice, Bob", NULL},
           (const char *const[]){"55-1234", "alice", "Alice,Bob", "12345", NULL});
    expect("regex dot", 1, "a.c\\.", (const char *const[]){"abc.", "a\xc3\xa9" "c.", NULL}, (const char *const[]){"a\nc.", "abcd", NULL});
    expect("choice", 3, "[\"red\", \"green\", \"a\\\"b\"]", (const char *const[]){"red", "green", "a\"b", NULL},
           (const char *const[]){"re", "blue", "redgreen", NULL});
    const char *nested =
        "{\"type\":\"object\",\"properties\":{"
        "\"name\":{\"type\":\"string\",\"maxLength\":5},"
        "\"age\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":120},"
        "\"score\":{\"type\":\"number\",\"minimum\":-1,\"maximum\":1},"
        "\"tags\":{\"type\":\"array\",\"items\":{\"enum\":[\"x\",\"y\"]},\"maxItems\":2},"
        "\"pet\":{\"$ref\":\"#/$defs/pet\"}},"
        "\"required\":[\"name\",\"age\"],"
        "\"$defs\":{\"pet\":{\"anyOf\":[{\"type\":\"null\"},{\"type\":\"object\",\"properties\":{\"kind\":{\"const\":\"cat\"}},\"required\":[\"kind\"]}]}}}";
    expect("schema", 2, nested,
           (const char *const[]){"{\"name\":\"bo\",\"age\":7}", "{ \"name\": \"\\u00e9x\", \"age\": 120, \"score\": -0.5}",
                                 "{\"name\":\"\",\"age\":0,\"tags\":[\"x\", \"y\"],\"pet\":{\"kind\":\"cat\"}}",
                                 "{\"name\":\"a\",\"age\":1,\"score\":1,\"pet\":null}", NULL},
           (const char *const[]){"{\"name\":\"bo\"}", "{\"name\":\"toolong\",\"age\":7}", "{\"name\":\"b\",\"age\":121}",
                                 "{\"name\":\"b\",\"age\":-1}", "{\"name\":\"b\",\"age\":1,\"score\":1.5}",
                                 "{\"name\":\"b\",\"age\":1,\"tags\":[\"x\",\"y\",\"x\"]}", "{\"age\":1,\"name\":\"b\"}",
                                 "{\"name\":\"b\",\"age\":01}", NULL});
    expect("schema ints", 2, "{\"type\":\"integer\",\"minimum\":-15,\"exclusiveMaximum\":1000}",
           (const char *const[]){"-15", "-9", "0", "7", "10", "999", NULL}, (const char *const[]){"-16", "1000", "-0x", "00", NULL});
    expect("schema pattern", 2, "{\"type\":\"string\",\"pattern\":\"^[a-z]+/\\\\d$\"}", (const char *const[]){"\"ab/1\"", NULL},
           (const char *const[]){"\"ab1\"", NULL});
    expect("json_object", 2, "{}", (const char *const[]){"{\"a\":[1,{\"b\":null}], \"c\":\"d\"}", "[]", "1.5e3", NULL},
           (const char *const[]){"{a:1}", "{\"a\":}", NULL});
    expect_error("undefined", 0, "root ::= foo\n", "'foo'");
    expect_error("left recursion", 0, "root ::= root \"a\" | \"a\"\n", "left-recursive");
    expect_error("no root", 0, "x ::= \"a\"\n", "root");
    expect_error("keyword", 2, "{\"type\":\"string\",\"format\":\"email\"}", "'format'");
    expect_error("nested keyword", 2, "{\"properties\":{\"a\":{\"type\":\"array\",\"uniqueItems\":true}}}", "/properties/a");
    expect_error("regex backref", 1, "(a)\\1", "backreference");
    {
        static char big[16384];
        strcpy(big, "root ::=");
        for (int i = 0; i < 400; i++) strcat(big, " [a]{0,4000}");
        strcat(big, "\n");
        expect_error("too large", 0, big, "elements");
    }
    {
        /* ambiguous nested repetitions reach one stack many ways per byte; the matcher merges
         * them, so its state stays small (it outgrew the arena at byte 16 when it did not) */
        static char many[20001], bad[20003], as[5001];
        memcpy(many, "555-1", 5);
        memset(many + 5, '3', sizeof many - 6);
        memcpy(bad, many, sizeof many - 1);
        memcpy(bad + sizeof many - 1, "'\x01", 3);
        expect("nested stars", 1, "(\\d[,-z]*)*", (const char *const[]){many, "", "1,z9-", NULL},
               (const char *const[]){bad, "a1", NULL});
        memset(as, 'a', sizeof as - 1);
        as[2500] = 'b';
        expect("ambiguous gbnf", 0, "root ::= (x | x x | \"a\"+)*\nx ::= \"a\"+ \"b\"?\n",
               (const char *const[]){as, "aab", "", NULL}, (const char *const[]){"c", "abba", NULL});
    }
    test_masks();
    return kt_done();
}
