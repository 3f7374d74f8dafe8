#!/usr/bin/env bash
# Builds here and copies what a GPU machine needs into .carry/bin (git-ignored), for device runs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
mkdir -p .carry/bin
cp build/tests/test_gpu_layout build/tests/test_gpu_cudnn build/tests/test_gpu_ulysses build/tests/test_gpu_decode \
   build/tests/test_gpu_sweep build/tests/test_multigpu build/bench/ulysses-bench build/bench/ulysses-copy-bench build/libulysses_c.so .carry/bin/
# test_mpi exists when the build found MPI.
if [[ -x build/tests/test_mpi ]]; then cp build/tests/test_mpi .carry/bin/; fi
du -sh .carry
