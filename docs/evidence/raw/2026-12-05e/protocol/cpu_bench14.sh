#!/bin/bash
# issue 22 protocol, fourteenth session: default model (Q4_1) and the same model quantized to
# q4_k_m by kiln quantize (Q5_0 / Q4_K / Q6_K / Q8_0), prompt 512, 64 decode steps, batch 1..16,
# 2 threads; kiln q8 (packed, default) twice and f32 once per file, llama.cpp's CPU build beside.
cd /work/main
R=docs/evidence/raw/2026-12-05e/protocol
mkdir -p $R
L=~/llamacpp-cpu/build/bin
declare -A F=([q4_1]=$HOME/.cache/kiln/SmolLM2-135M-Instruct.Q4_1.gguf [q4_k_m]=/tmp/qm/smol_q4km.gguf)
{ date -u; grep -m1 "model name" /proc/cpuinfo; nproc; uptime; git log --oneline -1; } > $R/env.txt
kb() { # name file env...
  local n=$1 m=$2; shift 2
  env "$@" ./build/kiln bench --model $m --batch 1,2,4,8,16 --prompt-len 512 --decode-steps 64 --warmup 1 --repeat 2 --threads 2 --json $R/$n.json > $R/$n.md 2>&1
  echo "== $n"; grep -E "Floors|^\| (1|2|4|8|16) \| [0-9]" $R/$n.md | head -6
}
for round in 1 2; do
  for f in q4_1 q4_k_m; do kb ${f}_q8_$round ${F[$f]} KILN_CPU_ACT=q8; done
done
for f in q4_1 q4_k_m; do kb ${f}_f32 ${F[$f]} KILN_CPU_ACT=f32; done
for f in q4_1 q4_k_m; do
  $L/llama-bench -m ${F[$f]} -t 2 -p 512 -n 64 > $R/llama-bench-$f.txt 2>&1; echo "== llama-bench $f"; grep -E "pp512|tg64" $R/llama-bench-$f.txt
  $L/llama-batched-bench -m ${F[$f]} -c 9216 -b 2048 -ub 512 -npp 512 -ntg 64 -npl 1,2,4,8,16 -t 2 > $R/llama-batched-bench-$f.txt 2>&1
  echo "== llama-batched-bench $f"; grep -E "^\|" $R/llama-batched-bench-$f.txt | head -10
done
