"""ref_families.py: a float64 numpy forward pass of the HF architectures of issue 19 (Llama,
Mistral, Qwen2, Qwen3, the text model of Mistral3ForConditionalGeneration), written from
transformers' modeling files and modeling_rope_utils (and vLLM's rotary_embedding for
`dynamic`), independently of kiln's C code.

    logits = forward_f64(folder, ids, window_override=None)  # [T][vocab] float64

Covered: q/k/v biases (Qwen2), per-head q/k RMSNorm before RoPE (Qwen3), tied embeddings, RoPE
scaling default / linear / dynamic (vLLM: the NTK base fixed at factor * original length) /
llama3 / yarn (attention factor on cos and sin), sliding windows (a query at i sees keys
i - W + 1 .. i on the layers HF makes sliding: layer_types, Qwen's max_window_layers, else all).
"""
import json
import math
import os
import struct

import numpy as np


def load_safetensors(path):
    raw = open(path, "rb").read()
    hl = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + hl])
    base = 8 + hl
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        buf = raw[base + a:base + b]
        if v["dtype"] == "BF16":
            x = (np.frombuffer(buf, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif v["dtype"] == "F16":
            x = np.frombuffer(buf, dtype=np.float16)
        else:
            x = np.frombuffer(buf, dtype=np.float32)
        out[k] = x.astype(np.float64).reshape(v["shape"])
    return out


def inv_freq(cfg, hd):
    """(inv_freq [hd/2], attention factor), per modeling_rope_utils' _compute_*_parameters."""
    rp = cfg.get("rope_parameters") or {}
    rs = cfg.get("rope_scaling") or {}
    if rp.get("rope_type", "default") != "default":
        rs = rp
    theta = cfg.get("rope_theta") or rp.get("rope_theta") or 10000.0
    kind = rs.get("rope_type") or rs.get("type") or "default"
    L = rs.get("original_max_position_embeddings") or cfg.get("max_position_embeddings", 2048)
    f = rs.get("factor") or (cfg.get("max_position_embeddings", 2048) / L if kind == "yarn" else 1.0)
    if kind == "dynamic":  # vLLM DynamicNTKScalingRotaryEmbedding: max_len = L * factor
        theta = theta * ((f * (L * f) / L) - (f - 1)) ** (hd / (hd - 2))
    inv = 1.0 / theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    att = 1.0
    if kind == "linear":
        inv = inv / f
    elif kind == "llama3":
        lo, hi = rs["low_freq_factor"], rs["high_freq_factor"]
        low_wl, high_wl = L / lo, L / hi
        wl = 2 * math.pi / inv
        out = np.where(wl > low_wl, inv / f, inv)
        smooth = (L / wl - lo) / (hi - lo)
        smoothed = (1 - smooth) * out / f + smooth * out
        medium = ~(wl < high_wl) & ~(wl > low_wl)
        inv = np.where(medium, smoothed, out)
    elif kind == "yarn":
        bf, bs = rs.get("beta_fast") or 32, rs.get("beta_slow") or 1

        def corr(rot):
            return (hd * math.log(L / (rot * 2 * math.pi))) / (2 * math.log(theta))

        lo, hi = corr(bf), corr(bs)
        if rs.get("truncate", True):
            lo, hi = math.floor(lo), math.ceil(hi)
        lo, hi = max(lo, 0), min(hi, hd - 1)
        if lo == hi:
            hi += 0.001
        ramp = np.clip((np.arange(hd // 2, dtype=np.float64) - lo) / (hi - lo), 0, 1)
        extra = 1 - ramp
        inv = inv / f * (1 - extra) + inv * extra
        ms = lambda s, m=1.0: 1.0 if s <= 1 else 0.1 * m * math.log(s) + 1.0
        att = rs.get("attention_factor")
        if att is None:
            if rs.get("mscale") and rs.get("mscale_all_dim"):
                att = ms(f, rs["mscale"]) / ms(f, rs["mscale_all_dim"])
            else:
                att = ms(f)
    elif kind not in ("default", "dynamic"):
        raise ValueError(kind)
    return inv, att


def layer_windows(cfg, n_layers):
    sw = cfg.get("sliding_window")
    if sw is None or cfg.get("use_sliding_window") is False or sw >= cfg.get("max_position_embeddings", 2048):
        return [0] * n_layers
    mt = cfg.get("model_type", "")
    if mt.startswith("qwen") and not cfg.get("use_sliding_window"):
        return [0] * n_layers
    if "layer_types" in cfg:
        return [sw if t == "sliding_attention" else 0 for t in cfg["layer_types"]]
    if mt.startswith("qwen"):
        return [sw if i >= cfg.get("max_window_layers", 0) else 0 for i in range(n_layers)]
    return [sw] * n_layers


def text_view(d):
    """(config of the language model, its weights under HF causal-LM names)."""
    cfg = json.load(open(os.path.join(d, "config.json")))
    W = load_safetensors(os.path.join(d, "model.safetensors"))
    if "text_config" in cfg:
        tc = dict(cfg["text_config"])
        tc.setdefault("tie_word_embeddings", cfg.get("tie_word_embeddings", False))
        V = {}
        for k, v in W.items():
            if k.startswith("language_model.model."):
                V["model." + k[len("language_model.model."):]] = v
            elif k.startswith("language_model.lm_head."):
                V["lm_head." + k[len("language_model.lm_head."):]] = v
            elif k.startswith("model.language_model."):
                V["model." + k[len("model.language_model."):]] = v
            elif k == "lm_head.weight":
                V[k] = v
        return tc, V
    return cfg, W


def forward_f64(d, ids, window_override=None):
    cfg, W = text_view(d)
    H, KV = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    hd = cfg.get("head_dim") or cfg["hidden_size"] // H
    eps = cfg["rms_norm_eps"]
    n_layers = cfg["num_hidden_layers"]
    windows = layer_windows(cfg, n_layers) if window_override is None else window_override
    T = len(ids)
    x = W["model.embed_tokens.weight"][ids]
    rms = lambda x, w: x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w
    inv, att = inv_freq(cfg, hd)
    ang = np.arange(T, dtype=np.float64)[:, None] * inv[None, :]
    cos = np.cos(np.concatenate([ang, ang], -1)) * att
    sin = np.sin(np.concatenate([ang, ang], -1)) * att

    def rope(q):
        rot = np.concatenate([-q[..., hd // 2:], q[..., :hd // 2]], -1)
        return q * cos[:, None, :] + rot * sin[:, None, :]

    head = W.get("lm_head.weight")
    if head is None or cfg.get("tie_word_embeddings"):
        head = W["model.embed_tokens.weight"]
    i_idx, j_idx = np.arange(T)[:, None], np.arange(T)[None, :]
    for l in range(n_layers):
        p = f"model.layers.{l}."
        h = rms(x, W[p + "input_layernorm.weight"])
        q = h @ W[p + "self_attn.q_proj.weight"].T
        k = h @ W[p + "self_attn.k_proj.weight"].T
        v = h @ W[p + "self_attn.v_proj.weight"].T
        if p + "self_attn.q_proj.bias" in W:
            q, k, v = q + W[p + "self_attn.q_proj.bias"], k + W[p + "self_attn.k_proj.bias"], v + W[p + "self_attn.v_proj.bias"]
        q, k, v = q.reshape(T, H, hd), k.reshape(T, KV, hd), v.reshape(T, KV, hd)
        if p + "self_attn.q_norm.weight" in W:
            q, k = rms(q, W[p + "self_attn.q_norm.weight"]), rms(k, W[p + "self_attn.k_norm.weight"])
        q, k = rope(q), rope(k)
        mask = j_idx > i_idx
        if windows[l]:
            mask = mask | (j_idx <= i_idx - windows[l])
        o = np.zeros((T, H, hd))
        for hh in range(H):
            kh = hh // (H // KV)
            s = q[:, hh] @ k[:, kh].T / np.sqrt(hd)
            s = np.where(mask, -np.inf, s)
            s = np.exp(s - s.max(-1, keepdims=True))
            o[:, hh] = (s / s.sum(-1, keepdims=True)) @ v[:, kh]
        x = x + o.reshape(T, H * hd) @ W[p + "self_attn.o_proj.weight"].T
        h = rms(x, W[p + "post_attention_layernorm.weight"])
        if p + "block_sparse_moe.gate.weight" in W:  # MixtralSparseMoeBlock
            E, K = cfg["num_local_experts"], cfg["num_experts_per_tok"]
            logits = h @ W[p + "block_sparse_moe.gate.weight"].T
            prob = np.exp(logits - logits.max(-1, keepdims=True))
            prob /= prob.sum(-1, keepdims=True)
            y = np.zeros_like(x)
            for t in range(T):
                top = np.argsort(-prob[t], kind="stable")[:K]
                wts = prob[t, top] / prob[t, top].sum()
                for e, wt in zip(top, wts):
                    q_ = f"{p}block_sparse_moe.experts.{e}."
                    g, u = W[q_ + "w1.weight"] @ h[t], W[q_ + "w3.weight"] @ h[t]
                    y[t] += wt * (W[q_ + "w2.weight"] @ ((g / (1 + np.exp(-g))) * u))
            x = x + y
            continue
        g, u = h @ W[p + "mlp.gate_proj.weight"].T, h @ W[p + "mlp.up_proj.weight"].T
        x = x + ((g / (1 + np.exp(-g))) * u) @ W[p + "mlp.down_proj.weight"].T
    return rms(x, W["model.norm.weight"]) @ head.T
