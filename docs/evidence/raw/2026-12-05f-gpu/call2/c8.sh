#!/bin/bash
# issue 16 call 2: kiln bench, Devstral shape, dummy weights, prompt 512, 64 decode steps, batch
# 1,2,4,16: the new pack (8dfba8b: int8 GEMV blocks from RMSNorm / SwiGLU, RMSNorm's weight loads
# before its block sum) against the baseline pack (fd2201e's CUDA code), interleaved per format
# (base new new base), q4_k_m, q8_0, fp8 (online W8A8), bf16; then a CUPTI trace of the new pack's
# q4_k_m batch 1 (kernel counts a step; the baseline's: docs/evidence/raw/2026-12-05e-gpu)
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
for v in new base; do mkdir -p /tmp/$v; done
tar -xJf .gpu/pack.tar.xz -C /tmp/new & tar -xJf .gpu/pack_base.tar.xz -C /tmp/base & wait
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > $OUT/smi.txt 2>&1; cat $OUT/smi.txt
git log --oneline -1 > $OUT/commit.txt 2>&1
M=.gpu/models/devstral-small-2505-shape/config.json
R=$OUT/b; mkdir -p $R
BA="--backend cuda --load-format dummy --model $M --prompt-len 512 --warmup 1 --repeat 1 --max-num-seqs 16 --kv-memory-mb 8000"
one() { local v=$1 q=$2 r=$3 P=/tmp/$1/pack a="--dummy-quant $2" s=$(date +%s)
  [ $q = bf16 ] && a=""; [ $q = fp8 ] && a="--quantization fp8"
  LD_LIBRARY_PATH=$P/lib timeout 70 $P/kiln bench $BA --decode-steps 64 --batch 1,2,4,16 $a --json $R/${q}_${v}_$r.json > $R/${q}_${v}_$r.log 2>&1
  echo "$q $v $r rc=$? $(( $(date +%s) - s ))s: $(grep -E '^\| (1|2|4|16) \| [0-9.]+ \| [0-9.]+ \|' $R/${q}_${v}_$r.log | awk '{printf "b%s %s (%s)  ", $2, $6, $8}')" | tee -a $OUT/summary.txt; }
for q in q4_k_m q8_0 fp8 bf16; do
  if [ $(( $(date +%s) - T0 )) -gt 250 ]; then echo "time: $q skipped" | tee -a $OUT/summary.txt; continue; fi
  one base $q 1; one new $q 1; one new $q 2; one base $q 2
done
echo "bench done at $(( $(date +%s) - T0 ))s"
for v in new; do
  if [ $(( $(date +%s) - T0 )) -gt 330 ]; then echo "time: trace $v skipped"; continue; fi
  P=/tmp/$v/pack; mkdir -p $OUT/tr_$v
  LD_LIBRARY_PATH=$P/lib timeout 60 bash scripts/cuda_trace.sh --lib $P/libkiln_cupti_trace.so --out $OUT/tr_$v -- $P/kiln bench $BA --decode-steps 32 --dummy-quant q4_k_m --batch 1 > $OUT/tr_$v/run.log 2>&1
  echo "== trace $v rc=$?"; rm -f $OUT/tr_$v/kiln_trace.json
  grep -E "steps \(|quantize_x|add_rmsnorm|swiglu|check:" $OUT/tr_$v/kiln_trace_summary.txt | tee -a $OUT/summary.txt
done
cd $OUT && tar -czf logs.tgz b tr_* && rm -rf b tr_*
echo "all done at $(( $(date +%s) - T0 ))s"
