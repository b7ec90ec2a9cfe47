#!/bin/bash
# call A (session 17): the pack of the working tree (fp8 L2 prefetch, KILN_CUDA_FP8_PF): tests
# (fp8 with the prefetch bit check, attention, step), the fp8 product microbench, the FP8 decode
# with the prefetch off / on interleaved, then issue 17's long-context FP8 KV check.
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
mkdir -p /tmp/new; tar -xJf .gpu/pack.tar.xz -C /tmp/new
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > $OUT/smi.txt 2>&1; cat $OUT/smi.txt; cat .gpu/commit.txt
MEM=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
P=/tmp/new/pack; export LD_LIBRARY_PATH=$P/lib
L=$OUT/t; mkdir -p $L
t() { local n=$1 s=$(date +%s); shift; timeout 120 "$@" > $L/$n.log 2>&1; local rc=$?
  echo "$n rc=$rc $(( $(date +%s) - s ))s: $(grep -E 'passed, .* failed|ERROR SUMMARY' $L/$n.log | tail -1)" | tee -a $OUT/summary.txt
  grep '^FAIL' $L/$n.log | head -5; }
ok() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
KILN_FP8_BENCH=1 t test_cuda_fp8 $P/test_cuda_fp8
sed -n '/FP8 bench/,$p' $L/test_cuda_fp8.log | head -40 > $OUT/fp8_microbench.txt
t test_cuda_attention $P/test_cuda_attention
t test_cuda_step $P/test_cuda_step
echo "tests done at $(( $(date +%s) - T0 ))s" | tee -a $OUT/summary.txt
M=.gpu/models/devstral-small-2505-shape/config.json
row() { grep -E '^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \|' $1 | awk '{printf "b%s pf %s dec %s tok/s (%s ms) ttft %s ms | ", $2, $4, $6, $8, $11}'; }
B="$P/kiln bench --backend cuda --load-format dummy --model $M --prompt-len 512 --decode-steps 64 --warmup 1 --repeat 1 --quantization fp8 --max-num-seqs 16 --kv-memory-mb 4000"
for r in 1; do for pf in 0 1 2; do ok 150 || break
  s=$(date +%s); KILN_CUDA_FP8_PF=$pf timeout 80 $B --batch 1,8 --json $OUT/fp8_pf${pf}_$r.json > $OUT/fp8_pf${pf}_$r.md 2>&1
  echo "fp8 pf=$pf #$r rc=$? $(( $(date +%s) - s ))s: $(row $OUT/fp8_pf${pf}_$r.md)" | tee -a $OUT/summary.txt; done; done
PL=8192; [ "$MEM" -lt 100000 ] && PL=4096
ok 120 && { s=$(date +%s); timeout 170 bash bench/kv_fp8_long.sh --kiln $P/kiln --out $OUT/kvlong --model $M --prompt-len $PL > $OUT/kvlong.txt 2>&1
  echo "kv_fp8_long p$PL rc=$? $(( $(date +%s) - s ))s" | tee -a $OUT/summary.txt; tail -8 $OUT/kvlong.txt | tee -a $OUT/summary.txt; }
cd $OUT && tar -czf logs.tgz t && rm -rf t
echo "all done at $(( $(date +%s) - T0 ))s"
