/* json_schema.c: JSON Schema -> GBNF text (then gbnf.c), and choice lists.
 *
 * Output JSON is compact: at most one space after '{', '[', ':' and ',' (a small model at
 * temperature 1 otherwise fills whitespace until max_tokens). Supported: type (one or a list),
 * properties (in the schema's order; required ones always, the others optional), required,
 * additionalProperties (true / false / absent: no property beyond `properties` is generated, which
 * satisfies both), items, minItems, maxItems, enum, const, anyOf, oneOf (as anyOf: exclusivity is
 * not enforced), allOf of one schema, $ref to #/$defs/.. or #/definitions/.. (recursion allowed),
 * strings with minLength / maxLength or pattern (a full match over the characters between the
 * quotes; a pattern must not produce '"' or '\\' unescaped), integers with minimum / maximum /
 * exclusiveMinimum / exclusiveMaximum (exact digit ranges), numbers with integer-valued minimum /
 * maximum (no exponent then). Annotations (title, description, default, examples, $schema, $id,
 * $comment) are ignored. Any other keyword is KILN_ERR_UNSUPPORTED naming it and its JSON
 * pointer: never silently unconstrained.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "grammar/grammar.h"
#include "util/alloc.h"
#include "util/buf.h"
#include "util/error.h"

typedef struct {
    kiln_buf out;     /* the rules */
    const char *p;    /* rule prefix */
    json_t *root;
    int n;            /* anonymous rules */
    kiln_buf done;    /* "\n"-separated $ref names already emitted */
    kiln_error *err;
    int depth;
} js;

static int gen(js *c, json_t *s, const char *ptr, kiln_buf *e);

static const char *const KNOWN[] = {"type", "properties", "required", "additionalProperties", "items", "minItems",
                                    "maxItems", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs",
                                    "definitions", "minLength", "maxLength", "pattern", "minimum", "maximum",
                                    "exclusiveMinimum", "exclusiveMaximum", "title", "description", "default",
                                    "examples", "$schema", "$id", "$comment", NULL};

static void lit(kiln_buf *b, const char *s, size_t n) {
    kiln_buf_addc(b, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') { kiln_buf_addc(b, '\\'); kiln_buf_addc(b, (char)ch); }
        else if (ch < 0x20 || ch == 0x7f) kiln_buf_addf(b, "\\x%02x", ch);
        else kiln_buf_addc(b, (char)ch);
    }
    kiln_buf_addc(b, '"');
}

static int json_lit(js *c, json_t *v, kiln_buf *e) {
    char *t = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    if (!t) return KILN_ERR(c->err, KILN_ERR_OOM, "out of memory");
    lit(e, t, strlen(t));
    free(t);
    return KILN_OK;
}

static int new_rule(js *c, const char *body) {
    int id = c->n++;
    kiln_buf_addf(&c->out, "%sr%d ::= %s\n", c->p, id, body);
    return id;
}

/* ---- integer ranges as digit patterns -------------------------------------------------- */

/* [x, y], both of n digits (leading zeros allowed) */
static void fixed_range(kiln_buf *e, const char *x, const char *y, int n) {
    if (n == 0) return;
    int all0 = 1, all9 = 1;
    for (int i = 1; i < n; i++) { all0 &= x[i] == '0'; all9 &= y[i] == '9'; }
    if (x[0] == y[0]) {
        kiln_buf_addf(e, "\"%c\" ", x[0]);
        fixed_range(e, x + 1, y + 1, n - 1);
        return;
    }
    if (all0 && all9) {
        kiln_buf_addf(e, "[%c-%c]", x[0], y[0]);
        if (n > 1) kiln_buf_addf(e, " [0-9]{%d}", n - 1);
        kiln_buf_addc(e, ' ');
        return;
    }
    char nines[24], zeros[24];
    memset(nines, '9', sizeof nines);
    memset(zeros, '0', sizeof zeros);
    kiln_buf_addf(e, "(\"%c\" ", x[0]);
    fixed_range(e, x + 1, nines, n - 1);
    if (y[0] - x[0] >= 2) {
        kiln_buf_addf(e, "| [%c-%c]", x[0] + 1, y[0] - 1);
        if (n > 1) kiln_buf_addf(e, " [0-9]{%d}", n - 1);
        kiln_buf_addc(e, ' ');
    }
    kiln_buf_addf(e, "| \"%c\" ", y[0]);
    fixed_range(e, zeros, y + 1, n - 1);
    kiln_buf_adds(e, ") ");
}

/* non-negative integers in [a, b] without leading zeros; b < 0: unbounded above */
static void nonneg_range(kiln_buf *e, long long a, long long b) {
    kiln_buf_adds(e, "(");
    int first = 1;
    long long lo = a;
    for (int nd = 1; nd <= 18; nd++) {
        long long dmin = nd == 1 ? 0 : 1, dmax = 9;
        for (int i = 1; i < nd; i++) { dmin *= 10; dmax = dmax * 10 + 9; }
        if (b >= 0 && dmin > b) break;
        if (dmax < lo) continue;
        long long x = lo > dmin ? lo : dmin, y = (b >= 0 && b < dmax) ? b : dmax;
        if (!first) kiln_buf_adds(e, "| ");
        first = 0;
        char xs[24], ys[24];
        snprintf(xs, sizeof xs, "%lld", x);
        snprintf(ys, sizeof ys, "%lld", y);
        fixed_range(e, xs, ys, nd);
        if (b < 0 && nd == 18) break;
    }
    if (first) kiln_buf_adds(e, "[^\\x00-\\U0010FFFF]"); /* empty: matches nothing */
    kiln_buf_adds(e, ")");
}

/* integers in [lo, hi] (has_lo / has_hi: bounded) */
static void int_range(kiln_buf *e, int has_lo, long long lo, int has_hi, long long hi) {
    kiln_buf_adds(e, "(");
    int alt = 0;
    if (!has_lo || lo < 0) { /* negatives: magnitudes [max(1, -hi), -lo] */
        long long mlo = has_hi && hi < 0 ? -hi : 1, mhi = has_lo ? -lo : -1;
        kiln_buf_adds(e, "\"-\" ");
        nonneg_range(e, mlo, mhi);
        alt = 1;
    }
    if (!has_hi || hi >= 0) {
        if (alt) kiln_buf_adds(e, " | ");
        nonneg_range(e, has_lo && lo > 0 ? lo : 0, has_hi ? hi : -1);
    }
    kiln_buf_adds(e, ")");
}

static int get_int(js *c, json_t *v, const char *kw, const char *ptr, long long *out) {
    double d = json_number_value(v);
    if (!json_is_number(v) || d != floor(d) || fabs(d) > 1e17)
        return KILN_ERR(c->err, KILN_ERR_UNSUPPORTED, "json_schema: '%s' at %s must be an integer within 1e17 here", kw, ptr);
    *out = (long long)d;
    return KILN_OK;
}

static int gen_number(js *c, json_t *s, const char *ptr, int integer, kiln_buf *e) {
    json_t *mn = json_object_get(s, "minimum"), *mx = json_object_get(s, "maximum");
    json_t *xmn = json_object_get(s, "exclusiveMinimum"), *xmx = json_object_get(s, "exclusiveMaximum");
    long long lo = 0, hi = 0;
    int has_lo = 0, has_hi = 0, rc;
    if (!integer && (xmn || xmx))
        return KILN_ERR(c->err, KILN_ERR_UNSUPPORTED, "json_schema: exclusiveMinimum / exclusiveMaximum on a number at %s (integers only)", ptr);
    if (mn) { if ((rc = get_int(c, mn, "minimum", ptr, &lo))) return rc; has_lo = 1; }
    if (mx) { if ((rc = get_int(c, mx, "maximum", ptr, &hi))) return rc; has_hi = 1; }
    long long t;
    if (xmn) { if ((rc = get_int(c, xmn, "exclusiveMinimum", ptr, &t))) return rc; if (!has_lo || t + 1 > lo) lo = t + 1; has_lo = 1; }
    if (xmx) { if ((rc = get_int(c, xmx, "exclusiveMaximum", ptr, &t))) return rc; if (!has_hi || t - 1 < hi) hi = t - 1; has_hi = 1; }
    if (has_lo && has_hi && lo > hi) return KILN_ERR(c->err, KILN_ERR_INVALID_ARG, "json_schema: empty range at %s", ptr);
    if (integer) {
        if (!has_lo && !has_hi) kiln_buf_addf(e, "%sint", c->p);
        else int_range(e, has_lo, lo, has_hi, hi);
        return KILN_OK;
    }
    if (!has_lo && !has_hi) { kiln_buf_addf(e, "%snumber", c->p); return KILN_OK; }
    /* a number in [lo, hi]: an integer part strictly inside the bounds with any fraction, or
     * a bound itself (then no fraction) */
    const char *frac = "(\".\" [0-9]{1,15})?";
    kiln_buf_adds(e, "(");
    int alt = 0;
    if (!has_lo || lo < 0) { /* negative values: magnitude int part in [max(0, -hi), -lo - 1] + fraction, or -lo */
        long long mlo = has_hi && hi < 0 ? -hi : 0, mhi = has_lo ? -lo - 1 : -1;
        if (!has_lo || mhi >= mlo) {
            kiln_buf_adds(e, "\"-\" ");
            nonneg_range(e, mlo, mhi);
            kiln_buf_addf(e, " %s", frac);
            alt = 1;
        }
        if (has_lo) { kiln_buf_addf(e, "%s\"-%lld\"", alt ? " | " : "", -lo); alt = 1; }
    }
    if (!has_hi || hi >= 0) {
        long long plo = has_lo && lo > 0 ? lo : 0, phi = has_hi ? hi - 1 : -1;
        if (!has_hi || phi >= plo) {
            if (alt) kiln_buf_adds(e, " | ");
            nonneg_range(e, plo, phi);
            kiln_buf_addf(e, " %s", frac);
            alt = 1;
        }
        if (has_hi) kiln_buf_addf(e, "%s\"%lld\"", alt ? " | " : "", hi);
    }
    kiln_buf_adds(e, ")");
    return KILN_OK;
}

static int gen_string(js *c, json_t *s, const char *ptr, kiln_buf *e) {
    json_t *mn = json_object_get(s, "minLength"), *mx = json_object_get(s, "maxLength"), *pat = json_object_get(s, "pattern");
    long long lo = 0, hi = -1;
    int rc;
    if (pat) {
        if (mn || mx) return KILN_ERR(c->err, KILN_ERR_UNSUPPORTED, "json_schema: pattern together with minLength/maxLength at %s", ptr);
        if (!json_is_string(pat)) return KILN_ERR(c->err, KILN_ERR_INVALID_ARG, "json_schema: pattern at %s is not a string", ptr);
        const char *p = json_string_value(pat);
        kiln_buf_adds(e, "\"\\\"\" /");
        for (const char *q = p; *q; q++) {
            if (*q == '\\' && q[1]) { kiln_buf_addc(e, *q++); kiln_buf_addc(e, *q); continue; }
            if (*q == '/') kiln_buf_addc(e, '\\');
            kiln_buf_addc(e, *q);
        }
        kiln_buf_adds(e, "/ \"\\\"\"");
        return KILN_OK;
    }
    if (mn && (rc = get_int(c, mn, "minLength", ptr, &lo))) return rc;
    if (mx && (rc = get_int(c, mx, "maxLength", ptr, &hi))) return rc;
    if (lo < 0 || (mx && hi < lo)) return KILN_ERR(c->err, KILN_ERR_INVALID_ARG, "json_schema: bad string length bounds at %s", ptr);
    if (lo > 4096 || hi > 4096) return KILN_ERR(c->err, KILN_ERR_UNSUPPORTED, "json_schema: string length bound over 4096 at %s", ptr);
    if (!mn && !mx) { kiln_buf_addf(e, "%sstring", c->p); return KILN_OK; }
    if (hi < 0) kiln_buf_addf(e, "(\"\\\"\" %schar{%lld,} \"\\\"\")", c->p, lo);
    else kiln_buf_addf(e, "(\"\\\"\" %schar{%lld,%lld} \"\\\"\")", c->p, lo, hi);
    return KILN_OK;
}

static int gen_object(js *c, json_t *s, const char *ptr, kiln_buf *e) {
    json_t *props = json_object_get(s, "properties"), *req = json_object_get(s, "required");
    json_t *ap = json_object_get(s, "additionalProperties");
    if (ap && !json_is_boolean(ap))
        return KILN_ERR(c->err, KILN_ERR_UNSUPPORTED, "json_schema: additionalProperties as a schema at %s", ptr);
    if (props && !json_is_object(props)) return KILN_ERR(c->err, KILN_ERR_INVALID_ARG, "json_schema: properties at %s is not an object", ptr);
    if (req && !json_is_array(req)) return KILN_ERR(c->err, KILN_ERR_INVALID_ARG, "json_schema: required at %s is not an array", ptr);
    size_t np = props ? json_object_size(props) : 0;
    if (np == 0) {
        if (ap && json_is_false(ap)) kiln_buf_adds(e, "(\"{\" \"}\")");
        else kiln_buf_addf(e, "%sobject", c->p);
        return KILN_OK;
    }
    /* required names must be properties */
    for (size_t i = 0; req && i < json_array_size(req); i++) {
        const char *r = json_string_value(json_array_get(req, i));
        if (!r || !json_object_get(props, r))
            return KILN_ERR(c->err, KILN_ERR_UNSUPPORTED, "json_schema: required '%s' at %s is not in properties", r ? r : "?", ptr);
    }
    /* kv_i rules, then first_i / rest_i from the end (first_n and rest_n are empty) */
    int *kv = kiln_malloc(np * sizeof *kv), *isreq = kiln_calloc(np, sizeof *isreq);
    if (!kv || !isreq) { kiln_free(kv); kiln_free(isreq); return KILN_ERR(c->err, KILN_ERR_OOM, "out of memory"); }
    const char *key;
    json_t *sub;
    size_t i = 0;
    int rc = KILN_OK;
    json_object_foreach(props, key, sub) {
        for (size_t k = 0; req && k < json_array_size(req); k++)
            if (!strcmp(json_string_value(json_array_get(req, k)), key)) isreq[i] = 1;
        kiln_buf v = {0}, body = {0};
        char sp[512];
        snprintf(sp, sizeof sp, "%s/properties/%s", ptr, key);
        if ((rc = gen(c, sub, sp, &v))) { kiln_buf_free(&v); break; }
        json_t *ks = json_string(key);
        char *kt = json_dumps(ks, JSON_ENCODE_ANY | JSON_COMPACT);
        json_decref(ks);
        if (!kt) { kiln_buf_free(&v); rc = KILN_ERR(c->err, KILN_ERR_OOM, "out of memory"); break; }
        lit(&body, kt, strlen(kt));
        free(kt);
        kiln_buf_addf(&body, " \":\" %sws %s", c->p, v.p ? v.p : "");
        kv[i] = new_rule(c, body.p);
        kiln_buf_free(&v);
        kiln_buf_free(&body);
        i++;
    }
    if (!rc) {
        /* rest_i: after something was written; first_i: nothing yet */
        int rest_next = -1, first_next = -1;
        for (size_t k = np; k-- > 0;) {
            kiln_buf b1 = {0}, b2 = {0};
            char rn[64] = "", fn[64] = "";
            if (rest_next >= 0) snprintf(rn, sizeof rn, " %sr%d", c->p, rest_next);
            if (first_next >= 0) snprintf(fn, sizeof fn, "%sr%d", c->p, first_next);
            if (isreq[k]) kiln_buf_addf(&b1, "\",\" %sws %sr%d%s", c->p, c->p, kv[k], rn);
            else kiln_buf_addf(&b1, "(\",\" %sws %sr%d)?%s", c->p, c->p, kv[k], rn);
            if (isreq[k]) kiln_buf_addf(&b2, "%sr%d%s", c->p, kv[k], rn);
            else kiln_buf_addf(&b2, "%sr%d%s | %s", c->p, kv[k], rn, first_next >= 0 ? fn : "\"\"");
            int r1 = new_rule(c, b1.p), r2 = new_rule(c, b2.p);
            kiln_buf_free(&b1);
            kiln_buf_free(&b2);
            rest_next = r1;
            first_next = r2;
        }
        kiln_buf_addf(e, "(\"{\" %sws %sr%d \"}\")", c->p, c->p, first_next);
    }
    kiln_free(kv);
    kiln_free(isreq);
    return rc;
}

static int gen_array(js *c, json_t *s, const char *ptr, kiln_buf *e) {
    json_t *items = json_object_get(s, "items"), *mn = json_object_get(s, "minItems"), *mx = json_object_get(s, "maxItems");
    long long lo = 0, hi = -1;
    int rc;
    if (mn && (rc = get_int(c, mn, "minItems", ptr, &lo))) return rc;
    if (mx && (rc = get_int(c, mx, "maxItems", ptr, &hi))) return rc;
    if (lo < 0 || (mx && hi < lo) || lo > 1024 || hi > 1024)
        return KILN_ERR(c->err, KILN_ERR_UNSUPPORTED, "json_schema: array bounds at %s (0 <= minItems <= maxItems <= 1024)", ptr);
    kiln_buf it = {0};
    char sp[512];
    snprintf(sp, sizeof sp, "%s/items", ptr);
    if (items) { if ((rc = gen(c, items, sp, &it))) { kiln_buf_free(&it); return rc; } }
    else kiln_buf_addf(&it, "%svalue", c->p);
    int ir = new_rule(c, it.p);
    kiln_buf_free(&it);
    if (mx && hi == 0) { kiln_buf_adds(e, "(\"[\" \"]\")"); return KILN_OK; }
    char rep[64];
    long long rlo = lo > 0 ? lo - 1 : 0;
    if (hi < 0) snprintf(rep, sizeof rep, "{%lld,}", rlo);
    else snprintf(rep, sizeof rep, "{%lld,%lld}", rlo, hi - 1);
    kiln_buf_addf(e, "(\"[\" %sws (%sr%d (\",\" %sws %sr%d)%s)%s \"]\")", c->p, c->p, ir, c->p, c->p, ir, rep, lo > 0 ? "" : "?");
    return KILN_OK;
}

static int gen_ref(js *c, const char *ref, const char *ptr, kiln_buf *e) {
    const char *name = NULL;
    json_t *defs = NULL;
    if (!strncmp(ref, "#/$defs/", 8)) { name = ref + 8; defs = json_object_get(c->root, "$defs"); }
    else if (!strncmp(ref, "#/definitions/", 14)) { name = ref + 14; defs = json_object_get(c->root, "definitions"); }
    else if (!strcmp(ref, "#")) { name = ""; }
    if (!name) return KILN_ERR(c->err, KILN_ERR_UNSUPPORTED, "json_schema: $ref '%s' at %s (only #, #/$defs/.. and #/definitions/..)", ref, ptr);
    json_t *target = name[0] ? json_object_get(defs, name) : c->root;
    if (!target || strchr(name, '/')) return KILN_ERR(c->err, KILN_ERR_INVALID_ARG, "json_schema: $ref '%s' at %s names nothing", ref, ptr);
    /* rule name from the ref: letters and digits kept, others as '-' */
    char rn[256];
    size_t k = 0;
    for (const char *q = name; *q && k < 200; q++) rn[k++] = (char)((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') ? *q : '-');
    rn[k] = 0;
    char full[320];
    snprintf(full, sizeof full, "%sdef-%s-%zu", c->p, rn, strlen(name));
    kiln_buf_adds(e, full);
    /* emitted already? */
    char needle[330];
    snprintf(needle, sizeof needle, "\n%s\n", full);
    if (c->done.p && strstr(c->done.p, needle)) return KILN_OK;
    if (!c->done.len) kiln_buf_addc(&c->done, '\n');
    kiln_buf_adds(&c->done, full + 0);
    kiln_buf_addc(&c->done, '\n');
    kiln_buf body = {0};
    int rc = gen(c, target, ref, &body);
    if (!rc) kiln_buf_addf(&c->out, "%s ::= %s\n", full, body.p ? body.p : "\"\"");
    kiln_buf_free(&body);
    return rc;
}

static int gen_typed(js *c, json_t *s, const char *type, const char *ptr, kiln_buf *e) {
    if (!strcmp(type, "string")) return gen_string(c, s, ptr, e);
    if (!strcmp(type, "integer")) return gen_number(c, s, ptr, 1, e);
    if (!strcmp(type, "number")) return gen_number(c, s, ptr, 0, e);
    if (!strcmp(type, "boolean")) { kiln_buf_addf(e, "%sbool", c->p); return KILN_OK; }
    if (!strcmp(type, "null")) { kiln_buf_adds(e, "\"null\""); return KILN_OK; }
    if (!strcmp(type, "object")) return gen_object(c, s, ptr, e);
    if (!strcmp(type, "array")) return gen_array(c, s, ptr, e);
    return KILN_ERR(c->err, KILN_ERR_UNSUPPORTED, "json_schema: unknown type '%s' at %s", type, ptr);
}

static int gen(js *c, json_t *s, const char *ptr, kiln_buf *e) {
    if (++c->depth > 64) return KILN_ERR(c->err, KILN_ERR_UNSUPPORTED, "json_schema: nested deeper than 64 at %s", ptr);
    int rc = KILN_OK;
    if (json_is_true(s)) { kiln_buf_addf(e, "%svalue", c->p); goto out; }
    if (!json_is_object(s)) { rc = KILN_ERR(c->err, KILN_ERR_UNSUPPORTED, "json_schema: the schema at %s is not an object (false or another value)", ptr); goto out; }
    const char *key;
    json_t *v;
    json_object_foreach(s, key, v) {
        int ok = 0;
        for (int i = 0; KNOWN[i]; i++) ok |= !strcmp(KNOWN[i], key);
        if (!ok) { rc = KILN_ERR(c->err, KILN_ERR_UNSUPPORTED, "json_schema: unsupported keyword '%s' at %s", key, ptr[0] ? ptr : "/"); goto out; }
    }
    json_t *t;
    char sp[512];
    if ((t = json_object_get(s, "$ref"))) {
        if (!json_is_string(t)) { rc = KILN_ERR(c->err, KILN_ERR_INVALID_ARG, "json_schema: $ref at %s is not a string", ptr); goto out; }
        rc = gen_ref(c, json_string_value(t), ptr, e);
        goto out;
    }
    if ((t = json_object_get(s, "const"))) { rc = json_lit(c, t, e); goto out; }
    if ((t = json_object_get(s, "enum"))) {
        if (!json_is_array(t) || !json_array_size(t)) { rc = KILN_ERR(c->err, KILN_ERR_INVALID_ARG, "json_schema: enum at %s is not a non-empty array", ptr); goto out; }
        kiln_buf_adds(e, "(");
        for (size_t i = 0; i < json_array_size(t) && !rc; i++) {
            if (i) kiln_buf_adds(e, " | ");
            rc = json_lit(c, json_array_get(t, i), e);
        }
        kiln_buf_adds(e, ")");
        goto out;
    }
    const char *comb = json_object_get(s, "anyOf") ? "anyOf" : json_object_get(s, "oneOf") ? "oneOf" : json_object_get(s, "allOf") ? "allOf" : NULL;
    if (comb) {
        t = json_object_get(s, comb);
        if (!json_is_array(t) || !json_array_size(t)) { rc = KILN_ERR(c->err, KILN_ERR_INVALID_ARG, "json_schema: %s at %s is not a non-empty array", comb, ptr); goto out; }
        if (!strcmp(comb, "allOf") && json_array_size(t) != 1) { rc = KILN_ERR(c->err, KILN_ERR_UNSUPPORTED, "json_schema: allOf of more than one schema at %s", ptr); goto out; }
        kiln_buf_adds(e, "(");
        for (size_t i = 0; i < json_array_size(t) && !rc; i++) {
            if (i) kiln_buf_adds(e, " | ");
            snprintf(sp, sizeof sp, "%s/%s/%zu", ptr, comb, i);
            rc = gen(c, json_array_get(t, i), sp, e);
        }
        kiln_buf_adds(e, ")");
        goto out;
    }
    t = json_object_get(s, "type");
    if (json_is_string(t)) { rc = gen_typed(c, s, json_string_value(t), ptr, e); goto out; }
    if (json_is_array(t)) {
        kiln_buf_adds(e, "(");
        for (size_t i = 0; i < json_array_size(t) && !rc; i++) {
            const char *ty = json_string_value(json_array_get(t, i));
            if (!ty) { rc = KILN_ERR(c->err, KILN_ERR_INVALID_ARG, "json_schema: type at %s", ptr); break; }
            if (i) kiln_buf_adds(e, " | ");
            rc = gen_typed(c, s, ty, ptr, e);
        }
        kiln_buf_adds(e, ")");
        goto out;
    }
    if (t) { rc = KILN_ERR(c->err, KILN_ERR_INVALID_ARG, "json_schema: type at %s is neither a string nor a list", ptr); goto out; }
    if (json_object_get(s, "properties")) { rc = gen_object(c, s, ptr, e); goto out; }
    if (json_object_get(s, "items")) { rc = gen_array(c, s, ptr, e); goto out; }
    kiln_buf_addf(e, "%svalue", c->p);
out:
    c->depth--;
    return rc;
}

static void base_rules(kiln_buf *b, const char *p) {
    kiln_buf_addf(b, "%sws ::= \" \"?\n", p);
    kiln_buf_addf(b, "%schar ::= [^\"\\\\\\x00-\\x1f] | \"\\\\\" ([\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4})\n", p);
    kiln_buf_addf(b, "%sstring ::= \"\\\"\" %schar* \"\\\"\"\n", p, p);
    kiln_buf_addf(b, "%sint ::= \"-\"? (\"0\" | [1-9] [0-9]{0,15})\n", p);
    kiln_buf_addf(b, "%snumber ::= %sint (\".\" [0-9]{1,15})? ([eE] [-+]? [0-9]{1,3})?\n", p, p);
    kiln_buf_addf(b, "%sbool ::= \"true\" | \"false\"\n", p);
    kiln_buf_addf(b, "%svalue ::= %sobject | %sarray | %sstring | %snumber | %sbool | \"null\"\n", p, p, p, p, p, p);
    kiln_buf_addf(b, "%sobject ::= \"{\" %sws (%sstring \":\" %sws %svalue (\",\" %sws %sstring \":\" %sws %svalue)*)? \"}\"\n",
                  p, p, p, p, p, p, p, p, p);
    kiln_buf_addf(b, "%sarray ::= \"[\" %sws (%svalue (\",\" %sws %svalue)*)? \"]\"\n", p, p, p, p, p);
}

int kiln_json_schema_to_gbnf(const char *schema, const char *prefix, char **out, kiln_error *err) {
    *out = NULL;
    js c;
    memset(&c, 0, sizeof c);
    c.p = prefix ? prefix : "";
    c.err = err;
    base_rules(&c.out, c.p);
    kiln_buf root = {0};
    int rc = KILN_OK;
    if (!schema) {
        kiln_buf_addf(&root, "%sobject", c.p);
    } else {
        json_error_t je;
        c.root = json_loads(schema, JSON_DECODE_ANY, &je);
        if (!c.root) rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "json_schema: not JSON (%s, line %d)", je.text, je.line);
        else rc = gen(&c, c.root, "", &root);
    }
    if (!rc) kiln_buf_addf(&c.out, "%sroot ::= %s\n", c.p, root.p ? root.p : "\"\"");
    json_decref(c.root);
    kiln_buf_free(&root);
    kiln_buf_free(&c.done);
    if (!rc && (!c.out.p)) rc = KILN_ERR(err, KILN_ERR_OOM, "out of memory");
    if (rc) { kiln_buf_free(&c.out); return rc; }
    *out = kiln_buf_take(&c.out, NULL);
    return *out ? KILN_OK : KILN_ERR(err, KILN_ERR_OOM, "out of memory");
}

int kiln_gram_from_json_schema(kiln_gram *g, const char *schema, kiln_error *err) {
    char *text;
    int rc = kiln_json_schema_to_gbnf(schema, "", &text, err);
    if (rc) return rc;
    rc = kiln_gram_from_gbnf(g, text, strlen(text), err);
    kiln_free(text);
    return rc;
}

int kiln_gram_from_choice(kiln_gram *g, const char *json, size_t len, kiln_error *err) {
    json_error_t je;
    json_t *a = json_loadb(json, len, 0, &je);
    if (!json_is_array(a) || !json_array_size(a)) {
        json_decref(a);
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "choice: not a non-empty list of strings");
    }
    kiln_buf b = {0};
    kiln_buf_adds(&b, "root ::= ");
    int rc = KILN_OK;
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *v = json_array_get(a, i);
        if (!json_is_string(v)) { rc = KILN_ERR(err, KILN_ERR_INVALID_ARG, "choice: item %zu is not a string", i); break; }
        if (i) kiln_buf_adds(&b, " | ");
        lit(&b, json_string_value(v), json_string_length(v));
    }
    json_decref(a);
    if (!rc) rc = b.p ? kiln_gram_from_gbnf(g, b.p, b.len, err) : KILN_ERR(err, KILN_ERR_OOM, "out of memory");
    kiln_buf_free(&b);
    return rc;
}
