/* chat.h: chat formats (Mistral v3, v7, v11 and v13 over tekken, ChatML, Llama 3) rendered straight to token ids.
 * Message text is always encoded as plain text (never parsed for control tokens): a user who
 * types "[INST]" or "</s>" gets those characters, not the control tokens. */
#ifndef KILN_TOKENIZER_CHAT_H
#define KILN_TOKENIZER_CHAT_H
#include "tokenizer/tokenizer.h"

/* kiln_chat_msg (one OpenAI-style message) is declared in kiln.h: the server builds them. */

/* template_name: NULL or "auto" = chosen from the tokenizer's metadata; else "mistral-v13",
 * "mistral-v11", "mistral-v7", "mistral-v3", "chatml", "llama3" (tekken config.version "v3", "v7",
 * "v11", "v13" pick the matching format, as mistral-common does; another version, e.g. "v15", is
 * KILN_ERR_UNSUPPORTED naming it). Unknown name => KILN_ERR_INVALID_ARG. tools_json: JSON array of OpenAI
 * tools or NULL. add_generation_prompt: end with the assistant turn's opening. The Mistral formats
 * refuse (KILN_ERR_INVALID_ARG, the message and the rule named) what mistral-common's validator
 * refuses, and take msgs[n-1].prefix (continuation); the others refuse prefix (KILN_ERR_UNSUPPORTED). */
int kiln_chat_encode(const kiln_tokenizer *t, const char *template_name, const kiln_chat_msg *msgs,
                     int n_msgs, const char *tools_json, int add_generation_prompt, int32_t **ids,
                     int *n_ids, kiln_error *err);

/* The format name chosen for template_name (as kiln_chat_encode would), NULL + err if none. */
const char *kiln_chat_template_name(const kiln_tokenizer *t, const char *template_name, kiln_error *err);
/* The token that ends an assistant turn in that format (</s>, <|im_end|>, <|eot_id|>), -1 if none. */
int kiln_chat_end_of_turn(const kiln_tokenizer *t, const char *template_name);

/* OpenAI chat requests (JSON) are parsed in one place: the server's openai.c
 * (kiln_srv_parse_request), which `kiln tokenize --chat` uses too. */

/* Parse model output text that contains tool calls (Devstral: "[TOOL_CALLS][{...}]", decoded
 * with special tokens kept) into an OpenAI tool_calls JSON array (allocated with kiln_malloc:
 * [{"id": 9 alphanumerics, "type": "function", "function": {"name", "arguments": JSON text}}])
 * and the text before the calls (allocated). Ids are derived from the text (deterministic).
 * Returns 0 and sets *calls_json to NULL when the text holds no tool call; malformed JSON after
 * [TOOL_CALLS] is KILN_ERR_FORMAT. t may be NULL. */
int kiln_chat_parse_tool_calls(const kiln_tokenizer *t, const char *text, size_t len,
                               char **content, char **calls_json, kiln_error *err);
#endif
