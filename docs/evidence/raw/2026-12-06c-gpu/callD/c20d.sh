#!/bin/bash
# call D (session 19): the default L2 prefetch (FP8 W8A8 at 4..8 rows) against KILN_CUDA_L2PF_MB=0,
# interleaved, FP8 b1..16 and bf16 b1/4/8 (untouched); test_cuda_engine_sample, test_cuda_fp8 / step.
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
for x in engine_sample step; do t test_cuda_$x $P/test_cuda_$x; done
LD_LIBRARY_PATH=$P/lib $P/kiln info --backend cuda --model .gpu/models/devstral-small-2505-shape/config.json --load-format dummy --quantization fp8 2>&1 | grep -E "L2 prefetch|card" | tee -a $R/summary.txt
M=.gpu/models/devstral-small-2505-shape/config.json
row() { grep -E '^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \|' $1 | awk '{printf "b%s dec %s (%s ms) | ", $2, $6, $8}'; }
bench() { local tag=$1 s=$(date +%s); shift
  LD_LIBRARY_PATH=$P/lib timeout 120 $P/kiln bench --backend cuda --load-format dummy --model $M \
    --prompt-len 512 --decode-steps 64 --warmup 1 --repeat 1 "$@" --json $R/$tag.json > $R/$tag.md 2>&1
  echo "$tag rc=$? $(( $(date +%s) - s ))s: $(row $R/$tag.md)" | tee -a $R/summary.txt; }
F="--quantization fp8 --batch 1,2,4,8,16 --max-num-seqs 16 --kv-memory-mb 8000"
bench fp8_def1 $F
KILN_CUDA_L2PF_MB=0 bench fp8_off1 $F
KILN_CUDA_L2PF_MB=0 bench fp8_off2 $F
bench fp8_def2 $F
B="--batch 1,4,8 --max-num-seqs 8 --kv-memory-mb 8000"
bench bf16_def $B
echo "all done at $(( $(date +%s) - T0 ))s" | tee -a $R/summary.txt
cd $OUT && tar -czf r.tgz r && rm -rf r
