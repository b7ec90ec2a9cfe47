#!/bin/bash
# call G (session 20): qmma_x at 17..64 rows, fixed launch: test_cuda_qlinear + bench, kiln bench
# q4_k_m b16..64 qmma_x up to 16 rows (then qmma) vs up to 64; q8_0 / q6_k up to 64
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
R=$OUT/r; mkdir -p $R; rm -rf /tmp/new; mkdir -p /tmp/new; tar -xJf .gpu/pack.tar.xz -C /tmp/new; P=/tmp/new/pack
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > $R/smi.txt 2>&1; cat $R/smi.txt
KILN_QGEMV_BENCH=1 LD_LIBRARY_PATH=$P/lib timeout 200 $P/test_cuda_qlinear > $R/qlinear.log 2>&1
echo "test_cuda_qlinear rc=$? $(grep -E 'passed, .* failed' $R/qlinear.log | tail -1)" | tee -a $R/summary.txt
grep -E '^FAIL' $R/qlinear.log | head -5 | tee -a $R/summary.txt
ok() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
M=.gpu/models/devstral-small-2505-shape/config.json
row() { grep -E '^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \|' $1 | awk '{printf "b%s dec %s (%s ms) | ", $2, $6, $8}'; }
bench() { local tag=$1 s=$(date +%s); shift
  LD_LIBRARY_PATH=$P/lib timeout 150 $P/kiln bench --backend cuda --load-format dummy --model $M \
    --prompt-len 512 --decode-steps 64 --warmup 1 --repeat 1 "$@" --json $R/$tag.json > $R/$tag.md 2>&1
  echo "$tag rc=$? $(( $(date +%s) - s ))s: $(row $R/$tag.md)" | tee -a $R/summary.txt; }
B="--batch 16,24,32,48,64 --max-num-seqs 64 --kv-memory-mb 12000"
ok 200 && KILN_CUDA_QREG=64 bench q4km_q64 --dummy-quant q4_k_m $B
ok 240 && KILN_CUDA_QREG=16 bench q4km_q16 --dummy-quant q4_k_m $B
ok 280 && KILN_CUDA_QREG=64 bench q8_0_q64 --dummy-quant q8_0 $B
ok 320 && KILN_CUDA_QREG=64 bench q6_k_q64 --dummy-quant q6_k $B
echo "all done at $(( $(date +%s) - T0 ))s" | tee -a $R/summary.txt
cd $OUT && tar -czf r.tgz r && rm -rf r
