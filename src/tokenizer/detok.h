/* detok.h: incremental detokenizer for streaming output.
 *
 * Feed ids one at a time; each push hands back only complete UTF-8: a multi-byte character
 * split across byte tokens is held back until it completes. Bytes that can no longer form a
 * valid character become U+FFFD as soon as that is known, and a sequence still incomplete at
 * flush becomes one U+FFFD, so the concatenation of all pushes and the flush equals
 * kiln_tokenizer_decode() of the same ids, byte for byte. The vocabulary's leading-space rule
 * (SentencePiece dummy prefix, HF Strip/Metaspace) is applied the same way as decode.
 *
 *   kiln_detok d;
 *   kiln_detok_init(&d, tok, skip_special);
 *   for each id: kiln_detok_push(&d, id, &s, &n, &err) -> write n bytes of s
 *   kiln_detok_flush(&d, &s, &n, &err); kiln_detok_free(&d);
 *
 * The returned text stays valid until the next call on d. No global state; one detokenizer
 * per sequence; it borrows the tokenizer (which must outlive it).
 */
#ifndef KILN_DETOK_H
#define KILN_DETOK_H
#include <stddef.h>
#include <stdint.h>
#include "tokenizer/tokenizer.h"
#include "util/buf.h"

typedef struct kiln_detok {
    const kiln_tokenizer *tok;
    int skip_special;
    int n_pushed;        /* ids pushed so far */
    int n_decoded;       /* ids that reached the decoder (not skipped) */
    int32_t prev_id;     /* last id pushed, -1 at start */
    int strip_left;      /* OUTPUT rule: leading spaces still to drop */
    unsigned char pend[4]; /* an incomplete UTF-8 sequence held back */
    int n_pend;
    kiln_buf out;        /* result of the last call (its memory kept across calls) */
} kiln_detok;

/* Start a sequence (d is plain memory; call kiln_detok_free when done). */
void kiln_detok_init(kiln_detok *d, const kiln_tokenizer *t, int skip_special);
/* Push one id; text and len get the complete UTF-8 it releases (possibly empty). An id out of
 * range is KILN_ERR_RANGE and leaves the state unchanged. */
int kiln_detok_push(kiln_detok *d, int32_t id, const char **text, size_t *len, kiln_error *err);
/* End of sequence: releases what is held back (an incomplete sequence as U+FFFD). The
 * detokenizer is reset for a new sequence (its buffer kept). */
int kiln_detok_flush(kiln_detok *d, const char **text, size_t *len, kiln_error *err);
void kiln_detok_free(kiln_detok *d);

#endif
