#!/bin/bash
# call H (session 18): branch attn4 (the bf16 decode kernel on a ring of 3 half tiles: 4 CTAs an
# SM) against main (74ee992): attention / step / model tests, then bf16 decode old new new old.
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
for v in new old; do rm -rf /tmp/$v; mkdir -p /tmp/$v; done
tar -xJf .gpu/pack.tar.xz -C /tmp/new; tar -xJf .gpu/pack_main_min.tar.xz -C /tmp/old
R=$OUT/r; mkdir -p $R
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > $R/smi.txt 2>&1; cat $R/smi.txt
export KILN_SHARED=$PWD/.gpu/fixtures
P=/tmp/new/pack; L=$R/t; mkdir -p $L
t() { local n=$1 s=$(date +%s); shift; LD_LIBRARY_PATH=$P/lib timeout 120 "$@" > $L/$n.log 2>&1; local rc=$?
  echo "$n rc=$rc $(( $(date +%s) - s ))s: $(grep -E 'passed, .* failed|ERROR SUMMARY' $L/$n.log | tail -1)" | tee -a $R/summary.txt
  grep -E '^FAIL|SKIP' $L/$n.log | head -5 | tee -a $R/summary.txt; }
t test_cuda_attention $P/test_cuda_attention
t test_cuda_step $P/test_cuda_step
M=.gpu/models/devstral-small-2505-shape/config.json
row() { grep -E '^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \|' $1 | awk '{printf "b%s dec %s (%s ms) | ", $2, $6, $8}'; }
bench() { local v=$1 tag=$2 s=$(date +%s); shift 2
  LD_LIBRARY_PATH=/tmp/$v/pack/lib timeout 100 /tmp/$v/pack/kiln bench --backend cuda --load-format dummy --model $M \
    --prompt-len 512 --decode-steps 64 --warmup 1 --repeat 1 "$@" --json $R/$tag.json > $R/$tag.md 2>&1
  echo "$tag rc=$? $(( $(date +%s) - s ))s: $(row $R/$tag.md)" | tee -a $R/summary.txt; }
B="--batch 32,64,128 --max-num-seqs 128 --kv-memory-mb 16000"
ok() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
ok 150 && bench old bf16_old1 $B
ok 180 && bench new bf16_new1 $B
ok 210 && bench new bf16_new2 $B
ok 240 && bench old bf16_old2 $B
ok 270 && bench new bf16_new_long --batch 64 --prompt-len 2048 --decode-steps 32 --max-num-seqs 64 --kv-memory-mb 16000
ok 290 && bench old bf16_old_long --batch 64 --prompt-len 2048 --decode-steps 32 --max-num-seqs 64 --kv-memory-mb 16000
echo "all done at $(( $(date +%s) - T0 ))s" | tee -a $R/summary.txt
cd $OUT && tar -czf r.tgz r && rm -rf r
