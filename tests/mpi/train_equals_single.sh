#!/bin/sh
# Two MPI ranks train the MLP on Fashion-MNIST through the "mpi" key-value
# store, each on its share of every global batch; the parameters they end
# with must equal those of one process with the same global batch (float32
# sums in another order: a tolerance). Then two ranks of two devices each.
# Not LeNet: its max-pooling over images with runs of equal pixels breaks
# ties by the last bit, so a rounding difference can send a gradient to
# another pixel, and after a dozen steps at lr 0.3 one weight in thousands
# differs by 1e-3 (seen for some dataset sizes at 3 and 4 devices).
# usage: train_equals_single.sh TRAIN_FASHION_MNIST COMPARE_SAFETENSORS
set -eu
train=$1
compare=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
common="--model mlp --limit 3000 --epochs 2 --batch 250 --lr 0.1"

"$train" $common --out "$dir/one" --save "$dir/one.safetensors" >"$dir/one.txt"
mpirun -np 2 "$train" $common --kvstore mpi --out "$dir/mpi" --save "$dir/mpi.safetensors" >"$dir/mpi.txt"
mpirun -np 2 "$train" $common --kvstore mpi --devices 2 --out "$dir/mpi2" --save "$dir/mpi2.safetensors" >"$dir/mpi2.txt"
cat "$dir/one.txt" "$dir/mpi.txt" "$dir/mpi2.txt"

echo "== 1 process vs 2 ranks"
"$compare" "$dir/one.safetensors" "$dir/mpi.safetensors" 1e-5 1e-6
echo "== 1 process vs 2 ranks x 2 devices"
"$compare" "$dir/one.safetensors" "$dir/mpi2.safetensors" 1e-5 1e-6
# The comparison can fail: a process that trained on half the data differs.
"$train" $common --limit 1500 --out "$dir/half" --save "$dir/half.safetensors" >/dev/null
if "$compare" "$dir/one.safetensors" "$dir/half.safetensors" 1e-5 1e-6 >/dev/null; then
  echo "the comparison cannot tell different training runs apart" >&2
  exit 1
fi
