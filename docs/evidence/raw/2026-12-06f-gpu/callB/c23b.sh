#!/bin/bash
# call B (session 22): Q6_K / Q8_0 16-byte loads in qmma_x (new) against HEAD before it (old: module + test binary);
# test_cuda_qlinear + memcheck, the kernel bench old / new, kiln bench q4_k_m / q6_k / q8_0 b1-64, ncu of the new kernel
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
R=$OUT; OUT=$OUT/r; mkdir -p $OUT
mkdir -p n o/pack && tar -xJf .gpu/pack_new.tar.xz -C n && tar -xJf .gpu/old_head.tar.xz -C o/pack
cp n/pack/kiln o/pack/kiln && ln -s $PWD/n/pack/lib o/pack/lib
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee $OUT/smi.txt
P=n/pack
s=$(date +%s); LD_LIBRARY_PATH=$P/lib timeout 100 $P/test_cuda_qlinear > $OUT/qlinear.log 2>&1
echo "qlinear new rc=$? $(( $(date +%s) - s ))s $(grep -E 'passed, .* failed' $OUT/qlinear.log | tail -1)" | tee -a $OUT/summary.txt
grep -E '^FAIL' $OUT/qlinear.log | head -5
s=$(date +%s); LD_LIBRARY_PATH=$P/lib timeout 100 compute-sanitizer --tool memcheck --error-exitcode 3 $P/test_cuda_qlinear > $OUT/memcheck.log 2>&1
echo "memcheck rc=$? $(( $(date +%s) - s ))s $(grep -E 'passed, .* failed|ERROR SUMMARY' $OUT/memcheck.log | tail -2 | paste -sd' ')" | tee -a $OUT/summary.txt
M=.gpu/models/devstral-small-2505-shape/config.json
row() { grep -E '^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \|' $1 | awk '{printf "b%s %s (%s ms) | ", $2, $6, $8}'; }
bench() { local tag=$1 P=$2 s=$(date +%s); shift 2
  LD_LIBRARY_PATH=$P/lib timeout 120 $P/kiln bench --backend cuda --load-format dummy --model $M \
    --prompt-len 512 --decode-steps 64 --warmup 1 --repeat 1 "$@" --json $OUT/$tag.json > $OUT/$tag.md 2>&1
  echo "$tag rc=$? $(( $(date +%s) - s ))s: $(row $OUT/$tag.md)" | tee -a $OUT/summary.txt; }
B="--batch 1,2,4,8,16,32,64 --max-num-seqs 64 --kv-memory-mb 12000"
bench q4km_old1 o/pack --dummy-quant q4_k_m $B
bench q4km_new1 n/pack --dummy-quant q4_k_m $B
bench q6_new1 n/pack --dummy-quant q6_k $B
bench q6_old1 o/pack --dummy-quant q6_k $B
bench q8_old1 o/pack --dummy-quant q8_0 $B
bench q8_new1 n/pack --dummy-quant q8_0 $B
bench q4km_new2 n/pack --dummy-quant q4_k_m $B
bench q4km_old2 o/pack --dummy-quant q4_k_m $B
echo "benches done at $(( $(date +%s) - T0 ))s" | tee -a $OUT/summary.txt
for v in o n; do s=$(date +%s)
  KILN_QGEMV_BENCH=1 LD_LIBRARY_PATH=n/pack/lib timeout 100 $v/pack/test_cuda_qlinear > $OUT/kbench_$v.log 2>&1
  echo "kernel bench $v rc=$? $(( $(date +%s) - s ))s" | tee -a $OUT/summary.txt; done
for v in o n; do grep -E "regx 16 nt 0 v 0 " $OUT/kbench_$v.log | grep -E "q6_k|q8_0" | awk -F'|' -v t=$v '{printf "%s %s%s %s| ", t, $2, $3, $6}'; echo; done | tee -a $OUT/summary.txt
left=$(( 570 - ($(date +%s) - T0) ))
s=$(date +%s)
KILN_QGEMV_BENCH=2 LD_LIBRARY_PATH=$P/lib timeout $left ncu --clock-control none -k regex:qmma_x_kernel \
  --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section SchedulerStats \
  --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section InstructionStats --section SourceCounters \
  $P/test_cuda_qlinear > $OUT/ncu.txt 2>&1
echo "ncu rc=$? $(( $(date +%s) - s ))s" | tee -a $OUT/summary.txt
cd $R && tar -czf r.tgz r && rm -rf r; ls -la $R
