#!/bin/bash
# call B (session 20): qmma_x (x in shared memory, split-K): test_cuda_qlinear (+ bench), test_cuda_gguf,
# kiln bench q4_k_m base vs new interleaved, trace of the new b16 step.
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
rm -rf /tmp/new /tmp/base; mkdir -p /tmp/new /tmp/base; tar -xJf .gpu/pack.tar.xz -C /tmp/new; tar -xJf .gpu/pack_base.tar.xz -C /tmp/base
R=$OUT/r; mkdir -p $R
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > $R/smi.txt 2>&1; cat $R/smi.txt
export KILN_SHARED=$PWD/.gpu/fixtures
P=/tmp/new/pack; B=/tmp/base/pack
ok() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
t() { local n=$1 s=$(date +%s); shift; LD_LIBRARY_PATH=$P/lib timeout 200 "$@" > $R/$n.log 2>&1; local rc=$?
  echo "$n rc=$rc $(( $(date +%s) - s ))s: $(grep -E 'passed, .* failed' $R/$n.log | tail -1)" | tee -a $R/summary.txt
  grep -E '^FAIL|SKIP' $R/$n.log | head -8 | tee -a $R/summary.txt; }
KILN_QGEMV_BENCH=1 t qlinear $P/test_cuda_qlinear
t gguf $P/test_cuda_gguf
M=.gpu/models/devstral-small-2505-shape/config.json
row() { grep -E '^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \|' $1 | awk '{printf "b%s dec %s (%s ms) | ", $2, $6, $8}'; }
bench() { local tag=$1 pk=$2 s=$(date +%s); shift 2
  LD_LIBRARY_PATH=$pk/lib timeout 150 $pk/kiln bench --backend cuda --load-format dummy --model $M \
    --prompt-len 512 --decode-steps 64 --warmup 1 --repeat 1 "$@" --json $R/$tag.json > $R/$tag.md 2>&1
  echo "$tag rc=$? $(( $(date +%s) - s ))s: $(row $R/$tag.md)" | tee -a $R/summary.txt; }
Q="--dummy-quant q4_k_m --batch 1,4,8,16 --max-num-seqs 16 --kv-memory-mb 8000"
ok 300 && bench base1 $B $Q
ok 330 && bench new1 $P $Q
ok 360 && bench base2 $B $Q
ok 390 && bench new2 $P $Q
tr() { local tag=$1; shift; mkdir -p $R/$tag
  LD_LIBRARY_PATH=$P/lib timeout 80 bash scripts/cuda_trace.sh --lib $P/libkiln_cupti_trace.so --out $R/$tag -- \
    $P/kiln bench --backend cuda --load-format dummy --model $M --prompt-len 512 --warmup 0 --repeat 1 "$@" > $R/$tag/run.log 2>&1
  python3 bench/trace_steps.py $R/$tag/kiln_trace.json --kind decode --top 40 > $R/$tag.txt 2>&1
  rm -f $R/$tag/kiln_trace.json; head -1 $R/$tag.txt | tee -a $R/summary.txt; }
ok 460 && KILN_CUDA_PDL=0 tr tr_q4km_b16 --dummy-quant q4_k_m --batch 16 --max-num-seqs 16 --decode-steps 16 --kv-memory-mb 4000
echo "all done at $(( $(date +%s) - T0 ))s" | tee -a $R/summary.txt
cd $OUT && tar -czf r.tgz r && rm -rf r
