#!/usr/bin/env bash
# Runs one benchmark (bench/run.sh BUILD NAME) or all of them. Each runs
# twice: with the environment as it is, and with OPENBLAS_CORETYPE and
# OPENBLAS_L2_SIZE both unset (this machine sets them for old OpenBLAS
# builds; they can change which kernels OpenBLAS and numpy pick). Metrics of
# the second run carry the suffix _blas_env_unset.
set -euo pipefail
build=${1:-build}
only=${2:-}
names=()
for exe in "$build"/bench/bench_*; do
  [ -x "$exe" ] || continue
  n=$(basename "$exe"); n=${n#bench_}
  [ -z "$only" ] || [ "$only" = "$n" ] && names+=("$n")
done
if [ ${#names[@]} -eq 0 ]; then
  echo "bench: no benchmark named '${only}' (have: $(ls "$build"/bench | sed -n 's/^bench_//p' | tr '\n' ' '))" >&2
  exit 2
fi
for n in "${names[@]}"; do
  echo "== $n (OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset} OPENBLAS_L2_SIZE=${OPENBLAS_L2_SIZE:-unset})"
  "$build/bench/bench_$n"
  echo "== $n (OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset)"
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$build/bench/bench_$n" | sed 's/^metric \([^ ]*\)/metric \1_blas_env_unset/'
done
