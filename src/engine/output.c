/* output.c: what happens to a sampled token (step time) and how text is built (poll time).
 *
 * Step time (no allocation): append the id, record logprobs, append its bytes to the bounded
 * stop-string tail, and decide whether the request finishes (EOS / stop id / stop string /
 * max tokens / context limit). A token's bytes are kiln_tok_piece(); special tokens give no
 * text; a SentencePiece vocabulary drops the leading space of the first non-special token.
 *
 * Poll time: the output bytes are rebuilt incrementally from the ids; only complete UTF-8 is
 * handed out (invalid bytes become U+FFFD), and while the request runs, a suffix that could
 * still grow into a stop string is held back. The text ends where a stop string begins.
 */
#include <string.h>
#include "engine/engine_internal.h"
#include "util/alloc.h"

/* bytes a token contributes to the output text; *strip_first set when a leading space must go */
static const char *token_bytes(const kiln_engine *e, int32_t tok, int *all_special, size_t *len) {
    *len = 0;
    if (!e->tok) return "";
    if (kiln_tok_is_special(e->tok, tok)) return "";
    const char *p = kiln_tok_piece(e->tok, tok, len);
    if (!p) { *len = 0; return ""; }
    if (*all_special) {
        *all_special = 0;
        if (kiln_tok_strips_leading_space(e->tok) && *len > 0 && p[0] == ' ') { p++; (*len)--; }
    }
    return p;
}

static void finish(kiln_engine *e, kiln_req *r, kiln_finish why) {
    r->finish = why;
    r->state = KILN_REQ_FINISHED;
    for (int i = 0; i < e->n_running; i++)
        if (e->running[i] == r) {
            memmove(e->running + i, e->running + i + 1, (size_t)(e->n_running - i - 1) * sizeof(kiln_req *));
            e->n_running--;
            break;
        }
    kiln_req_release_kv(e, r);
}

void kiln_req_on_token(kiln_engine *e, kiln_req *r, int32_t tok) {
    r->tokens[r->n_tokens++] = tok;
    int n_out = r->n_tokens - r->n_prompt;
    e->stats.generation_tokens_total++;

    /* stop strings: append bytes to the tail and search the window the new bytes touch */
    if (r->n_stops > 0 && r->stop_at < 0) {
        size_t len;
        const char *p = token_bytes(e, tok, &r->all_special_so_far, &len);
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
        r->out_bytes += (int64_t)len;
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

static int text_reserve(kiln_req *r, size_t extra) {
    if (r->text_len + extra + 1 <= r->text_cap) return 0;
    size_t cap = r->text_cap ? r->text_cap : 256;
    while (cap < r->text_len + extra + 1) cap *= 2;
    char *t = kiln_realloc(r->text, cap);
    if (!t) return -1;
    r->text = t;
    r->text_cap = cap;
    return 0;
}

/* length of the complete-UTF-8 prefix of s[0..n) that can be emitted now; invalid bytes count
 * as complete (they are replaced on output). At the end (final), everything is complete. */
static size_t utf8_complete(const unsigned char *s, size_t n, int final) {
    if (final) return n;
    size_t i = n;
    /* look back at most 3 bytes for a lead byte whose sequence is unfinished */
    for (size_t back = 1; back <= 4 && back <= n; back++) {
        unsigned char c = s[n - back];
        if ((c & 0xC0) == 0x80) continue; /* continuation */
        int need = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c < 0xE0 ? 2 : 1;
        if (c >= 0xF5) need = 1;
        if ((size_t)need > back) i = n - back; /* unfinished: hold it back */
        break;
    }
    return i;
}

/* copy s[0..n) into the delta buffer, replacing invalid UTF-8 with U+FFFD */
static int emit_valid(kiln_req *r, const unsigned char *s, size_t n) {
    size_t need = n * 3 + 1;
    if (need > r->delta_cap) {
        char *d = kiln_realloc(r->delta, need);
        if (!d) return -1;
        r->delta = d;
        r->delta_cap = need;
    }
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        int len = c < 0x80 ? 1 : c >= 0xC2 && c < 0xE0 ? 2 : c >= 0xE0 && c < 0xF0 ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        int ok = len > 0 && i + (size_t)len <= n;
        for (int k = 1; ok && k < len; k++) ok = (s[i + k] & 0xC0) == 0x80;
        if (ok && len == 3) {
            unsigned cp = ((c & 0x0Fu) << 12) | ((s[i + 1] & 0x3Fu) << 6);
            ok = cp >= 0x800 && !(cp >= 0xD800 && cp < 0xE000);
        }
        if (ok && len == 4) {
            unsigned cp = ((c & 0x07u) << 18) | ((s[i + 1] & 0x3Fu) << 12);
            ok = cp >= 0x10000 && cp <= 0x10FFFF;
        }
        if (ok) {
            memcpy(r->delta + o, s + i, (size_t)len);
            o += (size_t)len;
            i += (size_t)len;
        } else {
            memcpy(r->delta + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i += 1;
        }
    }
    r->delta[o] = 0;
    return (int)o;
}

/* Convert new output tokens into text and compute the emittable delta into r->delta.
 * Returns the delta length, or -1 on out-of-memory. */
int kiln_req_build_text(kiln_engine *e, kiln_req *r, int final) {
    int n_out = r->n_tokens - r->n_prompt;
    for (; r->text_tokens < n_out; r->text_tokens++) {
        size_t len;
        const char *p = token_bytes(e, r->tokens[r->n_prompt + r->text_tokens], &r->text_all_special, &len);
        if (text_reserve(r, len)) return -1;
        memcpy(r->text + r->text_len, p, len);
        r->text_len += len;
    }
    size_t end = r->text_len;
    if (r->stop_at >= 0 && (size_t)r->stop_at < end) end = (size_t)r->stop_at;
    if (!final && r->stop_at < 0 && r->n_stops > 0) {
        /* hold back the longest suffix that is a proper prefix of a stop string */
        size_t hold = 0;
        for (int k = 0; k < r->n_stops; k++) {
            size_t sl = strlen(r->stops[k]);
            for (size_t h = sl - 1; h > hold && h > 0; h--)
                if (h <= end && memcmp(r->text + end - h, r->stops[k], h) == 0) { hold = h; break; }
        }
        end -= hold;
    }
    if (end < r->text_sent) end = r->text_sent;
    size_t upto = r->text_sent + utf8_complete((const unsigned char *)r->text + r->text_sent, end - r->text_sent, final);
    int n = emit_valid(r, (const unsigned char *)r->text + r->text_sent, upto - r->text_sent);
    if (n < 0) return -1;
    r->text_sent = upto;
    return n;
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
    kiln_free(r->lp);
    kiln_free(r->top);
    kiln_free(r->tail);
    kiln_free(r->text);
    kiln_free(r->delta);
    kiln_free(r);
}
