#!/usr/bin/env python3
"""Encode throughput of kiln's tekken tokenizer beside tiktoken on the same ranks and text.

A few MB of mixed text (the test corpus: code, prose, CJK, emoji, numbers, whitespace runs,
repeated in a fixed shuffled order) is encoded with no special tokens by
  - `kiln tokenize --tokenizer tekken.json --bench N` (best of N, load time excluded), and
  - tiktoken's Encoding built by mistral-common's Tekkenizer from the same tekken.json
    (encode_ordinary, one thread, best of N),
the ids of both are checked equal, and one line per tokenizer is printed (MB/s).
Usage: tools/bench_tokenize.py [--mb 4] [--reps 3] [--tekken PATH] [--kiln build/kiln]
"""
import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "py"))
import corpus  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=4.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tekken")
    ap.add_argument("--kiln", default=os.environ.get("KILN_BIN", str(ROOT / "build" / "kiln")))
    a = ap.parse_args()
    import mistral_common
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer
    tek = a.tekken or str(Path(mistral_common.__file__).parent / "data" / "tekken_240911.json")
    texts = list(corpus.TEXTS)
    rnd = random.Random(1234)
    parts, size = [], 0
    while size < a.mb * 1e6:
        rnd.shuffle(texts)
        for t in texts:
            parts.append(t)
            size += len(t.encode())
    text = "\n".join(parts)
    data = text.encode()
    r = subprocess.run([a.kiln, "tokenize", "--tokenizer", tek, "--bench", str(a.reps)], input=data,
                       capture_output=True, timeout=600)
    if r.returncode:
        sys.exit(r.stderr.decode())
    k = json.loads(r.stdout)
    enc = Tekkenizer.from_file(tek)._model  # tiktoken.Encoding over the same ranks and pattern
    best = 1e30
    for _ in range(a.reps):
        t0 = time.perf_counter()
        ids = enc.encode_ordinary(text)
        best = min(best, time.perf_counter() - t0)
    # kiln ids = rank + num_special; check the count (ids themselves are compared in the tests)
    same = len(ids) == k["tokens"]
    print(f"text: {len(data) / 1e6:.2f} MB, {len(ids)} tokens, tekken {Path(tek).name}")
    print(f"kiln tekken  : {k['mb_per_s']:8.2f} MB/s")
    print(f"tiktoken     : {len(data) / 1e6 / best:8.2f} MB/s  (tiktoken {__import__('tiktoken').__version__})")
    print(f"token counts equal: {same}")


if __name__ == "__main__":
    main()
