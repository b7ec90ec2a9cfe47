/* step_cost.h: the step-cost model of the inter-token-latency policy (scheduler.c,
 * docs/scheduling.md).
 *
 * One step's time is modelled as
 *     t(p, d, k) = fixed + per_token * p + per_row * d + per_kkey * k      (milliseconds)
 * p = prefill rows of the step (prompt chunks, recomputation after preemption, speculative
 * proposals), d = decode rows (one per decoding sequence), k = attention's work: the keys every
 * row of the step attends to, summed, in thousands (KILN_COST_KKEY keys; a row at position j
 * attends to j + 1). The matmuls cost per row whatever the context; attention grows with it: a
 * chunk of 256 rows at position 3,000 of a 4,000-token prompt does ~12x the attention work of
 * the first chunk, which a per-row cost alone would miss. The coefficients are fitted online
 * from the engine's own step timings by exponentially weighted ridge least squares, each step
 * weighted by 1 / ms^2 (relative errors: a 15 ms step says as much as a 500 ms one; unweighted,
 * a CPU fit learnt on ~500 ms prefill steps put its intercept where 4-row steps were forecast
 * at 70 ms and took 14): sums A = sum w x x^T and b = sum w x y over x = (1, p, d, k), decayed by
 * `decay` at every observation (an effective memory of 1 / (1 - decay) steps), solved as
 * (A + R) theta = b + R theta0 where
 * theta0 is the calibration (the prior; 0 when none) and R = 1e-3 diag(1, 64^2, 16^2, 64^2) times
 * the mean weight: a thousandth of a pseudo-observation at nominal feature sizes, so the data decides every
 * direction it varied while one it never varied (no decode rows seen yet, or always the same
 * count of them) keeps the prior instead of making the system singular. Negative fitted
 * coefficients are clamped to 0 (a step never gets cheaper by adding rows). After 8
 * observations a timing counts at most 3x its prediction: one hiccup of the host does not
 * distort the next ~50 budgets, while a real change of regime (2x slower) is still followed.
 *
 * The forecast error: r2, the same exponentially weighted mean of the squared relative residual
 * ((measured - predicted) / predicted before the refit, after the clip) over the observations
 * from the 9th (before, the fit is still finding its 4 coefficients). The policy bounds a
 * percentile of the step time, not its mean: the budget aims at target (1 - z sqrt(r2)) with
 * z = KILN_COST_Z (2.33, the 99th percentile of a normal error), so a noisy machine gets smaller
 * chunks than a quiet one at the same mean fit (none while fewer than 8 steps were seen).
 * Relative, not in ms: a step's noise grows with its length (a time slice lost, a slower
 * period of a shared machine), and the steps that teach the model are not all the size of the
 * ones the target governs. On the CPU a long prompt alone runs in steps of ~500 ms whose
 * forecast errors of ~25 ms, taken as ms, made a margin larger than the 50 ms target of the
 * steps with a decode row beside it (4-row chunks: the prompt crawled while the short request
 * decoded at 15 ms a token). The margin is capped at half the target: after a fit learnt on
 * ~500 ms steps has extrapolated to a few rows (5x too high, seen on the CPU: relative errors near
 * -0.9, a margin of 2x the target) those errors must not shut prefill out for the ~50 steps of
 * its memory; the budget still aims at half the target.
 *
 * The budget: the most prefill rows p such that t(p, d, k_d + k_p) <= target (1 - margin), where k_d is the
 * decode rows' attention and k_p that of p rows from position c0 (the first prefilling
 * sequence's next row: all prefill rows are counted at its context); at least min_chunk
 * (prefill always progresses) and at most max_tokens - d. Pure functions of the state: the tests
 * feed synthetic timings.
 */
#ifndef KILN_ENGINE_STEP_COST_H
#define KILN_ENGINE_STEP_COST_H
#include <stdint.h>

#define KILN_COST_KKEY 1024.0 /* keys per unit of the attention feature k */
#define KILN_COST_Z 2.33      /* the budget's margin in forecast-error standard deviations */
#define KILN_COST_MAX_MARGIN 0.5 /* at most half the target: a stretch of bad forecasts slows prefill, never stops it */
enum { KILN_COST_NF = 4 };    /* features: 1, p, d, k */

typedef struct kiln_step_cost {
    double A[KILN_COST_NF][KILN_COST_NF], b[KILN_COST_NF]; /* decayed normal equations over x, y in ms */
    double prior[KILN_COST_NF]; /* theta0: fixed ms, ms per prefill row, per decode row, per k unit */
    double theta[KILN_COST_NF]; /* the current fit (clamped >= 0) */
    double decay;          /* forgetting factor per observation, in (0, 1] */
    double r2, r2w;        /* decayed sum of squared relative forecast errors and of their weights */
    double ww, wn;         /* decayed sums of the observations' weights (1 / ms^2) and of their count */
    int learn;             /* 0: theta stays the prior (calibration only) */
    uint64_t n_obs;        /* observations taken */
} kiln_step_cost;

/* decay <= 0 or > 1: 0.98. prior may be NULL (all 0): fixed, per prefill row, per decode row;
 * attn_prior: ms per KILN_COST_KKEY attended keys (0: learned from nothing). */
void kiln_step_cost_init(kiln_step_cost *c, const double prior[3], double attn_prior, double decay, int learn);
/* one measured step of p prefill rows and d decode rows attending to kkeys thousand keys in all
 * (k above) that took ms milliseconds (ignored when learning is off, the step is empty or ms is
 * not a positive finite number) */
void kiln_step_cost_observe(kiln_step_cost *c, int p, int d, double kkeys, double ms);
double kiln_step_cost_predict(const kiln_step_cost *c, int p, int d, double kkeys);
/* KILN_COST_Z x the relative forecast error's standard deviation (a fraction of a step's time;
 * the budget keeps target x this below the target); 0 before 8 observations */
double kiln_step_cost_margin(const kiln_step_cost *c);
/* k of n consecutive rows from position c0: sum_{j=c0}^{c0+n-1} (j + 1) / KILN_COST_KKEY */
double kiln_step_cost_kkeys(int c0, int n);
/* prefill rows allowed in a step with d decode rows attending to kkeys_dec (k units) under
 * target_ms, the prefill rows counted from position c0 (see above) */
int kiln_step_cost_prefill_budget(const kiln_step_cost *c, int d, double kkeys_dec, int c0, double target_ms,
                                  int min_chunk, int max_tokens);

#endif
