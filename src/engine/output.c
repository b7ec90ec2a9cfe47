/* output.c: what happens to a sampled token (step time) and how text is built (poll time).
 *
 * Step time: append the id, push it through the step-time detokenizer (tokenizer/detok.h:
 * complete UTF-8 only, the vocabulary's leading-space rule, special tokens skipped) into the
 * bounded stop-string tail, and decide whether the request finishes (EOS / stop id / stop
 * string / max tokens / context limit). The detokenizer's buffer is reserved at add time, so
 * ordinary pieces allocate nothing here.
 *
 * Poll time: a second detokenizer over the same ids builds the same text stream (so stop
 * offsets agree); while the request runs, a suffix that could still grow into a stop string is
 * held back. The text ends where a stop string begins.
 */
#include <string.h>
#include "engine/engine_internal.h"
#include "util/alloc.h"

static void finish(kiln_engine *e, kiln_req *r, kiln_finish why) {
    kiln_sched_remove(e, r);
    r->finish = why;
    r->state = KILN_REQ_FINISHED;
}

void kiln_req_on_token(kiln_engine *e, kiln_req *r, int32_t tok) {
    r->tokens[r->n_tokens++] = tok;
    int n_out = r->n_tokens - r->n_prompt;
    e->stats.generation_tokens_total++;

    /* stop strings: append bytes to the tail and search the window the new bytes touch */
    if (r->n_stops > 0 && r->stop_at < 0) {
        size_t len = 0;
        const char *p = "";
        if (r->has_detok && kiln_detok_push(&r->dstep, tok, &p, &len, NULL) != KILN_OK) len = 0;
        size_t keep = (size_t)(r->max_stop_len > 1 ? r->max_stop_len - 1 : 0);
        for (size_t off = 0; off < len;) {
            /* make room: keep only the last max_stop_len - 1 bytes before appending */
            if (r->tail_len + 1 > r->tail_cap) {
                size_t drop = (size_t)r->tail_len - keep;
                memmove(r->tail, r->tail + drop, keep);
                r->tail_len = (int)keep;
                r->tail_base += (int64_t)drop;
            }
            size_t room = (size_t)(r->tail_cap - r->tail_len);
            size_t chunk = len - off < room ? len - off : room;
            int old = r->tail_len;
            memcpy(r->tail + r->tail_len, p + off, chunk);
            r->tail_len += (int)chunk;
            off += chunk;
            if (n_out > r->min_tokens || r->min_tokens == 0) {
                for (int k = 0; k < r->n_stops && r->stop_at < 0; k++) {
                    int sl = (int)strlen(r->stops[k]);
                    int from = old - sl + 1 > 0 ? old - sl + 1 : 0;
                    for (int i = from; i + sl <= r->tail_len; i++)
                        if (memcmp(r->tail + i, r->stops[k], (size_t)sl) == 0) {
                            r->stop_at = r->tail_base + i;
                            break;
                        }
                }
            }
            if (r->stop_at >= 0) break;
        }
    }

    if (r->sp.n_logprobs > 0 || r->lp) { /* filled by the caller into r->lp / r->top */ }

    if (r->stop_at >= 0) { finish(e, r, KILN_FINISH_STOP); return; }
    if (n_out >= r->min_tokens) {
        if (!r->ignore_eos)
            for (int i = 0; i < e->model->cfg.n_eos; i++)
                if (tok == e->model->cfg.eos_ids[i]) { finish(e, r, KILN_FINISH_STOP); return; }
        for (int i = 0; i < r->n_stop_ids; i++)
            if (tok == r->stop_ids[i]) { finish(e, r, KILN_FINISH_STOP); return; }
    }
    if (n_out >= r->max_new || r->n_tokens >= e->max_model_len) finish(e, r, KILN_FINISH_LENGTH);
}

/* Convert new output tokens into text; the emittable delta is r->text[*from, return value).
 * Returns the end offset of the delta, or -1 on out-of-memory. */
long kiln_req_build_text(kiln_engine *e, kiln_req *r, int final, size_t *from) {
    int n_out = r->n_tokens - r->n_prompt;
    (void)e;
    if (kiln_buf_reserve(&r->text, 0)) return -1; /* r->text.p exists, even for no text */
    for (; r->has_detok && r->text_tokens < n_out; r->text_tokens++) {
        const char *p;
        size_t len;
        if (kiln_detok_push(&r->dpoll, r->tokens[r->n_prompt + r->text_tokens], &p, &len, NULL) != KILN_OK ||
            kiln_buf_add(&r->text, p, len))
            return -1;
    }
    if (final && r->has_detok && !r->text_flushed) {
        const char *p;
        size_t len;
        if (kiln_detok_flush(&r->dpoll, &p, &len, NULL) != KILN_OK || kiln_buf_add(&r->text, p, len)) return -1;
        r->text_flushed = 1;
    }
    size_t end = r->text.len;
    if (r->stop_at >= 0 && (size_t)r->stop_at < end) end = (size_t)r->stop_at;
    if (!final && r->stop_at < 0 && r->n_stops > 0) {
        /* hold back the longest suffix that is a proper prefix of a stop string */
        size_t hold = 0;
        for (int k = 0; k < r->n_stops; k++) {
            size_t sl = strlen(r->stops[k]);
            for (size_t h = sl - 1; h > hold && h > 0; h--)
                if (h <= end && memcmp(r->text.p + end - h, r->stops[k], h) == 0) { hold = h; break; }
        }
        end -= hold;
    }
    if (end < r->text_sent) end = r->text_sent;
    *from = r->text_sent;
    r->text_sent = end;
    return (long)end;
}

void kiln_req_free(kiln_req *r) {
    if (!r) return;
    kiln_free(r->tokens);
    kiln_free(r->blocks);
    kiln_free(r->hashes);
    kiln_free(r->stop_ids);
    for (int i = 0; i < r->n_stops; i++) kiln_free(r->stops[i]);
    kiln_free(r->stops);
    kiln_free(r->bias_ids);
    kiln_free(r->bias_values);
    kiln_free(r->draft);
    kiln_free(r->d_blocks);
    kiln_gmatch_free(r->gm);
    kiln_grammar_free(r->grammar);
    kiln_free(r->lp);
    kiln_free(r->top);
    kiln_free(r->tail);
    kiln_buf_free(&r->text);
    if (r->has_detok) {
        kiln_detok_free(&r->dstep);
        kiln_detok_free(&r->dpoll);
    }
    kiln_free(r);
}
