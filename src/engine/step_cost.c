/* step_cost.c: the step-cost model (exponentially weighted ridge least squares over
 * x = (1, prefill rows, decode rows)); design in step_cost.h. */
#include "engine/step_cost.h"
#include <math.h>
#include <string.h>

/* ridge weights: a thousandth of a pseudo-observation at nominal feature sizes (1, 64 prefill
 * rows, 16 decode rows): it only decides directions the data never varied (they keep the prior) */
/* an observation counts at most this many times its prediction (see observe) */
static const double CLIP = 3.0;
static const double RIDGE[3] = {1e-3, 1e-3 * 64.0 * 64.0, 1e-3 * 16.0 * 16.0};

/* solve M t = v (3x3, Gaussian elimination with partial pivoting); 0 when singular */
static int solve3(double M[3][3], double v[3], double t[3]) {
    for (int c = 0; c < 3; c++) {
        int p = c;
        for (int r = c + 1; r < 3; r++) if (fabs(M[r][c]) > fabs(M[p][c])) p = r;
        if (!(fabs(M[p][c]) > 1e-300)) return 0;
        if (p != c) {
            for (int k = 0; k < 3; k++) { double x = M[c][k]; M[c][k] = M[p][k]; M[p][k] = x; }
            double x = v[c]; v[c] = v[p]; v[p] = x;
        }
        for (int r = c + 1; r < 3; r++) {
            double f = M[r][c] / M[c][c];
            for (int k = c; k < 3; k++) M[r][k] -= f * M[c][k];
            v[r] -= f * v[c];
        }
    }
    for (int r = 2; r >= 0; r--) {
        double s = v[r];
        for (int k = r + 1; k < 3; k++) s -= M[r][k] * t[k];
        t[r] = s / M[r][r];
    }
    return isfinite(t[0]) && isfinite(t[1]) && isfinite(t[2]);
}

static void refit(kiln_step_cost *c) {
    double M[3][3], v[3], t[3];
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++) M[i][j] = c->A[i][j];
        M[i][i] += RIDGE[i];
        v[i] = c->b[i] + RIDGE[i] * c->prior[i];
    }
    if (!solve3(M, v, t)) return; /* keep the last fit */
    for (int i = 0; i < 3; i++) c->theta[i] = t[i] > 0 ? t[i] : 0;
}

void kiln_step_cost_init(kiln_step_cost *c, const double prior[3], double decay, int learn) {
    memset(c, 0, sizeof *c);
    for (int i = 0; i < 3; i++) c->prior[i] = prior && prior[i] > 0 ? prior[i] : 0;
    memcpy(c->theta, c->prior, sizeof c->theta);
    c->decay = decay > 0 && decay <= 1 ? decay : 0.98;
    c->learn = learn;
}

void kiln_step_cost_observe(kiln_step_cost *c, int p, int d, double ms) {
    if (!c->learn || p + d <= 0 || p < 0 || d < 0 || !(ms > 0) || !isfinite(ms)) return;
    /* a hiccup (the host descheduled, a page fault storm) must not move ~50 steps' worth of fit:
     * once the fit has seen a few steps, an observation counts at most CLIP x its prediction (a
     * real change of regime, e.g. 2x slower, still passes and is followed) */
    double pred = kiln_step_cost_predict(c, p, d);
    if (c->n_obs >= 8 && pred > 0 && ms > CLIP * pred) ms = CLIP * pred;
    double x[3] = {1.0, (double)p, (double)d};
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++) c->A[i][j] = c->decay * c->A[i][j] + x[i] * x[j];
        c->b[i] = c->decay * c->b[i] + x[i] * ms;
    }
    c->n_obs++;
    refit(c);
}

double kiln_step_cost_predict(const kiln_step_cost *c, int p, int d) {
    return c->theta[0] + c->theta[1] * p + c->theta[2] * d;
}

int kiln_step_cost_prefill_budget(const kiln_step_cost *c, int d, double target_ms, int min_chunk, int max_tokens) {
    int hi = max_tokens - d;
    if (hi < 0) hi = 0;
    if (min_chunk > hi) min_chunk = hi;
    if (min_chunk < 0) min_chunk = 0;
    double room = target_ms - c->theta[0] - c->theta[2] * d;
    double n = c->theta[1] > 0 ? floor(room / c->theta[1]) : (room >= 0 ? (double)hi : 0.0);
    if (n > hi) n = hi;
    if (n < min_chunk) n = min_chunk;
    return (int)n;
}
