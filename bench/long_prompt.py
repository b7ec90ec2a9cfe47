#!/usr/bin/env python3
"""long_prompt.py: a long prompt beside a streaming short request on `kiln serve` (issue 22).

    bench/long_prompt.py [--kiln PATH] [--model GGUF] [--long 4000] [--short-prompt 512]
                         [--threads N] [--json FILE] [--serve-arg ARG ...]

What a user sees on the CPU backend: `kiln serve` on the default model (KILN_DEFAULT_GGUF, else
SmolLM2-135M-Instruct Q4_1 under ~/.cache/kiln), its own defaults (on the CPU: --max-itl-ms 50
--max-step-ms 500 --min-prefill-chunk 4; --serve-arg passes more flags through), prompts given
as random token ids (distinct per request: no prefix-cache hits), greedy, streamed over plain
HTTP/SSE. Measured, in this order:
  1. the 512-token prefill rate: a 512-token prompt, max_tokens 1, time to the first token
     (best of 3, after one warm-up request);
  2. the long prompt (--long tokens) alone: its prefill rate, the same way (best of 2);
  3. the long prompt again, and 0.3 s after it a short request (16-token prompt, 64 tokens,
     streaming): the long prompt's prefill rate with that company, the short request's time to
     first token, and its time per output token while the long prompt was still prefilling
     (mean, median, max of the gaps between its tokens before the long prompt's first token).
Targets (issue 22): long rate >= 60% of the 512-token rate; the short request's time per output
token < 100 ms meanwhile. Prints a table and the targets' verdicts; --json writes every figure
with the machine (CPU model, cores) and the load average before and after (the box may be
shared: timings are then pessimistic). A benchmark, not a test: nothing fails on a miss.
"""
import argparse
import http.client
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return [float(x) for x in f.read().split()[:3]]
    except OSError:
        return None


MODEL = {"name": "m"}


def stream(port, ids, max_tokens, marks):
    """POST /v1/completions (stream): appends the arrival time of every chunk with text or a token
    to marks; returns (t_start, t_end)."""
    body = json.dumps({"model": MODEL["name"], "prompt": ids, "max_tokens": max_tokens, "temperature": 0,
                       "stream": True, "min_tokens": max_tokens})
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    c.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        raise RuntimeError("HTTP %d: %s" % (r.status, r.read()[:300]))
    buf = b""
    while True:
        chunk = r.read1(65536) if hasattr(r, "read1") else r.read(1)
        if not chunk:
            break
        buf += chunk
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            for line in ev.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    continue
                j = json.loads(data)
                ch = j.get("choices") or []
                if ch and (ch[0].get("text") is not None):
                    marks.append(time.perf_counter())
    c.close()
    return t0, time.perf_counter()


def sched_metrics(port):
    """the scheduler's gauges from /metrics: {name[term]: value} (kiln:sched_*)"""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", "/metrics")
    out = {}
    for line in c.getresponse().read().decode().split("\n"):
        if line.startswith("kiln:sched_"):
            name, val = line.rsplit(" ", 1)
            key = name.split("{")[0][len("kiln:sched_"):]
            if 'term="' in name:
                key += "." + name.split('term="')[1].split('"')[0]
            out[key] = float(val)
    c.close()
    return out


def ttft(port, ids):
    marks = []
    t0, _ = stream(port, ids, 1, marks)
    return marks[0] - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kiln", default=os.environ.get("KILN_BIN") or os.path.join(HERE, "build", "kiln"))
    ap.add_argument("--model", default=os.environ.get("KILN_DEFAULT_GGUF") or
                    os.path.expanduser("~/.cache/kiln/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--long", type=int, default=4000)
    ap.add_argument("--short-prompt", type=int, default=512)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", default="")
    ap.add_argument("--serve-arg", action="append", default=[])
    a = ap.parse_args()
    if not os.access(a.kiln, os.X_OK):
        sys.exit("long_prompt.py: no kiln binary at %s (--kiln or KILN_BIN)" % a.kiln)
    if not os.path.exists(a.model):
        print("long_prompt.py: model %s not found (skipped)" % a.model, file=sys.stderr)
        return 0
    rng = random.Random(22)

    def ids(n):
        return [rng.randrange(1000, 40000) for _ in range(n)]

    port = free_port()
    cmd = [a.kiln, "serve", "--model", a.model, "--port", str(port), "--max-model-len", str(a.long + 256)]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    cmd += a.serve_arg
    load0 = loadavg()
    log = open(os.path.join(os.environ.get("TMPDIR", "/tmp"), "long_prompt_serve.log"), "w")
    srv = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    res = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count()}, "command": cmd, "long": a.long,
           "short_prompt": a.short_prompt}
    try:
        for _ in range(600):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if srv.poll() is not None:
                sys.exit("long_prompt.py: kiln serve exited (%s)" % log.name)
            time.sleep(0.1)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/v1/models")
        MODEL["name"] = json.loads(c.getresponse().read())["data"][0]["id"]
        ttft(port, ids(32))  # warm-up
        t512 = min(ttft(port, ids(a.short_prompt)) for _ in range(3))
        tlong_alone = min(ttft(port, ids(a.long)) for _ in range(2))
        # the long prompt with a short streaming request beside it
        long_marks, short_marks = [], []
        lt = {}

        def run_long():
            lt["t0"], lt["t1"] = stream(port, ids(a.long), 1, long_marks)

        th = threading.Thread(target=run_long)
        th.start()
        time.sleep(0.3)
        # the scheduler's budget and margin while both run (every 0.25 s)
        polls, stop = [], threading.Event()

        def poll():
            while not stop.is_set():
                try:
                    polls.append(sched_metrics(port))
                except OSError:
                    pass
                stop.wait(0.25)

        pt = threading.Thread(target=poll)
        pt.start()
        s0, s1 = stream(port, ids(16), 64, short_marks)
        stop.set()
        pt.join()
        th.join()
        tlong = long_marks[0] - lt["t0"]
        t_long_done = long_marks[0]
        during = [t for t in short_marks if t <= t_long_done]
        gaps = [y - x for x, y in zip(during, during[1:])]
        all_gaps = [y - x for x, y in zip(short_marks, short_marks[1:])]
        rate512 = a.short_prompt / t512
        res.update({
            "prefill_512_s": t512, "prefill_512_tok_s": rate512,
            "prefill_long_alone_s": tlong_alone, "prefill_long_alone_tok_s": a.long / tlong_alone,
            "prefill_long_with_short_s": tlong, "prefill_long_with_short_tok_s": a.long / tlong,
            "long_vs_512_alone": (a.long / tlong_alone) / rate512,
            "long_vs_512_with_short": (a.long / tlong) / rate512,
            "short_ttft_s": short_marks[0] - s0 if short_marks else None,
            "short_tokens": len(short_marks),
            "short_tokens_during_long_prefill": len(during),
            "short_tpot_during_mean_ms": 1e3 * statistics.mean(gaps) if gaps else None,
            "short_tpot_during_median_ms": 1e3 * statistics.median(gaps) if gaps else None,
            "short_tpot_during_max_ms": 1e3 * max(gaps) if gaps else None,
            "short_tpot_all_mean_ms": 1e3 * statistics.mean(all_gaps) if all_gaps else None,
            "sched_polls": polls,
        })
    finally:
        srv.terminate()
        try:
            srv.wait(timeout=20)
        except subprocess.TimeoutExpired:
            srv.kill()
        log.close()
    res["loadavg_before"], res["loadavg_after"] = load0, loadavg()
    print("machine: %s, %d cores; load average before %s, after %s" %
          (res["machine"]["cpu"], res["machine"]["cores"], load0, res["loadavg_after"]))
    print("prefill %5d tokens: %7.3f s  %7.1f tok/s" % (a.short_prompt, t512, rate512))
    print("prefill %5d tokens: %7.3f s  %7.1f tok/s  (%.0f%% of the %d-token rate) alone" %
          (a.long, tlong_alone, a.long / tlong_alone, 100 * res["long_vs_512_alone"], a.short_prompt))
    print("prefill %5d tokens: %7.3f s  %7.1f tok/s  (%.0f%%) beside the short request" %
          (a.long, tlong, a.long / tlong, 100 * res["long_vs_512_with_short"]))
    if gaps:
        print("short request: first token after %.3f s; %d tokens during the long prefill, time per output token "
              "mean %.1f ms, median %.1f ms, max %.1f ms" %
              (res["short_ttft_s"], len(during), res["short_tpot_during_mean_ms"],
               res["short_tpot_during_median_ms"], res["short_tpot_during_max_ms"]))
    else:
        print("short request: %d tokens, none between two others during the long prefill (first after %s s)" %
              (len(short_marks), res["short_ttft_s"]))
    if polls:
        b = [p.get("prefill_budget_tokens", 0) for p in polls]
        m = [100 * p["step_cost_margin_ratio"] for p in polls if "step_cost_margin_ratio" in p]
        print("scheduler while both ran (%d polls of /metrics): prefill budget %d .. %d rows (median %d), "
              "forecast-error margin %s, ITL target %.0f ms" %
              (len(polls), min(b), max(b), statistics.median(b),
               "%.1f .. %.1f %% of the target" % (min(m), max(m)) if m else "not exported by this kiln",
               1e3 * polls[-1].get("max_itl_seconds", 0)))
    ok_rate = res["long_vs_512_with_short"] >= 0.60
    ok_tpot = gaps and res["short_tpot_during_mean_ms"] < 100
    res["target_rate_met"], res["target_tpot_met"] = bool(ok_rate), bool(ok_tpot)
    print("targets: long rate >= 60%% of the 512 rate: %s; short TPOT < 100 ms: %s" %
          ("met" if ok_rate else "MISSED", "met" if ok_tpot else "MISSED"))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
