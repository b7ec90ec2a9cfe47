#!/usr/bin/env bash
# check_cuda_sync.sh [DIR]: invariant I1's CI check. Every synchronising CUDA call (stream /
# event / device synchronisation, synchronous cudaMemcpy* / cudaMemset*, cudaMalloc* /
# cudaFree*, cudaHostAlloc) in the CUDA backend must go through the counting wrappers of
# sync.c; this fails (exit 1) on any direct call in another file of DIR (default
# src/backend/cuda), printing each offending line.
set -u
dir="${1:-$(dirname "$0")/../src/backend/cuda}"
if [ ! -d "$dir" ]; then echo "check_cuda_sync: no directory $dir" >&2; exit 2; fi
pattern='\bcuda(StreamSynchronize|DeviceSynchronize|EventSynchronize|ThreadSynchronize|Memcpy(2D|3D|Peer|ToSymbol|FromSymbol|ToArray|FromArray|2DToArray|2DFromArray)?|Memset(2D|3D)?|Malloc[A-Za-z]*|Free[A-Za-z]*|HostAlloc|DeviceReset)[[:space:]]*\('
bad=$(find "$dir" -type f \( -name '*.c' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh' \) ! -name 'sync.c' -print0 |
      xargs -0 -r grep -nE "$pattern" 2>/dev/null)
if [ -n "$bad" ]; then
  echo "check_cuda_sync: synchronising CUDA calls outside sync.c (use the kiln_cuda_* wrappers):" >&2
  echo "$bad" >&2
  exit 1
fi
n=$(find "$dir" -type f \( -name '*.c' -o -name '*.cu' \) | wc -l)
echo "check_cuda_sync: OK ($n files of $dir)"
