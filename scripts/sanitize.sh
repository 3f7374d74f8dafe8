#!/usr/bin/env bash
# Builds the host code twice more, without the CUDA parts, and runs every CPU test under the
# sanitizers: build-asan/ (AddressSanitizer + UndefinedBehaviorSanitizer: out-of-bounds, use after
# free, leaks, overflow, misaligned or null access) and build-tsan/ (ThreadSanitizer: data races and
# lock-order inversions between the loopback communicator's rank threads). A finding fails the test
# that hit it. Arguments: which of the two to run (asan, tsan; default both).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
kinds=("$@")
[[ ${#kinds[@]} -eq 0 ]] && kinds=(asan tsan)
for kind in "${kinds[@]}"; do
  case "$kind" in
    asan) sanitizers=address,undefined ;;
    tsan) sanitizers=thread ;;
    *) echo "sanitize.sh: unknown kind '$kind' (expected asan or tsan)" >&2; exit 2 ;;
  esac
  dir="build-$kind"
  echo "== $kind: -fsanitize=$sanitizers in $dir/"
  ULYSSES_BUILD_DIR="$dir" scripts/build.sh -DCMAKE_BUILD_TYPE=RelWithDebInfo -DULYSSES_CUDA=OFF \
    "-DULYSSES_SANITIZE=$sanitizers"
  (cd "$dir" && ASAN_OPTIONS="${ASAN_OPTIONS:-detect_stack_use_after_return=1}" \
     UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}" TSAN_OPTIONS="${TSAN_OPTIONS:-second_deadlock_stack=1}" \
     ctest --output-on-failure -j "$(nproc)" -L unit --timeout 1800)
done
