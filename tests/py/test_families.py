"""Issue 19's model families on the CPU against a float64 numpy forward pass (ref_families.py):
RoPE scaling (llama3, yarn, linear, dynamic; GGUF rope_freqs and rope.scaling.*), Qwen2 / Qwen3
(HF and GGUF), the text model of Mistral 3 checkpoints (HF Mistral3ForConditionalGeneration and
Mistral-native with a vision encoder), sliding windows at 2x and 4x the window. Relative L2 of
the logits <= 1e-5. Fixtures: tests/fixtures/families (make_families.py). Also refusals: a
GGUF tensor kiln does not bind, RoPE types kiln does not run, and the server's 400 for images."""
import json
import os
import shutil
import subprocess
import tempfile

import numpy as np
import pytest

from ref_families import forward_f64

FIX = os.path.join(os.path.dirname(__file__), "..", "fixtures", "families")
IDS = [1, 17, 42, 5, 88, 3, 60, 23, 9, 71, 30, 2, 95, 44, 12, 7, 66, 50, 38, 81, 19, 27, 90, 4, 58, 33, 11, 76,
       64, 8, 45, 29, 53, 14, 85, 36, 21, 69, 6, 92]


def kiln_logits(kiln, model, ids, extra=()):
    with tempfile.NamedTemporaryFile(suffix=".f32") as f:
        r = subprocess.run([kiln, "logits", "--model", model, "--prompt-ids", ",".join(map(str, ids)), "--out", f.name,
                            *extra], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return np.fromfile(f.name, dtype=np.float32).reshape(len(ids), -1)


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


CASES = [  # (fixture kiln loads, HF folder the oracle reads)
    ("llama3-rope", "llama3-rope"), ("yarn-rope", "yarn-rope"), ("linear-rope", "linear-rope"),
    ("dynamic-rope", "dynamic-rope"), ("qwen2", "qwen2"), ("qwen3", "qwen3"), ("mistral3", "mistral3"),
    ("mistral3-native", "mistral3"), ("qwen2.gguf", "qwen2"), ("qwen3.gguf", "qwen3"),
    ("llama3-rope.gguf", "llama3-rope"), ("yarn-rope.gguf", "yarn-rope"), ("mistral-swa", "mistral-swa"),
    ("qwen2-swa", "qwen2-swa"), ("mixtral", "mixtral"), ("mixtral-native", "mixtral"), ("mixtral.gguf", "mixtral"),
]


@pytest.mark.parametrize("fixture,oracle", CASES)
def test_family_logits_vs_float64(kiln, fixture, oracle):
    for n in (1, 9, len(IDS)):
        ids = IDS[:n]
        got = kiln_logits(kiln, os.path.join(FIX, fixture), ids)
        exact = forward_f64(os.path.join(FIX, oracle), ids)
        r = rel(got, exact)
        print(f"{fixture} {n} tokens: kiln vs float64 {r:.2e}")
        assert r <= 1e-5, f"{fixture} {n} tokens: {r}"


@pytest.mark.parametrize("fixture", ["mistral-swa", "qwen2-swa"])
def test_sliding_window_matters(fixture):
    """The window changes the logits beyond it (the oracle's mask is not a no-op) and not within."""
    d = os.path.join(FIX, fixture)
    full = forward_f64(d, IDS[:32], window_override=[0, 0])
    win = forward_f64(d, IDS[:32])
    assert rel(win[:8], full[:8]) < 1e-12
    assert rel(win[8:], full[8:]) > 1e-3


@pytest.mark.parametrize("fixture,bound", [("mistral-swa", 5), ("qwen2-swa", None)])
def test_sliding_window_blocks_released(kiln, fixture, bound):
    """Contexts of 2x and 4x the window (8), 2-slot KV blocks: logits equal the float64 oracle
    with the window mask, and the blocks in use stay within the window (mistral-swa: 5 blocks =
    the most that 8 positions straddle) where every layer is windowed; qwen2-swa has a full
    layer 0, so every block is kept. Pool usage printed."""
    d = os.path.join(FIX, fixture)
    for n in (16, 32):
        ids = IDS[:n]
        with tempfile.NamedTemporaryFile(suffix=".f32") as f:
            r = subprocess.run([kiln, "logits", "--model", d, "--prompt-ids", ",".join(map(str, ids)), "--out", f.name,
                                "--block-size", "2"], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            got = np.fromfile(f.name, dtype=np.float32).reshape(n, -1)
        peak = int(r.stderr.split("KV blocks in use at most ")[1].split()[0])
        full = forward_f64(d, ids, window_override=[0, 0])
        exact = forward_f64(d, ids)
        print(f"{fixture} context {n} (window 8): kiln vs windowed float64 {rel(got, exact):.2e}, vs full attention "
              f"{rel(got, full):.2e}; KV blocks in use at most {peak} of the {n // 2} the context fills")
        assert rel(got, exact) <= 1e-5
        assert peak == (bound if bound else n // 2)


def test_sliding_window_chunked_decode_releases_blocks(kiln):
    """Contexts of 2x and 4x the window (8) through `kiln generate` with a small step budget and
    2-token blocks: the logits of the generated ids equal the windowed oracle's greedy choice,
    and the KV pool in use stays bounded (printed by --kv-stats)."""
    d = os.path.join(FIX, "mistral-swa")
    for n_prompt in (16, 32):
        ids = IDS[:n_prompt]
        r = subprocess.run([kiln, "generate", "--model", d, "--prompt-ids", ",".join(map(str, ids)), "-n", "8",
                            "--temperature", "0", "--ids", "--block-size", "2", "--max-batch-tokens", "4",
                            "--no-prefix-cache"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        out = [int(t) for t in r.stdout.replace(",", " ").split()]
        seq = list(ids)
        for t in out[:8]:
            exact = forward_f64(d, seq)
            assert int(np.argmax(exact[-1])) == t, (n_prompt, seq, t)
            seq.append(t)
        print(f"window 8, prompt {n_prompt}: greedy ids {out[:8]} equal the windowed float64 oracle's")


def copy_gguf(src_path, dst_path, arch, extra_kv=(), extra_tensors=()):
    """A copy of a GGUF fixture with more metadata / tensors (gguf PyPI package)."""
    gguf = pytest.importorskip("gguf")
    src = gguf.GGUFReader(src_path)
    w = gguf.GGUFWriter(str(dst_path), arch)
    for f in src.fields.values():
        if f.name.startswith("GGUF.") or f.name == "general.architecture":
            continue
        v = f.parts[f.data[0]]
        if f.types[0] == gguf.GGUFValueType.STRING:
            w.add_string(f.name, bytes(v).decode())
        elif f.types[0] == gguf.GGUFValueType.FLOAT32:
            w.add_float32(f.name, float(v[0]))
        else:
            w.add_uint32(f.name, int(v[0]))
    for k, v in extra_kv:
        (w.add_float32 if isinstance(v, float) else w.add_uint32)(k, v)
    for t in src.tensors:
        w.add_tensor(t.name, np.array(t.data).reshape([int(x) for x in reversed(t.shape)]))
    for n, a in extra_tensors:
        w.add_tensor(n, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(dst_path)


@pytest.mark.parametrize("src,arch,kv,tensors,needle", [
    ("qwen3.gguf", "qwen3", [], [("blk.0.attn_output.bias", np.zeros(32, dtype=np.float32))], "blk.0.attn_output.bias"),
    ("yarn-rope.gguf", "llama", [("llama.rope.scaling.attn_factor", 0.5)], [], "attn_factor"),
    ("qwen3.gguf", "qwen3", [("qwen3.attention.sliding_window", 8)], [], "sliding_window"),
    ("mixtral.gguf", "llama", [("llama.expert_shared_count", 1)], [], "expert_shared_count"),
    ("qwen3.gguf", "qwen3", [("qwen3.expert_count", 4)], [], "mixture-of-experts qwen3"),
])
def test_gguf_refusals(kiln, tmp_path, src, arch, kv, tensors, needle):
    """A GGUF tensor kiln does not bind, and metadata it does not implement, are refused by name."""
    path = copy_gguf(os.path.join(FIX, src), tmp_path / "x.gguf", arch, kv, tensors)
    r = subprocess.run([kiln, "info", "--model", path], capture_output=True, text=True)
    assert r.returncode != 0 and needle in r.stderr, r.stderr


@pytest.mark.parametrize("edit,needle", [
    (lambda p: p.__setitem__("yarn", {"factor": 4.0}), '"yarn"'),
    (lambda p: p.__setitem__("rope_scaling", {"type": "linear", "factor": 2.0}), "rope_scaling"),
    (lambda p: p.__setitem__("moe", {"num_experts": 4, "num_experts_per_tok": 2, "gate": 1}), "moe.gate"),
])
def test_native_refusals(kiln, tmp_path, edit, needle):
    d = tmp_path / "n"
    shutil.copytree(os.path.join(FIX, "mixtral-native"), d)
    p = json.load(open(d / "params.json"))
    edit(p)
    json.dump(p, open(d / "params.json", "w"))
    r = subprocess.run([kiln, "info", "--model", str(d)], capture_output=True, text=True)
    assert r.returncode != 0 and needle in r.stderr, r.stderr


def test_mistral3_text_model_type_refused(kiln, tmp_path):
    d = edit_config(tmp_path, "mistral3", lambda c: c["text_config"].__setitem__("model_type", "ministral3"))
    r = subprocess.run([kiln, "info", "--model", d], capture_output=True, text=True)
    assert r.returncode != 0 and "ministral3" in r.stderr, r.stderr


def edit_config(tmp_path, fixture, fn):
    d = tmp_path / fixture
    shutil.copytree(os.path.join(FIX, fixture), d)
    cfg = json.load(open(d / "config.json"))
    fn(cfg)
    json.dump(cfg, open(d / "config.json", "w"))
    return str(d)


@pytest.mark.parametrize("edit,needle", [
    (lambda c: c.__setitem__("rope_scaling", {"rope_type": "longrope", "factor": 2.0}), "longrope"),
    (lambda c: c.__setitem__("rope_scaling", {"rope_type": "llama3", "factor": 8.0}), "original_max_position_embeddings"),
    (lambda c: c.__setitem__("num_local_experts", 8), "MixtralForCausalLM only"),
    (lambda c: c.__setitem__("partial_rotary_factor", 0.5), "partial_rotary_factor"),
    (lambda c: c.__setitem__("layer_types", ["chunked_attention", "full_attention"]), "chunked_attention"),
])
def test_refusals(kiln, tmp_path, edit, needle):
    d = edit_config(tmp_path, "llama3-rope", edit)
    if needle == "chunked_attention":
        d = edit_config(tmp_path / "b", "mistral-swa", edit)
    r = subprocess.run([kiln, "info", "--model", d], capture_output=True, text=True)
    assert r.returncode != 0 and needle in r.stderr, r.stderr


def test_qwen3_bias_tensor_without_config_refused(kiln, tmp_path):
    """A q/k norm or bias tensor the config does not call for is refused, not ignored."""
    d = edit_config(tmp_path, "qwen3", lambda c: c.__setitem__("architectures", ["LlamaForCausalLM"]))
    r = subprocess.run([kiln, "info", "--model", d], capture_output=True, text=True)
    assert r.returncode != 0 and "q_norm" in r.stderr, r.stderr


def test_native_interleaved_windows(kiln, tmp_path):
    """params.json sliding_window as a list (Ministral-style, layer l takes list[l % n]; a value
    that covers the context is full attention): layer 0 windowed (8), layer 1 full."""
    d = tmp_path / "native-iswa"
    shutil.copytree(os.path.join(FIX, "mistral3-native"), d)
    p = json.load(open(d / "params.json"))
    p["sliding_window"] = [8, 4096]
    json.dump(p, open(d / "params.json", "w"))
    ids = IDS[:32]
    got = kiln_logits(kiln, str(d), ids)
    exact = forward_f64(os.path.join(FIX, "mistral3"), ids, window_override=[8, 0])
    full = forward_f64(os.path.join(FIX, "mistral3"), ids)
    print(f"params.json sliding_window [8, 4096]: kiln vs float64 {rel(got, exact):.2e} (vs no window {rel(got, full):.2e})")
    assert rel(got, exact) <= 1e-5 and rel(got, full) > 1e-3
    p["sliding_window"] = [8, 16]
    json.dump(p, open(d / "params.json", "w"))
    r = subprocess.run([kiln, "info", "--model", str(d)], capture_output=True, text=True)
    assert r.returncode != 0 and "one size" in r.stderr, r.stderr


@pytest.mark.parametrize("fixture", ["llama3-rope", "yarn-rope", "linear-rope", "dynamic-rope", "qwen2", "qwen3",
                                     "mistral3"])
def test_quantize_families_f32(kiln, tmp_path, fixture):
    """kiln quantize writes the families' GGUFs (qwen2 / qwen3 metadata, biases, q/k norms; RoPE
    scaling as rope.scaling.* or rope_freqs): the f32 file's logits equal the float64 oracle's,
    and gguf-py reads the architecture back."""
    out = tmp_path / f"{fixture}.gguf"
    r = subprocess.run([kiln, "quantize", "--model", os.path.join(FIX, fixture), "--out", str(out), "--type", "f32"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ids = IDS[:24]
    got = kiln_logits(kiln, str(out), ids)
    exact = forward_f64(os.path.join(FIX, fixture), ids)
    print(f"{fixture} -> kiln quantize f32 GGUF: kiln vs float64 {rel(got, exact):.2e}")
    assert rel(got, exact) <= 1e-5
    gguf = pytest.importorskip("gguf")
    arch = bytes(gguf.GGUFReader(str(out)).fields["general.architecture"].parts[-1]).decode()
    assert arch == {"qwen2": "qwen2", "qwen3": "qwen3"}.get(fixture, "llama")


@pytest.mark.parametrize("fixture", ["mistral-swa", "mixtral"])
def test_quantize_refuses_what_gguf_cannot_say(kiln, tmp_path, fixture):
    r = subprocess.run([kiln, "quantize", "--model", os.path.join(FIX, fixture), "--out", str(tmp_path / "x.gguf"),
                        "--type", "f32"], capture_output=True, text=True)
    assert r.returncode != 0 and "does not write" in r.stderr, r.stderr
