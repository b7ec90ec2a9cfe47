#!/bin/bash
# call B (session 19): the L2 prefetch branch, mode 4 (read through on few CTAs) against off and
# mode 1, FP8 b1..8 and bf16 b1/4, interleaved; a trace of FP8 b1 with mode 4.
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
rm -rf /tmp/new; mkdir -p /tmp/new; tar -xJf .gpu/pack.tar.xz -C /tmp/new
R=$OUT/r; mkdir -p $R
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > $R/smi.txt 2>&1; cat $R/smi.txt
export KILN_SHARED=$PWD/.gpu/fixtures
P=/tmp/new/pack; L=$R/t; mkdir -p $L
t() { local n=$1 s=$(date +%s); shift; LD_LIBRARY_PATH=$P/lib timeout 150 "$@" > $L/$n.log 2>&1; local rc=$?
  echo "$n rc=$rc $(( $(date +%s) - s ))s: $(grep -E 'passed, .* failed|ERROR SUMMARY' $L/$n.log | tail -1)" | tee -a $R/summary.txt
  grep -E '^FAIL|SKIP' $L/$n.log | head -8 | tee -a $R/summary.txt; }
ok() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
t test_cuda_engine_sample $P/test_cuda_engine_sample
M=.gpu/models/devstral-small-2505-shape/config.json
row() { grep -E '^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \|' $1 | awk '{printf "b%s dec %s (%s ms) | ", $2, $6, $8}'; }
bench() { local tag=$1 s=$(date +%s); shift
  LD_LIBRARY_PATH=$P/lib timeout 120 $P/kiln bench --backend cuda --load-format dummy --model $M \
    --prompt-len 512 --decode-steps 64 --warmup 1 --repeat 1 "$@" --json $R/$tag.json > $R/$tag.md 2>&1
  echo "$tag rc=$? $(( $(date +%s) - s ))s: $(row $R/$tag.md)" | tee -a $R/summary.txt; }
F="--quantization fp8 --batch 1,2,4,8 --max-num-seqs 8 --kv-memory-mb 8000"
ok 100 && bench fp8_off1 $F
ok 115 && KILN_CUDA_L2PF_MB=32 KILN_CUDA_L2PF_MODE=4 KILN_CUDA_L2PF_CTAS=8 bench fp8_m4_32_c8 $F
ok 130 && KILN_CUDA_L2PF_MB=32 KILN_CUDA_L2PF_MODE=4 KILN_CUDA_L2PF_CTAS=16 bench fp8_m4_32_c16 $F
ok 145 && KILN_CUDA_L2PF_MB=32 KILN_CUDA_L2PF_MODE=4 KILN_CUDA_L2PF_CTAS=32 bench fp8_m4_32_c32 $F
ok 160 && KILN_CUDA_L2PF_MB=16 KILN_CUDA_L2PF_MODE=4 KILN_CUDA_L2PF_CTAS=16 bench fp8_m4_16_c16 $F
ok 175 && bench fp8_off2 $F
ok 190 && KILN_CUDA_L2PF_MB=32 KILN_CUDA_L2PF_MODE=1 bench fp8_m1_32 $F
ok 205 && KILN_CUDA_L2PF_MB=32 KILN_CUDA_L2PF_MODE=1 KILN_CUDA_L2PF_CTAS=8 bench fp8_m1_32_c8 $F
ok 220 && KILN_CUDA_L2PF_MB=64 KILN_CUDA_L2PF_MODE=4 KILN_CUDA_L2PF_CTAS=16 bench fp8_m4_64_c16 $F
B="--batch 1,4 --max-num-seqs 4 --kv-memory-mb 8000"
ok 250 && bench bf16_off $B
ok 270 && KILN_CUDA_L2PF_MB=32 KILN_CUDA_L2PF_MODE=4 KILN_CUDA_L2PF_CTAS=16 bench bf16_m4_32_c16 $B
ok 290 && KILN_CUDA_L2PF_MB=32 KILN_CUDA_L2PF_MODE=1 bench bf16_m1_32 $B
tr() { local tag=$1; shift; mkdir -p $R/$tag
  LD_LIBRARY_PATH=$P/lib timeout 70 bash scripts/cuda_trace.sh --lib $P/libkiln_cupti_trace.so --out $R/$tag -- \
    $P/kiln bench --backend cuda --load-format dummy --model $M --prompt-len 512 --warmup 0 --repeat 1 "$@" > $R/$tag/run.log 2>&1
  python3 bench/trace_steps.py $R/$tag/kiln_trace.json --kind decode --top 40 > $R/$tag.txt 2>&1
  rm -f $R/$tag/kiln_trace.json; head -1 $R/$tag.txt | tee -a $R/summary.txt; }
ok 340 && KILN_CUDA_PDL=0 KILN_CUDA_L2PF_MB=32 KILN_CUDA_L2PF_MODE=4 KILN_CUDA_L2PF_CTAS=16 tr tr_fp8_b1_m4 --quantization fp8 --batch 1 --decode-steps 32 --kv-memory-mb 4000
echo "all done at $(( $(date +%s) - T0 ))s" | tee -a $R/summary.txt
cd $OUT && tar -czf r.tgz r && rm -rf r
