"""PyTorch timed on the same ops, shapes and sizes as `kiln bench`, for BENCHMARKS.md.

    python3 benches/pytorch_reference.py [--device cuda|cpu] [--quick] [--json]
    python3 benches/pytorch_reference.py --kiln kiln.json [--torch torch.json] [...]

Prints rows in `kiln bench --json`'s format (device "torch-cuda" or "torch-cpu"). With
`--kiln FILE` (the output of `kiln bench --json`), prints a Markdown table of Kiln's GPU rows
beside PyTorch's CUDA rows (and Kiln's CPU device beside PyTorch on the CPU) for every op and
shape both measured, with PyTorch time / Kiln time (above 1:
Kiln is faster); `--torch FILE` takes PyTorch's rows from an earlier `--json` run instead of
measuring. Not part of the test suite; needs only torch.

How each op is timed, to match Kiln:
- matmul: float32 with TF32 off (`torch.backends.cuda.matmul.allow_tf32 = False`), the same three
  layouts (A·B, A·Bᵀ, Aᵀ·B through transposed views, which cuBLAS takes without copying); CUDA
  events around one product.
- sgd: `torch.optim.SGD(momentum=0.9)` on one flat parameter of n floats (PyTorch's default
  implementation, and `fused=True` as an extra row); CUDA events around `step()`.
- copy: `dst.copy_(src)`; GB/s counts bytes read plus bytes written, as Kiln's copy row does.
- train_step: the same MLP (Linear/ReLU, cross-entropy, SGD momentum 0.9), eager; the batch is
  copied from host memory each step, as `Trainer::step` uploads it; wall time around one step
  and a synchronize.
Every figure is the median of 7 runs after 2 warm-up runs.
"""

import argparse
import json
import statistics
import time

import torch

REPS = 7
WARMUP = 2


def timed(device, fn, kernel=True):
    """Median seconds of fn() over REPS runs after WARMUP."""
    for _ in range(WARMUP):
        fn()
    times = []
    for _ in range(REPS):
        if device == "cuda" and kernel:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def row(device, op, shape, median_s, timing, **extra):
    r = {
        "op": op,
        "device": f"torch-{device}",
        "adapter": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "shape": shape,
        "median_s": median_s,
        "gflops": None,
        "gbps": None,
        "timing": timing,
        "torch": torch.__version__,
    }
    r.update(extra)
    return r


def bench(device, quick):
    rows = []
    timing = "cuda-event" if device == "cuda" else "wall"
    gen = torch.Generator(device="cpu").manual_seed(0)

    def rand(*shape):
        return (torch.rand(*shape, generator=gen) * 2 - 1).to(device)

    sizes = [1 << 20] if quick else [1 << 20, 10_000_000, 100_000_000]
    for n in sizes:
        src, dst = rand(n), torch.empty(n, device=device)
        t = timed(device, lambda: dst.copy_(src))
        rows.append(row(device, "copy", f"{n} floats", t, timing, gbps=8 * n / t / 1e9))

    squares = [256, 512] if quick else [256, 512, 1024, 2048, 4096]
    shapes = [((s, s, s), "nn", "square") for s in squares]
    b, i, o = (32, 64, 128) if quick else (256, 784, 1024)
    shapes += [((b, o, i), "nt", "layer forward"), ((o, i, b), "tn", "layer dW"), ((b, i, o), "nn", "layer dX")]
    for (m, n, k), t_name, what in shapes:
        # Stored as Kiln stores them: A [M,K] or [K,M] for tn, B [K,N] or [N,K] for nt.
        a = rand(k, m).t() if t_name == "tn" else rand(m, k)
        bm = rand(n, k).t() if t_name == "nt" else rand(k, n)
        c = torch.empty(m, n, device=device)
        t = timed(device, lambda: torch.matmul(a, bm, out=c))
        rows.append(row(device, "matmul", f"{m}x{n}x{k} {t_name} ({what})", t, timing,
                        gflops=2 * m * n * k / t / 1e9))

    for n in sizes:
        for fused in ([False, True] if device == "cuda" else [False]):
            p = torch.nn.Parameter(torch.ones(n, device=device))
            p.grad = torch.full((n,), 1e-3, device=device)
            opt = torch.optim.SGD([p], lr=0.01, momentum=0.9, **({"fused": True} if fused else {}))
            t = timed(device, opt.step)
            shape = f"{n} params" + (" (fused)" if fused else "")
            rows.append(row(device, "sgd", shape, t, timing, gbps=5 * 4 * n / t / 1e9))
            del p, opt

    cases = [(64, [128, 10], 32)]
    if not quick:
        cases += [(784, [1024, 1024, 10], 256), (784, [1024, 1024, 10], 1024)]
    for inputs, widths, batch in cases:
        layers, fan_in = [], inputs
        for w in widths:
            layers += [torch.nn.Linear(fan_in, w), torch.nn.ReLU()]
            fan_in = w
        model = torch.nn.Sequential(*layers[:-1]).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        loss_fn = torch.nn.CrossEntropyLoss()
        x_host = torch.tensor([[((r * inputs + c) % 17) / 17 for c in range(inputs)] for r in range(batch)])
        y_host = torch.tensor([r % widths[-1] for r in range(batch)])

        def step():
            x, y = x_host.to(device), y_host.to(device)
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()

        t = timed(device, step, kernel=False)
        flops, fan_in = 0, inputs
        for w in widths:
            flops += 6 * batch * fan_in * w
            fan_in = w
        shape = f"{inputs}->" + "->".join(map(str, widths)) + f" batch {batch}"
        rows.append(row(device, "train_step", shape, t, "wall", gflops=flops / t / 1e9))
    return rows


def side_by_side(kiln_rows, torch_rows):
    """Kiln's GPU rows beside PyTorch's CUDA rows, and Kiln's CPU device beside PyTorch's CPU."""
    print("| op | shape | Kiln | PyTorch | PyTorch / Kiln |")
    print("|---|---|---|---|---|")
    pairs = {"gpu": "torch-cuda", "cpu": "torch-cpu"}

    def rate(r):
        if r.get("gflops"):
            return f" ({r['gflops']:.1f} GFLOP/s)"
        if r.get("gbps"):
            return f" ({r['gbps']:.1f} GB/s)"
        return ""

    for k in kiln_rows:
        for t in torch_rows:
            if pairs.get(k["device"]) == t["device"] and (t["op"], t["shape"]) == (k["op"], k["shape"]):
                print(f"| {k['op']} | {k['shape']} ({k['device']}) | {k['median_s'] * 1e3:.3f} ms{rate(k)} "
                      f"| {t['median_s'] * 1e3:.3f} ms{rate(t)} | {t['median_s'] / k['median_s']:.2f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true", help="print {\"results\": [...]}")
    ap.add_argument("--kiln", help="kiln bench --json output to compare with")
    ap.add_argument("--torch", help="this script's --json output, instead of measuring")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if args.torch:
        with open(args.torch) as f:
            rows = json.load(f)["results"]
    else:
        rows = bench(args.device, args.quick)
    if args.kiln:
        with open(args.kiln) as f:
            side_by_side(json.load(f)["results"], rows)
    if args.json or not (args.kiln or args.torch):
        print(json.dumps({"results": rows}))


if __name__ == "__main__":
    main()
