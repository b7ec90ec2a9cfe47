#!/bin/bash
# call C (session 22): kiln_q_words2 in 16-byte loads (GEMV etc.) + qmma_x HALF at <= 8 rows (new) against call B's code (old: module + test binary);
# test_cuda_qlinear + memcheck + test_cuda_gguf, kernel bench old / new, kiln bench b1/b2 old / new, then the issue-16 table (q4_k_m) beside llama.cpp
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
R=$OUT; OUT=$OUT/r; mkdir -p $OUT
mkdir -p n o/pack && tar -xJf .gpu/pack_new.tar.xz -C n && tar -xJf .gpu/old_b.tar.xz -C o/pack
cp n/pack/kiln o/pack/kiln && ln -s $PWD/n/pack/lib o/pack/lib
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee $OUT/smi.txt
P=n/pack
export KILN_SHARED=$PWD/.gpu/fixtures
s=$(date +%s); LD_LIBRARY_PATH=$P/lib timeout 100 $P/test_cuda_qlinear > $OUT/qlinear.log 2>&1
echo "qlinear new rc=$? $(( $(date +%s) - s ))s $(grep -E 'passed, .* failed' $OUT/qlinear.log | tail -1)" | tee -a $OUT/summary.txt
grep -E '^FAIL' $OUT/qlinear.log | head -5
s=$(date +%s); LD_LIBRARY_PATH=$P/lib timeout 100 compute-sanitizer --tool memcheck --error-exitcode 3 $P/test_cuda_qlinear > $OUT/memcheck.log 2>&1
echo "memcheck rc=$? $(( $(date +%s) - s ))s $(grep -E 'passed, .* failed|ERROR SUMMARY' $OUT/memcheck.log | tail -2 | paste -sd' ')" | tee -a $OUT/summary.txt
s=$(date +%s); LD_LIBRARY_PATH=$P/lib timeout 100 $P/test_cuda_gguf > $OUT/gguf.log 2>&1
echo "gguf rc=$? $(( $(date +%s) - s ))s $(grep -E 'passed, .* failed' $OUT/gguf.log | tail -1)" | tee -a $OUT/summary.txt
for v in o n; do s=$(date +%s)
  KILN_QGEMV_BENCH=1 LD_LIBRARY_PATH=n/pack/lib timeout 100 $v/pack/test_cuda_qlinear > $OUT/kbench_$v.log 2>&1
  echo "kernel bench $v rc=$? $(( $(date +%s) - s ))s" | tee -a $OUT/summary.txt; done
for v in o n; do grep -E "\| (1|2|4) \| [0-9.]+ \| [0-9]+ \|$|regx (4|8) nt 0 v 0 " $OUT/kbench_$v.log | awk -F'|' -v t=$v '{printf "%s %s%s%s%s| ", t, $2, $3, $5, $6}'; echo; done | tee -a $OUT/summary.txt
M=.gpu/models/devstral-small-2505-shape/config.json
row() { grep -E '^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \|' $1 | awk '{printf "b%s %s (%s ms) | ", $2, $6, $8}'; }
bench() { local tag=$1 P=$2 s=$(date +%s); shift 2
  LD_LIBRARY_PATH=$P/lib timeout 120 $P/kiln bench --backend cuda --load-format dummy --model $M \
    --prompt-len 512 --decode-steps 64 --warmup 1 --repeat 1 "$@" --json $OUT/$tag.json > $OUT/$tag.md 2>&1
  echo "$tag rc=$? $(( $(date +%s) - s ))s: $(row $OUT/$tag.md)" | tee -a $OUT/summary.txt; }
B="--batch 1,2,4,8 --max-num-seqs 8 --kv-memory-mb 4000"
bench q6_old o/pack --dummy-quant q6_k $B
bench q6_new n/pack --dummy-quant q6_k $B
bench q8_new n/pack --dummy-quant q8_0 $B
bench q8_old o/pack --dummy-quant q8_0 $B
bench q4km_old o/pack --dummy-quant q4_k_m $B
bench q4km_new n/pack --dummy-quant q4_k_m $B
left=$(( 585 - ($(date +%s) - T0) ))
echo "table with $left s left" | tee -a $OUT/summary.txt
KILN=$P/kiln LD_LIBRARY_PATH=$P/lib:$P timeout $left bash bench/gguf_vs_llamacpp.sh --types q4_k_m \
  --batches 1,2,4,8,16,32,64 --repeat 1 --deadline $(( left - 15 )) --out $OUT/g > $OUT/g.log 2>&1
echo "gguf_vs_llamacpp rc=$? at $(( $(date +%s) - T0 ))s" | tee -a $OUT/summary.txt
tail -25 $OUT/g.log
rm -rf $OUT/g/files 2>/dev/null
cd $R && tar -czf r.tgz r && rm -rf r; ls -la $R
