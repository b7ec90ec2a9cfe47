/* spec.c: speculative decoding in the engine step (docs/speculative.md).
 *
 * Schedule (scheduler.c): a decoding sequence that speculates asks the proposer for up to K
 * tokens (kiln_spec_propose). Its step rows are then its last committed token at position
 * N - 1 (N = r->n_tokens) followed by the proposals d_0 .. d_{k-1} at positions N .. N + k - 1,
 * and it asks logits at all k + 1 rows (kiln_step.seq_logits = k + 1). Proposal rows are budgeted
 * like prefill rows (they take max_batch_tokens) and their KV blocks are taken without
 * preempting anyone: when the pool cannot hold them the sequence decodes plainly this step.
 * The rows sit in the same ragged step as every other sequence's decode and prefill rows: one
 * backend call, one wait.
 *
 * Verify (kiln_spec_verify, when the step is applied): logits row j predicts position N + j.
 * For j = 0, 1, ... the token of position N + j is drawn from row j exactly as plain decoding
 * would draw it (the request's sampler, penalties over the tokens committed so far, grammar mask,
 * min_tokens suppression, the seeded draw keyed by (seed, output position)); the draw is
 * committed, and when j < k and it equals d_j the next row is used too, else verification stops.
 * After k accepted proposals the last row gives the bonus token. So a step commits a + 1 tokens
 * (a = accepted proposals), each the token plain decoding would have produced there.
 *
 * Why this is the standard rejection rule. For a proposal with distribution q the rule accepts
 * d ~ q with probability min(1, p(d) / q(d)) and otherwise draws from norm(max(0, p - q)). An
 * n-gram proposal is a point mass (q(d) = 1): accept with probability p(d), on rejection draw
 * from p without d, renormalised. Drawing x ~ p with the position's seeded uniform and accepting
 * iff x == d realises exactly that (P(accept) = p(d); given x != d, x follows p restricted to the
 * other ids) and couples the result to plain sampling: a seeded request gives the same tokens
 * with and without speculation, greedy (temperature 0: the argmax) included. Stop strings, EOS,
 * max_tokens inside an accepted run end the request at that token (kiln_req_on_token); logprobs
 * are those of each committed draw.
 *
 * Roll back: the KV of rows whose input was a rejected proposal is junk at positions >= the
 * committed length; n_computed becomes n_tokens - 1 (the last committed token has no KV yet) and
 * whole blocks past the one holding position n_tokens - 1 go back to the pool. Junk slots in the
 * kept block are never read (attention covers computed positions only) and are overwritten by
 * the next step's rows; a block is hashed into the prefix cache only when n_computed covers it,
 * i.e. when every token in it is committed and its KV was computed from committed tokens.
 */
#include <string.h>
#include "engine/engine_internal.h"
#include "util/error.h"
#include "util/log.h"

int kiln_spec_init(kiln_engine *e, const kiln_engine_options *o, kiln_error *err) {
    const kiln_spec_options *so = &o->spec;
    e->spec_k = 0;
    int has_draft = o->draft_model_path && *o->draft_model_path;
    const char *method = so->method && *so->method ? so->method : has_draft ? "draft" : NULL;
    if (!method) return KILN_OK;
    if (strcmp(method, "ngram") != 0 && strcmp(method, "draft") != 0)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "engine: unknown speculative method '%s' (ngram, draft)", method);
    if (has_draft && strcmp(method, "draft") != 0)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "engine: a draft model (%s) with speculative method '%s': one "
                        "proposer at a time", o->draft_model_path, method);
    if (!has_draft && !strcmp(method, "draft"))
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "engine: speculative method 'draft' without a draft model path");
    if (!(so->draft_temperature >= 0.0f) || so->draft_temperature > 100.0f)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "engine: draft_temperature %g (0 .. 100)", (double)so->draft_temperature);
    int k = so->num_speculative_tokens > 0 ? so->num_speculative_tokens : 4;
    int nmax = so->ngram_max > 0 ? so->ngram_max : 4;
    int nmin = so->ngram_min > 0 ? so->ngram_min : (nmax < 2 ? nmax : 2);
    if (so->num_speculative_tokens < 0 || k > KILN_SPEC_MAX_TOKENS)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "engine: num_speculative_tokens %d (1 .. %d)",
                        so->num_speculative_tokens, KILN_SPEC_MAX_TOKENS);
    if (so->ngram_max < 0 || so->ngram_min < 0 || nmin > nmax || nmax > 64)
        return KILN_ERR(err, KILN_ERR_INVALID_ARG, "engine: ngram prompt lookup min %d / max %d (1 <= min <= max <= 64)",
                        nmin, nmax);
    /* verification needs the target's logits at every proposed position of a sequence */
    int lg = e->ops->max_logits_per_seq > 0 ? e->ops->max_logits_per_seq : 1;
    if (lg < k + 1)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "engine: speculative decoding is not supported by the %s backend: it "
                        "returns logits at %d position(s) of a sequence per step, verifying %d proposed tokens needs %d",
                        e->ops->name, lg, k, k + 1);
    /* the draws of every verified position: the backend's sampler where it draws several rows of
     * a sequence (cuda: ops.sample_rows), each row at its own output position; otherwise the
     * engine's host sampler, and then an opt-in device sampler asked for explicitly
     * (cpu.backend_sampling) is refused. Verification needs the outcome of a step before the
     * next one is built, so a speculating engine does not overlap steps. */
    if (e->device_sample && !e->ops->sample_rows)
        return KILN_ERR(err, KILN_ERR_UNSUPPORTED, "engine: speculative decoding samples on the host; the %s backend's "
                        "own sampler is on (cpu: turn backend_sampling / KILN_CPU_SAMPLE off)", e->ops->name);
    if (e->overlap)
        KILN_INFO("speculative decoding: overlapped scheduling off (a step needs the previous one's acceptance)");
    e->overlap = 0;
    e->spec_k = k;
    e->spec_draft_temp = so->draft_temperature;
    e->spec_ngram_min = nmin;
    e->spec_ngram_max = nmax;
    return KILN_OK;
}

int kiln_spec_propose(kiln_engine *e, kiln_req *r, int budget) {
    if (e->draft) { /* proposed before the step was built (kiln_draft_propose): cut to the budget */
        if (r->n_draft > budget - 1) r->n_draft = budget - 1 > 0 ? budget - 1 : 0;
        if (e->device_sample && !kiln_spec_device_ok(e, r)) r->n_draft = 0; /* (the draft's KV rolls back itself) */
        return r->n_draft;
    }
    r->n_draft = 0;
    if (!e->spec_k || !r->spec || (e->device_sample && !kiln_spec_device_ok(e, r))) return 0;
    int k = e->spec_k;
    /* every emitted token must stay within max_tokens and the context: k proposals + 1 */
    int left = r->max_new - (r->n_tokens - r->n_prompt) - 1;
    if (left < k) k = left;
    if (e->max_model_len - r->n_tokens - 1 < k) k = e->max_model_len - r->n_tokens - 1;
    if (budget - 1 < k) k = budget - 1;
    if (k <= 0) return 0;
    if (e->opt.spec.propose_always) { /* benchmarking: K + 1 rows every step (kiln.h) */
        for (int j = 0; j < k; j++) r->draft[j] = r->tokens[r->n_tokens - 1];
        return r->n_draft = k;
    }
    r->n_draft = kiln_spec_ngram_propose(r->tokens, r->n_tokens, e->spec_ngram_min, e->spec_ngram_max, k, r->draft);
    return r->n_draft;
}

int kiln_spec_device_ok(const kiln_engine *e, const kiln_req *r) {
    if (kiln_req_has_penalties(r)) return 0; /* a device penalty table counts each draw at once */
    if (e->draft && r->sp.temperature > 0.0f) return 0; /* the rejection rule needs p and q on the host */
    if (r->gm) return 0;
    return r->n_tokens + r->n_inflight - r->n_prompt >= r->min_tokens; /* no row's draw suppressed */
}

/* after verification committed acc of k proposals (n_old: tokens before): the draft model's
 * state, then the roll back (see the note at the top) */
static void spec_rollback(kiln_engine *e, kiln_req *r, int n_old, int k, int acc) {
    e->stats.spec_accepted_tokens += (uint64_t)acc;
    if (r->state != KILN_REQ_RUNNING) return;
    kiln_draft_commit(e, r, n_old, k, acc);
    r->n_computed = r->n_tokens - 1;
    kiln_req_register_blocks(e, r);
    int keep = (r->n_tokens + e->block_size - 1) / e->block_size;
    if (keep < r->n_blocks) {
        kiln_kv_release(e->kv, r->blocks + keep, r->n_blocks - keep);
        for (int b = keep; b < r->n_blocks; b++) r->blocks[b] = 0;
        r->n_blocks = keep;
    }
}

void kiln_spec_verify_drawn(kiln_engine *e, kiln_req *r, const kiln_step_result *res, int row) {
    int k = r->n_draft, acc = 0, n_old = r->n_tokens;
    r->n_draft = 0;
    e->stats.spec_drafts++;
    e->stats.spec_draft_tokens += (uint64_t)k;
    for (int j = 0; j <= k; j++) {
        int32_t tok = kiln_req_take_drawn(r, res, row + j);
        int hit = j < k && tok == r->draft[j];
        if (hit) {
            acc++;
            e->stats.spec_accepted_per_pos[j]++;
        }
        kiln_req_on_token(e, r, tok);
        if (!hit || r->state != KILN_REQ_RUNNING) break;
    }
    spec_rollback(e, r, n_old, k, acc);
}

void kiln_spec_verify(kiln_engine *e, kiln_req *r, const float *logits, int vocab) {
    int k = r->n_draft, acc = 0, n_old = r->n_tokens;
    r->n_draft = 0;
    e->stats.spec_drafts++;
    e->stats.spec_draft_tokens += (uint64_t)k;
    /* a draft model's proposals of a sampled request: the rejection rule against its q */
    int rule = e->draft && r->sp.temperature > 0.0f;
    for (int j = 0; j <= k; j++) {
        const float *lg = logits + (size_t)j * vocab;
        int32_t tok = kiln_req_sample(e, r, lg);
        int hit = j < k && tok == r->draft[j];
        if (rule && j < k) {
            int n_out = r->n_tokens - r->n_prompt;
            const float *q = e->spec_q + ((size_t)r->q_slot * e->spec_k + j) * vocab;
            int32_t t2 = kiln_spec_reject_sample(e, q, r->draft[j], kiln_uniform(r->seed ^ 0xA0761D6478BD642Full, (uint64_t)n_out),
                                                 kiln_uniform(r->seed ^ 0xE7037ED1A0B428DBull, (uint64_t)n_out), tok, &hit);
            if (t2 != tok && r->lp) r->lp[n_out] = kiln_spec_raw_logprob(lg, vocab, t2);
            tok = t2;
        }
        if (hit) {
            acc++;
            e->stats.spec_accepted_per_pos[j]++;
        }
        if (r->gm) kiln_req_grammar_accept(e, r, tok);
        kiln_req_on_token(e, r, tok);
        if (!hit || r->state != KILN_REQ_RUNNING) break; /* finished: its KV is released already */
    }
    spec_rollback(e, r, n_old, k, acc);
}
