/* tok_internal.h: shared pieces of the tokenizer implementations (not public).
 *
 * Every vocabulary kind fills one kiln_tokenizer: a token table (the token's string as the
 * vocabulary spells it, used for lookups and merges; and its decoded bytes, used by decode
 * and the streaming detokenizer), special flags, BOS/EOS, the leading-space strip rule, and
 * an encode function with its private state. Helpers: an int vector (bytes go in util/buf.h's kiln_buf),
 * a string->id hash map, an (id,id)->(rank,id) pair map, UTF-8 utilities and the BPE merge
 * loops (score-based as llama2.c/SentencePiece, rank-based as HF/tiktoken).
 */
#ifndef KILN_TOK_INTERNAL_H
#define KILN_TOK_INTERNAL_H
#include <stddef.h>
#include <stdint.h>
#include "tokenizer/tokenizer.h"
#include "util/buf.h"

/* ---- growable buffers: bytes in kiln_buf (util/buf.h), ids in tok_ivec ---- */
typedef struct tok_ivec {
    int32_t *p;
    int n, cap;
} tok_ivec;
int tok_ivec_push(tok_ivec *v, int32_t x);
void tok_ivec_free(tok_ivec *v);

/* ---- string -> int32 map (open addressing; keys are copied into the map's own arena) ----
 * One 16-byte slot per entry: the key's arena offset and length, the value and 32 bits of the
 * key's hash (compared before the key bytes, so a probe past a different key costs no memcmp). */
typedef struct tok_strslot {
    uint32_t koff; /* offset of key in arena + 1 (0 = empty) */
    uint32_t klen;
    int32_t val;
    uint32_t tag;  /* high half of the key's 64-bit hash */
} tok_strslot;
typedef struct tok_strmap {
    uint32_t cap, n;   /* cap a power of two */
    tok_strslot *slot; /* [cap] */
    kiln_buf arena;
} tok_strmap;
/* The map's 64-bit hash of a byte string (word-at-a-time; host byte order). */
uint64_t tok_hash_bytes(const char *s, size_t n);
int tok_strmap_init(tok_strmap *m, uint32_t expect);
/* Insert or overwrite; 0 ok, -1 oom. */
int tok_strmap_put(tok_strmap *m, const char *k, size_t n, int32_t v);
/* Value or -1. */
int32_t tok_strmap_get(const tok_strmap *m, const char *k, size_t n);
void tok_strmap_free(tok_strmap *m);

/* ---- (a,b) -> (rank, merged id) map for merge-rank BPE ---- */
typedef struct tok_pairmap {
    uint32_t cap, n;
    uint64_t *key; /* (a+1)<<32 | b ; 0 = empty */
    int32_t *rank, *id;
} tok_pairmap;
int tok_pairmap_init(tok_pairmap *m, uint32_t expect);
int tok_pairmap_put(tok_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t id);
int tok_pairmap_get(const tok_pairmap *m, int32_t a, int32_t b, int32_t *rank, int32_t *id);
void tok_pairmap_free(tok_pairmap *m);

/* ---- UTF-8 ---- */
/* Length of the valid UTF-8 sequence at s (1..4), or 0 when s[0..n) starts with an invalid
 * sequence; *bad gets the length of its maximal invalid subpart (Unicode "substitution of
 * maximal subparts", what Python's errors="replace" does). */
int tok_utf8_valid_len(const unsigned char *s, size_t n, int *bad);
/* Copy of text with each maximal invalid subpart replaced by U+FFFD (allocated). */
int tok_utf8_sanitize(const char *s, size_t n, char **out, size_t *out_n);
/* Encode codepoint cp (<= 0x10FFFF) into o; returns its length. */
int tok_utf8_put(uint32_t cp, char *o);
/* Decode one codepoint of valid UTF-8 at s (length from tok_utf8_valid_len). */
uint32_t tok_utf8_cp(const unsigned char *s, int len);

/* ---- the tokenizer ---- */
typedef kiln_tok_strip tok_strip_mode; /* see tokenizer.h */
#define TOK_STRIP_NONE KILN_TOK_STRIP_NONE
#define TOK_STRIP_AFTER_BOS KILN_TOK_STRIP_AFTER_BOS
#define TOK_STRIP_FIRST_TOKEN KILN_TOK_STRIP_FIRST_TOKEN
#define TOK_STRIP_OUTPUT KILN_TOK_STRIP_OUTPUT

typedef int (*tok_encode_fn)(const kiln_tokenizer *t, const char *text, size_t len, int flags,
                             tok_ivec *out, kiln_error *err);

struct kiln_tokenizer {
    kiln_tok_kind kind;
    int n_vocab;
    /* token strings as the vocabulary spells them: [n_vocab] offsets into str */
    kiln_buf str;
    uint32_t *str_off, *str_len;
    /* decoded bytes of each token: [n_vocab] offsets into dec */
    kiln_buf dec;
    uint32_t *dec_off, *dec_len;
    uint8_t *special; /* [n_vocab] control / special token */
    float *scores;    /* [n_vocab] llama2.c only */
    tok_strmap vocab; /* token string -> id */
    int bos, eos;
    tok_strip_mode strip_mode;
    int strip_n;     /* TOK_STRIP_OUTPUT: how many leading spaces */
    int max_tok_len;
    tok_encode_fn encode;
    char *chat_template; /* the vocabulary's chat template text (GGUF tokenizer.chat_template,
                          * tokenizer_config.json chat_template), NULL when none */
    char version[16];    /* tekken config.version ("v7"), "" otherwise */
    void *impl;
    void (*impl_free)(void *impl);
};

/* Allocate the token tables for n tokens (strings added later with tok_set_token). */
int tok_alloc_tables(kiln_tokenizer *t, int n, kiln_error *err);
/* Record token id's vocabulary string and decoded bytes (dec NULL: same as s). */
int tok_set_token(kiln_tokenizer *t, int id, const char *s, size_t n, const char *dec, size_t dn,
                  kiln_error *err);
/* Build t->vocab from the token strings (later ids win on duplicates unless first_wins). */
int tok_build_vocab_map(kiln_tokenizer *t, int first_wins, kiln_error *err);
static inline const char *tok_str(const kiln_tokenizer *t, int id, size_t *n) {
    *n = t->str_len[id];
    return t->str.p + t->str_off[id];
}

/* Score BPE (llama2.c run.c encode semantics): merges the pair whose concatenated string has
 * the highest score in the vocabulary, leftmost on ties, until none is left. ids in/out. */
int tok_bpe_score_merge(const kiln_tokenizer *t, tok_ivec *ids, kiln_error *err);
/* Rank BPE over symbol ids: merges the adjacent pair with the lowest rank in pm (leftmost on
 * ties) until none is left. ids[start..] in/out. */
int tok_bpe_rank_merge(const tok_pairmap *pm, tok_ivec *ids, int start, kiln_error *err);

/* "<0xXX>" -> byte value, else -1 */
int tok_parse_byte_token(const char *s, size_t n);

/* Kinds */
int tok_load_llama2c(kiln_tokenizer *t, const char *path, kiln_error *err);
/* config_path: tokenizer_config.json beside it (BOS/EOS names), or NULL; tf_mode: also follow
 * transformers' rebuild of the pipeline for the tokenizer_class it names */
int tok_load_hf(kiln_tokenizer *t, const char *path, const char *config_path, int tf_mode,
                kiln_error *err);
int tok_load_tekken(kiln_tokenizer *t, const char *path, kiln_error *err);
/* GGUF vocabulary (tokenizer.ggml.*): model "llama" (SentencePiece scores) or "gpt2" (merges) */
int tok_load_gguf(kiln_tokenizer *t, const char *path, kiln_error *err);

#endif
