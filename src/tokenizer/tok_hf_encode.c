/* tok_hf_encode.c: running the tokenizer.json pipeline on text.
 *
 * Text is first made valid UTF-8 (each maximal invalid subpart -> U+FFFD, what Python's
 * errors="replace" gives the HF library). Pieces flow through the stages as byte strings with
 * one flag: whether the piece starts at offset 0 of the original text (Metaspace's "first"
 * prepend scheme needs it). Regexes are PCRE2 (UTF + UCP, JIT) compiled at load.
 */
#include "tokenizer/tok_hf.h"
#include "tokenizer/tok_tekken_split.h"
#include <string.h>
#ifdef KILN_HAVE_UTF8PROC
#include <utf8proc.h>
#endif
#include "util/alloc.h"
#include "util/error.h"

#define OOM() KILN_ERR(err, KILN_ERR_OOM, "tokenizer: out of memory")

/* ---- GPT-2 byte <-> unicode ---- */
static int byte_printable(int b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE); }
uint32_t hf_byte_to_cp(int b) {
    if (byte_printable(b)) return (uint32_t)b;
    int k = 0;
    for (int i = 0; i < b; i++)
        if (!byte_printable(i)) k++;
    return 256u + (uint32_t)k;
}
int hf_cp_to_byte(uint32_t cp) {
    if (cp < 256) return byte_printable((int)cp) ? (int)cp : -1;
    if (cp >= 256 + 68) return -1; /* 68 non-printable bytes */
    int k = (int)(cp - 256);
    for (int i = 0; i < 256; i++)
        if (!byte_printable(i) && k-- == 0) return i;
    return -1;
}

/* ---- pieces ---- */
typedef struct pieces {
    kiln_buf text;
    tok_ivec off, len, first;
} pieces;
static void pieces_free(pieces *p) {
    kiln_buf_free(&p->text);
    tok_ivec_free(&p->off);
    tok_ivec_free(&p->len);
    tok_ivec_free(&p->first);
}
static int pieces_add(pieces *p, const char *s, size_t n, int first) {
    if (n == 0) return 0;
    if (tok_ivec_push(&p->off, (int32_t)p->text.len) || tok_ivec_push(&p->len, (int32_t)n) ||
        tok_ivec_push(&p->first, first) || kiln_buf_add(&p->text, s, n))
        return -1;
    return 0;
}
/* ---- matches ---- */
typedef struct span {
    size_t s, e;
    int m;
} span;
typedef struct spans {
    span *p;
    int n, cap;
} spans;
static int spans_push(spans *v, size_t s, size_t e, int m) {
    if (v->n == v->cap) {
        int cap = v->cap ? v->cap * 2 : 32;
        span *np = kiln_realloc(v->p, (size_t)cap * sizeof *np);
        if (!np) return -1;
        v->p = np;
        v->cap = cap;
    }
    v->p[v->n++] = (span){s, e, m};
    return 0;
}

/* All non-overlapping matches of re (or the literal) in s, as spans covering s. */
static int find_matches(pcre2_code *re, const char *lit, size_t litn, const char *s, size_t n,
                        spans *out, kiln_error *err) {
    size_t pos = 0, last = 0;
    out->n = 0;
    if (!re) {
        if (litn == 0) return spans_push(out, 0, n, 0) ? OOM() : KILN_OK;
        while (pos + litn <= n) {
            const char *h = memmem(s + pos, n - pos, lit, litn);
            if (!h) break;
            size_t at = (size_t)(h - s);
            if (at > last && spans_push(out, last, at, 0)) return OOM();
            if (spans_push(out, at, at + litn, 1)) return OOM();
            pos = last = at + litn;
        }
    } else {
        pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
        if (!md) return OOM();
        while (pos <= n) {
            int rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
            if (rc == PCRE2_ERROR_NOMATCH) break;
            if (rc < 0) {
                pcre2_match_data_free(md);
                return KILN_ERR(err, KILN_ERR_INTERNAL, "tokenizer: regex match failed (%d)", rc);
            }
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            size_t ms = ov[0], me = ov[1];
            if (me == ms) { /* empty match: step one character */
                pos = ms + 1;
                while (pos < n && ((unsigned char)s[pos] & 0xC0) == 0x80) pos++;
                continue;
            }
            if (ms > last && spans_push(out, last, ms, 0)) goto oom;
            if (spans_push(out, ms, me, 1)) goto oom;
            pos = last = me;
        }
        pcre2_match_data_free(md);
    }
    if (last < n && spans_push(out, last, n, 0)) return OOM();
    return KILN_OK;
oom:
    return OOM();
}

/* tokenizers' SplitDelimiterBehavior over spans (m = is a delimiter) -> pieces */
static int apply_split(const hf_pre *p, const char *s, size_t n, int first, spans *sp, pieces *out,
                       kiln_error *err) {
    int rc = KILN_OK;
    if (p->tekken) { /* every position starts a piece: the spans are all matches */
        sp->n = 0;
        for (size_t pos = 0, e; pos < n && rc == KILN_OK; pos = e)
            rc = spans_push(sp, pos, e = kiln_tekken_split_next(s, n, pos), 1) ? OOM() : KILN_OK;
    } else
        rc = find_matches(p->re, p->lit, p->litn, s, n, sp, err);
    if (rc) return rc;
    if (p->invert)
        for (int i = 0; i < sp->n; i++) sp->p[i].m = !sp->p[i].m;
    /* fold into result spans in place (k = number kept), m marks "remove" for Removed */
    int k = 0, prev = 0;
    switch (p->beh) {
    case HF_SPLIT_ISOLATED:
    case HF_SPLIT_REMOVED:
        k = sp->n;
        break;
    case HF_SPLIT_CONTIGUOUS:
        for (int i = 0; i < sp->n; i++) {
            span x = sp->p[i];
            if (x.m == prev && k > 0) sp->p[k - 1].e = x.e;
            else sp->p[k++] = x;
            prev = x.m;
        }
        break;
    case HF_SPLIT_MERGED_PREV:
        for (int i = 0; i < sp->n; i++) {
            span x = sp->p[i];
            if (x.m && !prev && k > 0) sp->p[k - 1].e = x.e;
            else sp->p[k++] = x;
            prev = x.m;
        }
        break;
    case HF_SPLIT_MERGED_NEXT: { /* right to left, then reverse */
        span *tmp = kiln_malloc((size_t)(sp->n ? sp->n : 1) * sizeof *tmp);
        if (!tmp) return OOM();
        for (int i = sp->n - 1; i >= 0; i--) {
            span x = sp->p[i];
            if (x.m && !prev && k > 0) tmp[k - 1].s = x.s;
            else tmp[k++] = x;
            prev = x.m;
        }
        for (int i = 0; i < k; i++) sp->p[i] = tmp[k - 1 - i];
        kiln_free(tmp);
        break;
    }
    }
    for (int i = 0; i < k; i++) {
        span x = sp->p[i];
        if (p->beh == HF_SPLIT_REMOVED && x.m) continue;
        if (pieces_add(out, s + x.s, x.e - x.s, first && x.s == 0)) return OOM();
    }
    return KILN_OK;
}

/* byte-level: map the bytes of s to the GPT-2 alphabet */
static int add_bytelevel(pieces *out, const char *s, size_t n, int first) {
    if (n == 0) return 0;
    if (tok_ivec_push(&out->off, (int32_t)out->text.len) || tok_ivec_push(&out->first, first)) return -1;
    size_t start = out->text.len;
    for (size_t i = 0; i < n; i++) {
        char u[4];
        int l = tok_utf8_put(hf_byte_to_cp((unsigned char)s[i]), u);
        if (kiln_buf_add(&out->text, u, (size_t)l)) return -1;
    }
    return tok_ivec_push(&out->len, (int32_t)(out->text.len - start));
}

static int run_pre(const hf_pre *p, const pieces *in, pieces *out, spans *sp, kiln_error *err) {
    for (int i = 0; i < in->off.n; i++) {
        const char *s = in->text.p + in->off.p[i];
        size_t n = (size_t)in->len.p[i];
        int first = in->first.p[i], rc;
        if (p->type == HF_PRE_SPLIT) {
            if ((rc = apply_split(p, s, n, first, sp, out, err))) return rc;
        } else if (p->type == HF_PRE_BYTELEVEL) {
            kiln_buf tmp = {0};
            if (p->add_prefix_space && (n == 0 || s[0] != ' ')) {
                if (kiln_buf_add(&tmp, " ", 1) || kiln_buf_add(&tmp, s, n)) {
                    kiln_buf_free(&tmp);
                    return OOM();
                }
                s = tmp.p;
                n = tmp.len;
            }
            if (p->use_regex) {
                rc = find_matches(p->re, NULL, 0, s, n, sp, err);
                for (int j = 0; rc == 0 && j < sp->n; j++)
                    if (add_bytelevel(out, s + sp->p[j].s, sp->p[j].e - sp->p[j].s, first && sp->p[j].s == 0))
                        rc = OOM();
            } else {
                rc = add_bytelevel(out, s, n, first) ? OOM() : 0;
            }
            kiln_buf_free(&tmp);
            if (rc) return rc;
        } else { /* Metaspace */
            kiln_buf tmp = {0};
            /* prepend unless the piece (after ' ' -> replacement) already starts with it */
            int pre = (p->prepend == 1 || (p->prepend == 2 && first)) && !(n > 0 && s[0] == ' ') &&
                      !(n >= (size_t)p->repln && memcmp(s, p->repl, (size_t)p->repln) == 0);
            if (pre && kiln_buf_add(&tmp, p->repl, (size_t)p->repln)) return OOM();
            for (size_t j = 0; j < n; j++) {
                if ((s[j] == ' ' ? kiln_buf_add(&tmp, p->repl, (size_t)p->repln) : kiln_buf_addc(&tmp, s[j]))) {
                    kiln_buf_free(&tmp);
                    return OOM();
                }
            }
            if (tmp.len == 0 && kiln_buf_add(&tmp, "", 0)) return OOM();
            if (p->split) {
                hf_pre sp_pre = {.type = HF_PRE_SPLIT, .lit = (char *)p->repl, .litn = (size_t)p->repln,
                                 .beh = HF_SPLIT_MERGED_NEXT};
                rc = apply_split(&sp_pre, tmp.p, tmp.len, first, sp, out, err);
            } else {
                rc = pieces_add(out, tmp.p, tmp.len, first) ? OOM() : 0;
            }
            kiln_buf_free(&tmp);
            if (rc) return rc;
        }
    }
    return KILN_OK;
}

/* ---- normalizers ---- */
static int norm_one(const hf_norm *nm, const char *s, size_t n, kiln_buf *o, spans *sp, kiln_error *err) {
    switch (nm->type) {
    case HF_NORM_PREPEND:
        if (n && (kiln_buf_add(o, nm->a, nm->an) || kiln_buf_add(o, s, n))) return OOM();
        if (!n && kiln_buf_add(o, "", 0)) return OOM();
        return KILN_OK;
    case HF_NORM_REPLACE: {
        int rc = find_matches(nm->re, nm->a, nm->an, s, n, sp, err);
        if (rc) return rc;
        if (kiln_buf_add(o, "", 0)) return OOM();
        for (int i = 0; i < sp->n; i++) {
            span x = sp->p[i];
            if (x.m ? kiln_buf_add(o, nm->b, nm->bn) : kiln_buf_add(o, s + x.s, x.e - x.s)) return OOM();
        }
        return KILN_OK;
    }
    case HF_NORM_STRIP: {
        size_t a = 0, b = n;
        if (nm->left)
            while (a < b && strchr(" \t\n\r\f\v", s[a])) a++;
        if (nm->right)
            while (b > a && strchr(" \t\n\r\f\v", s[b - 1])) b--;
        return kiln_buf_add(o, s + a, b - a) ? OOM() : KILN_OK;
    }
    default:
        break;
    }
#ifdef KILN_HAVE_UTF8PROC
    if (nm->type == HF_NORM_LOWERCASE) {
        if (kiln_buf_add(o, "", 0)) return OOM();
        for (size_t i = 0; i < n;) {
            int bad = 0, l = tok_utf8_valid_len((const unsigned char *)s + i, n - i, &bad);
            if (l == 0) l = bad;
            uint32_t cp = tok_utf8_cp((const unsigned char *)s + i, l);
            char u[4];
            int ul = tok_utf8_put((uint32_t)utf8proc_tolower((utf8proc_int32_t)cp), u);
            if (kiln_buf_add(o, u, (size_t)ul)) return OOM();
            i += (size_t)l;
        }
        return KILN_OK;
    }
    utf8proc_option_t opt = UTF8PROC_STABLE;
    if (nm->type == HF_NORM_NFC) opt |= UTF8PROC_COMPOSE;
    if (nm->type == HF_NORM_NFKC) opt |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
    if (nm->type == HF_NORM_NFD) opt |= UTF8PROC_DECOMPOSE;
    if (nm->type == HF_NORM_NFKD) opt |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
    utf8proc_uint8_t *r = NULL;
    utf8proc_ssize_t rl = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &r, opt);
    if (rl < 0) return KILN_ERR(err, KILN_ERR_INTERNAL, "tokenizer: unicode normalization failed");
    int bad = kiln_buf_add(o, r, (size_t)rl);
    free(r); /* allocated by utf8proc with malloc */
    return bad ? OOM() : KILN_OK;
#else
    return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "tokenizer: unicode normalizers need utf8proc");
#endif
}

int hf_normalize(const hf_norm *ns, int k, const char *s, size_t len, char **out, size_t *out_n,
                 kiln_error *err) {
    kiln_buf cur = {0};
    spans sp = {0};
    if (kiln_buf_add(&cur, s, len)) return OOM();
    for (int i = 0; i < k; i++) {
        kiln_buf nx = {0};
        int rc = norm_one(&ns[i], cur.p, cur.len, &nx, &sp, err);
        kiln_buf_free(&cur);
        if (rc) {
            kiln_buf_free(&nx);
            kiln_free(sp.p);
            return rc;
        }
        cur = nx;
    }
    kiln_free(sp.p);
    *out = cur.p;
    *out_n = cur.len;
    return KILN_OK;
}

/* ---- added tokens ---- */
static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
static int is_wordc(unsigned char c) { return c >= 0x80 || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }

/* Split s on added tokens whose `normalized` flag is `norm` (leftmost-longest). Output spans:
 * m = -1 for text, else the token id. */
static int split_added(const hf_model *m, const char *s, size_t n, int norm, int parse_special,
                       spans *out, kiln_error *err) {
    out->n = 0;
    size_t last = 0, i = 0;
    while (i < n) {
        int best = -1;
        size_t bl = 0;
        for (int k = 0; k < m->n_added; k++) {
            const hf_added *a = &m->added[k];
            if (a->normalized != norm || (a->special && !parse_special)) continue;
            const char *c = norm ? a->norm : a->content;
            size_t cl = norm ? a->nn : a->n;
            if (cl == 0 || cl <= bl || cl > n - i || c[0] != s[i] || memcmp(c, s + i, cl) != 0) continue;
            if (a->single_word && ((i > 0 && is_wordc((unsigned char)s[i - 1])) ||
                                   (i + cl < n && is_wordc((unsigned char)s[i + cl]))))
                continue;
            best = k;
            bl = cl;
        }
        if (best < 0) {
            i++;
            continue;
        }
        const hf_added *a = &m->added[best];
        size_t ms = i, me = i + bl;
        if (a->lstrip)
            while (ms > last && is_ws(s[ms - 1])) ms--;
        if (a->rstrip)
            while (me < n && is_ws(s[me])) me++;
        if (ms > last && spans_push(out, last, ms, -1)) return OOM();
        if (spans_push(out, ms, me, a->id)) return OOM();
        i = last = me;
    }
    if (last < n && spans_push(out, last, n, -1)) return OOM();
    return KILN_OK;
}

int hf_split_added_tokens(const hf_model *m, const char *s, size_t n, int parse_special,
                          tok_ivec *out, kiln_error *err) {
    spans sp = {0};
    int rc = split_added(m, s, n, 0, parse_special, &sp, err);
    for (int i = 0; rc == KILN_OK && i < sp.n; i++)
        if (tok_ivec_push(out, (int32_t)sp.p[i].s) || tok_ivec_push(out, (int32_t)sp.p[i].e) ||
            tok_ivec_push(out, sp.p[i].m))
            rc = OOM();
    kiln_free(sp.p);
    return rc;
}

/* ---- BPE model on one word ---- */
static int bpe_word(const kiln_tokenizer *t, const hf_model *m, const char *w, size_t n,
                    tok_ivec *out, kiln_error *err) {
    if (m->ignore_merges) {
        int32_t id = tok_strmap_get(&t->vocab, w, n);
        if (id >= 0) return tok_ivec_push(out, id) ? OOM() : KILN_OK;
    }
    int start = out->n, pend_unk = 0;
    for (size_t i = 0; i < n;) {
        int bad = 0, l = tok_utf8_valid_len((const unsigned char *)w + i, n - i, &bad);
        if (l == 0) l = bad;
        int32_t id = tok_strmap_get(&t->vocab, w + i, (size_t)l);
        if (id >= 0) {
            if (pend_unk && tok_ivec_push(out, m->unk)) return OOM();
            pend_unk = 0;
            if (tok_ivec_push(out, id)) return OOM();
        } else {
            int done = 0;
            if (m->byte_fallback) {
                int all = 1;
                for (int k = 0; k < l; k++)
                    if (m->byte_ids[(unsigned char)w[i + k]] < 0) all = 0;
                if (all) {
                    for (int k = 0; k < l; k++)
                        if (tok_ivec_push(out, m->byte_ids[(unsigned char)w[i + k]])) return OOM();
                    done = 1; /* as HF: a pending unk is not flushed here */
                }
            }
            if (!done && m->unk >= 0) {
                if (pend_unk && !m->fuse_unk && tok_ivec_push(out, m->unk)) return OOM();
                pend_unk = 1;
            }
        }
        i += (size_t)l;
    }
    if (pend_unk && tok_ivec_push(out, m->unk)) return OOM();
    return tok_bpe_rank_merge(&m->merges, out, start, err);
}

static int encode_segment(const kiln_tokenizer *t, const hf_model *m, const char *s, size_t n,
                          int first, tok_ivec *out, kiln_error *err) {
    pieces a = {0}, b = {0};
    spans sp = {0};
    int rc = pieces_add(&a, s, n, first) ? OOM() : KILN_OK;
    for (int i = 0; rc == KILN_OK && i < m->n_pres; i++) {
        rc = run_pre(&m->pres[i], &a, &b, &sp, err);
        pieces_free(&a);
        a = b;
        memset(&b, 0, sizeof b);
    }
    for (int i = 0; rc == KILN_OK && i < a.off.n; i++)
        rc = bpe_word(t, m, a.text.p + a.off.p[i], (size_t)a.len.p[i], out, err);
    pieces_free(&a);
    kiln_free(sp.p);
    return rc;
}

int hf_encode(const kiln_tokenizer *t, const char *text, size_t len, int flags, tok_ivec *out,
              kiln_error *err) {
    return hf_encode_model(t, t->impl, text, len, flags, out, err);
}

int hf_encode_model(const kiln_tokenizer *t, const hf_model *m, const char *text, size_t len, int flags,
                    tok_ivec *out, kiln_error *err) {
    char *s = NULL, *ns = NULL;
    size_t n, nn;
    spans s1 = {0}, s2 = {0};
    tok_ivec body = {0};
    int rc = KILN_OK, parse = (flags & KILN_TOK_PARSE_SPECIAL) != 0;
    if (tok_utf8_sanitize(text, len, &s, &n)) return OOM();
    if ((rc = split_added(m, s, n, 0, parse, &s1, err))) goto done;
    for (int i = 0; i < s1.n && rc == KILN_OK; i++) {
        span x = s1.p[i];
        if (x.m >= 0) {
            if (tok_ivec_push(&body, x.m)) rc = OOM();
            continue;
        }
        if ((rc = hf_normalize(m->norms, m->n_norms, s + x.s, x.e - x.s, &ns, &nn, err))) break;
        if ((rc = split_added(m, ns, nn, 1, parse, &s2, err)) == KILN_OK) {
            for (int j = 0; j < s2.n && rc == KILN_OK; j++) {
                span y = s2.p[j];
                if (y.m >= 0) rc = tok_ivec_push(&body, y.m) ? OOM() : KILN_OK;
                else rc = encode_segment(t, m, ns + y.s, y.e - y.s, x.s == 0 && y.s == 0, &body, err);
            }
        }
        kiln_free(ns);
        ns = NULL;
    }
    if (rc) goto done;
    if ((flags & KILN_TOK_ADD_BOS) && m->n_tmpl > 0) {
        for (int i = 0; i < m->n_tmpl && rc == KILN_OK; i++) {
            const hf_tmpl_item *it = &m->tmpl[i];
            if (it->is_seq) {
                for (int j = 0; j < body.n && rc == KILN_OK; j++)
                    if (tok_ivec_push(out, body.p[j])) rc = OOM();
            } else {
                for (int j = 0; j < it->n_ids && rc == KILN_OK; j++)
                    if (tok_ivec_push(out, it->ids[j])) rc = OOM();
            }
        }
    } else {
        for (int j = 0; j < body.n && rc == KILN_OK; j++)
            if (tok_ivec_push(out, body.p[j])) rc = OOM();
    }
done:
    kiln_free(s);
    kiln_free(s1.p);
    kiln_free(s2.p);
    tok_ivec_free(&body);
    return rc;
}
