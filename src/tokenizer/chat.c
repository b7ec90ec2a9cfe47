/* chat.c: placeholder until the chat formats land. */
#include "tokenizer/chat.h"
#include "util/error.h"
int kiln_chat_encode(const kiln_tokenizer *t, const char *template_name, const kiln_chat_msg *msgs,
                     int n_msgs, const char *tools_json, int add_generation_prompt, int32_t **ids,
                     int *n_ids, kiln_error *err) {
    (void)t; (void)template_name; (void)msgs; (void)n_msgs; (void)tools_json; (void)add_generation_prompt;
    *ids = NULL; *n_ids = 0;
    return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "chat formats are not implemented yet");
}
int kiln_chat_parse_tool_calls(const kiln_tokenizer *t, const char *text, size_t len, char **content,
                               char **calls_json, kiln_error *err) {
    (void)t; (void)text; (void)len; (void)err;
    *content = NULL; *calls_json = NULL;
    return KILN_OK;
}
