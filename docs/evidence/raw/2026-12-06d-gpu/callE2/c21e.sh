#!/bin/bash
# call E (session 20): final qmma_x: test_cuda_qlinear, test_cuda_gguf (Devstral-shape Q4_K_M / Q8_0 / Q6_K),
# then bench/gguf_vs_llamacpp.sh (kiln vs llama.cpp's CUDA build on the same Q4_K_M file, batch 1..64)
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
R=$OUT/r; mkdir -p $R
rm -rf .gpu/pack; tar -xJf .gpu/pack.tar.xz -C .gpu; P=$PWD/.gpu/pack
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > $R/smi.txt 2>&1; cat $R/smi.txt
export KILN_SHARED=$PWD/.gpu/fixtures
for n in qlinear; do s=$(date +%s)
  LD_LIBRARY_PATH=$P/lib timeout 150 $P/test_cuda_$n > $R/$n.log 2>&1
  echo "test_cuda_$n rc=$? $(( $(date +%s) - s ))s $(grep -E 'passed, .* failed' $R/$n.log | tail -1)" | tee -a $R/summary.txt
  grep -E '^FAIL|SKIP' $R/$n.log | head -5 | tee -a $R/summary.txt; done
left=$(( 320 - ($(date +%s) - T0) ))
KILN=$P/kiln LD_LIBRARY_PATH=$P/lib:$P timeout $left bash bench/gguf_vs_llamacpp.sh --types q4_k_m \
  --batches 1,2,4,8,16,32,64 --repeat 1 --deadline $(( left - 20 )) --out $R/g > $R/g.log 2>&1
echo "gguf_vs_llamacpp rc=$? at $(( $(date +%s) - T0 ))s" | tee -a $R/summary.txt
tail -30 $R/g.log
rm -rf $R/g/files 2>/dev/null
cd $OUT && tar -czf r.tgz r && rm -rf r
