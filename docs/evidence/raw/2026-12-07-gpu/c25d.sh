#!/bin/bash
# call (session 24; no table): x stages filled a row a warp (v 0) against the old fill order (v 32), same binary: test_cuda_qlinear +
# kernel bench; engine Q8_0 b3..32 and Q4_K_M, Q6_K b4..32 two rounds; ncu of both at 16 rows; then the Q8_0 table
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
R=$OUT; OUT=$OUT/r; mkdir -p $OUT
mkdir -p n && tar -xJf .gpu/pack_new.tar.xz -C n
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/smi.txt
P=n/pack
export KILN_SHARED=$PWD/.gpu/fixtures
s=$(date +%s); KILN_QGEMV_BENCH=1 LD_LIBRARY_PATH=$P/lib timeout 120 $P/test_cuda_qlinear > $OUT/qlinear.log 2>&1
echo "qlinear+bench rc=$? $(( $(date +%s) - s ))s $(grep -E 'passed, .* failed' $OUT/qlinear.log | tail -1)" | tee -a $OUT/summary.txt
grep -E "FAIL" $OUT/qlinear.log | head -5 | tee -a $OUT/summary.txt
grep -E "regx (4|16|32) nt 0 v (0|32) " $OUT/qlinear.log | awk -F'|' '{printf "%s%s%s%s| ", $2, $3, $5, $6}' | tee -a $OUT/summary.txt; echo | tee -a $OUT/summary.txt
s=$(date +%s); LD_LIBRARY_PATH=$P/lib timeout 100 $P/test_cuda_gguf > $OUT/gguf.log 2>&1
echo "test_cuda_gguf rc=$? $(( $(date +%s) - s ))s $(grep -E 'passed, .* failed' $OUT/gguf.log | tail -1)" | tee -a $OUT/summary.txt
M=.gpu/models/devstral-small-2505-shape/config.json
row() { grep -E '^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \|' $1 | awk '{printf "b%s %s (%s ms) | ", $2, $6, $8}'; }
bench() { local tag=$1 v=$2 s=$(date +%s); shift 2
  KILN_CUDA_QREG_VARIANT=$v LD_LIBRARY_PATH=$P/lib timeout 90 $P/kiln bench --backend cuda --load-format dummy --model $M \
    --prompt-len 512 --decode-steps 64 --warmup 1 --repeat 1 "$@" --json $OUT/$tag.json > $OUT/$tag.md 2>&1
  echo "$tag rc=$? $(( $(date +%s) - s ))s: $(row $OUT/$tag.md)" | tee -a $OUT/summary.txt; }
B="--batch 4,8,16,32 --max-num-seqs 32 --kv-memory-mb 8000"
bench q8_v0 0 --dummy-quant q8_0 $B
bench q8_v32 32 --dummy-quant q8_0 $B
bench q8_v32b 32 --dummy-quant q8_0 $B
bench q8_v0b 0 --dummy-quant q8_0 $B
#bench q6k_v0 0 --dummy-quant q6_k $B
#bench q6k_v32 32 --dummy-quant q6_k $B
(cd $R && tar -czf r1.tgz r)
s=$(date +%s)
[ -n "$NCU" ] && KILN_QGEMV_BENCH=2 LD_LIBRARY_PATH=$P/lib timeout 100 ncu --clock-control none -k regex:qmma_x_kernel --launch-skip 32 --launch-count 16 \
  --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section SchedulerStats \
  --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section SourceCounters \
  $P/test_cuda_qlinear > $OUT/ncu.txt 2>&1
echo "ncu rc=$? $(( $(date +%s) - s ))s" | tee -a $OUT/summary.txt
[ -f $OUT/ncu.txt ] && gzip $OUT/ncu.txt
left=$(( 0 - ($(date +%s) - T0) ))
echo "gguf_vs_llamacpp with $left s left" | tee -a $OUT/summary.txt
b16() { grep -E '^\| 16 \| [0-9.]+ \| [0-9.]+ \|' $1 | awk '{print $8}'; }
win=$(awk -v a="$(b16 $OUT/q8_v0.md)" -v b="$(b16 $OUT/q8_v32.md)" 'BEGIN{print (a > 0 && a < b) ? 1 : 0}')
echo "q8 b16 v0 $(b16 $OUT/q8_v0.md) ms vs v32 $(b16 $OUT/q8_v32.md) ms: table $win" | tee -a $OUT/summary.txt
if [ $left -gt 190 ] && [ "$win" = 1 ]; then
  KILN=$P/kiln LD_LIBRARY_PATH=$P/lib:$P timeout $left bash bench/gguf_vs_llamacpp.sh --types q8_0 \
    --batches 1,2,4,8,16,32,64 --repeat 1 --deadline $(( left - 15 )) --out $OUT/g > $OUT/g.log 2>&1
  echo "gguf_vs_llamacpp rc=$? at $(( $(date +%s) - T0 ))s" | tee -a $OUT/summary.txt
  tail -14 $OUT/g.log; rm -rf $OUT/g/files 2>/dev/null
fi
cd $R && tar -czf r.tgz r && rm -rf r r1.tgz
