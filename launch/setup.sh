#!/usr/bin/env bash
# Install what hspmn_dist needs (only what is missing) and build it into build/.
# Idempotent: a second run checks the packages, re-runs cmake and finishes quickly.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${HSPMN_BUILD_DIR:-$repo/build}

packages=(cmake gcc make pkg-config libopenmpi-dev openmpi-bin libhdf5-openmpi-dev check
          python3-h5py python3-numpy python3-matplotlib)

missing=()
for pkg in "${packages[@]}"; do
    if ! dpkg -s "$pkg" >/dev/null 2>&1; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]} > 0)); then
    echo "setup: installing missing packages: ${missing[*]}"
    sudo_cmd=()
    if [[ $(id -u) -ne 0 ]]; then
        sudo_cmd=(sudo)
    fi
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        "${missing[@]}"
else
    echo "setup: all packages present (${packages[*]})"
fi

cmake_args=(-S "$repo" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release)
# CMake finds nvcc on PATH by itself; the toolkit's usual home is not on PATH by default.
if ! command -v nvcc >/dev/null 2>&1 && [[ -x /usr/local/cuda/bin/nvcc ]]; then
    echo "setup: using CUDA at /usr/local/cuda"
    cmake_args+=(-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc)
fi

jobs=$(nproc 2>/dev/null || echo 2)
echo "setup: configuring: cmake ${cmake_args[*]}"
cmake "${cmake_args[@]}"
echo "setup: building with $jobs jobs into $build_dir"
cmake --build "$build_dir" -j "$jobs"
echo "setup: done: $build_dir/hspmn_dist"
