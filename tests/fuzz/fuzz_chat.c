/* fuzz_chat.c: chat rendering of arbitrary message lists (tokenizer/chat.c kiln_chat_encode)
 * with the fixed tokenizers and every format, and the tool-call parser on arbitrary model
 * output (kiln_chat_parse_tool_calls).
 *
 * Input: byte 0 = tokenizer (bits 0-1), format (bits 2-4: auto, mistral-v7, mistral-v3, chatml,
 * llama3, an unknown name, mistral-v11, mistral-v13), add_generation_prompt (bit 5), a tools array first (bit 6); then
 * fields separated by NUL bytes, three per message: role (first byte < 5 picks system / user /
 * assistant / tool / NULL content, else the field is the role text), content, and the
 * assistant's tool_calls JSON or the tool's tool_call_id (empty = none). */
#include "fuzz_common.h"
#include "tokenizer/chat.h"

#define FZ_CHAT_MAX_MSGS 64

int FUZZ_ENTRY(const uint8_t *data, size_t size);
int FUZZ_ENTRY(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    static const char *formats[] = {"auto", "mistral-v7", "mistral-v3", "chatml", "llama3", "nonesuch", "mistral-v11",
                                    "mistral-v13"};
    static const char *roles[] = {"system", "user", "assistant", "tool", "user"};
    const kiln_tokenizer *t = fz_tokenizer(data[0] & 3);
    const char *fmt = formats[(data[0] >> 2) & 7];
    int add_gen = (data[0] >> 5) & 1;
    char *s = fz_cstr(data + 1, size - 1);
    size_t n = size - 1;
    /* fields */
    char *fields[3 * FZ_CHAT_MAX_MSGS + 1];
    int nf = 0;
    for (size_t at = 0; at <= n && nf < (int)(sizeof fields / sizeof fields[0]);) {
        fields[nf++] = s + at;
        at += strlen(s + at) + 1;
    }
    int fi = 0;
    const char *tools = NULL;
    if ((data[0] & 0x40) && fi < nf) tools = fields[fi++];
    kiln_chat_msg msgs[FZ_CHAT_MAX_MSGS];
    int nm = 0;
    while (fi + 3 <= nf && nm < FZ_CHAT_MAX_MSGS) {
        kiln_chat_msg *m = &msgs[nm++];
        memset(m, 0, sizeof *m);
        unsigned char r = (unsigned char)fields[fi][0];
        m->role = r < 5 ? roles[r] : fields[fi];
        m->content = r == 4 ? NULL : fields[fi + 1];
        const char *extra = fields[fi + 2];
        if (*extra) {
            if (m->role == roles[2]) m->tool_calls_json = extra;
            else m->tool_call_id = extra, m->name = "f";
        }
        fi += 3;
    }
    kiln_error err = {0};
    int32_t *ids = NULL;
    int n_ids = 0;
    if (kiln_chat_encode(t, fmt, msgs, nm, tools, add_gen, &ids, &n_ids, &err) == 0) {
        int vs = kiln_tokenizer_vocab_size(t);
        for (int i = 0; i < n_ids; i++)
            if (ids[i] < 0 || ids[i] >= vs) abort();
        kiln_free(ids);
    }
    if (kiln_chat_template_name(t, fmt, &err)) (void)kiln_chat_end_of_turn(t, fmt);
    /* the whole input as model output */
    char *content = NULL, *calls = NULL;
    if (kiln_chat_parse_tool_calls((data[0] & 0x80) ? NULL : t, (const char *)data + 1, n, &content, &calls,
                                   &err) == 0) {
        kiln_free(content);
        kiln_free(calls);
    }
    free(s);
    return 0;
}
