"""test_fp8_refs.py: kiln's reading of FP8 checkpoints against files and logits it did not write
(issue 17). tests/fixtures/fp8_refs holds what tests/fixtures/make_fp8_refs.py made on the GPU
machine (torch 2.11, transformers 5.17; manifest.json in each folder says how the logits were
computed):
  hf-fp8-tensor-static  HF quant_method "fp8", per-tensor weight_scale, static input_scale,
                        written by transformers' save_pretrained; logits from a torch forward of
                        the model (bf16) with the weights dequantized and every linear input
                        rounded through float8_e4m3fn with its input_scale
  mistral-fp8           the same model as a Mistral-native folder (params.json, qscale_weight /
                        qscale_act), q / k rows permuted back to Meta's order; the same logits
kiln (CPU backend, f32 activations) must agree within 5e-2 relative L2 per position (measured
2.3e-2 worst: the reference runs its activations in bf16) and on every position's argmax; a
misread scale, layout or permutation gives relative errors near 1.
  ct-fp8-static         compressed-tensors 0.20.1 preset FP8 (per-tensor weights, static per-tensor
                        activations) and FP8_DYNAMIC (per-channel weights, dynamic per-token
  ct-fp8-dynamic        activations), written by its ModelCompressor (float-quantized) with min-max
                        scales; logits from transformers 5.17 loading them back (bf16 forward with
                        compressed-tensors' fake quantization of every Linear input)
For these two, transformers and kiln disagree by 0.12 relative L2, and a float64 forward pass of
the format's definition (fp8_oracle.py) decides: kiln equals it to 1.3e-7 on ct-fp8-static, and
transformers is 0.116 away from it (it runs in bf16 through compressed-tensors' fake quantization;
a plain bf16 torch forward of the HF-format static checkpoint is 0.023 from kiln: where the rest
comes from in compressed-tensors' path was not examined). With dynamic per-token scales the
oracle is ill-conditioned here: this 2-layer random model turns one e4m3 element flipped at a
rounding boundary into several per cent of the logits, and the oracle itself moves by up to 0.07
when its input embeddings are perturbed by 1e-7 relative (kiln: 2.6e-7 on the other positions). So
the test holds kiln to the oracle where the oracle is well conditioned (the positions that a 1e-7
perturbation leaves within 1e-5), elsewhere to the oracle's own perturbation spread, and to
transformers no further than the oracle is. The fixture the script could not make is absent:
transformers' FineGrainedFP8 (block scales) needs the `kernels` package (a Hub download) the GPU
machine lacks.
"""
import json
import os
import subprocess
import tempfile

import numpy as np
import pytest

from serve_util import KILN

ROOT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "fp8_refs")
CASES = ["hf-fp8-tensor-static", "mistral-fp8"]
CT_CASES = ["ct-fp8-static", "ct-fp8-dynamic"]


def kiln_logits(d, ids):
    """kiln's (CPU) prompt logits of the checkpoint folder d, [len(ids)][vocab] float32"""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "k.f32")
        r = subprocess.run([KILN, "logits", "--model", d, "--prompt-ids", ",".join(map(str, ids)), "--out", out],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return np.fromfile(out, dtype="<f4").reshape(len(ids), -1)


@pytest.mark.parametrize("name", CASES)
def test_fp8_reference_logits(name):
    if not os.access(KILN, os.X_OK):
        pytest.skip(f"SKIP: kiln binary not found at {KILN}")
    d = os.path.join(ROOT, name)
    if not os.path.isdir(d):
        pytest.skip(f"SKIP: fixture {d} absent (tests/fixtures/make_fp8_refs.py makes it on a GPU machine)")
    ids = json.load(open(os.path.join(d, "prompt_ids.json")))
    ref = np.fromfile(os.path.join(d, "logits.f32"), dtype="<f4").reshape(len(ids), -1)
    got = kiln_logits(d, ids)
    assert got.shape == ref.shape
    rel = np.linalg.norm(got - ref, axis=1) / np.linalg.norm(ref, axis=1)
    agree = (got.argmax(1) == ref.argmax(1)).mean()
    print(f"{name}: relative L2 worst {rel.max():.3g} mean {rel.mean():.3g}, argmax agreement {agree:.3f}")
    assert rel.max() <= 5e-2, f"{name}: relative L2 {rel.max():.3g} > 5e-2"
    assert agree == 1.0, f"{name}: argmax agreement {agree:.3f}"


@pytest.mark.parametrize("name", CT_CASES)
def test_fp8_ct_reference_logits(name):
    """compressed-tensors: kiln against the float64 oracle of the format and against transformers"""
    if not os.access(KILN, os.X_OK):
        pytest.skip(f"SKIP: kiln binary not found at {KILN}")
    d = os.path.join(ROOT, name)
    if not os.path.isdir(d):
        pytest.skip(f"SKIP: fixture {d} absent (tests/fixtures/make_fp8_refs.py makes it on a GPU machine)")
    import fp8_oracle
    ids = json.load(open(os.path.join(d, "prompt_ids.json")))
    tf = np.fromfile(os.path.join(d, "logits.f32"), dtype="<f4").reshape(len(ids), -1).astype(np.float64)
    got = kiln_logits(d, ids).astype(np.float64)
    rel = lambda a, b: np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)  # noqa: E731
    ora = fp8_oracle.forward(d, ids)
    spread = np.max([rel(fp8_oracle.forward(d, ids, 1e-7, s), ora) for s in (1, 2, 3)], axis=0)
    stable = spread <= 1e-5
    k_o, k_t, o_t = rel(got, ora), rel(got, tf), rel(ora, tf)
    print(f"{name}: kiln vs f64 oracle worst {k_o.max():.3g} on {stable.sum()} well-conditioned positions "
          f"{k_o[stable].max():.3g}; oracle's 1e-7 perturbation spread {spread.max():.3g}; kiln vs transformers "
          f"{k_t.max():.3g}, oracle vs transformers {o_t.max():.3g}")
    assert stable.sum() >= len(ids) // 2, f"{name}: only {stable.sum()} well-conditioned positions"
    assert k_o[stable].max() <= 1e-5, f"{name}: kiln vs oracle {k_o[stable].max():.3g} where the oracle is stable"
    assert k_o.max() <= 2 * spread.max() + 1e-5, f"{name}: kiln vs oracle {k_o.max():.3g} beyond its own spread"
    assert k_t.max() <= 1.25 * o_t.max() + 1e-2, f"{name}: kiln {k_t.max():.3g} from transformers, oracle {o_t.max():.3g}"
    # a misread scale or layout moves the logits by O(1): transformers' argmax agrees on most positions
    assert (got.argmax(1) == tf.argmax(1)).mean() >= 0.6
