#!/bin/bash
# call C (session 19): FP8 weight-only (forced sm_86 target) against W8A8 at 1..8 rows, same
# call; traces of both at b1.
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
rm -rf /tmp/new; mkdir -p /tmp/new; tar -xJf .gpu/pack.tar.xz -C /tmp/new
R=$OUT/r; mkdir -p $R
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > $R/smi.txt 2>&1; cat $R/smi.txt
P=/tmp/new/pack
ok() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
M=.gpu/models/devstral-small-2505-shape/config.json
row() { grep -E '^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \|' $1 | awk '{printf "b%s dec %s (%s ms) | ", $2, $6, $8}'; }
bench() { local tag=$1 s=$(date +%s); shift
  LD_LIBRARY_PATH=$P/lib timeout 120 $P/kiln bench --backend cuda --load-format dummy --model $M \
    --prompt-len 512 --decode-steps 64 --warmup 1 --repeat 1 "$@" --json $R/$tag.json > $R/$tag.md 2>&1
  echo "$tag rc=$? $(( $(date +%s) - s ))s: $(row $R/$tag.md)" | tee -a $R/summary.txt; }
F="--quantization fp8 --batch 1,2,4,8 --max-num-seqs 8 --kv-memory-mb 8000"
bench fp8_a8_1 $F
KILN_CUDA_TARGET=sm_86 bench fp8_wo86_1 $F
KILN_CUDA_TARGET=sm_89 bench fp8_a8_89 $F
KILN_CUDA_PDL=0 bench fp8_a8_nopdl $F
bench fp8_a8_2 $F
KILN_CUDA_TARGET=sm_86 bench fp8_wo86_2 $F
tr() { local tag=$1; shift; mkdir -p $R/$tag
  LD_LIBRARY_PATH=$P/lib timeout 70 bash scripts/cuda_trace.sh --lib $P/libkiln_cupti_trace.so --out $R/$tag -- \
    $P/kiln bench --backend cuda --load-format dummy --model $M --prompt-len 512 --warmup 0 --repeat 1 "$@" > $R/$tag/run.log 2>&1
  python3 bench/trace_steps.py $R/$tag/kiln_trace.json --kind decode --top 40 > $R/$tag.txt 2>&1
  rm -f $R/$tag/kiln_trace.json; head -1 $R/$tag.txt | tee -a $R/summary.txt; }
ok 200 && KILN_CUDA_TARGET=sm_86 tr tr_fp8_b1_wo --quantization fp8 --batch 1 --decode-steps 32 --kv-memory-mb 4000
ok 240 && KILN_CUDA_PDL=0 tr tr_fp8_b4_a8 --quantization fp8 --batch 4 --decode-steps 32 --kv-memory-mb 4000
echo "all done at $(( $(date +%s) - T0 ))s" | tee -a $R/summary.txt
cd $OUT && tar -czf r.tgz r && rm -rf r
