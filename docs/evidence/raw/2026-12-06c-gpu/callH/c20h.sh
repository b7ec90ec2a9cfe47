#!/bin/bash
# call H (session 19): the L2 prefetch branch on GGUF Q4_K_M / Q8_0 at 4..8 rows (explicit MB) against off
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
rm -rf /tmp/new; mkdir -p /tmp/new; tar -xJf .gpu/pack.tar.xz -C /tmp/new
R=$OUT/r; mkdir -p $R
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > $R/smi.txt 2>&1; cat $R/smi.txt
P=/tmp/new/pack
M=.gpu/models/devstral-small-2505-shape/config.json
row() { grep -E '^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \|' $1 | awk '{printf "b%s dec %s (%s ms) | ", $2, $6, $8}'; }
bench() { local tag=$1 s=$(date +%s); shift
  LD_LIBRARY_PATH=$P/lib timeout 120 $P/kiln bench --backend cuda --load-format dummy --model $M \
    --prompt-len 512 --decode-steps 64 --warmup 1 --repeat 1 "$@" --json $R/$tag.json > $R/$tag.md 2>&1
  echo "$tag rc=$? $(( $(date +%s) - s ))s: $(row $R/$tag.md)" | tee -a $R/summary.txt; }
ok() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
Q="--dummy-quant q4_k_m --batch 4,8 --max-num-seqs 8 --kv-memory-mb 8000"
bench q4km_off1 $Q
KILN_CUDA_L2PF_MB=32 bench q4km_pf1 $Q
KILN_CUDA_L2PF_MB=32 bench q4km_pf2 $Q
bench q4km_off2 $Q
Q8="--dummy-quant q8_0 --batch 4,8 --max-num-seqs 8 --kv-memory-mb 8000"
ok 150 && bench q8_off1 $Q8
ok 170 && KILN_CUDA_L2PF_MB=32 bench q8_pf1 $Q8
B="--batch 4,8 --max-num-seqs 8 --kv-memory-mb 8000"
ok 190 && bench bf16_off1 $B
ok 210 && KILN_CUDA_L2PF_MB=32 bench bf16_pf1 $B
echo "all done at $(( $(date +%s) - T0 ))s" | tee -a $R/summary.txt
cd $OUT && tar -czf r.tgz r && rm -rf r
