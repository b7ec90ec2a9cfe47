#!/bin/bash
# issue 16 call 1 (pack of 8dfba8b: int8 GEMV blocks from RMSNorm / SwiGLU): the whole GPU suite
# (scripts/cuda_check.sh: every test, the compute-sanitizer pass, the I1 trace check), then the
# fail-check: test_cuda_rmsnorm / test_cuda_swiglu linked with producers that quantize the
# unrounded values (.gpu/broken.tar.xz) must fail where the output is 16-bit
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > $OUT/smi.txt 2>&1; cat $OUT/smi.txt
git log --oneline -1 > $OUT/commit.txt 2>&1; cat $OUT/commit.txt
export KILN_SHARED=$PWD/.fixtures
KILN_CUDA_TEST_TIMEOUT=200 timeout 480 bash .gpu/tests.sh > $OUT/suite.txt 2>&1; echo "suite rc=$?"; cat $OUT/suite.txt
echo "suite done at $(( $(date +%s) - T0 ))s"
mkdir -p /tmp/brk && tar -xJf .gpu/broken.tar.xz -C /tmp/brk
for t in test_cuda_rmsnorm test_cuda_swiglu; do
  LD_LIBRARY_PATH=$PWD/build-cuda/pack/lib timeout 60 /tmp/brk/broken/$t > $OUT/broken_$t.log 2>&1
  echo "broken $t rc=$? (must fail): $(grep -c '^FAIL' $OUT/broken_$t.log) FAIL lines, $(grep -c 'i8 f32' $OUT/broken_$t.log) f32 i8 lines passed; $(tail -1 $OUT/broken_$t.log)"
  grep '^FAIL' $OUT/broken_$t.log | head -3
done
cd $OUT && tar -czf cc.tgz cuda_check broken_*.log && rm -rf cuda_check broken_*.log
echo "all done at $(( $(date +%s) - T0 ))s"
