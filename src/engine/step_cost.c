/* step_cost.c: the step-cost model (exponentially weighted ridge least squares over
 * x = (1, prefill rows, decode rows, attended keys / 1024)); design in step_cost.h. */
#include "engine/step_cost.h"
#include <math.h>
#include <string.h>

/* ridge weights: a thousandth of a pseudo-observation at nominal feature sizes (1, 64 prefill
 * rows, 16 decode rows, 64 k units = 64 rows at ~1,000 positions): it only decides directions
 * the data never varied (they keep the prior) */
/* an observation counts at most this many times its prediction (see observe) */
static const double CLIP = 3.0;
#define NF KILN_COST_NF
static const double RIDGE[NF] = {1e-3, 1e-3 * 64.0 * 64.0, 1e-3 * 16.0 * 16.0, 1e-3 * 64.0 * 64.0};

/* solve M t = v (NF x NF, Gaussian elimination with partial pivoting); 0 when singular */
static int solve(double M[NF][NF], double v[NF], double t[NF]) {
    for (int c = 0; c < NF; c++) {
        int p = c;
        for (int r = c + 1; r < NF; r++) if (fabs(M[r][c]) > fabs(M[p][c])) p = r;
        if (!(fabs(M[p][c]) > 1e-300)) return 0;
        if (p != c) {
            for (int k = 0; k < NF; k++) { double x = M[c][k]; M[c][k] = M[p][k]; M[p][k] = x; }
            double x = v[c]; v[c] = v[p]; v[p] = x;
        }
        for (int r = c + 1; r < NF; r++) {
            double f = M[r][c] / M[c][c];
            for (int k = c; k < NF; k++) M[r][k] -= f * M[c][k];
            v[r] -= f * v[c];
        }
    }
    for (int r = NF - 1; r >= 0; r--) {
        double s = v[r];
        for (int k = r + 1; k < NF; k++) s -= M[r][k] * t[k];
        t[r] = s / M[r][r];
    }
    for (int i = 0; i < NF; i++) if (!isfinite(t[i])) return 0;
    return 1;
}

static void refit(kiln_step_cost *c) {
    double M[NF][NF], v[NF], t[NF];
    /* the ridge in units of the mean observation weight (the weights are 1 / ms^2) */
    double rs = c->ww > 0 && c->wn > 0 ? c->ww / c->wn : 1.0;
    for (int i = 0; i < NF; i++) {
        for (int j = 0; j < NF; j++) M[i][j] = c->A[i][j];
        M[i][i] += RIDGE[i] * rs;
        v[i] = c->b[i] + RIDGE[i] * rs * c->prior[i];
    }
    if (!solve(M, v, t)) return; /* keep the last fit */
    for (int i = 0; i < NF; i++) c->theta[i] = t[i] > 0 ? t[i] : 0;
}

void kiln_step_cost_init(kiln_step_cost *c, const double prior[3], double attn_prior, double decay, int learn) {
    memset(c, 0, sizeof *c);
    for (int i = 0; i < 3; i++) c->prior[i] = prior && prior[i] > 0 ? prior[i] : 0;
    c->prior[3] = attn_prior > 0 ? attn_prior : 0;
    memcpy(c->theta, c->prior, sizeof c->theta);
    c->decay = decay > 0 && decay <= 1 ? decay : 0.98;
    c->learn = learn;
}

void kiln_step_cost_observe(kiln_step_cost *c, int p, int d, double kkeys, double ms) {
    if (!c->learn || p + d <= 0 || p < 0 || d < 0 || !(kkeys >= 0) || !(ms > 0) || !isfinite(ms)) return;
    /* a hiccup (the host descheduled, a page fault storm) must not move ~50 steps' worth of fit:
     * once the fit has seen a few steps, an observation counts at most CLIP x its prediction (a
     * real change of regime, e.g. 2x slower, still passes and is followed) */
    double pred = kiln_step_cost_predict(c, p, d, kkeys);
    if (c->n_obs >= 8 && pred > 0 && ms > CLIP * pred) ms = CLIP * pred;
    if (c->n_obs >= 8 && pred > 0) { /* the relative forecast error, once the 4 coefficients are fitted */
        double r = (ms - pred) / pred;
        c->r2 = c->decay * c->r2 + r * r;
        c->r2w = c->decay * c->r2w + 1.0;
    }
    /* weighted by 1 / ms^2: the fit minimizes relative errors, so a 15 ms step says as much
     * as a 500 ms one (unweighted, the long steps' residuals decided the intercept alone) */
    double x[NF] = {1.0, (double)p, (double)d, kkeys}, w = 1.0 / (ms * ms);
    for (int i = 0; i < NF; i++) {
        for (int j = 0; j < NF; j++) c->A[i][j] = c->decay * c->A[i][j] + w * x[i] * x[j];
        c->b[i] = c->decay * c->b[i] + w * x[i] * ms;
    }
    c->ww = c->decay * c->ww + w;
    c->wn = c->decay * c->wn + 1.0;
    c->n_obs++;
    refit(c);
}

double kiln_step_cost_predict(const kiln_step_cost *c, int p, int d, double kkeys) {
    return c->theta[0] + c->theta[1] * p + c->theta[2] * d + c->theta[3] * kkeys;
}

double kiln_step_cost_margin(const kiln_step_cost *c) {
    if (c->n_obs < 8 || !(c->r2w > 0)) return 0.0;
    double m = KILN_COST_Z * sqrt(c->r2 / c->r2w);
    return m < KILN_COST_MAX_MARGIN ? m : KILN_COST_MAX_MARGIN;
}

double kiln_step_cost_kkeys(int c0, int n) {
    if (n <= 0) return 0;
    /* (c0 + 1) + ... + (c0 + n) */
    return ((double)n * c0 + 0.5 * (double)n * (n + 1)) / KILN_COST_KKEY;
}

int kiln_step_cost_prefill_budget(const kiln_step_cost *c, int d, double kkeys_dec, int c0, double target_ms,
                                  int min_chunk, int max_tokens) {
    int hi = max_tokens - d;
    if (hi < 0) hi = 0;
    if (min_chunk > hi) min_chunk = hi;
    if (min_chunk < 0) min_chunk = 0;
    if (c0 < 0) c0 = 0;
    double room = target_ms * (1.0 - kiln_step_cost_margin(c)) - c->theta[0] - c->theta[2] * d - c->theta[3] * kkeys_dec;
    double n;
    if (c->theta[3] > 0) {
        /* the largest n with a n^2 + b n <= room: theta1 n + theta3 (n c0 + n (n + 1) / 2) / K */
        double a = 0.5 * c->theta[3] / KILN_COST_KKEY, b = c->theta[1] + c->theta[3] * (c0 + 0.5) / KILN_COST_KKEY;
        n = room < 0 ? 0.0 : floor((-b + sqrt(b * b + 4.0 * a * room)) / (2.0 * a));
        if (n > hi) n = hi;
        /* rounding of the root: step to the exact largest n (a step or two at most) */
        while (n > 0 && c->theta[1] * n + c->theta[3] * kiln_step_cost_kkeys(c0, (int)n) > room) n--;
        while (n < hi && c->theta[1] * (n + 1) + c->theta[3] * kiln_step_cost_kkeys(c0, (int)n + 1) <= room) n++;
    } else {
        n = c->theta[1] > 0 ? floor(room / c->theta[1]) : (room >= 0 ? (double)hi : 0.0);
    }
    if (n > hi) n = hi;
    if (n < min_chunk) n = min_chunk;
    return (int)n;
}
