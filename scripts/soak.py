#!/usr/bin/env python3
"""soak.py: a bounded soak test of `kiln serve` on loopback (issue 21).

Starts `kiln serve` on 127.0.0.1 (a free port), fills the KV pool once (the warm-up), takes the
server's RSS, then for --minutes runs --clients concurrent clients in a loop: streaming
completions with random prompt and output lengths through the official `openai` client, a share
cancelled mid-stream (the client closes the stream), a share of malformed requests (bad JSON,
wrong types, out-of-range values) sent with `requests`, and /health checked every 2 s. At the end
it waits for the server to go idle and prints requests served, errors by kind, p50/p99 TTFT and
latency, KV blocks in use (from /metrics) and the RSS at start and end.

Exits 1 when a valid request failed, a malformed one got a 5xx or no answer, KV blocks were still
in use at the end, the RSS grew more than 10% over the warm-up's, /health failed, or the server
died. Run from the repository root with the test venv (scripts/setup.sh --test):

    .venv/bin/python scripts/soak.py                      # stories260K, 3 minutes
    .venv/bin/python scripts/soak.py --model gguf -m 2    # the default GGUF model

KILN_BIN picks the binary (default build/kiln), KILN_SHARED the fixtures (default ../shared).
CI does not run it (README "CI": a minute of soak shows little that the server tests do not, and
the ASan binary serves too slowly for a load test to mean much on 2 cores).
"""
import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import openai
import requests

ROOT = Path(__file__).resolve().parents[1]
KILN = os.environ.get("KILN_BIN", str(ROOT / "build" / "kiln"))
SHARED = Path(os.environ.get("KILN_SHARED", str(ROOT.parent / "shared")))
WORDS = ("once upon a time there was a little girl named lily she liked to play in the park with her "
         "big red ball one day the sun was hot and the dog ran fast to the tree").split()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def model_args(name):
    if name == "stories260K":
        st = SHARED / "models" / "stories260K"
        return ["--model", str(st / "stories260K.bin"), "--tokenizer", str(st / "tok512.bin")]
    if name == "gguf":
        g = os.environ.get("KILN_DEFAULT_GGUF") or str(Path.home() / ".cache/kiln/SmolLM2-135M-Instruct.Q4_1.gguf")
        return ["--model", g]
    return ["--model", name]


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def metrics(url):
    out = {}
    for line in requests.get(url + "/metrics", timeout=5).text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        k, v = line.rsplit(" ", 1)
        out[k.split("{")[0]] = float(v)
    return out


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class Soak:
    def __init__(self, url, name, seed):
        self.url, self.name = url, name
        self.client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
        self.lock = threading.Lock()
        self.served = Counter()  # ok, cancelled, malformed (answered 4xx)
        self.errors = Counter()  # kind -> count
        self.examples = {}
        self.ttft, self.lat = [], []
        self.rng = random.Random(seed)

    def err(self, kind, detail):
        with self.lock:
            self.errors[kind] += 1
            self.examples.setdefault(kind, str(detail)[:300])

    def prompt(self, r, lo=1, hi=60):
        return " ".join(r.choice(WORDS) for _ in range(r.randint(lo, hi)))

    def valid(self, r, cancel, warm=False):
        """warm: long prompts and outputs, to fill the KV pool in the warm-up"""
        max_tokens = r.randint(150, 200) if warm else r.randint(1, 96)
        t0 = time.time()
        first = None
        finish = None
        n_chunks = 0
        stop_after = r.randint(1, max(1, max_tokens // 2)) if cancel else None
        try:
            stream = self.client.completions.create(model=self.name, prompt=self.prompt(r, *((60, 120) if warm else (1, 60))), max_tokens=max_tokens,
                                                    temperature=r.choice([0, 0.7, 1.0]), stream=True)
            for ch in stream:
                if first is None:
                    first = time.time()
                n_chunks += 1
                if ch.choices and ch.choices[0].finish_reason:
                    finish = ch.choices[0].finish_reason
                if stop_after is not None and n_chunks >= stop_after:
                    stream.close()  # the client goes away mid-stream
                    break
        except Exception as e:  # noqa: BLE001 (any failure of a valid request is counted)
            self.err("valid:" + type(e).__name__, e)
            return
        t1 = time.time()
        with self.lock:
            if cancel and finish is None:
                self.served["cancelled"] += 1
                return
            if finish not in ("stop", "length"):
                self.errors["valid:no finish_reason"] += 1
                return
            self.served["ok"] += 1
            if first is not None:
                self.ttft.append(first - t0)
            self.lat.append(t1 - t0)

    def malformed(self, r):
        bodies = [
            b"{not json",
            b"",
            json.dumps({"model": self.name, "prompt": 42, "max_tokens": 4}).encode(),
            json.dumps({"model": self.name, "prompt": "hi", "max_tokens": -5}).encode(),
            json.dumps({"model": self.name, "prompt": "hi", "temperature": "hot"}).encode(),
            json.dumps({"model": self.name, "prompt": "hi", "top_p": 7}).encode(),
            json.dumps({"model": self.name, "messages": "not a list"}).encode(),
            json.dumps([1, 2, 3]).encode(),
            b'{"model": "' + b"\xff\xfe" * 20 + b'", "prompt": "x"}',
            json.dumps({"model": self.name, "prompt": "hi", "max_tokens": 10 ** 12}).encode(),
        ]
        path = r.choice(["/v1/completions", "/v1/chat/completions"])
        body = r.choice(bodies)
        try:
            resp = requests.post(self.url + path, data=body, headers={"Content-Type": "application/json"}, timeout=60)
        except requests.RequestException as e:
            self.err("malformed:no answer", e)
            return
        if resp.status_code >= 500:
            self.err(f"malformed:{resp.status_code}", body[:80])
        elif resp.status_code < 400:
            # some "malformed" bodies are legal (clamped values): only a 5xx or no answer fails
            with self.lock:
                self.served["malformed-accepted"] += 1
        else:
            with self.lock:
                self.served["malformed-4xx"] += 1

    def worker(self, seed, deadline, malformed_share, cancel_share, warm=False):
        """deadline: a one-element list, so the warm-up can end it early"""
        r = random.Random(seed)
        while time.time() < deadline[0]:
            x = r.random()
            if x < malformed_share:
                self.malformed(r)
            else:
                self.valid(r, cancel=x < malformed_share + cancel_share, warm=warm)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--minutes", type=float, default=3.0)
    ap.add_argument("--model", default="stories260K", help="stories260K (default), gguf, or a model path")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--kv-memory-mb", type=int, default=2, help="small, so that the pool fills and preempts")
    ap.add_argument("--malformed", type=float, default=0.1, help="share of malformed requests")
    ap.add_argument("--cancel", type=float, default=0.15, help="share of streams the client closes early")
    ap.add_argument("--seed", type=int, default=21)
    a = ap.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [KILN, "serve", *model_args(a.model), "--host", "127.0.0.1", "--port", str(port),
           "--served-model-name", "soak", "--kv-memory-mb", str(a.kv_memory_mb)]
    log = open(f"/tmp/kiln-soak-{port}.log", "w+b")
    print("soak:", " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    failures = []
    try:
        t_end = time.time() + 120
        while True:
            if proc.poll() is not None or time.time() > t_end:
                log.seek(0)
                print(log.read().decode(errors="replace")[-2000:])
                print("soak: FAIL: the server did not come up")
                return 1
            try:
                if requests.get(url + "/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        rss_boot = rss_kb(proc.pid)
        s = Soak(url, "soak", a.seed)
        health_fail = Counter()
        stop = threading.Event()

        def health():
            while not stop.wait(2.0):
                try:
                    if requests.get(url + "/health", timeout=10).status_code != 200:
                        health_fail["status"] += 1
                except requests.RequestException:
                    health_fail["no answer"] += 1

        # warm-up: long requests from every client until the pool was full once (or 60 s)
        m0 = metrics(url)
        total_blocks = int(m0.get("kiln:kv_blocks_total", 0))
        peak = 0
        t_warm0 = time.time()
        warm_deadline = [t_warm0 + 60]
        wth = [threading.Thread(target=s.worker, args=(1000 + i, warm_deadline, 0.0, 0.0, True), daemon=True)
               for i in range(a.clients)]
        for t in wth:
            t.start()
        while time.time() < warm_deadline[0]:
            peak = max(peak, int(metrics(url).get("kiln:kv_blocks_used", 0)))
            if total_blocks and peak >= total_blocks * 0.9:
                break
            time.sleep(0.2)
        warm_deadline[0] = time.time()  # the warm-up clients stop after their current request
        print(f"soak: warm-up filled {peak} of {total_blocks} KV blocks in {time.time() - t_warm0:.0f} s",
              flush=True)
        for t in wth:
            t.join(timeout=150)
        rss_warm = rss_kb(proc.pid)
        s.served.clear(), s.errors.clear(), s.ttft.clear(), s.lat.clear()

        hth = threading.Thread(target=health, daemon=True)
        hth.start()
        t0 = time.time()
        deadline = [t0 + a.minutes * 60]
        ths = [threading.Thread(target=s.worker, args=(a.seed * 7919 + i, deadline, a.malformed, a.cancel), daemon=True)
               for i in range(a.clients)]
        for t in ths:
            t.start()
        for t in ths:
            t.join(timeout=a.minutes * 60 + 180)
        stop.set()
        elapsed = time.time() - t0
        # idle: every block back (the prefix cache keeps unreferenced ones, not counted as used)
        used = -1
        for _ in range(50):
            mm = metrics(url)
            used = int(mm.get("kiln:kv_blocks_used", -1))
            if used == 0 and mm.get("vllm:num_requests_running", 0) == 0:
                break
            time.sleep(0.2)
        try:
            h_ok = requests.get(url + "/health", timeout=10).status_code == 200
        except requests.RequestException:
            h_ok = False
        rss_end = rss_kb(proc.pid)
        alive = proc.poll() is None

        n_valid = s.served["ok"] + s.served["cancelled"]
        print(f"soak: {a.minutes:g} min ({elapsed:.0f} s), {a.clients} clients, model {a.model}, "
              f"kv-memory-mb {a.kv_memory_mb} ({total_blocks} blocks)")
        print(f"requests served: {sum(s.served.values())} ({s.served['ok']} completed, {s.served['cancelled']} "
              f"cancelled by the client, {s.served['malformed-4xx']} malformed answered 4xx, "
              f"{s.served['malformed-accepted']} malformed accepted); {n_valid / max(elapsed, 1e-9):.1f} valid/s")
        print("errors by kind:", dict(s.errors) or "none")
        for k, v in s.examples.items():
            print(f"  e.g. {k}: {v}")
        print(f"TTFT p50 {pct(s.ttft, 50) * 1000:.0f} ms, p99 {pct(s.ttft, 99) * 1000:.0f} ms; "
              f"latency p50 {pct(s.lat, 50) * 1000:.0f} ms, p99 {pct(s.lat, 99) * 1000:.0f} ms")
        print(f"KV blocks in use at the end: {used} of {total_blocks}")
        growth = (rss_end - rss_warm) / rss_warm * 100 if rss_warm > 0 else float("inf")
        print(f"server RSS: {rss_boot / 1024:.1f} MiB at start, {rss_warm / 1024:.1f} MiB after the warm-up, "
              f"{rss_end / 1024:.1f} MiB at the end ({growth:+.1f}% over the warm-up)")
        print("/health:", "ok" if h_ok and not health_fail else f"FAILED {dict(health_fail)} (end ok: {h_ok})")

        if s.errors:
            failures.append("requests failed: " + ", ".join(f"{k} x{v}" for k, v in s.errors.items()))
        if used != 0:
            failures.append(f"{used} KV blocks still in use after the load")
        if growth > 10:
            failures.append(f"RSS grew {growth:.1f}% over the warm-up")
        if health_fail or not h_ok:
            failures.append("/health failed")
        if not alive:
            failures.append(f"the server died (rc {proc.returncode})")
        if s.served["ok"] == 0:
            failures.append("no request completed")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                failures.append("the server did not stop within 30 s of SIGTERM")
        log.close()
    print("soak:", "PASS" if not failures else "FAIL: " + "; ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
