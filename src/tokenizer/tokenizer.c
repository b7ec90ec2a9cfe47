/* tokenizer.c: loading dispatch, the token table accessors, and decoding.
 *
 * A path is recognised by what it is: a folder (tokenizer.json, then tekken.json, then a
 * llama2.c tokenizer.bin), a .bin (llama2.c), a .json (tokenizer.json when it has "model",
 * tekken when it has "config" + "vocab"), a .gguf (tok_gguf.c); tokenizer.model is refused. Decoding concatenates each token's decoded bytes (built at load from the
 * vocabulary's decoder), applies the vocabulary's leading-space rule, and replaces invalid
 * UTF-8 with U+FFFD so the result is always valid UTF-8.
 */
#include "tokenizer/tok_internal.h"
#include <stdio.h>
#include <string.h>
#include <jansson.h>
#include "util/alloc.h"
#include "util/error.h"
#include "util/mapfile.h"
#include "util/json.h"

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

/* "dir/name" of the file's folder, or "" when no slash */
static void dir_of(const char *path, char *dst, size_t cap) {
    const char *sl = strrchr(path, '/');
    if (!sl) {
        snprintf(dst, cap, ".");
        return;
    }
    size_t n = (size_t)(sl - path);
    if (n >= cap) n = cap - 1;
    memcpy(dst, path, n);
    dst[n] = 0;
    if (n == 0) snprintf(dst, cap, "/");
}

static int has_gguf_magic(const char *path) {
    char m[4] = {0};
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(m, 1, 4, f);
    fclose(f);
    return n == 4 && memcmp(m, "GGUF", 4) == 0;
}

static int load_json_file(kiln_tokenizer *t, const char *path, int opts, kiln_error *err) {
    char cfg[4096], dir[4000];
    dir_of(path, dir, sizeof dir);
    const char *cfgp = NULL;
    if (kiln_path_join(cfg, sizeof cfg, dir, "tokenizer_config.json") == 0 &&
        kiln_file_exists(cfg))
        cfgp = cfg;
    /* tekken files are large; tell the kinds apart by their first keys without a full parse */
    char head[4096];
    FILE *f = fopen(path, "rb");
    if (!f) return KILN_ERR(err, KILN_ERR_IO, "%s: cannot open", path);
    size_t n = fread(head, 1, sizeof head - 1, f);
    fclose(f);
    head[n] = 0;
    int tekken = strstr(head, "\"default_vocab_size\"") != NULL ||
                 strstr(head, "\"num_vocab_tokens\"") != NULL;
    if (tekken || ends_with(path, "tekken.json")) return tok_load_tekken(t, path, err);
    return tok_load_hf(t, path, cfgp, !(opts & KILN_TOK_LOAD_RAW), err);
}

int kiln_tokenizer_load_ex(kiln_tokenizer **out, const char *path, int opts, kiln_error *err) {
    *out = NULL;
    kiln_json_enter();
    kiln_tokenizer *t = kiln_calloc(1, sizeof *t);
    if (!t) return KILN_ERR(err, KILN_ERR_OOM, "tokenizer: out of memory");
    t->bos = t->eos = -1;
    int rc;
    char p[4096];
    if (kiln_is_dir(path)) {
        if (kiln_path_join(p, sizeof p, path, "tokenizer.json") == 0 && kiln_file_exists(p))
            rc = load_json_file(t, p, opts, err);
        else if (kiln_path_join(p, sizeof p, path, "tekken.json") == 0 && kiln_file_exists(p))
            rc = tok_load_tekken(t, p, err);
        else if (kiln_path_join(p, sizeof p, path, "tokenizer.bin") == 0 && kiln_file_exists(p))
            rc = tok_load_llama2c(t, p, err);
        else if (kiln_path_join(p, sizeof p, path, "tokenizer.model") == 0 && kiln_file_exists(p))
            rc = KILN_ERR(err, KILN_ERR_UNSUPPORTED,
                          "%s: SentencePiece tokenizer.model is not supported yet (need tokenizer.json)", p);
        else
            rc = KILN_ERR(err, KILN_ERR_NOT_FOUND,
                          "%s: no tokenizer.json, tekken.json or tokenizer.bin in this folder", path);
    } else if (!kiln_file_exists(path)) {
        rc = KILN_ERR(err, KILN_ERR_IO, "%s: no such tokenizer file", path);
    } else if (ends_with(path, ".gguf") || has_gguf_magic(path)) {
        rc = tok_load_gguf(t, path, err);
    } else if (ends_with(path, ".model")) {
        rc = KILN_ERR(err, KILN_ERR_UNSUPPORTED,
                      "%s: SentencePiece .model files are not supported yet (use tokenizer.json)", path);
    } else if (ends_with(path, ".json")) {
        rc = load_json_file(t, path, opts, err);
    } else {
        rc = tok_load_llama2c(t, path, err);
    }
    if (rc != KILN_OK) {
        kiln_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return KILN_OK;
}

int kiln_tokenizer_load(kiln_tokenizer **out, const char *path, kiln_error *err) {
    return kiln_tokenizer_load_ex(out, path, 0, err);
}

void kiln_tokenizer_free(kiln_tokenizer *t) {
    if (!t) return;
    if (t->impl_free) t->impl_free(t->impl);
    kiln_buf_free(&t->str);
    kiln_buf_free(&t->dec);
    kiln_free(t->str_off);
    kiln_free(t->str_len);
    kiln_free(t->dec_off);
    kiln_free(t->dec_len);
    kiln_free(t->special);
    kiln_free(t->scores);
    tok_strmap_free(&t->vocab);
    kiln_free(t->chat_template);
    kiln_free(t);
}

kiln_tok_kind kiln_tokenizer_kind(const kiln_tokenizer *t) { return t->kind; }
int kiln_tokenizer_vocab_size(const kiln_tokenizer *t) { return t->n_vocab; }
int kiln_tokenizer_bos(const kiln_tokenizer *t) { return t->bos; }
int kiln_tokenizer_eos(const kiln_tokenizer *t) { return t->eos; }
const char *kiln_tokenizer_chat_template(const kiln_tokenizer *t) { return t->chat_template; }
const char *kiln_tokenizer_version(const kiln_tokenizer *t) { return t->version; }
int32_t kiln_tokenizer_token_id(const kiln_tokenizer *t, const char *s) {
    size_t n = strlen(s);
    for (int i = 0; i < t->n_vocab; i++) { /* specials first: they may shadow plain spellings */
        size_t l;
        const char *p = tok_str(t, i, &l);
        if (t->special[i] && l == n && memcmp(p, s, n) == 0) return i;
    }
    return tok_strmap_get(&t->vocab, s, n);
}

int kiln_tokenizer_encode(const kiln_tokenizer *t, const char *text, size_t len, int flags,
                          int32_t **ids, int *n_ids, kiln_error *err) {
    *ids = NULL;
    *n_ids = 0;
    tok_ivec v = {0};
    if (!text && len) return KILN_ERR(err, KILN_ERR_INVALID_ARG, "tokenizer: NULL text");
    if (len > (size_t)INT32_MAX / 2)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "tokenizer: text too long (%zu bytes)", len);
    int rc = t->encode(t, text ? text : "", len, flags, &v, err);
    if (rc != KILN_OK) {
        tok_ivec_free(&v);
        return rc;
    }
    if (!v.p) { /* empty result: still hand back a valid allocation */
        v.p = kiln_malloc(sizeof(int32_t));
        if (!v.p) return KILN_ERR(err, KILN_ERR_OOM, "tokenizer: out of memory");
    }
    *ids = v.p;
    *n_ids = v.n;
    return KILN_OK;
}

const char *kiln_tok_piece(const kiln_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_vocab) {
        *len = 0;
        return NULL;
    }
    *len = t->dec_len[id];
    return t->dec.p + t->dec_off[id];
}
int kiln_tok_is_special(const kiln_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab && t->special[id];
}
int kiln_tok_strips_leading_space(const kiln_tokenizer *t) { return t->strip_mode != TOK_STRIP_NONE; }

kiln_tok_strip kiln_tok_strip_rule(const kiln_tokenizer *t, int *n) {
    if (n) *n = t->strip_n;
    return t->strip_mode;
}

int kiln_tokenizer_decode(const kiln_tokenizer *t, const int32_t *ids, int n, int skip_special,
                          char **text, size_t *len, kiln_error *err) {
    *text = NULL;
    if (len) *len = 0;
    kiln_buf b = {0};
    if (kiln_buf_add(&b, "", 0) != 0) return KILN_ERR(err, KILN_ERR_OOM, "tokenizer: out of memory");
    int emitted = 0; /* tokens passed to the decoder so far */
    for (int i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_vocab) {
            kiln_buf_free(&b);
            return KILN_ERR(err, KILN_ERR_RANGE, "tokenizer: token id %d out of range [0, %d)", id,
                            t->n_vocab);
        }
        if (skip_special && t->special[id]) continue;
        size_t pl;
        const char *p = kiln_tok_piece(t, id, &pl);
        int strip = 0;
        if (t->strip_mode == TOK_STRIP_AFTER_BOS)
            strip = (i == 0 || ids[i - 1] == t->bos) && !t->special[id];
        else if (t->strip_mode == TOK_STRIP_FIRST_TOKEN)
            strip = emitted == 0;
        if (strip && pl > 0 && p[0] == ' ') {
            p++;
            pl--;
        }
        emitted++;
        if (kiln_buf_add(&b, p, pl) != 0) {
            kiln_buf_free(&b);
            return KILN_ERR(err, KILN_ERR_OOM, "tokenizer: out of memory");
        }
    }
    size_t off = 0;
    if (t->strip_mode == TOK_STRIP_OUTPUT)
        while ((int)off < t->strip_n && off < b.len && b.p[off] == ' ') off++;
    char *clean;
    size_t cn;
    if (tok_utf8_sanitize(b.p + off, b.len - off, &clean, &cn) != 0) {
        kiln_buf_free(&b);
        return KILN_ERR(err, KILN_ERR_OOM, "tokenizer: out of memory");
    }
    kiln_buf_free(&b);
    *text = clean;
    if (len) *len = cn;
    return KILN_OK;
}
