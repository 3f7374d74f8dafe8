#!/usr/bin/env bash
# Configures and builds ulysses into build/ (Release). Extra arguments go to cmake.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=()
[[ "${CI:-}" == "true" ]] && extra+=(-DULYSSES_WERROR=ON)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "${extra[@]}" "$@" >/dev/null
cmake --build build -j "$(nproc)"
