#!/usr/bin/env python3
"""structured_samples.py: the issue-18 sample counts for constrained decoding, once, against a
`kiln serve` this script starts (the default model, SmolLM2-135M-Instruct, CPU).

  .venv/bin/python scripts/structured_samples.py [--n 1000] [--grammar-n 200] [--tools-n 200] [--out FILE.json]
      [--server-arg=--speculative --server-arg=ngram] [--server-arg=--jump-forward] [--model PATH]

Sets (tests/py/structured_cases.py): the nested JSON schema, two regexes and a choice at --n
seeded samples each (temperature 1), each grammar of the GBNF set at --grammar-n, each forced
tool-call mode at --tools-n. Every `finish_reason: stop` output must pass its check (jsonschema,
re.fullmatch, a valid call whose arguments validate); `length` finishes are counted and must be
at most 1%. Prints a table and writes the figures as JSON; exits 1 on any invalid output or a
set over 1% length.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "py"))
import openai  # noqa: E402
import structured_cases as sc  # noqa: E402
from serve_util import NAME, Srv, default_gguf  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--grammar-n", type=int, default=200)
    ap.add_argument("--tools-n", type=int, default=200)
    ap.add_argument("--out", default="structured_samples.json")
    ap.add_argument("--only", default="", help="comma-separated set names")
    ap.add_argument("--server-arg", action="append", default=[],
                    help="one more kiln serve argument (repeat): --speculative ngram, --jump-forward, --backend cuda")
    ap.add_argument("--model", default="", help="the model (default: the default GGUF)")
    a = ap.parse_args()
    g = a.model or default_gguf()
    if not g:
        sys.exit("no default model: run scripts/get_default_model.sh")
    srv = Srv(["--model", g], extra=["--max-num-seqs", "16", *a.server_arg])
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0, timeout=600)
    rows, bad, spec = [], 0, {}
    only = set(x for x in a.only.split(",") if x)
    try:
        for name, prompt, fields, check, max_tokens in sc.sets():
            if only and name not in only:
                continue
            n = a.grammar_n if name.startswith("grammar") else a.n
            t = time.time()
            ok, length, fails = sc.run_set(client, NAME, prompt, fields, check, max_tokens, n, workers=16)
            rows.append({"set": name, "n": n, "stop_valid": ok, "length": length, "invalid": len(fails),
                         "invalid_examples": fails[:5], "seconds": round(time.time() - t, 1)})
            print(f"{name:22s} {n:5d} samples: {ok:5d} stop+valid, {length:3d} length ({100.0 * length / n:.1f}%), "
                  f"{len(fails)} invalid, {time.time() - t:.0f} s", flush=True)
        for name, fields, allowed, single in sc.tool_sets():
            if only and name not in only:
                continue
            t = time.time()
            ok, length, fails = sc.run_tools(client, NAME, fields, allowed, single, a.tools_n, workers=16)
            rows.append({"set": name, "n": a.tools_n, "stop_valid": ok, "length": length, "invalid": len(fails),
                         "invalid_examples": fails[:5], "seconds": round(time.time() - t, 1)})
            print(f"{name:22s} {a.tools_n:5d} answers: {ok:5d} valid calls, {length:3d} length "
                  f"({100.0 * length / a.tools_n:.1f}%), {len(fails)} invalid, {time.time() - t:.0f} s", flush=True)
        # the server's own counters (speculation: how many proposals the constrained rows accepted)
        import urllib.request
        met = urllib.request.urlopen(srv.url + "/metrics", timeout=30).read().decode()
        for line in met.splitlines():
            for key in ("spec_decode_num_draft_tokens_total", "spec_decode_num_accepted_tokens_total",
                        "generation_tokens_total"):
                if line.startswith("vllm:" + key + "{"):
                    spec[key] = float(line.rsplit(" ", 1)[1])
        if spec:
            print("server counters: " + ", ".join(f"{k} {v:.0f}" for k, v in spec.items()))
    finally:
        srv.stop()
    for r in rows:
        bad += r["invalid"] > 0 or r["length"] > r["n"] // 100
    Path(a.out).write_text(json.dumps({"model": os.path.basename(g), "server_args": a.server_arg, "rows": rows,
                                          "server_counters": spec}, indent=1))
    print(f"wrote {a.out}; {'FAIL' if bad else 'ok'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
