/* gbnf.c: GBNF text (llama.cpp's grammar format) -> grammar.
 *
 *   root  ::= "{" ws pair ("," ws pair)* "}"      # comment
 *   pair  ::= [a-z]+ ":" [0-9]{1,3} | "null"
 * Rules `name ::= alternatives` (names of letters, digits, '-' and '_'; the start rule is root);
 * a rule runs until the next `name ::=`. Elements: "literal" (escapes \n \r \t \\ \" \xHH
 * \uHHHH \UHHHHHHHH), [class] and [^class], `.` (any codepoint), rule names, ( groups ),
 * postfix * + ? {m} {m,} {m,n}, and /regex/ terminals (Lark's and xgrammar's EBNF write
 * them so; regex.c's syntax). xgrammar's EBNF (W3C style, `::=`) is the same language.
 */
#include <ctype.h>
#include <string.h>
#include "grammar/gram_build.h"
#include "util/error.h"

typedef struct {
    kiln_gb *b;
    const char *s;
    size_t n, i;
    kiln_error *err;
} gp;

static void skip_ws(gp *p) {
    while (p->i < p->n) {
        char c = p->s[p->i];
        if (c == '#') { while (p->i < p->n && p->s[p->i] != '\n') p->i++; }
        else if (c == ' ' || c == '\t' || c == '\n' || c == '\r') p->i++;
        else break;
    }
}

static int is_name(char c) { return isalnum((unsigned char)c) || c == '-' || c == '_'; }

/* at a rule head `name ::=`? *len gets the name's length */
static int at_head(const gp *p, size_t *len) {
    size_t j = p->i;
    while (j < p->n && is_name(p->s[j])) j++;
    if (j == p->i) return 0;
    *len = j - p->i;
    while (j < p->n && (p->s[j] == ' ' || p->s[j] == '\t')) j++;
    return j + 3 <= p->n && !memcmp(p->s + j, "::=", 3);
}

static int parse_alts(gp *p, int rule, int depth);

static int parse_literal(gp *p, int32_t *elem) {
    size_t start = p->i++;
    int r = gb_rule_new(p->b);
    int count = 0;
    int32_t last = 0;
    while (1) {
        if (p->i >= p->n || p->s[p->i] == '\n') return KILN_ERR(p->err, KILN_ERR_INVALID_ARG, "unterminated string at offset %zu", start);
        if (p->s[p->i] == '"') { p->i++; break; }
        uint32_t cp;
        if (p->s[p->i] == '\\') {
            p->i++;
            uint32_t er[8];
            int ne, neg;
            long v = gb_parse_escape(p->s, p->n, &p->i, er, &ne, &neg, p->err);
            if (v == -2) return p->err->code;
            if (v == -1) return KILN_ERR(p->err, KILN_ERR_INVALID_ARG, "a class escape inside a string at offset %zu", p->i);
            cp = (uint32_t)v;
        } else cp = gb_next_cp(p->s, p->n, &p->i);
        char u[4];
        int k = gb_utf8(cp, u);
        for (int j = 0; j < k; j++) { last = gb_byte(p->b, (uint8_t)u[j]); gb_emit(p->b, r, last); count++; }
    }
    gb_emit(p->b, r, GB_END);
    *elem = count == 1 ? last : GB_REF(r); /* "" is an empty rule */
    return KILN_OK;
}

static int parse_quant(gp *p, int *min, int *max) {
    *min = -1;
    if (p->i >= p->n) return KILN_OK;
    char c = p->s[p->i];
    if (c == '*') { *min = 0; *max = GB_INF; p->i++; }
    else if (c == '+') { *min = 1; *max = GB_INF; p->i++; }
    else if (c == '?') { *min = 0; *max = 1; p->i++; }
    else if (c == '{') {
        size_t j = p->i + 1;
        long a = 0, z;
        while (j < p->n && p->s[j] == ' ') j++;
        if (j >= p->n || !isdigit((unsigned char)p->s[j])) return KILN_ERR(p->err, KILN_ERR_INVALID_ARG, "bad repetition at offset %zu", p->i);
        while (j < p->n && isdigit((unsigned char)p->s[j]) && a < 100000) a = a * 10 + (p->s[j++] - '0');
        while (j < p->n && p->s[j] == ' ') j++;
        z = a;
        if (j < p->n && p->s[j] == ',') {
            j++;
            while (j < p->n && p->s[j] == ' ') j++;
            if (j < p->n && isdigit((unsigned char)p->s[j])) { z = 0; while (j < p->n && isdigit((unsigned char)p->s[j]) && z < 100000) z = z * 10 + (p->s[j++] - '0'); }
            else z = GB_INF;
        }
        while (j < p->n && p->s[j] == ' ') j++;
        if (j >= p->n || p->s[j] != '}') return KILN_ERR(p->err, KILN_ERR_INVALID_ARG, "bad repetition at offset %zu", p->i);
        if (z != GB_INF && z < a) return KILN_ERR(p->err, KILN_ERR_INVALID_ARG, "repetition with max < min at offset %zu", p->i);
        if (a > 4096 || z > 4096) return KILN_ERR(p->err, KILN_ERR_UNSUPPORTED, "repetition bound over 4096 at offset %zu", p->i);
        *min = (int)a; *max = (int)z;
        p->i = j + 1;
    }
    return KILN_OK;
}

/* a sequence into rule, up to '|', ')' or the next rule head */
static int parse_seq(gp *p, int rule, int depth) {
    while (1) {
        skip_ws(p);
        size_t nl;
        if (p->i >= p->n || p->s[p->i] == '|' || p->s[p->i] == ')' || (depth == 0 && at_head(p, &nl))) return KILN_OK;
        char c = p->s[p->i];
        int32_t elem;
        int rc = KILN_OK;
        if (c == '"') rc = parse_literal(p, &elem);
        else if (c == '[') rc = gb_parse_class(p->b, p->s, p->n, &p->i, &elem, p->err);
        else if (c == '.') { uint32_t none[2] = {1, 0}; elem = gb_cp_class(p->b, none, 0, 1); p->i++; }
        else if (c == '(') {
            size_t start = p->i++;
            int r = gb_rule_new(p->b);
            if ((rc = parse_alts(p, r, depth + 1))) return rc;
            skip_ws(p);
            if (p->i >= p->n || p->s[p->i] != ')') return KILN_ERR(p->err, KILN_ERR_INVALID_ARG, "unclosed '(' at offset %zu", start);
            p->i++;
            elem = GB_REF(r);
        } else if (c == '/') {
            p->i++;
            int r = gb_rule_new(p->b);
            if ((rc = gb_parse_regex(p->b, r, p->s, p->n, &p->i, '/', p->err))) return rc;
            if (p->i >= p->n) return KILN_ERR(p->err, KILN_ERR_INVALID_ARG, "unterminated /regex/");
            p->i++;
            elem = GB_REF(r);
        } else if (is_name(c)) {
            size_t j = p->i;
            while (j < p->n && is_name(p->s[j])) j++;
            int r = gb_rule_named(p->b, p->s + p->i, j - p->i);
            if (r < 0) return KILN_ERR(p->err, KILN_ERR_OOM, "out of memory");
            p->i = j;
            elem = GB_REF(r);
        } else {
            return KILN_ERR(p->err, KILN_ERR_INVALID_ARG, "unexpected '%c' at offset %zu", c, p->i);
        }
        if (rc) return rc;
        int mn, mx;
        if ((rc = parse_quant(p, &mn, &mx))) return rc;
        if (mn < 0) gb_emit(p->b, rule, elem);
        else gb_repeat(p->b, rule, elem, mn, mx);
        if (p->b->oom) return gb_fail(p->b, p->err);
    }
}

static int parse_alts(gp *p, int rule, int depth) {
    if (depth > 200) return KILN_ERR(p->err, KILN_ERR_UNSUPPORTED, "groups nested deeper than 200");
    while (1) {
        int rc = parse_seq(p, rule, depth);
        if (rc) return rc;
        gb_emit(p->b, rule, GB_END);
        if (p->i < p->n && p->s[p->i] == '|') { p->i++; continue; }
        return KILN_OK;
    }
}

int kiln_gram_from_gbnf(kiln_gram *g, const char *text, size_t len, kiln_error *err) {
    kiln_gb b;
    memset(&b, 0, sizeof b);
    memset(g, 0, sizeof *g);
    gp p = {&b, text, len, 0, err};
    int rc = KILN_OK;
    while (!rc) {
        skip_ws(&p);
        if (p.i >= p.n) break;
        size_t nl;
        if (!at_head(&p, &nl)) { rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "expected `name ::=` at offset %zu", p.i); break; }
        int r = gb_rule_named(&b, text + p.i, nl);
        if (r < 0) { rc = KILN_ERR(err, KILN_ERR_OOM, "out of memory"); break; }
        if (b.rules[r].defined) { rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "rule '%s' is defined twice", b.rules[r].name); break; }
        b.rules[r].defined = 1;
        p.i += nl;
        while (p.s[p.i] != ':') p.i++;
        p.i += 3;
        rc = parse_alts(&p, r, 0);
        if (!rc && p.i < p.n && p.s[p.i] == ')') rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "unbalanced ')' at offset %zu", p.i);
        if (rc && b.rules[r].name) kiln_err_prefix(err, "rule '%s': ", b.rules[r].name);
    }
    int root = -1;
    for (int i = 0; !rc && i < b.n_rules; i++)
        if (b.rules[i].name && !strcmp(b.rules[i].name, "root")) root = i;
    if (!rc && root < 0) rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "no rule 'root'");
    if (!rc) rc = gb_finish(&b, root, g, err);
    if (rc) kiln_err_prefix(err, "grammar: ");
    gb_free(&b);
    return rc;
}
