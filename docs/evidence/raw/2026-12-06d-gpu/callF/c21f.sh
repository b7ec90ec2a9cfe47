#!/bin/bash
# call F (session 20): qmma_x at 17..64 rows (m-tiles 2, 4): test_cuda_qlinear + bench, test_cuda_gguf,
# kiln bench q4_k_m / q8_0 / q6_k at b16..64 with qmma_x up to 16 rows (then qmma) vs up to 64 (KILN_CUDA_QREG)
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
R=$OUT/r; mkdir -p $R; rm -rf /tmp/new; mkdir -p /tmp/new; tar -xJf .gpu/pack.tar.xz -C /tmp/new; P=/tmp/new/pack
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > $R/smi.txt 2>&1; cat $R/smi.txt
export KILN_SHARED=$PWD/.gpu/fixtures
for n in qlinear gguf; do s=$(date +%s)
  KILN_QGEMV_BENCH=1 LD_LIBRARY_PATH=$P/lib timeout 200 $P/test_cuda_$n > $R/$n.log 2>&1
  echo "test_cuda_$n rc=$? $(( $(date +%s) - s ))s $(grep -E 'passed, .* failed' $R/$n.log | tail -1)" | tee -a $R/summary.txt
  grep -E '^FAIL|SKIP' $R/$n.log | head -5 | tee -a $R/summary.txt; done
ok() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
M=.gpu/models/devstral-small-2505-shape/config.json
row() { grep -E '^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \|' $1 | awk '{printf "b%s dec %s (%s ms) | ", $2, $6, $8}'; }
bench() { local tag=$1 s=$(date +%s); shift
  LD_LIBRARY_PATH=$P/lib timeout 150 $P/kiln bench --backend cuda --load-format dummy --model $M \
    --prompt-len 512 --decode-steps 64 --warmup 1 --repeat 1 "$@" --json $R/$tag.json > $R/$tag.md 2>&1
  echo "$tag rc=$? $(( $(date +%s) - s ))s: $(row $R/$tag.md)" | tee -a $R/summary.txt; }
B="--batch 16,24,32,48,64 --max-num-seqs 64 --kv-memory-mb 12000"
for r in 1 2; do
  ok 330 && KILN_CUDA_QREG=16 bench q4km_q16_$r --dummy-quant q4_k_m $B
  ok 360 && KILN_CUDA_QREG=64 bench q4km_q64_$r --dummy-quant q4_k_m $B
done
for t in q8_0 q6_k; do
  ok 420 && KILN_CUDA_QREG=16 bench ${t}_q16 --dummy-quant $t $B
  ok 450 && KILN_CUDA_QREG=64 bench ${t}_q64 --dummy-quant $t $B
done
echo "all done at $(( $(date +%s) - T0 ))s" | tee -a $R/summary.txt
cd $OUT && tar -czf r.tgz r && rm -rf r
