/* chat.h: chat formats (Mistral v7 over tekken, ChatML, Llama 3) rendered straight to token ids.
 * Message text is always encoded as plain text (never parsed for control tokens): a user who
 * types "[INST]" or "</s>" gets those characters, not the control tokens. */
#ifndef KILN_TOKENIZER_CHAT_H
#define KILN_TOKENIZER_CHAT_H
#include "tokenizer/tokenizer.h"

typedef struct kiln_chat_msg {
    const char *role;            /* "system", "user", "assistant", "tool" */
    const char *content;         /* may be NULL (assistant with only tool calls) */
    const char *tool_calls_json; /* assistant: JSON array of OpenAI tool_calls, or NULL */
    const char *tool_call_id;    /* tool: the call this result answers */
    const char *name;            /* tool: function name (optional) */
} kiln_chat_msg;

/* template_name: NULL or "auto" = chosen from the tokenizer's metadata; else "mistral-v7",
 * "chatml", "llama3". Unknown name => KILN_ERR_INVALID_ARG. tools_json: JSON array of OpenAI
 * tools or NULL. add_generation_prompt: end with the assistant turn's opening. */
int kiln_chat_encode(const kiln_tokenizer *t, const char *template_name, const kiln_chat_msg *msgs,
                     int n_msgs, const char *tools_json, int add_generation_prompt, int32_t **ids,
                     int *n_ids, kiln_error *err);

/* Parse model output text that contains tool calls (Devstral: "[TOOL_CALLS][{...}]") into an
 * OpenAI tool_calls JSON array (allocated) and the text before the calls. Returns 0 and sets
 * *calls_json to NULL when the text holds no tool call. */
int kiln_chat_parse_tool_calls(const kiln_tokenizer *t, const char *text, size_t len,
                               char **content, char **calls_json, kiln_error *err);
#endif
