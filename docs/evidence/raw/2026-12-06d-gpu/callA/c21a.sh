#!/bin/bash
# call A (session 20): where Q4_K_M's batch-16 step goes: qlinear kernel timings, kiln bench
# q4_k_m b1..16, CUPTI traces of the b16 and b1 decode steps.
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
rm -rf /tmp/new; mkdir -p /tmp/new; tar -xJf .gpu/pack.tar.xz -C /tmp/new
R=$OUT/r; mkdir -p $R
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > $R/smi.txt 2>&1; cat $R/smi.txt
P=/tmp/new/pack
ok() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
KILN_QGEMV_BENCH=1 LD_LIBRARY_PATH=$P/lib timeout 200 $P/test_cuda_qlinear > $R/qlinear.log 2>&1
echo "qlinear rc=$? at $(( $(date +%s) - T0 ))s" | tee -a $R/summary.txt
M=.gpu/models/devstral-small-2505-shape/config.json
row() { grep -E '^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \|' $1 | awk '{printf "b%s dec %s (%s ms) | ", $2, $6, $8}'; }
bench() { local tag=$1 s=$(date +%s); shift
  LD_LIBRARY_PATH=$P/lib timeout 150 $P/kiln bench --backend cuda --load-format dummy --model $M \
    --prompt-len 512 --decode-steps 64 --warmup 1 --repeat 1 "$@" --json $R/$tag.json > $R/$tag.md 2>&1
  echo "$tag rc=$? $(( $(date +%s) - s ))s: $(row $R/$tag.md)" | tee -a $R/summary.txt; }
ok 330 && bench q4km --dummy-quant q4_k_m --batch 1,4,8,16 --max-num-seqs 16 --kv-memory-mb 8000
tr() { local tag=$1; shift; mkdir -p $R/$tag
  LD_LIBRARY_PATH=$P/lib timeout 80 bash scripts/cuda_trace.sh --lib $P/libkiln_cupti_trace.so --out $R/$tag -- \
    $P/kiln bench --backend cuda --load-format dummy --model $M --prompt-len 512 --warmup 0 --repeat 1 "$@" > $R/$tag/run.log 2>&1
  python3 bench/trace_steps.py $R/$tag/kiln_trace.json --kind decode --top 40 > $R/$tag.txt 2>&1
  rm -f $R/$tag/kiln_trace.json; head -1 $R/$tag.txt | tee -a $R/summary.txt; }
ok 430 && KILN_CUDA_PDL=0 tr tr_q4km_b16 --dummy-quant q4_k_m --batch 16 --max-num-seqs 16 --decode-steps 16 --kv-memory-mb 4000
ok 500 && KILN_CUDA_PDL=0 tr tr_q4km_b1 --dummy-quant q4_k_m --batch 1 --decode-steps 16 --kv-memory-mb 4000
echo "all done at $(( $(date +%s) - T0 ))s" | tee -a $R/summary.txt
cd $OUT && tar -czf r.tgz r && rm -rf r
