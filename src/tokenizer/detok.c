/* detok.c: the incremental detokenizer (see detok.h).
 *
 * State is the held-back tail of an incomplete UTF-8 sequence (at most 3 bytes), the count of
 * leading spaces still to strip, and what the leading-space rule needs (previous id, whether a
 * token was decoded yet). Each push appends the token's decoded bytes to the tail and releases
 * every position whose fate is decided: a valid character as is, an invalid maximal subpart as
 * U+FFFD (the same substitution tok_utf8_sanitize applies in one-shot decode).
 */
#include "tokenizer/detok.h"
#include <string.h>
#include "tokenizer/tok_internal.h"
#include "util/alloc.h"
#include "util/error.h"

void kiln_detok_init(kiln_detok *d, const kiln_tokenizer *t, int skip_special) {
    memset(d, 0, sizeof *d);
    d->tok = t;
    d->skip_special = skip_special;
    d->prev_id = -1;
    int n = 0;
    if (kiln_tok_strip_rule(t, &n) == KILN_TOK_STRIP_OUTPUT) d->strip_left = n;
}

void kiln_detok_free(kiln_detok *d) { kiln_buf_free(&d->out); }

/* append to the result; out_put(d, "", 0) makes sure it exists (a C string, even if empty) */
static int out_put(kiln_detok *d, const void *s, size_t n) { return kiln_buf_add(&d->out, s, n); }

/* Release the decided prefix of buf[0..n) into out; keep an incomplete tail (final: none). */
static int release(kiln_detok *d, const unsigned char *buf, size_t n, int final) {
    size_t i = 0, run = 0;
    d->n_pend = 0;
    while (i < n) {
        int bad = 0, l = tok_utf8_valid_len(buf + i, n - i, &bad);
        if (l > 0) {
            i += (size_t)l;
            run += (size_t)l;
            continue;
        }
        if (!final && buf[i] >= 0xC2 && buf[i] <= 0xF4 && (size_t)bad == n - i) { /* may complete */
            memcpy(d->pend, buf + i, n - i);
            d->n_pend = (int)(n - i);
            break;
        }
        if (out_put(d, buf + i - run, run) || out_put(d, "\xEF\xBF\xBD", 3)) return -1;
        run = 0;
        i += (size_t)bad;
    }
    return out_put(d, buf + i - run, run);
}

int kiln_detok_push(kiln_detok *d, int32_t id, const char **text, size_t *len, kiln_error *err) {
    const kiln_tokenizer *t = d->tok;
    kiln_buf_clear(&d->out);
    *text = "";
    *len = 0;
    if (id < 0 || id >= kiln_tokenizer_vocab_size(t))
        return KILN_ERR(err, KILN_ERR_RANGE, "detok: token id %d out of range [0, %d)", id,
                        kiln_tokenizer_vocab_size(t));
    int first = d->n_pushed == 0, after_bos = d->prev_id >= 0 && d->prev_id == kiln_tokenizer_bos(t);
    d->n_pushed++;
    d->prev_id = id;
    int special = kiln_tok_is_special(t, id);
    if (d->skip_special && special) {
        if (out_put(d, "", 0)) goto oom;
        *text = d->out.p;
        return KILN_OK;
    }
    size_t pl;
    const char *p = kiln_tok_piece(t, id, &pl);
    kiln_tok_strip rule = kiln_tok_strip_rule(t, NULL);
    int strip = 0;
    if (rule == KILN_TOK_STRIP_AFTER_BOS) strip = (first || after_bos) && !special;
    else if (rule == KILN_TOK_STRIP_FIRST_TOKEN) strip = d->n_decoded == 0;
    d->n_decoded++;
    if (strip && pl > 0 && p[0] == ' ') {
        p++;
        pl--;
    }
    while (d->strip_left > 0 && pl > 0) { /* OUTPUT rule: leading spaces of the whole text */
        if (p[0] != ' ') {
            d->strip_left = 0;
            break;
        }
        p++;
        pl--;
        d->strip_left--;
    }
    unsigned char small[64];
    unsigned char *buf = small;
    size_t n = (size_t)d->n_pend + pl;
    if (n > sizeof small) {
        buf = kiln_malloc(n);
        if (!buf) goto oom;
    }
    memcpy(buf, d->pend, (size_t)d->n_pend);
    memcpy(buf + d->n_pend, p, pl);
    int bad = release(d, buf, n, 0) || out_put(d, "", 0);
    if (buf != small) kiln_free(buf);
    if (bad) goto oom;
    *text = d->out.p;
    *len = d->out.len;
    return KILN_OK;
oom:
    return KILN_ERR(err, KILN_ERR_OOM, "detok: out of memory");
}

int kiln_detok_flush(kiln_detok *d, const char **text, size_t *len, kiln_error *err) {
    unsigned char tail[4];
    size_t n = (size_t)d->n_pend;
    memcpy(tail, d->pend, n);
    kiln_buf_clear(&d->out);
    if (release(d, tail, n, 1) || out_put(d, "", 0)) return KILN_ERR(err, KILN_ERR_OOM, "detok: out of memory");
    *text = d->out.p;
    *len = d->out.len;
    /* reset for a new sequence */
    d->n_pushed = d->n_decoded = 0;
    d->prev_id = -1;
    d->n_pend = 0;
    int sn = 0;
    d->strip_left = kiln_tok_strip_rule(d->tok, &sn) == KILN_TOK_STRIP_OUTPUT ? sn : 0;
    return KILN_OK;
}
