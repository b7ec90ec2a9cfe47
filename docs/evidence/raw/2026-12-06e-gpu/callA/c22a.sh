#!/bin/bash
# call A (session 21): qmma_x variants (kernel bench; kiln bench q4_k_m b16/32/64 at variants 0 / 8 / 24),
# the GPU tests the session's code touches (qlinear, gguf, oom, dummy), memcheck on test_cuda_qlinear
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
rm -rf build-cuda; mkdir -p build-cuda && tar -xJf .gpu/pack_full.tar.xz -C build-cuda
P=build-cuda/pack
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee $OUT/smi.txt
KILN_QGEMV_BENCH=1 LD_LIBRARY_PATH=$P/lib timeout 200 $P/test_cuda_qlinear > $OUT/qlinear_bench.log 2>&1
echo "qlinear+bench rc=$? $(grep -E 'passed, .* failed' $OUT/qlinear_bench.log | tail -1) at $(( $(date +%s) - T0 ))s" | tee $OUT/summary.txt
grep regx $OUT/qlinear_bench.log | grep -E "v (0|4|8|12|16|24) " | awk -F'|' '{printf "%s|%s|%s|%s\n",$2,$3,$5,$6}' | tr -s ' ' | paste -sd';' | head -c 7000; echo
M=.gpu/models/devstral-small-2505-shape/config.json
row() { grep -E '^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \|' $1 | awk '{printf "b%s %s (%s ms) | ", $2, $6, $8}'; }
bench() { local tag=$1 s=$(date +%s); shift
  LD_LIBRARY_PATH=$P/lib timeout 100 $P/kiln bench --backend cuda --load-format dummy --model $M \
    --prompt-len 512 --decode-steps 64 --warmup 1 --repeat 1 "$@" --json $OUT/$tag.json > $OUT/$tag.md 2>&1
  echo "$tag rc=$? $(( $(date +%s) - s ))s: $(row $OUT/$tag.md)" | tee -a $OUT/summary.txt; }
B="--dummy-quant q4_k_m --batch 16,32,64 --max-num-seqs 64 --kv-memory-mb 12000"
for v in 0 8 24; do KILN_CUDA_QREG_VARIANT=$v bench q4km_v$v $B; done
export KILN_SHARED=$PWD/.gpu/fixtures
for n in gguf oom dummy; do s=$(date +%s)
  LD_LIBRARY_PATH=$P/lib timeout 120 $P/test_cuda_$n > $OUT/$n.log 2>&1
  echo "test_cuda_$n rc=$? $(( $(date +%s) - s ))s $(grep -E 'passed, .* failed' $OUT/$n.log | tail -1)" | tee -a $OUT/summary.txt
  grep -E '^FAIL|SKIP' $OUT/$n.log | head -5; done
left=$(( 440 - ($(date +%s) - T0) ))
s=$(date +%s); LD_LIBRARY_PATH=$P/lib timeout $left compute-sanitizer --tool memcheck --error-exitcode 3 $P/test_cuda_qlinear > $OUT/memcheck_qlinear.log 2>&1
echo "memcheck qlinear rc=$? $(( $(date +%s) - s ))s $(grep -E 'passed, .* failed|ERROR SUMMARY' $OUT/memcheck_qlinear.log | tail -2 | paste -sd' ')" | tee -a $OUT/summary.txt
