#!/bin/bash
# issue 16 call 3 (pack of d19112a: o's int8 blocks from attention's combine, the LM head's from the
# final norm): the GPU tests it touches (attention + its memcheck, gguf, model, step), the
# fail-check (.gpu/broken.tar.xz: test_cuda_attention with a combine that quantizes the unrounded
# values, test_cuda_gguf without the quantize_x after the prefill tiles: both must fail), then
# kiln bench interleaved base new new base (base = 8dfba8b's pack) for q4_k_m, q8_0 at batch
# 1,2,4 and fp8 at batch 1, then a CUPTI trace of the new pack's q4_k_m batch 1
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
for v in new base brk; do mkdir -p /tmp/$v; done
tar -xJf .gpu/pack.tar.xz -C /tmp/new & tar -xJf .gpu/pack_base.tar.xz -C /tmp/base & tar -xJf .gpu/broken.tar.xz -C /tmp/brk & wait
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > $OUT/smi.txt 2>&1; cat $OUT/smi.txt
git log --oneline -1 > $OUT/commit.txt 2>&1; cat $OUT/commit.txt
export KILN_SHARED=$PWD/.fixtures
P=/tmp/new/pack; export LD_LIBRARY_PATH=$P/lib
L=$OUT/t; mkdir -p $L
t() { local n=$1 s=$(date +%s); shift; timeout 150 "$@" > $L/$n.log 2>&1; local rc=$?
  echo "$n rc=$rc $(( $(date +%s) - s ))s: $(grep -E 'passed, .* failed|ERROR SUMMARY' $L/$n.log | tail -1)" | tee -a $OUT/summary.txt
  grep '^FAIL' $L/$n.log | head -5; }
t test_cuda_attention $P/test_cuda_attention
t memcheck_attention compute-sanitizer --tool memcheck --error-exitcode 3 $P/test_cuda_attention
t test_cuda_step $P/test_cuda_step
t test_cuda_gguf $P/test_cuda_gguf
t test_cuda_model $P/test_cuda_model
t broken_test_cuda_attention /tmp/brk/broken/test_cuda_attention
echo "tests done at $(( $(date +%s) - T0 ))s"
M=.gpu/models/devstral-small-2505-shape/config.json
R=$OUT/b; mkdir -p $R
BA="--backend cuda --load-format dummy --model $M --prompt-len 512 --warmup 1 --repeat 1 --max-num-seqs 16 --kv-memory-mb 8000"
one() { local v=$1 q=$2 b=$3 r=$4 P=/tmp/$1/pack a="--dummy-quant $2" s=$(date +%s)
  [ $q = fp8 ] && a="--quantization fp8"
  LD_LIBRARY_PATH=$P/lib timeout 70 $P/kiln bench $BA --decode-steps 64 --batch $b $a --json $R/${q}_${v}_$r.json > $R/${q}_${v}_$r.log 2>&1
  echo "$q $v $r rc=$? $(( $(date +%s) - s ))s: $(grep -E '^\| (1|2|4|16) \| [0-9.]+ \| [0-9.]+ \|' $R/${q}_${v}_$r.log | awk '{printf "b%s %s (%s)  ", $2, $6, $8}')" | tee -a $OUT/summary.txt; }
for q in q4_k_m q8_0 fp8; do
  b=1,2,4; [ $q = fp8 ] && b=1
  one base $q $b 1; one new $q $b 1; one new $q $b 2; one base $q $b 2
done
echo "bench done at $(( $(date +%s) - T0 ))s"
mkdir -p $OUT/tr
LD_LIBRARY_PATH=$P/lib timeout 60 bash scripts/cuda_trace.sh --lib $P/libkiln_cupti_trace.so --out $OUT/tr -- $P/kiln bench $BA --decode-steps 32 --dummy-quant q4_k_m --batch 1 > $OUT/tr/run.log 2>&1
echo "== trace rc=$?"; rm -f $OUT/tr/kiln_trace.json
grep -E "steps \(|quantize_x|add_rmsnorm|swiglu|combine|check:" $OUT/tr/kiln_trace_summary.txt | tee -a $OUT/summary.txt
echo "trace done at $(( $(date +%s) - T0 ))s"
if [ $(( $(date +%s) - T0 )) -lt 330 ]; then t broken_test_cuda_gguf /tmp/brk/broken/test_cuda_gguf; else echo "time: broken gguf skipped" | tee -a $OUT/summary.txt; fi
cd $OUT && tar -czf logs.tgz t b tr && rm -rf t b tr
echo "all done at $(( $(date +%s) - T0 ))s"
