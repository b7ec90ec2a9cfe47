/* step_cost.h: the step-cost model of the inter-token-latency policy (scheduler.c,
 * docs/scheduling.md).
 *
 * One step's time is modelled as
 *     t(p, d) = fixed + per_token * p + per_row * d      (milliseconds)
 * p = prefill rows of the step (prompt chunks, recomputation after preemption, speculative
 * proposals), d = decode rows (one per decoding sequence). The coefficients are fitted online
 * from the engine's own step timings by exponentially weighted ridge least squares: sums
 * A = sum w x x^T and b = sum w x y over x = (1, p, d), decayed by `decay` at every observation
 * (an effective memory of 1 / (1 - decay) steps), solved as (A + R) theta = b + R theta0 where
 * theta0 is the calibration (the prior; 0 when none) and R = 1e-3 diag(1, 64^2, 16^2): a
 * thousandth of a pseudo-observation at nominal feature sizes, so the data decides every
 * direction it varied while one it never varied (no decode rows seen yet, or always the same
 * count of them) keeps the prior instead of making the system singular. Negative fitted
 * coefficients are clamped to 0 (a step never gets cheaper by adding rows). After 8
 * observations a timing counts at most 3x its prediction: one hiccup of the host does not
 * distort the next ~50 budgets, while a real change of regime (2x slower) is still followed.
 *
 * The budget: the most prefill rows p such that t(p, d) <= target, at least min_chunk (prefill
 * always progresses) and at most max_tokens - d. Pure functions of the state: the tests feed
 * synthetic timings.
 */
#ifndef KILN_ENGINE_STEP_COST_H
#define KILN_ENGINE_STEP_COST_H
#include <stdint.h>

typedef struct kiln_step_cost {
    double A[3][3], b[3];  /* decayed normal equations over x = (1, p, d), y in ms */
    double prior[3];       /* theta0: fixed ms, ms per prefill row, ms per decode row */
    double theta[3];       /* the current fit (clamped >= 0) */
    double decay;          /* forgetting factor per observation, in (0, 1] */
    int learn;             /* 0: theta stays the prior (calibration only) */
    uint64_t n_obs;        /* observations taken */
} kiln_step_cost;

/* decay <= 0 or > 1: 0.98. prior may be NULL (all 0). */
void kiln_step_cost_init(kiln_step_cost *c, const double prior[3], double decay, int learn);
/* one measured step of p prefill rows and d decode rows that took ms milliseconds (ignored
 * when learning is off, the step is empty or ms is not a positive finite number) */
void kiln_step_cost_observe(kiln_step_cost *c, int p, int d, double ms);
double kiln_step_cost_predict(const kiln_step_cost *c, int p, int d);
/* prefill rows allowed in a step with d decode rows under target_ms (see above) */
int kiln_step_cost_prefill_budget(const kiln_step_cost *c, int d, double target_ms, int min_chunk, int max_tokens);

#endif
