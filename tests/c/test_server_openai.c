/* kiln-layer: server (links only this layer and those below it) */
/* test_server_openai.c: request parsing/validation, error shape, SSE framing and response JSON
 * of `kiln serve` (src/server/openai.c, linked from kiln_server), without a model or a socket.
 * Expected values are the OpenAI / vLLM API's documented shapes. test_parse_alloc_faults: an
 * allocation failure at every allocation of the parser, jansson's included (util/json.h): each is
 * a 500 "out of memory", never a 400 or a crash (leaks: LeakSanitizer, .ci/run's asan stage). */
#include "test.h"
#include <string.h>
#include "server/openai.h"
#include "util/alloc.h"

static const kiln_srv_limits LIM = {.model_name = "m", .vocab_size = 1000, .max_model_len = 256};

static int parse(kiln_srv_kind k, const char *body, kiln_srv_request *r, kiln_srv_err *e) {
    return kiln_srv_parse_request(r, k, body, strlen(body), &LIM, e);
}

/* status (and param when given) of a body that must fail */
static void expect_err(kiln_srv_kind k, const char *body, int status, const char *param) {
    kiln_srv_request r;
    kiln_srv_err e;
    memset(&e, 0, sizeof e);
    int rc = parse(k, body, &r, &e);
    KT_CHECK(rc == status, "%s -> %d (want %d): %s", body, rc, status, e.msg);
    if (rc == 0) kiln_srv_request_free(&r);
    else {
        KT_CHECK(e.status == status && e.msg[0], "%s: error record", body);
        if (param) KT_CHECK(!strcmp(e.param, param), "%s: param '%s' (want '%s')", body, e.param, param);
    }
}

static void test_valid_completion(void) {
    kiln_srv_request r;
    kiln_srv_err e;
    int rc = parse(KILN_SRV_COMPLETION,
                   "{\"model\":\"m\",\"prompt\":\"hello\",\"max_tokens\":7,\"temperature\":0.5,\"top_p\":0.9,\"top_k\":40,"
                   "\"min_p\":0.1,\"stop\":[\"a\",\"\",\"bc\"],\"seed\":42,\"presence_penalty\":0.5,\"frequency_penalty\":-0.5,"
                   "\"repetition_penalty\":1.1,\"logprobs\":3,\"logit_bias\":{\"5\":-100,\"7\":2.5},\"min_tokens\":2,"
                   "\"ignore_eos\":true,\"stream\":true,\"stream_options\":{\"include_usage\":true},\"stop_token_ids\":[9],"
                   "\"unknown_field\":{\"x\":[1,2]}}",
                   &r, &e);
    KT_CHECK(rc == 0, "valid completion refused: %s", e.msg);
    if (rc) return;
    KT_CHECK(r.prompt_text && !strcmp(r.prompt_text, "hello") && r.prompt_len == 5, "prompt text");
    KT_CHECK(r.max_tokens == 7, "max_tokens %d", r.max_tokens);
    KT_CHECK(fabsf(r.params.sampling.temperature - 0.5f) < 1e-6f && fabsf(r.params.sampling.top_p - 0.9f) < 1e-6f, "temperature/top_p");
    KT_CHECK(r.params.sampling.top_k == 40 && fabsf(r.params.sampling.min_p - 0.1f) < 1e-6f, "top_k/min_p");
    KT_CHECK(r.params.n_stop_strings == 2 && !strcmp(r.params.stop_strings[1], "bc"), "stops (empty dropped): %d", r.params.n_stop_strings);
    KT_CHECK(r.params.sampling.has_seed && r.params.sampling.seed == 42, "seed");
    KT_CHECK(r.params.sampling.logprobs == 1 && r.params.sampling.n_logprobs == 3 && r.logprobs == 3, "logprobs");
    KT_CHECK(r.params.sampling.n_bias == 2, "logit_bias count");
    int saw5 = 0;
    for (int i = 0; i < r.params.sampling.n_bias; i++)
        if (r.params.sampling.bias_ids[i] == 5) saw5 = r.params.sampling.bias_values[i] == -100.0f;
    KT_CHECK(saw5, "logit_bias 5 -> -100");
    KT_CHECK(r.params.min_tokens == 2 && r.params.ignore_eos == 1, "min_tokens/ignore_eos");
    KT_CHECK(r.stream == 1 && r.include_usage == 1, "stream/include_usage");
    KT_CHECK(r.params.n_stop_ids == 1 && r.params.stop_ids[0] == 9, "stop_token_ids");
    kiln_srv_request_free(&r);

    /* defaults: vLLM's (temperature 1, top_p 1, no max_tokens given, no logprobs) */
    rc = parse(KILN_SRV_COMPLETION, "{\"prompt\":[1,2,3]}", &r, &e);
    KT_CHECK(rc == 0, "ids prompt: %s", e.msg);
    if (!rc) {
        KT_CHECK(r.n_prompt_ids == 3 && r.prompt_ids[2] == 3 && !r.prompt_text, "ids prompt parsed");
        KT_CHECK(r.max_tokens == -1 && r.logprobs == -1 && r.params.sampling.temperature == 1.0f && r.params.sampling.top_p == 1.0f,
                 "defaults");
        KT_CHECK(r.params.sampling.logprobs == 0 && r.stream == 0, "no logprobs, no stream");
        kiln_srv_request_free(&r);
    }
    rc = parse(KILN_SRV_COMPLETION, "{\"prompt\":[[4,5]],\"max_tokens\":16.0}", &r, &e);
    KT_CHECK(rc == 0 && r.n_prompt_ids == 2 && r.max_tokens == 16, "nested ids + integral real: %s", e.msg);
    if (!rc) kiln_srv_request_free(&r);
    rc = parse(KILN_SRV_COMPLETION, "{\"prompt\":[\"one\"],\"n\":1,\"response_format\":{\"type\":\"text\"}}", &r, &e);
    KT_CHECK(rc == 0 && r.prompt_text && !strcmp(r.prompt_text, "one"), "list with one prompt: %s", e.msg);
    if (!rc) kiln_srv_request_free(&r);
    /* constraints: each source -> kind + text */
    static const struct { const char *body; int kind; const char *text; } cs[] = {
        {"{\"prompt\":\"a\",\"response_format\":{\"type\":\"json_object\"}}", KILN_CONSTRAINT_JSON_OBJECT, ""},
        {"{\"prompt\":\"a\",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"n\",\"strict\":true,\"schema\":{\"type\":\"integer\"}}}}",
         KILN_CONSTRAINT_JSON_SCHEMA, "{\"type\":\"integer\"}"},
        {"{\"prompt\":\"a\",\"guided_json\":\"{}\"}", KILN_CONSTRAINT_JSON_SCHEMA, "{}"},
        {"{\"prompt\":\"a\",\"guided_regex\":\"[a-z]+\"}", KILN_CONSTRAINT_REGEX, "[a-z]+"},
        {"{\"prompt\":\"a\",\"guided_choice\":[\"x\",\"y\"]}", KILN_CONSTRAINT_CHOICE, "[\"x\",\"y\"]"},
        {"{\"prompt\":\"a\",\"guided_grammar\":\"root ::= \\\"a\\\"\"}", KILN_CONSTRAINT_GRAMMAR, "root ::= \"a\""},
        {"{\"prompt\":\"a\",\"structured_outputs\":{\"choice\":[\"x\"]}}", KILN_CONSTRAINT_CHOICE, "[\"x\"]"},
        {"{\"prompt\":\"a\",\"structured_outputs\":{\"json\":{\"type\":\"string\"}}}", KILN_CONSTRAINT_JSON_SCHEMA, "{\"type\":\"string\"}"},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
        rc = parse(KILN_SRV_COMPLETION, cs[i].body, &r, &e);
        KT_CHECK(rc == 0 && r.constraint_kind == cs[i].kind && !strcmp(r.constraint_text, cs[i].text),
                 "constraint %s: rc %d kind %d text %s (%s)", cs[i].body, rc, rc ? -1 : r.constraint_kind, rc ? "" : r.constraint_text, e.msg);
        if (!rc) kiln_srv_request_free(&r);
    }
}

static void test_valid_chat(void) {
    kiln_srv_request r;
    kiln_srv_err e;
    int rc = parse(KILN_SRV_CHAT,
                   "{\"messages\":[{\"role\":\"system\",\"content\":\"s\"},"
                   "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]},"
                   "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\","
                   "\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},"
                   "{\"role\":\"tool\",\"content\":\"42\",\"tool_call_id\":\"c1\"}],"
                   "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],\"tool_choice\":\"auto\","
                   "\"max_completion_tokens\":9,\"logprobs\":true,\"top_logprobs\":2}",
                   &r, &e);
    KT_CHECK(rc == 0, "valid chat refused: %s", e.msg);
    if (rc) return;
    KT_CHECK(r.n_msgs == 4, "n_msgs %d", r.n_msgs);
    KT_CHECK(!strcmp(r.msgs[1].content, "a\nb"), "text parts joined: '%s'", r.msgs[1].content);
    KT_CHECK(r.msgs[2].content == NULL && r.msgs[2].tool_calls_json && strstr(r.msgs[2].tool_calls_json, "\"c1\""), "assistant tool calls");
    KT_CHECK(!strcmp(r.msgs[3].tool_call_id, "c1"), "tool_call_id");
    KT_CHECK(r.tools_json && r.tools_mode == KILN_SRV_TOOLS_AUTO, "tools");
    KT_CHECK(r.max_tokens == 9 && r.logprobs == 1 && r.top_logprobs == 2 && r.params.sampling.n_logprobs == 2, "chat limits/logprobs");
    KT_CHECK(r.add_generation_prompt == 1, "add_generation_prompt default");
    kiln_srv_request_free(&r);
    rc = parse(KILN_SRV_CHAT, "{\"messages\":[{\"role\":\"developer\",\"content\":\"x\"},{\"role\":\"user\",\"content\":\"y\"}],"
                              "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],\"tool_choice\":\"none\"}", &r, &e);
    KT_CHECK(rc == 0 && !strcmp(r.msgs[0].role, "system") && r.tools_json == NULL, "developer->system, tool_choice none: %s", e.msg);
    if (!rc) kiln_srv_request_free(&r);
}

static void test_invalid(void) {
    kiln_srv_kind C = KILN_SRV_COMPLETION, H = KILN_SRV_CHAT;
    expect_err(C, "{", 400, NULL);
    expect_err(C, "", 400, NULL);
    expect_err(C, "[1]", 400, NULL);
    expect_err(C, "{\"prompt\":\"a\"} x", 400, NULL);
    expect_err(C, "{\"prompt\":\"\xff\"}", 400, NULL);
    expect_err(C, "{\"prompt\":\"\xc0\xaf\"}", 400, NULL); /* overlong */
    expect_err(C, "{\"prompt\":\"\xed\xa0\x80\"}", 400, NULL); /* surrogate */
    expect_err(C, "{\"prompt\":\"a\\u0000b\"}", 400, NULL);
    expect_err(C, "{\"prompt\":1,\"prompt\":2}", 400, NULL);
    expect_err(C, "{}", 400, "prompt");
    expect_err(C, "{\"prompt\":null}", 400, "prompt");
    expect_err(C, "{\"prompt\":{}}", 400, "prompt");
    expect_err(C, "{\"prompt\":[]}", 400, "prompt");
    expect_err(C, "{\"prompt\":[\"a\",\"b\"]}", 400, "prompt");
    expect_err(C, "{\"prompt\":[1,1000]}", 400, "prompt");
    expect_err(C, "{\"prompt\":[1,\"a\"]}", 400, "prompt");
    expect_err(C, "{\"prompt\":[[]]}", 400, "prompt");
    expect_err(C, "{\"prompt\":\"a\",\"max_tokens\":0}", 400, "max_tokens");
    expect_err(C, "{\"prompt\":\"a\",\"max_tokens\":-3}", 400, "max_tokens");
    expect_err(C, "{\"prompt\":\"a\",\"max_tokens\":1.5}", 400, "max_tokens");
    expect_err(C, "{\"prompt\":\"a\",\"max_tokens\":true}", 400, "max_tokens");
    expect_err(C, "{\"prompt\":\"a\",\"max_tokens\":1e300}", 400, "max_tokens");
    expect_err(C, "{\"prompt\":\"a\",\"max_tokens\":123456789012345678901234567890}", 400, NULL);
    expect_err(C, "{\"prompt\":\"a\",\"temperature\":1e999}", 400, NULL);
    expect_err(C, "{\"prompt\":\"a\",\"temperature\":2.5}", 400, "temperature");
    expect_err(C, "{\"prompt\":\"a\",\"temperature\":false}", 400, "temperature");
    expect_err(C, "{\"prompt\":\"a\",\"top_p\":0}", 400, "top_p");
    expect_err(C, "{\"prompt\":\"a\",\"top_k\":-2}", 400, "top_k");
    expect_err(C, "{\"prompt\":\"a\",\"min_p\":-0.1}", 400, "min_p");
    expect_err(C, "{\"prompt\":\"a\",\"repetition_penalty\":0}", 400, "repetition_penalty");
    expect_err(C, "{\"prompt\":\"a\",\"presence_penalty\":2.01}", 400, "presence_penalty");
    expect_err(C, "{\"prompt\":\"a\",\"n\":2}", 400, "n");
    expect_err(C, "{\"prompt\":\"a\",\"n\":\"1\"}", 400, "n");
    expect_err(C, "{\"prompt\":\"a\",\"best_of\":2}", 400, "best_of");
    expect_err(C, "{\"prompt\":\"a\",\"echo\":true}", 400, "echo");
    expect_err(C, "{\"prompt\":\"a\",\"suffix\":\"z\"}", 400, "suffix");
    expect_err(C, "{\"prompt\":\"a\",\"logprobs\":21}", 400, "logprobs");
    expect_err(C, "{\"prompt\":\"a\",\"logprobs\":true}", 400, "logprobs");
    expect_err(C, "{\"prompt\":\"a\",\"stop\":[1]}", 400, "stop");
    expect_err(C, "{\"prompt\":\"a\",\"stop\":{}}", 400, "stop");
    expect_err(C, "{\"prompt\":\"a\",\"seed\":1.5}", 400, "seed");
    expect_err(C, "{\"prompt\":\"a\",\"logit_bias\":[1]}", 400, "logit_bias");
    expect_err(C, "{\"prompt\":\"a\",\"logit_bias\":{\"1x\":1}}", 400, "logit_bias");
    expect_err(C, "{\"prompt\":\"a\",\"logit_bias\":{\"1000\":1}}", 400, "logit_bias");
    expect_err(C, "{\"prompt\":\"a\",\"logit_bias\":{\"1\":\"x\"}}", 400, "logit_bias");
    expect_err(C, "{\"prompt\":\"a\",\"stream\":1}", 400, "stream");
    expect_err(C, "{\"prompt\":\"a\",\"stream_options\":{\"include_usage\":true}}", 400, "stream_options");
    expect_err(C, "{\"prompt\":\"a\",\"stream\":true,\"stream_options\":{\"include_usage\":1}}", 400, "include_usage");
    expect_err(C, "{\"prompt\":\"a\",\"model\":\"other\"}", 404, "model");
    expect_err(C, "{\"prompt\":\"a\",\"model\":[]}", 400, "model");
    expect_err(C, "{\"prompt\":\"a\",\"response_format\":{\"type\":\"xml\"}}", 400, "response_format");
    expect_err(C, "{\"prompt\":\"a\",\"response_format\":{\"type\":\"json_schema\"}}", 400, "response_format");
    expect_err(C, "{\"prompt\":\"a\",\"guided_json\":{},\"guided_regex\":\"a\"}", 400, "guided_regex");
    expect_err(C, "{\"prompt\":\"a\",\"guided_choice\":\"a\"}", 400, "guided_choice");
    expect_err(C, "{\"prompt\":\"a\",\"guided_regex\":[1]}", 400, "guided_regex");
    expect_err(C, "{\"prompt\":\"a\",\"structured_outputs\":{\"structural_tag\":\"x\"}}", 400, "structured_outputs");
    expect_err(C, "{\"prompt\":\"a\",\"structured_outputs\":{\"regex\":\"a\",\"choice\":[\"b\"]}}", 400, "structured_outputs");
    expect_err(C, "{\"prompt\":\"a\",\"min_tokens\":5,\"max_tokens\":4}", 400, "min_tokens");
    expect_err(C, "{\"prompt\":\"a\",\"stop_token_ids\":[-1]}", 400, "stop_token_ids");
    expect_err(H, "{}", 400, "messages");
    expect_err(H, "{\"messages\":[]}", 400, "messages");
    expect_err(H, "{\"messages\":{}}", 400, "messages");
    expect_err(H, "{\"messages\":[1]}", 400, "messages");
    expect_err(H, "{\"messages\":[{\"content\":\"x\"}]}", 400, "messages");
    expect_err(H, "{\"messages\":[{\"role\":\"god\",\"content\":\"x\"}]}", 400, "messages");
    expect_err(H, "{\"messages\":[{\"role\":\"user\"}]}", 400, "messages");
    expect_err(H, "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", 400, "messages");
    expect_err(H, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}", 400, "messages");
    { /* issue 19: an image part (a Mistral 3 checkpoint runs text only) says so */
        kiln_srv_request r;
        kiln_srv_err e;
        memset(&e, 0, sizeof e);
        int rc = parse(H, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"what is this\"},"
                          "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,AAAA\"}}]}]}", &r, &e);
        KT_CHECK(rc == 400 && strstr(e.msg, "image inputs") && strstr(e.msg, "image_url") && strstr(e.msg, "text model"),
                 "image_url part: %d %s", rc, e.msg);
        if (rc == 0) kiln_srv_request_free(&r);
    }
    expect_err(H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"tool_calls\":[]}]}", 400, "messages");
    expect_err(H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":2}", 400, "top_logprobs");
    expect_err(H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":{}}", 400, "tools");
    expect_err(H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":\"function\"}]}", 400, "tools");
    expect_err(H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tool_choice\":\"auto\"}", 400, "tool_choice");
    expect_err(H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tool_choice\":\"required\"}", 400, "tool_choice");
    expect_err(H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"g\"}}}", 400, "tool_choice");
    expect_err(H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],\"tool_choice\":\"required\",\"guided_regex\":\"a\"}", 400, "tool_choice");
    expect_err(H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_completion_tokens\":0}", 400, "max_completion_tokens");
    /* body size */
    kiln_srv_request r;
    kiln_srv_err e;
    KT_CHECK(kiln_srv_parse_request(&r, C, "{}", (size_t)KILN_SRV_MAX_BODY + 1, &LIM, &e) == 413, "413 on size");
}

static void test_error_shape(void) {
    kiln_srv_err e;
    kiln_srv_err_set(&e, 400, "max_tokens", "bad \"value\" %d", 3);
    kiln_buf b = {0};
    KT_CHECK(kiln_srv_err_json(&b, &e) == 0, "err json");
    json_t *j = json_loads(b.p, 0, NULL);
    json_t *o = json_object_get(j, "error");
    KT_CHECK(json_is_object(o), "error object: %s", b.p);
    KT_CHECK(!strcmp(json_string_value(json_object_get(o, "message")), "bad \"value\" 3"), "message");
    KT_CHECK(!strcmp(json_string_value(json_object_get(o, "type")), "invalid_request_error"), "type");
    KT_CHECK(!strcmp(json_string_value(json_object_get(o, "param")), "max_tokens"), "param");
    KT_CHECK(json_integer_value(json_object_get(o, "code")) == 400, "code");
    json_decref(j);
    kiln_buf_free(&b);
    kiln_srv_err_set(&e, 503, NULL, "busy");
    kiln_srv_err_json(&b, &e);
    j = json_loads(b.p, 0, NULL);
    KT_CHECK(json_is_null(json_object_get(json_object_get(j, "error"), "param")), "param null");
    json_decref(j);
    kiln_buf_free(&b);
    KT_CHECK(!strcmp(kiln_srv_err_type(401), "authentication_error"), "401 type");
}

static void test_utf8(void) {
    KT_CHECK(kiln_srv_utf8_valid("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", 15), "valid utf8");
    KT_CHECK(!kiln_srv_utf8_valid("\xe2\x82", 2), "truncated");
    KT_CHECK(!kiln_srv_utf8_valid("\xf4\x90\x80\x80", 4), "above U+10FFFF");
    json_t *s = kiln_srv_jstr("a\xff" "b\xe2\x82", 5);
    KT_CHECK(s && !strcmp(json_string_value(s), "a\xef\xbf\xbd" "b\xef\xbf\xbd\xef\xbf\xbd"), "replacement: %s", json_string_value(s));
    json_decref(s);
}

static const char *piece(void *ctx, int32_t id, size_t *len) {
    (void)ctx;
    static const char *const p[] = {"A", " b", "\xe2\x82", "c"};
    if (id < 0 || id > 3) return NULL;
    *len = strlen(p[id]);
    return p[id];
}

static void test_responses(void) {
    kiln_srv_request r;
    kiln_srv_err e;
    int rc = parse(KILN_SRV_COMPLETION, "{\"prompt\":\"x\",\"logprobs\":2,\"stream\":true,\"stream_options\":{\"include_usage\":true}}", &r, &e);
    KT_CHECK(rc == 0, "parse: %s", e.msg);
    if (rc) return;
    int32_t ids[3] = {0, 1, 2};
    float lps[3] = {-0.5f, -1.0f, -INFINITY};
    kiln_token_logprob top[6] = {{0, -0.5f}, {3, -2.0f}, {1, -1.0f}, {0, -3.0f}, {2, -0.1f}, {1, -5.0f}};
    kiln_srv_out o = {.text = "A b", .text_len = 3, .ids = ids, .n_ids = 3, .lps = lps, .top = top, .top_stride = 2, .n_top = 2,
                      .finish = KILN_FINISH_LENGTH};
    kiln_srv_meta m = {.id = "cmpl-1", .created = 7, .model = "m", .n_prompt = 4, .n_output = 3};
    json_t *resp = kiln_srv_response(&r, &m, &o, piece, NULL);
    json_t *ch = json_array_get(json_object_get(resp, "choices"), 0);
    KT_CHECK(!strcmp(json_string_value(json_object_get(resp, "object")), "text_completion"), "object");
    KT_CHECK(!strcmp(json_string_value(json_object_get(ch, "text")), "A b"), "text");
    KT_CHECK(!strcmp(json_string_value(json_object_get(ch, "finish_reason")), "length"), "finish_reason");
    json_t *lp = json_object_get(ch, "logprobs");
    KT_CHECK(json_array_size(json_object_get(lp, "tokens")) == 3, "tokens");
    KT_CHECK(!strcmp(json_string_value(json_array_get(json_object_get(lp, "tokens"), 2)), "\xef\xbf\xbd\xef\xbf\xbd"), "partial utf8 token sanitized");
    KT_CHECK(json_real_value(json_array_get(json_object_get(lp, "token_logprobs"), 2)) == -9999.0, "-inf clamped");
    KT_CHECK(json_integer_value(json_array_get(json_object_get(lp, "text_offset"), 2)) == 3, "text_offset");
    KT_CHECK(json_object_size(json_array_get(json_object_get(lp, "top_logprobs"), 0)) == 2, "top dict");
    json_t *u = json_object_get(resp, "usage");
    KT_CHECK(json_integer_value(json_object_get(u, "total_tokens")) == 7, "usage total");
    json_decref(resp);

    /* SSE framing */
    kiln_buf b = {0};
    o.finish = KILN_FINISH_NONE;
    kiln_srv_sse_chunk(&b, &r, &m, &o, 1, piece, NULL);
    kiln_srv_sse_usage(&b, &r, &m);
    kiln_srv_sse_done(&b);
    KT_CHECK(!strncmp(b.p, "data: {", 7), "data prefix");
    char *e1 = strstr(b.p, "\n\n");
    KT_CHECK(e1 && !strncmp(e1 + 2, "data: {", 7), "second event");
    json_t *c1 = json_loadb(b.p + 6, (size_t)(e1 - b.p - 6), 0, NULL);
    KT_CHECK(c1 && json_is_null(json_object_get(c1, "usage")) && json_object_get(c1, "usage"), "usage null in chunks");
    KT_CHECK(json_is_null(json_object_get(json_array_get(json_object_get(c1, "choices"), 0), "finish_reason")), "finish null");
    json_decref(c1);
    char *e2 = strstr(e1 + 2, "\n\n");
    json_t *c2 = json_loadb(e1 + 8, (size_t)(e2 - e1 - 8), 0, NULL);
    KT_CHECK(c2 && json_array_size(json_object_get(c2, "choices")) == 0 &&
                 json_integer_value(json_object_get(json_object_get(c2, "usage"), "completion_tokens")) == 3, "usage chunk");
    json_decref(c2);
    KT_CHECK(!strcmp(e2, "\n\ndata: [DONE]\n\n"), "done framing: %s", e2);
    kiln_buf_free(&b);
    kiln_srv_request_free(&r);

    /* chat: role in the first delta, tool calls */
    rc = parse(KILN_SRV_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &r, &e);
    KT_CHECK(rc == 0, "chat parse");
    if (rc) return;
    kiln_srv_out co = {.text = "hi", .text_len = 2};
    kiln_srv_sse_chunk(&b, &r, &m, &co, 1, piece, NULL);
    json_t *cc = json_loadb(b.p + 6, b.len - 8, 0, NULL);
    json_t *d = json_object_get(json_array_get(json_object_get(cc, "choices"), 0), "delta");
    KT_CHECK(!strcmp(json_string_value(json_object_get(d, "role")), "assistant") && !strcmp(json_string_value(json_object_get(d, "content")), "hi"),
             "chat first delta: %s", b.p);
    KT_CHECK(!strcmp(json_string_value(json_object_get(cc, "object")), "chat.completion.chunk"), "chunk object");
    KT_CHECK(!json_object_get(cc, "usage"), "no usage key without include_usage");
    json_decref(cc);
    kiln_buf_free(&b);
    kiln_srv_out to = {.text = "", .finish = KILN_FINISH_STOP,
                       .tool_calls_json = "[{\"id\":\"t1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]"};
    json_t *tr = kiln_srv_response(&r, &m, &to, piece, NULL);
    json_t *tch = json_array_get(json_object_get(tr, "choices"), 0);
    KT_CHECK(!strcmp(json_string_value(json_object_get(tch, "finish_reason")), "tool_calls"), "finish tool_calls");
    json_t *msg = json_object_get(tch, "message");
    KT_CHECK(json_is_null(json_object_get(msg, "content")) && json_array_size(json_object_get(msg, "tool_calls")) == 1, "tool_calls message");
    KT_CHECK(json_is_null(json_object_get(tch, "logprobs")), "no logprobs");
    json_decref(tr);
    kiln_srv_request_free(&r);
}

/* the nesting pre-check: brackets inside strings (escaped quotes too) do not count */
static void test_depth(void) {
    char deep[200];
    memset(deep, '[', 65);
    memset(deep + 65, ']', 65);
    deep[130] = 0;
    KT_CHECK(!kiln_srv_json_depth_ok(deep, strlen(deep), 64), "65 arrays pass a depth of 64");
    KT_CHECK(kiln_srv_json_depth_ok(deep + 1, strlen(deep) - 2, 64), "64 arrays refused");
    const char *s = "{\"a\": \"[[[[[[\\\"[[[[\"}";
    KT_CHECK(kiln_srv_json_depth_ok(s, strlen(s), 1), "brackets in a string counted: %s", s);
    const char *o = "{\"a\":{\"b\":{}}}";
    KT_CHECK(!kiln_srv_json_depth_ok(o, strlen(o), 2) && kiln_srv_json_depth_ok(o, strlen(o), 3), "objects");
    char body[400] = "{\"prompt\": \"hi\", \"x\": ";
    strcat(body, deep);
    strcat(body, "}");
    expect_err(KILN_SRV_COMPLETION, body, 400, NULL);
}

/* allocation failures while building a response and an SSE chunk: never a crash, never a leak
 * (LeakSanitizer), never a partial body passed on as whole. kiln_srv_response returns NULL or a
 * complete object; kiln_srv_sse_chunk fails (non-zero) or appends a complete event. */
static void test_response_alloc_faults(void) {
    kiln_srv_request r;
    kiln_srv_err e;
    int rc = parse(KILN_SRV_COMPLETION, "{\"prompt\":\"x\",\"logprobs\":2,\"stream\":true,\"stream_options\":{\"include_usage\":true}}", &r, &e);
    KT_CHECK(rc == 0, "parse: %s", e.msg);
    if (rc) return;
    int32_t ids[3] = {0, 1, 2};
    float lps[3] = {-0.5f, -1.0f, -2.0f};
    kiln_token_logprob top[6] = {{0, -0.5f}, {3, -2.0f}, {1, -1.0f}, {0, -3.0f}, {2, -0.1f}, {1, -5.0f}};
    kiln_srv_out o = {.text = "A b", .text_len = 3, .ids = ids, .n_ids = 3, .lps = lps, .top = top, .top_stride = 2, .n_top = 2,
                      .finish = KILN_FINISH_LENGTH};
    kiln_srv_meta m = {.id = "cmpl-1", .created = 7, .model = "m", .n_prompt = 4, .n_output = 3};
    int fails = 0, partial = 0, done = 0;
    for (int64_t k = 0; k < 10000 && !done; k++) {
        kiln_alloc_fail_after(k);
        json_t *resp = kiln_srv_response(&r, &m, &o, piece, NULL);
        kiln_buf b = {0};
        int crc = kiln_srv_sse_chunk(&b, &r, &m, &o, 1, piece, NULL);
        kiln_alloc_fail_after(-1);
        json_t *ch = resp ? json_array_get(json_object_get(resp, "choices"), 0) : NULL;
        int whole = resp && ch && json_object_get(ch, "text") && json_object_get(ch, "logprobs") && json_object_get(resp, "usage");
        if (resp && !whole) { partial++; fprintf(stderr, "k=%lld partial resp\n", (long long)k); }
        json_t *ev = crc == 0 && b.len > 8 ? json_loadb(b.p + 6, b.len - 8, 0, NULL) : NULL;
        if (crc == 0 && !ev) { partial++; fprintf(stderr, "k=%lld partial chunk: %s\n", (long long)k, b.p); }
        json_decref(ev);
        if (whole && crc == 0) done = 1;
        else fails++;
        json_decref(resp);
        kiln_buf_free(&b);
    }
    printf("response alloc faults: %d failing points, %d partial bodies\n", fails, partial);
    KT_CHECK(done && fails > 0, "response: built after %d injected failures", fails);
    KT_CHECK(partial == 0, "response: %d partial bodies under allocation failure", partial);
    kiln_srv_request_free(&r);
}

/* kiln_alloc_fail_after(k), k = 0, 1, ... until the parse succeeds: every failure must be the
 * out-of-memory 500 (a failed allocation is never the client's fault), never a crash */
static void test_parse_alloc_faults(void) {
    static const struct { kiln_srv_kind kind; const char *body; } B[] = {
        {KILN_SRV_CHAT,
         "{\"messages\":[{\"role\":\"system\",\"content\":\"s\"},"
         "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]},"
         "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\","
         "\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},"
         "{\"role\":\"tool\",\"content\":\"42\",\"tool_call_id\":\"c1\"}],"
         "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\"}}}],"
         "\"tool_choice\":\"auto\",\"max_completion_tokens\":9,\"logprobs\":true,\"top_logprobs\":2,"
         "\"stop\":[\"x\",\"yz\"],\"logit_bias\":{\"5\":1.5,\"7\":-100},\"seed\":3}"},
        {KILN_SRV_COMPLETION,
         "{\"prompt\":\"hello there\",\"max_tokens\":4,\"stop\":\"q\",\"stream\":true,"
         "\"stream_options\":{\"include_usage\":true},\"stop_token_ids\":[9],"
         "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"n\",\"schema\":{\"type\":\"object\"}}}}"},
        {KILN_SRV_COMPLETION, "{\"prompt\":[1,2,3],\"max_tokens\":2,\"logit_bias\":{\"1\":2}}"},
    };
    for (size_t i = 0; i < sizeof B / sizeof B[0]; i++) {
        int done = 0, failures = 0;
        for (int64_t k = 0; k < 10000 && !done; k++) {
            kiln_srv_request r;
            kiln_srv_err e;
            memset(&e, 0, sizeof e);
            kiln_alloc_fail_after(k);
            int rc = parse(B[i].kind, B[i].body, &r, &e);
            kiln_alloc_fail_after(-1);
            if (rc == 0) {
                kiln_srv_request_free(&r);
                done = 1;
                break;
            }
            failures++;
            KT_CHECK(rc == 500 && e.status == 500 && strstr(e.msg, "out of memory"),
                     "body %zu, allocation %lld failed: %d '%s' (want 500, out of memory)", i, (long long)k, rc, e.msg);
        }
        KT_CHECK(done && failures > 0, "body %zu: parsed after %d injected failures", i, failures);
        printf("parse alloc faults, body %zu: %d failing points, each a 500\n", i, failures);
    }
}

int main(void) {
    test_depth();
    test_valid_completion();
    test_valid_chat();
    test_invalid();
    test_error_shape();
    test_utf8();
    test_responses();
    test_parse_alloc_faults();
    test_response_alloc_faults();
    return kt_done();
}
