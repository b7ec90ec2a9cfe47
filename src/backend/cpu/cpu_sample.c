/* cpu_sample.c: see cpu_sample.h. */
#include "backend/cpu/cpu_sample.h"
#include <string.h>
#include "model/model.h"
#include "util/alloc.h"
#include "util/error.h"

int kiln_cpu_sampler_init(kiln_cpu_sampler *cs, int vocab, int max_seqs, kiln_error *err) {
    memset(cs, 0, sizeof *cs);
    cs->vocab = vocab;
    cs->max_seqs = max_seqs;
    int rc = kiln_sampler_init(&cs->s, vocab, err);
    if (rc) return rc;
    cs->counts = kiln_calloc((size_t)max_seqs * vocab, sizeof(int32_t));
    cs->in_prompt = kiln_calloc((size_t)max_seqs * vocab, 1);
    if (!cs->counts || !cs->in_prompt) {
        kiln_cpu_sampler_free(cs);
        return KILN_ERR(err, KILN_ERR_OOM, "cpu sampler: out of memory for %d penalty tables of %d ids", max_seqs, vocab);
    }
    return KILN_OK;
}

void kiln_cpu_sampler_free(kiln_cpu_sampler *cs) {
    kiln_sampler_free(&cs->s);
    kiln_free(cs->counts);
    kiln_free(cs->in_prompt);
    memset(cs, 0, sizeof *cs);
}

int kiln_cpu_sample_out_init(kiln_cpu_sample_out *o, int max_seqs) {
    memset(o, 0, sizeof *o);
    o->tokens = kiln_calloc((size_t)max_seqs, sizeof(int32_t));
    o->logprob = kiln_calloc((size_t)max_seqs, sizeof(float));
    o->top_ids = kiln_calloc((size_t)max_seqs * KILN_STEP_MAX_TOP, sizeof(int32_t));
    o->top_lp = kiln_calloc((size_t)max_seqs * KILN_STEP_MAX_TOP, sizeof(float));
    return o->tokens && o->logprob && o->top_ids && o->top_lp;
}

void kiln_cpu_sample_out_free(kiln_cpu_sample_out *o) {
    kiln_free(o->tokens);
    kiln_free(o->logprob);
    kiln_free(o->top_ids);
    kiln_free(o->top_lp);
    memset(o, 0, sizeof *o);
}

/* zero slot's tables, mark the prompt ids, count the output ids (ranges checked by
 * kiln_backend_check_step) */
static void load_slot(kiln_cpu_sampler *cs, const kiln_step *s, int k) {
    int V = cs->vocab, slot = s->pen_slot[k];
    int a = s->pen_start[k], b = s->pen_start[k + 1], np = s->pen_n_prompt[k];
    int32_t *cnt = cs->counts + (size_t)slot * V;
    uint8_t *inp = cs->in_prompt + (size_t)slot * V;
    memset(cnt, 0, (size_t)V * sizeof(int32_t));
    memset(inp, 0, (size_t)V);
    for (int i = a; i < b; i++) {
        int32_t t = s->pen_tokens[i];
        if (i < a + np) inp[t] = 1;
        else cnt[t]++;
    }
}

void kiln_cpu_sample_step(kiln_cpu_sampler *cs, const kiln_step *s, const float *logits, int n,
                          kiln_cpu_sample_out *out) {
    int V = cs->vocab;
    for (int k = 0; k < s->n_pen; k++) load_slot(cs, s, k);
    int j = 0;
    for (int i = 0; i < s->n_seqs && j < n; i++) {
        if (!s->seq_logits[i]) continue;
        const kiln_step_sampling *ss = &s->sampling[i];
        kiln_sampling p;
        memset(&p, 0, sizeof p);
        p.temperature = ss->temperature;
        p.top_k = ss->top_k;
        p.top_p = ss->top_p;
        p.min_p = ss->min_p;
        p.repetition_penalty = ss->repetition_penalty;
        p.presence_penalty = ss->presence_penalty;
        p.frequency_penalty = ss->frequency_penalty;
        p.bias_ids = s->bias_ids + ss->bias_start;
        p.bias_values = s->bias_values + ss->bias_start;
        p.n_bias = ss->n_bias;
        int32_t *cnt = ss->pen_slot >= 0 ? cs->counts + (size_t)ss->pen_slot * V : NULL;
        const uint8_t *inp = ss->pen_slot >= 0 ? cs->in_prompt + (size_t)ss->pen_slot * V : NULL;
        kiln_token_logprob top[KILN_STEP_MAX_TOP];
        float lp = 0.0f;
        int nt = ss->n_logprobs;
        /* a constrained draw: its grammar mask row (step.h), the host sampler's allow */
        cs->s.allow = ss->mask > 0 && s->masks ? s->masks + (size_t)(ss->mask - 1) * s->mask_words : NULL;
        int32_t tok = kiln_sample_tables(&cs->s, logits + (size_t)j * V, &p, cnt, inp, s->supp_ids + ss->supp_start,
                                         ss->n_supp, ss->seed, ss->rng_offset, ss->want_logprob ? &lp : NULL,
                                         nt > 0 ? top : NULL, nt);
        cs->s.allow = NULL;
        if (cnt) cnt[tok]++; /* the table stays current (the GPU sampler does the same) */
        out->tokens[j] = tok;
        out->logprob[j] = lp;
        for (int k = 0; k < KILN_STEP_MAX_TOP; k++) {
            out->top_ids[(size_t)j * KILN_STEP_MAX_TOP + k] = k < nt ? top[k].id : -1;
            out->top_lp[(size_t)j * KILN_STEP_MAX_TOP + k] = k < nt ? top[k].logprob : 0.0f;
        }
        j++;
    }
    out->n = j;
}
