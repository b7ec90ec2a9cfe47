#!/bin/bash
# issue 16: Q4_K / Q5_K unit pairs (Q5_K decoded apart, same order, with 2+ rows) (new) vs c569c1e (old)
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
for v in new old; do mkdir -p /tmp/$v; done
tar -xJf .gpu/pack.tar.xz -C /tmp/new; tar -xJf .gpu/pack_old.tar.xz -C /tmp/old
nvidia-smi --query-gpu=name,driver_version --format=csv > $OUT/smi.txt 2>&1; cat $OUT/smi.txt
export KILN_SHARED=$PWD/.fixtures
for t in test_cuda_qlinear test_cuda_gguf; do
  LD_LIBRARY_PATH=/tmp/new/pack/lib timeout 150 /tmp/new/pack/$t > $OUT/$t.log 2>&1; echo "$t rc=$? $(tail -1 $OUT/$t.log)"
done
M=.gpu/models/devstral-small-2505-shape/config.json
for r in 1 2; do for v in old new; do P=/tmp/$v/pack
  for q in q4_k_m q5_k_m; do
    LD_LIBRARY_PATH=$P/lib timeout 100 $P/kiln bench --backend cuda --load-format dummy --model $M --prompt-len 512 --decode-steps 64 --warmup 1 --repeat 1 --max-num-seqs 16 --kv-memory-mb 8000 --dummy-quant $q --batch 1,2,4 --json $OUT/bench_${q}_${v}_$r.json > $OUT/bench_${q}_${v}_$r.log 2>&1
    echo "$v $r $q: $(grep -E '^\| (1|2|4) \| [0-9.]+ \| [0-9.]+ \|' $OUT/bench_${q}_${v}_$r.log | awk '{printf "b%s %s (%s)  ", $2, $6, $8}')"
  done
done; done
cd $OUT && tar -czf logs.tgz *.log *.json && rm -f *.log *.json
echo "all at $(( $(date +%s) - T0 ))s"
