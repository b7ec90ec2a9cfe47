/* tok_gguf.c: GGUF vocabularies (tokenizer.ggml.*), tokenized as llama.cpp does.
 *
 * Keys: model ("llama" = SentencePiece with scores, "gpt2" = byte-level BPE with merges),
 * tokens, token_type (1 normal, 2 unknown, 3 control, 4 user_defined, 5 unused, 6 byte),
 * scores, merges, pre (the pre-tokenizer's name), bos/eos_token_id, add_bos/add_eos_token,
 * add_space_prefix, chat_template. A vocabulary-only GGUF (no tensors) loads the same way.
 *
 * Both kinds first cut the text on special tokens, as llama.cpp's tokenizer_st_partition:
 * user-defined tokens always, control/unknown ones only with KILN_TOK_PARSE_SPECIAL. The cut
 * is done by the HF added-token splitter (tok_hf_encode.c) over an hf_model built here.
 *
 * gpt2: the pre name picks llama.cpp's regex list (each regex splits the previous pieces,
 * matches and gaps both kept), then bytes -> GPT-2 alphabet -> rank BPE over the merges (the
 * tokenizer.json pipeline with Split(Isolated) pre-tokenizers and ByteLevel, no regex). An
 * unknown pre name is refused: a wrong regex would tokenize silently wrong. Where llama.cpp
 * rewrote a model's regex for its own engine, or shortened a step, kiln keeps the model's
 * published pipeline (PCRE2 has \p{Lu}, lookahead, ...), which the tests check against HF
 * tokenizers and mistral-common; each such entry says why below. On a vocabulary trained
 * through the model's pipeline both should give the same ids; on others only kiln's is exact.
 * llama (SPM): each text fragment gets " " prepended when it starts the text or follows a
 * special token (add_space_prefix), spaces become U+2581, each UTF-8 character is a symbol
 * (unknown characters -> <0xXX> byte tokens, else unk), and the pair whose concatenation has
 * the highest score is merged, leftmost first (llm_tokenizer_spm).
 */
#include <stdio.h>
#include <string.h>
#include "format/gguf.h"
#include "tokenizer/tok_hf.h"
#include "tokenizer/tok_tekken_split.h"
#include "util/alloc.h"
#include "util/error.h"

#define OOM() KILN_ERR(err, KILN_ERR_OOM, "tokenizer: out of memory")

enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };

/* llama.cpp's pre-tokenizer regexes by tokenizer.ggml.pre name (llama-vocab.cpp) */
#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define RE_LLAMA3                                                                                   \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"      \
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN2                                                                                    \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"      \
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
/* tekken (Mistral-Nemo, Pixtral-12B, Devstral, Mistral-Small-3): the pattern of tekken.json, as
 * mistral-common's tiktoken applies it. llama.cpp replaces the case classes by
 * ((?=[\p{L}])([^a-z]))* ... ([^A-Z]) for its std::regex, which splits combining marks from their
 * letters ("café" in NFD) and differs on non-ASCII case changes; kiln uses the original, cut by
 * tok_tekken_split.c with mistral-common's Unicode version (16.0), not PCRE2. */
#define RE_TEKKEN                                                                                   \
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|"    \
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|"    \
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
/* deepseek-llm (DeepSeek-LLM, DeepSeek-V2): the cased-letter ranges of its tokenizer.json, here
 * as \x{...} code points (the file has them as UTF-8 text) */
#define RE_DEEPSEEK_LETTERS                                                                         \
    "\\s?[A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}"             \
    "\\x{1C4}-\\x{293}\\x{295}-\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37B}-\\x{37D}"          \
    "\\x{37F}\\x{386}\\x{388}-\\x{38A}\\x{38C}\\x{38E}-\\x{3A1}\\x{3A3}-\\x{3F5}"                   \
    "\\x{3F7}-\\x{481}\\x{48A}-\\x{52F}\\x{531}-\\x{556}\\x{10A0}-\\x{10C5}"                        \
    "\\x{13A0}-\\x{13F5}\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}"                  \
    "\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}\\x{1E00}-\\x{1F15}"                  \
    "\\x{1F18}-\\x{1F1D}\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}\\x{1F50}-\\x{1F57}\\x{1F59}"         \
    "\\x{1F5B}\\x{1F5D}\\x{1F5F}-\\x{1F7D}\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}\\x{1FBE}"          \
    "\\x{1FC2}-\\x{1FC4}\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}\\x{1FD6}-\\x{1FDB}"                  \
    "\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}"                   \
    "\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}\\x{2124}\\x{2126}\\x{2128}"                    \
    "\\x{212A}-\\x{212D}\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}\\x{2145}-\\x{2149}"         \
    "\\x{214E}\\x{2183}\\x{2184}\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}\\x{2CEB}-\\x{2CEE}"          \
    "\\x{2CF2}\\x{2CF3}\\x{A640}-\\x{A66D}\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}"                   \
    "\\x{A771}-\\x{A787}\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}\\x{FB00}-\\x{FB06}"                  \
    "\\x{FB13}-\\x{FB17}\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}"                \
    "\\x{104B0}-\\x{104D3}\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}"          \
    "\\x{118A0}-\\x{118DF}\\x{1E900}-\\x{1E943}]+"
#define RE_DEEPSEEK_PUNCT "\\s?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3000}-\\x{3002}]+"
#define RE_DEEPSEEK_CJK "[\\x{4E00}-\\x{9FA5}\\x{800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+"
#define RE_DEEPSEEK3_CJK "[\\x{4E00}-\\x{9FA5}\\x{3040}-\\x{309F}\\x{30A0}-\\x{30FF}]+"
#define RE_DEEPSEEK3                                                                                \
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|"                                        \
    "[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"                                                  \
    " ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define PRE_MAX_RE 6
static const struct {
    const char *names; /* '|'-separated */
    const char *re[PRE_MAX_RE];
    int ignore_merges, add_bos;
} k_pre[] = {
    {"llama3|llama-v3|llama-bpe|falcon3|falcon-h1|pixtral", {RE_LLAMA3}, 1, 1},
    {"qwen2|deepseek-r1-qwen|stablelm2", {RE_QWEN2}, 0, 0},
    {"gpt-2|mpt|olmo|jais", {RE_GPT2}, 0, 0},
    {"smollm|starcoder|refact|command-r|codeshell|exaone|minerva", {"\\p{N}", RE_GPT2}, 0, 0},
    {"tekken", {RE_TEKKEN}, 1, 1},
    /* deepseek-llm, deepseek-coder: their Digits(individual_digits) step is \p{N}; llama.cpp
     * has \p{N}+ for deepseek-llm, which differs only where a vocabulary merges digits */
    {"deepseek-llm", {"[\\r\\n]", RE_DEEPSEEK_LETTERS, RE_DEEPSEEK_PUNCT, "\\s+$", RE_DEEPSEEK_CJK, "\\p{N}"}, 0, 0},
    {"deepseek-coder", {"[\\r\\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", RE_DEEPSEEK_CJK, "\\p{N}"}, 0, 0},
    {"deepseek-v3", {"\\p{N}{1,3}", RE_DEEPSEEK3_CJK, RE_DEEPSEEK3}, 0, 0},
    /* falcon: Punctuation, ByteLevel's regex, Digits (runs), Split [0-9]{3}; llama.cpp leaves out
     * the Digits step, so " 12" stays one piece (which matters only where a vocabulary has
     * space-digit tokens). The two digit steps of tokenizer.json run on byte-level text, where
     * bytes B2 B3 B9 BC-BE are the numbers ²³¹¼½¾: HF cuts inside the UTF-8 characters that
     * hold them ("м" is D0 BC); no regex over text can (nor does llama.cpp's). */
    {"falcon", {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RE_GPT2, "[0-9]+", "[0-9][0-9][0-9]"}, 0, 0},
    {"default", {"[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"}, 0, 0},
};

static int pre_lookup(const char *name) {
    size_t nl = strlen(name);
    for (int i = 0; i < (int)(sizeof k_pre / sizeof k_pre[0]); i++) {
        const char *p = k_pre[i].names;
        while (*p) {
            const char *e = strchr(p, '|');
            size_t l = e ? (size_t)(e - p) : strlen(p);
            if (l == nl && memcmp(p, name, l) == 0) return i;
            p += l + (e ? 1 : 0);
        }
    }
    return -1;
}

typedef struct gguf_vocab {
    hf_model *hf;       /* added tokens (both kinds); the whole pipeline for gpt2 */
    int spm;
    int add_bos, add_eos, add_space_prefix;
    int32_t unk;
    int32_t byte_ids[256];
} gguf_vocab;

static void gv_free(void *p) {
    gguf_vocab *v = p;
    if (!v) return;
    hf_model_free(v->hf);
    kiln_free(v);
}

/* SentencePiece encode of one raw-text fragment */
static int spm_fragment(const kiln_tokenizer *t, const gguf_vocab *v, const char *s, size_t n,
                        int prefix, tok_ivec *out, kiln_error *err) {
    kiln_buf b = {0};
    tok_ivec ids = {0};
    int rc = KILN_OK;
    if (prefix && kiln_buf_add(&b, "\xE2\x96\x81", 3)) rc = OOM();
    for (size_t i = 0; rc == KILN_OK && i < n; i++)
        if (s[i] == ' ' ? kiln_buf_add(&b, "\xE2\x96\x81", 3) : kiln_buf_addc(&b, s[i])) rc = OOM();
    for (size_t i = 0; rc == KILN_OK && i < b.len;) {
        int bad = 0, l = tok_utf8_valid_len((const unsigned char *)b.p + i, b.len - i, &bad);
        if (l == 0) l = bad;
        int32_t id = tok_strmap_get(&t->vocab, b.p + i, (size_t)l);
        if (id >= 0) {
            if (tok_ivec_push(&ids, id)) rc = OOM();
        } else {
            for (int k = 0; k < l && rc == KILN_OK; k++) {
                int32_t bid = v->byte_ids[(unsigned char)b.p[i + k]];
                if (bid < 0) bid = v->unk;
                if (bid >= 0 && tok_ivec_push(&ids, bid)) rc = OOM();
            }
        }
        i += (size_t)l;
    }
    if (rc == KILN_OK) rc = tok_bpe_score_merge(t, &ids, err);
    for (int i = 0; rc == KILN_OK && i < ids.n; i++)
        if (tok_ivec_push(out, ids.p[i])) rc = OOM();
    kiln_buf_free(&b);
    tok_ivec_free(&ids);
    return rc;
}

static int gguf_encode(const kiln_tokenizer *t, const char *text, size_t len, int flags,
                       tok_ivec *out, kiln_error *err) {
    const gguf_vocab *v = t->impl;
    int add = (flags & KILN_TOK_ADD_BOS) != 0, rc = KILN_OK;
    if (add && v->add_bos && t->bos >= 0 && tok_ivec_push(out, t->bos)) return OOM();
    if (!v->spm) {
        rc = hf_encode_model(t, v->hf, text, len, flags & ~KILN_TOK_ADD_BOS, out, err);
    } else {
        char *s;
        size_t n;
        tok_ivec parts = {0};
        if (tok_utf8_sanitize(text, len, &s, &n)) return OOM();
        rc = hf_split_added_tokens(v->hf, s, n, (flags & KILN_TOK_PARSE_SPECIAL) != 0, &parts, err);
        int prev_special = 1;
        for (int i = 0; rc == KILN_OK && i + 3 <= parts.n; i += 3) {
            int32_t a = parts.p[i], e = parts.p[i + 1], id = parts.p[i + 2];
            if (id >= 0) {
                rc = tok_ivec_push(out, id) ? OOM() : KILN_OK;
                prev_special = 1;
            } else {
                rc = spm_fragment(t, v, s + a, (size_t)(e - a), v->add_space_prefix && prev_special, out, err);
                prev_special = 0;
            }
        }
        tok_ivec_free(&parts);
        kiln_free(s);
    }
    if (rc == KILN_OK && add && v->add_eos && t->eos >= 0 && tok_ivec_push(out, t->eos)) rc = OOM();
    return rc;
}

static int get_id(kiln_gguf *g, const char *key, int n, int32_t *id) {
    int64_t x;
    if (kiln_gguf_get_i64(g, key, &x) == 0 && x >= 0 && x < n) *id = (int32_t)x;
    return 0;
}

/* token string -> decoded bytes (gpt2: GPT-2 alphabet -> bytes; spm: U+2581 -> space, <0xXX>) */
static int decoded(const char *s, size_t n, int type, int spm, kiln_buf *o) {
    kiln_buf_clear(o);
    if (kiln_buf_add(o, "", 0)) return -1;
    if (type == TT_CONTROL || type == TT_USER || type == TT_UNKNOWN) return kiln_buf_add(o, s, n);
    if (spm) {
        int b = tok_parse_byte_token(s, n);
        if (b >= 0) {
            char c = (char)b;
            return kiln_buf_add(o, &c, 1);
        }
        for (size_t i = 0; i < n;) {
            if (i + 3 <= n && !memcmp(s + i, "\xE2\x96\x81", 3)) {
                if (kiln_buf_addc(o, ' ')) return -1;
                i += 3;
            } else if (kiln_buf_addc(o, s[i++])) {
                return -1;
            }
        }
        return 0;
    }
    for (size_t i = 0; i < n;) {
        int bad = 0, l = tok_utf8_valid_len((const unsigned char *)s + i, n - i, &bad);
        int byte = l ? hf_cp_to_byte(tok_utf8_cp((const unsigned char *)s + i, l)) : -1;
        if (byte < 0) { /* outside the byte alphabet: keep the text as is */
            kiln_buf_clear(o);
            return kiln_buf_add(o, s, n);
        }
        if (kiln_buf_addc(o, (char)byte)) return -1;
        i += (size_t)l;
    }
    return 0;
}

static int load_merges(kiln_tokenizer *t, kiln_gguf *g, hf_model *m, const char *path, kiln_error *err) {
    kiln_gguf_type et;
    uint64_t nm;
    if (kiln_gguf_get_arr(g, "tokenizer.ggml.merges", &et, &nm) || et != KILN_GGUF_STRING)
        return KILN_ERR(err, KILN_ERR_FORMAT, "%s: gpt2 vocabulary without tokenizer.ggml.merges", path);
    if (tok_pairmap_init(&m->merges, (uint32_t)nm + 1)) return OOM();
    size_t cap = 2 * (size_t)t->max_tok_len + 2; /* a longer merge cannot join two tokens */
    char *buf = kiln_malloc(cap);
    if (!buf) return OOM();
    for (uint64_t i = 0; i < nm; i++) {
        kiln_gguf_str ms;
        kiln_gguf_arr_str(g, "tokenizer.ggml.merges", i, &ms);
        const char *sp = ms.len > 1 ? memchr(ms.ptr + 1, ' ', ms.len - 1) : NULL; /* as llama.cpp: from 1 */
        if (!sp) {
            kiln_free(buf);
            return KILN_ERR(err, KILN_ERR_FORMAT, "%s: merge %llu is not \"a b\"", path, (unsigned long long)i);
        }
        if (ms.len > cap) continue;
        size_t la = (size_t)(sp - ms.ptr), lb = ms.len - la - 1;
        memcpy(buf, ms.ptr, ms.len);
        int32_t a = tok_strmap_get(&t->vocab, buf, la), b = tok_strmap_get(&t->vocab, buf + la + 1, lb);
        memmove(buf + la, buf + la + 1, lb);
        int32_t c = tok_strmap_get(&t->vocab, buf, la + lb);
        if (a < 0 || b < 0 || c < 0) continue; /* llama.cpp would fall back to bytes; never merged */
        int32_t r0, i0;
        if (tok_pairmap_get(&m->merges, a, b, &r0, &i0)) continue; /* first rank wins */
        if (tok_pairmap_put(&m->merges, a, b, (int32_t)i, c)) {
            kiln_free(buf);
            return OOM();
        }
    }
    kiln_free(buf);
    return KILN_OK;
}

int tok_load_gguf(kiln_tokenizer *t, const char *path, kiln_error *err) {
    kiln_gguf *g = NULL;
    int rc = kiln_gguf_open(&g, path, err);
    if (rc) return rc;
    gguf_vocab *v = kiln_calloc(1, sizeof *v);
    hf_model *m = kiln_calloc(1, sizeof *m);
    kiln_buf db = {0};
    if (!v || !m) {
        kiln_free(v);
        kiln_free(m);
        kiln_gguf_close(g);
        return OOM();
    }
    v->hf = m;
    t->impl = v;
    t->impl_free = gv_free;
    m->unk = -1;
    v->unk = -1;
    for (int b = 0; b < 256; b++) v->byte_ids[b] = m->byte_ids[b] = -1;
    kiln_gguf_str ms = {0}, ps = {0};
    char model[32] = "", pre[64] = "default";
    if (kiln_gguf_get_str(g, "tokenizer.ggml.model", &ms)) {
        rc = KILN_ERR(err, KILN_ERR_UNSUPPORTED, "%s: no tokenizer.ggml.model: the GGUF has no vocabulary", path);
        goto done;
    }
    snprintf(model, sizeof model, "%.*s", (int)(ms.len < 31 ? ms.len : 31), ms.ptr);
    if (!kiln_gguf_get_str(g, "tokenizer.ggml.pre", &ps))
        snprintf(pre, sizeof pre, "%.*s", (int)(ps.len < 63 ? ps.len : 63), ps.ptr);
    if (strcmp(model, "llama") && strcmp(model, "gpt2")) {
        rc = KILN_ERR(err, KILN_ERR_UNSUPPORTED,
                      "%s: tokenizer.ggml.model \"%s\" is not supported (only \"llama\" SentencePiece and "
                      "\"gpt2\" BPE vocabularies)", path, model);
        goto done;
    }
    v->spm = !strcmp(model, "llama");
    int pi = -1;
    if (!v->spm && (pi = pre_lookup(pre)) < 0) {
        rc = KILN_ERR(err, KILN_ERR_UNSUPPORTED,
                      "%s: tokenizer.ggml.pre \"%s\" names a pre-tokenizer kiln does not know (known: llama-bpe, "
                      "llama3, pixtral, tekken, qwen2, deepseek-llm, deepseek-coder, deepseek-v3, falcon, gpt-2, "
                      "mpt, smollm, starcoder, command-r, default)", path, pre);
        goto done;
    }
    kiln_gguf_type et;
    uint64_t n;
    if (kiln_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n) || et != KILN_GGUF_STRING || n == 0 ||
        n > (1u << 24)) {
        rc = KILN_ERR(err, KILN_ERR_FORMAT, "%s: tokenizer.ggml.tokens is missing or not a string array", path);
        goto done;
    }
    int nv = (int)n, have_types = 0, have_scores = 0;
    uint64_t nt = 0;
    if (!kiln_gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &nt) && nt == n) have_types = 1;
    if (!kiln_gguf_get_arr(g, "tokenizer.ggml.scores", &et, &nt) && nt == n) have_scores = 1;
    if ((rc = tok_alloc_tables(t, nv, err))) goto done;
    if (v->spm && !(t->scores = kiln_calloc((size_t)nv, sizeof *t->scores))) {
        rc = OOM();
        goto done;
    }
    uint8_t *types = kiln_malloc((size_t)nv);
    if (!types) {
        rc = OOM();
        goto done;
    }
    for (int i = 0; i < nv && rc == KILN_OK; i++) {
        kiln_gguf_str s;
        int64_t ty = TT_NORMAL;
        double sc = 0;
        kiln_gguf_arr_str(g, "tokenizer.ggml.tokens", (uint64_t)i, &s);
        if (have_types) kiln_gguf_arr_i64(g, "tokenizer.ggml.token_type", (uint64_t)i, &ty);
        if (have_scores) kiln_gguf_arr_f64(g, "tokenizer.ggml.scores", (uint64_t)i, &sc);
        if (v->spm) t->scores[i] = (float)sc;
        types[i] = (uint8_t)(ty >= 1 && ty <= 6 ? ty : TT_NORMAL);
        if (decoded(s.ptr, s.len, types[i], v->spm, &db)) rc = OOM();
        else rc = tok_set_token(t, i, s.ptr, s.len, db.p, db.len, err);
        t->special[i] = types[i] == TT_CONTROL || types[i] == TT_UNKNOWN;
        if (v->spm && types[i] == TT_BYTE) {
            int b = tok_parse_byte_token(s.ptr, s.len);
            if (b >= 0 && v->byte_ids[b] < 0) v->byte_ids[b] = i;
        }
    }
    if (rc == KILN_OK) rc = tok_build_vocab_map(t, 1, err);
    /* special tokens for the partition: user-defined always, control/unknown on request */
    for (int i = 0; i < nv && rc == KILN_OK; i++) {
        if (types[i] != TT_CONTROL && types[i] != TT_USER && types[i] != TT_UNKNOWN) continue;
        if (t->str_len[i] == 0) continue;
        hf_added *na = kiln_realloc(m->added, (size_t)(m->n_added + 1) * sizeof *na);
        if (!na) {
            rc = OOM();
            break;
        }
        m->added = na;
        hf_added *a = &m->added[m->n_added++];
        memset(a, 0, sizeof *a);
        size_t l;
        const char *s = tok_str(t, i, &l);
        a->id = i;
        a->n = l;
        a->special = types[i] != TT_USER;
        if (!(a->content = kiln_strndup(s, l))) rc = OOM();
    }
    kiln_free(types);
    if (rc) goto done;
    t->bos = t->eos = -1;
    get_id(g, "tokenizer.ggml.bos_token_id", nv, &t->bos);
    get_id(g, "tokenizer.ggml.eos_token_id", nv, &t->eos);
    get_id(g, "tokenizer.ggml.unknown_token_id", nv, &v->unk);
    v->add_bos = v->spm ? 1 : k_pre[pi].add_bos;
    v->add_space_prefix = v->spm;
    int bv;
    if (!kiln_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &bv)) v->add_bos = bv;
    if (!kiln_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &bv)) v->add_eos = bv;
    if (!kiln_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &bv)) v->add_space_prefix = bv;
    kiln_gguf_str ct;
    if (!kiln_gguf_get_str(g, "tokenizer.chat_template", &ct) &&
        !(t->chat_template = kiln_strndup(ct.ptr, ct.len))) {
        rc = OOM();
        goto done;
    }
    t->kind = KILN_TOK_KIND_GGUF;
    t->encode = gguf_encode;
    if (v->spm) {
        t->strip_mode = v->add_space_prefix ? TOK_STRIP_AFTER_BOS : TOK_STRIP_NONE;
    } else {
        t->strip_mode = TOK_STRIP_NONE;
        m->byte_level = 1;
        m->ignore_merges = k_pre[pi].ignore_merges;
        for (int k = 0; k < PRE_MAX_RE && k_pre[pi].re[k] && rc == KILN_OK; k++) {
            hf_pre *np = kiln_realloc(m->pres, (size_t)(m->n_pres + 1) * sizeof *np);
            if (!np) {
                rc = OOM();
                break;
            }
            m->pres = np;
            hf_pre *p = &m->pres[m->n_pres++];
            memset(p, 0, sizeof *p);
            p->type = HF_PRE_SPLIT;
            p->beh = HF_SPLIT_ISOLATED;
            if (!strcmp(k_pre[pi].re[k], kiln_tekken_pattern)) {
                p->tekken = 1; /* mistral-common's Unicode version, not PCRE2's */
                continue;
            }
            p->re = hf_regex_compile(k_pre[pi].re[k], strlen(k_pre[pi].re[k]), path, err);
            if (!p->re) rc = err->code;
        }
        hf_pre *np = rc ? NULL : kiln_realloc(m->pres, (size_t)(m->n_pres + 1) * sizeof *np);
        if (!rc && !np) rc = OOM();
        if (rc) goto done;
        m->pres = np;
        hf_pre *p = &m->pres[m->n_pres++];
        memset(p, 0, sizeof *p);
        p->type = HF_PRE_BYTELEVEL; /* bytes -> GPT-2 alphabet, no regex, no prefix space */
        rc = load_merges(t, g, m, path, err);
    }
done:
    kiln_buf_free(&db);
    kiln_gguf_close(g);
    return rc;
}
