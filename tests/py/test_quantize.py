"""`kiln quantize` and the quantized dummy weights, against gguf-py (the gguf package of
llama.cpp) as the oracle nobody here wrote.

Sized for ~1 minute on 2 cores: every type is covered, not every (model, type) pair.

(a) mistral-tiny-random (HF bf16 folder) -> GGUF f32: kiln's logits of the GGUF equal those of
    the HF folder (same f32 math up to summation order): proves the tensor names, the metadata
    and the q/k row permutation to GGUF's interleaved RoPE order.
(b) quantized files, checked as follows (`test_quantized_file`):
      mistral-tiny-random: q8_0 q6_k q4_k_m q5_k_m q4_0 q5_0 q4_1 q5_1 (every type; every tensor)
      SmolLM2-135M (from its Q4_1 GGUF, 30 layers): q8_0 q6_k q4_k_m (non-layer tensors and the
        first three layers for the tensor checks; the type mix and the logits over all of it)
    gguf-py's GGUFReader reads each file; gguf-py's dequantize of the tensors equals kiln's
    dequantization (`kiln gguf-dump --tensor`) bit for bit; the 32-element types (Q8_0, Q4_0,
    Q4_1, Q5_0, Q5_1) equal gguf-py's own quantizers (gguf.quants.quantize) applied to the f32
    file's tensor, bit for bit; tensors already in their target type are copied unchanged; the
    tensor types follow llama.cpp's mix (Q4_K_M's use_more_bits over SmolLM2's 30 layers,
    fallbacks for rows that are not whole 256-blocks: mistral's 192-element rows); the CPU
    logits stay within a per-type bound of the f32 file's (relative L2 over all positions;
    SmolLM2's source is already Q4_1, so its re-quantizations compound two roundings).
(c) --type keep: SmolLM2's GGUF comes out with the same metadata and byte-identical tensors and
    exactly the same kiln logits; mistral's HF folder keeps its bf16 weights (logits equal the
    folder's up to summation order).
(d) --layers N: SmolLM2 --type keep --layers 8 (the cut-down copy the GPU machine gets): < 64
    MiB, `kiln info` says 8 layers, gguf-py reads block_count 8 and the source's tensors of
    layers 0..7 and the rest byte for byte, tokenizer included; kiln's logits equal the numpy
    reference (ref_llama_gguf.py) run over the first 8 layers of the original file; it
    generates text greedily on the CPU. mistral (HF) --layers 2, keep and q8_0. --layers 0,
    > the model's layers, and a non-number are refused with a message.
(e) --load-format dummy --dummy-quant: kiln info lists the types, generation runs on the CPU.
"""
import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as QT  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ref_llama_gguf as ref  # noqa: E402

SHARED = Path(os.environ.get("KILN_SHARED", Path(__file__).resolve().parents[2].parent / "shared"))
MISTRAL = SHARED / "models" / "mistral-tiny-random"
TYPES = ["q8_0", "q6_k", "q4_k_m", "q5_k_m", "q4_0", "q5_0", "q4_1", "q5_1"]  # all on mistral
SMOL_TYPES = ["q8_0", "q6_k", "q4_k_m"]  # on SmolLM2: the per-type logits bounds, the Q4_K_M mix
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


@functools.lru_cache(maxsize=None)
def reader(path):
    """gguf.GGUFReader of path, read once (SmolLM2's 49152-token vocabulary takes gguf-py ~4 s)"""
    return gguf.GGUFReader(str(path))


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
    """files[src, type] or files[src, type, layers]: `kiln quantize` output, made on first use"""
    d = tmp_path_factory.mktemp("quantize")

    class Files(dict):
        def __missing__(self, key):
            src, t, layers = (key + (None,))[:3]
            f = d / f"{src}-{t}{'-l%d' % layers if layers else ''}.gguf"
            args = [kiln, "quantize", "--model", str(sources[src][0]), "--out", str(f), "--type", t]
            r = run(args + (["--layers", str(layers)] if layers else []))
            if src == "smol" and t not in ("f32", "q4_1", "keep"):  # q4_1: every tensor keeps its type
                assert "dequantized to f32" in r.stderr
            self[key] = f
            return f

    return Files()


def test_hf_f32_logits_equal_hf(kiln, files, tmp_path):
    if not (MISTRAL / "config.json").exists():
        pytest.skip(f"SKIP: {MISTRAL} missing")
    a = logits(kiln, MISTRAL, MISTRAL_IDS, tmp_path / "a.f32")
    b = logits(kiln, files["mistral", "f32"], MISTRAL_IDS, tmp_path / "b.f32")
    assert a.size == 10 * 2048
    err = np.abs(a - b).max() / np.abs(a).max()
    assert err < 1e-5, f"HF vs its f32 GGUF: max relative difference {err:.3g}"
    r = reader(files["mistral", "f32"])
    f = {k: r.fields[k] for k in r.fields}
    assert f["general.architecture"].contents() == "llama"
    assert f["llama.attention.key_length"].contents() == 48
    assert f["llama.block_count"].contents() == 3
    assert f["llama.attention.head_count_kv"].contents() == 2
    assert abs(f["llama.rope.freq_base"].contents() - 1e9) < 1e3
    assert "tokenizer.ggml.tokens" not in f  # the folder has no tokenizer: none written


@pytest.mark.parametrize("src,qtype", [("mistral", t) for t in TYPES] + [("smol", t) for t in SMOL_TYPES])
def test_quantized_file(kiln, sources, files, src, qtype, tmp_path):
    if src not in sources:
        pytest.skip(f"SKIP: source {src} missing")
    f32, fq = files[src, "f32"], files[src, qtype]
    rf, rq = reader(f32), reader(fq)
    ftype = rq.fields["general.file_type"].contents()
    assert ftype == {"q8_0": 7, "q6_k": 18, "q4_k_m": 15, "q5_k_m": 17, "q4_0": 2, "q5_0": 8, "q4_1": 3,
                     "q5_1": 9}[qtype]
    if src == "smol":  # metadata copied, tokenizer included
        assert len(rq.fields["tokenizer.ggml.tokens"].data) == 49152
    ref = {t.name: t for t in rf.tensors}
    orig = {t.name: t for t in reader(sources[src][0]).tensors} if src == "smol" else {}
    n_layers = rq.fields["llama.block_count"].contents()
    tied = "output.weight" not in ref
    types = {}
    checked = bit_same = 0
    for t in rq.tensors:
        types[t.name] = t.tensor_type
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        # every tensor of mistral; SmolLM2: the first three layers and the non-layer tensors
        if src == "smol" and t.name.startswith("blk.") and int(t.name.split(".")[1]) >= 3:
            continue
        want = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape)
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


def same_tensors(a, b, names=None):
    """the tensors of GGUFReader b equal a's (names: those of a to expect in b, in order)"""
    ta = [t for t in a.tensors if names is None or t.name in names]
    assert [t.name for t in b.tensors] == [t.name for t in ta]
    for x, y in zip(ta, b.tensors):
        assert x.tensor_type == y.tensor_type and x.shape.tolist() == y.shape.tolist(), x.name
        assert np.array_equal(np.asarray(x.data).view(np.uint8), np.asarray(y.data).view(np.uint8)), x.name


def test_keep(kiln, sources, files, tmp_path):
    src = reader(sources["smol"][0])
    fk = files["smol", "keep"]
    r = reader(fk)
    same_tensors(src, r)
    keys = [k for k in src.fields if not k.startswith("GGUF.")]
    assert [k for k in r.fields if not k.startswith("GGUF.")] == keys
    for k in keys:
        assert r.fields[k].types == src.fields[k].types, k
        assert r.fields[k].contents() == src.fields[k].contents(), k
    a = logits(kiln, sources["smol"][0], SMOL_IDS, tmp_path / "a.f32")
    b = logits(kiln, fk, SMOL_IDS, tmp_path / "b.f32")
    assert a.size == 20 * 49152 and np.array_equal(a, b)
    if "mistral" not in sources:
        return
    fm = files["mistral", "keep"]
    rm = reader(fm)
    assert rm.fields["general.file_type"].contents() == 32  # bf16, the folder's type
    for t in rm.tensors:
        assert t.tensor_type == (QT.F32 if len(t.shape) == 1 else QT.BF16), t.name
    a = logits(kiln, MISTRAL, MISTRAL_IDS, tmp_path / "a.f32")
    b = logits(kiln, fm, MISTRAL_IDS, tmp_path / "b.f32")
    assert np.abs(a - b).max() / np.abs(a).max() < 1e-5


def test_layers(kiln, sources, files, tmp_path):
    path = sources["smol"][0]
    f8 = files["smol", "keep", 8]
    assert f8.stat().st_size < 64 << 20, f"{f8}: {f8.stat().st_size} bytes"
    info = run([kiln, "info", "--model", str(f8)]).stdout
    assert "layers 8," in info, info
    src, r = reader(path), reader(f8)
    assert src.fields["llama.block_count"].contents() == 30
    assert r.fields["llama.block_count"].contents() == 8
    assert len(r.fields["tokenizer.ggml.tokens"].data) == 49152
    keep = {t.name for t in src.tensors if not t.name.startswith("blk.") or int(t.name.split(".")[1]) < 8}
    assert len(keep) == 8 * 9 + 2  # 9 tensors a layer, token_embd (tied) and output_norm
    same_tensors(src, r, keep)
    # the logits are those of the original's first 8 layers (numpy reference, gguf-py dequantization)
    ids = SMOL_IDS.split(",")[:8]
    m = ref.Model(reader(path))
    m.n_layers = 8
    want = m.forward([int(i) for i in ids])
    got = logits(kiln, f8, ",".join(ids), tmp_path / "l.f32").reshape(want.shape)
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err < 1e-5, f"8-layer copy vs the original's first 8 layers: max relative difference {err:.3g}"
    g = run([kiln, "generate", "--model", str(f8), "--prompt", "The capital of France is", "-n", "6",
             "--temperature", "0"])
    assert g.stdout.strip(), g.stderr
    g = run([kiln, "generate", "--model", str(f8), "--prompt-ids", ",".join(ids), "-n", "1", "--ids",
             "--temperature", "0"])
    assert int(g.stdout.split()[0]) == int(np.argmax(want[-1]))
    if "mistral" not in sources:
        return
    for t in ("keep", "q8_0"):
        f = files["mistral", t, 2]
        assert "layers 2," in run([kiln, "info", "--model", str(f)]).stdout
        rm = reader(f)
        assert rm.fields["llama.block_count"].contents() == 2
        assert len(rm.tensors) == 2 * 9 + 3 and not any(t.name.startswith("blk.2.") for t in rm.tensors)
        run([kiln, "logits", "--model", str(f), "--prompt-ids", MISTRAL_IDS, "--out", str(tmp_path / "m.f32")])


@pytest.mark.parametrize("layers,msg", [("0", "expected a number of layers >= 1"), ("x", "expected a number"),
                                        ("31", "has only 30 layers")])
def test_layers_refused(kiln, sources, layers, msg, tmp_path):
    out = tmp_path / "bad.gguf"
    r = subprocess.run([kiln, "quantize", "--model", str(sources["smol"][0]), "--out", str(out), "--type", "keep",
                        "--layers", layers], capture_output=True, text=True)
    assert r.returncode != 0 and f"--layers {layers}" in r.stderr and msg in r.stderr, r.stderr
    assert not out.exists()


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
