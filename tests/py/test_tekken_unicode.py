"""tekken encoding of characters added in Unicode 15.0, 15.1, 16.0 (and 17.0) against
mistral-common's Tekkenizer (tiktoken; its regex engine classifies with Unicode 16.0).

kiln cuts tekken text with its own matcher and tables generated from Unicode 16.0
(scripts/gen_unicode_tables.py); Debian 12's PCRE2 (Unicode 14) cut e.g. " \\U00011f50" (a 15.0
digit) differently. The corpus: every code point of blocks added in those versions (letters,
marks, digits, unassigned holes), alone and mixed with ASCII letters, digits, spaces, newlines,
punctuation and older scripts; 17.0 characters are in it too, so a reference that moves to a
newer Unicode fails here (then regenerate the tables at its version). Also: the committed
table file is what the pinned generator writes.

Skips loudly without the kiln binary, mistral-common or (for the regeneration) unicodedata2.
"""
import random
import subprocess
import sys
from pathlib import Path

import pytest

from test_tokenizers_oracle import ROOT, kiln_encode, report, tekken_files

# (first, last, what): blocks or ranges new in each version
NEW = [
    (0x11F00, 0x11F5F, "15.0 Kawi (letters, marks, digits)"),
    (0x1E4D0, 0x1E4FF, "15.0 Nag Mundari"),
    (0x1D2C0, 0x1D2DF, "15.0 Kaktovik numerals"),
    (0x1E030, 0x1E08F, "15.0 Cyrillic Extended-D (Lm)"),
    (0x11B00, 0x11B5F, "15.0 Devanagari Extended-A"),
    (0x10EFD, 0x10EFF, "15.0 Arabic marks"),
    (0x1DF25, 0x1DF2A, "15.0 Latin Extended-G"),
    (0x2EBF0, 0x2EC10, "15.1 CJK Extension I"),
    (0x2FFC, 0x2FFF, "15.1 ideographic description"),
    (0x105C0, 0x105FF, "16.0 Todhri"),
    (0x10D40, 0x10D8F, "16.0 Garay (letters, digits, marks)"),
    (0x16100, 0x1613F, "16.0 Gurung Khema"),
    (0x16D40, 0x16D7F, "16.0 Kirat Rai"),
    (0x1E5D0, 0x1E5FF, "16.0 Ol Onal"),
    (0x11BC0, 0x11BFF, "16.0 Sunuwar"),
    (0x11380, 0x113FF, "16.0 Tulu-Tigalari"),
    (0x1CCF0, 0x1CCF9, "16.0 outlined digits"),
    (0x116D0, 0x116E3, "16.0 Myanmar Extended-C digits"),
    (0xA7CB, 0xA7DC, "16.0 Latin Extended-D letters"),
    (0x10940, 0x1095F, "17.0 Sidetic"),
    (0x11DB0, 0x11DEF, "17.0 Tolong Siki (letters, digits)"),
]
OLD = ["a", "Z", "é", "Ä", "中", "\u0301", "7", "½", " ", "  ", "\n", "\r\n", "\t", ".", "/", "!", "😀",
       "\u00a0", "ǅ", "ʰ"]


def corpus():
    rnd = random.Random(1516)
    texts = []
    for first, last, _ in NEW:
        chars = [chr(c) for c in range(first, last + 1)]
        texts.append("".join(chars))
        texts.append(" ".join(chars))
        step = max(1, len(chars) // 32)  # every character is in the two strings above; 32 of each block
        for c in chars[::step]:  # alone and in the contexts every alternative of the pattern sees
            texts += [c, " " + c, c * 3, "a" + c + "b", "A" + c, c + "1", "\n" + c + " ", c + ".",
                      "'" + c + c, c + "\u0301", "x" + c + "/\n"]
        for _ in range(24):
            pool = chars + OLD
            texts.append("".join(rnd.choice(pool) for _ in range(rnd.randrange(1, 24))))
    every = [chr(c) for f, l, _ in NEW for c in range(f, l + 1)]
    for _ in range(300):  # mixed across versions
        texts.append("".join(rnd.choice(every + OLD) for _ in range(rnd.randrange(1, 40))))
    return texts


@pytest.mark.parametrize("name", ["tekken_240718.json", "tekken_240911.json"])
def test_tekken_unicode_15_16_vs_mistral_common(name):
    pytest.importorskip("mistral_common", reason="PyPI package `mistral-common` not installed")
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer
    files = [f for f in tekken_files() if f.name == name]
    if not files:
        pytest.skip(f"{name} not shipped by the installed mistral-common")
    ref = Tekkenizer.from_file(str(files[0]))
    texts = corpus()
    got = kiln_encode(files[0], texts, "--no-special")
    exp = [ref.encode(t, bos=False, eos=False) for t in texts]
    report(f"{name} Unicode 15/16", [(t, g, e) for t, g, e in zip(texts, got, exp) if g != e], len(texts))
    # the example, spelled out: a Kawi digit is \p{N}, so the space is its own piece
    probe = " \U00011f50"
    assert kiln_encode(files[0], [probe], "--no-special")[0] == ref.encode(probe, bos=False, eos=False)


def test_unicode_tables_are_generated(tmp_path):
    """src/tokenizer/unicode_tables.c is byte for byte what the pinned generator writes."""
    gen = ROOT / "scripts" / "gen_unicode_tables.py"
    try:
        import unicodedata2
    except ImportError:
        pytest.skip("PyPI package `unicodedata2` not installed (requirements-test.txt pins it)")
    out = tmp_path / "unicode_tables.c"
    r = subprocess.run([sys.executable, str(gen), str(out)], capture_output=True, text=True)
    if r.returncode != 0 and "want" in r.stderr:
        pytest.skip(f"unicodedata2 {unicodedata2.unidata_version} is not the pinned version: {r.stderr}")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == (ROOT / "src" / "tokenizer" / "unicode_tables.c").read_bytes()
