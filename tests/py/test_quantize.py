"""`kiln quantize` and the quantized dummy weights, against gguf-py (the gguf package of
llama.cpp) as the oracle nobody here wrote.

(a) mistral-tiny-random (HF bf16 folder) -> GGUF f32: kiln's logits of the GGUF equal those of
    the HF folder (same f32 math up to summation order): proves the tensor names, the metadata
    and the q/k row permutation to GGUF's interleaved RoPE order.
(b) q8_0 / q6_k / q4_k_m / q5_k_m / q4_0 / q5_0 (and q4_1 / q5_1) files of mistral-tiny-random
    and of SmolLM2 (from its Q4_1 GGUF): gguf-py's GGUFReader reads them; gguf-py's dequantize
    of every tensor equals kiln's dequantization (`kiln gguf-dump --tensor`) bit for bit; the
    32-element types (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) equal gguf-py's own quantizers
    (gguf.quants.quantize) applied to the f32 file's tensor, bit for bit; the CPU logits stay
    within a per-type bound of the f32 file's (relative L2 over all positions; SmolLM2's source
    is already Q4_1, so its 4-bit re-quantizations compound two roundings: larger bounds); the
    tensor types follow llama.cpp's mix (Q4_K_M's use_more_bits, fallbacks for rows that are not
    whole 256-blocks).
(c) --load-format dummy --dummy-quant: kiln info lists the types, generation runs on the CPU.
"""
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as QT  # noqa: E402

SHARED = Path(os.environ.get("KILN_SHARED", Path(__file__).resolve().parents[2].parent / "shared"))
MISTRAL = SHARED / "models" / "mistral-tiny-random"
TYPES = ["q8_0", "q6_k", "q4_k_m", "q5_k_m", "q4_0", "q5_0", "q4_1", "q5_1"]
# relative L2 of the logits against the f32 file's: (mistral-tiny-random, SmolLM2 from Q4_1).
# mistral-tiny-random has random weights, whose logits amplify weight error; SmolLM2's f32 file
# holds Q4_1 values, which the 4-bit grids re-round.
BOUNDS = {"q8_0": (0.08, 0.08), "q6_k": (0.15, 0.12), "q5_k_m": (0.35, 0.30), "q4_k_m": (0.50, 0.30),
          "q5_0": (0.40, 0.45), "q4_0": (0.70, 0.80), "q5_1": (0.40, 0.45), "q4_1": (0.70, 0.80)}
SIMPLE = {QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1}
SMOL_IDS = "504,3575,282,4649,314,7042,30,378,2365,6354,16438,27003,690,260,23790,2767,28,284,965,198"
MISTRAL_IDS = "1,5,9,300,17,1000,2047,64,3,700"


def run(args):
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(map(str, args))}: {r.stderr}"
    return r


def logits(kiln, model, ids, out):
    run([kiln, "logits", "--model", str(model), "--prompt-ids", ids, "--out", str(out)])
    return np.fromfile(out, dtype=np.float32)


def kiln_dequant(kiln, model, name, out):
    run([kiln, "gguf-dump", "--model", str(model), "--tensor", name, "--out", str(out)])
    return np.fromfile(out, dtype=np.float32)


def more_bits(l, n):
    return l < n // 8 or l >= 7 * n // 8 or (l - n // 8) % 3 == 2


@pytest.fixture(scope="module")
def sources(kiln, default_gguf):
    s = {"smol": (Path(default_gguf), SMOL_IDS)}
    if (MISTRAL / "config.json").exists():
        s["mistral"] = (MISTRAL, MISTRAL_IDS)
    return s


@pytest.fixture(scope="module")
def files(kiln, sources, tmp_path_factory):
    d = tmp_path_factory.mktemp("quantize")
    out = {}
    for src, (path, _) in sources.items():
        for t in ["f32"] + TYPES:
            f = d / f"{src}-{t}.gguf"
            r = run([kiln, "quantize", "--model", str(path), "--out", str(f), "--type", t])
            if src == "smol" and t not in ("f32", "q4_1"):  # q4_1: every tensor keeps its type
                assert "dequantized to f32" in r.stderr
            out[src, t] = f
    return out


def test_hf_f32_logits_equal_hf(kiln, files, tmp_path):
    if not (MISTRAL / "config.json").exists():
        pytest.skip(f"SKIP: {MISTRAL} missing")
    a = logits(kiln, MISTRAL, MISTRAL_IDS, tmp_path / "a.f32")
    b = logits(kiln, files["mistral", "f32"], MISTRAL_IDS, tmp_path / "b.f32")
    assert a.size == 10 * 2048
    err = np.abs(a - b).max() / np.abs(a).max()
    assert err < 1e-5, f"HF vs its f32 GGUF: max relative difference {err:.3g}"
    r = gguf.GGUFReader(str(files["mistral", "f32"]))
    f = {k: r.fields[k] for k in r.fields}
    assert f["general.architecture"].contents() == "llama"
    assert f["llama.attention.key_length"].contents() == 48
    assert f["llama.block_count"].contents() == 3
    assert f["llama.attention.head_count_kv"].contents() == 2
    assert abs(f["llama.rope.freq_base"].contents() - 1e9) < 1e3
    assert "tokenizer.ggml.tokens" not in f  # the folder has no tokenizer: none written


@pytest.mark.parametrize("src", ["mistral", "smol"])
@pytest.mark.parametrize("qtype", TYPES)
def test_quantized_file(kiln, sources, files, src, qtype, tmp_path):
    if src not in sources:
        pytest.skip(f"SKIP: source {src} missing")
    f32, fq = files[src, "f32"], files[src, qtype]
    rf, rq = gguf.GGUFReader(str(f32)), gguf.GGUFReader(str(fq))
    ftype = rq.fields["general.file_type"].contents()
    assert ftype == {"q8_0": 7, "q6_k": 18, "q4_k_m": 15, "q5_k_m": 17, "q4_0": 2, "q5_0": 8, "q4_1": 3,
                     "q5_1": 9}[qtype]
    if src == "smol":  # metadata copied, tokenizer included
        assert len(rq.fields["tokenizer.ggml.tokens"].data) == 49152
    ref = {t.name: t for t in rf.tensors}
    orig = {t.name: t for t in gguf.GGUFReader(str(sources[src][0])).tensors} if src == "smol" else {}
    n_layers = rq.fields["llama.block_count"].contents()
    tied = "output.weight" not in ref
    types = {}
    checked = bit_same = 0
    for t in rq.tensors:
        types[t.name] = t.tensor_type
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        want = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape)
        # every tensor of mistral; SmolLM2: the first three layers and the non-layer tensors
        if src == "mistral" or not t.name.startswith("blk.") or int(t.name.split(".")[1]) < 3:
            got = kiln_dequant(kiln, fq, t.name, tmp_path / "t.f32").reshape(shape)
            assert np.array_equal(got.view(np.uint32), np.ascontiguousarray(want, np.float32).view(np.uint32)), t.name
            checked += 1
        if t.name in orig and orig[t.name].tensor_type == t.tensor_type:  # copied unchanged
            assert np.array_equal(np.asarray(orig[t.name].data).view(np.uint8), np.asarray(t.data).view(np.uint8))
        elif t.tensor_type in SIMPLE:
            x = gguf.quants.dequantize(ref[t.name].data, ref[t.name].tensor_type).reshape(shape)
            mine = np.asarray(t.data).view(np.uint8).reshape(-1)
            theirs = gguf.quants.quantize(x.astype(np.float32), t.tensor_type).view(np.uint8).reshape(-1)
            assert np.array_equal(mine, theirs), f"{t.name}: kiln's {t.tensor_type.name} blocks differ from gguf-py's"
            bit_same += 1
    assert checked > 0
    # the type mix
    base = {"q8_0": QT.Q8_0, "q6_k": QT.Q6_K, "q4_k_m": QT.Q4_K, "q5_k_m": QT.Q5_K, "q4_0": QT.Q4_0,
            "q5_0": QT.Q5_0, "q4_1": QT.Q4_1, "q5_1": QT.Q5_1}[qtype]
    fallback = {QT.Q4_K: QT.Q5_0, QT.Q5_K: QT.Q5_1, QT.Q6_K: QT.Q8_0}
    for name, ty in types.items():
        cols = int(ref[name].shape[0])
        if len(ref[name].shape) == 1:
            assert ty == QT.F32, name
            continue
        want = base
        if name == "output.weight" or (tied and name == "token_embd.weight"):
            want = QT.Q8_0 if base == QT.Q8_0 or cols % 256 else QT.Q6_K
        elif qtype.endswith("_m") and name.startswith("blk.") and name.split(".")[2] in ("attn_v", "ffn_down") \
                and more_bits(int(name.split(".")[1]), n_layers):
            want = QT.Q6_K
        if cols % 256 and want in fallback:
            want = fallback[want]
        assert ty == want, f"{name}: {ty.name}, llama.cpp's rule gives {want.name}"
    if src == "mistral":
        assert bit_same > 0 or base not in SIMPLE
    # logits
    path, ids = sources[src]
    a = logits(kiln, f32, ids, tmp_path / "a.f32")
    b = logits(kiln, fq, ids, tmp_path / "b.f32")
    rel = np.linalg.norm(a - b) / np.linalg.norm(a)
    bound = BOUNDS[qtype][0 if src == "mistral" else 1]
    print(f"{src} {qtype}: logits relative L2 {rel:.4f} (bound {bound})")
    assert rel < bound, f"{src} {qtype}: logits relative L2 {rel:.4f} > {bound}"


@pytest.mark.parametrize("qtype", ["q8_0", "q4_k_m", "q6_k", "q4_0"])
def test_dummy_quant(kiln, qtype):
    cfg = MISTRAL / "config.json"
    if not cfg.exists():
        pytest.skip(f"SKIP: {cfg} missing")
    r = run([kiln, "info", "--model", str(cfg), "--load-format", "dummy", "--dummy-quant", qtype])
    dt = next(line for line in r.stdout.splitlines() if line.startswith("dtypes:"))
    want = {"q8_0": "q8_0 x22", "q4_k_m": "q4_k x16 q6_k x3 q5_0 x3", "q6_k": "q8_0 x3 q6_k x19",
            "q4_0": "q4_0 x21 q6_k x1"}[qtype]
    assert want in dt and "f32 x7" in dt and "bf16 x1" in dt, dt
    r = run([kiln, "generate", "--model", str(cfg), "--load-format", "dummy", "--dummy-quant", qtype,
             "--prompt-ids", "1,2,3", "-n", "8", "--ids", "--temperature", "0"])
    ids = r.stdout.split()
    assert len(ids) == 8 and all(0 <= int(i) < 2048 for i in ids), r.stdout
    bad = subprocess.run([kiln, "generate", "--model", str(cfg), "--load-format", "dummy", "--dummy-quant", "q3_k",
                          "--prompt-ids", "1"], capture_output=True, text=True)
    assert bad.returncode != 0 and "q3_k" in bad.stderr
