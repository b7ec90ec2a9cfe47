#!/usr/bin/env bash
# moe_vs_dense.sh: Mixtral-8x7B's mixture of experts on the GPU against a dense model of the same
# active size (issue 19), both with dummy bf16 weights filled on the device:
#   moe    bench/shapes/mixtral-8x7b-shape: 32 layers, dim 4096, 8 experts of 14336, top 2,
#          32 heads / 8 KV heads, head_dim 128, vocab 32000 (46.7 B parameters, 87 GiB bf16:
#          fits an H200's 139 GiB with the KV pool, so the full 32 layers are kept)
#   dense  bench/shapes/mixtral-8x7b-dense-shape: the same, one FFN of 2 x 14336 = 28672
#          (12.9 B parameters: the weights a Mixtral token multiplies)
#
#   bench/moe_vs_dense.sh [--kiln PATH] [--out DIR] [--layers N] [--batch 1,16,64]
#                         [--prompt-len 128] [--decode-steps 32] [--prefill-batch 4]
#                         [--prefill-len 512] [--repeat 2] [--backend cuda]
#                         [--configs MOE.json DENSE.json]
#
# Per model: `kiln bench --backend cuda --load-format dummy` at the decode batches (decode tok/s,
# step latency, % of the HBM floor; the bench's MoE floor counts the experts a step's tokens
# pick) and one prefill run (prefill-batch x prefill-len tokens). Writes DIR/{moe,dense}-
# {decode,prefill}.json (kiln.bench.v1), DIR/moe_vs_dense.json (the figures side by side) and
# prints a table (kiln bench's own tables in DIR/*.log). --layers N rewrites num_hidden_layers in copies of the configs (less memory,
# less time). About 30 s on an H200 (decode: moe.cu's decode kernel; prefill: its tensor-core
# GEMM, docs/moe.md). A benchmark, not a test: nothing is asserted.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
kiln=""
out="bench-moe-out"
layers=""
batch="1,16,64"
plen=128
steps=32
pf_batch=4
pf_len=512
repeat=2
backend=cuda
cfg_moe="$here/bench/shapes/mixtral-8x7b-shape/config.json"
cfg_dense="$here/bench/shapes/mixtral-8x7b-dense-shape/config.json"
while [ $# -gt 0 ]; do
    case "$1" in
    --kiln) kiln="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --layers) layers="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    --prompt-len) plen="$2"; shift 2 ;;
    --decode-steps) steps="$2"; shift 2 ;;
    --prefill-batch) pf_batch="$2"; shift 2 ;;
    --prefill-len) pf_len="$2"; shift 2 ;;
    --repeat) repeat="$2"; shift 2 ;;
    --backend) backend="$2"; shift 2 ;;
    --configs) cfg_moe="$2"; cfg_dense="$3"; shift 3 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "moe_vs_dense.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
done
if [ -z "$kiln" ]; then
    for k in "$here/build-c/kiln" "$here/build-cuda/pack/kiln" "$here/build-cuda/kiln" "$here/build/kiln" \
             "$here/build-rel/kiln"; do
        [ -x "$k" ] && { kiln="$k"; break; }
    done
fi
[ -n "$kiln" ] && [ -x "$kiln" ] || { echo "moe_vs_dense.sh: no kiln binary (--kiln PATH)" >&2; exit 2; }
mkdir -p "$out"
if [ -n "$layers" ]; then
    for n in moe dense; do
        src=$([ $n = moe ] && echo "$cfg_moe" || echo "$cfg_dense")
        mkdir -p "$out/$n-shape"
        sed -E "s/\"num_hidden_layers\": *[0-9]+/\"num_hidden_layers\": $layers/" "$src" > "$out/$n-shape/config.json"
    done
    cfg_moe="$out/moe-shape/config.json"
    cfg_dense="$out/dense-shape/config.json"
fi
t0=$(date +%s)
for n in moe dense; do
    cfg=$([ $n = moe ] && echo "$cfg_moe" || echo "$cfg_dense")
    echo "== $n: decode at batch $batch (prompt $plen, $steps steps)" >&2
    "$kiln" bench --backend "$backend" --load-format dummy --model "$cfg" --batch "$batch" --prompt-len "$plen" \
        --decode-steps "$steps" --warmup 1 --repeat "$repeat" --quiet --json "$out/$n-decode.json" > "$out/$n-decode.log"
    echo "== $n: prefill, batch $pf_batch x $pf_len tokens" >&2
    "$kiln" bench --backend "$backend" --load-format dummy --model "$cfg" --batch "$pf_batch" --prompt-len "$pf_len" \
        --decode-steps 2 --warmup 1 --repeat "$repeat" --quiet --json "$out/$n-prefill.json" > "$out/$n-prefill.log"
done
echo "== done in $(( $(date +%s) - t0 )) s" >&2
python3 - "$out" <<'EOF'
import json, os, sys
out = sys.argv[1]
def load(n, k):
    with open(os.path.join(out, f"{n}-{k}.json")) as f:
        return json.load(f)
res = {"schema": "kiln.moe_vs_dense.v1", "models": {}}
for n in ("moe", "dense"):
    d, p = load(n, "decode"), load(n, "prefill")
    m = d["model"]
    res["models"][n] = {
        "config": m.get("path"), "layers": m.get("n_layers"), "params": m.get("params"),
        "weight_bytes": m.get("weight_bytes"), "card": d["machine"].get("card"),
        "decode": [{"batch": r["batch"], "decode_tok_s": r["decode_tok_s"]["median"],
                    "step_ms": r["step_latency_ms"]["median"], "floor_fraction": r.get("decode_floor_fraction")}
                   for r in d["results"]],
        "prefill": [{"batch": r["batch"], "prompt_len": p["config"]["prompt_len"],
                     "prefill_tok_s": r["prefill_tok_s"]["median"], "ttft_ms": r["ttft_ms"]["median"]}
                    for r in p["results"]],
    }
with open(os.path.join(out, "moe_vs_dense.json"), "w") as f:
    json.dump(res, f, indent=1)
M, D = res["models"]["moe"], res["models"]["dense"]
print(f"card: {M['card']}; moe {M['params'] / 1e9:.1f} B params ({M['weight_bytes'] / 2**30:.1f} GiB), "
      f"dense {D['params'] / 1e9:.1f} B ({D['weight_bytes'] / 2**30:.1f} GiB), {M['layers']} layers\n")
print("| figure | moe (Mixtral-8x7B shape) | dense (same active size) | moe / dense |")
print("|---|---|---|---|")
for a, b in zip(M["decode"], D["decode"]):
    r = a["decode_tok_s"] / b["decode_tok_s"] if b["decode_tok_s"] else float("nan")
    fa = f" ({100 * a['floor_fraction']:.0f}% of floor)" if a.get("floor_fraction") else ""
    fb = f" ({100 * b['floor_fraction']:.0f}% of floor)" if b.get("floor_fraction") else ""
    print(f"| decode B={a['batch']} tok/s (step ms) | {a['decode_tok_s']:.1f} ({a['step_ms']:.2f}){fa} | "
          f"{b['decode_tok_s']:.1f} ({b['step_ms']:.2f}){fb} | {r:.2f} |")
for a, b in zip(M["prefill"], D["prefill"]):
    r = a["prefill_tok_s"] / b["prefill_tok_s"] if b["prefill_tok_s"] else float("nan")
    print(f"| prefill B={a['batch']} x {a['prompt_len']} tok/s | {a['prefill_tok_s']:.0f} | {b['prefill_tok_s']:.0f} | "
          f"{r:.2f} |")
EOF
