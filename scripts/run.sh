#!/usr/bin/env bash
# Installs what is missing, builds, and runs ulysses-bench with its defaults on whatever is present.
# Arguments are passed to ulysses-bench (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
scripts/build.sh
exec build/bench/ulysses-bench "$@"
