#!/usr/bin/env python3
"""hf_to_mistral_native.py: convert a Hugging Face Mistral/Llama folder into Mistral's native
layout (params.json + consolidated.safetensors), as mistral-inference reads it.

Pure standard library: tensors are copied as raw bytes (bf16 / f16 / f32), never converted.

The only change to tensor data is the row order of wq / wk. transformers' conversion script
(convert_mistral_weights_to_hf.py) permutes Meta's interleaved RoPE rows into rotate_half order:
    w_hf = w_meta.view(n_heads, head_dim // 2, 2, in).transpose(1, 2).reshape(out, in)
i.e. within each head, HF row j * (head_dim/2) + i holds Meta row 2*i + j. This script applies
the inverse:  meta[h*hd + 2*i + j] = hf[h*hd + j*(hd/2) + i].

usage: hf_to_mistral_native.py HF_DIR OUT_DIR
"""
import json
import mmap
import os
import shutil
import struct
import sys

DTYPE_SIZE = {"BF16": 2, "F16": 2, "F32": 4}


def read_header(path):
    """Returns (header dict without __metadata__, data offset) of a safetensors file."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    for name, t in header.items():
        if t["dtype"] not in DTYPE_SIZE:
            raise SystemExit(f"{path}: tensor {name} has dtype {t['dtype']} (BF16/F16/F32 only)")
    return header, 8 + n


def hf_tensors(hf_dir):
    """name -> (file path, header entry, data offset)."""
    single = os.path.join(hf_dir, "model.safetensors")
    if os.path.exists(single):
        files = [single]
    else:
        with open(os.path.join(hf_dir, "model.safetensors.index.json")) as f:
            wm = json.load(f)["weight_map"]
        files = [os.path.join(hf_dir, s) for s in dict.fromkeys(wm.values())]
    out = {}
    for p in files:
        header, off = read_header(p)
        for name, t in header.items():
            out[name] = (p, t, off)
    return out


def unpermute_rows(raw, n_heads, head_dim, row_bytes):
    """HF rotate_half row order -> Meta interleaved row order, per head (raw bytes)."""
    half = head_dim // 2
    rows = [raw[r * row_bytes:(r + 1) * row_bytes] for r in range(n_heads * head_dim)]
    out = []
    for h in range(n_heads):
        for i in range(half):
            for j in range(2):
                out.append(rows[h * head_dim + j * half + i])
    return b"".join(out)


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    hf_dir, out_dir = sys.argv[1], sys.argv[2]
    with open(os.path.join(hf_dir, "config.json")) as f:
        cfg = json.load(f)
    dim = cfg["hidden_size"]
    n_heads = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads") or n_heads
    head_dim = cfg.get("head_dim") or dim // n_heads
    rope_theta = cfg.get("rope_theta")
    if rope_theta is None:
        rope_theta = (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0)
    tied = bool(cfg.get("tie_word_embeddings", False))
    params = {
        "dim": dim,
        "n_layers": cfg["num_hidden_layers"],
        "head_dim": head_dim,
        "hidden_dim": cfg["intermediate_size"],
        "n_heads": n_heads,
        "n_kv_heads": n_kv,
        "norm_eps": cfg.get("rms_norm_eps", 1e-6),
        "vocab_size": cfg["vocab_size"],
        "rope_theta": rope_theta,
        "max_seq_len": cfg.get("max_position_embeddings", 32768),
    }
    if tied:
        params["tied_embeddings"] = True

    src = hf_tensors(hf_dir)
    # HF name -> native name (and the head count when the rows need un-permuting)
    plan = []  # (native name, hf name, heads or 0)
    if "model.embed_tokens.weight" in src:
        plan.append(("tok_embeddings.weight", "model.embed_tokens.weight", 0))
    elif tied and "lm_head.weight" in src:
        plan.append(("tok_embeddings.weight", "lm_head.weight", 0))
    else:
        raise SystemExit(f"{hf_dir}: no model.embed_tokens.weight")
    plan.append(("norm.weight", "model.norm.weight", 0))
    if not tied:
        plan.append(("output.weight", "lm_head.weight", 0))
    sub = {
        "input_layernorm": ("attention_norm", 0),
        "post_attention_layernorm": ("ffn_norm", 0),
        "self_attn.q_proj": ("attention.wq", n_heads),
        "self_attn.k_proj": ("attention.wk", n_kv),
        "self_attn.v_proj": ("attention.wv", 0),
        "self_attn.o_proj": ("attention.wo", 0),
        "mlp.gate_proj": ("feed_forward.w1", 0),
        "mlp.down_proj": ("feed_forward.w2", 0),
        "mlp.up_proj": ("feed_forward.w3", 0),
    }
    for layer in range(cfg["num_hidden_layers"]):
        for hf_sub, (nat_sub, heads) in sub.items():
            plan.append((f"layers.{layer}.{nat_sub}.weight",
                         f"model.layers.{layer}.{hf_sub}.weight", heads))
    for nat, hf, _ in plan:
        if hf not in src:
            raise SystemExit(f"{hf_dir}: missing tensor {hf}")

    header, off = {"__metadata__": {"format": "pt"}}, 0
    for nat, hf, _ in plan:
        t = src[hf][1]
        n = t["data_offsets"][1] - t["data_offsets"][0]
        header[nat] = {"dtype": t["dtype"], "shape": t["shape"], "data_offsets": [off, off + n]}
        off += n
    hbytes = json.dumps(header, separators=(",", ":")).encode()
    hbytes += b" " * (-len(hbytes) % 8)

    os.makedirs(out_dir, exist_ok=True)
    maps = {}
    try:
        with open(os.path.join(out_dir, "consolidated.safetensors"), "wb") as out:
            out.write(struct.pack("<Q", len(hbytes)))
            out.write(hbytes)
            for nat, hf, heads in plan:
                path, t, base = src[hf]
                if path not in maps:
                    with open(path, "rb") as f:
                        maps[path] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                b, e = t["data_offsets"]
                raw = maps[path][base + b:base + e]
                if heads:
                    rows, cols = t["shape"]
                    if rows != heads * head_dim:
                        raise SystemExit(f"{path}: {hf} has {rows} rows, expected {heads * head_dim}")
                    raw = unpermute_rows(raw, heads, head_dim, cols * DTYPE_SIZE[t["dtype"]])
                out.write(raw)
    finally:
        for mp in maps.values():
            mp.close()
    with open(os.path.join(out_dir, "params.json"), "w") as f:
        json.dump(params, f, indent=2)
        f.write("\n")
    for tok in ("tekken.json", "tokenizer.json"):
        p = os.path.join(hf_dir, tok)
        if os.path.exists(p) and os.path.abspath(hf_dir) != os.path.abspath(out_dir):
            shutil.copy(p, os.path.join(out_dir, tok))


if __name__ == "__main__":
    main()
