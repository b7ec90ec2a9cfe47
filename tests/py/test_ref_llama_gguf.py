"""Plausibility of the numpy reference forward pass (ref_llama_gguf.py) on the default model:
finite logits, " Paris" after "The capital of France is", and a coherent greedy chat answer.
The lead checks kiln's logits against this reference."""
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gguf")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import ref_llama_gguf as ref  # noqa: E402


@pytest.fixture(scope="module")
def model(default_gguf):
    return ref.Model(default_gguf)


def test_capital_of_france(model):
    bpe = ref.BPE(model)
    ids = bpe.encode("The capital of France is")
    assert ids == [504, 3575, 282, 4649, 314]
    logits = model.forward(ids)
    assert logits.shape == (5, 49152) and np.isfinite(logits).all()
    assert model.tokens[int(np.argmax(logits[-1]))] == "\u0120Paris"


def test_chat_greedy(model):
    bpe = ref.BPE(model)
    ids = bpe.encode(ref.chat_prompt("What is the capital of France?"))
    assert ids[0] == 1 and ids[-3:] == [520, 9531, 198]  # <|im_start|> ... assistant\n
    out = ref.greedy(model, ids, 12)
    text = bpe.decode(out)
    assert "Paris" in text, text
    assert out[-1] == model.eos, text
