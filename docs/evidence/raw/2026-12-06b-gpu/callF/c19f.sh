#!/bin/bash
# call F (session 18): new = the working tree (FP8 gate|up bf16 sums, RoPE factors once a step, the
# quantizers' warp reduce and e4m3 cvt) against old = c35fb97's pack, same call: tests, then the
# issue tables (FP8 b1/16/64 + prefill, bf16 b1..128 + prefill/TTFT, bf16 with GEMM tuning).
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
for v in new old; do rm -rf /tmp/$v; mkdir -p /tmp/$v; done
tar -xJf .gpu/pack.tar.xz -C /tmp/new; tar -xJf .gpu/pack_c35_min.tar.xz -C /tmp/old
R=$OUT/r; mkdir -p $R
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > $R/smi.txt 2>&1; cat $R/smi.txt
export KILN_SHARED=$PWD/.gpu/fixtures
P=/tmp/new/pack; L=$R/t; mkdir -p $L
t() { local n=$1 s=$(date +%s); shift; LD_LIBRARY_PATH=$P/lib timeout 150 "$@" > $L/$n.log 2>&1; local rc=$?
  echo "$n rc=$rc $(( $(date +%s) - s ))s: $(grep -E 'passed, .* failed|ERROR SUMMARY' $L/$n.log | tail -1)" | tee -a $R/summary.txt
  grep -E '^FAIL|SKIP|e4m3 conversion' $L/$n.log | head -5 | tee -a $R/summary.txt; }
ok() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
for x in fp8 swiglu rmsnorm rope_kv model step; do t test_cuda_$x $P/test_cuda_$x; done
echo "tests done at $(( $(date +%s) - T0 ))s" | tee -a $R/summary.txt
M=.gpu/models/devstral-small-2505-shape/config.json
row() { grep -E '^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \|' $1 | awk '{printf "b%s pf %s dec %s (%s ms) ttft %s | ", $2, $4, $6, $8, $11}'; }
bench() { local v=$1 tag=$2 s=$(date +%s); shift 2
  LD_LIBRARY_PATH=/tmp/$v/pack/lib timeout 120 /tmp/$v/pack/kiln bench --backend cuda --load-format dummy --model $M \
    --prompt-len 512 --decode-steps 64 --warmup 1 --repeat 1 "$@" --json $R/$tag.json > $R/$tag.md 2>&1
  echo "$tag rc=$? $(( $(date +%s) - s ))s: $(row $R/$tag.md)" | tee -a $R/summary.txt; }
F="--quantization fp8 --batch 1,16,64 --max-num-seqs 64 --kv-memory-mb 8000"
ok 300 && bench old fp8_old1 $F
ok 320 && bench new fp8_new1 $F
ok 340 && bench new fp8_new2 $F
ok 360 && bench old fp8_old2 $F
B="--batch 1,16,32,64,128 --max-num-seqs 128 --kv-memory-mb 16000"
ok 380 && bench new bf16_new1 $B
ok 420 && bench old bf16_old1 $B
ok 460 && KILN_LOG=info KILN_CUDA_GEMM_TUNE=8 bench new bf16_new_tune8 $B
echo "all done at $(( $(date +%s) - T0 ))s" | tee -a $R/summary.txt
grep -h "GEMM tuning" $R/bf16_new_tune8.md | tail -2 | tee -a $R/summary.txt
cd $OUT && tar -czf r.tgz r && rm -rf r
