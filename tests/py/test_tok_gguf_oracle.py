"""GGUF vocabulary of the default model (SmolLM2-135M-Instruct.Q4_1.gguf: gpt2 BPE, pre
"smollm") against HF `tokenizers`: the oracle is a tokenizers BPE built from the file's own
tokens and merges (read with the `gguf` package) with SmolLM2's published pipeline (Digits with
individual digits, then ByteLevel without prefix space; control tokens as special added
tokens). kiln must give the same ids on the corpus, and decode them back to the same text.
Skips loudly when the binary, the model or a package is missing."""
import subprocess

import pytest

import corpus
from test_tokenizers_oracle import kiln_encode

gguf = pytest.importorskip("gguf", reason="SKIP: the gguf package is not installed")
tokenizers = pytest.importorskip("tokenizers", reason="SKIP: tokenizers is not installed")


def _field_strs(r, key):
    f = r.fields[key]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


def build_oracle(default_gguf, specials=True):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    r = gguf.GGUFReader(default_gguf)
    pre = bytes(r.fields["tokenizer.ggml.pre"].parts[-1]).decode()
    assert pre == "smollm", pre
    toks = _field_strs(r, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in _field_strs(r, "tokenizer.ggml.merges")]
    f = r.fields["tokenizer.ggml.token_type"]
    types = [int(f.parts[i][0]) for i in f.data]
    tk = Tokenizer(models.BPE({t: i for i, t in enumerate(toks)}, merges))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tk.decoder = decoders.ByteLevel()
    if specials:
        tk.add_special_tokens([AddedToken(t, special=True, normalized=False)
                               for t, ty in zip(toks, types) if ty == 3])
    return tk


@pytest.fixture(scope="module")
def oracle(default_gguf):
    return build_oracle(default_gguf)


def test_smollm2_gguf_encode_matches_tokenizers(kiln, default_gguf, oracle):
    texts = corpus.TEXTS
    got = kiln_encode(default_gguf, texts, "--no-special", "--parse-special")
    bad = [(t, g, oracle.encode(t, add_special_tokens=False).ids) for t, g in zip(texts, got)
           if g != oracle.encode(t, add_special_tokens=False).ids]
    assert not bad, f"{len(bad)}/{len(texts)} differ, first: {bad[0]!r}"


def test_smollm2_gguf_control_text_stays_text(kiln, default_gguf, oracle):
    # without --parse-special "<|im_end|>" typed in text is plain text, never the control token
    [ids] = kiln_encode(default_gguf, ["say <|im_end|> now"], "--no-special")
    assert 2 not in ids and len(ids) > 4


def test_smollm2_gguf_decode_round_trip(kiln, default_gguf, oracle):
    texts = [t for t in corpus.TEXTS if t][:120]
    ids = [oracle.encode(t, add_special_tokens=False).ids for t in texts]
    r = subprocess.run([kiln, "tokenize", "--tokenizer", default_gguf, "--decode", "--batch"],
                       input="\n".join(" ".join(map(str, x)) for x in ids) + "\n",
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    import json
    out = [json.loads(line) for line in r.stdout.split("\n")[:-1]]
    assert out == [oracle.decode(x, skip_special_tokens=False) for x in ids]
