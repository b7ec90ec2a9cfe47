"""FP8 checkpoints (issue 17): each format vLLM reads, written here by fp8_ckpt.py (safetensors
F8_E4M3 codes + scale tensors), loaded by kiln and run on the CPU backend; kiln's logits against
fp8_ckpt.reference_logits, an independent numpy forward of what the checkpoint means
(dequantized weights, activations rounded to e4m3 by ml_dtypes). Malformed or unsupported
checkpoints are refused with a message naming the field or tensor. Also kiln's e4m3 encoder
(test_fp8 --encode) against ml_dtypes over every interesting f32."""
import os
import subprocess

import numpy as np
import pytest

ml_dtypes = pytest.importorskip("ml_dtypes", reason="SKIP: ml_dtypes (requirements-test.txt) is not installed")
import fp8_ckpt  # noqa: E402

IDS = [1, 5, 9, 20, 33, 7, 60, 2, 88, 41, 13]

VARIANTS = [
    ("hf", dict(weights="tensor", act="dynamic")),
    ("hf", dict(weights="tensor", act="static")),
    ("hf", dict(weights="block", block=(32, 32), act="dynamic")),
    ("hf", dict(weights="block", block=(48, 40), act="dynamic", hidden=136)),  # partial blocks
    ("hf", dict(weights="tensor", act="dynamic", ignored=("0.q", "1.down"))),
    ("ct", dict(weights="tensor", act="static")),
    ("ct", dict(weights="channel", act="dynamic")),
    ("ct", dict(weights="channel", act="none")),
    ("ct", dict(weights="block", block=(32, 32), act="dynamic")),
    ("mistral", dict(weights="tensor", act="static", kv_scales=(0.5, 0.25))),
    ("mistral", dict(weights="tensor", act="dynamic")),
]


def logits(kiln, d, ids=IDS, extra=()):
    out = os.path.join(d, "logits.f32")
    r = subprocess.run([kiln, "logits", "--model", d, "--prompt-ids", ",".join(map(str, ids)), "--out", out, *extra],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return np.fromfile(out, np.float32).reshape(len(ids), -1)


@pytest.mark.parametrize("fmt,kw", VARIANTS, ids=[f"{f}-{'-'.join(str(v) for v in k.values())}" for f, k in VARIANTS])
def test_fp8_checkpoint_logits(kiln, tmp_path, fmt, kw):
    d = str(tmp_path / "m")
    spec = fp8_ckpt.write(d, fmt, **kw)
    got = logits(kiln, d)
    ref = fp8_ckpt.reference_logits(spec, IDS)
    scale = max(1.0, np.abs(ref).max())
    rows = np.abs(got - ref).max(axis=1)
    print(f"{fmt} {kw}: |kiln - numpy| per position: median {np.median(rows):.3g}, max {rows.max():.3g} "
          f"(logits up to {scale:.3g})")
    # W8A8: kiln's f32 activations and numpy's f64 ones may round to neighbouring e4m3 values
    # at a midpoint (one element moves by an e4m3 step): most positions agree to f32 rounding,
    # none is further than such a flip
    assert np.median(rows) < 1e-4 * scale
    assert rows.max() < 2e-2 * scale
    # the check can fail: the same weights without the activation rounding (or with it, for
    # weight-only) give other logits, further off than the tolerance
    other = dict(spec, act="none" if spec["act"] != "none" else "dynamic")
    alt = np.abs(fp8_ckpt.reference_logits(other, IDS) - ref).max(axis=1)
    print(f"  the other activation scheme moves the logits by median {np.median(alt):.3g}")
    assert np.median(alt) > 10 * 1e-4 * scale
    info = subprocess.run([kiln, "info", "--model", d], capture_output=True, text=True)
    assert info.returncode == 0, info.stderr
    assert "weights:" in info.stdout and ("f8_e4m3" in info.stdout or "mixed" in info.stdout), info.stdout
    if kw.get("kv_scales"):
        assert "k_scale / v_scale from the checkpoint" in info.stdout


def test_fp8_kv_cache_checkpoint_scales(kiln, tmp_path):
    """--kv-cache-dtype fp8 on a checkpoint with KV scales: K and V rounded through e4m3 with them"""
    d = str(tmp_path / "m")
    spec = fp8_ckpt.write(d, "mistral", act="static", kv_scales=(0.5, 0.5))
    got = logits(kiln, d, extra=("--kv-cache-dtype", "fp8"))
    ref = fp8_ckpt.reference_logits(spec, IDS, kv_fp8=(0.5, 0.5))
    plain = fp8_ckpt.reference_logits(spec, IDS)
    err, dist = np.median(np.abs(got - ref).max(axis=1)), np.median(np.abs(plain - ref).max(axis=1))
    print(f"fp8 KV: median |kiln - numpy| per position = {err:.3g}; FP8 KV moves the logits by {dist:.3g}")
    assert err < 1e-4 * max(1.0, np.abs(ref).max())
    assert dist > 10 * err


@pytest.mark.parametrize("mode", ["fp8", "fp8-per-channel"])
def test_online_fp8(kiln, tmp_path, mode):
    """--quantization fp8 on a bf16 checkpoint: kiln's logits against numpy's W8A8 of the
    per-tensor (per-row) E4M3 quantization of the same weights; kiln info names it"""
    d = str(tmp_path / "m")
    # seeds whose activations land on no e4m3 midpoint where kiln's f32 and numpy's f64 differ
    # (such a flip moves every later position of this tiny model by ~0.1: seed 3 per channel)
    spec = fp8_ckpt.write_bf16_online(d, per_channel=mode != "fp8", seed=3 if mode == "fp8" else 5)
    got = logits(kiln, d, extra=("--quantization", mode))
    ref = fp8_ckpt.reference_logits(spec, IDS)
    plain = logits(kiln, d)
    scale = max(1.0, np.abs(ref).max())
    rows, moved = np.abs(got - ref).max(axis=1), np.abs(plain - ref).max(axis=1)
    print(f"{mode}: |kiln - numpy| median {np.median(rows):.3g}, max {rows.max():.3g}; bf16 is {np.median(moved):.3g} away")
    assert np.median(rows) < 1e-4 * scale and rows.max() < 2e-2 * scale
    assert np.median(moved) > 10 * 1e-4 * scale
    info = subprocess.run([kiln, "info", "--model", d, "--quantization", mode], capture_output=True, text=True)
    assert info.returncode == 0 and "online fp8" in info.stdout, info.stdout + info.stderr
    assert ("per-channel" if mode != "fp8" else "per-tensor") in info.stdout
    bad = subprocess.run([kiln, "logits", "--model", d, "--prompt-ids", "1,2", "--out", os.path.join(d, "x"),
                          "--quantization", "int4"], capture_output=True, text=True)
    assert bad.returncode != 0 and "int4" in bad.stderr


REFUSALS = [
    ("hf", dict(config_patch={"activation_scheme": "weird"}), "activation_scheme \"weird\""),
    ("hf", dict(config_patch={"quant_method": "gptq"}), "quant_method \"gptq\""),
    ("hf", dict(config_patch={"fmt": "e5m2"}), "fmt \"e5m2\""),
    ("hf", dict(weights="block", block=(32, 32), config_patch={"activation_scheme": "static"}), "weight_block_size"),
    ("hf", dict(drop=("model.layers.1.mlp.up_proj.weight_scale",)), "no scale tensor model.layers.1.mlp.up_proj.weight_scale"),
    ("hf", dict(act="static", drop=("model.layers.0.self_attn.k_proj.input_scale",)), "input_scale"),
    ("hf", dict(config_patch={"ignored_layers": ["model.layers.0.self_attn.q_proj"]}), "ignored layers"),
    ("hf", dict(tensor_patch={"model.layers.0.self_attn.q_proj.weight_scale": np.array([-1.0], np.float32)}),
     "finite and > 0"),
    ("hf", dict(weights="block", block=(32, 32),
                tensor_patch={"model.layers.0.mlp.gate_proj.weight_scale_inv": np.ones((3, 2), np.float32)}),
     "block scale model.layers.0.mlp.gate_proj.weight_scale_inv has shape [3, 2]"),
    ("hf", dict(tensor_patch={"model.layers.0.mlp.gate_proj.weight": np.zeros((128, 64), np.uint8).view(ml_dtypes.float8_e5m2)}),
     "F8_E5M2"),
    ("ct", dict(config_patch={"format": "pack-quantized"}), "format \"pack-quantized\""),
    ("ct", dict(config_patch={"config_groups": {"a": {}, "b": {}}}), "exactly one group"),
    ("ct", dict(weights="channel", tensor_patch={"model.layers.0.mlp.gate_proj.weight_scale": np.ones((1,), np.float32)}),
     "strategy is \"channel\""),
    ("mistral", dict(config_patch={"qformat_weight": "fp8_e5m2"}), "qformat_weight \"fp8_e5m2\""),
    ("mistral", dict(config_patch={"qscheme_act": "CHANNEL"}), "qscheme_act \"CHANNEL\""),
]


@pytest.mark.parametrize("fmt,kw,msg", REFUSALS, ids=[m[:40] for _, _, m in REFUSALS])
def test_fp8_checkpoint_refused(kiln, tmp_path, fmt, kw, msg):
    d = str(tmp_path / "m")
    fp8_ckpt.write(d, fmt, **kw)
    r = subprocess.run([kiln, "info", "--model", d], capture_output=True, text=True)
    assert r.returncode != 0, r.stdout
    assert msg in r.stderr, r.stderr


def test_ct_group_weights_refused(kiln, tmp_path):
    d = str(tmp_path / "m")
    fp8_ckpt.write(d, "ct", config_patch={"config_groups": {"group_0": {
        "targets": ["Linear"], "weights": {"num_bits": 8, "type": "float", "strategy": "group", "group_size": 128},
        "input_activations": None}}})
    r = subprocess.run([kiln, "info", "--model", d], capture_output=True, text=True)
    assert r.returncode != 0 and "weights.strategy \"group\"" in r.stderr, r.stderr


def _test_fp8_bin():
    from conftest import kiln_bin
    return os.path.join(os.path.dirname(kiln_bin()), "test_fp8")


def test_e4m3_encode_matches_ml_dtypes(tmp_path):
    """kiln_f32_to_e4m3 (through test_fp8 --encode) against ml_dtypes' float8_e4m3fn after the
    clamp to +-448 (what vLLM and torch do) on every f32 near each e4m3 value and midpoint,
    random values over the whole range, subnormals, zeros, infinities and NaN"""
    b = _test_fp8_bin()
    if not os.access(b, os.X_OK):
        pytest.skip(f"SKIP: {b} not built")
    vals = ml_dtypes.float8_e4m3fn
    codes = np.arange(256, dtype=np.uint8).view(vals).astype(np.float32)
    fin = np.sort(np.unique(codes[np.isfinite(codes)]))
    mids = (fin[:-1].astype(np.float64) + fin[1:]) / 2
    xs = [fin, mids.astype(np.float32)]
    for base in (fin, mids.astype(np.float32)):
        for k in (1, 2, 100):
            xs.append(np.nextafter(base, np.float32(np.inf)) if k == 1 else base * np.float32(1 + k * 2.0 ** -23))
            xs.append(np.nextafter(base, np.float32(-np.inf)) if k == 1 else base * np.float32(1 - k * 2.0 ** -23))
    r = np.random.default_rng(0)
    xs.append((r.standard_normal(200000) * np.exp(r.uniform(-14, 7, 200000))).astype(np.float32))
    xs.append(np.array([0.0, -0.0, 447.9, 448.0, 449.0, 463.9, 464.0, 480.0, 1e30, np.inf, -np.inf, 2.0 ** -10,
                        2.0 ** -10 * 1.0001, 3 * 2.0 ** -11, 2.0 ** -12], np.float32))
    x = np.concatenate(xs).astype(np.float32)
    x = np.concatenate([x, -x])
    f = tmp_path / "x.f32"
    x.tofile(f)
    out = subprocess.run([b, "--encode", str(f)], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = np.frombuffer(out.stdout, np.uint8)
    want = np.clip(x, -448, 448).astype(vals).view(np.uint8)
    assert got.shape == want.shape
    bad = np.nonzero(got != want)[0]
    print(f"{len(x)} values, {len(bad)} differ from ml_dtypes")
    assert len(bad) == 0, [(float(x[i]), int(got[i]), int(want[i])) for i in bad[:10]]
    # NaN: kiln gives 0x7f / 0xff
    out = subprocess.run([b, "--encode-nan"], capture_output=True)
    assert out.returncode == 0 and out.stdout in (b"\x7f", b"\x7f\xff"), out.stdout


def test_quantize_refuses_fp8(kiln, tmp_path):
    """kiln quantize: GGUF has no FP8 type; an FP8 checkpoint is refused, never written without
    its scales"""
    d = str(tmp_path / "m")
    fp8_ckpt.write(d, "hf")
    r = subprocess.run([kiln, "quantize", "--model", d, "--out", str(tmp_path / "x.gguf"), "--type", "q8_0"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "FP8 checkpoint" in r.stderr and not os.path.exists(tmp_path / "x.gguf"), r.stderr
