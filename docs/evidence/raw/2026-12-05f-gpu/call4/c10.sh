#!/bin/bash
# final pack (e97f593): the whole GPU suite with memcheck and the I1 trace check, then kiln bench
# bf16 / fp8 / q4_k_m, Devstral shape, dummy weights (issue 16 / 17 / 24 figures on this card)
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
mkdir -p build-cuda && tar -xJf .gpu/pack.tar.xz -C build-cuda
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $OUT/smi.txt 2>&1; cat $OUT/smi.txt
KILN_CUDA_TRACE=1 OUT=$OUT/cuda_check timeout 330 bash scripts/cuda_check.sh > $OUT/suite.txt 2>&1; echo "suite rc=$?"; tail -32 $OUT/suite.txt
echo "suite at $(( $(date +%s) - T0 ))s"
P=build-cuda/pack; export LD_LIBRARY_PATH=$PWD/$P/lib
M=.gpu/models/devstral-small-2505-shape/config.json
B="$P/kiln bench --backend cuda --load-format dummy --model $M --prompt-len 512 --decode-steps 64 --warmup 1 --repeat 1 --max-num-seqs 64 --kv-memory-mb 16000"
for q in bf16 fp8 q4_k_m; do
  X=""; [ $q = fp8 ] && X="--quantization fp8"; [ $q = q4_k_m ] && X="--dummy-quant q4_k_m"
  timeout 100 $B $X --batch 1,16,64 --json $OUT/bench_$q.json > $OUT/bench_$q.log 2>&1; echo "== $q rc=$?"
  grep -E '^\| (1|16|64) \| [0-9.]+ \| [0-9.]+ \|' $OUT/bench_$q.log | head -3
done
echo "all at $(( $(date +%s) - T0 ))s"
