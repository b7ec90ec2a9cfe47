#!/usr/bin/env bash
# startup.sh: the fixed costs of a whole `kiln generate` process on a tiny model (issue 22).
#
#   bench/startup.sh [--runs N] [--json FILE] [--kiln PATH] [--model PATH --tokenizer PATH]
#                    [--prompt TEXT] [-n TOKENS] [--threads N] [--runc PATH]
#
# Default: stories260K (../shared/models/stories260K, KILN_SHARED overrides ../shared), greedy,
# prompt "Once upon a time", 256 tokens, the build's kiln (build/kiln, else build-s/kiln).
# Runs, interleaved, N times each (best of N is reported: the minimum is the figure least
# disturbed by other work on a shared machine):
#   cold1   the whole process generating 1 token: start-up (exec, load, pools, KV) + prefill
#   full    the whole process generating -n tokens (the issue's figure)
# and derives the steady per-step time (full - cold1) / (n - 1). Also the peak RSS of each.
# --runc PATH: also time llama2.c's `run` (karpathy/llama2.c run.c, built by the user, e.g.
# `gcc -Ofast -fopenmp -march=native -o run run.c -lm`; not part of kiln) on the same model,
# prompt and number of generated tokens, interleaved with kiln's runs, and say whether the two
# greedy texts agree (the issue's comparison: kiln at least as fast, best of N each).
# Prints a table; --json writes the figures. A benchmark, not a test: nothing is asserted.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
shared="${KILN_SHARED:-$here/../shared}"
kiln=""
runs=10
json=""
model="$shared/models/stories260K/stories260K.bin"
tok="$shared/models/stories260K/tok512.bin"
prompt="Once upon a time"
ntok=256
threads=""
runc=""
while [ $# -gt 0 ]; do
    case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --json) json="$2"; shift 2 ;;
    --kiln) kiln="$2"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    --tokenizer) tok="$2"; shift 2 ;;
    --prompt) prompt="$2"; shift 2 ;;
    -n) ntok="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --runc) runc="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "startup.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
done
if [ -z "$kiln" ]; then
    for c in "$here/build/kiln" "$here/build-s/kiln"; do [ -x "$c" ] && { kiln="$c"; break; }; done
fi
[ -n "$kiln" ] && [ -x "$kiln" ] || { echo "startup.sh: no kiln binary (build first, or --kiln PATH)" >&2; exit 2; }
[ -r "$model" ] || { echo "startup.sh: model $model not found (skipped)" >&2; exit 0; }
[ "$ntok" -ge 2 ] || { echo "startup.sh: -n must be >= 2" >&2; exit 2; }

if [ -n "$runc" ] && [ ! -x "$runc" ]; then echo "startup.sh: --runc $runc is not an executable" >&2; exit 2; fi

exec python3 - "$kiln" "$model" "$tok" "$prompt" "$ntok" "$runs" "$json" "$threads" "$runc" <<'EOF'
import json, os, platform, re, subprocess, sys, time
kiln, model, tok, prompt, ntok, runs, out, threads, runc = sys.argv[1:10]
ntok, runs = int(ntok), int(runs)
def cmd(n):
    c = [kiln, "generate", "--model", model, "--tokenizer", tok, "-n", str(n), "--temperature", "0", "--prompt", prompt]
    if threads: c += ["--threads", threads]
    return c
def timed(c):
    t = time.perf_counter()
    p = subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    if status != 0: sys.exit("startup.sh: failed: " + " ".join(c))
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024.0
def once(n): return timed(cmd(n))
res = {"cold1": [], "full": []}
runc_cmd = None
if runc:
    # run.c's -n counts every forward pass, the prompt's included: BOS, then its prompt tokens
    # (kiln's prompt count includes the BOS), so -n = generated + kiln's prompt count - 1.
    r = subprocess.run(cmd(ntok), capture_output=True, text=True, check=True)
    m = re.search(r"(\d+) prompt tokens", r.stderr)
    if not m: sys.exit("startup.sh: no prompt-token count in kiln's output")
    runc_cmd = [runc, model, "-z", tok, "-t", "0", "-n", str(ntok + int(m.group(1)) - 1), "-i", prompt]
    rr = subprocess.run(runc_cmd, capture_output=True, text=True, check=True)
    same_text = (prompt + r.stdout).strip() == rr.stdout.strip()   # run.c echoes the prompt
    res["runc"] = []
for _ in range(runs):   # interleaved, so slow phases of the machine hit both
    res["cold1"].append(once(1))
    res["full"].append(once(ntok))
    if runc_cmd: res["runc"].append(timed(runc_cmd))
best = {k: min(v, key=lambda r: r[0]) for k, v in res.items()}
step_ms = (best["full"][0] - best["cold1"][0]) / (ntok - 1) * 1e3
cpu = "?"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"): cpu = line.split(":", 1)[1].strip(); break
except OSError: pass
fig = {
    "kiln": kiln, "model": os.path.basename(model), "prompt": prompt, "tokens": ntok, "runs": runs,
    "machine": {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
                "loadavg": os.getloadavg()},
    "cold1_wall_s": best["cold1"][0], "cold1_cpu_s": best["cold1"][1], "cold1_rss_mb": best["cold1"][2],
    "full_wall_s": best["full"][0], "full_cpu_s": best["full"][1], "full_rss_mb": best["full"][2],
    "full_wall_median_s": sorted(r[0] for r in res["full"])[runs // 2],
    "step_ms": step_ms, "tok_per_s": 1e3 / step_ms if step_ms > 0 else None,
}
if runc_cmd:
    fig.update({"runc_cmd": runc_cmd, "runc_wall_s": best["runc"][0], "runc_cpu_s": best["runc"][1],
                "runc_rss_mb": best["runc"][2],
                "runc_wall_median_s": sorted(r[0] for r in res["runc"])[runs // 2],
                "runc_same_text": same_text})
print(f"kiln startup bench: {fig['model']}, greedy, {ntok} tokens, best of {runs} ({cpu}, {os.cpu_count()} cores, load {fig['machine']['loadavg'][0]:.2f})")
print(f"{'figure':<34}{'wall':>10}{'cpu':>10}{'peak RSS':>11}")
print(f"{'cold process, 1 token':<34}{fig['cold1_wall_s']*1e3:>8.1f}ms{fig['cold1_cpu_s']*1e3:>8.1f}ms{fig['cold1_rss_mb']:>8.1f} MB")
print(f"{'whole process, %d tokens' % ntok:<34}{fig['full_wall_s']*1e3:>8.1f}ms{fig['full_cpu_s']*1e3:>8.1f}ms{fig['full_rss_mb']:>8.1f} MB")
print(f"{'  (median of the %d)' % runs:<34}{fig['full_wall_median_s']*1e3:>8.1f}ms")
if runc_cmd:
    print(f"{'llama2.c run, %d tokens' % ntok:<34}{fig['runc_wall_s']*1e3:>8.1f}ms{fig['runc_cpu_s']*1e3:>8.1f}ms{fig['runc_rss_mb']:>8.1f} MB")
    print(f"{'  (median of the %d)' % runs:<34}{fig['runc_wall_median_s']*1e3:>8.1f}ms")
    print(f"kiln / run.c whole process (best of {runs}): {fig['full_wall_s'] / fig['runc_wall_s']:.2f}x the time; greedy texts {'identical' if same_text else 'DIFFER'}")
print(f"{'steady step (full-cold)/(n-1)':<34}{step_ms:>8.3f}ms   ({fig['tok_per_s']:.0f} tok/s)" if step_ms > 0 else "steady step: below the noise")
if out:
    with open(out, "w") as f: json.dump(fig, f, indent=1)
    print("wrote", out)
EOF
