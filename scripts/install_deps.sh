#!/usr/bin/env bash
# Installs what building and testing ulysses needs, pinned, only where it is missing:
#   Debian: cmake, ninja, g++, GoogleTest 1.12.1, CLI11 2.1.2, clang-format 14, OpenMPI 4.1.4
#           (for test_mpi, the one-process-per-GPU launch mode; the library itself needs no MPI)
#   PyPI:   nvidia-cudnn-frontend 1.32.0 (headers only; into .deps/, used by the CUDA build),
#           numpy 2.2.6 (into .deps/python, for the Python package's tests)
# The CUDA toolkit (nvcc, NCCL, cuDNN) is expected on the machine already.
set -euo pipefail
cd "$(dirname "$0")/.."

debs=(cmake ninja-build g++ "libgtest-dev=1.12.1-0.2" "libcli11-dev=2.1.2+ds-1" clang-format
      "libopenmpi-dev=4.1.4-3+b1" "openmpi-bin=4.1.4-3+b1")
missing=()
for spec in "${debs[@]}"; do
  name=${spec%%=*}
  want=${spec#*=}
  have=$(dpkg-query -W -f='${Status} ${Version}' "$name" 2>/dev/null || true)
  if [[ "$have" != "install ok installed"* ]]; then
    missing+=("$spec")
  elif [[ "$spec" == *=* && "$have" != *" $want" ]]; then
    missing+=("$spec")
  fi
done
if ((${#missing[@]})); then
  echo "install_deps: installing ${missing[*]}"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# cudnn-frontend: header-only C++ API, shipped in the PyPI wheel.
FE_VERSION=1.32.0
FE_DIR=.deps/cudnn_frontend-$FE_VERSION
if command -v nvcc >/dev/null 2>&1 && [[ ! -f $FE_DIR/include/cudnn_frontend.h ]]; then
  echo "install_deps: fetching nvidia-cudnn-frontend==$FE_VERSION headers"
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "nvidia-cudnn-frontend==$FE_VERSION"
  mkdir -p "$FE_DIR"
  python3 - "$tmp" "$FE_DIR" <<'PY'
import pathlib, sys, zipfile
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(src.glob("*.whl"))
z = zipfile.ZipFile(wheel)
found = False
for n in z.namelist():
    # The wheel carries the C++ headers under a top-level include/ folder.
    if n.startswith("include/") and not n.endswith("/"):
        out = dst / n
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(z.read(n))
        found |= n == "include/cudnn_frontend.h"
if not found:
    sys.exit("install_deps: include/cudnn_frontend.h not found in " + wheel.name)
PY
  rm -rf "$tmp"
fi

# numpy for tests/python (the package itself needs only the standard library).
NUMPY_VERSION=2.2.6
if ! PYTHONPATH=.deps/python python3 -c "import numpy, sys; sys.exit(numpy.__version__ != '$NUMPY_VERSION')" \
    2>/dev/null; then
  echo "install_deps: installing numpy==$NUMPY_VERSION into .deps/python"
  python3 -m pip install -q --disable-pip-version-check --target .deps/python "numpy==$NUMPY_VERSION"
fi
