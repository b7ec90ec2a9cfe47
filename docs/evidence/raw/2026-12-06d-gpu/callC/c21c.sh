#!/bin/bash
# call C (session 20): qmma_x v1 (registers) vs v2 (shared-memory ring) vs base, same card:
# test_cuda_qlinear with its bench for v1 and v2, kiln bench q4_k_m interleaved.
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
R=$OUT/r; mkdir -p $R
tar -xJf .gpu/packs3.tar.xz -C /tmp
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > $R/smi.txt 2>&1; cat $R/smi.txt
ok() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
for v in v1 v2; do P=/tmp/$v/pack
  KILN_QGEMV_BENCH=1 LD_LIBRARY_PATH=$P/lib timeout 200 $P/test_cuda_qlinear > $R/qlinear_$v.log 2>&1
  echo "qlinear $v rc=$? $(grep -E 'passed, .* failed' $R/qlinear_$v.log | tail -1)" | tee -a $R/summary.txt; done
M=.gpu/models/devstral-small-2505-shape/config.json
row() { grep -E '^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \|' $1 | awk '{printf "b%s dec %s (%s ms) | ", $2, $6, $8}'; }
bench() { local tag=$1 pk=/tmp/$2/pack s=$(date +%s); shift 2
  LD_LIBRARY_PATH=$pk/lib timeout 150 $pk/kiln bench --backend cuda --load-format dummy --model $M \
    --prompt-len 512 --decode-steps 64 --warmup 1 --repeat 1 "$@" --json $R/$tag.json > $R/$tag.md 2>&1
  echo "$tag rc=$? $(( $(date +%s) - s ))s: $(row $R/$tag.md)" | tee -a $R/summary.txt; }
Q="--dummy-quant q4_k_m --batch 4,8,16 --max-num-seqs 16 --kv-memory-mb 8000"
for r in 1 2; do for v in base v1 v2; do ok 400 && bench ${v}_$r $v $Q; done; done
echo "all done at $(( $(date +%s) - T0 ))s" | tee -a $R/summary.txt
cd $OUT && tar -czf r.tgz r && rm -rf r
