#!/usr/bin/env bash
# check_cuda_resources.sh: every kernel of libkiln_cuda.so against the limits of each
# architecture it has SASS for (issue 16; static: cuobjdump, no GPU).
#
#   scripts/check_cuda_resources.sh [build-rel/libkiln_cuda.so]
#
# For each SASS (sm_80, sm_86, sm_89, sm_90 / sm_90a) it reads `cuobjdump --dump-resource-usage`
# (REG, SHARED = static shared memory) and fails a kernel when
#   - SHARED + the dynamic shared memory its launcher asks > the architecture's per-block limit
#     (sm_80 163 KB, sm_86 / sm_89 99 KB, sm_90 227 KB: src/backend/cuda/target.c), or
#   - REG > 255, or REG x the threads per block its launcher uses > 65536.
# Threads and dynamic shared memory per kernel come from the table below (the launchers'
# maxima; keep it in step with the .cu files). A kernel missing from the table fails too.
# The wide kernel's variants (skinny_wide.cu) are the one case with a choice: the backend runs a
# variant only where it fits (kiln_cuda_gemm_wide_fit), so a variant over the limit is listed as
# "not launched on sm_XX" and only the small variant KILN_WIDE_SMALL_VARIANT (CH 8, S 5) must
# fit every architecture. cuobjdump: $CUOBJDUMP, PATH, the CUDA toolkit, else installed from
# PyPI (nvidia-cuda-cuobjdump) into .venv-cudatools. Exit 0: all fit; 1: offenders (listed);
# 77: no cuobjdump to be had (skipped).
set -u
cd "$(dirname "$0")/.." || exit 2
LIB=${1:-build-rel/libkiln_cuda.so}
[ -f "$LIB" ] || { echo "check_cuda_resources: $LIB not found (build with -DKILN_CUDA_ARCHS=release)"; exit 2; }

find_cuobjdump() {
  if [ -n "${CUOBJDUMP:-}" ] && [ -x "$CUOBJDUMP" ]; then echo "$CUOBJDUMP"; return 0; fi
  command -v cuobjdump 2>/dev/null && return 0
  for c in /usr/local/cuda/bin/cuobjdump .venv-cudatools/lib/python3*/site-packages/nvidia/cu*/bin/cuobjdump; do
    [ -x "$c" ] && { echo "$c"; return 0; }
  done
  return 1
}
CO=$(find_cuobjdump)
if [ -z "$CO" ]; then
  echo "check_cuda_resources: no cuobjdump; installing nvidia-cuda-cuobjdump (PyPI) into .venv-cudatools" >&2
  { python3 -m venv .venv-cudatools && .venv-cudatools/bin/pip install -q nvidia-cuda-cuobjdump; } >&2 ||
    { echo "SKIP: check_cuda_resources: no cuobjdump and none could be installed"; exit 77; }
  CO=$(find_cuobjdump) || { echo "check_cuda_resources: cuobjdump not found after install"; exit 2; }
fi

# kernel (demangled name up to its template arguments) -> threads per block (the launcher's
# maximum) and dynamic shared memory in bytes ("wide" and "pf" are computed from the template
# arguments below).
TABLE='
attention_split_kernel    128   0      attention.cu: ATT_WARPS * 32
attention_stream_kernel   128   0      attention.cu
attention_combine_kernel  256   0      attention.cu: round_up(hd, 32), hd <= ATT_MAX_HD 256
attention_prefill_kernel  128   pf     attention_prefill.cu: PF_THREADS, PF_SMEM(HD) = 2 * 2 * 64 * HD * 2
attention_decode_kernel   128   pf     attention_prefill.cu
attention_decode_t_kernel 128   pft    attention_prefill.cu: PF_SMEM_T(HD) = PF_SMEM(HD) + 4 * 256
attention_decode_f8r_kernel 128 0      attention_prefill.cu: static shared only
gemv_kernel               256   0      gemv.cu: GEMV_WARPS * 32
skinny_kernel             256   0      skinny.cu: SK_WARPS * 32
wide_kernel               256   wide   skinny_wide.cu: S * (128 + 8 NT) * CH * 16
add_rmsnorm_vec_kernel    1024  0      rmsnorm.cu: rms_threads(D) <= 1024
add_rmsnorm_kernel        256   0      rmsnorm.cu
rope_kv_kernel            256   0      rope_kv.cu: heads per block x hd / 2 <= 256
rope_cs_kernel            256   0      rope_kv.cu: 256 (row, pair) threads
qk_prep_kernel            256   32768  rope_kv.cu: (H + KV) floats of 1 / rms, H + KV <= 8192
sample_kernel             1024  0      sample.cu: NT
penalty_load_kernel       256   0      sample.cu
swiglu_kernel             256   0      swiglu.cu
swiglu_vec_kernel         128   0      swiglu.cu
embed_kernel              256   0      embed.cu
dummy_kernel              256   0      dummy_fill.cu
fill_u32_kernel           256   0      dummy_fill.cu
l2_prefetch_kernel        128   0      l2_prefetch.cu: L2PF_THREADS
dummy_q_kernel            256   0      dummy_fill.cu
quantize_x_kernel         256   0      qlinear.cu
qgemv_kernel              256   0      qlinear.cu: QG_WARPS * 32
qdequant_kernel           256   0      qlinear.cu
qembed_kernel             128   0      qlinear.cu
qmma_kernel               128   qm     qlinear.cu: 128 threads, max((32 + 16 MT) * 136 * 2, 4 * 16 MT * 32 * 4) <= 32768
qmma_reg_kernel           128   0      qmma_reg.cu: QR_WARPS * 32, static shared memory only
qmma_x_kernel             256   qx     qmma_reg.cu: QX_WARPS * 32, QX_STAGES x MT x 8 KB (HALF: the same)
fp8_mma_kernel            256   0      fp8.cu: F8_WARPS * 32, static shared memory only
fp8_quant_x_kernel        128   0      fp8.cu
fp8_quant_x16_kernel      512   0      fp8.cu: F8_QXR (rows), 256 (groups)
fp8_quant_pmax_kernel     128   0      fp8.cu
e4m3_check_kernel         256   0      fp8.cu: the conversion test (every f32)
fp8_scale_rows_kernel     256   0      fp8.cu
fp8_scale_rows4_kernel    256   0      fp8.cu
fp8_dequant_kernel        256   0      fp8.cu
dummy_fp8_kernel          256   0      dummy_fill.cu
moe_route_kernel          1024  0      moe.cu: ROUTE_THREADS, static shared memory only (~9 KB)
moe_sort_kernel           1024  0      moe.cu: one block, static shared memory only (~35 KB)
moe_expert_kernel         256   0      moe.cu: EXPERT_WARPS * 32
moe_expert_tc_kernel      128   0      moe.cu: TC_WARPS * 32
moe_expert_sk_kernel      256   0      moe.cu: SKE_WARPS * 32 (static shared memory only)
moe_combine_kernel        256   0      moe.cu
'

"$CO" --dump-resource-usage "$LIB" 2>/dev/null | awk -v table="$TABLE" '
BEGIN {
  n = split(table, lines, "\n")
  for (i = 1; i <= n; i++) {
    if (split(lines[i], f, " ") < 3) continue
    thr[f[1]] = f[2]; dyn[f[1]] = f[3]
  }
  lim["sm_80"] = 163 * 1024; lim["sm_86"] = 99 * 1024; lim["sm_89"] = 99 * 1024
  lim["sm_90"] = 227 * 1024; lim["sm_90a"] = 227 * 1024
  bad = 0; checked = 0; skipped = 0
}
/^arch = / { arch = $3; next }
/^ Function / {
  fn = $2; sub(/:$/, "", fn)
  cmd = "c++filt \"" fn "\""; cmd | getline dm; close(cmd)
  name = dm; sub(/\(.*/, "", name); sub(/^void /, "", name)
  base = name; sub(/<.*/, "", base)
  targs = ""; if (match(name, /<.*>/)) targs = substr(name, RSTART + 1, RLENGTH - 2)
  next
}
/REG:/ && fn != "" {
  reg = $1; sub(/REG:/, "", reg); shared = $3; sub(/SHARED:/, "", shared); reg += 0; shared += 0
  if (!(arch in lim)) { fn = ""; next }
  if (!(base in thr)) { printf "FAIL %-7s %s: not in the table of scripts/check_cuda_resources.sh\n", arch, name; bad++; fn = ""; next }
  t = thr[base] + 0; d = 0; small = 0
  if (dyn[base] == "pf") { split(targs, a, ", "); d = 2 * 2 * 64 * a[1] * 2 }
  else if (dyn[base] == "pft") { split(targs, a, ", "); d = 2 * 2 * 64 * a[1] * 2 + 4 * 256 }
  else if (dyn[base] == "qm") {      # DT, MT: tiles (32 + 16 MT) x 136 bf16, or the partial sums of the 4 warps
    split(targs, a, ", "); d1 = (32 + 16 * a[2]) * 136 * 2; d2 = 4 * 16 * a[2] * 32 * 4; d = d1 > d2 ? d1 : d2
  }
  else if (dyn[base] == "qx") { split(targs, a, ", "); d = 3 * a[2] * 8192 }   # DT, MT, NT, MINB, HALF
  else if (dyn[base] == "wide") {
    split(targs, a, ", ")      # NT, CH, S, MINB, PF, BF, GLU
    d = a[3] * (128 + 8 * a[1]) * a[2] * 16
    small = (a[2] == 8 && a[3] == 5)
  } else d = dyn[base] + 0
  total = shared + d
  checked++
  if (total > lim[arch]) {
    if (dyn[base] == "wide" && !small) {
      printf "skip %-7s %s: %d KB > %d KB, not launched there (kiln_cuda_gemm_wide_fit)\n", arch, name, total / 1024, lim[arch] / 1024
      skipped++; fn = ""; next
    } else {
      printf "FAIL %-7s %s: shared %d + dynamic %d = %d bytes > %d (per-block limit)\n", arch, name, shared, d, total, lim[arch]
      bad++
    }
  }
  if (reg > 255 || reg * t > 65536) {
    printf "FAIL %-7s %s: %d registers x %d threads = %d (> 65536 per SM, or > 255 per thread)\n", arch, name, reg, t, reg * t
    bad++
  }
  if (reg * t > maxrt[arch]) { maxrt[arch] = reg * t; maxrn[arch] = name }
  if (total > maxsm[arch]) { maxsm[arch] = total; maxsn[arch] = name }
  fn = ""
}
END {
  for (ar in maxsm)
    printf "%-7s largest shared %6d bytes (%s), largest regs x threads %5d (%s)\n", ar, maxsm[ar], maxsn[ar], maxrt[ar], maxrn[ar]
  printf "%d kernel images checked, %d wide variants not launched on their arch, %d offenders\n", checked, skipped, bad
  exit bad > 0
}'
rc=$?
if [ $rc -ne 0 ]; then echo "check_cuda_resources: FAILED"; else echo "check_cuda_resources: ok"; fi
exit $rc
