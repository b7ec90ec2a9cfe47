/* fuzz_tokenize.c: encode and decode of arbitrary bytes with the fixed tokenizers
 * (tests/fuzz/data/: byte-level BPE, SentencePiece-style with byte fallback, tekken).
 * Byte 0 picks the tokenizer and the encode flags; the rest is the text to encode, and also,
 * read as little-endian 16-bit values, ids to decode (values past the vocabulary included: they
 * must be refused, not read). */
#include "fuzz_tok_exercise.h"

int FUZZ_ENTRY(const uint8_t *data, size_t size);
int FUZZ_ENTRY(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const kiln_tokenizer *t = fz_tokenizer(data[0] % FZ_N_TOK);
    int flags = (data[0] >> 2) & 3;
    fz_encode(t, (const char *)data + 1, size - 1, flags);
    int n = (int)((size - 1) / 2);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
    if (!ids) abort();
    int vs = kiln_tokenizer_vocab_size(t);
    for (int i = 0; i < n; i++) {
        int v = data[1 + 2 * i] | (data[2 + 2 * i] << 8);
        ids[i] = (data[0] & 0x10) ? (int32_t)v - 2 : (int32_t)(v % (vs + 1)); /* -2..65533 or 0..vs */
    }
    fz_decode_ids(t, ids, n);
    free(ids);
    return 0;
}
