/* fuzz_sse.c: the response side of server/openai.c: SSE chunks (kiln_srv_sse_chunk, the usage
 * chunk, [DONE]) and whole responses (kiln_srv_response) with logprobs, for arbitrary output
 * text (invalid UTF-8 included), token ids, logprobs and token pieces.
 *
 * Input: byte 0 = flags (bit 0 chat, bit 1 first chunk, bits 2-3 finish reason, bit 4 use the
 * input's request, bit 5 tool calls parsed from the text); then a request body up to the first
 * NUL (a fixed one asking for logprobs when it is refused or bit 4 is clear), then the output
 * span: its bytes are the text, each byte pair an id, and each id's piece a slice of the text.
 * With bit 5, the text also goes through the Mistral reader (server/mistral_tools.c), whole and
 * grown 7 bytes at a time into SSE chunks, with tools (bits 6-7: none, tools, forced). */
#include "fuzz_common.h"
#include "server/mistral_tools.h"
#include "server/openai.h"
#include "tokenizer/chat.h"

typedef struct fz_sse_ctx {
    const char *s;
    size_t n;
} fz_sse_ctx;

static const char *fz_sse_piece(void *ctx, int32_t id, size_t *len) {
    const fz_sse_ctx *c = ctx;
    if (id < 0 || c->n == 0) {
        *len = 0;
        return NULL;
    }
    size_t at = (size_t)id % c->n;
    *len = (c->n - at) < 5 ? c->n - at : 5;
    return c->s + at;
}

static void fz_sse_id(void *ctx, char *id, size_t cap) { snprintf(id, cap, "call-%d", ++*(int *)ctx); }

int FUZZ_ENTRY(const uint8_t *data, size_t size);
int FUZZ_ENTRY(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    uint8_t f = data[0];
    const char *body = (const char *)data + 1;
    const uint8_t *nul = memchr(data + 1, 0, size - 1);
    size_t body_len = nul ? (size_t)(nul - data - 1) : size - 1;
    const char *text = nul ? (const char *)nul + 1 : "";
    size_t text_len = nul ? size - (size_t)(nul - data) - 1 : 0;
    kiln_srv_kind kind = (f & 1) ? KILN_SRV_CHAT : KILN_SRV_COMPLETION;
    kiln_srv_limits lim = {.model_name = NULL, .vocab_size = 1 << 16, .max_model_len = 1 << 20};
    kiln_srv_request r;
    kiln_srv_err e;
    memset(&r, 0, sizeof r);
    int st = (f & 0x10) ? kiln_srv_parse_request(&r, kind, body, body_len, &lim, &e) : -1;
    if (st != 0) {
        static const char *fixed[2] = {
            "{\"prompt\":\"x\",\"logprobs\":3,\"stream\":true,\"stream_options\":{\"include_usage\":true}}",
            "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true,\"top_logprobs\":3,"
            "\"stream\":true,\"stream_options\":{\"include_usage\":true}}"};
        memset(&r, 0, sizeof r);
        if (kiln_srv_parse_request(&r, kind, fixed[kind], strlen(fixed[kind]), &lim, &e)) {
            fprintf(stderr, "kiln fuzz: fixed request refused: %s\n", e.msg);
            abort();
        }
    }
    /* the output span */
    int n_ids = (int)(text_len / 2);
    if (n_ids > 256) n_ids = 256;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(n_ids + 1));
    float *lps = malloc(sizeof(float) * (size_t)(n_ids + 1));
    kiln_token_logprob *top = malloc(sizeof(kiln_token_logprob) * 4 * (size_t)(n_ids + 1));
    if (!ids || !lps || !top) abort();
    for (int i = 0; i < n_ids; i++) {
        ids[i] = (int32_t)((uint8_t)text[2 * i] | ((uint8_t)text[2 * i + 1] << 8));
        lps[i] = -(float)(uint8_t)text[2 * i] / 16.0f;
        for (int j = 0; j < 4; j++)
            top[4 * i + j] = (kiln_token_logprob){.id = (ids[i] + j) & 0xffff, .logprob = lps[i] - (float)j};
    }
    char *content = NULL, *calls = NULL, *reasoning = NULL;
    kiln_error err = {0};
    if ((f & 0x20) && kind == KILN_SRV_CHAT) {
        int id_n = 0, first = 1, mode = (f >> 6) % 3;
        char *c2 = NULL, *k2 = NULL;
        if (kiln_srv_mistral_whole(text, text_len, mode, fz_sse_id, &id_n, &c2, &reasoning, &k2) == 0) {
            kiln_free(c2);
            kiln_free(k2);
        }
        kiln_mtc ms;
        kiln_mtc_init(&ms, mode);
        kiln_srv_meta mm = {.id = "chatcmpl-fuzz", .model = "kiln"};
        kiln_buf sb = {0};
        for (size_t k = 0; k <= text_len; k = k < text_len && k + 7 > text_len ? text_len : k + 7) {
            if (kiln_srv_mistral_frames(&ms, text, k, k == text_len, &sb, &r, &mm, &first, fz_sse_id, &id_n)) break;
            if (k == text_len) break;
        }
        kiln_mtc_free(&ms);
        kiln_buf_free(&sb);
    }
    if ((f & 0x20) && kind == KILN_SRV_CHAT &&
        kiln_chat_parse_tool_calls(NULL, text, text_len, &content, &calls, &err) != 0)
        calls = NULL;
    fz_sse_ctx pc = {text, text_len};
    kiln_srv_out o = {.text = text, .text_len = text_len, .ids = ids, .n_ids = n_ids, .lps = lps, .top = top,
                      .top_stride = 4, .n_top = 3, .text_offset = (size_t)f, .tool_calls_json = calls,
                      .finish = (kiln_finish)((f >> 2) & 3), .reasoning = reasoning,
                      .reasoning_len = reasoning ? strlen(reasoning) : 0};
    kiln_srv_meta m = {.id = "cmpl-fuzz", .created = 1, .model = "kiln\xff", .n_prompt = 3, .n_output = n_ids,
                       .n_cached = 1};
    kiln_buf b = {0};
    kiln_srv_sse_chunk(&b, &r, &m, &o, (f >> 1) & 1, fz_sse_piece, &pc);
    kiln_srv_sse_usage(&b, &r, &m);
    kiln_srv_sse_done(&b);
    kiln_buf_free(&b);
    json_t *resp = kiln_srv_response(&r, &m, &o, fz_sse_piece, &pc);
    json_decref(resp);
    kiln_free(content);
    kiln_free(calls);
    kiln_free(reasoning);
    free(ids);
    free(lps);
    free(top);
    kiln_srv_request_free(&r);
    return 0;
}
