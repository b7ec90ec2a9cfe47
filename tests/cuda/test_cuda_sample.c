/* test_cuda_sample.c: the device sampler (sample.cu) against the CPU sampler kiln_sample.
 *
 * Random logits [R][V] (V = 1000, 32000, 131072; flat, wide, peaked, tie-heavy and bf16-rounded
 * rows) x the parameter grid (greedy; temperature 0.7 / 1.3; top-k off / 1 / 40 / V; top-p
 * 1 / 0.9 / 0.5; min-p 0 / 0.05), each row with random extras: repetition 1.2 + presence 0.5 +
 * frequency 0.3 over prompt / output ids loaded by kiln_cuda_penalty_load, logit bias (with a
 * repeated id), suppression (sometimes of the argmax), n_top 0 / 5 / 20, logprob, seed, position.
 * Per row:
 *   - the processed logits (work) equal the CPU's work bit for bit: greedy rows the penalised
 *     logits, sampled rows the temperature-scaled kept set with -inf elsewhere (top-k / top-p /
 *     min-p); a kept-set difference is tolerated only at the top-p boundary, counted and capped;
 *   - the token equals kiln_sample's, except where the CPU's own u * sum lies within 1e-9
 *     relative of a running-sum boundary (detected from the CPU's work and counted);
 *   - logprob and the top-n logprobs within 1e-4, top ids equal, entries past n_top = -1;
 *   - counts[slot] = output counts + 1 at the chosen token (rows with slot -1: untouched);
 *   - the row sampled alone (n = 1) gives the same bits as inside its batch of R;
 *   - grammar masks: rows 2 and 6 of every batch allow a random ~10% of the ids, row 7 three ids
 *     (one of them often suppressed); the CPU reference draws with the same mask as its allow
 *     (constrained decoding), and the token is checked to be an allowed one.
 */
#include <math.h>
#include "backend/cuda/cuda_ops.h"
#include "cuda_test.h"
#include "sample/sampler.h"
#include "util/alloc.h"

#define R 8
#define NP 24 /* prompt ids per row */
#define NO 16 /* output ids per row */
#define NBIAS 5
#define NSUPP 3
#define MT KILN_CUDA_MAX_TOP

static int n_masked, n_rows, n_draw_boundary, n_keep_boundary, n_sampled;

typedef struct row_case {
    kiln_sampling sp;
    int32_t prompt[NP], out[NO];
    int n_prompt, n_out;
    int32_t bias_ids[NBIAS];
    float bias_values[NBIAS];
    int32_t supp[NSUPP];
    int n_supp;
    int n_top, want_lp, slot;
    uint64_t seed, pos;
} row_case;

static void make_logits(float *x, int V, int mode, unsigned long long *s) {
    for (int i = 0; i < V; i++) {
        float r = kt_randf(s);
        switch (mode) {
        case 0: x[i] = r; break;                                    /* flat */
        case 1: x[i] = 6.0f * r; break;                             /* wide */
        case 2: x[i] = 2.0f * r; break;                             /* peaked: spikes below */
        case 3: x[i] = 0.25f * floorf(12.0f * r); break;            /* many exact ties */
        default: x[i] = kiln_bf16_to_f32(kiln_f32_to_bf16(10.0f * r)); /* bf16 logits: ties */
        }
    }
    if (mode == 2)
        for (int j = 0; j < 4; j++) x[kt_rand_u64(s) % (uint64_t)V] = 12.0f + 3.0f * kt_randf(s);
    if (mode == 3) x[kt_rand_u64(s) % (uint64_t)V] = 3.0f; /* a tie at the top too, sometimes */
}

static int argmax(const float *x, int V) {
    int b = 0;
    for (int i = 1; i < V; i++) if (x[i] > x[b]) b = i;
    return b;
}

static void make_case(row_case *c, const float *x, int V, int combo, int slot, unsigned long long *s) {
    static const float temps[3] = {0.0f, 0.7f, 1.3f}, topps[3] = {1.0f, 0.9f, 0.5f}, minps[2] = {0.0f, 0.05f};
    int topks[4] = {0, 1, 40, V};
    memset(c, 0, sizeof *c);
    kiln_sampling *p = &c->sp;
    p->temperature = temps[combo % 3];
    p->top_k = topks[(combo / 3) % 4];
    p->top_p = topps[(combo / 12) % 3];
    p->min_p = minps[(combo / 36) % 2];
    p->repetition_penalty = 1.0f;
    c->slot = slot;
    c->n_prompt = NP;
    c->n_out = NO;
    for (int i = 0; i < NP; i++) c->prompt[i] = (int32_t)(kt_rand_u64(s) % (uint64_t)V);
    for (int i = 0; i < NO; i++) /* repeats, and some ids near the top of the row */
        c->out[i] = i % 4 == 0 ? c->out[i / 2] : i % 5 == 1 ? argmax(x, V) : (int32_t)(kt_rand_u64(s) % (uint64_t)V);
    c->out[0] = (int32_t)(kt_rand_u64(s) % (uint64_t)V);
    if (slot >= 0 && kt_rand_u64(s) % 2) {
        p->repetition_penalty = 1.2f;
        p->presence_penalty = 0.5f;
        p->frequency_penalty = 0.3f;
    }
    if (kt_rand_u64(s) % 3 == 0) {
        for (int i = 0; i < NBIAS; i++) {
            c->bias_ids[i] = (int32_t)(kt_rand_u64(s) % (uint64_t)V);
            c->bias_values[i] = 4.0f * kt_randf(s);
        }
        c->bias_ids[NBIAS - 1] = c->bias_ids[0]; /* a repeated id: applied in list order */
        c->bias_values[1] = 30.0f;               /* a forced-in token */
        p->bias_ids = c->bias_ids;
        p->bias_values = c->bias_values;
        p->n_bias = NBIAS;
    }
    if (kt_rand_u64(s) % 3 == 0) {
        c->n_supp = NSUPP;
        for (int i = 0; i < NSUPP; i++) c->supp[i] = (int32_t)(kt_rand_u64(s) % (uint64_t)V);
        if (kt_rand_u64(s) % 2) c->supp[0] = argmax(x, V);
    }
    static const int tops[3] = {0, 5, 20};
    c->n_top = tops[kt_rand_u64(s) % 3];
    c->want_lp = (int)(kt_rand_u64(s) % 4 != 0);
    c->seed = kt_rand_u64(s);
    c->pos = kt_rand_u64(s) % 5000;
}

/* min over the CPU's running sums (id order over its kept set) of |acc - u * sum| / sum */
static double draw_margin(const float *w, int V, uint64_t seed, uint64_t pos) {
    float mx = -INFINITY;
    for (int i = 0; i < V; i++) if (w[i] > mx) mx = w[i];
    double sum = 0;
    for (int i = 0; i < V; i++) {
        if (w[i] == -INFINITY) continue;
        double e = exp((double)w[i] - mx);
        if (e > 0) sum += e;
    }
    double u = kiln_uniform(seed, pos) * sum, acc = 0, best = INFINITY;
    for (int i = 0; i < V; i++) {
        if (w[i] == -INFINITY) continue;
        double e = exp((double)w[i] - mx);
        if (!(e > 0)) continue;
        acc += e;
        double d = fabs(acc - u) / sum;
        if (d < best) best = d;
    }
    return best;
}

/* kept sets differ only by candidates of one logit value that is the smallest kept value in the
 * set holding them (a top-p boundary) */
static int keep_boundary_only(const float *a, const float *b, int V) {
    float minka = INFINITY, minkb = INFINITY, val = NAN;
    for (int i = 0; i < V; i++) {
        if (a[i] != -INFINITY && a[i] < minka) minka = a[i];
        if (b[i] != -INFINITY && b[i] < minkb) minkb = b[i];
    }
    for (int i = 0; i < V; i++) {
        if (a[i] == b[i]) continue;
        float v = a[i] != -INFINITY ? a[i] : b[i];
        if (a[i] != -INFINITY && b[i] != -INFINITY) return 0; /* a kept value differs */
        if (isnan(val)) val = v;
        if (v != val) return 0;
        if (v != (a[i] != -INFINITY ? minka : minkb)) return 0;
    }
    return 1;
}

typedef struct dev_bufs {
    float *logits, *work, *bias_v, *lp, *top_lp;
    int32_t *bias_ids, *supp, *counts, *tok, *top_ids, *slots, *tok_start, *n_prompt, *tokens;
    uint8_t *in_prompt;
    kiln_cuda_sample_row *rows;
    uint32_t *masks; /* [R][W] */
} dev_bufs;

/* the grammar mask of row r ([W] words), or NULL: rows 2 and 6 a random ~10%, row 7 three ids */
static const uint32_t *make_mask(uint32_t *m, int r, int V, const int32_t *supp, int n_supp, unsigned long long *s) {
    int W = (V + 31) / 32;
    memset(m, 0, (size_t)W * 4);
    if (r == 2 || r == 6) {
        for (int i = 0; i < V; i++)
            if (kt_randf(s) < 0.1f) m[i >> 5] |= 1u << (i & 31);
        return m;
    }
    if (r == 7) {
        int ids[3] = {(int)(kt_rand_u64(s) % (uint64_t)V), (int)(kt_rand_u64(s) % (uint64_t)V), n_supp ? supp[0] : 0};
        for (int j = 0; j < 3; j++) m[ids[j] >> 5] |= 1u << (ids[j] & 31);
        return m;
    }
    return NULL;
}

static void load_penalties(dev_bufs *d, const row_case *c, int V) {
    int32_t slots[R], start[R + 1], np[R], toks[R * (NP + NO)];
    int n = 0, k = 0;
    for (int r = 0; r < R; r++) {
        if (c[r].slot < 0) continue;
        slots[n] = c[r].slot;
        start[n] = k;
        np[n] = c[r].n_prompt;
        for (int i = 0; i < c[r].n_prompt; i++) toks[k++] = c[r].prompt[i];
        for (int i = 0; i < c[r].n_out; i++) toks[k++] = c[r].out[i];
        n++;
    }
    start[n] = k;
    kc_put(d->slots, slots, sizeof slots);
    kc_put(d->tok_start, start, sizeof start);
    kc_put(d->n_prompt, np, sizeof np);
    kc_put(d->tokens, toks, sizeof toks);
    CU(kiln_cuda_penalty_load(d->counts, d->in_prompt, V, d->slots, d->tok_start, d->n_prompt, d->tokens, n, 0));
}

static void run_batch(int V, int mode, int combo0, int n_combo, dev_bufs *d, kiln_sampler *cs, unsigned long long *s) {
    size_t RV = (size_t)R * V;
    float *x = kiln_malloc(RV * 4), *gw = kiln_malloc(RV * 4);
    int32_t *gcounts = kiln_malloc(RV * 4);
    int W = (V + 31) / 32;
    uint32_t *hm = kiln_malloc((size_t)R * W * 4);
    const uint32_t *mk[R];
    row_case c[R];
    kiln_cuda_sample_row hr[R];
    int32_t hb_ids[R * NBIAS], hsupp[R * NSUPP];
    float hb_v[R * NBIAS];
    int nb = 0, nsu = 0;
    for (int r = 0; r < R; r++) {
        make_logits(x + (size_t)r * V, V, mode, s);
        int slot = r == 5 ? -1 : (r * 3 + 1) % R; /* permuted slots; one row without tables */
        make_case(&c[r], x + (size_t)r * V, V, combo0 + r % n_combo, slot, s);
        kiln_cuda_sample_row *h = &hr[r];
        memset(h, 0, sizeof *h);
        h->temperature = c[r].sp.temperature;
        h->top_p = c[r].sp.top_p;
        h->min_p = c[r].sp.min_p;
        h->repetition_penalty = c[r].sp.repetition_penalty;
        h->presence_penalty = c[r].sp.presence_penalty;
        h->frequency_penalty = c[r].sp.frequency_penalty;
        h->top_k = c[r].sp.top_k;
        h->n_top = c[r].n_top;
        h->want_logprob = c[r].want_lp;
        h->slot = c[r].slot;
        h->bias_start = nb;
        h->n_bias = c[r].sp.n_bias;
        for (int i = 0; i < c[r].sp.n_bias; i++) { hb_ids[nb] = c[r].bias_ids[i]; hb_v[nb++] = c[r].bias_values[i]; }
        h->supp_start = nsu;
        h->n_supp = c[r].n_supp;
        for (int i = 0; i < c[r].n_supp; i++) hsupp[nsu++] = c[r].supp[i];
        h->seed = c[r].seed;
        h->position = c[r].pos;
        mk[r] = make_mask(hm + (size_t)r * W, r, V, c[r].supp, c[r].n_supp, s);
        h->mask = mk[r] ? r + 1 : 0;
    }
    kc_put(d->masks, hm, (size_t)R * W * 4);
    kc_put(d->logits, x, RV * 4);
    kc_put(d->rows, hr, sizeof hr);
    kc_put(d->bias_ids, hb_ids, sizeof hb_ids);
    kc_put(d->bias_v, hb_v, sizeof hb_v);
    kc_put(d->supp, hsupp, sizeof hsupp);
    kc_poison(d->work, RV * 4);
    kc_poison(d->tok, R * 4);
    kc_poison(d->lp, R * 4);
    kc_poison(d->top_ids, R * MT * 4);
    kc_poison(d->top_lp, R * MT * 4);
    kc_poison(d->counts, RV * 4); /* slots not loaded stay poisoned: a row with slot -1 must not touch them */
    load_penalties(d, c, V);
    CU(kiln_cuda_sample(d->logits, d->work, R, V, d->rows, d->bias_ids, d->bias_v, d->supp, d->masks, W, d->counts,
                        d->in_prompt, d->tok, d->lp, d->top_ids, d->top_lp, 0));
    int32_t gtok[R], gtop[R * MT];
    float glp[R], gtlp[R * MT];
    kc_get(gtok, d->tok, sizeof gtok);
    kc_get(glp, d->lp, sizeof glp);
    kc_get(gtop, d->top_ids, sizeof gtop);
    kc_get(gtlp, d->top_lp, sizeof gtlp);
    kc_get(gw, d->work, RV * 4);
    kc_get(gcounts, d->counts, RV * 4);

    for (int r = 0; r < R; r++) {
        const row_case *cr = &c[r];
        const float *xr = x + (size_t)r * V, *gwr = gw + (size_t)r * V;
        kiln_token_logprob top[MT];
        float lp = 0;
        cs->allow = mk[r];
        int32_t tok = kiln_sample(cs, xr, &cr->sp, cr->prompt, cr->slot >= 0 ? NP : 0, cr->out, cr->slot >= 0 ? NO : 0,
                                  cr->supp, cr->n_supp, cr->seed, cr->pos, &lp, top, cr->n_top);
        cs->allow = NULL;
        n_rows++;
        if (mk[r]) { /* constrained: an allowed id, unless every allowed id is suppressed (then 0, as the CPU) */
            n_masked++;
            int any = 0;
            for (int i = 0; i < V && !any; i++) any = (mk[r][i >> 5] >> (i & 31) & 1) && cs->work[i] > -INFINITY;
            KT_CHECK(!any || (mk[r][gtok[r] >> 5] >> (gtok[r] & 31) & 1), "V=%d mode=%d row %d: token %d outside its mask",
                     V, mode, r, gtok[r]);
        }
        const char *what = cr->sp.temperature <= 0 ? "greedy" : "sampled";
        char tag[200];
        snprintf(tag, sizeof tag, "V=%d mode=%d row=%d %s%s T=%g k=%d p=%g minp=%g pen=%g bias=%d supp=%d seed=%llu pos=%llu",
                 V, mode, r, what, mk[r] ? " masked" : "", cr->sp.temperature, cr->sp.top_k, cr->sp.top_p, cr->sp.min_p,
                 cr->sp.repetition_penalty, cr->sp.n_bias, cr->n_supp, (unsigned long long)cr->seed,
                 (unsigned long long)cr->pos);
        /* processed logits / kept set */
        int ndiff = 0;
        for (int i = 0; i < V; i++) ndiff += memcmp(&gwr[i], &cs->work[i], 4) != 0 && gwr[i] != cs->work[i];
        int keep_tol = 0;
        if (ndiff) {
            keep_tol = cr->sp.temperature > 0 && cr->sp.top_p < 1.0f && keep_boundary_only(gwr, cs->work, V);
            if (keep_tol) n_keep_boundary++;
            KT_CHECK(keep_tol, "%s: work differs from the CPU at %d ids", tag, ndiff);
        }
        if (cr->sp.temperature > 0) n_sampled++;
        if (gtok[r] != tok) {
            int tol = keep_tol;
            if (!tol && cr->sp.temperature > 0) {
                double m = draw_margin(cs->work, V, cr->seed, cr->pos);
                tol = m <= 1e-9;
                if (tol) n_draw_boundary++;
                fprintf(stderr, "note: %s: token %d vs cpu %d, draw margin %.3g\n", tag, gtok[r], tok, m);
            }
            KT_CHECK(tol, "%s: token %d, cpu %d", tag, gtok[r], tok);
        }
        if (cr->want_lp && gtok[r] == tok) KT_CHECK(fabsf(glp[r] - lp) <= 1e-4f, "%s: logprob %g, cpu %g", tag, glp[r], lp);
        for (int j = 0; j < MT; j++) {
            int gi = gtop[r * MT + j];
            if (j >= cr->n_top) {
                KT_CHECK(gi == -1, "%s: top[%d] = %d past n_top %d", tag, j, gi, cr->n_top);
                continue;
            }
            KT_CHECK(gi == top[j].id, "%s: top[%d] id %d, cpu %d", tag, j, gi, top[j].id);
            KT_CHECK(fabsf(gtlp[r * MT + j] - top[j].logprob) <= 1e-4f, "%s: top[%d] lp %g, cpu %g", tag, j,
                     gtlp[r * MT + j], top[j].logprob);
        }
        /* counts: output counts + the chosen token */
        if (cr->slot >= 0) {
            const int32_t *cc = gcounts + (size_t)cr->slot * V;
            int bad = 0;
            for (int i = 0; i < V && !bad; i++) {
                int want = i == gtok[r];
                for (int k = 0; k < NO; k++) want += cr->out[k] == i;
                if (cc[i] != want) { bad = 1; KT_CHECK(0, "%s: counts[%d][%d] = %d, want %d", tag, cr->slot, i, cc[i], want); }
            }
        }
    }
    /* a row alone gives the same bits as in the batch (tables reloaded: counts moved on) */
    for (int r = 0; r < R; r++) {
        load_penalties(d, c, V);
        kc_poison(d->tok, 4);
        kc_poison(d->lp, 4);
        kc_poison(d->top_ids, MT * 4);
        kc_poison(d->top_lp, MT * 4);
        CU(kiln_cuda_sample(d->logits + (size_t)r * V, d->work, 1, V, d->rows + r, d->bias_ids, d->bias_v, d->supp,
                            d->masks, W, d->counts, d->in_prompt, d->tok, d->lp, d->top_ids, d->top_lp, 0));
        int32_t t1, ti[MT];
        float l1, tl[MT];
        kc_get(&t1, d->tok, 4);
        kc_get(&l1, d->lp, 4);
        kc_get(ti, d->top_ids, sizeof ti);
        kc_get(tl, d->top_lp, sizeof tl);
        KT_CHECK(t1 == gtok[r] && memcmp(&l1, &glp[r], 4) == 0 && memcmp(ti, gtop + r * MT, sizeof ti) == 0 &&
                     memcmp(tl, gtlp + r * MT, sizeof tl) == 0,
                 "V=%d mode=%d row %d alone: token %d lp %g, in the batch %d %g", V, mode, r, t1, l1, gtok[r], glp[r]);
    }
    kiln_free(x);
    kiln_free(gw);
    kiln_free(gcounts);
    kiln_free(hm);
}

int main(void) {
    kc_require_gpu();
    unsigned long long s = kc_seed();
    int Vs[3] = {1000, 32000, 131072};
    for (int vi = 0; vi < 3; vi++) {
        int V = Vs[vi];
        size_t RV = (size_t)R * V;
        dev_bufs d;
        d.logits = kc_dev(RV * 4);
        d.work = kc_dev(kiln_cuda_sample_work_bytes(R, V));
        d.bias_v = kc_dev(R * NBIAS * 4);
        d.lp = kc_dev(R * 4);
        d.top_lp = kc_dev(R * MT * 4);
        d.bias_ids = kc_dev(R * NBIAS * 4);
        d.supp = kc_dev(R * NSUPP * 4);
        d.counts = kc_dev(RV * 4);
        d.in_prompt = kc_dev(RV);
        d.tok = kc_dev(R * 4);
        d.top_ids = kc_dev(R * MT * 4);
        d.slots = kc_dev(R * 4);
        d.tok_start = kc_dev((R + 1) * 4);
        d.n_prompt = kc_dev(R * 4);
        d.tokens = kc_dev(R * (NP + NO) * 4);
        d.rows = kc_dev(R * sizeof(kiln_cuda_sample_row));
        d.masks = kc_dev((size_t)R * ((V + 31) / 32) * 4);
        kiln_sampler cs;
        kiln_error err;
        KT_CHECK(kiln_sampler_init(&cs, V, &err) == KILN_OK, "sampler init");
        int reps = V <= 32000 ? 3 : 1;
        for (int mode = 0; mode < 5; mode++)
            for (int rep = 0; rep < reps; rep++)
                for (int combo = 0; combo < 72; combo += R) run_batch(V, mode, combo, R, &d, &cs, &s);
        kiln_sampler_free(&cs);
        void *all[] = {d.logits, d.work, d.bias_v, d.lp, d.top_lp, d.bias_ids, d.supp, d.counts, d.in_prompt,
                       d.tok, d.top_ids, d.slots, d.tok_start, d.n_prompt, d.tokens, d.rows, d.masks};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) CU(cudaFree(all[i]));
        printf("V=%d done\n", V);
    }
    printf("%d rows (%d sampled, %d masked): %d draw-boundary cases, %d top-p boundary cases tolerated\n", n_rows, n_sampled, n_masked,
           n_draw_boundary, n_keep_boundary);
    int cap = n_rows / 500 > 2 ? n_rows / 500 : 2;
    KT_CHECK(n_draw_boundary + n_keep_boundary <= cap, "%d boundary cases > cap %d", n_draw_boundary + n_keep_boundary, cap);
    return kt_done();
}
