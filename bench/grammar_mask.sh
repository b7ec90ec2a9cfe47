#!/usr/bin/env bash
# grammar_mask.sh: the token-mask cost of constrained decoding per generated token (issue 18).
#
#   bench/grammar_mask.sh [--json FILE] [--bin PATH] [--tokenizer PATH]
#
# Runs tools/bench_grammar_mask (built with the tree: build/bench_grammar_mask, else
# build-l/...) on mistral-common's tekken_240911.json (131,072 tokens; found in the .venv of
# scripts/test.sh, or give --tokenizer). Prints its table (cold: the first request with a grammar;
# warm: a later one, frame tables shared; with and without the per-state mask cache) and writes
# the figures as JSON. A benchmark, not a test: nothing is asserted.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
json="grammar_mask.json"
bin=""
tok=""
while [ $# -gt 0 ]; do
    case "$1" in
    --json) json="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    --tokenizer) tok="$2"; shift 2 ;;
    *) echo "grammar_mask.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
if [ -z "$bin" ]; then
    for b in "$here/build/bench_grammar_mask" "$here/build-l/bench_grammar_mask"; do
        [ -x "$b" ] && { bin="$b"; break; }
    done
fi
[ -n "$bin" ] || { echo "grammar_mask.sh: build bench_grammar_mask first (make)" >&2; exit 1; }
if [ -z "$tok" ]; then
    for py in "$here/.venv/bin/python" python3; do
        tok=$("$py" -c 'import mistral_common, os; print(os.path.join(os.path.dirname(mistral_common.__file__), "data", "tekken_240911.json"))' 2>/dev/null) && [ -f "$tok" ] && break
        tok=""
    done
fi
[ -n "$tok" ] || { echo "grammar_mask.sh: no tekken_240911.json (pip install mistral-common, or --tokenizer)" >&2; exit 1; }
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores; tokenizer $tok"
"$bin" "$tok" "$json"
echo "wrote $json"
