#!/bin/bash
# (prepared in session 22 for the next session's first call) the final pack: test_cuda_qlinear with the kernel bench
# (incl. variant 17), then the issue-16 tables for q8_0,q6_k beside llama.cpp; then cuda_check.sh with the time left.
# carry: .gpu/pack_new.tar.xz (rebuilt), .gpu/c24a.sh, .gpu/models, .gpu/fixtures, .gpu/llamacpp-src.tar.xz, .gpu/llamacpp.sh, .gpu/make_gguf_shape.py
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
R=$OUT; OUT=$OUT/r; mkdir -p $OUT
mkdir -p n && tar -xJf .gpu/pack_new.tar.xz -C n
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/smi.txt
P=n/pack
export KILN_SHARED=$PWD/.gpu/fixtures
s=$(date +%s); KILN_QGEMV_BENCH=1 LD_LIBRARY_PATH=$P/lib timeout 120 $P/test_cuda_qlinear > $OUT/qlinear.log 2>&1
echo "qlinear+bench rc=$? $(( $(date +%s) - s ))s $(grep -E 'passed, .* failed' $OUT/qlinear.log | tail -1)" | tee -a $OUT/summary.txt
grep -E "regx (4|16) nt 0 v (0|1|17) " $OUT/qlinear.log | awk -F'|' '{printf "%s%s%s%s| ", $2, $3, $5, $6}' | tee -a $OUT/summary.txt; echo
left=$(( 560 - ($(date +%s) - T0) ))
KILN=$P/kiln LD_LIBRARY_PATH=$P/lib:$P timeout $left bash bench/gguf_vs_llamacpp.sh --types q8_0,q6_k \
  --batches 1,2,4,8,16,32,64 --repeat 1 --deadline $(( left - 15 )) --out $OUT/g > $OUT/g.log 2>&1
echo "gguf_vs_llamacpp rc=$? at $(( $(date +%s) - T0 ))s" | tee -a $OUT/summary.txt
tail -25 $OUT/g.log; rm -rf $OUT/g/files 2>/dev/null
cd $R && tar -czf r.tgz r && rm -rf r
