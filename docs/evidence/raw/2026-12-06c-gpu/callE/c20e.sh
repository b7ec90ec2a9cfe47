#!/bin/bash
# call E (session 19): PDL's row threshold (KILN_CUDA_PDL_ROWS 1 / 2 / 4 = default) at FP8, bf16
# and Q4_K_M b1..8, interleaved; the kernels' tests now launch PDL at every row count.
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
for x in swiglu rmsnorm rope_kv attention wide target step engine_sample fp8; do t test_cuda_$x $P/test_cuda_$x; done
echo "tests done at $(( $(date +%s) - T0 ))s" | tee -a $R/summary.txt
M=.gpu/models/devstral-small-2505-shape/config.json
row() { grep -E '^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \|' $1 | awk '{printf "b%s dec %s (%s ms) | ", $2, $6, $8}'; }
bench() { local tag=$1 s=$(date +%s); shift
  LD_LIBRARY_PATH=$P/lib timeout 120 $P/kiln bench --backend cuda --load-format dummy --model $M \
    --prompt-len 512 --decode-steps 64 --warmup 1 --repeat 1 "$@" --json $R/$tag.json > $R/$tag.md 2>&1
  echo "$tag rc=$? $(( $(date +%s) - s ))s: $(row $R/$tag.md)" | tee -a $R/summary.txt; }
F="--quantization fp8 --batch 1,2,4,8 --max-num-seqs 8 --kv-memory-mb 8000"
ok 250 && bench fp8_r4a $F
ok 265 && KILN_CUDA_PDL_ROWS=1 bench fp8_r1a $F
ok 280 && KILN_CUDA_PDL_ROWS=2 bench fp8_r2a $F
ok 295 && KILN_CUDA_PDL_ROWS=1 bench fp8_r1b $F
ok 310 && bench fp8_r4b $F
B="--batch 1,2 --max-num-seqs 2 --kv-memory-mb 8000"
ok 330 && bench bf16_r4 $B
ok 350 && KILN_CUDA_PDL_ROWS=1 bench bf16_r1 $B
Q="--dummy-quant q4_k_m --batch 1,2 --max-num-seqs 2 --kv-memory-mb 8000"
ok 380 && bench q4km_r4 $Q
ok 410 && KILN_CUDA_PDL_ROWS=1 bench q4km_r1 $Q
echo "all done at $(( $(date +%s) - T0 ))s" | tee -a $R/summary.txt
cd $OUT && tar -czf r.tgz r && rm -rf r
