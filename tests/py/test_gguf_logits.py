"""SmolLM2-135M-Instruct Q4_1 (the default model): kiln's logits against a reference forward pass
in numpy on the weights dequantized by the `gguf` package (tests/py/ref_llama_gguf.py):
top-1 agreement on every position and relative L2 <= 1e-3, for several prompts."""
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

HERE = os.path.dirname(__file__)
PROMPTS = [
    [1, 504, 3458, 282, 4649, 314],                       # short
    [1] + [(i * 7919 + 13) % 49152 for i in range(40)],    # 41 pseudo-random ids
    [1, 9690, 198, 2683, 359, 253, 5356, 11173, 3365, 28, 5185, 429, 2, 198, 1, 4093, 198],  # chat-like
]


@pytest.mark.parametrize("k", range(len(PROMPTS)))
def test_smollm2_logits_vs_numpy_reference(kiln, default_gguf, k):
    ids = PROMPTS[k]
    s = ",".join(map(str, ids))
    with tempfile.TemporaryDirectory() as d:
        ref, got = os.path.join(d, "ref.f32"), os.path.join(d, "kiln.f32")
        subprocess.run([sys.executable, os.path.join(HERE, "ref_llama_gguf.py"), "--model", default_gguf,
                        "--ids", s, "--out", ref], check=True, capture_output=True, timeout=600)
        subprocess.run([kiln, "logits", "--model", default_gguf, "--prompt-ids", s, "--out", got],
                       check=True, capture_output=True, timeout=600)
        a = np.fromfile(got, dtype=np.float32).reshape(len(ids), -1)
        b = np.fromfile(ref, dtype=np.float32).reshape(len(ids), -1)
    rel = np.linalg.norm(a - b) / np.linalg.norm(b)
    print(f"prompt {k}: {len(ids)} tokens, relative L2 {rel:.2e}")
    assert np.isfinite(a).all()
    assert (a.argmax(1) == b.argmax(1)).all(), "top-1 differs"
    assert rel <= 1e-3
