/* engine_text.c: the "Text" section of kiln.h: the engine's tokenizer and chat formats for
 * callers above the engine (the server), so that they need no tokenizer/ header.
 *
 * Each function only reads the tokenizer (immutable after kiln_engine_open), so all are safe
 * beside a running kiln_engine_step on another thread. Kept apart from engine.c, which is the
 * scheduler's file.
 */
#include "kiln.h"
#include "engine/engine.h"
#include "tokenizer/chat.h"
#include "util/error.h"

static const char NO_TOK[] = "the model has no tokenizer (give one with --tokenizer)";

int kiln_engine_has_tokenizer(const kiln_engine *e) { return e && kiln_engine_tokenizer(e) != NULL; }

const char *kiln_engine_token_piece(const kiln_engine *e, int32_t id, size_t *len) {
    const kiln_tokenizer *t = e ? kiln_engine_tokenizer(e) : NULL;
    *len = 0;
    return t ? kiln_tok_piece(t, id, len) : NULL; /* NULL for an id out of range */
}

int kiln_engine_apply_chat(const kiln_engine *e, const char *template_name, const kiln_chat_msg *msgs,
                           int n_msgs, const char *tools_json, int add_generation_prompt, int32_t **ids,
                           int *n_ids, kiln_error *err) {
    const kiln_tokenizer *t = e ? kiln_engine_tokenizer(e) : NULL;
    if (!t) return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s", NO_TOK);
    return kiln_chat_encode(t, template_name, msgs, n_msgs, tools_json, add_generation_prompt, ids, n_ids, err);
}

int kiln_engine_parse_tool_calls(const kiln_engine *e, const char *text, size_t len, char **content,
                                 char **calls_json, kiln_error *err) {
    return kiln_chat_parse_tool_calls(e ? kiln_engine_tokenizer(e) : NULL, text, len, content, calls_json, err);
}
