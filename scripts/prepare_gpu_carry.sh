#!/usr/bin/env bash
# Builds here and copies what a GPU machine needs into .carry/bin (git-ignored), for device runs.
#
#   scripts/prepare_gpu_carry.sh [MODE]
#
# MODE is a scripts/gpu_session.sh mode: only the binaries that mode runs are copied, stripped of
# their host symbols, so the call's carry stays under the device tool's 64 MiB (the working tree
# travels too, ~11 MiB). Without a MODE (or with all / tests-only) every binary is copied; together
# they pass that limit, so such a session takes more than one call (e.g. one per mode).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-all}
case $mode in
  targets | timeline | ring | a2a | overlap | fp8 | mla | uneven | balance | bench-only)
    bins=(bench/ulysses-bench) ;;
  copies) bins=(bench/ulysses-copy-bench) ;;
  decode) bins=(tests/test_gpu_decode bench/ulysses-bench) ;;
  allgather) bins=(tests/test_gpu_ulysses tests/test_multigpu bench/ulysses-bench) ;;
  packed) bins=(tests/test_gpu_ulysses tests/test_gpu_cudnn bench/ulysses-bench) ;;
  python) bins=(libulysses_c.so tests/test_multigpu) ;;
  distributed | compare)
    bins=(tests/test_gpu_ulysses tests/test_multigpu bench/ulysses-bench libulysses_c.so
          tests/test_mpi) ;;
  all | tests-only)
    bins=(tests/test_gpu_layout tests/test_gpu_cudnn tests/test_gpu_ulysses tests/test_gpu_decode
          tests/test_gpu_sweep tests/test_multigpu bench/ulysses-bench bench/ulysses-copy-bench
          libulysses_c.so tests/test_mpi) ;;
  *)
    echo "prepare_gpu_carry.sh: unknown mode '$mode' (one of scripts/gpu_session.sh's modes)" >&2
    exit 2 ;;
esac
scripts/build.sh
rm -rf .carry/bin
mkdir -p .carry/bin
for b in "${bins[@]}"; do
  # test_mpi exists only where the build found MPI.
  [[ $b == tests/test_mpi && ! -x build/$b ]] && continue
  strip --strip-unneeded -o ".carry/bin/$(basename "$b")" "build/$b"
done
carry=$(du -sb .carry/bin | cut -f1)
# (Tracked files deleted in the working tree do not travel: du skips them.)
tree=$(git ls-files -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1 || true)
echo "prepare_gpu_carry.sh ($mode): .carry/bin $((carry >> 20)) MiB + tree $((tree >> 20)) MiB" \
     "of the device tool's 64 MiB"
if ((carry + tree > 64 << 20)); then
  echo "prepare_gpu_carry.sh: over 64 MiB: run the session's modes one call each" >&2
fi
