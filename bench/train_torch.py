"""PyTorch peer for bench_train: trains the MLP 784-256-10 or kiln's LeNet on Fashion-MNIST eagerly, as
examples/train_fashion_mnist.c does (Xavier uniform weights, zero biases, batches of 256 drawn through a
fresh permutation each epoch, the last one smaller, mean softmax cross-entropy, plain SGD), and prints
the example's per-epoch table. The seconds column times the training loop alone: the data are float
tensors in memory before the first epoch, and the test pass comes after the clock stops.

  train_torch.py --model mlp|lenet [--epochs E] [--threads T] [--blas-threads N] [--batch B] [--lr LR]
                 [--d2l-sigmoid]

--d2l-sigmoid trains d2l's original LeNet instead (sigmoid, average pooling, lr 0.9 by default), the model
behind the epoch times d2l quotes."""
import argparse
import gzip
import os
import sys
import time


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=("mlp", "lenet"), default="mlp")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--blas-threads", type=int, default=1, help="OpenBLAS's threads (default 1)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--d2l-sigmoid", action="store_true")
    a = ap.parse_args()
    if a.d2l_sigmoid and a.model != "lenet":
        ap.error("--d2l-sigmoid goes with --model lenet")
    if a.lr is None:
        a.lr = 0.9 if a.d2l_sigmoid else 0.3 if a.model == "lenet" else 0.1
    return a


ARGS = parse_args()
# Debian's torch hands matrix products to OpenBLAS (its pthreads build), which torch.set_num_threads does not
# reach: left alone, OpenBLAS runs them on both cores even at --threads 1, and at --threads 2 its threads and
# torch's OpenMP threads, both spinning when idle, fight over the two cores (MLP epochs of 2-14 s instead of
# 1 s here). One BLAS thread by default, as inside kiln, whose pool runs OpenBLAS single-threaded. OpenBLAS
# reads the variable once, when numpy or torch loads it, hence before the imports.
os.environ["OPENBLAS_NUM_THREADS"] = str(ARGS.blas_threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

DATA = "/usr/share/datasets/fashion-mnist"


def load(split):
    with gzip.open(f"{DATA}/{split}-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16)
    with gzip.open(f"{DATA}/{split}-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    x = torch.from_numpy(images.reshape(-1, 1, 28, 28).astype(np.float32) / 255)
    return x, torch.from_numpy(labels.astype(np.int64))


def make_model(name, d2l_sigmoid):
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    act, pool = (nn.Sigmoid, nn.AvgPool2d) if d2l_sigmoid else (nn.ReLU, nn.MaxPool2d)
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), act(), pool(2),
        nn.Conv2d(6, 16, 5), act(), pool(2),
        nn.Flatten(),
        nn.Linear(400, 120), act(),
        nn.Linear(120, 84), act(),
        nn.Linear(84, 10))


def init(module):
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)


def main():
    a = ARGS
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    train_x, train_y = load("train")
    test_x, test_y = load("t10k")
    net = make_model(a.model, a.d2l_sigmoid)
    net.apply(init)
    sgd = torch.optim.SGD(net.parameters(), lr=a.lr)
    loss_fn = nn.CrossEntropyLoss()
    n = train_x.shape[0]

    name = ("d2l LeNet (sigmoid, avg-pool)" if a.d2l_sigmoid else "LeNet") if a.model == "lenet" else "MLP 784-256-10"
    print(f"PyTorch {torch.__version__}, {a.threads} thread(s): {name}, SGD lr {a.lr:g}, batch {a.batch}, "
          f"{n} training samples")
    print("%5s %10s %10s %10s %9s %12s" % ("epoch", "loss", "train acc", "test acc", "seconds", "samples/s"))
    for epoch in range(1, a.epochs + 1):
        net.train()
        # Sums stay tensors inside the loop, as in the example: no per-batch conversion to Python numbers.
        loss_sum, right, batches = torch.zeros(()), torch.zeros((), dtype=torch.int64), 0
        t0 = time.perf_counter()
        order = torch.randperm(n)
        for i in range(0, n, a.batch):
            idx = order[i:i + a.batch]
            x, y = train_x.index_select(0, idx), train_y.index_select(0, idx)
            logits = net(x)
            loss = loss_fn(logits, y)
            sgd.zero_grad()
            loss.backward()
            sgd.step()
            with torch.no_grad():
                loss_sum += loss
                right += (logits.argmax(1) == y).sum()
            batches += 1
        seconds = time.perf_counter() - t0
        net.eval()
        with torch.no_grad():
            test_right = sum(int((net(test_x[i:i + 1000]).argmax(1) == test_y[i:i + 1000]).sum())
                             for i in range(0, test_x.shape[0], 1000))
        print("%5d %10.4f %10.4f %10.4f %9.2f %12.0f" % (
            epoch, float(loss_sum) / batches, int(right) / n, test_right / test_x.shape[0], seconds, n / seconds))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
