#!/bin/bash
# call D (session 22): Q8_0 on qmma_x from 3 rows + the GEMV's 4-byte loads above one row (new) against call C's module (old)
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
R=$OUT; OUT=$OUT/r; mkdir -p $OUT
mkdir -p n o/pack && tar -xJf .gpu/pack_new.tar.xz -C n && tar -xJf .gpu/old_c.tar.xz -C o/pack
cp n/pack/kiln o/pack/kiln && ln -s $PWD/n/pack/lib o/pack/lib
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/smi.txt
P=n/pack
s=$(date +%s); LD_LIBRARY_PATH=$P/lib timeout 60 $P/test_cuda_qlinear > $OUT/qlinear.log 2>&1
echo "qlinear new rc=$? $(( $(date +%s) - s ))s $(grep -E 'passed, .* failed' $OUT/qlinear.log | tail -1)" | tee -a $OUT/summary.txt
M=.gpu/models/devstral-small-2505-shape/config.json
row() { grep -E '^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \|' $1 | awk '{printf "b%s %s (%s ms) | ", $2, $6, $8}'; }
bench() { local tag=$1 P=$2 s=$(date +%s); shift 2
  LD_LIBRARY_PATH=$P/lib timeout 60 $P/kiln bench --backend cuda --load-format dummy --model $M \
    --prompt-len 512 --decode-steps 64 --warmup 1 --repeat 1 "$@" --json $OUT/$tag.json > $OUT/$tag.md 2>&1
  echo "$tag rc=$? $(( $(date +%s) - s ))s: $(row $OUT/$tag.md)" | tee -a $OUT/summary.txt; }
B="--batch 1,2,3,4,8 --max-num-seqs 8 --kv-memory-mb 4000"
bench q8_old o/pack --dummy-quant q8_0 $B
bench q8_new n/pack --dummy-quant q8_0 $B
bench q8_new2 n/pack --dummy-quant q8_0 $B
bench q8_old2 o/pack --dummy-quant q8_0 $B
cd $R && tar -czf r.tgz r && rm -rf r
