#!/bin/bash
# call B (session 21, warm H100): kiln bench q4_k_m variant 0 vs 16 (2 n-tiles), then gguf_vs_llamacpp q8_0,q6_k
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
[ -x build-cuda/pack/kiln ] || { rm -rf build-cuda; mkdir -p build-cuda && tar -xJf .gpu/pack_full.tar.xz -C build-cuda; }
P=$PWD/build-cuda/pack; R=$OUT/r; mkdir -p $R
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee $R/smi.txt
M=.gpu/models/devstral-small-2505-shape/config.json
row() { grep -E '^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \|' $1 | awk '{printf "b%s %s (%s ms) | ", $2, $6, $8}'; }
bench() { local tag=$1 s=$(date +%s); shift
  LD_LIBRARY_PATH=$P/lib timeout 100 $P/kiln bench --backend cuda --load-format dummy --model $M \
    --prompt-len 512 --decode-steps 64 --warmup 1 --repeat 1 "$@" --json $R/$tag.json > $R/$tag.md 2>&1
  echo "$tag rc=$? $(( $(date +%s) - s ))s: $(row $R/$tag.md)" | tee -a $R/summary.txt; }
B="--dummy-quant q4_k_m --batch 4,8,16,32,64 --max-num-seqs 64 --kv-memory-mb 12000"
for v in 0 16 0 16; do KILN_CUDA_QREG_VARIANT=$v bench q4km_v${v}_$(date +%s) $B; done
left=$(( 555 - ($(date +%s) - T0) ))
KILN=$P/kiln LD_LIBRARY_PATH=$P/lib:$P timeout $left bash bench/gguf_vs_llamacpp.sh --types q8_0,q6_k \
  --batches 1,2,4,8,16,32,64 --repeat 1 --deadline $(( left - 15 )) --out $R/g > $R/g.log 2>&1
echo "gguf_vs_llamacpp rc=$? at $(( $(date +%s) - T0 ))s" | tee -a $R/summary.txt
tail -25 $R/g.log
rm -rf $R/g/files 2>/dev/null
cd $OUT && tar -czf r.tgz r && rm -rf r
