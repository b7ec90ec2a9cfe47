#!/bin/bash
# run.sh: runs the device code of src/backend/cuda/sample.cu on the host (one CTA = 1024 pthreads,
# warp shuffles / match_any / __syncthreads emulated with barriers, emu.h) against kiln_sample:
# token, work (processed logits / kept set, bitwise), logprobs, top-n, counts. A logic check
# for machines without a GPU (slow: ~0.4 s per row). Usage: run.sh [V] [rows] [seed]
set -e
cd "$(dirname "$0")/../.."
T=$(mktemp -d)
awk '/^size_t kiln_cuda_sample_work_bytes/{exit} {print}' src/backend/cuda/sample.cu > "$T/sample_kern.inc"
for f in engine/sampler util/alloc util/error; do
  gcc -O2 -std=c11 -D_GNU_SOURCE -fno-math-errno -Iinclude -Isrc -c src/$f.c -o "$T/$(basename $f).o"
done
CUDA_INC=${CUDA_INC:-/usr/local/cuda/include}
g++ -O1 -std=c++17 -ffp-contract=off -w -I"$T" -Iscripts/sample_emu -Iinclude -Isrc -I"$CUDA_INC" \
  -o "$T/drv" scripts/sample_emu/drv.cpp "$T"/*.o -lpthread -lm
"$T/drv" "${1:-1000}" "${2:-50}" "${3:-7}"
rm -rf "$T"
