#!/usr/bin/env bash
# serve_sweep.sh: `kiln bench serve` against `kiln serve` at several Poisson request rates, with
# the chunked-prefill ITL policy off and on (docs/scheduling.md), into one JSON + a Markdown
# table. Self-contained: the local kiln binary, 127.0.0.1, bash + curl + python3 (standard
# library only); no network.
#
#   bench/serve_sweep.sh [--kiln PATH] [--rates "1 2 4"] [--itl "0 40"] [--requests N]
#                        [--input-len 1000+-500] [--output-len 200+-100] [--concurrency N]
#                        [--warmup N] [--port P] [--out DIR] [--vocab N] [--seed S]
#                        -- <kiln serve arguments>
#
# Everything after -- goes to `kiln serve` as given, e.g. on the GPU:
#   bench/serve_sweep.sh --rates "2 4 8 12" --itl "0 30" -- \
#       --backend cuda --load-format dummy --model ../shared/models/devstral-small-2505-shape/config.json \
#       --max-num-seqs 256 --max-batch-tokens 8192 --max-model-len 4096
# --itl lists the policy settings: 0 = off (every step's budget is --max-batch-tokens: also no
# --max-step-ms, which kiln serve on the CPU otherwise defaults to 500), a number
# = --max-itl-ms of that many ms (the step-cost model learns from the run; add --step-cost and
# --min-prefill-chunk after -- to calibrate it). Each setting gets a fresh server (its /metrics
# start at zero), a warmup of --warmup requests, then one `kiln bench serve` per rate (the
# default concurrency of a finite rate: every request may be in flight, as vLLM's default).
# /metrics is scraped after every rate (the kiln:sched_* counters are cumulative per server).
# Prompts: seed + i for the i-th rate (each rate its own prompts, so the prefix cache serves no
# repeated set; every policy setting the same ones), another seed for the warmup.
#
# Output under --out (default bench-out/serve_sweep-<UTC time>):
#   itl<X>_rate<R>.json   kiln bench serve's JSON        itl<X>_rate<R>.metrics  /metrics after it
#   itl<X>.serve.log      the server's stderr            sweep.json, sweep.md    the summary
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
kiln="${KILN_BIN:-}"
rates="1 2 4"
itls="0 40"
requests=200
input_len="1000+-500"
output_len="200+-100"
concurrency=""
warmup=4
port=""
out=""
vocab=""
seed=0

usage() { sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --kiln) kiln="$2"; shift 2 ;;
        --rates) rates="$2"; shift 2 ;;
        --itl) itls="$2"; shift 2 ;;
        --requests) requests="$2"; shift 2 ;;
        --input-len) input_len="$2"; shift 2 ;;
        --output-len) output_len="$2"; shift 2 ;;
        --concurrency) concurrency="$2"; shift 2 ;;
        --warmup) warmup="$2"; shift 2 ;;
        --port) port="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --vocab) vocab="$2"; shift 2 ;;
        --seed) seed="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        --) shift; break ;;
        *) echo "serve_sweep.sh: unknown option $1 (kiln serve arguments go after --)" >&2; usage >&2; exit 2 ;;
    esac
done
serve_args=("$@")

if [ -z "$kiln" ]; then
    for c in "$root/build/kiln" "$root/build-l/kiln" "$root/build-cuda/kiln"; do
        if [ -x "$c" ]; then kiln="$c"; break; fi
    done
fi
[ -n "$kiln" ] && [ -x "$kiln" ] || { echo "serve_sweep.sh: no kiln binary (build it, or --kiln PATH / KILN_BIN)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "serve_sweep.sh: python3 is needed for the summary" >&2; exit 2; }
command -v curl >/dev/null || { echo "serve_sweep.sh: curl is needed (health check, /metrics)" >&2; exit 2; }
if [ -z "$port" ]; then
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
fi
[ -n "$out" ] || out="bench-out/serve_sweep-$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$out"
base="http://127.0.0.1:$port"

srv_pid=""
stop_server() {
    if [ -n "$srv_pid" ] && kill -0 "$srv_pid" 2>/dev/null; then
        kill -TERM "$srv_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$srv_pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$srv_pid" 2>/dev/null; then
            kill -TERM "$srv_pid" 2>/dev/null || true   # a second signal aborts running requests
            sleep 1
            kill -KILL "$srv_pid" 2>/dev/null || true
        fi
        wait "$srv_pid" 2>/dev/null || true
    fi
    srv_pid=""
}
trap stop_server EXIT
trap 'stop_server; exit 130' INT TERM

start_server() { # $1: itl ms (0 = off)
    local itl="$1" extra=()
    # off: no budget at all (kiln serve on the CPU otherwise defaults to --max-itl-ms 50
    # --max-step-ms 500); on: that ITL target (the CPU's default step budget stays unless
    # --max-step-ms 0 comes after --)
    if [ "$itl" != "0" ]; then extra=(--max-itl-ms "$itl"); else extra=(--max-itl-ms 0 --max-step-ms 0); fi
    "$kiln" serve --host 127.0.0.1 --port "$port" --max-queue 100000 "${serve_args[@]}" "${extra[@]}" \
        2>"$out/itl${itl}.serve.log" >/dev/null &
    srv_pid=$!
    # loading a large model (or capturing CUDA graphs) takes a while
    for _ in $(seq 1 1800); do
        if curl -sf "$base/health" >/dev/null 2>&1; then return 0; fi
        if ! kill -0 "$srv_pid" 2>/dev/null; then break; fi
        sleep 0.5
    done
    echo "serve_sweep.sh: kiln serve did not come up (see $out/itl${itl}.serve.log):" >&2
    tail -5 "$out/itl${itl}.serve.log" >&2 || true
    exit 1
}

bench_args=(--url "$base" --input-len "$input_len" --output-len "$output_len")
[ -n "$vocab" ] && bench_args+=(--vocab "$vocab")
[ -n "$concurrency" ] && bench_args+=(--concurrency "$concurrency")

for itl in $itls; do
    echo "== policy: $([ "$itl" = 0 ] && echo off || echo "max ITL $itl ms")" >&2
    start_server "$itl"
    if [ "$warmup" -gt 0 ]; then
        "$kiln" bench serve "${bench_args[@]}" --seed $((seed + 1000003)) --requests "$warmup" --concurrency "$warmup" \
            >/dev/null 2>&1 || {
            echo "serve_sweep.sh: the warmup failed" >&2; exit 1; }
    fi
    k=0
    for r in $rates; do
        echo "   rate $r req/s, $requests requests" >&2
        # every rate its own prompts (the prefix cache would serve a repeated set), the same
        # prompts for every policy setting (seed + the rate's index)
        "$kiln" bench serve "${bench_args[@]}" --seed $((seed + k)) --rate "$r" --requests "$requests" \
            --json "$out/itl${itl}_rate${r}.json" > "$out/itl${itl}_rate${r}.txt"
        curl -sf "$base/metrics" > "$out/itl${itl}_rate${r}.metrics" || true
        k=$((k + 1))
    done
    stop_server
done

# the summary: sweep.json (every run's bench JSON + the policy's metrics) and sweep.md
commit="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
python3 - "$out" "$kiln" "$commit" "$requests" "$input_len" "$output_len" "$warmup" "$rates" "$itls" "${serve_args[@]}" <<'EOF'
import json, os, re, sys, datetime
out, kiln, commit, requests, input_len, output_len, warmup, rates, itls = sys.argv[1:10]
serve_args = sys.argv[10:]

def metrics(path):
    """kiln:sched_* and a few vLLM counters from a /metrics text (labels kept as a suffix)."""
    m = {}
    if not os.path.exists(path):
        return m
    for line in open(path):
        if line.startswith("#"):
            continue
        g = re.match(r'^([a-z_:]+)\{([^}]*)\} (\S+)$', line.strip())
        if not g:
            continue
        name, labels, val = g.groups()
        if not (name.startswith("kiln:sched_") or name in ("vllm:num_preemptions_total", "kiln:engine_steps_total")):
            continue
        term = re.search(r'term="([^"]+)"', labels)
        key = name.split(":", 1)[1] + ("_" + term.group(1) if term else "")
        m[key] = float(val)
    return m

runs, prev = [], {}
for itl in itls.split():
    prev = {}
    for r in rates.split():
        stem = os.path.join(out, f"itl{itl}_rate{r}")
        if not os.path.exists(stem + ".json"):
            continue
        b = json.load(open(stem + ".json"))
        m = metrics(stem + ".metrics")
        # per-rate deltas of the cumulative counters (one server per policy setting)
        d = {k: m.get(k, 0) - prev.get(k, 0) for k in ("sched_mixed_steps_total", "sched_itl_limited_steps_total",
                                                       "engine_steps_total", "num_preemptions_total")}
        prev = m
        runs.append({"max_itl_ms": float(itl), "rate": float(r), "bench": b, "metrics": m, "deltas": d})

doc = {
    "schema": "kiln.serve_sweep.v1",
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "commit": commit,
    "kiln": kiln,
    "serve_args": serve_args,
    "requests": int(requests), "input_len": input_len, "output_len": output_len, "warmup": int(warmup),
    "rates": [float(x) for x in rates.split()], "max_itl_ms": [float(x) for x in itls.split()],
    "runs": runs,
}
json.dump(doc, open(os.path.join(out, "sweep.json"), "w"), indent=2)

def f(x, nd=1):
    return "-" if x is None else f"{x:.{nd}f}"

lines = [
    "# kiln serve sweep: chunked-prefill ITL policy off / on",
    "",
    f"{doc['date']}, commit {commit}. `kiln serve {' '.join(serve_args)}`; `kiln bench serve`: {requests} requests "
    f"per rate, Poisson arrivals, input {input_len}, output {output_len} tokens (ignore_eos), greedy, streaming; "
    f"{warmup} warmup requests per server. Latencies in ms, from the client.",
    "",
    "| policy | rate (req/s) | req/s | out tok/s | mean conc. | TTFT p50 | TTFT p99 | ITL p50 | ITL p99 | TPOT mean | "
    "E2E p50 | mixed steps | limited steps | preempt. | fit (ms: fixed + /prefill row + /decode row) |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
]
for x in runs:
    b, m, d = x["bench"], x["metrics"], x["deltas"]
    pol = "off" if x["max_itl_ms"] == 0 else f"ITL <= {x['max_itl_ms']:g} ms"
    fit = "-"
    if "sched_step_cost_seconds_fixed" in m:
        fit = (f"{1e3 * m['sched_step_cost_seconds_fixed']:.2f} + {1e3 * m['sched_step_cost_seconds_prefill_token']:.4f} p"
               f" + {1e3 * m['sched_step_cost_seconds_decode_row']:.4f} d")
    lines.append(f"| {pol} | {x['rate']:g} | {f(b.get('request_throughput'), 2)} | {f(b.get('output_throughput'))} | "
                 f"{f(b.get('mean_concurrency'))} | {f(b.get('p50_ttft_ms'))} | {f(b.get('p99_ttft_ms'))} | "
                 f"{f(b.get('p50_itl_ms'))} | {f(b.get('p99_itl_ms'))} | {f(b.get('mean_tpot_ms'))} | "
                 f"{f(b.get('p50_e2el_ms'))} | {int(d['sched_mixed_steps_total'])} | {int(d['sched_itl_limited_steps_total'])} | "
                 f"{int(d['num_preemptions_total'])} | {fit} |")
lines += ["", "mixed steps: steps with both prefill and decode rows; limited steps: those whose prefill the ITL target "
          "cut (kiln:sched_itl_limited_steps_total); both per rate. Failed requests: " +
          ", ".join(f"{int(x['bench'].get('failed', 0))}" for x in runs) + "."]
open(os.path.join(out, "sweep.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
echo "serve_sweep.sh: wrote $out/sweep.json and $out/sweep.md" >&2
