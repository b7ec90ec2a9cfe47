/* tok_hf.c: loading an HF tokenizer.json (BPE models) into the kiln_tokenizer tables.
 *
 * Supported: model BPE (merges "a b" or ["a","b"], unk/fuse_unk/byte_fallback/ignore_merges);
 * normalizers Prepend, Replace (String/Regex), NFC/NFKC/NFD/NFKD and Lowercase (utf8proc),
 * Strip, Sequence; pre-tokenizers Split (String/Regex, all behaviors, invert), ByteLevel,
 * Metaspace, Digits, Whitespace, WhitespaceSplit, Sequence; added tokens (lstrip, rstrip,
 * single_word, normalized); post-processors TemplateProcessing, Roberta/Bert, ByteLevel (no-op),
 * Sequence; decoders Replace, ByteFallback, Fuse, Strip, ByteLevel, Metaspace, Sequence.
 * Anything else is refused with KILN_ERR_UNSUPPORTED (never silently tokenized wrong).
 *
 * The decoder chain is evaluated once per token at load into the token's decoded bytes; the
 * only position-dependent parts (Metaspace's and Strip's leading-space removal) become the
 * tokenizer's strip rule.
 *
 * transformers mode (tokenizer_config.json beside the file, not KILN_TOK_LOAD_RAW): for
 * tokenizer_class LlamaTokenizer(Fast) transformers v5 ignores the file's normalizer,
 * pre-tokenizer, decoder and unk token and builds its own (Metaspace "first" or "always",
 * no unk: unknown characters without byte tokens are dropped); kiln does the same so that it
 * tokenizes exactly as the model's references were made.
 */
#include "tokenizer/tok_hf.h"
#include <jansson.h>
#include <string.h>
#include "util/alloc.h"
#include "util/error.h"
#include "util/json.h"

#define OOM() KILN_ERR(err, KILN_ERR_OOM, "tokenizer: out of memory")

static const char *GPT2_RE =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

pcre2_code *hf_regex_compile(const char *pat, size_t n, const char *what, kiln_error *err) {
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, n, PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: regex /%.*s/ does not compile at %zu: %s", what,
                 (int)(n > 200 ? 200 : n), pat, (size_t)eo, (const char *)msg);
        return NULL;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter if JIT is absent */
    return re;
}

void hf_model_free(void *vm) {
    hf_model *m = vm;
    if (!m) return;
    for (int i = 0; i < m->n_norms; i++) {
        kiln_free(m->norms[i].a);
        kiln_free(m->norms[i].b);
        if (m->norms[i].re) pcre2_code_free(m->norms[i].re);
    }
    kiln_free(m->norms);
    for (int i = 0; i < m->n_pres; i++) {
        kiln_free(m->pres[i].lit);
        if (m->pres[i].re) pcre2_code_free(m->pres[i].re);
    }
    kiln_free(m->pres);
    for (int i = 0; i < m->n_added; i++) {
        kiln_free(m->added[i].content);
        kiln_free(m->added[i].norm);
    }
    kiln_free(m->added);
    for (int i = 0; i < m->n_tmpl; i++) kiln_free(m->tmpl[i].ids);
    kiln_free(m->tmpl);
    tok_pairmap_free(&m->merges);
    kiln_free(m);
}

/* ---- small JSON helpers ---- */
static const char *jstr(json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}
static int jbool(json_t *o, const char *k, int def) {
    json_t *v = json_object_get(o, k);
    return json_is_boolean(v) ? json_is_true(v) : def;
}
static char *dupn(const char *s, size_t n) { return kiln_strndup(s, n); }

/* pattern {"String": s} or {"Regex": r}: literal into *lit or compiled into *re */
static int get_pattern(json_t *pat, char **lit, size_t *litn, pcre2_code **re, const char *path,
                       kiln_error *err) {
    json_t *s = json_object_get(pat, "String"), *r = json_object_get(pat, "Regex");
    if (json_is_string(s)) {
        *lit = dupn(json_string_value(s), json_string_length(s));
        *litn = json_string_length(s);
        return *lit ? KILN_OK : OOM();
    }
    if (json_is_string(r)) {
        *re = hf_regex_compile(json_string_value(r), json_string_length(r), path, err);
        return *re ? KILN_OK : err->code;
    }
    return KILN_ERR(err, KILN_ERR_FORMAT, "%s: pattern is neither String nor Regex", path);
}

/* ---- normalizers ---- */
static int add_norm(hf_model *m, json_t *o, const char *path, kiln_error *err) {
    if (json_is_null(o) || !o) return KILN_OK;
    const char *ty = jstr(o, "type");
    if (!ty) return KILN_ERR(err, KILN_ERR_FORMAT, "%s: normalizer without type", path);
    if (!strcmp(ty, "Sequence")) {
        json_t *arr = json_object_get(o, "normalizers"), *v;
        size_t i;
        json_array_foreach(arr, i, v) {
            int rc = add_norm(m, v, path, err);
            if (rc) return rc;
        }
        return KILN_OK;
    }
    hf_norm *nn = kiln_realloc(m->norms, (size_t)(m->n_norms + 1) * sizeof *nn);
    if (!nn) return OOM();
    m->norms = nn;
    hf_norm *n = &m->norms[m->n_norms++];
    memset(n, 0, sizeof *n);
    if (!strcmp(ty, "Prepend")) {
        const char *p = jstr(o, "prepend");
        n->type = HF_NORM_PREPEND;
        n->a = kiln_strdup(p ? p : "");
        n->an = p ? strlen(p) : 0;
        return n->a ? KILN_OK : OOM();
    }
    if (!strcmp(ty, "Replace")) {
        const char *c = jstr(o, "content");
        n->type = HF_NORM_REPLACE;
        n->b = kiln_strdup(c ? c : "");
        n->bn = c ? strlen(c) : 0;
        if (!n->b) return OOM();
        return get_pattern(json_object_get(o, "pattern"), &n->a, &n->an, &n->re, path, err);
    }
    if (!strcmp(ty, "Strip")) {
        n->type = HF_NORM_STRIP;
        n->left = jbool(o, "strip_left", 1);
        n->right = jbool(o, "strip_right", 1);
        return KILN_OK;
    }
#ifdef KILN_HAVE_UTF8PROC
    if (!strcmp(ty, "NFC")) { n->type = HF_NORM_NFC; return KILN_OK; }
    if (!strcmp(ty, "NFKC")) { n->type = HF_NORM_NFKC; return KILN_OK; }
    if (!strcmp(ty, "NFD")) { n->type = HF_NORM_NFD; return KILN_OK; }
    if (!strcmp(ty, "NFKD")) { n->type = HF_NORM_NFKD; return KILN_OK; }
    if (!strcmp(ty, "Lowercase")) { n->type = HF_NORM_LOWERCASE; return KILN_OK; }
#endif
    m->n_norms--;
    return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: normalizer %s is not supported", path, ty);
}

/* ---- pre-tokenizers ---- */
static hf_pre *new_pre(hf_model *m) {
    hf_pre *np = kiln_realloc(m->pres, (size_t)(m->n_pres + 1) * sizeof *np);
    if (!np) return NULL;
    m->pres = np;
    hf_pre *p = &m->pres[m->n_pres++];
    memset(p, 0, sizeof *p);
    return p;
}
static int split_regex(hf_model *m, const char *re, hf_split_beh beh, int invert, const char *path,
                       kiln_error *err) {
    hf_pre *p = new_pre(m);
    if (!p) return OOM();
    p->type = HF_PRE_SPLIT;
    p->beh = beh;
    p->invert = invert;
    p->re = hf_regex_compile(re, strlen(re), path, err);
    return p->re ? KILN_OK : err->code;
}
static int add_pre(hf_model *m, json_t *o, const char *path, kiln_error *err) {
    if (!o || json_is_null(o)) return KILN_OK;
    const char *ty = jstr(o, "type");
    if (!ty) return KILN_ERR(err, KILN_ERR_FORMAT, "%s: pre_tokenizer without type", path);
    if (!strcmp(ty, "Sequence")) {
        json_t *arr = json_object_get(o, "pretokenizers"), *v;
        size_t i;
        json_array_foreach(arr, i, v) {
            int rc = add_pre(m, v, path, err);
            if (rc) return rc;
        }
        return KILN_OK;
    }
    if (!strcmp(ty, "Split")) {
        const char *b = jstr(o, "behavior");
        hf_split_beh beh;
        if (!b) return KILN_ERR(err, KILN_ERR_FORMAT, "%s: Split without behavior", path);
        if (!strcmp(b, "Removed")) beh = HF_SPLIT_REMOVED;
        else if (!strcmp(b, "Isolated")) beh = HF_SPLIT_ISOLATED;
        else if (!strcmp(b, "MergedWithPrevious")) beh = HF_SPLIT_MERGED_PREV;
        else if (!strcmp(b, "MergedWithNext")) beh = HF_SPLIT_MERGED_NEXT;
        else if (!strcmp(b, "Contiguous")) beh = HF_SPLIT_CONTIGUOUS;
        else return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: Split behavior %s", path, b);
        hf_pre *p = new_pre(m);
        if (!p) return OOM();
        p->type = HF_PRE_SPLIT;
        p->beh = beh;
        p->invert = jbool(o, "invert", 0);
        return get_pattern(json_object_get(o, "pattern"), &p->lit, &p->litn, &p->re, path, err);
    }
    if (!strcmp(ty, "ByteLevel")) {
        hf_pre *p = new_pre(m);
        if (!p) return OOM();
        p->type = HF_PRE_BYTELEVEL;
        p->add_prefix_space = jbool(o, "add_prefix_space", 1);
        p->use_regex = jbool(o, "use_regex", 1);
        m->byte_level = 1;
        if (p->use_regex) {
            p->re = hf_regex_compile(GPT2_RE, strlen(GPT2_RE), path, err);
            if (!p->re) return err->code;
        }
        return KILN_OK;
    }
    if (!strcmp(ty, "Metaspace")) {
        hf_pre *p = new_pre(m);
        if (!p) return OOM();
        const char *r = jstr(o, "replacement"), *ps = jstr(o, "prepend_scheme");
        if (!r) r = "\xE2\x96\x81";
        p->type = HF_PRE_METASPACE;
        p->repln = (int)strlen(r);
        if (p->repln > 7) return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: Metaspace replacement too long", path);
        memcpy(p->repl, r, (size_t)p->repln);
        if (ps) p->prepend = !strcmp(ps, "always") ? 1 : !strcmp(ps, "first") ? 2 : 0;
        else p->prepend = jbool(o, "add_prefix_space", 1) ? 1 : 0;
        p->split = jbool(o, "split", 1);
        return KILN_OK;
    }
    if (!strcmp(ty, "Digits"))
        return split_regex(m, jbool(o, "individual_digits", 0) ? "\\p{N}" : "\\p{N}+", HF_SPLIT_ISOLATED, 0,
                           path, err);
    if (!strcmp(ty, "Whitespace")) return split_regex(m, "\\w+|[^\\w\\s]+", HF_SPLIT_REMOVED, 1, path, err);
    if (!strcmp(ty, "WhitespaceSplit")) return split_regex(m, "\\s+", HF_SPLIT_REMOVED, 0, path, err);
    return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: pre_tokenizer %s is not supported", path, ty);
}

/* ---- post-processor ---- */
static int32_t added_or_vocab_id(const kiln_tokenizer *t, const hf_model *m, const char *s) {
    for (int i = 0; i < m->n_added; i++)
        if (!strcmp(m->added[i].content, s)) return m->added[i].id;
    return tok_strmap_get(&t->vocab, s, strlen(s));
}
static int tmpl_push(hf_model *m, int is_seq, const int32_t *ids, int n) {
    hf_tmpl_item *nt = kiln_realloc(m->tmpl, (size_t)(m->n_tmpl + 1) * sizeof *nt);
    if (!nt) return -1;
    m->tmpl = nt;
    hf_tmpl_item *it = &m->tmpl[m->n_tmpl++];
    it->is_seq = is_seq;
    it->n_ids = n;
    it->ids = NULL;
    if (n) {
        it->ids = kiln_malloc((size_t)n * sizeof *ids);
        if (!it->ids) return -1;
        memcpy(it->ids, ids, (size_t)n * sizeof *ids);
    }
    return 0;
}
static int add_post(kiln_tokenizer *t, hf_model *m, json_t *o, const char *path, kiln_error *err) {
    if (!o || json_is_null(o)) return KILN_OK;
    const char *ty = jstr(o, "type");
    if (!ty) return KILN_ERR(err, KILN_ERR_FORMAT, "%s: post_processor without type", path);
    if (!strcmp(ty, "ByteLevel")) return KILN_OK;
    if (!strcmp(ty, "Sequence")) {
        json_t *arr = json_object_get(o, "processors"), *v;
        size_t i;
        json_array_foreach(arr, i, v) {
            int rc = add_post(t, m, v, path, err);
            if (rc) return rc;
        }
        return KILN_OK;
    }
    if (m->n_tmpl) return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: two templating post-processors", path);
    if (!strcmp(ty, "TemplateProcessing")) {
        json_t *single = json_object_get(o, "single"), *sp = json_object_get(o, "special_tokens"), *v;
        size_t i;
        json_array_foreach(single, i, v) {
            json_t *st = json_object_get(v, "SpecialToken"), *sq = json_object_get(v, "Sequence");
            if (sq) {
                if (tmpl_push(m, 1, NULL, 0)) return OOM();
            } else if (st) {
                const char *name = jstr(st, "id");
                json_t *ent = name ? json_object_get(sp, name) : NULL;
                json_t *ids = json_object_get(ent, "ids"), *x;
                int32_t buf[16];
                int n = 0;
                size_t k;
                if (!json_is_array(ids))
                    return KILN_ERR(err, KILN_ERR_FORMAT, "%s: template token %s has no ids", path,
                                    name ? name : "?");
                json_array_foreach(ids, k, x) {
                    if (n < 16) buf[n++] = (int32_t)json_integer_value(x);
                }
                if (tmpl_push(m, 0, buf, n)) return OOM();
            }
        }
        return KILN_OK;
    }
    if (!strcmp(ty, "RobertaProcessing") || !strcmp(ty, "BertProcessing")) {
        json_t *cls = json_object_get(o, "cls"), *sep = json_object_get(o, "sep");
        int32_t c = (int32_t)json_integer_value(json_array_get(cls, 1));
        int32_t s = (int32_t)json_integer_value(json_array_get(sep, 1));
        if (tmpl_push(m, 0, &c, 1) || tmpl_push(m, 1, NULL, 0) || tmpl_push(m, 0, &s, 1)) return OOM();
        return KILN_OK;
    }
    return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: post_processor %s is not supported", path, ty);
}

/* ---- decoders ---- */
typedef enum { D_REPLACE, D_BYTEFALLBACK, D_FUSE, D_STRIP, D_BYTELEVEL, D_METASPACE } dec_type;
typedef struct dec_op {
    dec_type type;
    const char *a, *b; /* Replace: a -> b; Metaspace: a = replacement */
    int start, stop, prepend;
} dec_op;
static int collect_dec(json_t *o, dec_op *ops, int *n, const char *path, kiln_error *err) {
    if (!o || json_is_null(o)) return KILN_OK;
    const char *ty = jstr(o, "type");
    if (!ty) return KILN_ERR(err, KILN_ERR_FORMAT, "%s: decoder without type", path);
    if (!strcmp(ty, "Sequence")) {
        json_t *arr = json_object_get(o, "decoders"), *v;
        size_t i;
        json_array_foreach(arr, i, v) {
            int rc = collect_dec(v, ops, n, path, err);
            if (rc) return rc;
        }
        return KILN_OK;
    }
    if (*n >= 32) return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: too many decoders", path);
    dec_op *d = &ops[*n];
    memset(d, 0, sizeof *d);
    if (!strcmp(ty, "Replace")) {
        d->type = D_REPLACE;
        d->a = jstr(json_object_get(o, "pattern"), "String");
        d->b = jstr(o, "content");
        if (!d->a || !d->b)
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: Replace decoder needs a String pattern", path);
    } else if (!strcmp(ty, "ByteFallback")) d->type = D_BYTEFALLBACK;
    else if (!strcmp(ty, "Fuse")) d->type = D_FUSE;
    else if (!strcmp(ty, "ByteLevel")) d->type = D_BYTELEVEL;
    else if (!strcmp(ty, "Strip")) {
        const char *c = jstr(o, "content");
        d->type = D_STRIP;
        d->start = (int)json_integer_value(json_object_get(o, "start"));
        d->stop = (int)json_integer_value(json_object_get(o, "stop"));
        if (!c || strcmp(c, " ") != 0 || d->stop != 0)
            return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: Strip decoder other than leading spaces", path);
    } else if (!strcmp(ty, "Metaspace")) {
        const char *r = jstr(o, "replacement"), *ps = jstr(o, "prepend_scheme");
        d->type = D_METASPACE;
        d->a = r ? r : "\xE2\x96\x81";
        d->prepend = ps ? strcmp(ps, "never") != 0 : jbool(o, "add_prefix_space", 1);
    } else {
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: decoder %s is not supported", path, ty);
    }
    (*n)++;
    return KILN_OK;
}

/* replace every a in s by b */
static int replace_all(kiln_buf *o, const char *s, size_t n, const char *a, const char *b) {
    size_t an = strlen(a), bn = strlen(b), i = 0;
    if (kiln_buf_add(o, "", 0)) return -1;
    while (i < n) {
        if (an && i + an <= n && memcmp(s + i, a, an) == 0) {
            if (kiln_buf_add(o, b, bn)) return -1;
            i += an;
        } else {
            if (kiln_buf_addc(o, s[i])) return -1;
            i++;
        }
    }
    return 0;
}
/* decoded bytes of one token string through the decoder chain */
static int decode_token(kiln_tokenizer *t, const dec_op *ops, int n_ops, const char *s, size_t n,
                        kiln_buf *out) {
    kiln_buf cur = {0};
    int fused = 0;
    if (kiln_buf_add(&cur, s, n)) return -1;
    for (int k = 0; k < n_ops; k++) {
        const dec_op *d = &ops[k];
        kiln_buf nx = {0};
        int bad = 0;
        switch (d->type) {
        case D_REPLACE: bad = replace_all(&nx, cur.p, cur.len, d->a, d->b); break;
        case D_METASPACE:
            bad = replace_all(&nx, cur.p, cur.len, d->a, " ");
            if (d->prepend) t->strip_mode = TOK_STRIP_FIRST_TOKEN;
            break;
        case D_BYTEFALLBACK: {
            int b = tok_parse_byte_token(cur.p, cur.len);
            char c = (char)b;
            bad = b >= 0 ? kiln_buf_add(&nx, &c, 1) : kiln_buf_add(&nx, cur.p, cur.len);
            break;
        }
        case D_FUSE:
            fused = 1;
            bad = kiln_buf_add(&nx, cur.p, cur.len);
            break;
        case D_STRIP:
            if (fused) {
                t->strip_mode = TOK_STRIP_OUTPUT;
                t->strip_n = d->start;
                bad = kiln_buf_add(&nx, cur.p, cur.len);
            } else {
                size_t a = 0;
                while ((int)a < d->start && a < cur.len && cur.p[a] == ' ') a++;
                bad = kiln_buf_add(&nx, cur.p + a, cur.len - a);
            }
            break;
        case D_BYTELEVEL: {
            int ok = 1;
            for (size_t i = 0; i < cur.len && ok;) {
                int eb = 0, l = tok_utf8_valid_len((const unsigned char *)cur.p + i, cur.len - i, &eb);
                int byte = l ? hf_cp_to_byte(tok_utf8_cp((const unsigned char *)cur.p + i, l)) : -1;
                if (byte < 0) ok = 0;
                else bad |= kiln_buf_addc(&nx, (char)byte);
                i += (size_t)(l ? l : 1);
            }
            if (!ok) { /* as HF: a token with a char outside the byte alphabet stays as is */
                kiln_buf_clear(&nx);
                bad = kiln_buf_add(&nx, cur.p, cur.len);
            }
            break;
        }
        }
        kiln_buf_free(&cur);
        if (bad) {
            kiln_buf_free(&nx);
            return -1;
        }
        cur = nx;
    }
    kiln_buf_clear(out);
    int bad = kiln_buf_add(out, cur.p, cur.len);
    kiln_buf_free(&cur);
    return bad;
}

/* ---- transformers' view of the file (tokenizer_config.json) ---- */
typedef struct tf_cfg {
    int llama;         /* tokenizer_class LlamaTokenizer(Fast): rebuild the pipeline */
    int legacy, add_prefix_space, add_bos, add_eos;
    const char *bos, *eos;
} tf_cfg;
static const char *tok_name(json_t *cfg, const char *k) {
    json_t *v = json_object_get(cfg, k);
    if (json_is_string(v)) return json_string_value(v);
    if (json_is_object(v)) return jstr(v, "content");
    return NULL;
}

static int load_model(kiln_tokenizer *t, hf_model *m, json_t *root, json_t *cfg, int tf_mode,
                      const char *path, kiln_error *err) {
    json_t *model = json_object_get(root, "model");
    const char *mty = jstr(model, "type");
    json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    if (!json_is_object(model) || !json_is_object(vocab))
        return KILN_ERR(err, KILN_ERR_FORMAT, "%s: no model.vocab object", path);
    if ((mty && strcmp(mty, "BPE") != 0) || (!mty && !json_is_array(merges)))
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: model type %s is not supported (BPE only)", path,
                        mty ? mty : "?");
    const char *csp = jstr(model, "continuing_subword_prefix"), *eow = jstr(model, "end_of_word_suffix");
    if ((csp && *csp) || (eow && *eow))
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: BPE continuing_subword_prefix / end_of_word_suffix", path);
    tf_cfg tc = {0};
    const char *cls = cfg ? jstr(cfg, "tokenizer_class") : NULL;
    if (tf_mode && cls && (!strcmp(cls, "LlamaTokenizer") || !strcmp(cls, "LlamaTokenizerFast"))) {
        tc.llama = 1;
        tc.legacy = jbool(cfg, "legacy", 0);
        tc.add_prefix_space = jbool(cfg, "add_prefix_space", 1);
        tc.add_bos = jbool(cfg, "add_bos_token", 1);
        tc.add_eos = jbool(cfg, "add_eos_token", 0);
    }
    if (cfg) {
        tc.bos = tok_name(cfg, "bos_token");
        tc.eos = tok_name(cfg, "eos_token");
    }

    /* ids: model vocab and added tokens */
    int32_t maxid = -1;
    const char *k;
    json_t *v;
    json_object_foreach(vocab, k, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > (1 << 24))
            return KILN_ERR(err, KILN_ERR_FORMAT, "%s: vocab entry \"%s\" has a bad id", path, k);
        if (json_integer_value(v) > maxid) maxid = (int32_t)json_integer_value(v);
    }
    json_t *added = json_object_get(root, "added_tokens");
    size_t i;
    json_array_foreach(added, i, v) {
        json_int_t id = json_integer_value(json_object_get(v, "id"));
        if (id < 0 || id > (1 << 24)) return KILN_ERR(err, KILN_ERR_FORMAT, "%s: added token with bad id", path);
        if (id > maxid) maxid = (int32_t)id;
    }
    int rc = tok_alloc_tables(t, maxid + 1, err);
    if (rc) return rc;
    if (tok_strmap_init(&t->vocab, (uint32_t)json_object_size(vocab))) return OOM();
    char **strs = kiln_calloc((size_t)maxid + 1, sizeof *strs); /* borrowed from the JSON */
    size_t *lens = kiln_calloc((size_t)maxid + 1, sizeof *lens);
    if (!strs || !lens) {
        kiln_free(strs);
        kiln_free(lens);
        return OOM();
    }
    json_object_foreach(vocab, k, v) {
        int32_t id = (int32_t)json_integer_value(v);
        strs[id] = (char *)k;
        lens[id] = strlen(k);
        if (tok_strmap_put(&t->vocab, k, lens[id], id)) rc = OOM();
    }
    /* added tokens */
    m->added = kiln_calloc(json_array_size(added) + 1, sizeof *m->added);
    if (!m->added) rc = OOM();
    json_array_foreach(added, i, v) {
        if (rc) break;
        hf_added *a = &m->added[m->n_added++];
        json_t *c = json_object_get(v, "content");
        a->id = (int32_t)json_integer_value(json_object_get(v, "id"));
        a->n = json_string_length(c);
        a->content = dupn(json_is_string(c) ? json_string_value(c) : "", a->n);
        a->special = jbool(v, "special", 0);
        a->normalized = jbool(v, "normalized", !a->special);
        a->lstrip = jbool(v, "lstrip", 0);
        a->rstrip = jbool(v, "rstrip", 0);
        a->single_word = jbool(v, "single_word", 0);
        if (!a->content) {
            rc = OOM();
            break;
        }
        strs[a->id] = a->content;
        lens[a->id] = a->n;
        t->special[a->id] = (uint8_t)a->special;
    }
    /* byte tokens */
    for (int b = 0; b < 256; b++) {
        char bt[8];
        snprintf(bt, sizeof bt, "<0x%02X>", b);
        m->byte_ids[b] = tok_strmap_get(&t->vocab, bt, 6);
    }
    /* pipeline */
    if (!rc) {
        if (tc.llama) {
            hf_pre *p = new_pre(m);
            if (!p) rc = OOM();
            else {
                p->type = HF_PRE_METASPACE;
                memcpy(p->repl, "\xE2\x96\x81", 3);
                p->repln = 3;
                p->prepend = tc.add_prefix_space ? (tc.legacy ? 1 : 2) : 0;
                p->split = 0;
            }
        } else {
            rc = add_norm(m, json_object_get(root, "normalizer"), path, err);
            if (!rc) rc = add_pre(m, json_object_get(root, "pre_tokenizer"), path, err);
        }
    }
    /* normalized forms of normalized added tokens */
    for (int j = 0; !rc && j < m->n_added; j++) {
        hf_added *a = &m->added[j];
        if (a->normalized) rc = hf_normalize(m->norms, m->n_norms, a->content, a->n, &a->norm, &a->nn, err);
    }
    /* as `tokenizers` does, a normalized added token is known (and decoded) by its normalized
     * form: with a Prepend normalizer "<unk>" decodes as " <unk>" */
    for (int j = 0; !rc && j < m->n_added; j++) {
        hf_added *a = &m->added[j];
        if (a->normalized && m->n_norms > 0) {
            strs[a->id] = a->norm;
            lens[a->id] = a->nn;
        }
    }
    /* model options */
    const char *unk = jstr(model, "unk_token");
    m->unk = (!tc.llama && unk) ? tok_strmap_get(&t->vocab, unk, strlen(unk)) : -1;
    m->fuse_unk = jbool(model, "fuse_unk", 0);
    m->byte_fallback = jbool(model, "byte_fallback", 0);
    m->ignore_merges = jbool(model, "ignore_merges", 0);
    if (tc.llama) {
        m->fuse_unk = 1;
        m->byte_fallback = 1;
    }
    /* merges */
    if (!rc && tok_pairmap_init(&m->merges, (uint32_t)json_array_size(merges) + 1)) rc = OOM();
    char *scratch = NULL;
    size_t scap = 0;
    json_array_foreach(merges, i, v) {
        if (rc) break;
        const char *a, *b;
        size_t al, bl;
        if (json_is_string(v)) {
            const char *s = json_string_value(v), *sp = strchr(s, ' ');
            if (!sp) {
                rc = KILN_ERR(err, KILN_ERR_FORMAT, "%s: merge %zu \"%s\" is not \"a b\"", path, i, s);
                break;
            }
            a = s;
            al = (size_t)(sp - s);
            b = sp + 1;
            bl = strlen(b);
        } else if (json_is_array(v) && json_array_size(v) == 2) {
            a = json_string_value(json_array_get(v, 0));
            b = json_string_value(json_array_get(v, 1));
            if (!a || !b) {
                rc = KILN_ERR(err, KILN_ERR_FORMAT, "%s: merge %zu is not a pair of strings", path, i);
                break;
            }
            al = strlen(a);
            bl = strlen(b);
        } else {
            rc = KILN_ERR(err, KILN_ERR_FORMAT, "%s: merge %zu has a bad form", path, i);
            break;
        }
        if (al + bl > scap) {
            scap = (al + bl) * 2 + 64;
            kiln_free(scratch);
            scratch = kiln_malloc(scap);
            if (!scratch) {
                rc = OOM();
                break;
            }
        }
        memcpy(scratch, a, al);
        memcpy(scratch + al, b, bl);
        int32_t ia = tok_strmap_get(&t->vocab, a, al), ib = tok_strmap_get(&t->vocab, b, bl);
        int32_t im = tok_strmap_get(&t->vocab, scratch, al + bl);
        if (ia < 0 || ib < 0 || im < 0) {
            rc = KILN_ERR(err, KILN_ERR_FORMAT, "%s: merge %zu uses a token that is not in the vocab", path, i);
            break;
        }
        if (tok_pairmap_put(&m->merges, ia, ib, (int32_t)i, im)) rc = OOM();
    }
    kiln_free(scratch);
    /* post-processor */
    if (!rc) {
        if (tc.llama) {
            int32_t bid = tc.bos ? added_or_vocab_id(t, m, tc.bos) : -1;
            int32_t eid = tc.eos ? added_or_vocab_id(t, m, tc.eos) : -1;
            if (tc.add_bos && bid >= 0 && tmpl_push(m, 0, &bid, 1)) rc = OOM();
            if (!rc && tmpl_push(m, 1, NULL, 0)) rc = OOM();
            if (!rc && tc.add_eos && eid >= 0 && tmpl_push(m, 0, &eid, 1)) rc = OOM();
        } else {
            rc = add_post(t, m, json_object_get(root, "post_processor"), path, err);
        }
    }
    /* the template's ids are emitted as they are: each must be a token (a fuzzed file had
     * "ids": [528] in a 268-token vocabulary, and encode returned id 528) */
    for (int i = 0; !rc && i < m->n_tmpl; i++)
        for (int k = 0; !rc && k < m->tmpl[i].n_ids; k++)
            if (m->tmpl[i].ids[k] < 0 || m->tmpl[i].ids[k] > maxid)
                rc = KILN_ERR(err, KILN_ERR_FORMAT, "%s: post_processor token id %d is outside the vocabulary (0..%d)",
                              path, (int)m->tmpl[i].ids[k], maxid);
    /* decoder -> token table */
    dec_op ops[32];
    int n_ops = 0;
    if (!rc) {
        if (tc.llama) {
            ops[0] = (dec_op){D_REPLACE, "\xE2\x96\x81", " ", 0, 0, 0};
            ops[1] = (dec_op){D_BYTEFALLBACK, NULL, NULL, 0, 0, 0};
            ops[2] = (dec_op){D_FUSE, NULL, NULL, 0, 0, 0};
            ops[3] = (dec_op){D_STRIP, NULL, NULL, 1, 0, 0};
            n_ops = tc.add_prefix_space ? 4 : 3;
        } else {
            rc = collect_dec(json_object_get(root, "decoder"), ops, &n_ops, path, err);
        }
    }
    kiln_buf db = {0};
    for (int id = 0; !rc && id <= maxid; id++) {
        const char *s = strs[id] ? strs[id] : "";
        if (decode_token(t, ops, n_ops, s, lens[id], &db)) rc = OOM();
        else rc = tok_set_token(t, id, s, lens[id], db.p ? db.p : "", db.len, err);
    }
    kiln_buf_free(&db);
    kiln_free(strs);
    kiln_free(lens);
    if (rc) return rc;
    /* BOS / EOS: the config's names, else the template's first special token */
    t->bos = tc.bos ? added_or_vocab_id(t, m, tc.bos) : -1;
    t->eos = tc.eos ? added_or_vocab_id(t, m, tc.eos) : -1;
    if (t->bos < 0)
        for (int j = 0; j < m->n_tmpl; j++)
            if (!m->tmpl[j].is_seq && m->tmpl[j].n_ids) {
                t->bos = m->tmpl[j].ids[0];
                break;
            }
    if (t->eos < 0) {
        static const char *names[] = {"</s>", "<|endoftext|>", "<|end_of_text|>", "<|im_end|>", "<eos>", NULL};
        for (int j = 0; names[j] && t->eos < 0; j++) t->eos = added_or_vocab_id(t, m, names[j]);
    }
    return KILN_OK;
}

int tok_load_hf(kiln_tokenizer *t, const char *path, const char *config_path, int tf_mode,
                kiln_error *err) {
    json_error_t je;
    json_t *root = json_load_file(path, JSON_ALLOW_NUL, &je);
    if (!root)
        return KILN_JSON_FAIL(err, &je, path, "%s: JSON error at line %d: %s", path, je.line, je.text);
    /* huge integers (model_max_length 1e30) would fail to parse as json_int_t */
    json_t *cfg = config_path ? json_load_file(config_path, JSON_DECODE_INT_AS_REAL, &je) : NULL;
    if (config_path && !cfg && kiln_json_oom(&je)) {
        /* an unreadable tokenizer_config.json is ignored as before; running out of memory is not
         * a reason to drop its chat template */
        json_decref(root);
        return KILN_ERR(err, KILN_ERR_OOM, "%s: out of memory reading it", config_path);
    }
    hf_model *m = kiln_calloc(1, sizeof *m);
    int rc;
    if (!m) rc = OOM();
    else {
        t->impl = m;
        t->impl_free = hf_model_free;
        t->kind = KILN_TOK_KIND_HF;
        t->encode = hf_encode;
        rc = load_model(t, m, root, cfg, tf_mode, path, err);
    }
    const char *ct = cfg ? jstr(cfg, "chat_template") : NULL; /* a string (named lists: not used) */
    if (rc == KILN_OK && ct && !(t->chat_template = kiln_strdup(ct))) rc = OOM();
    json_decref(root);
    if (cfg) json_decref(cfg);
    return rc;
}
