"""fp8_oracle.py: a float64 forward pass of an HF Llama-layout compressed-tensors FP8 checkpoint
(format float-quantized: e4m3 weights with per-tensor or per-channel weight_scale; activations
static per tensor with input_scale, or dynamic per token), written from the format's definition:
  W = e4m3(weight) * weight_scale            (dequantized, float64)
  x_q = e4m3(clip(x / s, +-448)) * s         (every Linear input but the ignored lm_head;
                                              s = input_scale, or max_i |x[t][i]| / 448 per token)
Attention, norms and RoPE in float64. Used by test_fp8_refs.py as the arbiter between kiln and
transformers' reading of the compressed-tensors fixtures.
"""
import json
import os
import struct

import ml_dtypes
import numpy as np

E4M3 = ml_dtypes.float8_e4m3fn


def load(path):
    raw = open(path, "rb").read()
    hl = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + hl])
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        buf = raw[8 + hl + a:8 + hl + b]
        dt = v["dtype"]
        if dt == "BF16":
            x = (np.frombuffer(buf, np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif dt == "F8_E4M3":
            x = np.frombuffer(buf, np.uint8).view(E4M3).astype(np.float32)
        elif dt == "F16":
            x = np.frombuffer(buf, np.float16)
        elif dt == "F32":
            x = np.frombuffer(buf, np.float32)
        else:
            raise ValueError(f"{k}: dtype {dt}")
        out[k] = x.astype(np.float64).reshape(v["shape"])
    return out


def forward(d, ids, noise=0.0, seed=0):
    """[T][vocab] float64 logits; noise: a relative perturbation of the input embeddings (the
    oracle's own sensitivity: see test_fp8_refs.py)"""
    cfg = json.load(open(os.path.join(d, "config.json")))
    W = load(os.path.join(d, "model.safetensors"))
    grp = cfg["quantization_config"]["config_groups"]["group_0"]
    ia = grp["input_activations"]
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or cfg["hidden_size"] // H
    eps = cfg["rms_norm_eps"]
    theta = cfg.get("rope_theta") or (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0)

    def lin(x, name):
        w, ws = W[name + ".weight"], W[name + ".weight_scale"]
        w = w * (ws.reshape(-1, 1) if ws.size > 1 else ws.reshape(()))
        if ia:
            s = np.abs(x).max(axis=1, keepdims=True) / 448.0 if ia["dynamic"] else W[name + ".input_scale"].reshape(())
            x = np.clip(x / s, -448, 448).astype(np.float32).astype(E4M3).astype(np.float64) * s
        return x @ w.T

    rms = lambda x, w: x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w  # noqa: E731
    T = len(ids)
    x = W["model.embed_tokens.weight"][ids]
    if noise:
        x = x * (1 + noise * np.random.default_rng(seed).standard_normal(x.shape))
    ang = np.arange(T)[:, None] * theta ** (-np.arange(0, hd, 2) / hd)[None]
    cos, sin = np.cos(np.concatenate([ang, ang], 1)), np.sin(np.concatenate([ang, ang], 1))

    def rope(q):
        return q * cos[:, None] + np.concatenate([-q[..., hd // 2:], q[..., :hd // 2]], -1) * sin[:, None]

    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rms(x, W[p + "input_layernorm.weight"])
        q = rope(lin(h, p + "self_attn.q_proj").reshape(T, H, hd))
        k = np.repeat(rope(lin(h, p + "self_attn.k_proj").reshape(T, KV, hd)), H // KV, 1)
        v = np.repeat(lin(h, p + "self_attn.v_proj").reshape(T, KV, hd), H // KV, 1)
        a = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd) + mask
        a = np.exp(a - a.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        x = x + lin(np.einsum("hts,shd->thd", a, v).reshape(T, H * hd), p + "self_attn.o_proj")
        h = rms(x, W[p + "post_attention_layernorm.weight"])
        g, u = lin(h, p + "mlp.gate_proj"), lin(h, p + "mlp.up_proj")
        x = x + lin(g / (1 + np.exp(-g)) * u, p + "mlp.down_proj")
    return rms(x, W["model.norm.weight"]) @ W["lm_head.weight"].T
