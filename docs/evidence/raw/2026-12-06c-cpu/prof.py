#!/usr/bin/env python3
# profile kiln serve's mixed steps: a 4,000-token prompt, then a streaming short request beside it;
# perf record -g on the server while the short request streams.
import sys, os, time, threading, random, subprocess, json
sys.path.insert(0, "/work/main/bench")
import long_prompt as lp
kiln = sys.argv[1]; out = sys.argv[2]; extra = sys.argv[3:]
model = os.path.expanduser("~/.cache/kiln/SmolLM2-135M-Instruct.Q4_1.gguf")
port = lp.free_port()
env = dict(os.environ, KILN_LOG="debug")
log = open(out + ".serve.log", "w")
srv = subprocess.Popen([kiln, "serve", "--model", model, "--port", str(port), "--max-model-len", "4256"] + extra,
                       stdout=log, stderr=subprocess.STDOUT, env=env)
for _ in range(300):
    try:
        lp.sched_metrics(port); break
    except Exception:
        time.sleep(0.1)
import http.client
c = http.client.HTTPConnection("127.0.0.1", port, timeout=5); c.request("GET", "/v1/models")
lp.MODEL["name"] = json.loads(c.getresponse().read())["data"][0]["id"]
rng = random.Random(7)
ids = lambda n: [rng.randrange(100, 40000) for _ in range(n)]
lp.ttft(port, ids(64))
res = {}
def longreq():
    m = []; t0, _ = lp.stream(port, ids(4000), 1, m); res["long_ttft"] = m[0] - t0
th = threading.Thread(target=longreq); th.start()
time.sleep(0.5)
perf = None if os.environ.get("NOPERF") else subprocess.Popen(["perf", "record", "-g", "-F", "999", "-o", out + ".data", "-p", str(srv.pid)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
m = []
t0, t1 = lp.stream(port, ids(16), 64, m)
if perf: perf.send_signal(2); perf.wait()
th.join()
gaps = [b - a for a, b in zip(m, m[1:])]
print("short: %d tokens, mean gap %.1f ms; long ttft %.2f s" % (len(m), 1000 * sum(gaps) / max(1, len(gaps)), res.get("long_ttft", -1)))
srv.terminate(); srv.wait()
