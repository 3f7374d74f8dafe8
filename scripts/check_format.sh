#!/usr/bin/env bash
# Fails if any C++/CUDA source differs from clang-format's output (.clang-format: Google, 100 cols).
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files '*.h' '*.cc' '*.cu' '*.cuh' 2>/dev/null || true)
((${#files[@]})) || exit 0
if ! clang-format --dry-run -Werror "${files[@]}" 2>/tmp/ulysses-format.log; then
  echo "check_format: these files need clang-format -i:"
  grep -o '^[^:]*' /tmp/ulysses-format.log | sort -u
  exit 1
fi
