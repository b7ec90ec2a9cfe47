/* grammar.h: kiln's grammar engine for constrained decoding (the layer beside sample/).
 *
 * Everything compiles to one byte-level context-free grammar (kiln_grammar):
 *   GBNF text (llama.cpp's format, plus /regex/ terminals as Lark and xgrammar's EBNF write
 *   them) -> gbnf.c; a regular expression -> regex.c (through the same builder, so a regex is
 *   a right-linear grammar: an automaton); JSON Schema -> GBNF text -> json_schema.c; a choice
 *   -> alternatives of literals.
 * Codepoint classes become UTF-8 byte sequences at build time, so the matcher never decodes
 * UTF-8: it runs over the bytes of token pieces.
 *
 * Compiled form (flat, immutable, shareable between requests):
 *   elems[n_elems]: int32; >= 0 a byte class (index into classes), -1 the end of an
 *     alternative, <= -2 a reference to rule (-elem - 2);
 *   alts[rule_alt[r] .. rule_alt[r + 1]): start positions (into elems) of rule r's alternatives;
 *   classes[n_classes][8]: 256-bit byte sets.
 * Left recursion is refused at compile time (the matcher expands rules eagerly).
 *
 * Matching (matcher.c) keeps a set of parse stacks as llama.cpp's grammar does; stacks are
 * parent-linked nodes (pos, parent) in an arena, so advancing a stack by one byte allocates one
 * node and shares the rest. The token mask of a state is a walk of the token trie (every
 * non-special vocabulary piece, preorder with subtree skips): a subtree is skipped as soon as
 * its prefix leaves no live stack. Masks are cached per state (the serialized stack set) in a
 * small per-matcher cache, so loops such as the characters of a JSON string cost one lookup.
 */
#ifndef KILN_GRAMMAR_GRAMMAR_H
#define KILN_GRAMMAR_GRAMMAR_H
#include <stddef.h>
#include <stdint.h>
#include "kiln.h"

typedef struct kiln_gram {
    int32_t *elems;   /* [n_elems] */
    int n_elems;
    int32_t *alts;    /* [n_alts] */
    int n_alts;
    int32_t *rule_alt; /* [n_rules + 1] */
    int n_rules;
    uint32_t (*classes)[8]; /* [n_classes][8] */
    int n_classes;
    int root;         /* rule id of the start rule */
} kiln_gram;

void kiln_gram_free(kiln_gram *g);

/* GBNF text -> grammar; the start rule is `root`. Errors name the rule and the offset. */
int kiln_gram_from_gbnf(kiln_gram *g, const char *text, size_t len, kiln_error *err);
/* a regular expression (full match; ^ and $ at its ends allowed) -> grammar */
int kiln_gram_from_regex(kiln_gram *g, const char *re, size_t len, kiln_error *err);
/* a JSON array of strings -> grammar matching exactly one of them */
int kiln_gram_from_choice(kiln_gram *g, const char *json, size_t len, kiln_error *err);
/* JSON Schema (text) -> GBNF text (*out, free with kiln_free): rules prefixed with `prefix`,
 * the schema's rule named `<prefix>root`. schema NULL: any JSON object (json_object mode).
 * Unsupported keywords are KILN_ERR_UNSUPPORTED naming the keyword and its JSON pointer. */
int kiln_json_schema_to_gbnf(const char *schema, const char *prefix, char **out, kiln_error *err);
/* JSON Schema -> grammar (the two calls above) */
int kiln_gram_from_json_schema(kiln_gram *g, const char *schema, kiln_error *err);

/* ---- token trie and matcher ----------------------------------------------------------- */

typedef struct kiln_token_trie {
    int n_nodes;
    uint8_t *byte;     /* [n_nodes] the byte that leads into the node */
    uint16_t *depth;   /* [n_nodes] 1 for children of the root */
    int32_t *skip;     /* [n_nodes] index of the first node after the node's subtree */
    int32_t *tok_off;  /* [n_nodes + 1] tokens ending at node i: toks[tok_off[i] .. tok_off[i + 1]) */
    int32_t *toks;     /* [n_toks] */
    int n_toks;
    int max_depth;
    int vocab;         /* mask width in tokens */
} kiln_token_trie;

/* pieces[i] / lens[i]: raw bytes of token i; skip[i] != 0 (or len 0): never allowed by a grammar
 * (special tokens; the caller adds end-of-sequence ids itself) */
int kiln_token_trie_build(kiln_token_trie *t, int vocab, const char *const *pieces, const size_t *lens,
                          const uint8_t *skip, kiln_error *err);
void kiln_token_trie_free(kiln_token_trie *t);

typedef struct kiln_gmatch kiln_gmatch;

/* Scratch of the mask walk (mask_walk.c): hash-consed stacks, memoized transitions; one per
 * engine (masks are computed one at a time), about 20 MiB. max_depth: the trie's. */
typedef struct kiln_gscratch kiln_gscratch;
int kiln_gscratch_create(kiln_gscratch **out, int max_depth, kiln_error *err);
void kiln_gscratch_free(kiln_gscratch *w);

/* Per-position token tables of a grammar over a trie (mask_walk.c's A_p / U_p), filled as
 * matchers reach positions; shared by every matcher of the grammar (one thread at a time: the
 * engine's), so a schema used by many requests computes each position once. */
typedef struct kiln_gtables kiln_gtables;
int kiln_gtables_create(kiln_gtables **out, const kiln_gram *g, const kiln_token_trie *trie, kiln_error *err);
void kiln_gtables_free(kiln_gtables *t);
/* positions computed so far */
int kiln_gtables_count(const kiln_gtables *t);

/* A matcher at the grammar's start, with its arena and a mask cache of cache_entries masks of
 * trie->vocab bits. tabs: shared tables, or NULL for the matcher's own. g, trie and tabs must
 * outlive it. */
int kiln_gmatch_create(kiln_gmatch **out, const kiln_gram *g, const kiln_token_trie *trie, kiln_gtables *tabs,
                       int cache_entries, kiln_error *err);
void kiln_gmatch_free(kiln_gmatch *m);
/* advance over n bytes: KILN_OK, or KILN_ERR_INVALID_ARG when the bytes leave the grammar (the
 * state is then unchanged), KILN_ERR_OOM when the arena is full */
int kiln_gmatch_accept(kiln_gmatch *m, const void *bytes, size_t n, kiln_error *err);
/* 1 when the text so far is a complete sentence (end of sequence allowed) */
int kiln_gmatch_accepting(const kiln_gmatch *m);
/* Jump-forward: the bytes every continuation of the current state starts with (while the text is
 * not complete and the live stacks accept exactly one byte), at most cap, into out; returns how
 * many. The state is unchanged. */
int kiln_gmatch_forced(kiln_gmatch *m, uint8_t *out, int cap);
/* 1 when nothing may follow (complete, no byte continues it) */
int kiln_gmatch_done(const kiln_gmatch *m);
/* mask[(vocab + 31) / 32]: bit i set when token i keeps the text inside the grammar (special
 * tokens never). Cached per state; per grammar position, the position's own tokens are computed
 * once (the first time a top reaches it: allocates, up to 1024 positions per matcher). */
int kiln_gmatch_mask(kiln_gmatch *m, kiln_gscratch *w, uint32_t *mask, kiln_error *err);
/* counters: masks computed (trie walks) and served from the cache */
void kiln_gmatch_stats(const kiln_gmatch *m, uint64_t *computed, uint64_t *cached);
#endif
