/* tok_llama2c.c: llama2.c tokenizer.bin (karpathy/llama2.c run.c format).
 *
 * File: int32 max_token_length, then per token: float32 score, int32 len, len bytes. The
 * vocabulary size is not stored: tokens are read to the end of the file. Ids 0/1/2 are
 * <unk>/BOS/EOS; pieces "<0xXX>" are byte tokens (id = byte + 3 by convention).
 *
 * Encoding follows run.c's encode(): a dummy-prefix " " token when the text is non-empty, then
 * each UTF-8 group (a lead byte and up to 3 continuation bytes, taken as run.c groups them,
 * valid or not) is looked up, falling back to one byte token per byte, then pairs are merged
 * greedily by the score of their concatenation (best first, leftmost on ties). BOS=1 is
 * prepended with KILN_TOK_ADD_BOS. Special-token text is never parsed (run.c does not).
 * Decoding: "<0xXX>" -> the byte; the first token of a sequence or the one after BOS loses one
 * leading space (run.c decode, SentencePiece).
 */
#include "tokenizer/tok_internal.h"
#include <stdio.h>
#include <string.h>
#include "util/alloc.h"
#include "util/error.h"
#include "util/mapfile.h"

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}
/* "<0xXX>" -> byte value, else -1 */
int tok_parse_byte_token(const char *s, size_t n) {
    if (n != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>') return -1;
    int h = hexval(s[3]), l = hexval(s[4]);
    return (h < 0 || l < 0) ? -1 : h * 16 + l;
}

static int l2c_encode(const kiln_tokenizer *t, const char *text, size_t len, int flags,
                      tok_ivec *out, kiln_error *err) {
    if ((flags & KILN_TOK_ADD_BOS) && t->bos >= 0 && tok_ivec_push(out, t->bos) != 0) goto oom;
    int start = out->n;
    if (len > 0) {
        int32_t sp = tok_strmap_get(&t->vocab, " ", 1);
        if (sp >= 0 && tok_ivec_push(out, sp) != 0) goto oom;
    }
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    while (i < len) {
        size_t j = i + 1; /* run.c: lead byte + following continuation bytes, at most 4 in all */
        while (j < len && (s[j] & 0xC0) == 0x80 && j - i < 4) j++;
        int32_t id = tok_strmap_get(&t->vocab, text + i, j - i);
        if (id >= 0) {
            if (tok_ivec_push(out, id) != 0) goto oom;
        } else {
            for (size_t k = i; k < j; k++)
                if (tok_ivec_push(out, (int32_t)s[k] + 3) != 0) goto oom;
        }
        i = j;
    }
    /* byte ids must exist: a tiny vocabulary without byte tokens is caught at load */
    tok_ivec tail = {out->p + start, out->n - start, out->cap - start};
    int rc = tok_bpe_score_merge(t, &tail, err);
    out->n = start + tail.n;
    return rc;
oom:
    return KILN_ERR(err, KILN_ERR_OOM, "tokenizer: out of memory");
}

int tok_load_llama2c(kiln_tokenizer *t, const char *path, kiln_error *err) {
    kiln_mapfile mf;
    int rc = kiln_mapfile_open(&mf, path, err);
    if (rc != KILN_OK) return rc;
    const unsigned char *d = mf.data;
    size_t size = mf.size, off = 4;
    int n = 0;
    if (size < 4) {
        rc = KILN_ERR(err, KILN_ERR_FORMAT, "%s: too short for a llama2.c tokenizer", path);
        goto done;
    }
    while (off < size) { /* count tokens */
        int32_t l;
        if (size - off < 8) break;
        memcpy(&l, d + off + 4, 4);
        if (l < 0 || (size_t)l > size - off - 8) break;
        off += 8 + (size_t)l;
        n++;
    }
    if (off != size || n < 3) {
        rc = KILN_ERR(err, KILN_ERR_FORMAT,
                      "%s: not a llama2.c tokenizer (token %d is truncated or has a bad length at byte %zu)",
                      path, n, off);
        goto done;
    }
    if ((rc = tok_alloc_tables(t, n, err)) != KILN_OK) goto done;
    t->scores = kiln_malloc((size_t)n * sizeof *t->scores);
    if (!t->scores) {
        rc = KILN_ERR(err, KILN_ERR_OOM, "tokenizer: out of memory");
        goto done;
    }
    off = 4;
    for (int i = 0; i < n; i++) {
        int32_t l;
        memcpy(&t->scores[i], d + off, 4);
        memcpy(&l, d + off + 4, 4);
        const char *s = (const char *)d + off + 8;
        off += 8 + (size_t)l;
        int b = tok_parse_byte_token(s, (size_t)l);
        char byte = (char)b;
        size_t dl = (size_t)l;
        const char *ds = s;
        if (i <= 2)  /* llama2.c exports BOS/EOS as "\n<s>\n": decode them as "<s>" / "</s>" */
            while (dl > 0 && (ds[0] == '\n' || ds[dl - 1] == '\n')) {
                if (ds[0] == '\n') ds++;
                dl--;
            }
        if (b >= 0) rc = tok_set_token(t, i, s, (size_t)l, &byte, 1, err);
        else if (i <= 2) rc = tok_set_token(t, i, s, (size_t)l, ds, dl, err);
        else rc = tok_set_token(t, i, s, (size_t)l, NULL, 0, err);
        if (rc != KILN_OK) goto done;
    }
    for (int b = 0; b < 256; b++) { /* run.c's byte fallback assumes <0xXX> == byte + 3 */
        size_t l;
        const char *s = tok_str(t, b + 3 < n ? b + 3 : 0, &l);
        if (b + 3 >= n || tok_parse_byte_token(s, l) != b) {
            rc = KILN_ERR(err, KILN_ERR_FORMAT, "%s: token %d is not <0x%02X> (byte fallback needs it)",
                          path, b + 3, b);
            goto done;
        }
    }
    t->special[0] = t->special[1] = t->special[2] = 1;
    t->bos = 1;
    t->eos = 2;
    t->kind = KILN_TOK_KIND_LLAMA2C;
    t->strip_mode = TOK_STRIP_AFTER_BOS;
    t->encode = l2c_encode;
    rc = tok_build_vocab_map(t, 1, err);
done:
    kiln_mapfile_close(&mf);
    return rc;
}
