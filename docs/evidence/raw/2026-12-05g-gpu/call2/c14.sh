#!/bin/bash
# issue 17/24 call 2: packA (f8r kernel, no min-blocks bound: 144 regs, 3 CTAs/SM; split count by
# kiln_cuda_wave_splits) / packB (f8r at 128 regs, 4 CTAs/SM) / pack_old (last session). Tests of
# A and B, then kiln bench FP8 weights b64 x 2048 interleaved (fp8 and bf16 pools), then bf16
# weights b64/b128 at 512 (the split rule on the bf16 pool)
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
for v in A B old; do mkdir -p /tmp/$v; done
tar -xJf .gpu/packA.tar.xz -C /tmp/A & tar -xJf .gpu/packB.tar.xz -C /tmp/B & tar -xJf .gpu/pack_old.tar.xz -C /tmp/old & wait
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > $OUT/smi.txt 2>&1; cat $OUT/smi.txt
L=$OUT/t; mkdir -p $L
t() { local n=$1 s=$(date +%s); shift; timeout 150 "$@" > $L/$n.log 2>&1; local rc=$?
  echo "$n rc=$rc $(( $(date +%s) - s ))s: $(grep -E 'passed, .* failed|ERROR SUMMARY' $L/$n.log | tail -1)" | tee -a $OUT/summary.txt
  grep '^FAIL' $L/$n.log | head -5; }
LD_LIBRARY_PATH=/tmp/A/pack/lib t test_cuda_attention_A /tmp/A/pack/test_cuda_attention
LD_LIBRARY_PATH=/tmp/B/pack/lib t memcheck_attention_B compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/B/pack/test_cuda_attention
echo "tests done at $(( $(date +%s) - T0 ))s"
M=.gpu/models/devstral-small-2505-shape/config.json
R=$OUT/b; mkdir -p $R
one() { local v=$1 kv=$2 b=$3 pl=$4 q=$5 r=$6 P=/tmp/$1/pack s=$(date +%s) a="" n=$1_kv$2_b$3_p$4_$5_$6
  [ $kv = fp8 ] && a="--kv-cache-dtype fp8"; local kvm=14000; [ $q = fp8 ] && a="$a --quantization fp8" && kvm=24000
  LD_LIBRARY_PATH=$P/lib timeout 90 $P/kiln bench --backend cuda --load-format dummy --model $M --warmup 1 --repeat 1 \
    --kv-memory-mb $kvm --max-model-len 4352 --max-num-seqs ${b##*,} --prompt-len $pl --decode-steps 64 --batch $b $a --json $R/$n.json > $R/$n.log 2>&1
  echo "$n ${KILN_CUDA_DECODE_TC_SPLIT:+split=$KILN_CUDA_DECODE_TC_SPLIT }rc=$? $(( $(date +%s) - s ))s: $(grep -E '^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \|' $R/$n.log | awk '{printf "b%s %s tok/s (%s ms)  ", $2, $6, $8}')" | tee -a $OUT/summary.txt; }
ok() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
fp8set() { local r=$1
  one old fp8 64 2048 fp8 $r; one A fp8 64 2048 fp8 $r; KILN_CUDA_DECODE_TC_SPLIT=1 one A fp8 64 2048 fp8 $r; one B fp8 64 2048 fp8 $r
  one old bf16 64 2048 fp8 $r; one A bf16 64 2048 fp8 $r; }
  big() { local v=$1 kv=$2 P=/tmp/$1/pack s=$(date +%s) a="" n=big_$1_kv$2 kvm=46000
  [ $kv = fp8 ] && a="--kv-cache-dtype fp8"; [ $kv = bf16 ] && kvm=90000
  LD_LIBRARY_PATH=$P/lib timeout 120 $P/kiln bench --backend cuda --load-format dummy --model $M --quantization fp8 --warmup 0 --repeat 1 \
    --kv-memory-mb $kvm --max-model-len 8320 --max-batch-tokens 8192 --max-num-seqs 64 --prompt-len 8192 --decode-steps 64 --batch 64 $a --json $R/$n.json > $R/$n.log 2>&1
  echo "$n rc=$? $(( $(date +%s) - s ))s: $(grep -E '^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \|' $R/$n.log | awk '{printf "b%s %s tok/s (%s ms)  ", $2, $6, $8}')" | tee -a $OUT/summary.txt; }
fp8set 1
echo "bench fp8 #1 done at $(( $(date +%s) - T0 ))s"
# issue 17's check (H200 only: the bf16 pool at 64 x 8,256 is 86.6 GB): batch 64 at 8,192 context,
# FP8 pool against bf16 pool, FP8 weights, same call
if grep -q H200 $OUT/smi.txt; then
  big A fp8; big A bf16; ok 420 && big old fp8; ok 470 && big B fp8
  echo "bench 8192 done at $(( $(date +%s) - T0 ))s"
fi
ok 450 && fp8set 2
echo "bench fp8 #2 done at $(( $(date +%s) - T0 ))s"
ok 500 && { one old bf16 64,128 512 bf16 1; one A bf16 64,128 512 bf16 1; }
echo "bench bf16 done at $(( $(date +%s) - T0 ))s"
cd $OUT && tar -czf logs.tgz t b && rm -rf t b
echo "all done at $(( $(date +%s) - T0 ))s"
