/* regex.c: regular expressions -> grammar rules (a right-linear grammar: the automaton the
 * matcher runs), and the character classes GBNF shares.
 *
 * Syntax: alternation |, groups ( ) (?: ), quantifiers * + ? {m} {m,} {m,n} (a lazy or
 * possessive suffix is accepted and changes nothing: the whole match is what is constrained),
 * classes [...] [^...] with ranges, ., escapes \d \w \s \D \W \S \n \r \t \f \v \0 \xHH
 * \uHHHH \u{H..} and escaped punctuation; ^ at the start and $ at the end (full match anyway).
 * Backreferences, lookaround and word boundaries are refused with their offset.
 * `.` is any codepoint but \n (as in Python's re without DOTALL).
 */
#include <string.h>
#include "grammar/gram_build.h"
#include "util/alloc.h"
#include "util/error.h"

uint32_t gb_next_cp(const char *s, size_t n, size_t *pos) {
    const uint8_t *u = (const uint8_t *)s;
    size_t i = *pos;
    uint32_t c = u[i];
    int k = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
    if (k <= 0 || i + (size_t)k >= n) { *pos = i + 1; return c; }
    uint32_t cp = c & (0x3F >> k);
    for (int j = 1; j <= k; j++) {
        if ((u[i + j] & 0xC0) != 0x80) { *pos = i + 1; return c; }
        cp = cp << 6 | (u[i + j] & 63);
    }
    *pos = i + 1 + (size_t)k;
    return cp;
}

static int hexv(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static const uint32_t R_DIGIT[] = {'0', '9'};
static const uint32_t R_WORD[] = {'0', '9', 'A', 'Z', '_', '_', 'a', 'z'};
static const uint32_t R_SPACE[] = {'\t', '\r', ' ', ' '};

long gb_parse_escape(const char *s, size_t n, size_t *pos, uint32_t *r, int *nr, int *neg, kiln_error *err) {
    size_t i = *pos;
    if (i >= n) return KILN_ERR(err, KILN_ERR_INVALID_ARG, "a backslash at the end (offset %zu)", i), -2;
    char c = s[i++];
    *pos = i;
    const uint32_t *src = NULL;
    int k = 0;
    switch (c) {
    case 'n': return '\n';
    case 'r': return '\r';
    case 't': return '\t';
    case 'f': return '\f';
    case 'v': return '\v';
    case '0': return 0;
    case 'd': case 'D': src = R_DIGIT; k = 1; break;
    case 'w': case 'W': src = R_WORD; k = 4; break;
    case 's': case 'S': src = R_SPACE; k = 2; break;
    case 'x': case 'u': case 'U': {
        int want = c == 'x' ? 2 : c == 'u' ? 4 : 8;
        long v = 0;
        if (c == 'u' && i < n && s[i] == '{') {
            i++;
            int d = 0;
            while (i < n && hexv(s[i]) >= 0 && d < 8) { v = v * 16 + hexv(s[i++]); d++; }
            if (i >= n || s[i] != '}' || d == 0) return KILN_ERR(err, KILN_ERR_INVALID_ARG, "bad \\u{...} escape at offset %zu", *pos - 2), -2;
            *pos = i + 1;
        } else {
            for (int d = 0; d < want; d++) {
                if (i >= n || hexv(s[i]) < 0)
                    return KILN_ERR(err, KILN_ERR_INVALID_ARG, "bad \\%c escape at offset %zu (%d hex digits)", c, *pos - 2, want), -2;
                v = v * 16 + hexv(s[i++]);
            }
            *pos = i;
        }
        if (v > 0x10FFFF) return KILN_ERR(err, KILN_ERR_INVALID_ARG, "escape beyond U+10FFFF at offset %zu", *pos), -2;
        return v;
    }
    case 'b': case 'B': case 'A': case 'z': case 'Z': case 'G': case 'k': case 'p': case 'P':
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "the escape \\%c (offset %zu) is not supported", c, i - 2), -2;
    default:
        if (c >= '1' && c <= '9')
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "backreferences (\\%c at offset %zu) are not supported", c, i - 2), -2;
        *pos = i - 1;
        return gb_next_cp(s, n, pos);
    }
    memcpy(r, src, (size_t)k * 2 * sizeof(uint32_t));
    *nr = k;
    *neg = c >= 'A' && c <= 'Z';
    return -1;
}

int gb_parse_class(kiln_gb *b, const char *s, size_t n, size_t *pos, int32_t *elem, kiln_error *err) {
    size_t i = *pos + 1, start = *pos;
    int neg = 0;
    if (i < n && s[i] == '^') { neg = 1; i++; }
    uint32_t *r = NULL;
    int nr = 0, cap = 0, first = 1, rc = KILN_OK;
    /* negated escapes inside a class (\D, \S, \W): their complements, computed from the fixed
     * tables, are added as ranges */
    while (1) {
        if (i >= n) { rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "unterminated class '[' at offset %zu", start); break; }
        if (s[i] == ']' && !first) { i++; break; }
        first = 0;
        uint32_t lo, hi, er[8];
        int ne = 0, eneg = 0;
        if (s[i] == '\\') {
            i++;
            long v = gb_parse_escape(s, n, &i, er, &ne, &eneg, err);
            if (v == -2) { rc = err->code; break; }
            if (v == -1) {
                if (nr + 8 > cap) { cap = cap * 2 + 16; uint32_t *t = kiln_realloc(r, (size_t)cap * 2 * sizeof *t); if (!t) { rc = KILN_ERR(err, KILN_ERR_OOM, "out of memory"); break; } r = t; }
                if (!eneg) { memcpy(r + 2 * nr, er, (size_t)ne * 2 * sizeof *er); nr += ne; }
                else { /* complement of the sorted table */
                    uint32_t next = 0;
                    for (int k = 0; k < ne; k++) { if (er[2 * k] > next) { r[2 * nr] = next; r[2 * nr + 1] = er[2 * k] - 1; nr++; } next = er[2 * k + 1] + 1; }
                    r[2 * nr] = next; r[2 * nr + 1] = 0x10FFFF; nr++;
                }
                continue;
            }
            lo = (uint32_t)v;
        } else {
            lo = gb_next_cp(s, n, &i);
        }
        hi = lo;
        if (i + 1 < n && s[i] == '-' && s[i + 1] != ']') {
            i++;
            if (s[i] == '\\') {
                i++;
                long v = gb_parse_escape(s, n, &i, er, &ne, &eneg, err);
                if (v == -2) { rc = err->code; break; }
                if (v == -1) { rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "a class escape as a range end at offset %zu", i); break; }
                hi = (uint32_t)v;
            } else {
                hi = gb_next_cp(s, n, &i);
            }
            if (hi < lo) { rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "reversed range in a class at offset %zu", i); break; }
        }
        if (nr + 1 > cap) { cap = cap * 2 + 16; uint32_t *t = kiln_realloc(r, (size_t)cap * 2 * sizeof *t); if (!t) { rc = KILN_ERR(err, KILN_ERR_OOM, "out of memory"); break; } r = t; }
        r[2 * nr] = lo; r[2 * nr + 1] = hi; nr++;
    }
    if (!rc) {
        *elem = gb_cp_class(b, r, nr, neg);
        *pos = i;
    }
    kiln_free(r);
    return rc;
}

static int parse_alt(kiln_gb *b, int rule, const char *s, size_t n, size_t *pos, char term, int depth, kiln_error *err);

/* one atom at s[*pos] -> elem */
static int parse_atom(kiln_gb *b, const char *s, size_t n, size_t *pos, int depth, int32_t *elem, kiln_error *err) {
    size_t i = *pos;
    char c = s[i];
    if (c == '(') {
        i++;
        if (i < n && s[i] == '?') {
            if (i + 1 < n && s[i + 1] == ':') i += 2;
            else return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "regex: the group '(?' at offset %zu is not supported (only (?:...))", i - 1);
        }
        int r = gb_rule_new(b);
        if (r < 0) return KILN_ERR(err, KILN_ERR_OOM, "out of memory");
        int rc = parse_alt(b, r, s, n, &i, ')', depth + 1, err);
        if (rc) return rc;
        if (i >= n || s[i] != ')') return KILN_ERR(err, KILN_ERR_INVALID_ARG, "regex: unclosed '(' at offset %zu", *pos);
        *pos = i + 1;
        *elem = GB_REF(r);
        return KILN_OK;
    }
    if (c == '[') return gb_parse_class(b, s, n, pos, elem, err);
    if (c == '.') {
        uint32_t nl[2] = {'\n', '\n'};
        *elem = gb_cp_class(b, nl, 1, 1);
        *pos = i + 1;
        return KILN_OK;
    }
    uint32_t cp, er[8];
    if (c == '\\') {
        i++;
        int ne = 0, neg = 0;
        long v = gb_parse_escape(s, n, &i, er, &ne, &neg, err);
        if (v == -2) return err->code;
        if (v == -1) { *elem = gb_cp_class(b, er, ne, neg); *pos = i; return KILN_OK; }
        cp = (uint32_t)v;
    } else if (c == '*' || c == '+' || c == '?' || c == '{') {
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "regex: '%c' with nothing to repeat at offset %zu", c, i);
    } else {
        cp = gb_next_cp(s, n, &i);
    }
    char u[4];
    int k = gb_utf8(cp, u);
    if (k == 1) *elem = gb_byte(b, (uint8_t)u[0]);
    else {
        int r = gb_rule_new(b);
        gb_emit_bytes(b, r, u, (size_t)k);
        *elem = GB_REF(r);
    }
    *pos = i;
    return KILN_OK;
}

/* a quantifier at s[*pos], if any: *min, *max (GB_INF), or min = -1 when none */
static int parse_quant(const char *s, size_t n, size_t *pos, int *min, int *max, kiln_error *err) {
    size_t i = *pos;
    *min = -1;
    if (i >= n) return KILN_OK;
    if (s[i] == '*') { *min = 0; *max = GB_INF; i++; }
    else if (s[i] == '+') { *min = 1; *max = GB_INF; i++; }
    else if (s[i] == '?') { *min = 0; *max = 1; i++; }
    else if (s[i] == '{') {
        size_t j = i + 1;
        long a = 0, z;
        int da = 0;
        while (j < n && s[j] >= '0' && s[j] <= '9' && a < 100000) { a = a * 10 + (s[j++] - '0'); da++; }
        if (!da) return KILN_OK; /* a literal '{' (as Python's re) */
        z = a;
        if (j < n && s[j] == ',') {
            j++;
            int dz = 0;
            z = 0;
            while (j < n && s[j] >= '0' && s[j] <= '9' && z < 100000) { z = z * 10 + (s[j++] - '0'); dz++; }
            if (!dz) z = GB_INF;
        }
        if (j >= n || s[j] != '}') return KILN_OK;
        if (z != GB_INF && z < a) return KILN_ERR(err, KILN_ERR_INVALID_ARG, "repetition {%ld,%ld} with max < min at offset %zu", a, z, i);
        if (a > 4096 || z > 4096) return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "repetition bound over 4096 at offset %zu", i);
        *min = (int)a; *max = (int)z;
        i = j + 1;
    } else return KILN_OK;
    if (i < n && (s[i] == '?' || s[i] == '+')) i++; /* lazy / possessive: the same language */
    *pos = i;
    return KILN_OK;
}

static int parse_alt(kiln_gb *b, int rule, const char *s, size_t n, size_t *pos, char term, int depth, kiln_error *err) {
    if (depth > 200) return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "regex: groups nested deeper than 200");
    size_t i = *pos, start = *pos;
    while (1) {
        if (i >= n || s[i] == term) break;
        if (s[i] == '|') { gb_emit(b, rule, GB_END); i++; continue; }
        if (s[i] == '^' && i == start && depth == 0) { i++; continue; }
        if (s[i] == '$' && (i + 1 == n || s[i + 1] == term)) { i++; continue; }
        if (s[i] == ')' ) return KILN_ERR(err, KILN_ERR_INVALID_ARG, "regex: unbalanced ')' at offset %zu", i);
        int32_t elem;
        int rc = parse_atom(b, s, n, &i, depth, &elem, err);
        if (rc) return rc;
        int mn, mx;
        if ((rc = parse_quant(s, n, &i, &mn, &mx, err))) return rc;
        if (mn < 0) gb_emit(b, rule, elem);
        else gb_repeat(b, rule, elem, mn, mx);
        if (b->oom) return gb_fail(b, err);
    }
    gb_emit(b, rule, GB_END);
    *pos = i;
    return b->oom ? gb_fail(b, err) : KILN_OK;
}

int gb_parse_regex(kiln_gb *b, int rule, const char *s, size_t n, size_t *pos, char term, kiln_error *err) {
    int rc = parse_alt(b, rule, s, n, pos, term, 0, err);
    if (!rc && term == 0 && *pos < n) rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "regex: unbalanced ')' at offset %zu", *pos);
    return rc;
}

int kiln_gram_from_regex(kiln_gram *g, const char *re, size_t len, kiln_error *err) {
    kiln_gb b;
    memset(&b, 0, sizeof b);
    memset(g, 0, sizeof *g);
    int root = gb_rule_new(&b);
    if (root < 0) return KILN_ERR(err, KILN_ERR_OOM, "out of memory");
    size_t pos = 0;
    int rc = gb_parse_regex(&b, root, re, len, &pos, 0, err);
    if (!rc) rc = gb_finish(&b, root, g, err);
    if (rc) kiln_err_prefix(err, "regex: ");
    gb_free(&b);
    return rc;
}
