/* sampler.h: the CPU reference sampler.
 *
 * Order, as vLLM applies it: penalties (repetition over prompt + output; presence and
 * frequency over the output) -> logit bias -> (min-tokens suppression, by the caller) ->
 * temperature -> top-k -> top-p -> min-p -> draw. temperature 0 is greedy (argmax of the
 * processed logits, lowest id on ties). The kept set: sort by (logit desc, id asc); top-k keeps
 * the first k; top-p the shortest prefix of those with cumulative probability >= top_p; min-p
 * those with prob >= min_p * max prob (the first always). The draw is order-free: it walks the
 * kept ids in ascending id order and picks the first id whose running sum of exp(w - max)
 * (double) exceeds u * sum (sum over the kept set), so the GPU sampler (backend/cuda/sample.cu)
 * matches it without a sort. After a sampled (non-greedy) call, work[] holds the
 * temperature-scaled logits of the kept set and -inf elsewhere (tests compare it). The draw uses a counter-based generator (Philox4x32-10)
 * keyed by (seed, output position): a request's samples do not depend on its batch slot, on
 * its neighbours or on preemption. Logprobs are those of the raw model distribution.
 */
#ifndef KILN_SAMPLE_SAMPLER_H
#define KILN_SAMPLE_SAMPLER_H
#include <stdint.h>
#include "kiln.h"

typedef struct kiln_sampler {
    int vocab;
    float *work;    /* [vocab] processed logits / probabilities */
    int32_t *idx;   /* [vocab] candidate ids */
    int32_t *count; /* [vocab] output-token counts for kiln_sample (kept zeroed between calls) */
    uint8_t *seen;  /* [vocab] prompt presence for kiln_sample (kept zeroed between calls) */
    const uint32_t *allow; /* [(vocab + 31) / 32] grammar mask for the next draw, or NULL: ids whose
                            * bit is clear are forced to -inf after the suppression (set by the
                            * caller per row, constrained decoding) */
} kiln_sampler;

int kiln_sampler_init(kiln_sampler *s, int vocab, kiln_error *err);
void kiln_sampler_free(kiln_sampler *s);

/* Philox4x32-10 of (counter, key): four 32-bit words. */
void kiln_philox(uint64_t counter, uint64_t key, uint32_t out[4]);
/* uniform in [0, 1) with 53 bits, keyed by (seed, position) */
double kiln_uniform(uint64_t seed, uint64_t position);

/* Sample one token from raw logits [vocab].
 *   prompt/out: the sequence so far (penalties); suppress: ids forced to -inf (min_tokens);
 *   position: output index of the token being drawn (RNG counter).
 *   raw_logprob: logprob of the chosen token under the raw distribution (may be NULL);
 *   top: n_top best (id, logprob) of the raw distribution (may be NULL). */
int32_t kiln_sample(kiln_sampler *s, const float *logits, const kiln_sampling *p, const int32_t *prompt,
                    int n_prompt, const int32_t *out, int n_out, const int32_t *suppress, int n_suppress,
                    uint64_t seed, uint64_t position, float *raw_logprob, kiln_token_logprob *top, int n_top);

/* The same draw with the sequence given as penalty tables (one implementation: kiln_sample
 * builds these tables from its arrays and calls this): count[vocab] = occurrences of each id
 * in the output, in_prompt[vocab] = 1 for ids in the prompt (both NULL: no penalties). The
 * backends that sample keep such tables per sequence slot (kiln_step.pen_*). */
int32_t kiln_sample_tables(kiln_sampler *s, const float *logits, const kiln_sampling *p, const int32_t *count,
                           const uint8_t *in_prompt, const int32_t *suppress, int n_suppress, uint64_t seed,
                           uint64_t position, float *raw_logprob, kiln_token_logprob *top, int n_top);

#endif
