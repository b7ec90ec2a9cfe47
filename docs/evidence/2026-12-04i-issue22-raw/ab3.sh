#!/usr/bin/env bash
# interleaved before/after pairs, avx2, batch 1,2,4,16, one repeat each; load beside each
M=/root/.cache/kiln/SmolLM2-135M-Instruct.Q4_1.gguf; O=${O:-/tmp/cpu9/ab2}
for act in ${ACTS:-f32 q8}; do for i in 1 2; do for v in before after; do
  K=/tmp/cpu9/kiln-base; [ $v = after ] && K=/tmp/cpu9/kiln-after
  l0=$(cut -d' ' -f1-3 /proc/loadavg)
  KILN_CPU_ISA=${ISA:-avx2} KILN_CPU_ACT=$act $K bench --model $M --backend cpu --threads 2 --batch ${BATCH:-1,2,4,16} --prompt-len 512 --decode-steps 64 --warmup 0 --repeat 1 --json $O/${ISA:-avx2}-$act-$v-$i.json > /dev/null 2>&1
  echo "${ISA:-avx2} $act $v $i load $l0 -> $(cut -d' ' -f1-3 /proc/loadavg)"
done; done; done
