/* scheduler.c: continuous batching with chunked prefill and preemption by recompute.
 *
 * Each step, within a token budget (max_batch_tokens) and a cap on running sequences:
 *   1. running sequences first, in order (a decode takes 1 token, an unfinished prefill a
 *      chunk); when KV blocks run out, the lowest-priority running sequence (the last one) is
 *      preempted: its blocks are freed and it returns to the front of the waiting queue;
 *   2. then waiting requests in FCFS order (no skipping: a request that does not fit stops the
 *      admission): the prefix cache supplies full blocks of its prompt, the rest is prefilled.
 * The step descriptor is filled here; nothing is allocated.
 *
 * Overlap (a step still in flight while this one is built, engine.c): a sequence whose pending
 * step draws a token (r->n_inflight) gets one decode row for that token: its position is
 * n_tokens, its input comes from the pending step on the device (prev_row = its logits row
 * there), its RNG offset and min_tokens count include it, and it is not scheduled at all when
 * that token reaches max_tokens or the context limit. A sequence with a non-final prefill chunk
 * in flight continues with its next chunk (known tokens). Rows already in encoded steps are
 * r->n_sched: a sequence's next row is at n_computed + n_sched. Nothing is preempted while a
 * step is in flight (kiln_sched_build_step reports need_drain instead).
 *
 * The ITL policy (e->itl_target_ms > 0; kiln_sched_options, step_cost.h, docs/scheduling.md):
 * before the step is built, its decode rows d are counted (running sequences with exactly one
 * row to compute: a decode, or a prefill with one token left). When d > 0 the step's prefill
 * rows (chunks of running or newly admitted prompts) are capped at the cost model's budget: the
 * most rows whose predicted step time stays under the target, at least itl_min_chunk. Steps
 * without decode rows keep the whole max_batch_tokens budget. A sequence whose chunk the cap
 * cut to 0 waits for the next step (in order: the oldest prompt progresses first). Only the cut
 * of prompts into steps changes, never a token.
 * The step budget (e->step_target_ms > 0, sched.max_step_ms): the same cap on every step,
 * decode rows or not (with both, the smaller target where there are decode rows). The model
 * counts attention: the decode rows' keys and the prefill rows' at the context of the first
 * sequence with prefill rows to compute (step_cost.h). While learning, a step's prefill rows are
 * also at most 4x the most any step has had (from 32; e->pf_seen), so that an empty fit's first
 * guesses cannot make one step of the whole max_batch_tokens. With either target, when requests
 * wait, a running sequence's prefill chunk takes at most half the step's prefill rows (at least
 * the minimal chunk): the rest goes to the waiting ones, in order, so that a short request sent
 * beside a long prompt starts within a step or two instead of after the whole prompt.
 *
 * Speculative decoding (spec.c): a decoding sequence that speculates gets its proposals as extra
 * rows after its decode row (r->n_draft of them, logits at all), budgeted like prefill rows; their
 * blocks are taken only when free (no preemption for a guess). Speculation samples on the host,
 * so it never meets a step in flight.
 */
#include <string.h>
#include "engine/engine_internal.h"
#include "util/error.h"
#include "util/log.h"

void kiln_req_release_kv(kiln_engine *e, kiln_req *r) {
    if (r->pen_slot >= 0) { /* its device penalty row is free again (reloaded by the next owner) */
        e->free_pen[e->n_free_pen++] = r->pen_slot;
        r->pen_slot = -1;
    }
    kiln_kv_release(e->kv, r->blocks, r->n_blocks); /* released entries are 0: skipped */
    r->n_blocks = 0;
    r->n_released = 0;
    r->n_computed = 0;
    r->n_hashed = 0;
    r->n_draft = 0;
    kiln_draft_release(e, r);
}

/* Sliding windows (e->kv_window > 0, every layer windowed): the blocks of r wholly below
 * n_computed - kv_window + 1 are released, their table entries set to the null block 0. Rows
 * not yet computed (this step's, a step in flight's) are at positions >= n_computed, and a
 * query at p reads keys from p - window + 1 on, so no query can read them again (step.h
 * kv_window lets the step check accept the 0 entries).
 * Prefix caching: a released block that was registered keeps its hash and goes to the free
 * LRU list like any freed block: its K/V is a function of the prefix alone, so a later request
 * with the same prefix may still get it back (until it is handed out again) and the chain of
 * hashes stays exact; a request that finds a chain only re-takes blocks it then releases again
 * at its first schedule if they are out of its window. */
static void release_window(kiln_engine *e, kiln_req *r) {
    if (e->kv_window <= 0) return;
    int lo = r->n_computed - e->kv_window + 1;
    int n = lo > 0 ? lo / e->block_size : 0;
    if (n > r->n_blocks) n = r->n_blocks;
    for (int b = r->n_released; b < n; b++) {
        kiln_kv_release(e->kv, &r->blocks[b], 1);
        r->blocks[b] = 0;
    }
    if (n > r->n_released) r->n_released = n;
}

/* blocks needed to hold n tokens */
static int blocks_for(const kiln_engine *e, int n) { return (n + e->block_size - 1) / e->block_size; }

static int ensure_blocks(kiln_engine *e, kiln_req *r, int n_tokens) {
    int need = blocks_for(e, n_tokens) - r->n_blocks;
    if (need <= 0) return 1;
    if (kiln_kv_alloc(e->kv, need, r->blocks + r->n_blocks, NULL) != KILN_OK) return 0;
    r->n_blocks += need;
    return 1;
}

static void remove_from(kiln_req **list, int *n, const kiln_req *r) {
    for (int i = 0; i < *n; i++)
        if (list[i] == r) {
            memmove(list + i, list + i + 1, (size_t)(*n - i - 1) * sizeof(kiln_req *));
            (*n)--;
            return;
        }
}

void kiln_sched_remove(kiln_engine *e, kiln_req *r) {
    if (r->state == KILN_REQ_RUNNING) remove_from(e->running, &e->n_running, r);
    else if (r->state == KILN_REQ_WAITING) remove_from(e->waiting, &e->n_waiting, r);
    kiln_req_release_kv(e, r);
}

void kiln_sched_preempt(kiln_engine *e, kiln_req *r) {
    kiln_sched_remove(e, r);
    r->state = KILN_REQ_WAITING;
    /* front of the waiting queue (capacity reserved at add_request) */
    memmove(e->waiting + 1, e->waiting, (size_t)e->n_waiting * sizeof(kiln_req *));
    e->waiting[0] = r;
    e->n_waiting++;
    e->stats.preemptions++;
}

/* The ids a request may not draw yet (min_tokens not reached: the EOS ids, then its stop ids)
 * into out; returns how many. Shared by the host sampler (engine.c) and the device descriptor. */
int kiln_req_suppressed(const kiln_engine *e, const kiln_req *r, int32_t *out) {
    int n = 0;
    if (r->n_tokens + r->n_inflight - r->n_prompt >= r->min_tokens) return 0; /* the token in flight counts */
    for (int k = 0; k < e->model->cfg.n_eos; k++) out[n++] = e->model->cfg.eos_ids[k];
    for (int k = 0; k < r->n_stop_ids; k++) out[n++] = r->stop_ids[k];
    return n;
}

int kiln_req_has_penalties(const kiln_req *r) {
    return r->sp.repetition_penalty != 1.0f || r->sp.presence_penalty != 0.0f || r->sp.frequency_penalty != 0.0f;
}

/* Device sampling: the sequence's bias, min_tokens suppression and penalty-table load (a sequence
 * drawing its first token since it was scheduled loads its prompt + outputs into a free table
 * row). Returns 0 when the step's penalty-token buffer is too full for that load: the sequence
 * waits for the next step (the buffer holds a whole sequence, so the first one always fits). */
static int add_sampling(kiln_engine *e, kiln_req *r, int si, int wants_logits) {
    kiln_step *s = &e->steps[e->cur];
    kiln_step_sampling *ss = &s->sampling[si];
    ss->pen_slot = -1;
    ss->bias_start = ss->n_bias = ss->supp_start = ss->n_supp = ss->mask = 0;
    if (!s->device_sample || !wants_logits) return 1;
    if (r->gm && s->masks) {
        /* the grammar's mask for this draw: r's previous token is known (build_step drains an
         * overlapped step first); a failed walk leaves the row unconstrained, as the host
         * sampler does, and says so */
        kiln_error gerr;
        uint32_t *row = s->masks + (size_t)s->n_masks * s->mask_words;
        if (kiln_req_grammar_mask_into(e, r, row, &gerr) == KILN_OK) {
            ss->mask = ++s->n_masks;
            e->stats.grammar_device_masks++;
        } else {
            KILN_WARN("request %llu: grammar mask: %s", (unsigned long long)r->id, gerr.msg);
        }
    }
    if (kiln_req_has_penalties(r) && r->pen_slot < 0) {
        int used = s->pen_start[s->n_pen];
        if (used + r->n_tokens > s->cap_pen_tokens || e->n_free_pen == 0) return 0;
        r->pen_slot = e->free_pen[--e->n_free_pen];
        s->pen_slot[s->n_pen] = r->pen_slot;
        s->pen_n_prompt[s->n_pen] = r->n_prompt;
        memcpy(s->pen_tokens + used, r->tokens, (size_t)r->n_tokens * sizeof(int32_t));
        s->pen_start[++s->n_pen] = used + r->n_tokens;
    }
    ss->pen_slot = r->pen_slot; /* -1 unless the request has penalties (set just above) */
    ss->bias_start = e->step_n_bias;
    ss->n_bias = r->sp.n_bias;
    if (r->sp.n_bias > 0) { /* (no memcpy from the NULL lists of a request without bias) */
        memcpy(s->bias_ids + e->step_n_bias, r->bias_ids, (size_t)r->sp.n_bias * sizeof(int32_t));
        memcpy(s->bias_values + e->step_n_bias, r->bias_values, (size_t)r->sp.n_bias * sizeof(float));
    }
    e->step_n_bias += r->sp.n_bias;
    ss->supp_start = e->step_n_supp;
    ss->n_supp = kiln_req_suppressed(e, r, s->supp_ids + e->step_n_supp);
    e->step_n_supp += ss->n_supp;
    return 1;
}

/* Append sequence r with n new rows from position base (= n_computed + n_sched) to the step; a
 * row at position n_tokens is the token in flight (prev_row). 0 if it must wait (device penalty
 * buffer full this step). */
static int add_to_step(kiln_engine *e, kiln_req *r, int base, int n) {
    kiln_step *s = &e->steps[e->cur];
    int si = s->n_seqs, t0 = s->n_tokens, bs = e->block_size;
    int virt = r->n_tokens + r->n_inflight; /* tokens including the one in flight */
    if (!add_sampling(e, r, si, base + n == virt)) return 0;
    for (int k = 0; k < n; k++) {
        int pos = base + k;
        if (pos < r->n_tokens) {
            s->token_ids[t0 + k] = r->tokens[pos];
            s->prev_row[t0 + k] = -1;
        } else if (r->n_draft > 0) { /* a proposed token (spec.c) */
            s->token_ids[t0 + k] = r->draft[pos - r->n_tokens];
            s->prev_row[t0 + k] = -1;
        } else { /* drawn by the step in flight: the backend reads it there */
            s->token_ids[t0 + k] = 0;
            s->prev_row[t0 + k] = r->inflight_row;
            s->n_prev++;
        }
        s->positions[t0 + k] = pos;
        s->slot_mapping[t0 + k] = (int64_t)r->blocks[pos / bs] * bs + pos % bs;
    }
    s->seq_q_start[si] = t0;
    s->seq_q_start[si + 1] = t0 + n;
    s->seq_ctx_len[si] = base + n;
    int32_t *bt = s->block_table + (size_t)si * s->max_blocks_per_seq;
    memcpy(bt, r->blocks, (size_t)r->n_blocks * sizeof(int32_t));
    for (int b = r->n_blocks; b < s->max_blocks_per_seq; b++) bt[b] = 0; /* null block */
    /* a speculating sequence asks logits at its last token and at every proposed one */
    s->seq_logits[si] = r->n_draft > 0 ? r->n_draft + 1 : (base + n == virt);
    kiln_step_sampling *ss = &s->sampling[si];
    ss->temperature = r->sp.temperature;
    ss->top_p = r->sp.top_p;
    ss->min_p = r->sp.min_p;
    ss->top_k = r->sp.top_k;
    ss->repetition_penalty = r->sp.repetition_penalty;
    ss->presence_penalty = r->sp.presence_penalty;
    ss->frequency_penalty = r->sp.frequency_penalty;
    ss->n_logprobs = r->sp.n_logprobs;
    ss->want_logprob = r->lp != NULL;
    ss->seed = r->seed;
    ss->rng_offset = (uint64_t)(virt - r->n_prompt);
    e->step_reqs[e->cur][si] = r;
    s->n_seqs = si + 1;
    s->n_tokens = t0 + n;
    return 1;
}

void kiln_sched_undo_pen(kiln_engine *e, int k) {
    kiln_step *s = &e->steps[k];
    for (int i = 0; i < s->n_seqs; i++) {
        kiln_req *r = e->step_reqs[k][i];
        for (int j = 0; j < s->n_pen && r->pen_slot >= 0; j++)
            if (s->pen_slot[j] == r->pen_slot) {
                e->free_pen[e->n_free_pen++] = r->pen_slot;
                r->pen_slot = -1;
            }
    }
    s->n_pen = 0;
}

int kiln_sched_build_step(kiln_engine *e, int *need_drain, kiln_error *err) {
    (void)err;
    kiln_step *s = &e->steps[e->cur];
    int in_flight = e->pending >= 0;
    *need_drain = 0;
    s->n_tokens = 0;
    s->n_seqs = 0;
    s->n_prev = 0;
    s->seq_q_start[0] = 0;
    s->device_sample = e->device_sample;
    if (e->fault_break_batch) s->device_sample = 0; /* the fault perturbs host logits */
    s->n_pen = 0;
    s->pen_start[0] = 0;
    s->n_masks = 0;
    e->step_n_bias = e->step_n_supp = 0;
    int budget = e->max_batch_tokens;
    /* a constrained row whose previous token is still in flight has no mask yet: drain first
     * (constraint.c), then this step is built as without overlap */
    if (in_flight && s->masks)
        for (int i = 0; i < e->n_running; i++)
            if (e->running[i]->gm && e->running[i]->n_inflight > 0) {
                e->stats.grammar_drains++;
                *need_drain = 1;
                return KILN_OK;
            }

    /* the ITL policy and the step budget: decode rows of this step (their attention's keys), and
     * the prefill rows they leave room for */
    int n_dec = 0, pf_left = budget, pf_cut = 0, by_step = 0, share = 0;
    e->step_kk[e->cur] = 0;
    if (e->itl_target_ms > 0 || e->step_target_ms > 0) {
        double kk_dec = 0;
        int c0 = -1; /* the first prefill's next position */
        for (int i = 0; i < e->n_running; i++) {
            const kiln_req *r = e->running[i];
            int virt = r->n_tokens + r->n_inflight, base = r->n_computed + r->n_sched;
            if (r->n_inflight > 0 && (virt - r->n_prompt >= r->max_new || virt >= e->max_model_len)) continue;
            if (virt - base == 1) {
                n_dec++;
                kk_dec += kiln_step_cost_kkeys(base, 1);
            } else if (virt - base > 1 && c0 < 0) {
                c0 = base;
            }
        }
        if (c0 < 0 && e->n_waiting > 0) c0 = e->waiting[0]->n_computed; /* (before its prefix lookup) */
        if (n_dec > budget) n_dec = budget;
        double target = n_dec > 0 && e->itl_target_ms > 0 ? e->itl_target_ms : 0;
        if (e->step_target_ms > 0 && (target == 0 || e->step_target_ms < target)) {
            target = e->step_target_ms;
            by_step = 1;
        }
        if (target > 0) {
            pf_left = kiln_step_cost_prefill_budget(&e->cost, n_dec, kk_dec, c0 < 0 ? 0 : c0, target,
                                                    e->itl_min_chunk, budget);
            if (by_step && e->cost.learn) { /* the probe (see the top) */
                int probe = 4 * e->pf_seen > 32 ? 4 * e->pf_seen : 32;
                if (pf_left > probe) pf_left = probe > e->itl_min_chunk ? probe : e->itl_min_chunk;
            }
            if (n_dec > 0) e->stats.sched_prefill_budget = pf_left;
            /* a request waits behind a running prompt's chunks: that chunk takes half the rows,
             * the waiting one(s) the rest (a short request sent beside a 4,000-token prompt is
             * served in the next step, not after the whole prompt); not while no KV block is free
             * (the waiting one could not start: the rows would be lost) */
            if (e->n_waiting > 0 && e->n_running < e->max_seqs && kiln_kv_num_free(e->kv) > 0) {
                share = pf_left / 2;
                if (share < e->itl_min_chunk) share = e->itl_min_chunk;
            }
        }
    }
    int n_pf = 0, n_dr = 0; /* rows added: prefill (and proposals), decode */

    for (int i = 0; i < e->n_running && budget > 0;) {
        kiln_req *r = e->running[i];
        int base = r->n_computed + r->n_sched, virt = r->n_tokens + r->n_inflight;
        if (r->n_inflight > 0 && (virt - r->n_prompt >= r->max_new || virt >= e->max_model_len)) {
            i++; /* the token in flight ends it (kiln_req_on_token will say so) */
            continue;
        }
        int n = virt - base;
        if (n <= 0) { i++; continue; }
        int pf = n > 1; /* a prefill chunk (counted as such even when cut to one row) */
        if (n > budget) n = budget;
        if (pf && share > 0 && n > share) { /* leave rows to the waiting requests */
            n = share;
            pf_cut = 1;
        }
        if (pf && n > pf_left) { /* cut by the ITL policy */
            n = pf_left;
            pf_cut = 1;
            if (n == 0) { i++; continue; }
        }
        release_window(e, r);
        /* speculative decoding (spec.c): a decode row may carry proposals, budgeted like prefill
         * rows; their blocks are taken without preempting anyone (none free: a plain row) */
        int k = n == 1 && !in_flight && base == r->n_tokens - 1 ? kiln_spec_propose(e, r, budget) : 0;
        if (k > 0 && !ensure_blocks(e, r, base + n + k)) k = r->n_draft = 0;
        int preempted_self = 0;
        while (!ensure_blocks(e, r, base + n)) {
            if (in_flight) {
                /* no preemption with a step in flight: undo this partial step (its blocks stay
                 * with their sequences, which need them next anyway) and drain first */
                kiln_sched_undo_pen(e, e->cur);
                s->n_tokens = s->n_seqs = s->n_prev = 0;
                *need_drain = 1;
                return KILN_OK;
            }
            kiln_req *victim = e->running[e->n_running - 1];
            kiln_sched_preempt(e, victim);
            if (victim == r) { preempted_self = 1; break; }
        }
        if (preempted_self) break; /* r was the last running sequence */
        if (add_to_step(e, r, base, n + k)) {
            e->step_kk[e->cur] += kiln_step_cost_kkeys(base, n + k);
            budget -= n + k;
            if (!pf) n_dr++;
            else { n_pf += n; pf_left -= n; }
            n_pf += k;
        }
        i++;
    }

    while (e->n_waiting > 0 && e->n_running < e->max_seqs && budget > 0) {
        if (pf_left <= 0) { pf_cut = 1; break; } /* the ITL policy: no prefill rows left */
        kiln_req *r = e->waiting[0];
        if (r->n_blocks == 0 && r->n_computed == 0) {
            /* prefix cache: full blocks only, and never the whole sequence (the last token is
             * always recomputed, into a block of its own) */
            int max_hit = (r->n_tokens - 1) / e->block_size;
            int hits = kiln_kv_lookup(e->kv, r->tokens, max_hit, r->blocks, r->hashes);
            r->n_blocks = hits;
            r->n_hashed = hits;
            r->n_computed = hits * e->block_size;
        }
        int n = r->n_tokens - r->n_computed;
        if (n > budget) n = budget;
        if (n > pf_left) { n = pf_left; pf_cut = 1; }
        release_window(e, r); /* prefix hits already out of the window */
        if (!ensure_blocks(e, r, r->n_computed + n)) {
            /* add_request refused requests that could never fit the pool, so this one will
             * fit once running sequences finish */
            kiln_req_release_kv(e, r);
            break;
        }
        if (e->device_sample && kiln_req_has_penalties(r) && r->n_computed + n == r->n_tokens &&
            s->pen_start[s->n_pen] + r->n_tokens > s->cap_pen_tokens) {
            kiln_req_release_kv(e, r); /* its penalty load does not fit this step: FCFS waits */
            break;
        }
        if (!r->scheduled_once) {
            r->scheduled_once = 1;
            r->n_cached_prompt = r->n_computed < r->n_prompt ? r->n_computed : r->n_prompt;
            e->stats.prefix_cache_hits += (uint64_t)r->n_cached_prompt;
        }
        memmove(e->waiting, e->waiting + 1, (size_t)(e->n_waiting - 1) * sizeof(kiln_req *));
        e->n_waiting--;
        r->state = KILN_REQ_RUNNING;
        e->running[e->n_running++] = r;
        e->step_kk[e->cur] += kiln_step_cost_kkeys(r->n_computed, n);
        (void)add_to_step(e, r, r->n_computed, n); /* fits: checked above (n_sched is 0) */
        budget -= n;
        pf_left -= n;
        n_pf += n;
    }
    /* for the cost model: what this step holds, and what it is predicted to take */
    e->step_np[e->cur] = n_pf;
    e->step_nd[e->cur] = n_dr;
    e->step_pred_ms[e->cur] = kiln_step_cost_predict(&e->cost, n_pf, n_dr, e->step_kk[e->cur]);
    /* counted when encoded */
    e->step_cut[e->cur] = n_dr > 0 && pf_cut && e->itl_target_ms > 0 && !by_step;
    e->step_cut_max[e->cur] = pf_cut && by_step;
    return KILN_OK;
}
