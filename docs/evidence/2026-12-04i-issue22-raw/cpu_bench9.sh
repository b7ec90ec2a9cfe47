#!/usr/bin/env bash
# issue 22, ninth session: kiln before (5365e6a) and after (this branch), AVX-512 / AVX2 forced,
# f32 / q8 activations, one run; load beside every figure
set -u
M=${M:-/root/.cache/kiln/SmolLM2-135M-Instruct.Q4_1.gguf}
O=${O:-/tmp/cpu9/final}; mkdir -p $O
B=${B:-/tmp/cpu9/kiln-base}; A=${A:-/tmp/cpu9/kiln-after}
{ date -u; uptime; lscpu | grep -E "Model name|^CPU\(s\)" ; } > $O/env.txt
for isa in avx512 avx2; do for act in f32 q8; do for v in before after; do
  K=$B; [ $v = after ] && K=$A
  l0=$(cut -d' ' -f1-3 /proc/loadavg); s=$(date +%s)
  KILN_CPU_ISA=$isa KILN_CPU_ACT=$act $K bench --model $M --backend cpu --threads 2 --batch 1,2,4,8,16 --prompt-len 512 --decode-steps 64 --warmup 1 --repeat 2 --json $O/kiln-$v-$isa-$act.json > $O/kiln-$v-$isa-$act.md 2>&1
  echo "kiln $v $isa $act rc=$? $(( $(date +%s) - s ))s load before $l0 after $(cut -d' ' -f1-3 /proc/loadavg) | $(uptime)"
done; done; done
uptime >> $O/env.txt
