/* sampler.c: see sampler.h. */
#include "sample/sampler.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "util/alloc.h"
#include "util/philox.h"
#include "util/error.h"

int kiln_sampler_init(kiln_sampler *s, int vocab, kiln_error *err) {
    memset(s, 0, sizeof *s);
    s->vocab = vocab;
    s->work = kiln_malloc((size_t)vocab * sizeof(float));
    s->idx = kiln_malloc((size_t)vocab * sizeof(int32_t));
    s->count = kiln_calloc((size_t)vocab, sizeof(int32_t));
    s->seen = kiln_calloc((size_t)vocab, 1);
    if (!s->work || !s->idx || !s->count || !s->seen) {
        kiln_sampler_free(s);
        return KILN_ERR(err, KILN_ERR_OOM, "sampler: out of memory (vocab %d)", vocab);
    }
    return KILN_OK;
}

void kiln_sampler_free(kiln_sampler *s) {
    kiln_free(s->work);
    kiln_free(s->idx);
    kiln_free(s->count);
    kiln_free(s->seen);
    memset(s, 0, sizeof *s);
}

void kiln_philox(uint64_t counter, uint64_t key, uint32_t out[4]) { kiln_philox4x32(counter, key, out); }

double kiln_uniform(uint64_t seed, uint64_t position) {
    return (double)kiln_philox_bits53(seed, position) * (1.0 / 9007199254740992.0);
}

/* raw log-softmax normaliser: max and log(sum(exp(x - max))) in double */
static void log_norm(const float *x, int n, double *mx, double *lse) {
    double m = -INFINITY;
    for (int i = 0; i < n; i++) if (x[i] > m) m = x[i];
    double s = 0;
    for (int i = 0; i < n; i++) s += exp((double)x[i] - m);
    *mx = m;
    *lse = log(s);
}

static void top_n_raw(const float *x, int n, int k, double mx, double lse, kiln_token_logprob *top) {
    /* k is small (<= 20): insertion into a sorted list; ties keep the lower id first */
    int have = 0;
    for (int i = 0; i < n; i++) {
        if (have == k && x[i] <= x[top[k - 1].id]) continue;
        int j = have < k ? have++ : k - 1;
        while (j > 0 && x[top[j - 1].id] < x[i]) { top[j] = top[j - 1]; j--; }
        top[j].id = i;
    }
    for (int j = 0; j < have; j++) top[j].logprob = (float)((double)x[top[j].id] - mx - lse);
}

enum { K_PARTIAL_TOPK = 64 }; /* top-k up to this selects by insertion instead of sorting the vocabulary */

static int cmp_desc(const void *a, const void *b, void *keys) {
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    const float *k = keys;
    float x = k[i], y = k[j];
    if (x > y) return -1;
    if (x < y) return 1;
    return (i > j) - (i < j);
}

/* Penalties from tables, the one implementation for the engine (kiln_sample) and the backends'
 * table-based sampling (cpu_sample.c; the CUDA kernel mirrors it): repetition on every id that
 * is in the prompt or was output (divide positive, multiply negative), then presence/frequency
 * on every output id (w -= freq * count + pres). */
static void apply_penalties(float *w, int V, const kiln_sampling *p, const int32_t *count, const uint8_t *in_prompt) {
    int do_rep = count && in_prompt && p->repetition_penalty != 1.0f && p->repetition_penalty > 0;
    int do_pf = count && (p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f);
    if (!do_rep && !do_pf) return;
    for (int i = 0; i < V; i++) {
        int32_t c = count[i];
        if (do_rep && (c > 0 || in_prompt[i])) w[i] = w[i] > 0 ? w[i] / p->repetition_penalty : w[i] * p->repetition_penalty;
        if (do_pf && c > 0) {
            float d = p->frequency_penalty * (float)c; /* two rounded ops (no fused multiply-add) */
            d = d + p->presence_penalty;
            w[i] = w[i] - d;
        }
    }
}

int32_t kiln_sample(kiln_sampler *s, const float *logits, const kiln_sampling *p, const int32_t *prompt,
                    int n_prompt, const int32_t *out, int n_out, const int32_t *suppress, int n_suppress,
                    uint64_t seed, uint64_t position, float *raw_logprob, kiln_token_logprob *top, int n_top) {
    int V = s->vocab;
    int pen = (p->repetition_penalty != 1.0f && p->repetition_penalty > 0) || p->presence_penalty != 0.0f ||
              p->frequency_penalty != 0.0f;
    if (pen) { /* the sequence as tables in the scratch (kept zeroed between calls) */
        for (int i = 0; i < n_prompt; i++) if (prompt[i] >= 0 && prompt[i] < V) s->seen[prompt[i]] = 1;
        for (int i = 0; i < n_out; i++) if (out[i] >= 0 && out[i] < V) s->count[out[i]]++;
    }
    int32_t tok = kiln_sample_tables(s, logits, p, pen ? s->count : NULL, pen ? s->seen : NULL, suppress, n_suppress,
                                     seed, position, raw_logprob, top, n_top);
    if (pen) {
        for (int i = 0; i < n_prompt; i++) if (prompt[i] >= 0 && prompt[i] < V) s->seen[prompt[i]] = 0;
        for (int i = 0; i < n_out; i++) if (out[i] >= 0 && out[i] < V) s->count[out[i]] = 0;
    }
    return tok;
}

int32_t kiln_sample_tables(kiln_sampler *s, const float *logits, const kiln_sampling *p, const int32_t *count,
                           const uint8_t *in_prompt, const int32_t *suppress, int n_suppress, uint64_t seed,
                           uint64_t position, float *raw_logprob, kiln_token_logprob *top, int n_top) {
    int V = s->vocab;
    float *w = s->work;
    memcpy(w, logits, (size_t)V * sizeof(float));
    apply_penalties(w, V, p, count, in_prompt);
    for (int i = 0; i < p->n_bias; i++)
        if (p->bias_ids[i] >= 0 && p->bias_ids[i] < V) w[p->bias_ids[i]] += p->bias_values[i];
    for (int i = 0; i < n_suppress; i++)
        if (suppress[i] >= 0 && suppress[i] < V) w[suppress[i]] = -INFINITY;
    if (s->allow)
        for (int i = 0; i < V; i++)
            if (!(s->allow[i >> 5] >> (i & 31) & 1)) w[i] = -INFINITY;

    int32_t chosen = 0;
    if (p->temperature <= 0.0f) {
        float best = -INFINITY;
        chosen = 0;
        for (int i = 0; i < V; i++) if (w[i] > best) { best = w[i]; chosen = i; }
    } else {
        float inv_t = 1.0f / p->temperature;
        for (int i = 0; i < V; i++) w[i] *= inv_t;
        int n = V;
        int32_t *idx = s->idx;
        for (int i = 0; i < V; i++) idx[i] = i;
        int need_sort = (p->top_k > 0 && p->top_k < V) || p->top_p < 1.0f || p->min_p > 0.0f;
        /* a small top-k: only the first k of the (logit desc, id asc) order matter, and that order
         * is total, so selecting them by insertion keeps the same set in the same order as the
         * full sort (idx[0 .. k) only is valid then: `partial`) */
        int partial = need_sort && p->top_k > 0 && p->top_k <= K_PARTIAL_TOPK && p->top_k < V;
        if (partial) {
            int k = p->top_k, have = 0;
            for (int32_t i = 0; i < V; i++) {
                if (have == k && cmp_desc(&i, &idx[k - 1], w) >= 0) continue;
                int j = have < k ? have++ : k - 1;
                while (j > 0 && cmp_desc(&i, &idx[j - 1], w) < 0) { idx[j] = idx[j - 1]; j--; }
                idx[j] = i;
            }
            n = k;
        } else if (need_sort) {
            qsort_r(idx, (size_t)V, sizeof(int32_t), cmp_desc, w);
            if (p->top_k > 0 && p->top_k < n) n = p->top_k;
        }
        /* probabilities of the kept candidates */
        float mx = w[idx[0]];
        if (!need_sort) for (int i = 0; i < V; i++) if (w[i] > mx) mx = w[i];
        double sum = 0;
        for (int i = 0; i < n; i++) sum += exp((double)w[idx[i]] - mx);
        if (need_sort && p->top_p < 1.0f) {
            double cum = 0;
            int keep = n;
            for (int i = 0; i < n; i++) {
                cum += exp((double)w[idx[i]] - mx) / sum;
                if (cum >= p->top_p) { keep = i + 1; break; }
            }
            n = keep;
        }
        if (need_sort && p->min_p > 0.0f) {
            /* max prob = exp(0)/sum; keep prob >= min_p * max prob */
            double thr = log((double)p->min_p);
            int keep = 1;
            while (keep < n && (double)w[idx[keep]] - mx >= thr) keep++;
            n = keep;
        }
        /* The draw walks the kept set in token-id order (the same distribution as the sorted
         * order, and a GPU can match it without a sort): the candidates outside the kept set
         * become -inf in w, then chosen = the first id whose running sum of exp(w - mx) exceeds
         * u * sum (ids with a zero weight are skipped; if rounding leaves u * sum >= the last
         * running sum, the last id with a nonzero weight). */
        if (partial) { /* every id outside idx[0 .. n) to -inf: keep the n values aside */
            float keep[K_PARTIAL_TOPK];
            for (int i = 0; i < n; i++) keep[i] = w[idx[i]];
            for (int i = 0; i < V; i++) w[i] = -INFINITY;
            for (int i = 0; i < n; i++) w[idx[i]] = keep[i];
        } else if (need_sort)
            for (int i = n; i < V; i++) w[idx[i]] = -INFINITY;
        sum = 0;
        for (int i = 0; i < V; i++) {
            if (w[i] == -INFINITY) continue;
            double e = exp((double)w[i] - mx);
            if (e > 0) sum += e;
        }
        double u = kiln_uniform(seed, position) * sum, acc = 0;
        int32_t last = 0;
        chosen = -1;
        for (int i = 0; i < V && chosen < 0; i++) {
            if (w[i] == -INFINITY) continue;
            double e = exp((double)w[i] - mx);
            if (!(e > 0)) continue;
            acc += e;
            last = i;
            if (u < acc) chosen = i;
        }
        if (chosen < 0) chosen = last;
    }
    if (raw_logprob || (top && n_top > 0)) {
        double mx, lse;
        log_norm(logits, V, &mx, &lse);
        if (raw_logprob) *raw_logprob = (float)((double)logits[chosen] - mx - lse);
        if (top && n_top > 0) top_n_raw(logits, V, n_top < V ? n_top : V, mx, lse, top);
    }
    return chosen;
}
