#!/bin/bash
# issue 24's ITL check on the H100 with the session's final code: 8 req/s Poisson, input
# 1,000 +- 500, output 200 +- 100, Devstral shape (dummy bf16), ITL policy at 27 ms (the off run: the ninth session, budget)
# (1.37x the b64 step of call 4 on this kind of card, 19.73 ms), as the ninth session ran it.
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
mkdir -p build-cuda && tar -xJf .gpu/pack.tar.xz -C build-cuda
nvidia-smi --query-gpu=name,driver_version --format=csv > $OUT/smi.txt 2>&1; cat $OUT/smi.txt
export LD_LIBRARY_PATH=$PWD/build-cuda/pack/lib
timeout 200 bash bench/serve_sweep.sh --kiln $PWD/build-cuda/pack/kiln --rates "8" --itl "27" --requests 160 \
  --out $OUT/sweep -- --backend cuda --load-format dummy --model .gpu/models/devstral-small-2505-shape/config.json \
  --max-num-seqs 256 --max-batch-tokens 8192 --max-model-len 4096 --kv-memory-mb 20000 > $OUT/sweep.log 2>&1
echo "sweep rc=$? at $(( $(date +%s) - T0 ))s"; tail -20 $OUT/sweep.log; cat $OUT/sweep/sweep.md 2>/dev/null | head -30
rm -f $OUT/sweep/*.serve.log.big 2>/dev/null; du -sh $OUT/sweep
