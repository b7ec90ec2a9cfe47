#!/usr/bin/env bash
# gguf_vs_llamacpp.sh: the issue-16 benchmark. kiln and llama.cpp's CUDA build on the same
# random-weight GGUF files in the Devstral shape (Q4_K_M, Q8_0, Q6_K), prompt 512, 64 decode
# steps, batch 1..64, in ONE device call (machines are not kept between calls), with the HBM
# bandwidth measured in the same call for the batch-1 weight-bytes floor.
#
# Usage (GPU machine; the repository root as working directory; .gpu/ carried, git-ignored):
#   KILN=PACK/kiln LD_LIBRARY_PATH=PACK/lib:PACK bash bench/gguf_vs_llamacpp.sh   (PACK: kiln + libkiln_cuda.so)
#       [--types q4_k_m,q8_0,q6_k] [--batches 1,2,4,8,16,32,64] [--repeat 2] [--deadline 540]
#       [--kiln PATH] [--kiln-args "..."] [--dir DIR] [--out DIR] [--no-llama] [--exact-rng] [--build]
#   (--dir: where the GGUF files go, default the file system with the most room among /tmp, ~ and the
#   checkout; --out: default $OUT, else /tmp/gguf_vs_llamacpp; --kiln-args: extra engine options for
#   kiln bench, e.g. "--max-batch-tokens 8192"; --exact-rng: make_gguf_shape.py's own, ~10x slower,
#   random bytes; --build: build llama.cpp even in --smoke mode)
#   bash bench/gguf_vs_llamacpp.sh --smoke     # the whole flow on this (CPU) machine: `tiny` shape,
#       kiln's CPU backend (--kiln build-l/kiln), small prompt; llama.cpp only if a binary exists
# It reads from .gpu/ (--gpu-dir): llamacpp-src.tar.xz (`bash ../shared/peers/llamacpp.sh fetch .gpu/`;
# its gguf-py is unpacked from it), llamacpp.sh and make_gguf_shape.py (copies of ../shared/peers/,
# which does not travel). Results under $OUT (--out): gguf_vs_llamacpp.md / .json (all types, the
# issue's criteria marked PASS / FAIL), <type>.md, raw/ (kiln's JSON and tables, llama.cpp's table,
# weight tables, logs). The report is rewritten after every step, so a call cut short by its time
# limit still returns what it measured. Environment: PYTHON (default python3; needs numpy; torch for
# the bandwidth), LLAMA_BIN (default ~/llamacpp/build/bin/llama-batched-bench, built here).
#
# Timeline on the H200 machine (16 cores), estimates:
#   t=0      llama.cpp CUDA build starts in the background, niced (~300-330 s, the critical path)
#   t=0      the first file is written (make_gguf_shape.py, niced; ~30-60 s for Q4_K_M's 15 GB)
#   t=~5     GPU bandwidth with torch (~15 s incl. import); then per type, while the next file is written:
#            kiln bench (load ~10-30 s + 7 batch sizes x (1 warmup + 2 repeats) ~30-90 s)
#   t=~330   llama-batched-bench per kept file (~30-45 s each: load + one run per batch size), then delete
#   Disk: Q4_K_M 15.3 GB, Q8_0 25.7 GB, Q6_K 20.1 GB; a file is written only when the disk has room
#   for it (+2 GB), otherwise after llama.cpp has run on (and deleted) the earlier ones.
#   --deadline (default 540 s) bounds every step with `timeout`; a type started with < 150 s left
#   runs batches 1,16,64 only (--short-batches).
set -uo pipefail
T0=$(date +%s)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
REPORT_PY="$HERE/gguf_report.py"

TYPES=q4_k_m,q8_0,q6_k; BATCHES=1,2,4,8,16,32,64; SHORT_BATCHES=1,16,64
SHAPE=devstral; BACKEND=cuda; PROMPT=512; DECODE=64; REPEAT=2; WARMUP=1; DEADLINE=540
GPU_DIR="$ROOT/.gpu"; DIR=""; OUTDIR="${OUT:-}"; KILN_ARGS=""; NO_LLAMA=0; NO_BUILD=0; RNG=""; MODE=gpu
KILN="${KILN:-}"; PY="${PYTHON:-python3}"; LLAMA_BIN="${LLAMA_BIN:-$HOME/llamacpp/build/bin/llama-batched-bench}"
while [ $# -gt 0 ]; do
  case "$1" in
    --types) TYPES=$2; shift ;;
    --batches) BATCHES=$2; shift ;;
    --short-batches) SHORT_BATCHES=$2; shift ;;
    --shape) SHAPE=$2; shift ;;
    --backend) BACKEND=$2; shift ;;
    --prompt-len) PROMPT=$2; shift ;;
    --decode-steps) DECODE=$2; shift ;;
    --repeat) REPEAT=$2; shift ;;
    --warmup) WARMUP=$2; shift ;;
    --deadline) DEADLINE=$2; shift ;;
    --gpu-dir) GPU_DIR=$2; shift ;;
    --dir) DIR=$2; shift ;;
    --out) OUTDIR=$2; shift ;;
    --kiln) KILN=$2; shift ;;
    --kiln-args) KILN_ARGS=$2; shift ;;
    --no-llama) NO_LLAMA=1 ;;
    --no-build) NO_BUILD=1 ;;
    --build) FORCE_BUILD=1 ;;
    --exact-rng) RNG=--exact-rng ;;
    --smoke|--dry-run) MODE=smoke; SHAPE=tiny; BACKEND=cpu; PROMPT=32; DECODE=8; BATCHES=1,2,4,16; SHORT_BATCHES=1,16
                       REPEAT=1; NO_BUILD=1 ;;
    -h|--help) sed -n 2,32p "$0"; exit 0 ;;
    *) echo "gguf_vs_llamacpp.sh: unknown option $1 (--help)" >&2; exit 2 ;;
  esac
  shift
done

[ "${FORCE_BUILD:-0}" = 1 ] && NO_BUILD=0
OUTDIR=${OUTDIR:-${TMPDIR:-/tmp}/gguf_vs_llamacpp}
RAW="$OUTDIR/raw"; mkdir -p "$RAW"
if [ -z "$DIR" ]; then  # the file system with the most room among TMPDIR (/tmp), HOME and the checkout
  best=0
  for c in "${TMPDIR:-/tmp}" "$HOME" "$ROOT"; do
    a=$(df -B1 --output=avail "$c" 2>/dev/null | tail -1); [ -n "$a" ] && [ "$a" -gt "$best" ] && { best=$a; DIR="$c/kiln-gguf16"; }
  done
fi
mkdir -p "$DIR"
LOG="$OUTDIR/log.txt"; : > "$LOG"
el() { echo $(( $(date +%s) - T0 )); }
say() { echo "[$(printf '%4d' "$(el)") s] $*" | tee -a "$LOG" >&2; }
meta() { "$PY" "$REPORT_PY" set "$RAW/meta.json" "$@"; }
st() { local t=$1; shift; "$PY" "$REPORT_PY" set "$RAW/$t.status.json" "$@"; }
report() { "$PY" "$REPORT_PY" report "$RAW" "$OUTDIR" || say "report failed"; }
left() { echo $(( DEADLINE - $(el) )); }

# ---- inputs --------------------------------------------------------------------------------
pick() { for f in "$@"; do [ -e "$f" ] && { echo "$f"; return; }; done; }
MAKE_PY=$(pick "$GPU_DIR/make_gguf_shape.py" "$ROOT/../shared/peers/make_gguf_shape.py" "/work/shared/peers/make_gguf_shape.py")
LLAMA_SH=$(pick "$GPU_DIR/llamacpp.sh" "$ROOT/../shared/peers/llamacpp.sh" "/work/shared/peers/llamacpp.sh")
TAR="$GPU_DIR/llamacpp-src.tar.xz"
[ -n "$KILN" ] || KILN=$(pick "$GPU_DIR/pack/kiln" "$ROOT/build-cuda/pack/kiln" "$(command -v kiln 2>/dev/null)")
[ -n "$MAKE_PY" ] || { echo "no make_gguf_shape.py in $GPU_DIR or ../shared/peers" >&2; exit 2; }
[ -n "$KILN" ] && [ -x "$KILN" ] || { echo "no kiln binary (KILN=... or --kiln)" >&2; exit 2; }
"$PY" -c "import numpy" 2>/dev/null || { echo "$PY has no numpy (PYTHON=...)" >&2; exit 2; }

rm -f "$RAW"/*.json
meta mode="$MODE" shape="$SHAPE" backend="$BACKEND" prompt_len="$PROMPT" decode_steps="$DECODE" \
     batches="$BATCHES" repeat="$REPEAT" types="$TYPES" started="$(date -u '+%Y-%m-%d %H:%M:%S UTC')" \
     kiln_version="$("$KILN" --version 2>&1 | head -1)" host="$(hostname)" nproc="$(nproc)"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  meta card="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)"
else
  meta card="no GPU; CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') ($(nproc) cores)"
fi
say "mode $MODE, shape $SHAPE, types $TYPES, batches $BATCHES, kiln $KILN ($BACKEND), files in $DIR, out $OUTDIR"
say "disk: $(df -h "$DIR" | tail -1)"

# gguf-py from the llama.cpp tarball (else .gpu/gguf-py, else an installed gguf)
GGUF_PY=""
if [ -f "$TAR" ]; then
  rm -rf "$DIR/gguf-py"; tar xJf "$TAR" -C "$DIR" gguf-py && GGUF_PY="$DIR/gguf-py"
elif [ -d "$GPU_DIR/gguf-py" ]; then GGUF_PY="$GPU_DIR/gguf-py"; fi
if ! "$PY" -c "import yaml" 2>/dev/null; then  # gguf/metadata.py imports yaml, unused here
  mkdir -p "$DIR/shim"; printf 'def safe_load(*a, **k):\n    return {}\n' > "$DIR/shim/yaml.py"
  export PYTHONPATH="$DIR/shim${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -c "import sys; sys.path.insert(0, '$GGUF_PY'); import gguf" || { echo "cannot import gguf (gguf-py: '$GGUF_PY')" >&2; exit 2; }
meta gguf_py="${GGUF_PY:-installed gguf}"

# ---- llama.cpp build (background, niced so that kiln's host thread keeps its core) -----------
BUILD_RC="$DIR/llama_build.rc"; rm -f "$BUILD_RC"; BUILD_PID=""; declare -A GEN_PID=()
llama_build() {
  local t; t=$(date +%s)
  if command -v ninja >/dev/null 2>&1; then
    nice -n 19 bash "$LLAMA_SH" build "$TAR"
  else  # llamacpp.sh's build with make instead of ninja
    rm -rf ~/llamacpp && mkdir -p ~/llamacpp && tar xJf "$TAR" -C ~/llamacpp && cd ~/llamacpp &&
    cmake -B build -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=OFF \
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DCMAKE_BUILD_TYPE=Release > build.log 2>&1 &&
    nice -n 19 cmake --build build -j "$(nproc)" --target llama-batched-bench >> build.log 2>&1
  fi
  local rc=$?
  echo "llama.cpp build rc $rc in $(( $(date +%s) - t )) s"
  echo $rc > "$BUILD_RC"
}
if [ "$NO_LLAMA" = 1 ]; then
  meta llamacpp="skipped (--no-llama)"; LLAMA_BIN=""
elif [ "$NO_BUILD" = 0 ] && [ -f "$TAR" ] && [ -n "$LLAMA_SH" ] && command -v nvcc >/dev/null 2>&1; then
  say "llama.cpp: building llama-batched-bench in the background (~5 min)"
  set -m  # its own process group, so that the exit trap can stop the whole build
  llama_build > "$RAW/llama_build.log" 2>&1 &
  BUILD_PID=$!
  set +m
  meta llamacpp="CUDA build of $(basename "$TAR") ($(sha256sum "$TAR" | cut -c1-12)), llamacpp.sh bench arguments"
elif [ -x "$LLAMA_BIN" ]; then
  echo 0 > "$BUILD_RC"; meta llamacpp="existing $LLAMA_BIN"
else
  say "llama.cpp: no build (no tarball / nvcc, or --smoke) and no binary at $LLAMA_BIN: its columns stay empty"
  meta llamacpp="absent: not built here (no tarball / nvcc, or smoke mode) and no binary at $LLAMA_BIN" \
       notes+="llama.cpp was not run: its columns and the comparisons are n/a"
  LLAMA_BIN=""
fi
# 0: ready, 1: not yet, 2: never (failed or absent)
llama_state() {
  [ -n "$LLAMA_BIN" ] || return 2
  [ -f "$BUILD_RC" ] || return 1
  [ "$(cat "$BUILD_RC")" = 0 ] && [ -x "$LLAMA_BIN" ] && return 0
  return 2
}
llama_wait() {  # until the build ends or 40 s before the deadline
  if [ -n "$BUILD_PID" ] && [ ! -f "$BUILD_RC" ]; then
    say "waiting for the llama.cpp build"
    while [ ! -f "$BUILD_RC" ] && [ "$(left)" -gt 40 ]; do sleep 2; done
    if [ ! -f "$BUILD_RC" ]; then
      say "llama.cpp build not done at the deadline: stopped"; kill -- -"$BUILD_PID" 2>/dev/null; BUILD_PID=""
      meta notes+="llama.cpp build not finished within --deadline $DEADLINE s"; LLAMA_BIN=""; return 2
    fi
  fi
  [ -n "$BUILD_PID" ] && { wait "$BUILD_PID"; say "$(tail -1 "$RAW/llama_build.log")"; BUILD_PID=""
    [ "$(cat "$BUILD_RC" 2>/dev/null)" = 0 ] || { tail -30 ~/llamacpp/build.log > "$RAW/llama_build_tail.log" 2>/dev/null
      meta notes+="llama.cpp build failed: raw/llama_build_tail.log"; }; }
  llama_state
}

cleanup() {  # on any exit: the build, the writers, the files
  [ -n "$BUILD_PID" ] && [ ! -f "$BUILD_RC" ] && kill -- -"$BUILD_PID" 2>/dev/null
  for p in "${GEN_PID[@]}"; do kill "$p" 2>/dev/null; done
  rm -f "$DIR/$SHAPE"-*.gguf
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

# ---- files ------------------------------------------------------------------------------------
IFS=, read -r -a TL <<< "$TYPES"
gguf() { echo "$DIR/$SHAPE-$1.gguf"; }
gen_start() {  # write type $1's file in the background if the disk has room; 1 when it has not
  local t=$1 need avail
  need=$(( $("$PY" "$REPORT_PY" est "$SHAPE" "$t") + ${DISK_RESERVE:-2000000000} ))
  avail=$(df -B1 --output=avail "$DIR" | tail -1)
  if [ "$avail" -lt "$need" ]; then say "$t: $((avail / 1000000)) MB free, need $((need / 1000000)) MB: deferred"; return 1; fi
  say "$t: writing $(gguf "$t") (~$(( (need - ${DISK_RESERVE:-2000000000}) / 1000000 )) MB)"
  nice -n 10 "$PY" "$REPORT_PY" gen "$MAKE_PY" "$(gguf "$t")" "$SHAPE" "$t" "$GGUF_PY" $RNG > "$RAW/$t.gen.log" 2>&1 &
  GEN_PID[$t]=$!
}
PENDING=()  # types whose file waits for llama.cpp
llama_bench() {  # $1 type, $2 batches; then the file goes
  local t=$1 b=$2 f; f=$(gguf "$t")
  local maxb; maxb=$(tr , '\n' <<< "$b" | sort -n | tail -1)
  local ctx=$(( maxb * (PROMPT + DECODE) )); [ "$ctx" -lt 40960 ] && ctx=40960
  local lim=$(( $(left) - 10 ))
  if [ "$lim" -lt 20 ]; then say "$t: no time left for llama.cpp"; st "$t" llamacpp="skipped: deadline"; return; fi
  say "$t: llama-batched-bench -npl $b (timeout ${lim} s)"
  # the arguments of `llamacpp.sh bench` (-c grows with the batch), stderr kept for diagnosis
  timeout -k 5 "$lim" "$LLAMA_BIN" -m "$f" -c "$ctx" -b 2048 -ub 512 -npp "$PROMPT" -ntg "$DECODE" -npl "$b" \
    -ngl 99 -fa on > "$RAW/$t.llama.txt" 2> "$RAW/$t.llama.log"
  local rc=$?
  "$PY" "$REPORT_PY" llama "$RAW/$t.llama.txt" "$RAW/$t.llama.json" "$RAW/$t.llama.log" >> "$LOG" 2>&1
  [ $rc = 0 ] && st "$t" llamacpp=ok || { st "$t" llamacpp="rc $rc (raw/$t.llama.log)"; tail -5 "$RAW/$t.llama.log" | tee -a "$LOG" >&2; }
  say "$t: llama.cpp done (rc $rc)"
  report
}
drop() { rm -f "$(gguf "$1")"; }
flush() {  # llama.cpp on every waiting file, each deleted after
  local t s
  llama_wait; s=$?
  for t in "${PENDING[@]}"; do
    if [ $s = 0 ]; then llama_bench "$t" "$(cat "$DIR/$t.batches")"
    else st "$t" llamacpp="not run (build failed or absent)"; fi
    drop "$t"
  done
  PENDING=()
}

# ---- run ----------------------------------------------------------------------------------------
gen_start "${TL[0]}" || { flush; gen_start "${TL[0]}" || { say "no disk for ${TL[0]}"; exit 1; }; }
if [ "$BACKEND" = cuda ]; then
  say "GPU bandwidth (torch)"
  timeout 120 "$PY" "$REPORT_PY" bw "$RAW/bw.json" 8 >> "$LOG" 2>&1
else
  "$PY" "$REPORT_PY" set "$RAW/bw.json" error="CPU smoke run: kiln bench's host read probe is the bandwidth"
fi
for i in "${!TL[@]}"; do
  t=${TL[$i]}; next=${TL[$((i + 1))]:-}; f=$(gguf "$t")
  if [ -z "${GEN_PID[$t]:-}" ]; then  # deferred: make room first
    flush; gen_start "$t" || { st "$t" gen="no disk"; continue; }
  fi
  wait "${GEN_PID[$t]}"; rc=$?; unset "GEN_PID[$t]"
  tail -1 "$RAW/$t.gen.log" | sed "s/^/[$(printf '%4d' "$(el)") s] /" | tee -a "$LOG" >&2
  if [ $rc != 0 ]; then st "$t" gen="failed rc $rc (raw/$t.gen.log)"; drop "$t"; [ -n "$next" ] && gen_start "$next"; continue; fi
  st "$t" gen=ok
  "$PY" "$REPORT_PY" weights "$f" "$GGUF_PY" "$RAW/$t.weights.json" >> "$LOG" 2>&1
  [ -n "$next" ] && gen_start "$next"  # writes while kiln runs (niced); else it waits for room
  b=$BATCHES
  if [ "$(left)" -lt 150 ] && [ "$MODE" = gpu ]; then b=$SHORT_BATCHES; say "$t: $(left) s left: batches $b"; meta notes+="$t: batches $b only (time)"; fi
  echo "$b" > "$DIR/$t.batches"
  lim=$(( $(left) - 10 ))
  if [ "$lim" -lt 30 ]; then say "$t: no time left for kiln"; st "$t" kiln="skipped: deadline"
  else
    say "$t: kiln bench --batch $b (timeout ${lim} s)"
    # shellcheck disable=SC2086
    timeout -k 5 "$lim" "$KILN" bench --model "$f" --backend "$BACKEND" --batch "$b" --prompt-len "$PROMPT" \
      --decode-steps "$DECODE" --warmup "$WARMUP" --repeat "$REPEAT" --json "$RAW/$t.kiln.json" $KILN_ARGS \
      > "$RAW/$t.kiln.md" 2> "$RAW/$t.kiln.log"
    rc=$?
    [ $rc = 0 ] && st "$t" kiln=ok || { st "$t" kiln="rc $rc (raw/$t.kiln.log)"; tail -5 "$RAW/$t.kiln.log" | tee -a "$LOG" >&2; }
    say "$t: kiln done (rc $rc)"
  fi
  report
  llama_state; s=$?
  if [ $s = 0 ]; then llama_bench "$t" "$b"; drop "$t"
  elif [ $s = 1 ]; then PENDING+=("$t")
  else st "$t" llamacpp="not run (absent or build failed)"; drop "$t"; fi
done
flush
report
rm -rf "$DIR/gguf-py" "$DIR/shim" "$DIR"/*.batches "$BUILD_RC"
say "done: $OUTDIR/gguf_vs_llamacpp.md"
cat "$OUTDIR/gguf_vs_llamacpp.md"
