#!/usr/bin/env python3
"""trace_steps.py: where one kind of engine step spends its GPU time, from the Chrome trace that
scripts/cuda_trace.sh writes (kiln_trace.json).

    bench/trace_steps.py TRACE.json [--kind decode|prefill] [--top 25]

Steps are the `kiln_step` ranges. decode: the steps with the most common kernel count (a bench
run of N decode steps makes N alike); prefill: the steps with the most GPU-busy time. Of the
chosen steps it prints the median step's duration and, per kernel name, the time a step
(average over the chosen steps), launches a step and the average duration of a launch.
Standard library only (runs on the GPU machine as it is).
"""
import argparse
import collections
import json
import statistics
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trace")
    ap.add_argument("--kind", choices=("decode", "prefill"), default="decode")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    with open(a.trace) as f:
        ev = json.load(f)["traceEvents"]
    steps = sorted((e for e in ev if e.get("cat") == "step"), key=lambda e: e["ts"])
    kern = sorted((e for e in ev if e.get("cat") == "kernel"), key=lambda e: e["ts"])
    if not steps:
        sys.exit("trace_steps: no kiln_step ranges in the trace")
    if a.kind == "decode":
        mode = collections.Counter(s["args"]["kernels"] for s in steps).most_common(1)[0][0]
        chosen = [s for s in steps if s["args"]["kernels"] == mode]
    else:
        top = max(s["args"]["gpu_busy_us"] for s in steps)
        chosen = [s for s in steps if s["args"]["gpu_busy_us"] >= 0.5 * top]
    per = collections.defaultdict(lambda: [0.0, 0])
    j = 0
    for s in chosen:
        t0, t1 = s["ts"], s["ts"] + s["dur"]
        while j < len(kern) and kern[j]["ts"] < t0:
            j += 1
        k = j
        while k < len(kern) and kern[k]["ts"] <= t1:
            p = per[kern[k]["name"]]
            p[0] += kern[k]["dur"]
            p[1] += 1
            k += 1
    n = len(chosen)
    durs = [s["dur"] for s in chosen]
    busy = [s["args"]["gpu_busy_us"] for s in chosen]
    ksum = sum(v[0] for v in per.values()) / n
    print(f"{a.kind}: {n} of {len(steps)} steps, median step {statistics.median(durs) / 1e3:.3f} ms, "
          f"GPU busy {statistics.median(busy) / 1e3:.3f} ms, kernel sum {ksum / 1e3:.3f} ms a step, "
          f"{sum(v[1] for v in per.values()) / n:.0f} kernels a step")
    print(f"{'ms/step':>9} {'%':>5} {'n/step':>7} {'avg_us':>8}  kernel")
    for name, (t, c) in sorted(per.items(), key=lambda kv: -kv[1][0])[: a.top]:
        print(f"{t / n / 1e3:9.3f} {100 * t / n / ksum:5.1f} {c / n:7.1f} {t / c:8.1f}  {name[:110]}")


if __name__ == "__main__":
    main()
