/* spec_ngram.c: the n-gram prompt-lookup proposer (vLLM's method "ngram", llama.cpp's lookup).
 *
 * The proposal for a sequence is what followed, earlier in its own context (prompt and output
 * so far), the longest suffix of the context of nmax down to nmin tokens: when a model rewrites
 * a file given in the prompt, the text after the matching place is often exactly what it writes
 * next. Among several earlier occurrences of the suffix the latest is taken (it has the freshest
 * continuation: an edit the output already made to a repeated line is proposed again). Pure
 * function over the ids, no allocation; O(n * nmax) per call, done once per decoding sequence per
 * step on the host.
 */
#include <string.h>
#include "engine/engine_internal.h"

int kiln_spec_ngram_propose(const int32_t *tokens, int n, int nmin, int nmax, int k, int32_t *out) {
    if (k <= 0 || n < 2) return 0;
    if (nmin < 1) nmin = 1;
    for (int m = nmax < n - 1 ? nmax : n - 1; m >= nmin; m--) {
        const int32_t *suf = tokens + n - m;
        /* an occurrence at i (tokens[i .. i + m) == suffix) with at least one token after it
         * that is not the suffix itself: i + m < n; latest first */
        for (int i = n - m - 1; i >= 0; i--) {
            if (tokens[i + m - 1] != suf[m - 1] || memcmp(tokens + i, suf, (size_t)m * sizeof(int32_t)) != 0)
                continue;
            int avail = n - (i + m);
            int c = avail < k ? avail : k;
            memcpy(out, tokens + i + m, (size_t)c * sizeof(int32_t));
            return c;
        }
    }
    return 0;
}
