#!/bin/bash
# panel threshold A/B on the CPU: decode b1..16 (prompt 128) and chunked prefill (16- and 24-row chunks)
cd /work/main
M=~/.cache/kiln/SmolLM2-135M-Instruct.Q4_1.gguf
O=/tmp/p22/ab; mkdir -p $O
row() { grep -E '^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \|' $1 | awk '{printf "b%s pf %s dec %s (%s ms) | ", $2, $4, $6, $8}'; }
for round in 1 2; do
  for v in 32 16 12 8; do
    KILN_CPU_PANEL_ROWS=$v ./build/kiln bench --model $M --prompt-len 128 --decode-steps 32 --batch 1,4,8,12,16 --warmup 1 --repeat 1 --json $O/dec_${v}_$round.json > $O/dec_${v}_$round.md 2>&1
    echo "dec panel=$v r$round: $(row $O/dec_${v}_$round.md)"
    for ch in 16 24; do
      KILN_CPU_PANEL_ROWS=$v KILN_MAX_BATCH_TOKENS=$ch ./build/kiln bench --model $M --prompt-len 512 --decode-steps 4 --batch 1 --warmup 1 --repeat 1 > $O/pf${ch}_${v}_$round.md 2>&1
      echo "pf chunk $ch panel=$v r$round: $(row $O/pf${ch}_${v}_$round.md)"
    done
  done
done
