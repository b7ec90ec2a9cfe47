/* gram_build.c: rules, byte classes, UTF-8 range splitting, repetition, and the final checks
 * (undefined rules, left recursion) of the grammar builder (gram_build.h). */
#include <stdlib.h>
#include <string.h>
#include "grammar/gram_build.h"
#include "util/alloc.h"
#include "util/error.h"

void gb_free(kiln_gb *b) {
    for (int i = 0; i < b->n_rules; i++) {
        kiln_free(b->rules[i].name);
        kiln_buf_free(&b->rules[i].body);
    }
    kiln_free(b->rules);
    kiln_free(b->cls);
    memset(b, 0, sizeof *b);
}

static int add_rule(kiln_gb *b, char *name) {
    if (b->n_rules == b->cap_rules) {
        int cap = b->cap_rules ? b->cap_rules * 2 : 32;
        gb_rule *r = kiln_realloc(b->rules, (size_t)cap * sizeof *r);
        if (!r) { b->oom = 1; kiln_free(name); return -1; }
        b->rules = r;
        b->cap_rules = cap;
    }
    gb_rule *r = &b->rules[b->n_rules];
    memset(r, 0, sizeof *r);
    r->name = name;
    return b->n_rules++;
}

int gb_rule_named(kiln_gb *b, const char *name, size_t len) {
    for (int i = 0; i < b->n_rules; i++)
        if (b->rules[i].name && strlen(b->rules[i].name) == len && !memcmp(b->rules[i].name, name, len)) return i;
    char *s = kiln_malloc(len + 1);
    if (!s) { b->oom = 1; return -1; }
    memcpy(s, name, len);
    s[len] = 0;
    return add_rule(b, s);
}

int gb_rule_new(kiln_gb *b) {
    int r = add_rule(b, NULL);
    if (r >= 0) b->rules[r].defined = 1;
    return r;
}

int gb_emit(kiln_gb *b, int rule, int32_t elem) {
    if (rule < 0 || b->oom) return -1;
    if (++b->n_elems > GB_MAX_ELEMS) { b->too_big = b->oom = 1; return -1; }
    if (kiln_buf_add(&b->rules[rule].body, &elem, sizeof elem)) { b->oom = 1; return -1; }
    return 0;
}

int32_t gb_class(kiln_gb *b, const uint32_t set[8]) {
    for (int i = 0; i < b->n_cls; i++)
        if (!memcmp(b->cls[i], set, 32)) return i;
    if (b->n_cls == b->cap_cls) {
        int cap = b->cap_cls ? b->cap_cls * 2 : 64;
        uint32_t(*c)[8] = kiln_realloc(b->cls, (size_t)cap * sizeof *c);
        if (!c) { b->oom = 1; return 0; }
        b->cls = c;
        b->cap_cls = cap;
    }
    memcpy(b->cls[b->n_cls], set, 32);
    return b->n_cls++;
}

int32_t gb_byte(kiln_gb *b, uint8_t c) {
    uint32_t s[8] = {0};
    s[c >> 5] |= 1u << (c & 31);
    return gb_class(b, s);
}

int gb_emit_bytes(kiln_gb *b, int rule, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (gb_emit(b, rule, gb_byte(b, (uint8_t)s[i]))) return -1;
    return 0;
}

int gb_utf8(uint32_t cp, char *o) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 63)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | ((cp >> 6) & 63)); o[2] = (char)(0x80 | (cp & 63));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18); o[1] = (char)(0x80 | ((cp >> 12) & 63));
    o[2] = (char)(0x80 | ((cp >> 6) & 63)); o[3] = (char)(0x80 | (cp & 63));
    return 4;
}

static int utf8_len(uint32_t cp) { return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4; }

/* one alternative of rule: bytes lo[i]..hi[i] at each of n positions */
static int emit_seq(kiln_gb *b, int rule, const uint8_t *lo, const uint8_t *hi, int n) {
    for (int i = 0; i < n; i++) {
        uint32_t s[8] = {0};
        for (int c = lo[i]; c <= hi[i]; c++) s[c >> 5] |= 1u << (c & 31);
        if (gb_emit(b, rule, gb_class(b, s))) return -1;
    }
    return gb_emit(b, rule, GB_END);
}

/* [lo, hi] (same encoded length, >= 0x80) as UTF-8 byte-range sequences (the split of
 * regex-automata's utf8 ranges: cut where lo and hi differ above a continuation byte) */
static int split_range(kiln_gb *b, int rule, uint32_t lo, uint32_t hi) {
    int n = utf8_len(lo);
    if (utf8_len(hi) != n) {
        uint32_t edge = n == 1 ? 0x7F : n == 2 ? 0x7FF : 0xFFFF;
        if (split_range(b, rule, lo, edge)) return -1;
        return split_range(b, rule, edge + 1, hi);
    }
    for (int i = 1; i < n; i++) {
        uint32_t m = (1u << (6 * i)) - 1;
        if ((lo & ~m) != (hi & ~m)) {
            if ((lo & m) != 0) {
                if (split_range(b, rule, lo, lo | m)) return -1;
                return split_range(b, rule, (lo | m) + 1, hi);
            }
            if ((hi & m) != m) {
                if (split_range(b, rule, lo, (hi & ~m) - 1)) return -1;
                return split_range(b, rule, hi & ~m, hi);
            }
        }
    }
    char a[4], z[4];
    gb_utf8(lo, a);
    gb_utf8(hi, z);
    return emit_seq(b, rule, (const uint8_t *)a, (const uint8_t *)z, n);
}

static int cmp_u32pair(const void *x, const void *y) {
    const uint32_t *a = x, *c = y;
    return a[0] < c[0] ? -1 : a[0] > c[0];
}

int32_t gb_cp_class(kiln_gb *b, const uint32_t *ranges, int n, int negate) {
    /* normalise: sorted, merged, surrogates removed; then complemented when asked */
    uint32_t *r = kiln_malloc(((size_t)n * 2 + 8) * 2 * sizeof(uint32_t));
    uint32_t *o = kiln_malloc(((size_t)n * 2 + 8) * 2 * sizeof(uint32_t));
    if (!r || !o) { kiln_free(r); kiln_free(o); b->oom = 1; return 0; }
    int k = 0;
    for (int i = 0; i < n; i++) {
        uint32_t lo = ranges[2 * i], hi = ranges[2 * i + 1] > 0x10FFFF ? 0x10FFFF : ranges[2 * i + 1];
        if (lo > hi) continue;
        r[2 * k] = lo; r[2 * k + 1] = hi; k++;
    }
    qsort(r, (size_t)k, 2 * sizeof(uint32_t), cmp_u32pair);
    int m = 0;
    for (int i = 0; i < k; i++) {
        if (m && r[2 * i] <= o[2 * m - 1] + 1) { if (r[2 * i + 1] > o[2 * m - 1]) o[2 * m - 1] = r[2 * i + 1]; }
        else { o[2 * m] = r[2 * i]; o[2 * m + 1] = r[2 * i + 1]; m++; }
    }
    if (negate) {
        int c = 0;
        uint32_t next = 0;
        for (int i = 0; i < m; i++) {
            if (o[2 * i] > next) { r[2 * c] = next; r[2 * c + 1] = o[2 * i] - 1; c++; }
            next = o[2 * i + 1] + 1;
        }
        if (next <= 0x10FFFF) { r[2 * c] = next; r[2 * c + 1] = 0x10FFFF; c++; }
        memcpy(o, r, (size_t)c * 2 * sizeof(uint32_t));
        m = c;
    }
    /* cut out the surrogates D800..DFFF */
    k = 0;
    for (int i = 0; i < m; i++) {
        uint32_t lo = o[2 * i], hi = o[2 * i + 1];
        if (hi < 0xD800 || lo > 0xDFFF) { r[2 * k] = lo; r[2 * k + 1] = hi; k++; continue; }
        if (lo < 0xD800) { r[2 * k] = lo; r[2 * k + 1] = 0xD7FF; k++; }
        if (hi > 0xDFFF) { r[2 * k] = 0xE000; r[2 * k + 1] = hi; k++; }
    }
    uint32_t ascii[8] = {0};
    int has_ascii = 0, has_multi = 0;
    for (int i = 0; i < k; i++) {
        for (uint32_t c = r[2 * i]; c <= r[2 * i + 1] && c < 0x80; c++) { ascii[c >> 5] |= 1u << (c & 31); has_ascii = 1; }
        if (r[2 * i + 1] >= 0x80) has_multi = 1;
    }
    int32_t elem;
    if (!has_multi) {
        elem = gb_class(b, ascii); /* an empty class matches nothing: a dead alternative */
    } else {
        int rule = gb_rule_new(b);
        if (has_ascii) { gb_emit(b, rule, gb_class(b, ascii)); gb_emit(b, rule, GB_END); }
        for (int i = 0; i < k; i++) {
            uint32_t lo = r[2 * i] < 0x80 ? 0x80 : r[2 * i], hi = r[2 * i + 1];
            if (hi >= 0x80 && split_range(b, rule, lo, hi)) b->oom = 1;
        }
        elem = GB_REF(rule);
    }
    kiln_free(r);
    kiln_free(o);
    return elem;
}

int32_t gb_wrap_tail(kiln_gb *b, int rule, size_t from) {
    int nr = gb_rule_new(b);
    if (nr < 0) return 0;
    gb_rule *src = &b->rules[rule]; /* after gb_rule_new: rules may have moved */
    size_t n = gb_len(b, rule);
    const int32_t *e = (const int32_t *)src->body.p;
    for (size_t i = from; i < n; i++) gb_emit(b, nr, ((const int32_t *)b->rules[rule].body.p)[i]);
    (void)e;
    gb_emit(b, nr, GB_END);
    b->rules[rule].body.len = from * sizeof(int32_t);
    return GB_REF(nr);
}

int gb_repeat(kiln_gb *b, int rule, int32_t elem, int min, int max) {
    for (int i = 0; i < min; i++) gb_emit(b, rule, elem);
    if (max == GB_INF) { /* R ::= elem R | (empty) */
        int r = gb_rule_new(b);
        gb_emit(b, r, elem); gb_emit(b, r, GB_REF(r)); gb_emit(b, r, GB_END); gb_emit(b, r, GB_END);
        return gb_emit(b, rule, GB_REF(r));
    }
    /* O_1 ::= elem | ;  O_k ::= elem O_(k-1) | */
    int prev = -1;
    for (int k = 1; k <= max - min; k++) {
        int r = gb_rule_new(b);
        gb_emit(b, r, elem);
        if (prev >= 0) gb_emit(b, r, GB_REF(prev));
        gb_emit(b, r, GB_END); gb_emit(b, r, GB_END);
        prev = r;
    }
    if (prev >= 0) gb_emit(b, rule, GB_REF(prev));
    return b->oom ? -1 : 0;
}

/* left recursion: edges r -> s when s can be reached at the start of r through nullable rules */
static int lr_visit(const kiln_gram *g, const uint8_t *nullable, uint8_t *color, int r, int *bad) {
    color[r] = 1;
    for (int a = g->rule_alt[r]; a < g->rule_alt[r + 1]; a++) {
        for (int p = g->alts[a]; g->elems[p] != GB_END; p++) {
            int32_t e = g->elems[p];
            if (e >= 0) break;
            int s = -e - 2;
            if (color[s] == 1) { *bad = s; return 1; }
            if (color[s] == 0 && lr_visit(g, nullable, color, s, bad)) return 1;
            if (!nullable[s]) break;
        }
    }
    color[r] = 2;
    return 0;
}

int gb_fail(const kiln_gb *b, kiln_error *err) {
    if (b->too_big) return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "grammar: more than %ld elements after expanding repetitions", GB_MAX_ELEMS);
    return KILN_ERR(err, KILN_ERR_OOM, "out of memory building a grammar");
}

int gb_finish(kiln_gb *b, int root, kiln_gram *g, kiln_error *err) {
    memset(g, 0, sizeof *g);
    if (b->too_big) return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "grammar: more than %ld elements after expanding repetitions", GB_MAX_ELEMS);
    if (b->oom) return KILN_ERR(err, KILN_ERR_OOM, "out of memory building a grammar");
    for (int i = 0; i < b->n_rules; i++)
        if (!b->rules[i].defined)
            return KILN_ERR(err, KILN_ERR_INVALID_ARG, "grammar: rule '%s' is used but not defined",
                            b->rules[i].name ? b->rules[i].name : "?");
    size_t ne = 0, na = 0;
    for (int i = 0; i < b->n_rules; i++) {
        size_t n = gb_len(b, i);
        const int32_t *e = (const int32_t *)b->rules[i].body.p;
        if (n == 0 || e[n - 1] != GB_END) { gb_emit(b, i, GB_END); n++; e = (const int32_t *)b->rules[i].body.p; }
        ne += n;
        for (size_t k = 0; k < n; k++) na += e[k] == GB_END;
    }
    if (b->oom) return KILN_ERR(err, KILN_ERR_OOM, "out of memory building a grammar");
    g->elems = kiln_malloc((ne + 1) * sizeof(int32_t));
    g->alts = kiln_malloc((na + 1) * sizeof(int32_t));
    g->rule_alt = kiln_malloc(((size_t)b->n_rules + 1) * sizeof(int32_t));
    g->classes = kiln_malloc(((size_t)b->n_cls + 1) * sizeof *g->classes);
    uint8_t *nullable = kiln_calloc((size_t)b->n_rules + 1, 1), *color = kiln_calloc((size_t)b->n_rules + 1, 1);
    if (!g->elems || !g->alts || !g->rule_alt || !g->classes || !nullable || !color) {
        kiln_free(nullable); kiln_free(color); kiln_gram_free(g);
        return KILN_ERR(err, KILN_ERR_OOM, "out of memory building a grammar");
    }
    if (b->n_cls) memcpy(g->classes, b->cls, (size_t)b->n_cls * sizeof *g->classes);
    g->n_classes = b->n_cls;
    int pe = 0, pa = 0;
    for (int i = 0; i < b->n_rules; i++) {
        g->rule_alt[i] = pa;
        size_t n = gb_len(b, i);
        const int32_t *e = (const int32_t *)b->rules[i].body.p;
        int start = 1;
        for (size_t k = 0; k < n; k++) {
            if (start) g->alts[pa++] = pe;
            g->elems[pe++] = e[k];
            start = e[k] == GB_END;
        }
    }
    g->rule_alt[b->n_rules] = pa;
    g->n_elems = pe; g->n_alts = pa; g->n_rules = b->n_rules; g->root = root;
    /* nullable rules, to a fixpoint */
    for (int changed = 1; changed;) {
        changed = 0;
        for (int r = 0; r < g->n_rules; r++) {
            if (nullable[r]) continue;
            for (int a = g->rule_alt[r]; a < g->rule_alt[r + 1] && !nullable[r]; a++) {
                int p = g->alts[a], ok = 1;
                for (; g->elems[p] != GB_END; p++)
                    if (g->elems[p] >= 0 || !nullable[-g->elems[p] - 2]) { ok = 0; break; }
                if (ok) { nullable[r] = 1; changed = 1; }
            }
        }
    }
    int bad = -1;
    for (int r = 0; r < g->n_rules && bad < 0; r++)
        if (!color[r]) lr_visit(g, nullable, color, r, &bad);
    kiln_free(nullable);
    kiln_free(color);
    if (bad >= 0) {
        const char *nm = b->rules[bad].name;
        kiln_gram_free(g);
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "grammar: rule '%s' is left-recursive (write the repetition with * or + instead)",
                        nm ? nm : "(a group)");
    }
    return KILN_OK;
}

void kiln_gram_free(kiln_gram *g) {
    kiln_free(g->elems);
    kiln_free(g->alts);
    kiln_free(g->rule_alt);
    kiln_free(g->classes);
    memset(g, 0, sizeof *g);
}
