"""kiln's GGUF dequantization against the gguf Python package (gguf.quants.dequantize),
bit-exact: every tensor of the default model SmolLM2-135M-Instruct.Q4_1.gguf, and random blocks
of every quantized type kiln supports written into a small GGUF with gguf's GGUFWriter.
kiln's side is `kiln gguf-dump --model F --tensor NAME --out X.f32`."""
import subprocess

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as QT  # noqa: E402

# type -> (block elems, block bytes, byte offsets of the f16 scale fields)
TYPES = {
    QT.Q8_0: (32, 34, [0]),
    QT.Q4_0: (32, 18, [0]),
    QT.Q4_1: (32, 20, [0, 2]),
    QT.Q5_0: (32, 22, [0]),
    QT.Q5_1: (32, 24, [0, 2]),
    QT.Q4_K: (256, 144, [0, 2]),
    QT.Q5_K: (256, 176, [0, 2]),
    QT.Q6_K: (256, 210, [208]),
}


def kiln_dequant(kiln, model, name, tmp_path, shape):
    out = tmp_path / (name.replace("/", "_") + ".f32")
    r = subprocess.run([kiln, "gguf-dump", "--model", model, "--tensor", name, "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = np.fromfile(out, dtype=np.float32)
    out.unlink()
    return got.reshape(shape)


def assert_bits_equal(got, want, what):
    want = np.ascontiguousarray(want, dtype=np.float32)
    assert got.shape == want.shape, f"{what}: shape {got.shape} vs {want.shape}"
    diff = got.view(np.uint32) != want.view(np.uint32)
    if diff.any():
        i = np.argwhere(diff)[0]
        raise AssertionError(f"{what}: {int(diff.sum())} of {diff.size} values differ, first at "
                             f"{tuple(i)}: kiln {got[tuple(i)]!r} vs gguf {want[tuple(i)]!r}")


def test_default_model_every_tensor(kiln, default_gguf, tmp_path):
    r = gguf.GGUFReader(default_gguf)
    assert len(r.tensors) == 272
    types = set()
    for t in r.tensors:
        want = gguf.quants.dequantize(t.data, t.tensor_type)
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        got = kiln_dequant(kiln, default_gguf, t.name, tmp_path, want.shape)
        assert want.shape == shape or want.size == np.prod(shape)
        assert_bits_equal(got, want, f"{t.name} ({t.tensor_type.name})")
        types.add(t.tensor_type.name)
    assert {"Q4_1", "Q8_0", "F32"} <= types


def random_blocks(qt, n_rows, n_blocks, rng):
    be, bb, scale_offs = TYPES[qt]
    raw = rng.integers(0, 256, size=(n_rows, n_blocks, bb), dtype=np.uint8)
    for off in scale_offs:
        mag = rng.uniform(1e-3, 1e-1, size=(n_rows, n_blocks)).astype(np.float32)
        sign = np.where(rng.random((n_rows, n_blocks)) < 0.5, -1.0, 1.0).astype(np.float32)
        raw[:, :, off:off + 2] = (mag * sign).astype(np.float16).view(np.uint8).reshape(n_rows, n_blocks, 2)
    return raw.reshape(n_rows, n_blocks * bb), n_blocks * be


def test_random_blocks_every_type(kiln, tmp_path):
    rng = np.random.default_rng(1234)
    path = tmp_path / "random.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    want = {}
    for qt in TYPES:
        raw, n = random_blocks(qt, 5, 3, rng)
        name = f"rand.{qt.name}"
        w.add_tensor(name, raw, raw_dtype=qt)
        want[name] = gguf.quants.dequantize(raw, qt)
        assert want[name].shape == (5, n)
    x = rng.standard_normal((3, 64)).astype(np.float32)
    w.add_tensor("rand.F32", x)
    want["rand.F32"] = x
    h = rng.standard_normal((3, 64)).astype(np.float16)
    w.add_tensor("rand.F16", h)
    want["rand.F16"] = h.astype(np.float32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    for name, ref in want.items():
        got = kiln_dequant(kiln, str(path), name, tmp_path, ref.shape)
        assert_bits_equal(got, ref, name)
