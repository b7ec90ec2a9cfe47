/* gram_build.h: the grammar builder shared by the GBNF and regex parsers (private to grammar/).
 *
 * A rule's body is a list of int32 elements in the compiled encoding (grammar.h), alternatives
 * separated by -1 and the last one ended by -1 when the rule is closed. Parsers append to the
 * body of the rule they are in; groups and repetitions open anonymous rules. gb_finish checks
 * that every referenced rule is defined and none is left-recursive, and flattens the bodies.
 */
#ifndef KILN_GRAMMAR_GRAM_BUILD_H
#define KILN_GRAMMAR_GRAM_BUILD_H
#include "grammar/grammar.h"
#include "util/buf.h"

typedef struct gb_rule {
    char *name;   /* NULL: anonymous */
    kiln_buf body; /* int32 elements */
    int defined;
} gb_rule;

typedef struct kiln_gb {
    gb_rule *rules;
    int n_rules, cap_rules;
    uint32_t (*cls)[8];
    int n_cls, cap_cls;
    int oom;
    long n_elems;   /* elements emitted in all rules */
    int too_big;    /* more than GB_MAX_ELEMS: refused (a request cannot make kiln build a huge grammar) */
} kiln_gb;

#define GB_MAX_ELEMS (1L << 21)

#define GB_REF(r) (-2 - (r))
#define GB_END (-1)
#define GB_INF (-1)

void gb_free(kiln_gb *b);
/* rule id of name (created undefined when new), -1 on out-of-memory */
int gb_rule_named(kiln_gb *b, const char *name, size_t len);
int gb_rule_new(kiln_gb *b);
int gb_emit(kiln_gb *b, int rule, int32_t elem);
/* element of a byte set, of one byte */
int32_t gb_class(kiln_gb *b, const uint32_t set[8]);
int32_t gb_byte(kiln_gb *b, uint8_t c);
int gb_emit_bytes(kiln_gb *b, int rule, const char *s, size_t n);
/* element matching one codepoint of the ranges ([lo, hi] pairs, n pairs; negate: the complement
 * over all scalar values): a byte class when all of it is ASCII, else a rule of UTF-8 sequences */
int32_t gb_cp_class(kiln_gb *b, const uint32_t *ranges, int n, int negate);
/* emit elem repeated min..max times (max GB_INF: unbounded) into rule */
int gb_repeat(kiln_gb *b, int rule, int32_t elem, int min, int max);
/* wrap elements [from, body end) of rule into a new rule; returns its element (GB_REF) */
int32_t gb_wrap_tail(kiln_gb *b, int rule, size_t from_elem);
int gb_finish(kiln_gb *b, int root, kiln_gram *g, kiln_error *err);
/* the error of a builder that stopped (out of memory, or too large) */
int gb_fail(const kiln_gb *b, kiln_error *err);
static inline size_t gb_len(const kiln_gb *b, int rule) { return b->rules[rule].body.len / sizeof(int32_t); }

/* a 64-bit mix (MurmurHash3's finalizer) for the hash tables of parse stacks (matcher.c,
 * mask_walk.c), and the key of a stack node (pos, parent) */
static inline uint64_t kiln_gmix(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdull; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ull; x ^= x >> 33;
    return x;
}
static inline uint64_t kiln_gnode_key(int32_t pos, int32_t parent) {
    return (uint64_t)(uint32_t)pos << 32 | (uint32_t)parent;
}
/* UTF-8 encode cp into out (4 bytes max): the count */
int gb_utf8(uint32_t cp, char *out);

/* regex.c: parse a class "[...]" starting at s[*pos] == '[' (both syntaxes share it); a regex
 * into rule up to the byte `term` at the top level (0: the end), advancing *pos. Errors name the
 * offset. */
int gb_parse_class(kiln_gb *b, const char *s, size_t n, size_t *pos, int32_t *elem, kiln_error *err);
int gb_parse_regex(kiln_gb *b, int rule, const char *s, size_t n, size_t *pos, char term, kiln_error *err);
/* one escape after a backslash at s[*pos] (the byte after '\'): the codepoint, or -1 when the
 * escape is a class (\d \w \s and capitals: ranges into r[0..*nr) pairs, *neg set) */
long gb_parse_escape(const char *s, size_t n, size_t *pos, uint32_t *r, int *nr, int *neg, kiln_error *err);
/* decode one UTF-8 codepoint at s[*pos] (invalid bytes: the byte value) */
uint32_t gb_next_cp(const char *s, size_t n, size_t *pos);

#endif
