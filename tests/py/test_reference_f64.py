"""kiln's CPU logits against an independent float64 forward pass (numpy) of the HF Mistral
architecture, on mistral-tiny-random (bf16) and -f16.

Why: the shipped HF reference logits of these two models differ from exact arithmetic by up to
9e-3 (bf16) / 9e-4 (f16) relative L2 at 130 tokens; HF transformers 5.17 itself, run in f32 and
f64 on the stored weights on the GPU machine, reproduces kiln to 2e-6 and disagrees with the
shipped files the same way (docs/evidence/2026-11-25-hf-mistral-tiny-oracle.log). This test pins
kiln to the exact function: relative L2 <= 1e-5 against float64."""
import json
import os
import struct
import subprocess
import tempfile

import numpy as np
import pytest

SHARED = os.environ.get("KILN_SHARED", os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared"))


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


def forward_f64(d, ids):
    cfg = json.load(open(os.path.join(d, "config.json")))
    W = load_safetensors(os.path.join(d, "model.safetensors"))
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or cfg["hidden_size"] // H
    theta = cfg.get("rope_theta") or cfg["rope_parameters"]["rope_theta"]
    eps = cfg["rms_norm_eps"]
    T = len(ids)
    x = W["model.embed_tokens.weight"][ids]
    rms = lambda x, w: x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w
    inv = 1.0 / theta ** (np.arange(0, hd, 2) / hd)
    ang = np.arange(T)[:, None] * inv[None, :]
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))

    def rope(q):
        rot = np.concatenate([-q[..., hd // 2:], q[..., :hd // 2]], -1)
        return q * cos[:, None, :] + rot * sin[:, None, :]

    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rms(x, W[p + "input_layernorm.weight"])
        q = rope((h @ W[p + "self_attn.q_proj.weight"].T).reshape(T, H, hd))
        k = rope((h @ W[p + "self_attn.k_proj.weight"].T).reshape(T, KV, hd))
        v = (h @ W[p + "self_attn.v_proj.weight"].T).reshape(T, KV, hd)
        o = np.zeros((T, H, hd))
        for hh in range(H):
            kh = hh // (H // KV)
            s = q[:, hh] @ k[:, kh].T / np.sqrt(hd) + np.triu(np.full((T, T), -np.inf), 1)
            s = np.exp(s - s.max(-1, keepdims=True))
            o[:, hh] = (s / s.sum(-1, keepdims=True)) @ v[:, kh]
        x = x + o.reshape(T, H * hd) @ W[p + "self_attn.o_proj.weight"].T
        h = rms(x, W[p + "post_attention_layernorm.weight"])
        g, u = h @ W[p + "mlp.gate_proj.weight"].T, h @ W[p + "mlp.up_proj.weight"].T
        x = x + ((g / (1 + np.exp(-g))) * u) @ W[p + "mlp.down_proj.weight"].T
    return rms(x, W["model.norm.weight"]) @ W["lm_head.weight"].T


@pytest.mark.parametrize("model", ["mistral-tiny-random", "mistral-tiny-random-f16"])
def test_logits_vs_float64(kiln, model):
    d = os.path.join(SHARED, "models", model)
    if not os.path.exists(os.path.join(d, "reference.json")):
        pytest.skip(f"SKIP: {d} missing")
    ref = json.load(open(os.path.join(d, "reference.json")))
    for case in ref["cases"]:
        ids = case["prompt_ids"]
        with tempfile.NamedTemporaryFile(suffix=".f32") as f:
            subprocess.run([kiln, "logits", "--model", d, "--prompt-ids", ",".join(map(str, ids)), "--out", f.name],
                           check=True, capture_output=True)
            got = np.fromfile(f.name, dtype=np.float32).reshape(len(ids), -1)
        exact = forward_f64(d, ids)
        hf = np.fromfile(os.path.join(d, case["logits_file"]), dtype=np.float32).reshape(exact.shape)
        rel = np.linalg.norm(got - exact) / np.linalg.norm(exact)
        rel_hf = np.linalg.norm(hf - exact) / np.linalg.norm(exact)
        print(f"{model} {len(ids)} tokens: kiln vs f64 {rel:.2e}, shipped HF reference vs f64 {rel_hf:.2e}")
        assert rel <= 1e-5, f"{model} {len(ids)} tokens: kiln vs float64 {rel}"
