#!/usr/bin/env bash
# Installs the Debian packages kiln needs when any is missing, and says
# nothing when all are present. `--bench` adds the peers the benchmarks
# measure against (numpy, PyTorch); `--ci` adds clang for the second compiler
# and the ONNX conformance suite (libonnx-testdata), whose CTest test skips,
# saying so, where the suite is not installed.
set -euo pipefail

# protoc-c turns the onnx.proto of libonnx-dev into the ONNX reader's C code
# at build time. python3-dev: the headers the Python module (python/) builds against.
pkgs=(cmake make gcc pkg-config libopenblas-dev libcmocka-dev zlib1g-dev dataset-fashion-mnist
  protobuf-c-compiler libprotobuf-c-dev libonnx-dev python3-dev)
for arg in "$@"; do
  case "$arg" in
    --bench) pkgs+=(python3-numpy python3-torch) ;;
    --ci) pkgs+=(clang libonnx-testdata) ;;
    *) echo "bootstrap: unknown option $arg" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
echo "bootstrap: installing ${missing[*]}" >&2
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
