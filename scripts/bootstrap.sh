#!/usr/bin/env bash
# Installs the Debian packages kiln needs when any is missing, and says
# nothing when all are present. `--bench` adds the peers the benchmarks
# measure against (numpy, PyTorch, and ONNX Runtime: npm's onnxruntime-node
# into build/ort/, once); `--ci` adds clang for the second compiler
# and the ONNX conformance suite (libonnx-testdata) and the ONNX checker
# (python3-onnx, run on exported files), whose CTest tests skip, saying so,
# where they are not installed.
set -euo pipefail

# protoc-c turns the onnx.proto of libonnx-dev into the ONNX reader's C code
# at build time. python3-dev: the headers the Python module (python/) builds against.
# Open MPI (libopenmpi-dev, openmpi-bin with mpirun): the "mpi" key-value store.
pkgs=(cmake make gcc pkg-config libopenblas-dev libcmocka-dev zlib1g-dev dataset-fashion-mnist
  protobuf-c-compiler libprotobuf-c-dev libonnx-dev python3-dev libopenmpi-dev openmpi-bin)
for arg in "$@"; do
  case "$arg" in
    --bench) pkgs+=(python3-numpy python3-torch); ort=1 ;;
    --ci) pkgs+=(clang libonnx-testdata python3-onnx) ;;
    *) echo "bootstrap: unknown option $arg" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  echo "bootstrap: installing ${missing[*]}" >&2
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# bench_onnx's peer. ONNXRUNTIME_NODE_INSTALL=skip: the package's install
# script would fetch GPU libraries from a host this machine cannot reach; its
# CPU build is in the package itself. Pinned, so figures stay comparable.
# Node.js and npm come with the machine (Debian's npm package does not
# install beside a node from elsewhere); without them the bench says so.
if [ "${ort:-0}" = 1 ]; then
  dir="$(cd "$(dirname "$0")/.." && pwd)/build/ort"
  if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
    echo "bootstrap: node or npm not found: bench_onnx will skip ONNX Runtime" >&2
  elif [ ! -f "$dir/node_modules/onnxruntime-node/package.json" ]; then
    echo "bootstrap: installing onnxruntime-node into $dir" >&2
    mkdir -p "$dir"
    [ -f "$dir/package.json" ] || echo '{"name": "kiln-bench-ort", "private": true}' >"$dir/package.json"
    (cd "$dir" && ONNXRUNTIME_NODE_INSTALL=skip npm install --no-audit --no-fund --silent onnxruntime-node@1.30.0 >/dev/null)
  fi
fi
