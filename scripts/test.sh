#!/usr/bin/env bash
# Installs what is missing, builds, checks formatting and runs the whole test suite.
# GPU tests skip (with a message) where there is no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
scripts/check_format.sh
scripts/build.sh
cd build
ctest --output-on-failure -j "$(nproc)" --timeout 900
