#!/bin/bash
# call A (session 19): tests of 195a294 + the L2 prefetch branch (this tree), then FP8 / bf16
# decode with KILN_CUDA_L2PF_MB off / on (modes 1-3), interleaved, and traces of FP8 b1.
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
rm -rf /tmp/new; mkdir -p /tmp/new; tar -xJf .gpu/pack.tar.xz -C /tmp/new
R=$OUT/r; mkdir -p $R
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > $R/smi.txt 2>&1; cat $R/smi.txt
export KILN_SHARED=$PWD/.gpu/fixtures
P=/tmp/new/pack; L=$R/t; mkdir -p $L
t() { local n=$1 s=$(date +%s); shift; LD_LIBRARY_PATH=$P/lib timeout 150 "$@" > $L/$n.log 2>&1; local rc=$?
  echo "$n rc=$rc $(( $(date +%s) - s ))s: $(grep -E 'passed, .* failed|ERROR SUMMARY' $L/$n.log | tail -1)" | tee -a $R/summary.txt
  grep -E '^FAIL|SKIP|e4m3 conversion|L2 prefetch' $L/$n.log | head -8 | tee -a $R/summary.txt; }
ok() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
for x in fp8 swiglu model step engine_sample; do t test_cuda_$x $P/test_cuda_$x; done
echo "tests done at $(( $(date +%s) - T0 ))s" | tee -a $R/summary.txt
M=.gpu/models/devstral-small-2505-shape/config.json
row() { grep -E '^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \|' $1 | awk '{printf "b%s dec %s (%s ms) | ", $2, $6, $8}'; }
bench() { local tag=$1 s=$(date +%s); shift
  LD_LIBRARY_PATH=$P/lib timeout 120 $P/kiln bench --backend cuda --load-format dummy --model $M \
    --prompt-len 512 --decode-steps 64 --warmup 1 --repeat 1 "$@" --json $R/$tag.json > $R/$tag.md 2>&1
  echo "$tag rc=$? $(( $(date +%s) - s ))s: $(row $R/$tag.md)" | tee -a $R/summary.txt; }
F="--quantization fp8 --batch 1,2,4,8,16 --max-num-seqs 16 --kv-memory-mb 8000"
ok 200 && bench fp8_off1 $F
ok 215 && KILN_CUDA_L2PF_MB=32 KILN_CUDA_L2PF_MODE=1 bench fp8_m1_32 $F
ok 230 && KILN_CUDA_L2PF_MB=32 KILN_CUDA_L2PF_MODE=2 bench fp8_m2_32 $F
ok 245 && KILN_CUDA_L2PF_MB=32 KILN_CUDA_L2PF_MODE=3 bench fp8_m3_32 $F
ok 260 && bench fp8_off2 $F
ok 275 && KILN_CUDA_L2PF_MB=16 KILN_CUDA_L2PF_MODE=1 bench fp8_m1_16 $F
ok 290 && KILN_CUDA_L2PF_MB=64 KILN_CUDA_L2PF_MODE=1 bench fp8_m1_64 $F
B="--batch 1,16 --max-num-seqs 16 --kv-memory-mb 8000"
ok 320 && bench bf16_off $B
ok 345 && KILN_CUDA_L2PF_MB=32 KILN_CUDA_L2PF_MODE=1 bench bf16_m1_32 $B
ok 370 && KILN_CUDA_L2PF_MB=32 KILN_CUDA_L2PF_MODE=3 bench bf16_m3_32 $B
tr() { local tag=$1; shift; mkdir -p $R/$tag
  LD_LIBRARY_PATH=$P/lib timeout 70 bash scripts/cuda_trace.sh --lib $P/libkiln_cupti_trace.so --out $R/$tag -- \
    $P/kiln bench --backend cuda --load-format dummy --model $M --prompt-len 512 --warmup 0 --repeat 1 "$@" > $R/$tag/run.log 2>&1
  python3 bench/trace_steps.py $R/$tag/kiln_trace.json --kind decode --top 40 > $R/$tag.txt 2>&1
  rm -f $R/$tag/kiln_trace.json; head -1 $R/$tag.txt | tee -a $R/summary.txt; }
ok 420 && KILN_CUDA_PDL=0 tr tr_fp8_b1_off --quantization fp8 --batch 1 --decode-steps 32 --kv-memory-mb 4000
ok 460 && KILN_CUDA_PDL=0 KILN_CUDA_L2PF_MB=32 KILN_CUDA_L2PF_MODE=1 tr tr_fp8_b1_m1 --quantization fp8 --batch 1 --decode-steps 32 --kv-memory-mb 4000
echo "all done at $(( $(date +%s) - T0 ))s" | tee -a $R/summary.txt
cd $OUT && tar -czf r.tgz r && rm -rf r
