#!/usr/bin/env bash
# Configures and builds ulysses into build/ (Release; ULYSSES_BUILD_DIR names another folder). Extra
# arguments go to cmake, after (so overriding) the defaults here.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=()
[[ "${CI:-}" == "true" ]] && extra+=(-DULYSSES_WERROR=ON)
# The Python tests run on the python3 that install_deps.sh gave numpy to.
command -v python3 >/dev/null && extra+=("-DPython3_EXECUTABLE=$(command -v python3)")
dir="${ULYSSES_BUILD_DIR:-build}"
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "${extra[@]}" "$@" >/dev/null
cmake --build "$dir" -j "$(nproc)"
