#!/bin/bash
# diagnosis for issue 16: GGUF decode on the GPU, where a batch-1 step goes (dce0337 pack)
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
mkdir -p build-cuda && tar -xJf .gpu/pack.tar.xz -C build-cuda
P=build-cuda/pack; export LD_LIBRARY_PATH=$PWD/$P/lib
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > $OUT/smi.txt 2>&1; cat $OUT/smi.txt
M=.gpu/models/devstral-small-2505-shape/config.json
B="$P/kiln bench --backend cuda --load-format dummy --model $M --prompt-len 512 --decode-steps 32 --warmup 1 --repeat 1 --max-num-seqs 64 --kv-memory-mb 8000"
for q in q4_k_m q6_k q8_0; do
  timeout 120 $B --dummy-quant $q --batch 1,16 --json $OUT/bench_$q.json > $OUT/bench_$q.log 2>&1; echo "== $q rc=$?"; grep -E '^\| (1|16) \| [0-9.]+ \| [0-9.]+ \|' $OUT/bench_$q.log | head -2
done
echo "bench at $(( $(date +%s) - T0 ))s"
for q in q4_k_m q6_k; do
  mkdir -p $OUT/tr_$q
  timeout 150 bash scripts/cuda_trace.sh --out $OUT/tr_$q -- $B --dummy-quant $q --batch 1 > $OUT/tr_$q/run.log 2>&1; echo "== trace $q rc=$?"
  rm -f $OUT/tr_$q/kiln_trace.json
  head -60 $OUT/tr_$q/kiln_trace_summary.txt
done
echo "trace at $(( $(date +%s) - T0 ))s"
KILN_QGEMV_BENCH=1 timeout 200 $P/test_cuda_qlinear > $OUT/qlinear_bench.log 2>&1; echo "qlinear rc=$?"; grep -iE 'us|GB/s' $OUT/qlinear_bench.log | tail -40
echo "all at $(( $(date +%s) - T0 ))s"
