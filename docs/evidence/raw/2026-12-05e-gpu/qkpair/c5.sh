#!/bin/bash
# issue 16: Q4_K / Q5_K GEMV decoding unit pairs from shared loads; new pack vs the old (c569c1e) pack, same call
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
mkdir -p build-cuda && tar -xJf .gpu/pack.tar.xz -C build-cuda
mkdir -p /tmp/old && tar -xJf .gpu/pack_old.tar.xz -C /tmp/old
N=$PWD/build-cuda/pack; O=/tmp/old/pack
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $OUT/smi.txt 2>&1; cat $OUT/smi.txt
git log --oneline -1 > $OUT/commit.txt; git diff --stat >> $OUT/commit.txt
export KILN_SHARED=$PWD/.fixtures
for t in test_cuda_qlinear test_cuda_gguf; do
  LD_LIBRARY_PATH=$N/lib timeout 200 $N/$t > $OUT/$t.log 2>&1; echo "$t rc=$? $(tail -1 $OUT/$t.log)"
done
echo "tests at $(( $(date +%s) - T0 ))s"
for v in new old; do P=$N; [ $v = old ] && P=$O
  LD_LIBRARY_PATH=$P/lib KILN_QGEMV_BENCH=1 timeout 200 $P/test_cuda_qlinear > $OUT/qbench_$v.log 2>&1
  echo "== qgemv $v"; grep -E '^\| (q4_k|q5_k|q6_k) ' $OUT/qbench_$v.log | grep -E '\| (1|2) \|'
done
M=.gpu/models/devstral-small-2505-shape/config.json
for r in 1 2; do for v in old new; do P=$N; [ $v = old ] && P=$O
  for q in q4_k_m q5_k_m q6_k; do
    LD_LIBRARY_PATH=$P/lib timeout 120 $P/kiln bench --backend cuda --load-format dummy --model $M --prompt-len 512 --decode-steps 64 --warmup 1 --repeat 1 --max-num-seqs 16 --kv-memory-mb 8000 --dummy-quant $q --batch 1,2 --json $OUT/bench_${q}_${v}_$r.json > $OUT/bench_${q}_${v}_$r.log 2>&1
    echo "$v $r $q: $(grep -E '^\| (1|2) \| [0-9.]+ \| [0-9.]+ \|' $OUT/bench_${q}_${v}_$r.log | awk '{printf "b%s %s tok/s (%s)  ", $2, $6, $8}')"
  done
done; done
cd $OUT && tar -czf logs.tgz *.log *.json && rm -f *.log *.json
echo "all at $(( $(date +%s) - T0 ))s"
