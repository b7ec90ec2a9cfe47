#!/bin/bash
# the automatic KV pool on the card (ops.kv_budget): test_cuda_oom (section 5: the 40-layer shape, no --kv-memory)
cd "$(dirname "$0")/.." || exit 1
mkdir -p build-cuda && tar -xJf .gpu/pack.tar.xz -C build-cuda
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
export KILN_SHARED=$PWD/.fixtures LD_LIBRARY_PATH=$PWD/build-cuda/pack/lib
timeout 120 build-cuda/pack/test_cuda_oom > $OUT/test_cuda_oom.log 2>&1; echo "oom rc=$?"; grep -E "automatic|passed|FAIL" $OUT/test_cuda_oom.log | head
