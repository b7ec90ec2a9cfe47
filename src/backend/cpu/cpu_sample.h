/* cpu_sample.h: sampling inside the CPU backend (steps with device_sample = 1), the CPU twin of
 * backend/cuda/sample.cu.
 *
 * Penalty tables per sequence slot, as on the GPU: counts[max_seqs][V] (int32, occurrences of
 * each id in the output) and in_prompt[max_seqs][V] (u8, ids present in the prompt), (re)loaded
 * from the step's pen_* list (a sequence's first draw since it was scheduled) and then kept
 * current by the sampler (each drawn token is counted in its slot). The draw itself is the
 * engine's sampler over those tables (kiln_sample_tables), so tokens, raw logprobs and raw
 * top-n are bit-identical to host sampling (kiln_sample) of the same logits.
 */
#ifndef KILN_CPU_SAMPLE_H
#define KILN_CPU_SAMPLE_H
#include "backend/backend.h"
#include "sample/sampler.h"

/* one step's draws: [n] rows in the order of the step's logits rows */
typedef struct kiln_cpu_sample_out {
    int32_t *tokens;  /* [max_seqs] */
    float *logprob;   /* [max_seqs] raw logprob of the drawn token (0 when not asked) */
    int32_t *top_ids; /* [max_seqs][KILN_STEP_MAX_TOP] raw top ids (first n_logprobs valid, then -1) */
    float *top_lp;    /* [max_seqs][KILN_STEP_MAX_TOP] */
    int n;
} kiln_cpu_sample_out;

typedef struct kiln_cpu_sampler {
    int vocab, max_seqs;
    kiln_sampler s;     /* work buffers of the draw */
    int32_t *counts;    /* [max_seqs][vocab] */
    uint8_t *in_prompt; /* [max_seqs][vocab] */
} kiln_cpu_sampler;

int kiln_cpu_sampler_init(kiln_cpu_sampler *cs, int vocab, int max_seqs, kiln_error *err);
void kiln_cpu_sampler_free(kiln_cpu_sampler *cs);
int kiln_cpu_sample_out_init(kiln_cpu_sample_out *o, int max_seqs);
void kiln_cpu_sample_out_free(kiln_cpu_sample_out *o);

/* Load the step's penalty tables, then draw one token for each logits row of the step
 * (logits [n][vocab], n = the step's sequences with seq_logits) into out. The step passed
 * kiln_backend_check_step (sampling rows and penalty loads in range). */
void kiln_cpu_sample_step(kiln_cpu_sampler *cs, const kiln_step *s, const float *logits, int n,
                          kiln_cpu_sample_out *out);

#endif
