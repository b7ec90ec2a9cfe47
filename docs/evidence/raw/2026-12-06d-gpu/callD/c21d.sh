#!/bin/bash
# call D (session 20): qmma_x variants (register cap, grid width): test_cuda_qlinear + bench
cd "$(dirname "$0")/.." || exit 1
R=$OUT/r; mkdir -p $R; rm -rf /tmp/new; mkdir -p /tmp/new; tar -xJf .gpu/pack.tar.xz -C /tmp/new; P=/tmp/new/pack
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > $R/smi.txt 2>&1; cat $R/smi.txt
KILN_QGEMV_BENCH=1 LD_LIBRARY_PATH=$P/lib timeout 300 $P/test_cuda_qlinear > $R/qlinear.log 2>&1
echo "qlinear rc=$? $(grep -E 'passed, .* failed' $R/qlinear.log | tail -1)"; grep -E "^FAIL" $R/qlinear.log | head
cd $OUT && tar -czf r.tgz r && rm -rf r
