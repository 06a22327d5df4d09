"""PyTorch's twin of benches/mnist.toml, timed as `kiln train` times its loop.

    python3 benches/mnist_reference.py DIR [--device cuda|cpu] [--runs 2] [--split-seed 0]

DIR holds MNIST's train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz. The same model
(784→256→10, ReLU, cross-entropy), SGD lr 0.05 momentum 0.9 with CosineAnnealingLR(T_max=2110)
stepped per update, batch 128 (the last batch of an epoch smaller), 5 epochs; a tenth of the rows
held out (a seeded permutation; Kiln draws its own: the validation loss moves with the split,
0.08 to 0.4 over Kiln's seeds 0 to 2, through the rare pixels standardisation blows up), features standardised with the training
rows' mean and standard deviation (1 where it is 0). The data is resident on the device and
reshuffled there each epoch (`torch.randperm`); eager. One warm-up epoch on a throwaway model
first (kernels, allocator), then each timed run from fresh weights: wall time from the first
update to a synchronize after the last, and the validation loss and accuracy after it.
"""

import argparse
import gzip
import os
import struct
import time

import torch


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return torch.frombuffer(bytearray(data[4 + 4 * dims:]), dtype=torch.uint8).reshape(shape)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--split-seed", type=int, default=0, help="seed of the held-out tenth")
    args = ap.parse_args()
    dev = args.device
    x = idx(os.path.join(args.dir, "train-images-idx3-ubyte.gz")).reshape(-1, 784).float()
    y = idx(os.path.join(args.dir, "train-labels-idx1-ubyte.gz")).long()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.split_seed))
    held = len(x) // 10
    val, train = perm[:held], perm[held:]
    mean, std = x[train].mean(0), x[train].std(0, unbiased=False)
    std[std == 0] = 1
    x = (x - mean) / std
    xt, yt = x[train].to(dev), y[train].to(dev)
    xv, yv = x[val].to(dev), y[val].to(dev)
    n, batch, epochs = len(xt), 128, 5
    updates = epochs * ((n + batch - 1) // batch)

    def train_run(epochs):
        model = torch.nn.Sequential(
            torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)).to(dev)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=2110)
        loss_fn = torch.nn.CrossEntropyLoss()
        if dev == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(epochs):
            order = torch.randperm(n, device=dev)
            for s in range(0, n, batch):
                i = order[s:s + batch]
                opt.zero_grad(set_to_none=True)
                loss_fn(model(xt[i]), yt[i]).backward()
                opt.step()
                sched.step()
        if dev == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            out = model(xv)
            acc = (out.argmax(1) == yv).float().mean().item()
            val_loss = loss_fn(out, yv).item()
        return seconds, acc, val_loss

    train_run(1)  # warm-up
    for _ in range(args.runs):
        seconds, acc, val_loss = train_run(epochs)
        print(f"pytorch {dev}: {updates} updates in {seconds:.2f} s ({updates / seconds:.0f} steps/s); "
              f"validation: loss {val_loss:.4f}, accuracy {acc * 100:.2f}%")


if __name__ == "__main__":
    main()
