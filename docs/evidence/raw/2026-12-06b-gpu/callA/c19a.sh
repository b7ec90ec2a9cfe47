#!/bin/bash
# H200 call A (session 18). new = the working tree (8ad4098's warps rule + FP8 gate|up sums in bf16),
# old = c35fb97's pack. Tests of new (swiglu, fp8, model, step, gemm), FP8 decode b1..16 + prefill
# old/new interleaved, bf16 beside (prefill ratio), then CUPTI traces: FP8 b1 decode, FP8 1 x 512
# prefill, bf16 b64 decode with GEMM tuning.
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
for v in new old; do mkdir -p /tmp/$v; done
tar -xJf .gpu/pack.tar.xz -C /tmp/new; tar -xJf .gpu/pack_c35_min.tar.xz -C /tmp/old
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > $OUT/smi.txt 2>&1; cat $OUT/smi.txt
export KILN_SHARED=$PWD/.gpu/fixtures
P=/tmp/new/pack
L=$OUT/t; mkdir -p $L
t() { local n=$1 s=$(date +%s); shift; LD_LIBRARY_PATH=$P/lib timeout 150 "$@" > $L/$n.log 2>&1; local rc=$?
  echo "$n rc=$rc $(( $(date +%s) - s ))s: $(grep -E 'passed, .* failed|ERROR SUMMARY' $L/$n.log | tail -1)" | tee -a $OUT/summary.txt
  grep -E '^FAIL|SKIP' $L/$n.log | head -5 | tee -a $OUT/summary.txt; }
ok() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
t test_cuda_swiglu $P/test_cuda_swiglu
t test_cuda_fp8 $P/test_cuda_fp8
t test_cuda_model $P/test_cuda_model
t test_cuda_step $P/test_cuda_step
t test_cuda_gemm $P/test_cuda_gemm
echo "tests done at $(( $(date +%s) - T0 ))s" | tee -a $OUT/summary.txt
M=.gpu/models/devstral-small-2505-shape/config.json
row() { grep -E '^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \|' $1 | awk '{printf "b%s pf %s dec %s (%s ms) ttft %s | ", $2, $4, $6, $8, $11}'; }
bench() { local v=$1 tag=$2 s=$(date +%s); shift 2
  LD_LIBRARY_PATH=/tmp/$v/pack/lib timeout 90 /tmp/$v/pack/kiln bench --backend cuda --load-format dummy --model $M \
    --prompt-len 512 --decode-steps 64 --warmup 1 --repeat 1 --max-num-seqs 64 --kv-memory-mb 8000 "$@" \
    --json $OUT/$tag.json > $OUT/$tag.md 2>&1
  echo "$tag rc=$? $(( $(date +%s) - s ))s: $(row $OUT/$tag.md)" | tee -a $OUT/summary.txt; }
F="--quantization fp8 --batch 1,2,4,8,16"
ok 330 && bench old fp8_old1 $F
ok 345 && bench new fp8_new1 $F
ok 360 && bench new bf16_new1 --batch 1,16
ok 375 && bench new fp8_new2 $F
ok 390 && bench old fp8_old2 $F
ok 405 && bench old bf16_old1 --batch 1,16
tr() { local tag=$1 kind=$2 s=$(date +%s); shift 2; mkdir -p $OUT/$tag
  LD_LIBRARY_PATH=$P/lib timeout 70 bash scripts/cuda_trace.sh --lib $P/libkiln_cupti_trace.so --out $OUT/$tag -- \
    $P/kiln bench --backend cuda --load-format dummy --model $M --prompt-len 512 --warmup 0 --repeat 1 "$@" > $OUT/$tag/run.log 2>&1
  echo "trace $tag rc=$? $(( $(date +%s) - s ))s" | tee -a $OUT/summary.txt
  python3 bench/trace_steps.py $OUT/$tag/kiln_trace.json --kind $kind --top 30 > $OUT/$tag.txt 2>&1; head -3 $OUT/$tag.txt | tee -a $OUT/summary.txt
  rm -f $OUT/$tag/kiln_trace.json; }
ok 430 && tr tr_fp8_b1 decode --quantization fp8 --batch 1 --decode-steps 32 --kv-memory-mb 4000
ok 455 && tr tr_fp8_pf prefill --quantization fp8 --batch 1 --decode-steps 2 --kv-memory-mb 4000
ok 480 && KILN_CUDA_GEMM_TUNE=8 tr tr_bf16_b64 decode --batch 64 --decode-steps 16 --max-num-seqs 64 --kv-memory-mb 8000
cd $OUT && tar -czf logs.tgz t && rm -rf t
echo "all done at $(( $(date +%s) - T0 ))s"
