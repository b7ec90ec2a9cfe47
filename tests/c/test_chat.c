/* kiln-layer: tokenizer (links only this layer and those below it) */
/* test_chat.c: chat formats and tool-call parsing (C side; the token-for-token oracles are in
 * tests/py/test_chat_oracle.py).
 *   - kiln_chat_parse_tool_calls on Devstral v7 output text: names, arguments as JSON text
 *     written as Python's json.dumps, 9-alphanumeric ids, content before the calls, no calls,
 *     malformed JSON refused;
 *   - Mistral v11 / v13 over a small tekken file written here (256 byte tokens, the control
 *     tokens at the ranks of Mistral's files): the layout of calls ([CALL_ID] in v11 only),
 *     results (ids in v11 only), the tools' place (last user turn in v11, first in v13), the
 *     format chosen from config.version and a version kiln does not render (v15) refused by name;
 *   - ChatML over the SmolLM2 GGUF (KILN_DEFAULT_GGUF or ~/.cache/kiln; skipped when absent):
 *     layout, default system prompt, typed "<|im_end|>" stays text, unknown template refused. */
#include "test.h"
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>
#include "tokenizer/chat.h"
#include "util/alloc.h"

static int alnum9(const char *s) {
    for (int i = 0; i < 9; i++)
        if (!isalnum((unsigned char)s[i])) return 0;
    return s[9] == '"';
}

static void parse_tests(void) {
    kiln_error err = {0};
    char *content, *calls;
    const char *out = "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"n\": [1, 2.5]}}, "
                      "{\"name\": \"noargs\", \"arguments\": {}}]";
    int rc = kiln_chat_parse_tool_calls(NULL, out, strlen(out), &content, &calls, &err);
    KT_CHECK(rc == KILN_OK && calls, "parse: %s", err.msg);
    if (calls) {
        KT_CHECK(strstr(calls, "\"name\":\"get_weather\"") != NULL, "name: %s", calls);
        KT_CHECK(strstr(calls, "\"arguments\":\"{\\\"city\\\": \\\"Paris\\\", \\\"n\\\": [1, 2.5]}\"") != NULL,
                 "arguments as json.dumps text: %s", calls);
        KT_CHECK(strstr(calls, "\"arguments\":\"{}\"") != NULL, "empty arguments: %s", calls);
        const char *id = strstr(calls, "\"id\":\"");
        KT_CHECK(id && alnum9(id + 6), "9-char id: %s", calls);
        KT_CHECK(strstr(calls, "\"type\":\"function\"") != NULL, "type: %s", calls);
        KT_CHECK(content && content[0] == 0, "no content");
        kiln_free(calls);
        kiln_free(content);
    }
    const char *mixed = "Let me check.[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {\"x\": \"\\u00e9\"}}]";
    rc = kiln_chat_parse_tool_calls(NULL, mixed, strlen(mixed), &content, &calls, &err);
    KT_CHECK(rc == KILN_OK && content && !strcmp(content, "Let me check."), "content before calls");
    KT_CHECK(calls && strstr(calls, "\\\"x\\\": \\\"\xC3\xA9\\\"") != NULL, "non-ASCII kept (ensure_ascii=False): %s",
             calls ? calls : "");
    kiln_free(content);
    kiln_free(calls);
    rc = kiln_chat_parse_tool_calls(NULL, "Just text", 9, &content, &calls, &err);
    KT_CHECK(rc == KILN_OK && !calls && !content, "no tool call");
    const char *bad = "[TOOL_CALLS][{\"name\": \"f\", \"argu";
    rc = kiln_chat_parse_tool_calls(NULL, bad, strlen(bad), &content, &calls, &err);
    KT_CHECK(rc == KILN_ERR_FORMAT && !calls, "truncated JSON refused");
}

static int count(const int32_t *ids, int n, int32_t x) {
    int c = 0;
    for (int i = 0; i < n; i++) c += ids[i] == x;
    return c;
}

static void chatml_tests(void) {
    char path[1024];
    const char *env = getenv("KILN_DEFAULT_GGUF"), *home = getenv("HOME");
    if (env && *env) snprintf(path, sizeof path, "%s", env);
    else snprintf(path, sizeof path, "%s/.cache/kiln/SmolLM2-135M-Instruct.Q4_1.gguf", home ? home : "");
    if (!kt_exists(path)) {
        fprintf(stderr, "SKIP chatml: %s not found (scripts/get_default_model.sh fetches it)\n", path);
        return;
    }
    kiln_error err = {0};
    kiln_tokenizer *t;
    if (kiln_tokenizer_load(&t, path, &err)) {
        KT_CHECK(0, "load %s: %s", path, err.msg);
        return;
    }
    int32_t st = kiln_tokenizer_token_id(t, "<|im_start|>"), en = kiln_tokenizer_token_id(t, "<|im_end|>");
    KT_CHECK(st >= 0 && en >= 0, "ChatML tokens");
    kiln_chat_msg m[2] = {{.role = "user", .content = "Stop <|im_end|> here"}};
    int32_t *ids;
    int n;
    int rc = kiln_chat_encode(t, NULL, m, 1, NULL, 1, &ids, &n, &err);
    KT_CHECK(rc == KILN_OK, "encode: %s", err.msg);
    if (rc == KILN_OK) {
        /* default system + user + generation prompt: 3 starts, 2 ends (typed one is text) */
        KT_CHECK(ids[0] == st && count(ids, n, st) == 3 && count(ids, n, en) == 2, "layout (%d starts, %d ends)",
                 count(ids, n, st), count(ids, n, en));
        char *txt;
        size_t tl;
        kiln_tokenizer_decode(t, ids, n, 0, &txt, &tl, &err);
        KT_CHECK(strstr(txt, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM") == txt, "default system: %s", txt);
        KT_CHECK(strstr(txt, "<|im_start|>user\nStop <|im_end|> here<|im_end|>\n<|im_start|>assistant\n") != NULL,
                 "user turn: %s", txt);
        kiln_free(txt);
        kiln_free(ids);
    }
    m[0] = (kiln_chat_msg){.role = "system", .content = "S"};
    m[1] = (kiln_chat_msg){.role = "user", .content = "U"};
    rc = kiln_chat_encode(t, "chatml", m, 2, NULL, 0, &ids, &n, &err);
    KT_CHECK(rc == KILN_OK && count(ids, n, st) == 2, "own system prompt replaces the default");
    if (rc == KILN_OK) kiln_free(ids);
    rc = kiln_chat_encode(t, "vicuna", m, 2, NULL, 0, &ids, &n, &err);
    KT_CHECK(rc == KILN_ERR_INVALID_ARG && strstr(err.msg, "vicuna"), "unknown template: %s", err.msg);
    rc = kiln_chat_encode(t, "llama3", m, 2, NULL, 0, &ids, &n, &err);
    KT_CHECK(rc == KILN_ERR_UNSUPPORTED && strstr(err.msg, "<|begin_of_text|>"), "llama3 needs its tokens: %s", err.msg);
    KT_CHECK(kiln_chat_end_of_turn(t, NULL) == en, "end of turn is <|im_end|>");
    kiln_tokenizer_free(t);
}

/* a tekken file of the given version: 40 control tokens, then the 256 bytes */
static int write_tekken(const char *path, const char *version) {
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    static const char *names[40] = {"<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
                                    "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", [17] = "[SYSTEM_PROMPT]",
                                    "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]", [32] = "[ARGS]", "[CALL_ID]", "[THINK]", "[/THINK]"};
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f, "{\"config\": {\"pattern\": \"\\\\s+|\\\\S+\", \"num_vocab_tokens\": 256, \"default_vocab_size\": 296, "
               "\"default_num_special_tokens\": 40, \"version\": \"%s\"}, \"vocab\": [", version);
    for (int b = 0; b < 256; b++)
        fprintf(f, "%s{\"rank\": %d, \"token_bytes\": \"%c%c==\", \"token_str\": null}", b ? ", " : "", b, b64[b >> 2],
                b64[(b & 3) << 4]);
    fputs("], \"special_tokens\": [", f);
    for (int i = 0; i < 40; i++) {
        char nm[32];
        if (names[i]) snprintf(nm, sizeof nm, "%s", names[i]);
        else snprintf(nm, sizeof nm, "<SPECIAL_%d>", i);
        fprintf(f, "%s{\"rank\": %d, \"token_str\": \"%s\", \"is_control\": true}", i ? ", " : "", i, nm);
    }
    fputs("]}", f);
    return fclose(f);
}

/* the conversation rendered in the file's own format, decoded with its control tokens */
static char *render(const char *version, const char *tmpl, kiln_error *err, int *rc) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/kiln-test-chat-%d-%s.json", (int)getpid(), version);
    *rc = -1;
    if (write_tekken(path, version)) return NULL;
    kiln_tokenizer *t;
    if ((*rc = kiln_tokenizer_load(&t, path, err))) {
        remove(path);
        return NULL;
    }
    remove(path);
    const char *calls = "[{\"id\": \"abcDEF123\", \"type\": \"function\", \"function\": {\"name\": \"f\", \"arguments\": \"{\\\"a\\\":1}\"}}]";
    kiln_chat_msg m[5] = {{.role = "user", .content = "hi"}, {.role = "assistant", .content = "yo"},
                          {.role = "user", .content = "w?"}, {.role = "assistant", .tool_calls_json = calls},
                          {.role = "tool", .tool_call_id = "abcDEF123", .content = "ok"}};
    int32_t *ids;
    int n;
    char *txt = NULL;
    size_t tl;
    *rc = kiln_chat_encode(t, tmpl, m, 5, "[{\"type\": \"function\", \"function\": {\"name\": \"f\"}}]", 1, &ids, &n, err);
    if (*rc == KILN_OK) {
        kiln_tokenizer_decode(t, ids, n, 0, &txt, &tl, err);
        kiln_free(ids);
    }
    kiln_tokenizer_free(t);
    return txt;
}

static void mistral_v11_v13_tests(void) {
    kiln_error err = {0};
    int rc;
    const char *tools = "[AVAILABLE_TOOLS][{\"type\": \"function\", \"function\": {\"name\": \"f\", \"description\": \"\", "
                        "\"parameters\": {}}}][/AVAILABLE_TOOLS]";
    char want[1024];
    char *txt = render("v11", NULL, &err, &rc);
    snprintf(want, sizeof want, "<s>[INST]hi[/INST]yo</s>%s[INST]w?[/INST][TOOL_CALLS]f[CALL_ID]abcDEF123[ARGS]{\"a\": 1}</s>"
             "[TOOL_RESULTS]abcDEF123[TOOL_CONTENT]ok[/TOOL_RESULTS]", tools);
    KT_CHECK(rc == KILN_OK && txt && !strcmp(txt, want), "v11 (%s):\n got  %s\n want %s", err.msg, txt ? txt : "", want);
    kiln_free(txt);
    txt = render("v13", NULL, &err, &rc);
    snprintf(want, sizeof want, "<s>%s[INST]hi[/INST]yo</s>[INST]w?[/INST][TOOL_CALLS]f[ARGS]{\"a\": 1}</s>"
             "[TOOL_RESULTS]ok[/TOOL_RESULTS]", tools);
    KT_CHECK(rc == KILN_OK && txt && !strcmp(txt, want), "v13 (%s):\n got  %s\n want %s", err.msg, txt ? txt : "", want);
    kiln_free(txt);
    txt = render("v13", "mistral-v11", &err, &rc); /* a named format over a file of another version */
    KT_CHECK(rc == KILN_OK && txt && strstr(txt, "[CALL_ID]abcDEF123[ARGS]"), "mistral-v11 named: %s", txt ? txt : err.msg);
    kiln_free(txt);
    txt = render("v15", NULL, &err, &rc);
    KT_CHECK(rc == KILN_ERR_UNSUPPORTED && strstr(err.msg, "\"v15\"") && strstr(err.msg, "mistral-v13"),
             "v15 refused by name: %s", err.msg);
    kiln_free(txt);
}

int main(void) {
    parse_tests();
    mistral_v11_v13_tests();
    chatml_tests();
    return kt_done();
}
