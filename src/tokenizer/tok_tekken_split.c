/* tok_tekken_split.c: tekken's pre-tokenizer regex as a hand-written matcher.
 *
 * The pattern (kiln_tekken_pattern) is a fixed alternation, tried leftmost-first with
 * backtracking by the reference (tiktoken's fancy-regex) and by PCRE2:
 *   A1 [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+
 *   A2 [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*
 *   A3 \p{N}
 *   A4  ?[^\s\p{L}\p{N}]+[\r\n/]*
 *   A5 \s*[\r\n]+
 *   A6 \s+(?!\S)
 *   A7 \s+
 * Each alternative's backtracking reduces to a closed form (below), so one forward scan per
 * alternative gives the same end as the regex engine. Why by hand: PCRE2 classifies with the
 * Unicode tables it was built with (14.0 on Debian 12), the reference with 16.0; the tables here
 * are generated from a pinned database (scripts/gen_unicode_tables.py). Names below: U = the
 * first letter set (Lu Lt Lm Lo M), W = the second (Ll Lm Lo M), P = the optional prefix class,
 * Q = [^\s\p{L}\p{N}].
 */
#include "tokenizer/tok_tekken_split.h"
#include <stdint.h>
#include "tokenizer/unicode_tables.h"

const char kiln_tekken_pattern[] =
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|"
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|"
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

#define BIT(c) (1u << (c))
#define SET_U (BIT(KILN_UC_UPPER) | BIT(KILN_UC_LMO) | BIT(KILN_UC_MARK))
#define SET_W (BIT(KILN_UC_LOWER) | BIT(KILN_UC_LMO) | BIT(KILN_UC_MARK))
#define SET_Q (BIT(KILN_UC_OTHER) | BIT(KILN_UC_MARK))
#define SET_P (SET_Q | BIT(KILN_UC_SPACE)) /* minus \r and \n, checked apart */

typedef struct cursor {
    const unsigned char *s;
    size_t n;
} cursor;

/* class of the character at i (i < n) and where the next one starts; a byte that does not
 * begin a valid sequence (the encoder sanitises its text first) counts as one OTHER byte */
static inline int char_at(const cursor *c, size_t i, size_t *next) {
    const unsigned char *s = c->s;
    unsigned b = s[i];
    uint32_t cp;
    size_t len;
    if (b < 0x80) {
        *next = i + 1;
        return kiln_uc_class(b);
    }
    if (b >= 0xC2 && b < 0xE0) len = 2, cp = b & 0x1F;
    else if (b >= 0xE0 && b < 0xF0) len = 3, cp = b & 0x0F;
    else if (b >= 0xF0 && b < 0xF5) len = 4, cp = b & 0x07;
    else len = 0, cp = 0;
    if (len == 0 || i + len > c->n) {
        *next = i + 1;
        return KILN_UC_OTHER;
    }
    for (size_t k = 1; k < len; k++) {
        if ((s[i + k] & 0xC0) != 0x80) {
            *next = i + 1;
            return KILN_UC_OTHER;
        }
        cp = cp << 6 | (s[i + k] & 0x3F);
    }
    *next = i + len;
    return cp < 0x110000 ? kiln_uc_class(cp) : KILN_UC_OTHER;
}

/* end of the longest run of characters in set from i */
static size_t run_end(const cursor *c, size_t i, unsigned set) {
    size_t nx;
    while (i < c->n && (BIT(char_at(c, i, &nx)) & set)) i = nx;
    return i;
}

/* A1 from s: U* then W+. The greedy U run ends at e; W+ matches there only when the character
 * at e is Ll (the rest of W is in U). Otherwise backtracking gives back U characters until the
 * last one that is also in W, and W+ takes exactly it (the ones after it are Lu/Lt). 0 = none. */
static size_t alt1(const cursor *c, size_t s) {
    size_t i = s, last_w = 0, nx;
    while (i < c->n) {
        int k = char_at(c, i, &nx);
        if (!(BIT(k) & SET_U)) {
            if (k == KILN_UC_LOWER) return run_end(c, nx, SET_W);
            break;
        }
        if (BIT(k) & SET_W) last_w = nx;
        i = nx;
    }
    return last_w;
}

/* A2 from s: U+ then W* (W* cannot fail, so no backtracking). 0 = none. */
static size_t alt2(const cursor *c, size_t s) {
    size_t e = run_end(c, s, SET_U);
    return e == s ? 0 : run_end(c, e, SET_W);
}

size_t kiln_tekken_split_next(const char *str, size_t n, size_t pos) {
    cursor cu = {(const unsigned char *)str, n}, *c = &cu;
    size_t e0, e;
    int k0 = char_at(c, pos, &e0);
    unsigned char b0 = c->s[pos];
    /* A1, A2: the prefix is tried first (greedy ?), then without it */
    int prefix = (BIT(k0) & SET_P) && b0 != '\r' && b0 != '\n';
    if (prefix && e0 < n && (e = alt1(c, e0))) return e;
    if ((e = alt1(c, pos))) return e;
    if (prefix && e0 < n && (e = alt2(c, e0))) return e;
    if ((e = alt2(c, pos))) return e;
    if (k0 == KILN_UC_NUM) return e0; /* A3 */
    /* A4: with the space first; without it Q+ cannot start at a space */
    size_t q = b0 == ' ' ? e0 : pos;
    e = run_end(c, q, SET_Q);
    if (e > q) {
        while (e < n && (c->s[e] == '\r' || c->s[e] == '\n' || c->s[e] == '/')) e++;
        return e;
    }
    if (k0 != KILN_UC_SPACE) return e0; /* not reached: every character matches one of A1..A4 */
    /* A5: \s* backs off to the last \r or \n of the white-space run, [\r\n]+ takes it */
    size_t i = pos, last_nl = 0, prev = pos, nx;
    int count = 0;
    while (i < n && char_at(c, i, &nx) == KILN_UC_SPACE) {
        if (c->s[i] == '\r' || c->s[i] == '\n') last_nl = nx;
        prev = i;
        i = nx;
        count++;
    }
    if (last_nl) return last_nl;
    /* A6: the whole run at the end of the text, else the run less its last character (then
     * followed by white space); A7: a run of one character followed by a non-space */
    if (i == n || count == 1) return i;
    return prev;
}
