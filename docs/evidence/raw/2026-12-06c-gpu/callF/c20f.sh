#!/bin/bash
# call F (session 19): the whole GPU suite on 13bba0a's pack (the I1 trace check, memcheck)
cd "$(dirname "$0")/.." || exit 1
rm -rf build-cuda; mkdir -p build-cuda && tar -xJf .gpu/pack.tar.xz -C build-cuda
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee $OUT/smi.txt
export KILN_SHARED=$PWD/.gpu/fixtures KILN_CUDA_TEST_TIMEOUT=200
KILN_CUDA_TRACE=1 OUT=$OUT/cuda_check timeout 560 bash scripts/cuda_check.sh 2>&1 | tail -45 | tee $OUT/table.txt
cd $OUT && tar -czf r.tgz cuda_check table.txt smi.txt && rm -rf cuda_check
