#!/bin/bash
# call I (session 19, review): the stream helper and the one-place L2 prefetch default: tests, kiln info,
# FP8 b4 / b8 default against KILN_CUDA_L2PF_MB=0
cd "$(dirname "$0")/.." || exit 1
rm -rf /tmp/new; mkdir -p /tmp/new; tar -xJf .gpu/pack.tar.xz -C /tmp/new
R=$OUT/r; mkdir -p $R
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee $R/smi.txt
export KILN_SHARED=$PWD/.gpu/fixtures; P=/tmp/new/pack
for x in engine_sample step oom; do LD_LIBRARY_PATH=$P/lib timeout 100 $P/test_cuda_$x > $R/$x.log 2>&1; echo "$x rc=$? $(grep -E 'passed, .* failed' $R/$x.log | tail -1)" | tee -a $R/summary.txt; done
M=.gpu/models/devstral-small-2505-shape/config.json
LD_LIBRARY_PATH=$P/lib $P/kiln info --backend cuda --model $M --load-format dummy 2>&1 | grep -E "L2 prefetch|PDL" | tee -a $R/summary.txt
row() { grep -E '^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \|' $1 | awk '{printf "b%s dec %s (%s ms) | ", $2, $6, $8}'; }
bench() { local tag=$1; shift; LD_LIBRARY_PATH=$P/lib timeout 100 $P/kiln bench --backend cuda --load-format dummy --model $M \
  --prompt-len 512 --decode-steps 64 --warmup 1 --repeat 1 --quantization fp8 --batch 4,8 --max-num-seqs 8 --kv-memory-mb 8000 "$@" > $R/$tag.md 2>&1
  echo "$tag: $(row $R/$tag.md)" | tee -a $R/summary.txt; }
bench fp8_def; KILN_CUDA_L2PF_MB=0 bench fp8_off
cd $OUT && tar -czf r.tgz r && rm -rf r
