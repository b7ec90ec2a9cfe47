#!/bin/bash
# call C (session 18): new = working tree (gate|up bf16 sums, RoPE factors once a step, quant_pmax
# warp reduce) vs old = c35fb97. Tests, then bf16 / FP8 interleaved old new new old, traces.
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
  grep -E '^FAIL|SKIP' $L/$n.log | head -5 | tee -a $R/summary.txt; }
ok() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
for x in rope_kv swiglu fp8 model step families dummy engine_sample; do t test_cuda_$x $P/test_cuda_$x; done
ok 200 && t test_cuda_oom $P/test_cuda_oom
echo "tests done at $(( $(date +%s) - T0 ))s" | tee -a $R/summary.txt
M=.gpu/models/devstral-small-2505-shape/config.json
row() { grep -E '^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \|' $1 | awk '{printf "b%s pf %s dec %s (%s ms) ttft %s | ", $2, $4, $6, $8, $11}'; }
bench() { local v=$1 tag=$2 s=$(date +%s); shift 2
  LD_LIBRARY_PATH=/tmp/$v/pack/lib timeout 90 /tmp/$v/pack/kiln bench --backend cuda --load-format dummy --model $M \
    --prompt-len 512 --decode-steps 64 --warmup 1 --repeat 1 --max-num-seqs 64 --kv-memory-mb 8000 "$@" \
    --json $R/$tag.json > $R/$tag.md 2>&1
  echo "$tag rc=$? $(( $(date +%s) - s ))s: $(row $R/$tag.md)" | tee -a $R/summary.txt; }
for r in 1 2; do
  for v in old new; do [ $r = 2 ] && v=$([ $v = old ] && echo new || echo old)
    ok 420 && bench $v fp8_${v}$r --quantization fp8 --batch 1,16
    ok 440 && bench $v bf16_${v}$r --batch 1,64
  done
done
tr() { local tag=$1 kind=$2; shift 2; mkdir -p $R/$tag
  LD_LIBRARY_PATH=$P/lib timeout 70 bash scripts/cuda_trace.sh --lib $P/libkiln_cupti_trace.so --out $R/$tag -- \
    $P/kiln bench --backend cuda --load-format dummy --model $M --prompt-len 512 --warmup 0 --repeat 1 "$@" > $R/$tag/run.log 2>&1
  python3 bench/trace_steps.py $R/$tag/kiln_trace.json --kind $kind --top 40 > $R/$tag.txt 2>&1
  rm -f $R/$tag/kiln_trace.json; head -1 $R/$tag.txt | tee -a $R/summary.txt; }
ok 480 && tr tr_fp8_pf prefill --quantization fp8 --batch 1 --decode-steps 2 --kv-memory-mb 4000
ok 500 && tr tr_bf16_pf prefill --batch 1 --decode-steps 2 --kv-memory-mb 4000
ok 520 && tr tr_fp8_b1 decode --quantization fp8 --batch 1 --decode-steps 32 --kv-memory-mb 4000
echo "all done at $(( $(date +%s) - T0 ))s" | tee -a $R/summary.txt
cd $OUT && tar -czf r.tgz r && rm -rf r
