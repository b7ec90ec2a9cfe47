#!/bin/bash
# call A (session 22): the untimed NT2 rule and 3/5-row routing (new pack = HEAD) against e917bb7's pack,
# kiln bench Q4_K_M / Q8_0 / Q6_K b1-16; ncu of qmma_x at 16 rows (down, gate|up); then cuda_check.sh
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
R=$OUT; OUT=$OUT/r; mkdir -p $OUT
mkdir -p o n && tar -xJf .gpu/pack_e917_kiln.tar.xz -C o && tar -xJf .gpu/pack_new.tar.xz -C n
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee $OUT/smi.txt
M=.gpu/models/devstral-small-2505-shape/config.json
row() { grep -E '^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \|' $1 | awk '{printf "b%s %s (%s ms) | ", $2, $6, $8}'; }
bench() { local tag=$1 P=$2 s=$(date +%s); shift 2
  LD_LIBRARY_PATH=$P/lib timeout 120 $P/kiln bench --backend cuda --load-format dummy --model $M \
    --prompt-len 512 --decode-steps 64 --warmup 1 --repeat 1 "$@" --json $OUT/$tag.json > $OUT/$tag.md 2>&1
  echo "$tag rc=$? $(( $(date +%s) - s ))s: $(row $OUT/$tag.md)" | tee -a $OUT/summary.txt; }
B="--batch 1,2,4,8,16 --max-num-seqs 16 --kv-memory-mb 8000"
bench q4km_old1 o/pack --dummy-quant q4_k_m $B
bench q4km_new1 n/pack --dummy-quant q4_k_m $B
bench q8_new1 n/pack --dummy-quant q8_0 $B
bench q8_old1 o/pack --dummy-quant q8_0 $B
bench q6_old1 o/pack --dummy-quant q6_k $B
bench q6_new1 n/pack --dummy-quant q6_k $B
bench q4km_new2 n/pack --dummy-quant q4_k_m $B
bench q4km_old2 o/pack --dummy-quant q4_k_m $B
echo "benches done at $(( $(date +%s) - T0 ))s" | tee -a $OUT/summary.txt
P=n/pack
s=$(date +%s)
KILN_QGEMV_BENCH=2 LD_LIBRARY_PATH=$P/lib timeout 150 ncu --clock-control none -k regex:qmma_x_kernel \
  --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section SchedulerStats \
  --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section InstructionStats --section SourceCounters \
  $P/test_cuda_qlinear > $OUT/ncu.txt 2>&1
echo "ncu rc=$? $(( $(date +%s) - s ))s" | tee -a $OUT/summary.txt
left=$(( 560 - ($(date +%s) - T0) ))
echo "cuda_check with $left s left" | tee -a $OUT/summary.txt
rm -rf build-cuda; mkdir -p build-cuda && mv n/pack build-cuda/pack
mkdir -p $OUT/check
KILN_SHARED=$PWD/.gpu/fixtures KILN_CUDA_TEST_TIMEOUT=200 OUT=$OUT/check timeout $left bash scripts/cuda_check.sh > $OUT/check/out.txt 2>&1
echo "cuda_check rc=$? at $(( $(date +%s) - T0 ))s" | tee -a $OUT/summary.txt
tail -60 $OUT/check/out.txt
cd $R && tar -czf r.tgz r && rm -rf r; ls -la $R
