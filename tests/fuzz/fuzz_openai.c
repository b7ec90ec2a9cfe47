/* fuzz_openai.c: the OpenAI request parser (server/openai.c kiln_srv_parse_request) on
 * arbitrary bodies, as /v1/completions (byte 0 even) and /v1/chat/completions (odd). An error
 * answer is rendered as the server would send it (JSON and SSE). */
#include "fuzz_common.h"
#include "server/openai.h"

int FUZZ_ENTRY(const uint8_t *data, size_t size);
int FUZZ_ENTRY(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    kiln_srv_limits lim = {.model_name = (data[0] & 2) ? "kiln" : NULL, .vocab_size = 300, .max_model_len = 128};
    kiln_srv_request r;
    kiln_srv_err e;
    memset(&r, 0, sizeof r);
    memset(&e, 0, sizeof e);
    kiln_srv_kind kind = (data[0] & 1) ? KILN_SRV_CHAT : KILN_SRV_COMPLETION;
    int st = kiln_srv_parse_request(&r, kind, (const char *)data + 1, size - 1, &lim, &e);
    if (st == 0) {
        kiln_srv_request_free(&r);
    } else {
        if (st < 400 || st > 599) abort(); /* an error is an HTTP error status */
        kiln_buf b = {0};
        kiln_srv_err_json(&b, &e);
        kiln_srv_sse_error(&b, &e);
        kiln_buf_free(&b);
    }
    return 0;
}
