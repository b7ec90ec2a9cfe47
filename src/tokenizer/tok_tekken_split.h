/* tok_tekken_split.h: the tekken pre-tokenizer pattern, matched by hand with generated Unicode
 * tables (unicode_tables.h) instead of PCRE2, so that its character classes follow the
 * reference's Unicode version rather than the system PCRE2's. */
#ifndef KILN_TOK_TEKKEN_SPLIT_H
#define KILN_TOK_TEKKEN_SPLIT_H
#include <stddef.h>

/* The pattern of every published tekken.json (config.pattern); a file with another pattern is
 * cut by PCRE2 instead. */
extern const char kiln_tekken_pattern[];

/* End of the piece that starts at pos (pos < n) of the valid UTF-8 text s[0, n): what the
 * pattern's leftmost-first match at pos ends at (it matches at every position, never empty). */
size_t kiln_tekken_split_next(const char *s, size_t n, size_t pos);
#endif
