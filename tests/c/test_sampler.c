/* kiln-layer: contract (links only this layer and those below it) */
/* test_sampler.c: the CPU sampler (engine/sampler.c).
 *   - Philox4x32-10 against Random123's published known-answer vector (counter 0, key 0);
 *   - kiln_uniform in [0, 1);
 *   - the draw: over many positions, frequencies match the kept set's renormalised softmax
 *     (temperature, top-k, top-p, min-p computed here independently), excluded ids never come,
 *     and each draw is the id-order walk: the first kept id whose running probability exceeds u;
 *   - greedy: argmax, lowest id on ties.
 */
#include <math.h>
#include "sample/sampler.h"
#include "test.h"

static void kat(void) {
    uint32_t o[4];
    kiln_philox(0, 0, o);
    KT_CHECK(o[0] == 0x6627e8d5u && o[1] == 0xe169c58du && o[2] == 0xbc57ac4cu && o[3] == 0x9b00dbd8u,
             "philox(0, 0) = %08x %08x %08x %08x", o[0], o[1], o[2], o[3]);
    for (uint64_t p = 0; p < 1000; p++) {
        double u = kiln_uniform(12345, p);
        KT_CHECK(u >= 0.0 && u < 1.0, "uniform %g", u);
    }
}

/* the kept set's probabilities, computed with a plain selection sort */
static void oracle(const float *x, int V, float T, int k, float top_p, float min_p, double *prob) {
    int ord[64];
    double z[64];
    for (int i = 0; i < V; i++) { ord[i] = i; z[i] = (double)(x[i] * (1.0f / T)); }
    for (int a = 0; a < V; a++)
        for (int b = a + 1; b < V; b++)
            if (z[ord[b]] > z[ord[a]] || (z[ord[b]] == z[ord[a]] && ord[b] < ord[a])) { int t = ord[a]; ord[a] = ord[b]; ord[b] = t; }
    int n = k > 0 && k < V ? k : V;
    double s = 0, mx = z[ord[0]];
    for (int i = 0; i < n; i++) s += exp(z[ord[i]] - mx);
    double cum = 0;
    for (int i = 0; i < n; i++) {
        cum += exp(z[ord[i]] - mx) / s;
        if (cum >= top_p) { n = i + 1; break; }
    }
    int m = 1;
    while (m < n && exp(z[ord[m]] - mx) >= min_p) m++;
    n = m;
    s = 0;
    for (int i = 0; i < V; i++) prob[i] = 0;
    for (int i = 0; i < n; i++) s += exp(z[ord[i]] - mx);
    for (int i = 0; i < n; i++) prob[ord[i]] = exp(z[ord[i]] - mx) / s;
}

static void dist(float T, int k, float top_p, float min_p) {
    enum { V = 12, N = 100000 };
    const float x[V] = {1.0f, 2.5f, 0.3f, 2.5f, -1.0f, 1.8f, 0.0f, 2.2f, -0.5f, 1.1f, 0.9f, 2.0f};
    double prob[V];
    oracle(x, V, T, k, top_p, min_p, prob);
    kiln_sampler s;
    kiln_error err;
    KT_CHECK(kiln_sampler_init(&s, V, &err) == KILN_OK, "init");
    kiln_sampling p = {0};
    p.temperature = T;
    p.top_k = k;
    p.top_p = top_p;
    p.min_p = min_p;
    p.repetition_penalty = 1.0f;
    int cnt[V] = {0}, walk_bad = 0, excluded = 0;
    for (int i = 0; i < N; i++) {
        int32_t t = kiln_sample(&s, x, &p, NULL, 0, NULL, 0, NULL, 0, 77, (uint64_t)i, NULL, NULL, 0);
        cnt[t]++;
        if (prob[t] == 0) excluded++;
        /* the id-order walk */
        double u = kiln_uniform(77, (uint64_t)i), acc = 0, near = 1;
        int want = -1;
        for (int j = 0; j < V; j++) {
            if (prob[j] == 0) continue;
            acc += prob[j];
            if (fabs(acc - u) < near) near = fabs(acc - u);
            if (want < 0 && u < acc) want = j;
        }
        if (want != t && near > 1e-9) walk_bad++;
    }
    KT_CHECK(excluded == 0, "T=%g k=%d p=%g minp=%g: %d draws outside the kept set", T, k, top_p, min_p, excluded);
    KT_CHECK(walk_bad == 0, "T=%g k=%d p=%g minp=%g: %d draws differ from the id-order walk", T, k, top_p, min_p, walk_bad);
    for (int j = 0; j < V; j++) {
        double f = (double)cnt[j] / N, sd = sqrt(prob[j] * (1 - prob[j]) / N);
        KT_CHECK(fabs(f - prob[j]) <= 5 * sd + 1e-12, "T=%g k=%d p=%g minp=%g: id %d freq %g, want %g", T, k, top_p,
                 min_p, j, f, prob[j]);
    }
    /* greedy: argmax, lowest id on ties (ids 1 and 3 tie at 2.5) */
    p.temperature = 0;
    KT_CHECK(kiln_sample(&s, x, &p, NULL, 0, NULL, 0, NULL, 0, 77, 0, NULL, NULL, 0) == 1, "greedy tie -> lowest id");
    kiln_sampler_free(&s);
}

int main(void) {
    kat();
    dist(1.0f, 0, 1.0f, 0.0f);
    dist(0.7f, 5, 1.0f, 0.0f);
    dist(1.3f, 0, 0.8f, 0.0f);
    dist(1.0f, 8, 0.9f, 0.2f);
    dist(0.5f, 3, 0.95f, 0.05f);
    return kt_done();
}
