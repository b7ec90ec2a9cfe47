/* tok_hf.h: the HF tokenizer.json pipeline (private to tok_hf*.c).
 *
 * Encoding, as the `tokenizers` library runs it:
 *   text -> split on non-normalized added tokens -> normalize the rest -> split on normalized
 *   added tokens -> pre-tokenize into words -> BPE model per word -> post-processor template.
 * Sequences of normalizers / pre-tokenizers are flattened into arrays applied in order.
 */
#ifndef KILN_TOK_HF_H
#define KILN_TOK_HF_H
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include "tokenizer/tok_internal.h"

typedef enum hf_norm_type {
    HF_NORM_PREPEND,
    HF_NORM_REPLACE,
    HF_NORM_NFC,
    HF_NORM_NFKC,
    HF_NORM_NFD,
    HF_NORM_NFKD,
    HF_NORM_LOWERCASE,
    HF_NORM_STRIP,
} hf_norm_type;

typedef struct hf_norm {
    hf_norm_type type;
    char *a, *b; /* Prepend: a; Replace: literal pattern a (or regex re) -> content b */
    size_t an, bn;
    pcre2_code *re;
    int left, right; /* Strip */
} hf_norm;

typedef enum hf_split_beh {
    HF_SPLIT_REMOVED,
    HF_SPLIT_ISOLATED,
    HF_SPLIT_MERGED_PREV,
    HF_SPLIT_MERGED_NEXT,
    HF_SPLIT_CONTIGUOUS,
} hf_split_beh;

typedef enum hf_pre_type { HF_PRE_SPLIT, HF_PRE_BYTELEVEL, HF_PRE_METASPACE } hf_pre_type;

typedef struct hf_pre {
    hf_pre_type type;
    /* Split (Digits and Metaspace's split become Splits too) */
    pcre2_code *re;   /* regex pattern, or NULL for a literal */
    char *lit;
    size_t litn;
    hf_split_beh beh;
    int invert;
    int tekken;       /* re and lit unused: the tekken pattern, cut by tok_tekken_split.c (GGUF
                         pre "tekken": Unicode 16.0 classes, as mistral-common) */
    /* ByteLevel */
    int add_prefix_space, use_regex;
    /* Metaspace */
    char repl[8];
    int repln;
    int prepend; /* 0 never, 1 always, 2 first */
    int split;
} hf_pre;

typedef struct hf_added {
    int32_t id;
    char *content; /* as written */
    size_t n;
    char *norm; /* normalized content (normalized tokens) */
    size_t nn;
    int special, normalized, lstrip, rstrip, single_word;
} hf_added;

typedef struct hf_tmpl_item {
    int is_seq;     /* 1: the input sequence "A" */
    int32_t *ids;   /* special token ids */
    int n_ids;
} hf_tmpl_item;

typedef struct hf_model {
    hf_norm *norms;
    int n_norms;
    hf_pre *pres;
    int n_pres;
    hf_added *added;
    int n_added;
    hf_tmpl_item *tmpl;
    int n_tmpl;
    tok_pairmap merges;
    int32_t unk; /* -1: unknown chars are dropped */
    int fuse_unk, byte_fallback, ignore_merges;
    int32_t byte_ids[256]; /* <0xXX> ids, -1 when absent */
    int byte_level;        /* a ByteLevel pre-tokenizer maps bytes to the GPT-2 alphabet */
} hf_model;

/* GPT-2 bytes_to_unicode: byte -> codepoint */
uint32_t hf_byte_to_cp(int b);
/* codepoint -> byte, or -1 */
int hf_cp_to_byte(uint32_t cp);

/* Compile a regex (PCRE2_UTF|PCRE2_UCP, JIT when available). NULL + err on failure. */
pcre2_code *hf_regex_compile(const char *pat, size_t n, const char *what, kiln_error *err);

/* Apply normalizers n[0..k) to s (allocated result). */
int hf_normalize(const hf_norm *n, int k, const char *s, size_t len, char **out, size_t *out_n,
                 kiln_error *err);
int hf_encode(const kiln_tokenizer *t, const char *text, size_t len, int flags, tok_ivec *out,
              kiln_error *err);
/* the same with the pipeline m given (t: token tables only; GGUF vocabularies use this) */
int hf_encode_model(const kiln_tokenizer *t, const hf_model *m, const char *text, size_t len, int flags,
                    tok_ivec *out, kiln_error *err);
void hf_model_free(void *m);
/* Cut s on the added tokens that are not normalized (leftmost-longest; specials only when
 * parse_special): out gets triples (start, end, id) with id -1 for plain text. */
int hf_split_added_tokens(const hf_model *m, const char *s, size_t n, int parse_special,
                          tok_ivec *out, kiln_error *err);

#endif
