#!/bin/bash
# issue 17, FP8 KV decode with the codes read into registers (attention_decode_f8r_kernel):
# test_cuda_attention (+ memcheck, + a broken build that must fail), then kiln bench on FP8
# weights at batch 64 x prompt 2048 (and 32 x 4096), FP8 pool old (pack_old: the shared-memory
# decode) / new against the bf16 pool, interleaved, then a CUPTI trace of the attention kernels
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
for v in new old brk; do mkdir -p /tmp/$v; done
tar -xJf .gpu/pack.tar.xz -C /tmp/new & tar -xJf .gpu/pack_old.tar.xz -C /tmp/old & tar -xJf .gpu/broken.tar.xz -C /tmp/brk & wait
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > $OUT/smi.txt 2>&1; cat $OUT/smi.txt
P=/tmp/new/pack; export LD_LIBRARY_PATH=$P/lib
L=$OUT/t; mkdir -p $L
t() { local n=$1 s=$(date +%s); shift; timeout 150 "$@" > $L/$n.log 2>&1; local rc=$?
  echo "$n rc=$rc $(( $(date +%s) - s ))s: $(grep -E 'passed, .* failed|ERROR SUMMARY' $L/$n.log | tail -1)" | tee -a $OUT/summary.txt
  grep '^FAIL' $L/$n.log | head -5; }
t test_cuda_attention $P/test_cuda_attention
t memcheck_attention compute-sanitizer --tool memcheck --error-exitcode 3 $P/test_cuda_attention
t broken_test_cuda_attention /tmp/brk/broken/test_cuda_attention
echo "tests done at $(( $(date +%s) - T0 ))s"
M=.gpu/models/devstral-small-2505-shape/config.json
R=$OUT/b; mkdir -p $R
BA="--backend cuda --load-format dummy --model $M --quantization fp8 --warmup 1 --repeat 1 --kv-memory-mb 24000 --max-model-len 4352"
one() { local v=$1 kv=$2 b=$3 pl=$4 r=$5 P=/tmp/$1/pack s=$(date +%s) a=""
  [ $kv = fp8 ] && a="--kv-cache-dtype fp8"
  LD_LIBRARY_PATH=$P/lib timeout 90 $P/kiln bench $BA --max-num-seqs $b --prompt-len $pl --decode-steps 64 --batch $b $a --json $R/${v}_kv${kv}_b${b}_p${pl}_$r.json > $R/${v}_kv${kv}_b${b}_p${pl}_$r.log 2>&1
  echo "$v kv=$kv b$b p$pl #$r rc=$? $(( $(date +%s) - s ))s: $(grep -E '^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \|' $R/${v}_kv${kv}_b${b}_p${pl}_$r.log | awk '{printf "b%s %s tok/s (%s ms)  ", $2, $6, $8}')" | tee -a $OUT/summary.txt; }
one old fp8 64 2048 1; one new fp8 64 2048 1; one new bf16 64 2048 1; one new fp8 64 2048 2; one old fp8 64 2048 2; one new bf16 64 2048 2
echo "bench 64x2048 done at $(( $(date +%s) - T0 ))s"
one new fp8 32 4096 1; one old fp8 32 4096 1; one new bf16 32 4096 1
echo "bench 32x4096 done at $(( $(date +%s) - T0 ))s"
for v in new old; do
  if [ $(( $(date +%s) - T0 )) -lt 420 ]; then
    mkdir -p $OUT/tr_$v
    LD_LIBRARY_PATH=/tmp/$v/pack/lib timeout 80 bash scripts/cuda_trace.sh --lib /tmp/$v/pack/libkiln_cupti_trace.so --out $OUT/tr_$v -- /tmp/$v/pack/kiln bench $BA --max-num-seqs 64 --prompt-len 2048 --decode-steps 16 --batch 64 --kv-cache-dtype fp8 > $OUT/tr_$v/run.log 2>&1
    echo "== trace $v rc=$?"; rm -f $OUT/tr_$v/kiln_trace.json
    grep -E "attention|steps \(" $OUT/tr_$v/kiln_trace_summary.txt | head -8 | tee -a $OUT/summary.txt
  fi
done
cd $OUT && tar -czf logs.tgz t b && rm -rf t b
echo "all done at $(( $(date +%s) - T0 ))s"
