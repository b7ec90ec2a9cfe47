#!/usr/bin/env bash
# session 10: kiln (AVX-512 / AVX2 forced, f32 / q8 activations, f32 / f16 KV) beside llama.cpp's CPU build, same file, one run
set -u
M=${M:-/root/.cache/kiln/SmolLM2-135M-Instruct.Q4_1.gguf}
K=/work/main/build/kiln
O=${O:-/work/llcpp/s10}; mkdir -p $O
L=${L:-~/llamacpp-cpu/build2/bin}
{ date -u; uptime; lscpu | grep -E "Model name|^CPU\(s\)|Flags" | cut -c1-160; git -C /work/main log -1 --oneline; } > $O/env.txt
for cfg in avx512:f32:auto avx512:q8:auto avx512:q8:f16 avx2:f32:auto avx2:q8:auto avx2:q8:f16; do
  IFS=: read isa act kv <<< "$cfg"
  s=$(date +%s)
  KILN_CPU_ISA=$isa KILN_CPU_ACT=$act $K bench --model $M --backend cpu --threads 2 --batch 1,2,4,8,16 --prompt-len 512 --decode-steps 64 --warmup 1 --repeat 2 --kv-cache-dtype $kv --json $O/kiln-$isa-$act-$kv.json > $O/kiln-$isa-$act-$kv.md 2>&1
  echo "kiln $isa $act kv $kv rc=$? $(( $(date +%s) - s ))s load $(cut -d' ' -f1-3 /proc/loadavg)"
done
s=$(date +%s); $L/llama-bench -m $M -t 2 -p 512 -n 64 -r 3 > $O/llama-bench.md 2>&1; echo "llama-bench rc=$? $(( $(date +%s) - s ))s"
s=$(date +%s); $L/llama-batched-bench -m $M -t 2 -c 16384 -b 2048 -ub 512 -npp 512 -ntg 64 -npl 1,2,4,8,16 > $O/llama-batched.md 2>&1; echo "llama-batched rc=$? $(( $(date +%s) - s ))s"
(cd /work/main && bash bench/startup.sh --runc /work/llama2c/run --runs 10 --json $O/startup.json > $O/startup.txt 2>&1); echo "startup rc=$?"
(cd /work/main && timeout 900 python3 bench/long_prompt.py --json $O/long_prompt.json > $O/long_prompt.txt 2>&1); echo "long_prompt rc=$?"
(cd /work/main && timeout 900 python3 bench/long_prompt.py --serve-arg=--kv-cache-dtype --serve-arg=f16 --json $O/long_prompt_f16.json > $O/long_prompt_f16.txt 2>&1); echo "long_prompt f16 rc=$?"
uptime >> $O/env.txt
