/* rope.c: RoPE frequencies of a model (the scaling variants) and its feature flags.
 *
 * kiln_rope_inv_freq gives, for pair i of a head (i < hd/2, hd = head_dim, b = rope_theta):
 *   default   inv[i] = b^(-2i/hd)
 *   linear    inv[i] / factor                                   (HF, vLLM LinearScaling: t / factor)
 *   dynamic   b' = b * (factor * L / L - (factor - 1))^(hd / (hd - 2)), L = original length:
 *             vLLM's DynamicNTKScalingRotaryEmbedding, which fixes the base for the longest
 *             context factor * L (HF recomputes it from the current length: keys cached at one
 *             length would not match queries at another, and prefix sharing would break)
 *   llama3    wavelen = 2 pi / inv; wavelen < L / high: inv; wavelen > L / low: inv / factor;
 *             between: (1 - s) inv / factor + s inv, s = (L / wavelen - low) / (high - low)
 *             (HF _compute_llama3_parameters, vLLM Llama3RotaryEmbedding)
 *   yarn      extrapolation inv_e = b^(-2i/hd), interpolation inv_e / factor, mixed by
 *             m_i = 1 - clamp((i - lo) / (hi - lo), 0, 1) (hi == lo: hi + 0.001):
 *             inv = inv_e / factor * (1 - m_i) + inv_e * m_i, with
 *             lo, hi = floor / ceil of hd * ln(L / (beta * 2 pi)) / (2 ln b) at beta_fast, beta_slow
 *             (clamped to [0, hd - 1]; no floor / ceil when truncate = 0), and cos / sin times
 *             attention_factor (given, or mscale(factor, mscale) / mscale(factor, mscale_all_dim)
 *             when both are set, else mscale(factor) = 0.1 ln(factor) + 1 for factor > 1)
 *             (HF _compute_yarn_parameters, vLLM YaRNScalingRotaryEmbedding; a config's
 *             attention_factor replaces mscale(factor) as in HF, where vLLM reads only its own
 *             attn_factor, a multiplier of mscale: no checkpoint kiln knows sets either)
 *   GGUF rope_freqs.weight (llama.cpp's Llama 3.1 conversion): inv[i] / rope_freqs[i], which
 *             is how llama.cpp stores the llama3 bands.
 * Everything in double; the backends take inv and the factor as they are.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "model/model.h"
#include "util/error.h"

const char *kiln_rope_scaling_name(kiln_rope_scaling_type t) {
    static const char *names[] = {"none", "linear", "dynamic", "llama3", "yarn"};
    return (unsigned)t < KILN_ROPE_SCALING_COUNT ? names[t] : "?";
}

static double yarn_mscale(double scale, double mscale) {
    return scale <= 1.0 ? 1.0 : 0.1 * mscale * log(scale) + 1.0;
}

static double yarn_corr_dim(double rot, int hd, double base, int L) {
    return (hd * log(L / (rot * 2.0 * M_PI))) / (2.0 * log(base));
}

int kiln_rope_inv_freq(const kiln_model *m, double *inv, double *attn_factor, kiln_error *err) {
    const kiln_config *c = &m->cfg;
    const kiln_rope_scaling *rs = &c->rope_scaling;
    int hd = c->head_dim, half = hd / 2;
    double base = c->rope_theta, f = rs->factor;
    int L = rs->orig_max_pos > 0 ? rs->orig_max_pos : c->max_seq_len;
    *attn_factor = 1.0;
    if (rs->type != KILN_ROPE_SCALING_NONE && !(f > 0))
        return KILN_ERR(err, KILN_ERR_FORMAT, "%s: RoPE scaling %s with factor %g", m->path,
                        kiln_rope_scaling_name(rs->type), f);
    if ((rs->type == KILN_ROPE_SCALING_DYNAMIC || rs->type == KILN_ROPE_SCALING_YARN) && !(base > 1.0))
        return KILN_ERR(err, KILN_ERR_FORMAT, "%s: RoPE scaling %s needs rope_theta > 1 (got %g)", m->path,
                        kiln_rope_scaling_name(rs->type), base);
    if (rs->type == KILN_ROPE_SCALING_DYNAMIC) {
        if (hd <= 2) return KILN_ERR(err, KILN_ERR_FORMAT, "%s: dynamic RoPE needs head_dim > 2", m->path);
        base = base * pow(f * f - (f - 1.0), (double)hd / (hd - 2));
    }
    for (int i = 0; i < half; i++) inv[i] = 1.0 / pow(base, (double)(2 * i) / (double)hd);
    switch (rs->type) {
    case KILN_ROPE_SCALING_NONE:
    case KILN_ROPE_SCALING_DYNAMIC:
    case KILN_ROPE_SCALING_COUNT:
        break;
    case KILN_ROPE_SCALING_LINEAR:
        for (int i = 0; i < half; i++) inv[i] /= f;
        break;
    case KILN_ROPE_SCALING_LLAMA3: {
        double lo = rs->low_freq_factor, hi = rs->high_freq_factor;
        if (!(hi > lo) || !(lo > 0))
            return KILN_ERR(err, KILN_ERR_FORMAT, "%s: llama3 RoPE needs high_freq_factor %g > low_freq_factor %g > 0",
                            m->path, hi, lo);
        double low_wl = L / lo, high_wl = L / hi;
        for (int i = 0; i < half; i++) {
            double wl = 2.0 * M_PI / inv[i];
            if (wl < high_wl) continue;
            if (wl > low_wl) {
                inv[i] /= f;
                continue;
            }
            double s = (L / wl - lo) / (hi - lo);
            inv[i] = (1.0 - s) * inv[i] / f + s * inv[i];
        }
        break;
    }
    case KILN_ROPE_SCALING_YARN: {
        double bf = rs->beta_fast > 0 ? rs->beta_fast : 32.0, bs = rs->beta_slow > 0 ? rs->beta_slow : 1.0;
        double lo = yarn_corr_dim(bf, hd, base, L), hi = yarn_corr_dim(bs, hd, base, L);
        if (rs->truncate) {
            lo = floor(lo);
            hi = ceil(hi);
        }
        if (lo < 0) lo = 0;
        if (hi > hd - 1) hi = hd - 1;
        if (lo == hi) hi += 0.001;
        for (int i = 0; i < half; i++) {
            double r = (i - lo) / (hi - lo);
            r = r < 0 ? 0 : r > 1 ? 1 : r;
            double mix = 1.0 - r; /* the extrapolation share */
            inv[i] = inv[i] / f * (1.0 - mix) + inv[i] * mix;
        }
        if (rs->attention_factor > 0) *attn_factor = rs->attention_factor;
        else if (rs->mscale > 0 && rs->mscale_all_dim > 0)
            *attn_factor = yarn_mscale(f, rs->mscale) / yarn_mscale(f, rs->mscale_all_dim);
        else *attn_factor = yarn_mscale(f, 1.0);
        break;
    }
    }
    if (m->rope_freqs)
        for (int i = 0; i < half; i++) {
            if (!(m->rope_freqs[i] > 0))
                return KILN_ERR(err, KILN_ERR_FORMAT, "%s: rope_freqs[%d] = %g is not positive", m->path, i,
                                (double)m->rope_freqs[i]);
            inv[i] /= m->rope_freqs[i];
        }
    return KILN_OK;
}

unsigned kiln_model_features(const kiln_model *m) {
    unsigned f = 0;
    if (m->cfg.qkv_bias) f |= KILN_FEAT_QKV_BIAS;
    if (m->cfg.qk_norm) f |= KILN_FEAT_QK_NORM;
    if (m->cfg.n_experts > 0) f |= KILN_FEAT_MOE;
    if (m->cfg.rope_scaling.type != KILN_ROPE_SCALING_NONE || m->rope_freqs) f |= KILN_FEAT_ROPE_SCALING;
    for (int l = 0; m->layers && l < m->cfg.n_layers; l++)
        if (m->layers[l].window > 0) f |= KILN_FEAT_WINDOW;
    return f;
}

void kiln_model_feature_names(const kiln_model *m, unsigned mask, char *buf, size_t n) {
    if (!n) return;
    buf[0] = 0;
    size_t k = 0;
#define ADD(...)                                                                                  \
    do {                                                                                          \
        int w = snprintf(buf + k, n - k, "%s", k ? ", " : "");                                    \
        if (w > 0 && (size_t)w < n - k) k += (size_t)w;                                           \
        w = snprintf(buf + k, n - k, __VA_ARGS__);                                                \
        if (w > 0) k = (size_t)w < n - k ? k + (size_t)w : n - 1;                                 \
    } while (0)
    if (mask & KILN_FEAT_QKV_BIAS) ADD("q/k/v projection biases");
    if (mask & KILN_FEAT_QK_NORM) ADD("per-head q/k RMSNorm");
    if (mask & KILN_FEAT_ROPE_SCALING) {
        if (m->rope_freqs) ADD("RoPE frequency factors (GGUF rope_freqs)");
        if (m->cfg.rope_scaling.type != KILN_ROPE_SCALING_NONE)
            ADD("RoPE scaling %s (factor %g)", kiln_rope_scaling_name(m->cfg.rope_scaling.type), m->cfg.rope_scaling.factor);
    }
    if (mask & KILN_FEAT_WINDOW) {
        int nw = 0;
        for (int l = 0; m->layers && l < m->cfg.n_layers; l++) nw += m->layers[l].window > 0;
        ADD("sliding-window attention (%d tokens, %d of %d layers)", m->cfg.sliding_window, nw, m->cfg.n_layers);
    }
    if (mask & KILN_FEAT_MOE) ADD("mixture of experts (%d experts, top %d)", m->cfg.n_experts, m->cfg.n_experts_used);
#undef ADD
}
