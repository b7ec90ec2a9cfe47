/* step_check.c: the step descriptor against its limits (step.h), the check every backend runs
 * before it touches the pool (I2), and the KV element types. */
#include "step/step.h"
#include <string.h>
#include <strings.h>
#include "model/model.h"
#include "util/error.h"

static const struct { const char *name; int bytes; } k_kv[KILN_KV_DTYPE_COUNT] = {
    [KILN_KV_F32] = {"f32", 4},
    [KILN_KV_BF16] = {"bf16", 2},
    [KILN_KV_F16] = {"f16", 2},
    [KILN_KV_FP8_E4M3] = {"fp8_e4m3", 1},
};

const char *kiln_kv_dtype_name(kiln_kv_dtype t) { return (unsigned)t < KILN_KV_DTYPE_COUNT ? k_kv[t].name : "?"; }
int kiln_kv_dtype_bytes(kiln_kv_dtype t) { return (unsigned)t < KILN_KV_DTYPE_COUNT ? k_kv[t].bytes : 0; }

int kiln_kv_dtype_from_name(const char *name) {
    if (!name) return -1;
    if (!strcasecmp(name, "fp8")) return KILN_KV_FP8_E4M3; /* vLLM's --kv-cache-dtype fp8 */
    for (int i = 0; i < KILN_KV_DTYPE_COUNT; i++)
        if (!strcasecmp(name, k_kv[i].name)) return i;
    return -1;
}

int64_t kiln_kv_scale_count(const kiln_kv_layout *l) {
    switch (l->scale) {
    case KILN_KV_SCALE_TENSOR: return (int64_t)l->n_layers * 2;
    case KILN_KV_SCALE_HEAD: return (int64_t)l->n_layers * 2 * l->n_kv_heads;
    default: return 0;
    }
}

/* A device_sample step's sampling parameters and penalty-table loads, as the backends' samplers
 * read them (cpu_sample.c, the CUDA sampling descriptor). */
static int check_sampling(const kiln_step_limits *c, const kiln_step *s, kiln_error *err) {
    int vocab = c->vocab;
    const int64_t max_bias = (int64_t)c->max_seqs * KILN_MAX_LOGIT_BIAS;
    const int64_t max_supp = (int64_t)c->max_seqs * (KILN_MAX_EOS + KILN_MAX_STOP_IDS);
    int n_masked = 0;
    for (int i = 0; i < s->n_seqs; i++) {
        if (!s->seq_logits[i]) continue;
        const kiln_step_sampling *ss = &s->sampling[i];
        if (ss->pen_slot < -1 || ss->pen_slot >= c->max_seqs || ss->n_logprobs < 0 ||
            ss->n_logprobs > KILN_STEP_MAX_TOP || ss->n_bias < 0 || ss->bias_start < 0 ||
            ss->bias_start + (int64_t)ss->n_bias > max_bias || ss->n_supp < 0 || ss->supp_start < 0 ||
            ss->supp_start + (int64_t)ss->n_supp > max_supp)
            return KILN_ERR(err, KILN_ERR_RANGE, "step: sequence %d sampling slot %d / top %d / lists out of range", i,
                            ss->pen_slot, ss->n_logprobs);
        /* several rows drawn at once cannot share one penalty-table row: each draw would count
         * as output before the rows ahead of it are accepted */
        if (s->seq_logits[i] > 1 && ss->pen_slot >= 0)
            return KILN_ERR(err, KILN_ERR_RANGE, "step: sequence %d draws %d rows with penalty slot %d", i,
                            s->seq_logits[i], ss->pen_slot);
        if (ss->mask) {
            if (!c->masks || !s->masks || ss->mask < 1 || ss->mask > s->n_masks || s->seq_logits[i] != 1)
                return KILN_ERR(err, KILN_ERR_RANGE, "step: sequence %d grammar mask row %d (of %d; %d logits rows%s)",
                                i, ss->mask - 1, s->n_masks, s->seq_logits[i], c->masks ? "" : ", backend without masks");
            n_masked++;
        }
    }
    /* as many mask rows as masked draws (the engine packs them in sequence order) */
    if (s->n_masks < 0 || s->n_masks > c->max_seqs || n_masked != s->n_masks ||
        (s->n_masks > 0 && s->mask_words != (vocab + 31) / 32))
        return KILN_ERR(err, KILN_ERR_RANGE, "step: %d grammar mask rows of %d words for %d constrained draws", s->n_masks,
                        s->mask_words, n_masked);
    if (s->n_pen < 0 || s->n_pen > c->max_seqs)
        return KILN_ERR(err, KILN_ERR_RANGE, "step: %d penalty loads", s->n_pen);
    for (int k = 0; k < s->n_pen; k++) {
        int a = s->pen_start[k], b = s->pen_start[k + 1], np = s->pen_n_prompt[k];
        if (s->pen_slot[k] < 0 || s->pen_slot[k] >= c->max_seqs)
            return KILN_ERR(err, KILN_ERR_RANGE, "step: penalty slot %d out of range", s->pen_slot[k]);
        if (a < 0 || b < a || b > s->cap_pen_tokens || np < 0 || np > b - a)
            return KILN_ERR(err, KILN_ERR_RANGE, "step: penalty load %d spans [%d, %d) with %d prompt ids", k, a, b, np);
        for (int i = a; i < b; i++)
            if (s->pen_tokens[i] < 0 || s->pen_tokens[i] >= vocab)
                return KILN_ERR(err, KILN_ERR_RANGE, "step: penalty token %d outside vocab", s->pen_tokens[i]);
    }
    return KILN_OK;
}

int kiln_step_check(const kiln_step_limits *c, const kiln_step *s, kiln_error *err) {
    const kiln_kv_layout *L = &c->kv;
    int vocab = c->vocab, min_rows = c->min_rows;
    int max_lg = c->max_logits_per_seq > 1 ? c->max_logits_per_seq : 1;
    if (s->n_tokens < min_rows || s->n_tokens > c->max_tokens || s->n_seqs < min_rows || s->n_seqs > c->max_seqs ||
        s->max_blocks_per_seq > c->max_blocks_per_seq)
        return KILN_ERR(err, KILN_ERR_RANGE, "step: %d tokens / %d seqs beyond capacity %d / %d", s->n_tokens,
                        s->n_seqs, c->max_tokens, c->max_seqs);
    if (s->seq_q_start[0] != 0 || s->seq_q_start[s->n_seqs] != s->n_tokens)
        return KILN_ERR(err, KILN_ERR_RANGE, "step: query starts do not cover the %d rows", s->n_tokens);
    if (s->n_prev < 0 || s->n_prev > s->n_tokens)
        return KILN_ERR(err, KILN_ERR_RANGE, "step: %d rows from the previous step, %d rows", s->n_prev, s->n_tokens);
    if (s->n_prev > 0) {
        if (!s->device_sample)
            return KILN_ERR(err, KILN_ERR_RANGE, "step: input tokens from the previous step need device sampling");
        int np = 0;
        for (int t = 0; t < s->n_tokens; t++) {
            if (s->prev_row[t] < -1 || s->prev_row[t] >= c->max_seqs)
                return KILN_ERR(err, KILN_ERR_RANGE, "step: row %d takes previous logits row %d outside [-1, %d)", t,
                                s->prev_row[t], c->max_seqs);
            np += s->prev_row[t] >= 0;
        }
        if (np != s->n_prev)
            return KILN_ERR(err, KILN_ERR_RANGE, "step: n_prev %d but %d rows take a previous token", s->n_prev, np);
    }
    int64_t n_slots = (int64_t)L->n_blocks * L->block_size;
    for (int i = 0; i < s->n_seqs; i++) {
        int ctx = s->seq_ctx_len[i];
        if (s->seq_q_start[i + 1] < s->seq_q_start[i])
            return KILN_ERR(err, KILN_ERR_RANGE, "step: sequence %d has a negative row count", i);
        if (ctx < 1 || ctx > c->max_model_len || (ctx + L->block_size - 1) / L->block_size > s->max_blocks_per_seq)
            return KILN_ERR(err, KILN_ERR_RANGE, "step: sequence %d context %d out of range", i, ctx);
        int q_len = s->seq_q_start[i + 1] - s->seq_q_start[i], lg = s->seq_logits[i];
        if (lg < 0 || lg > q_len || lg > max_lg || (lg > 1 && s->device_sample && !c->sample_rows))
            return KILN_ERR(err, KILN_ERR_RANGE, "step: sequence %d asks logits of %d of its %d rows (at most %d%s)", i, lg,
                            q_len, max_lg, s->device_sample && !c->sample_rows ? ", 1 with device sampling" : "");
        const int32_t *bt = s->block_table + (size_t)i * s->max_blocks_per_seq;
        /* blocks released out of the window (kv_window): the null block, never read */
        int live = 0;
        if (c->kv_window > 0 && q_len > 0) {
            int lo = s->positions[s->seq_q_start[i]] - c->kv_window + 1;
            live = lo > 0 ? lo / L->block_size : 0;
        }
        for (int b = 0; b < (ctx + L->block_size - 1) / L->block_size; b++)
            if ((bt[b] < 1 && !(b < live && bt[b] == 0)) || bt[b] >= L->n_blocks)
                return KILN_ERR(err, KILN_ERR_RANGE, "step: sequence %d block %d id %d outside [1, %d)", i, b, bt[b],
                                L->n_blocks);
        for (int t = s->seq_q_start[i]; t < s->seq_q_start[i + 1]; t++) {
            if (s->positions[t] < 0 || s->positions[t] >= ctx)
                return KILN_ERR(err, KILN_ERR_RANGE, "step: row %d position %d outside context %d", t, s->positions[t],
                                ctx);
            if (s->token_ids[t] < 0 || s->token_ids[t] >= vocab)
                return KILN_ERR(err, KILN_ERR_RANGE, "step: row %d token id %d outside vocab", t, s->token_ids[t]);
            if (s->slot_mapping[t] < 0 || s->slot_mapping[t] >= n_slots)
                return KILN_ERR(err, KILN_ERR_RANGE, "step: row %d KV slot %lld outside the pool", t,
                                (long long)s->slot_mapping[t]);
        }
    }
    return s->device_sample ? check_sampling(c, s, err) : KILN_OK;
}

