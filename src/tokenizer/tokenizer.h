/* tokenizer.h: one tokenizer interface over several vocabularies.
 *
 *   - llama2.c tokenizer.bin (SentencePiece-style pieces with scores, byte tokens <0xXX>)
 *   - HF tokenizer.json (BPE: SentencePiece-style with byte fallback, or byte-level)
 *   - Mistral tekken.json (tiktoken-style ranks, PCRE2 pre-tokenizer)
 *   - GGUF vocabularies (tokenizer.ggml.*)
 *
 * Decoding is defined through each token's raw bytes (kiln_tok_piece): the decoded text of a
 * sequence is the concatenation of its tokens' bytes, minus one leading space at the start of
 * a sequence when the vocabulary says so (SentencePiece's dummy prefix). The incremental
 * detokenizer (detok.h) builds streaming on top of that.
 */
#ifndef KILN_TOKENIZER_H
#define KILN_TOKENIZER_H
#include <stddef.h>
#include <stdint.h>
#include "kiln.h"

typedef struct kiln_tokenizer kiln_tokenizer;

enum {
    KILN_TOK_ADD_BOS = 1,       /* add BOS (and EOS / template) per the vocabulary's post-processor */
    KILN_TOK_PARSE_SPECIAL = 2, /* text like "</s>" becomes the control token (tokenizer.json:
                                 * special added tokens; non-special added tokens are always
                                 * matched, as `tokenizers` does; llama2.c .bin: never) */
};

typedef enum kiln_tok_kind {
    KILN_TOK_KIND_LLAMA2C = 0,
    KILN_TOK_KIND_HF,
    KILN_TOK_KIND_TEKKEN,
    KILN_TOK_KIND_GGUF
} kiln_tok_kind;

/* path: a tokenizer.json, a tekken.json, a llama2.c tokenizer .bin, a .gguf, or a model folder
 * (tokenizer.json, then tekken.json, then tokenizer.model are looked for). */
int kiln_tokenizer_load(kiln_tokenizer **out, const char *path, kiln_error *err);
/* Load options. By default a tokenizer.json is read the way transformers (v5) reads it when a
 * tokenizer_config.json lies beside it: for tokenizer_class LlamaTokenizer(Fast) that means
 * transformers' own Llama pipeline (Metaspace pre-tokenizer, no normalizer, no unk token), which
 * is what the model's reference outputs were made with. KILN_TOK_LOAD_RAW reads tokenizer.json
 * exactly as the HF `tokenizers` library does, ignoring tokenizer_config.json. */
enum { KILN_TOK_LOAD_RAW = 1 };
int kiln_tokenizer_load_ex(kiln_tokenizer **out, const char *path, int opts, kiln_error *err);
void kiln_tokenizer_free(kiln_tokenizer *t);

kiln_tok_kind kiln_tokenizer_kind(const kiln_tokenizer *t);
int kiln_tokenizer_vocab_size(const kiln_tokenizer *t);
int kiln_tokenizer_bos(const kiln_tokenizer *t); /* -1 if none */
int kiln_tokenizer_eos(const kiln_tokenizer *t); /* -1 if none */
/* The vocabulary's chat template text (GGUF tokenizer.chat_template, tokenizer_config.json's
 * chat_template) or NULL; tekken's config.version ("v7") or "" (chat.c chooses formats by them). */
const char *kiln_tokenizer_chat_template(const kiln_tokenizer *t);
const char *kiln_tokenizer_version(const kiln_tokenizer *t);
/* Id of the token spelled s (special tokens first), -1 when none. */
int32_t kiln_tokenizer_token_id(const kiln_tokenizer *t, const char *s);

/* Encode len bytes of text. *ids is allocated with kiln_malloc (free with kiln_free).
 * Invalid UTF-8 has defined behaviour, never a crash: tokenizer.json and tekken encode the text
 * with each maximal invalid subpart replaced by U+FFFD (Python's errors="replace"); llama2.c
 * .bin keeps the raw bytes (byte-fallback tokens), as run.c does. */
int kiln_tokenizer_encode(const kiln_tokenizer *t, const char *text, size_t len, int flags,
                          int32_t **ids, int *n_ids, kiln_error *err);

/* Raw bytes of one token (after the decoder's transforms: "▁" -> " ", "<0x0A>" -> "\n", byte-level
 * unicode -> bytes). Special/control tokens return their text. NULL/0 for an id out of range. */
const char *kiln_tok_piece(const kiln_tokenizer *t, int32_t id, size_t *len);
int kiln_tok_is_special(const kiln_tokenizer *t, int32_t id);
/* 1 when decoding drops one leading space of the first token of a sequence (SentencePiece). */
int kiln_tok_strips_leading_space(const kiln_tokenizer *t);
/* The exact rule (the detokenizer follows it):
 *   AFTER_BOS:   a token that is first in the sequence or follows BOS loses one leading space
 *                (llama2.c run.c decode, SentencePiece);
 *   FIRST_TOKEN: the first token decoded (after skipping specials) loses one leading space
 *                (HF Metaspace decoder);
 *   OUTPUT:      up to *n leading spaces of the whole decoded text are removed (HF Strip decoder). */
typedef enum kiln_tok_strip {
    KILN_TOK_STRIP_NONE = 0,
    KILN_TOK_STRIP_AFTER_BOS,
    KILN_TOK_STRIP_FIRST_TOKEN,
    KILN_TOK_STRIP_OUTPUT
} kiln_tok_strip;
kiln_tok_strip kiln_tok_strip_rule(const kiln_tokenizer *t, int *n);

/* Decode ids to text (allocated, NUL-terminated, always valid UTF-8: invalid byte sequences
 * become U+FFFD). skip_special: control tokens are left out. An id out of range is an error. */
int kiln_tokenizer_decode(const kiln_tokenizer *t, const int32_t *ids, int n, int skip_special,
                          char **text, size_t *len, kiln_error *err);

#endif
