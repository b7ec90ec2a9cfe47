"""`kiln tokenize` against reference tokenizers nobody here wrote.

  - tinystories-656K tokenizer.json, read raw (--raw): HF `tokenizers` (encode and decode);
  - tinystories-656K folder (transformers view, the default): transformers AutoTokenizer;
  - llama2.c llama2_tokenizer.bin: `sentencepiece` on llama2_tokenizer.model;
  - tekken_240718.json / tekken_240911.json from the `mistral-common` package: its Tekkenizer;
  - round trip decode(encode(x)) == x where the vocabulary covers every byte.

Invalid UTF-8 input (corpus.INVALID) has defined behaviour in kiln: it is tokenized as
bytes.decode("utf-8", "replace"), which is what the oracles get.

Every test skips loudly when the kiln binary, a fixture or a package is missing.
Env: KILN_BIN (default build/kiln), KILN_SHARED (default ../shared), both relative to the repo.
"""
import json
import os
import subprocess
from pathlib import Path

import pytest

import corpus

ROOT = Path(__file__).resolve().parents[2]
KILN = Path(os.environ.get("KILN_BIN", ROOT / "build" / "kiln"))
if not KILN.is_absolute():
    KILN = ROOT / KILN
SHARED = Path(os.environ.get("KILN_SHARED", ROOT.parent / "shared"))
if not SHARED.is_absolute():
    SHARED = ROOT / SHARED

TINY = SHARED / "models" / "tinystories-656K"
S260 = SHARED / "models" / "stories260K"


def need_kiln():
    if not KILN.exists():
        pytest.skip(f"kiln binary not found at {KILN} (build it, or set KILN_BIN)")


def need_file(p):
    if not Path(p).exists():
        pytest.skip(f"fixture missing: {p}")


def kiln_encode(tok, texts, *args):
    """Encode many texts (str or bytes) in one kiln process; returns a list of id lists."""
    need_kiln()
    payload = bytearray()
    for t in texts:
        b = t.encode("utf-8") if isinstance(t, str) else t
        payload += f"{len(b)}\n".encode() + b
    r = subprocess.run([str(KILN), "tokenize", "--tokenizer", str(tok), "--batch", *args],
                       input=bytes(payload), capture_output=True, timeout=600)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    lines = r.stdout.decode().split("\n")
    assert len(lines) == len(texts) + 1 and lines[-1] == "", (len(lines), len(texts))
    return [[int(x) for x in line.split()] for line in lines[:-1]]


def kiln_decode(tok, seqs, *args):
    need_kiln()
    payload = "".join(" ".join(map(str, s)) + "\n" for s in seqs)
    r = subprocess.run([str(KILN), "tokenize", "--tokenizer", str(tok), "--decode", "--batch", *args],
                       input=payload.encode(), capture_output=True, timeout=600)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    out = [json.loads(line) for line in r.stdout.decode("utf-8").split("\n") if line]
    assert len(out) == len(seqs)
    return out


def as_text(x):
    return x if isinstance(x, str) else x.decode("utf-8", "replace")


ALL = corpus.TEXTS + corpus.INVALID


def report(name, mism, total):
    for text, got, exp in mism[:10]:
        print(f"{name}: {text[:60]!r}\n  kiln   {got[:30]}\n  oracle {exp[:30]}")
    assert not mism, f"{name}: {len(mism)} of {total} differ (first ones printed above)"


# ---- HF tokenizers on tinystories tokenizer.json (raw) ----------------------------------------
def test_tinystories_raw_vs_hf_tokenizers():
    tokenizers = pytest.importorskip("tokenizers", reason="PyPI package `tokenizers` not installed")
    path = TINY / "tokenizer.json"
    need_file(path)
    ref = tokenizers.Tokenizer.from_file(str(path))
    got = kiln_encode(path, ALL, "--raw", "--parse-special")
    exp = [ref.encode(as_text(t)).ids for t in ALL]
    report("tinystories raw encode", [(as_text(t), g, e) for t, g, e in zip(ALL, got, exp) if g != e], len(ALL))
    got_nobos = kiln_encode(path, corpus.TEXTS[:50], "--raw", "--parse-special", "--no-special")
    exp_nobos = [ref.encode(t, add_special_tokens=False).ids for t in corpus.TEXTS[:50]]
    assert got_nobos == exp_nobos
    # decode with special tokens kept
    dec = kiln_decode(path, exp, "--raw")
    ref_dec = [ref.decode(ids, skip_special_tokens=False) for ids in exp]
    report("tinystories raw decode", [(as_text(t), g, e) for t, g, e in zip(ALL, dec, ref_dec) if g != e], len(ALL))
    # skipped: tokenizers 0.23 does not skip special tokens whose normalized form differs from
    # their content (here "<unk>" is known as "▁<unk>"), so compare with them removed by hand
    special = {0, 1, 2}
    dec = kiln_decode(path, exp, "--raw", "--no-special")
    ref_dec = [ref.decode([i for i in ids if i not in special]) for ids in exp]
    report("tinystories raw decode skip", [(as_text(t), g, e) for t, g, e in zip(ALL, dec, ref_dec) if g != e],
           len(ALL))


# ---- transformers on the tinystories folder (kiln's default view) -----------------------------
def test_tinystories_folder_vs_transformers():
    transformers = pytest.importorskip("transformers", reason="PyPI package `transformers` not installed")
    need_file(TINY / "tokenizer_config.json")
    ref = transformers.AutoTokenizer.from_pretrained(str(TINY))
    got = kiln_encode(TINY, ALL, "--parse-special")
    exp = [ref(as_text(t))["input_ids"] for t in ALL]
    report("tinystories transformers encode",
           [(as_text(t), g, e) for t, g, e in zip(ALL, got, exp) if g != e], len(ALL))
    dec = kiln_decode(TINY, exp)
    ref_dec = [ref.decode(ids, skip_special_tokens=False) for ids in exp]
    report("tinystories transformers decode", [(as_text(t), g, e) for t, g, e in zip(ALL, dec, ref_dec) if g != e],
           len(ALL))


# ---- sentencepiece vs llama2.c tokenizer.bin --------------------------------------------------
def llama2_comparable(text):
    """llama2.c's encode (run.c) and SentencePiece agree on every corpus string except those with
    a literal U+2581 LOWER ONE EIGHTH BLOCK: SentencePiece reads it as its whitespace meta symbol
    (so "\u2581" encodes like " "), while a llama2.c tokenizer.bin has its pieces' "\u2581"
    already turned into spaces and sees the character as an ordinary unknown one (three byte
    tokens). That is a property of the .bin format; those strings are left out here and checked
    separately below."""
    return "\u2581" not in text


def test_llama2_bin_vs_sentencepiece():
    spm = pytest.importorskip("sentencepiece", reason="PyPI package `sentencepiece` not installed")
    binp, model = S260 / "llama2_tokenizer.bin", S260 / "llama2_tokenizer.model"
    need_file(binp)
    need_file(model)
    sp = spm.SentencePieceProcessor(model_file=str(model))
    texts = [t for t in corpus.TEXTS if llama2_comparable(t)]
    got = kiln_encode(binp, texts)
    exp = [sp.encode(t, add_bos=True) for t in texts]
    report("llama2 encode", [(t, g, e) for t, g, e in zip(texts, got, exp) if g != e], len(texts))
    dec = kiln_decode(binp, exp, "--no-special")
    ref_dec = [sp.decode(ids) for ids in exp]
    report("llama2 decode", [(t, g, e) for t, g, e in zip(texts, dec, ref_dec) if g != e], len(texts))
    # the documented difference: U+2581 in the text is bytes for llama2.c, a space for SentencePiece
    other = [t for t in corpus.TEXTS if not llama2_comparable(t)]
    assert other, "corpus lost its U+2581 strings"
    for t, ids in zip(other, kiln_encode(binp, other)):
        assert 229 in ids and 153 in ids and 132 in ids, (t, ids)  # <0xE2><0x96><0x81>


def test_llama2_bin_round_trip_and_invalid():
    binp = S260 / "llama2_tokenizer.bin"
    need_file(binp)
    ids = kiln_encode(binp, ALL)
    dec = kiln_decode(binp, ids, "--no-special")
    for t, d in zip(ALL, dec):
        # byte fallback keeps every byte; invalid bytes come back as U+FFFD
        assert d == as_text(t), (t, d)


# ---- mistral-common Tekkenizer ----------------------------------------------------------------
def tekken_files():
    try:
        import mistral_common
    except ImportError:
        return []
    data = Path(mistral_common.__file__).parent / "data"
    return sorted(data.glob("tekken_*.json"))


@pytest.mark.parametrize("name", ["tekken_240718.json", "tekken_240911.json"])
def test_tekken_vs_mistral_common(name):
    pytest.importorskip("mistral_common", reason="PyPI package `mistral-common` not installed")
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer
    files = [f for f in tekken_files() if f.name == name]
    if not files:
        pytest.skip(f"{name} not shipped by the installed mistral-common")
    path = files[0]
    ref = Tekkenizer.from_file(str(path))
    got = kiln_encode(path, ALL)
    exp = [ref.encode(as_text(t), bos=True, eos=False) for t in ALL]
    report(f"{name} encode", [(as_text(t), g, e) for t, g, e in zip(ALL, got, exp) if g != e], len(ALL))
    dec = kiln_decode(path, exp, "--no-special")
    ref_dec = [ref.decode(ids) for ids in exp]
    report(f"{name} decode", [(as_text(t), g, e) for t, g, e in zip(ALL, dec, ref_dec) if g != e], len(ALL))
    # round trip on valid UTF-8
    for t, d in zip(ALL, dec):
        assert d == as_text(t)
    # special-token text is plain text by default, a control token with --parse-special
    plain = kiln_encode(path, ["[INST] hi [/INST]"], "--no-special")[0]
    parsed = kiln_encode(path, ["[INST] hi [/INST]"], "--no-special", "--parse-special")[0]
    assert plain == ref.encode("[INST] hi [/INST]", bos=False, eos=False)
    special = getattr(ref, "get_special_token", None) or ref.get_control_token
    assert parsed[0] == special("[INST]") and parsed[-1] == special("[/INST]")


def test_tekken_vs_tiktoken_ranks():
    """The same vocabulary through tiktoken directly (ranks, no special-token offset)."""
    tiktoken = pytest.importorskip("tiktoken", reason="PyPI package `tiktoken` not installed")
    files = tekken_files()
    if not files:
        pytest.skip("mistral-common (the tekken files) not installed")
    import base64
    path = files[0]
    d = json.loads(path.read_text())
    nspec = d["config"]["default_num_special_tokens"]
    inner = d["config"]["default_vocab_size"] - nspec
    ranks = {base64.b64decode(v["token_bytes"]): v["rank"] for v in d["vocab"][:inner]}
    enc = tiktoken.Encoding("tekken", pat_str=d["config"]["pattern"], mergeable_ranks=ranks, special_tokens={})
    texts = corpus.TEXTS
    got = kiln_encode(path, texts, "--no-special")
    exp = [[r + nspec for r in enc.encode(t, disallowed_special=())] for t in texts]
    report("tiktoken ranks", [(t, g, e) for t, g, e in zip(texts, got, exp) if g != e], len(texts))


def test_tekken_merge_paths_vs_tiktoken():
    """Pieces that take every merge path of kiln's tekken encoder (one byte, one token, the
    array merge up to 128 bytes, the heap merge beyond), with many merges each: runs of one
    character, short periods, random lowercase words (one piece each), CJK and emoji runs."""
    tiktoken = pytest.importorskip("tiktoken", reason="PyPI package `tiktoken` not installed")
    files = [f for f in tekken_files() if f.name == "tekken_240911.json"]
    if not files:
        pytest.skip("mistral-common (tekken_240911.json) not installed")
    import base64
    import random
    path = files[0]
    d = json.loads(path.read_text())
    nspec = d["config"]["default_num_special_tokens"]
    inner = d["config"]["default_vocab_size"] - nspec
    ranks = {base64.b64decode(v["token_bytes"]): v["rank"] for v in d["vocab"][:inner]}
    enc = tiktoken.Encoding("tekken", pat_str=d["config"]["pattern"], mergeable_ranks=ranks, special_tokens={})
    rnd = random.Random(20261125)
    lengths = [1, 2, 3, 7, 31, 63, 64, 65, 100, 127, 128, 129, 130, 200, 255, 256, 257, 511, 1000, 3001]
    texts = []
    for n in lengths:
        for unit in ["z", "a", "e", "ab", "abc", "ing", "日本", "é", "😀", "the", "qxj"]:
            texts.append((unit * n)[: max(1, n)] if len(unit) == 1 else unit * max(1, n // len(unit)))
        alpha = "etaoinshrdlucmfwypvbgkjqxz"
        for k in (2, 3, 5, 26):
            texts.append("".join(rnd.choice(alpha[:k]) for _ in range(n)))
        texts.append("".join(rnd.choice("aeiouéèàüößçñ") for _ in range(n)))
        texts.append("".join(chr(rnd.randrange(0x4E00, 0x4E00 + 300)) for _ in range(n)))
    texts.append(" ".join(texts[:50]))  # many pieces in one text
    got = kiln_encode(path, texts, "--no-special")
    exp = [[r + nspec for r in enc.encode(t, disallowed_special=())] for t in texts]
    report("tekken merge paths", [(t, g, e) for t, g, e in zip(texts, got, exp) if g != e], len(texts))
