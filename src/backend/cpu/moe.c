/* moe.c: the mixture-of-experts FFN on the CPU (Mixtral): top-k routing, experts run on the
 * rows routed to them.
 *
 * For T rows xn [T][D] (the FFN's normed input), E experts of hidden size F, k used per row:
 *   logits[t][e] = xn[t] . router[e]                       (router [E][D], kiln_cpu_matmul)
 *   sel[t] = the k largest logits (ties: the lower expert id), in descending order
 *   w[t][j] = softmax over the k selected logits            (= HF Mixtral's softmax over all
 *             E, top-k, renormalised; = mistral-inference's softmax of the top-k logits)
 *   out[t] = sum_j w[t][j] * down_e(silu(gate_e xn[t]) * up_e xn[t]),  e = sel[t][j]
 * Experts are visited in id order; each gathers its rows (xg [n_e][D]), runs the same
 * matmul_swiglu / matmul entry points as a dense FFN (a row's arithmetic depends only on that
 * row: bit-identical alone or in any batch, I5) and adds w * y into out[t], so a row's sum runs
 * over its experts in id order whatever the batch. Routing weights in double, rounded once to
 * f32. No allocation: the scratch comes from the caller (kiln_cpu_moe_scratch_floats). */
#include <math.h>
#include <string.h>
#include "backend/cpu/moe.h"
#include "util/error.h"

size_t kiln_cpu_moe_scratch_floats(int max_rows, int dim, int n_experts, int n_used) {
    /* logits [T][E], weights [T][k], gathered x [T][D], expert output [T][D], routed rows [T] and
     * selections [T][k] (ints, stored in float slots) */
    return (size_t)max_rows * ((size_t)n_experts + 2 * (size_t)n_used + 2 * (size_t)dim + 1);
}

int kiln_cpu_moe_ffn(kiln_cpu_ctx *c, const kiln_layer_weights *w, const kiln_config *mc, int T, const float *xn,
                     float *out, float *gate, float *up, float *scratch, kiln_error *err) {
    int D = mc->dim, E = mc->n_experts, K = mc->n_experts_used, rc;
    float *logits = scratch;                          /* [T][E] */
    float *wts = logits + (size_t)T * E;              /* [T][K] */
    float *xg = wts + (size_t)T * K;                  /* [T][D] */
    float *yg = xg + (size_t)T * D;                   /* [T][D] */
    int32_t *rows = (int32_t *)(yg + (size_t)T * D);  /* [T] */
    int32_t *sel = rows + T;                          /* [T][K] */
    if ((rc = kiln_cpu_matmul(c, logits, xn, T, w->router, err))) return rc;
    for (int t = 0; t < T; t++) {
        const float *lg = logits + (size_t)t * E;
        int32_t *s = sel + (size_t)t * K;
        for (int j = 0; j < K; j++) { /* selection: the largest not yet taken, lower id on ties */
            int best = -1;
            for (int e = 0; e < E; e++) {
                int taken = 0;
                for (int i = 0; i < j; i++) taken |= s[i] == e;
                if (!taken && (best < 0 || lg[e] > lg[best])) best = e;
            }
            s[j] = best;
        }
        double mx = lg[s[0]], sum = 0, ex[64];
        for (int j = 0; j < K; j++) sum += ex[j] = exp((double)lg[s[j]] - mx);
        for (int j = 0; j < K; j++) wts[(size_t)t * K + j] = (float)(ex[j] / sum);
    }
    memset(out, 0, (size_t)T * D * sizeof(float));
    for (int e = 0; e < E; e++) {
        int n = 0;
        for (int t = 0; t < T; t++)
            for (int j = 0; j < K; j++)
                if (sel[(size_t)t * K + j] == e) {
                    rows[n] = t;
                    memcpy(xg + (size_t)n * D, xn + (size_t)t * D, (size_t)D * sizeof(float));
                    n++;
                }
        if (n == 0) continue;
        const kiln_tensor *x = w->experts + 3 * (size_t)e;
        if ((rc = kiln_cpu_matmul_swiglu(c, gate, up, xg, n, &x[0], &x[1], err))) return rc;
        if ((rc = kiln_cpu_matmul(c, yg, gate, n, &x[2], err))) return rc;
        for (int i = 0; i < n; i++) {
            int t = rows[i];
            float wt = 0;
            for (int j = 0; j < K; j++)
                if (sel[(size_t)t * K + j] == e) wt = wts[(size_t)t * K + j];
            float *o = out + (size_t)t * D;
            const float *y = yg + (size_t)i * D;
            for (int d = 0; d < D; d++) o[d] += wt * y[d];
        }
    }
    return KILN_OK;
}
