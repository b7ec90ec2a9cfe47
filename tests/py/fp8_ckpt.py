"""fp8_ckpt.py: tiny FP8 checkpoints in the three formats vLLM reads, written with numpy +
safetensors (F8_E4M3 codes from ml_dtypes), and an independent numpy reference forward pass of
what they mean (dequantized weights, W8A8 activation rounding through ml_dtypes), for
tests/py/test_fp8_checkpoints.py.

  write(folder, fmt, **variant) -> dict of what was written
    fmt: "hf" (quantization_config quant_method fp8), "ct" (compressed-tensors float-quantized),
         "mistral" (params.json quantization + consolidated.safetensors)
  reference_logits(spec, ids) -> [T][vocab] float64 logits of the written model

The model: Llama shape (dim 64, 2 layers, 4 heads, 2 KV heads, head_dim 16, hidden 128 (or 192
for odd blocks), vocab 96), random weights whose scale tensors are far from 1, so that a scale
divided instead of multiplied changes the logits grossly.
"""
import json
import os

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

E4M3 = ml_dtypes.float8_e4m3fn
FMAX = 448.0


def e4m3(x):
    """round-to-nearest-even with saturation (kiln_f32_to_e4m3), as float32 values"""
    return np.clip(np.asarray(x, np.float32), -FMAX, FMAX).astype(E4M3).astype(np.float32)


def e4m3_codes(x):
    return np.clip(np.asarray(x, np.float32), -FMAX, FMAX).astype(E4M3).view(np.uint8)


def act_scale(amax):
    return np.maximum(np.float32(amax) / np.float32(FMAX), np.float32(1.0 / (FMAX * 512.0))).astype(np.float32)


CFG = dict(dim=64, hidden=128, layers=2, heads=4, kv_heads=2, head_dim=16, vocab=96, theta=10000.0, eps=1e-5)


def _rng_weights(cfg, seed):
    r = np.random.default_rng(seed)
    d, h, hd = cfg["dim"], cfg["hidden"], cfg["head_dim"]
    W = {"embed": r.standard_normal((cfg["vocab"], d)).astype(np.float32) * 0.5,
         "head": r.standard_normal((cfg["vocab"], d)).astype(np.float32) / np.sqrt(d),
         "norm": (1 + 0.1 * r.standard_normal(d)).astype(np.float32)}
    for l in range(cfg["layers"]):
        shapes = {"q": (cfg["heads"] * hd, d), "k": (cfg["kv_heads"] * hd, d), "v": (cfg["kv_heads"] * hd, d),
                  "o": (d, cfg["heads"] * hd), "gate": (h, d), "up": (h, d), "down": (d, h)}
        for k, s in shapes.items():
            W[f"{l}.{k}"] = (r.standard_normal(s) / np.sqrt(s[1])).astype(np.float32)
        W[f"{l}.attn_norm"] = (1 + 0.1 * r.standard_normal(d)).astype(np.float32)
        W[f"{l}.ffn_norm"] = (1 + 0.1 * r.standard_normal(d)).astype(np.float32)
    return W


def _bf16(x):
    return np.asarray(x, np.float32).astype(ml_dtypes.bfloat16)


def _quant(w, kind, block, mult):
    """w [out][in] -> (codes uint8, scale f32 array in the checkpoint's shape, dequantized w).
    mult: a power of two that moves the scales far from 1 (the codes are the same)"""
    out, inn = w.shape
    if kind == "tensor":
        s = np.float32(np.abs(w).max() / FMAX * mult)
        c = e4m3_codes(w / s)
        deq = c.view(E4M3).astype(np.float32) * s
        return c, np.array([s], np.float32), deq
    if kind == "channel":
        s = (np.abs(w).max(axis=1) / FMAX * mult).astype(np.float32)
        c = e4m3_codes(w / s[:, None])
        deq = c.view(E4M3).astype(np.float32) * s[:, None]
        return c, s.reshape(out, 1), deq
    bo, bi = block
    ro, ci = -(-out // bo), -(-inn // bi)
    s = np.zeros((ro, ci), np.float32)
    c = np.zeros((out, inn), np.uint8)
    deq = np.zeros((out, inn), np.float32)
    for a in range(ro):
        for b in range(ci):
            blk = w[a * bo:(a + 1) * bo, b * bi:(b + 1) * bi]
            s[a, b] = np.float32(np.abs(blk).max() / FMAX * mult)
            c[a * bo:(a + 1) * bo, b * bi:(b + 1) * bi] = e4m3_codes(blk / s[a, b])
            deq[a * bo:(a + 1) * bo, b * bi:(b + 1) * bi] = c[a * bo:(a + 1) * bo, b * bi:(b + 1) * bi].view(E4M3).astype(np.float32) * s[a, b]
    return c, s, deq


HF_NAMES = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
            "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
MI_NAMES = {"q": "attention.wq", "k": "attention.wk", "v": "attention.wv", "o": "attention.wo",
            "gate": "feed_forward.w1", "up": "feed_forward.w3", "down": "feed_forward.w2"}


def write(folder, fmt, weights="tensor", act="dynamic", block=(128, 128), kv_scales=None, seed=1, mult=2.0 ** -6,
          hidden=None, ignored=(), config_patch=None, drop=(), tensor_patch=None):
    """Write a checkpoint; returns the spec reference_logits needs.
    weights: tensor | channel | block; act: dynamic | static | none (weight-only, CT only);
    kv_scales: (k, v) or None; ignored: projection keys ("0.q") kept in bf16 and listed as ignored;
    config_patch: dict merged into quantization_config (params.json quantization for mistral);
    drop: tensor names left out; tensor_patch: {name: array} replacing written tensors."""
    cfg = dict(CFG)
    if hidden:
        cfg["hidden"] = hidden
    os.makedirs(folder, exist_ok=True)
    W = _rng_weights(cfg, seed)
    r = np.random.default_rng(seed + 100)
    mistral = fmt == "mistral"
    names = MI_NAMES if mistral else HF_NAMES
    pre = "layers.{l}." if mistral else "model.layers.{l}."
    T = {}
    spec = {"cfg": cfg, "mistral": mistral, "act": act, "lin": {}, "block": block if weights == "block" else None}
    T["tok_embeddings.weight" if mistral else "model.embed_tokens.weight"] = _bf16(W["embed"])
    T["output.weight" if mistral else "lm_head.weight"] = _bf16(W["head"])
    T["norm.weight" if mistral else "model.norm.weight"] = _bf16(W["norm"])
    spec["embed"] = _bf16(W["embed"]).astype(np.float32)
    spec["head"] = _bf16(W["head"]).astype(np.float32)
    spec["norm"] = _bf16(W["norm"]).astype(np.float32)
    suffix_w = {"hf": "weight_scale_inv" if weights == "block" else "weight_scale", "ct": "weight_scale",
                "mistral": "qscale_weight"}[fmt]
    suffix_in = "qscale_act" if mistral else "input_scale"
    for l in range(cfg["layers"]):
        p = pre.format(l=l)
        an = "attention_norm" if mistral else "input_layernorm"
        fn = "ffn_norm" if mistral else "post_attention_layernorm"
        T[p + an + ".weight"] = _bf16(W[f"{l}.attn_norm"])
        T[p + fn + ".weight"] = _bf16(W[f"{l}.ffn_norm"])
        spec[f"{l}.attn_norm"] = _bf16(W[f"{l}.attn_norm"]).astype(np.float32)
        spec[f"{l}.ffn_norm"] = _bf16(W[f"{l}.ffn_norm"]).astype(np.float32)
        for ki, (k, n) in enumerate(names.items()):
            w = W[f"{l}.{k}"]
            key = f"{l}.{k}"
            if key in ignored:
                T[p + n + ".weight"] = _bf16(w)
                spec["lin"][key] = {"w": _bf16(w).astype(np.float32), "in": None, "fp8": False}
                continue
            mult_k = mult * (2.0 ** (3 * (ki % 5)))  # scales of very different magnitudes
            codes, s, deq = _quant(w, weights, block, mult_k)
            T[p + n + ".weight"] = codes.view(E4M3)
            if mistral and weights == "tensor":
                s = s.reshape(())
            T[p + n + "." + suffix_w] = s
            ins = None
            if act == "static":
                ins = np.float32(np.abs(r.standard_normal(1)).item() * 0.02 + 0.01)
                T[p + n + "." + suffix_in] = np.array(ins, np.float32).reshape(() if mistral else (1,))
            spec["lin"][key] = {"w": deq, "in": ins, "fp8": True}
        if kv_scales:
            if mistral:
                T[p + "attention.kv_fake_quantizer.qscale_act"] = np.array(kv_scales[0], np.float32).reshape(())
            else:
                T[p + "self_attn.k_scale"] = np.array([kv_scales[0]], np.float32)
                T[p + "self_attn.v_scale"] = np.array([kv_scales[1]], np.float32)
    for n in drop:
        T.pop(n, None)
    for n, v in (tensor_patch or {}).items():
        T[n] = v
    ign_names = [(pre.format(l=int(k.split(".")[0])) + names[k.split(".")[1]]) for k in ignored]
    if mistral:
        params = {"dim": cfg["dim"], "n_layers": cfg["layers"], "head_dim": cfg["head_dim"], "hidden_dim": cfg["hidden"],
                  "n_heads": cfg["heads"], "n_kv_heads": cfg["kv_heads"], "norm_eps": cfg["eps"],
                  "vocab_size": cfg["vocab"], "rope_theta": cfg["theta"], "max_seq_len": 256,
                  "quantization": {"qformat_weight": "fp8_e4m3", "qscheme_act": "TENSOR" if act == "static" else "NO_SCALES"}}
        if config_patch:
            params["quantization"].update(config_patch)
        json.dump(params, open(os.path.join(folder, "params.json"), "w"))
        save_file(T, os.path.join(folder, "consolidated.safetensors"))
        return spec
    if fmt == "hf":
        q = {"quant_method": "fp8", "activation_scheme": act, "ignored_layers": ign_names}
        if weights == "block":
            q["weight_block_size"] = list(block)
    else:
        wq = {"num_bits": 8, "type": "float", "symmetric": True, "dynamic": False, "strategy": weights}
        if weights == "block":
            wq["block_structure"] = list(block)
        ia = None
        if act == "dynamic":
            ia = {"num_bits": 8, "type": "float", "symmetric": True, "dynamic": True,
                  "strategy": "group" if weights == "block" else "token"}
            if weights == "block":
                ia["group_size"] = block[1]
        elif act == "static":
            ia = {"num_bits": 8, "type": "float", "symmetric": True, "dynamic": False, "strategy": "tensor"}
        q = {"quant_method": "compressed-tensors", "format": "float-quantized", "quantization_status": "compressed",
             "config_groups": {"group_0": {"targets": ["Linear"], "weights": wq, "input_activations": ia}},
             "ignore": ["lm_head"] + ign_names,
             "kv_cache_scheme": ({"num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": False,
                                  "symmetric": True} if kv_scales else None)}
    if config_patch:
        q.update(config_patch)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": cfg["dim"],
              "intermediate_size": cfg["hidden"], "num_hidden_layers": cfg["layers"],
              "num_attention_heads": cfg["heads"], "num_key_value_heads": cfg["kv_heads"], "head_dim": cfg["head_dim"],
              "vocab_size": cfg["vocab"], "max_position_embeddings": 256, "rms_norm_eps": cfg["eps"],
              "rope_theta": cfg["theta"], "hidden_act": "silu", "tie_word_embeddings": False,
              "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2, "quantization_config": q}
    json.dump(config, open(os.path.join(folder, "config.json"), "w"))
    save_file(T, os.path.join(folder, "model.safetensors"))
    return spec


def write_bf16_online(folder, per_channel=False, seed=3):
    """A plain bf16 HF checkpoint of the same shape, and the spec of what kiln's online FP8
    (--quantization fp8 / fp8-per-channel) makes of it: per tensor (row) scale = max|w| / 448 of
    the bf16 values, codes = e4m3(w / scale), activations dynamic per token."""
    cfg = dict(CFG)
    os.makedirs(folder, exist_ok=True)
    W = _rng_weights(cfg, seed)
    T = {"model.embed_tokens.weight": _bf16(W["embed"]), "lm_head.weight": _bf16(W["head"]),
         "model.norm.weight": _bf16(W["norm"])}
    spec = {"cfg": cfg, "mistral": False, "act": "dynamic", "lin": {}, "block": None,
            "embed": _bf16(W["embed"]).astype(np.float32), "head": _bf16(W["head"]).astype(np.float32),
            "norm": _bf16(W["norm"]).astype(np.float32)}
    for l in range(cfg["layers"]):
        p = f"model.layers.{l}."
        T[p + "input_layernorm.weight"] = _bf16(W[f"{l}.attn_norm"])
        T[p + "post_attention_layernorm.weight"] = _bf16(W[f"{l}.ffn_norm"])
        spec[f"{l}.attn_norm"] = _bf16(W[f"{l}.attn_norm"]).astype(np.float32)
        spec[f"{l}.ffn_norm"] = _bf16(W[f"{l}.ffn_norm"]).astype(np.float32)
        for k, n in HF_NAMES.items():
            w = _bf16(W[f"{l}.{k}"])
            T[p + n + ".weight"] = w
            w = w.astype(np.float32)
            amax = np.abs(w).max(axis=1, keepdims=True) if per_channel else np.abs(w).max()
            s = (amax / np.float32(FMAX)).astype(np.float32)
            spec["lin"][f"{l}.{k}"] = {"w": e4m3(w / s) * s, "in": None, "fp8": True}
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": cfg["dim"],
              "intermediate_size": cfg["hidden"], "num_hidden_layers": cfg["layers"],
              "num_attention_heads": cfg["heads"], "num_key_value_heads": cfg["kv_heads"], "head_dim": cfg["head_dim"],
              "vocab_size": cfg["vocab"], "max_position_embeddings": 256, "rms_norm_eps": cfg["eps"],
              "rope_theta": cfg["theta"], "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    json.dump(config, open(os.path.join(folder, "config.json"), "w"))
    save_file(T, os.path.join(folder, "model.safetensors"))
    return spec


# ---- reference forward --------------------------------------------------------------------

def _linear(spec, key, x):
    L = spec["lin"][key]
    w = L["w"]
    if not L["fp8"] or spec["act"] == "none":
        return x @ w.T.astype(np.float64)
    x = x.astype(np.float32)
    blk = spec["block"]
    if L["in"] is not None:  # static
        s = np.float32(L["in"])
        return (e4m3(x / s).astype(np.float64) * float(s)) @ w.T.astype(np.float64)
    if blk:
        bi = blk[1]
        xq = np.zeros_like(x, dtype=np.float64)
        for g in range(0, x.shape[1], bi):
            part = x[:, g:g + bi]
            s = act_scale(np.abs(part).max(axis=1))[:, None]
            xq[:, g:g + bi] = e4m3(part / s).astype(np.float64) * s
        return xq @ w.T.astype(np.float64)
    s = act_scale(np.abs(x).max(axis=1))[:, None]
    return (e4m3(x / s).astype(np.float64) * s) @ w.T.astype(np.float64)


def _rms(x, w, eps):
    x32 = x.astype(np.float64)
    return x32 / np.sqrt((x32 ** 2).mean(axis=1, keepdims=True) + eps) * w


def _rope(x, pos, hd, theta, interleaved):
    inv = theta ** (-np.arange(0, hd, 2) / hd)
    ang = pos[:, None] * inv[None, :]
    cs, sn = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    if interleaved:
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = a * cs - b * sn
        out[..., 1::2] = a * sn + b * cs
        return out
    a, b = x[..., :hd // 2], x[..., hd // 2:]
    return np.concatenate([a * cs - b * sn, a * sn + b * cs], axis=-1)


def reference_logits(spec, ids, kv_fp8=None):
    """kv_fp8: None, or (k_scale, v_scale) to round K and V through e4m3 as an FP8 KV cache"""
    c = spec["cfg"]
    T, hd, H, KV = len(ids), c["head_dim"], c["heads"], c["kv_heads"]
    x = spec["embed"][np.array(ids)].astype(np.float64)
    pos = np.arange(T, dtype=np.float64)
    for l in range(c["layers"]):
        xn = _rms(x, spec[f"{l}.attn_norm"], c["eps"])
        q = _linear(spec, f"{l}.q", xn).reshape(T, H, hd)
        k = _linear(spec, f"{l}.k", xn).reshape(T, KV, hd)
        v = _linear(spec, f"{l}.v", xn).reshape(T, KV, hd)
        q = _rope(q, pos, hd, c["theta"], spec["mistral"])
        k = _rope(k, pos, hd, c["theta"], spec["mistral"])
        if kv_fp8:
            k = e4m3(k.astype(np.float32) / np.float32(kv_fp8[0])).astype(np.float64) * kv_fp8[0]
            v = e4m3(v.astype(np.float32) / np.float32(kv_fp8[1])).astype(np.float64) * kv_fp8[1]
        att = np.zeros((T, H, hd))
        for h in range(H):
            g = h // (H // KV)
            s = q[:, h, :] @ k[:, g, :].T / np.sqrt(hd)
            s = s + np.triu(np.full((T, T), -np.inf), 1)
            p = np.exp(s - s.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            att[:, h, :] = p @ v[:, g, :]
        x = x + _linear(spec, f"{l}.o", att.reshape(T, H * hd))
        xn = _rms(x, spec[f"{l}.ffn_norm"], c["eps"])
        gt = _linear(spec, f"{l}.gate", xn)
        up = _linear(spec, f"{l}.up", xn)
        x = x + _linear(spec, f"{l}.down", gt / (1 + np.exp(-gt)) * up)
    return _rms(x, spec["norm"], c["eps"]) @ spec["head"].T.astype(np.float64)
