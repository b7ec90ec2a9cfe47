#!/bin/bash
# follow-up of c19a on the same machine: the three traces again, all outputs in one tar
cd "$(dirname "$0")/.." || exit 1
[ -x /tmp/new/pack/kiln ] || { mkdir -p /tmp/new; tar -xJf .gpu/pack.tar.xz -C /tmp/new; }
P=/tmp/new/pack; M=.gpu/models/devstral-small-2505-shape/config.json; R=$OUT/r; mkdir -p $R
nvidia-smi --query-gpu=name --format=csv,noheader > $R/smi.txt
tr() { local tag=$1 kind=$2; shift 2; mkdir -p $R/$tag
  LD_LIBRARY_PATH=$P/lib timeout 70 bash scripts/cuda_trace.sh --lib $P/libkiln_cupti_trace.so --out $R/$tag -- \
    $P/kiln bench --backend cuda --load-format dummy --model $M --prompt-len 512 --warmup 0 --repeat 1 "$@" > $R/$tag/run.log 2>&1
  python3 bench/trace_steps.py $R/$tag/kiln_trace.json --kind $kind --top 40 > $R/$tag.txt 2>&1
  rm -f $R/$tag/kiln_trace.json; }
tr tr_fp8_b1 decode --quantization fp8 --batch 1 --decode-steps 32 --kv-memory-mb 4000
tr tr_fp8_b16 decode --quantization fp8 --batch 16 --decode-steps 32 --kv-memory-mb 4000
tr tr_fp8_pf prefill --quantization fp8 --batch 1 --decode-steps 2 --kv-memory-mb 4000
tr tr_bf16_pf prefill --batch 1 --decode-steps 2 --kv-memory-mb 4000
KILN_CUDA_GEMM_TUNE=8 tr tr_bf16_b64 decode --batch 64 --decode-steps 16 --max-num-seqs 64 --kv-memory-mb 8000
cd $OUT && tar -czf r.tgz r && rm -rf r; ls -la $OUT
