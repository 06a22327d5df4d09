"""PyTorch timed on the same ops, shapes and sizes as `kiln bench`, for BENCHMARKS.md.

    python3 benches/pytorch_reference.py [--device cuda|cpu] [--quick] [--json] [--ops copy,...]
    python3 benches/pytorch_reference.py --kiln kiln.json [--torch torch.json] [...]

Prints rows in `kiln bench --json`'s format (device "torch-cuda" or "torch-cpu"). With
`--kiln FILE` (the output of `kiln bench --json`), prints a Markdown table of Kiln's GPU rows
beside PyTorch's CUDA rows (and Kiln's CPU device beside PyTorch on the CPU) for every op and
shape both measured, with PyTorch time / Kiln time (above 1: Kiln is faster). A Kiln row is
shown beside PyTorch's row of the same op and every variant of it (op "adam" beside "adam",
"adam-fused" and "adam-single"), and the last column compares Kiln with the fastest of them.
`--torch FILE` takes PyTorch's rows from an earlier `--json` run instead of measuring. `--ops`
takes the same groups as `kiln bench --ops`: copy, matmul, optimizers, train_step, epoch. Not
part of the test suite; needs only torch.

How each op is timed, to match Kiln:
- matmul: float32 with TF32 off (`torch.backends.cuda.matmul.allow_tf32 = False`), the same three
  layouts (A·B, A·Bᵀ, Aᵀ·B through transposed views, which cuBLAS takes without copying); CUDA
  events around one product.
- optimizers: one row per optimizer, op = its name as in Kiln: sgd (momentum 0.9), adam, adamw,
  rmsprop, adagrad, nadam, radam, adamax, adadelta, rprop, asgd (PyTorch's defaults otherwise, lr 0.01 as Kiln's row uses), on
  one flat parameter of n float32 with a .grad of n; the state exists before timing (five
  steps first, so every timed step is past radam's rectification warm-up and on the full
  adaptive path), as Kiln times update 6 (`kiln::bench::steady_update`). Variants: op "{name}" is what
  `torch.optim.X(params)` picks (foreach on CUDA, the single-tensor loop on the CPU);
  "{name}-fused" is `fused=True` where this torch supports it for the optimizer and device (the
  row is left out where constructing it or its first step raises); "{name}-single" is
  `foreach=False` (CUDA only: on the CPU it is the default). Each row's "impl" says which. CUDA
  events around `step()` (wall time on the CPU). GB/s as Kiln counts it: (3 + 2·S)·4·n bytes,
  S the state tensors kept (sgd, rmsprop, adagrad, asgd: 1; adam, adamw, nadam, radam, adamax, adadelta, rprop: 2).
- copy: `dst.copy_(src)`; GB/s counts bytes read plus bytes written, as Kiln's copy row does.
- train_step: the same MLP (Linear/ReLU, cross-entropy, SGD momentum 0.9), eager; the batch is
  copied from host memory each step, as `Trainer::step` uploads it; wall time around one step
  and a synchronize.
- train_loop: the same step 20 times and one synchronize, per step (as Kiln's row: 20
  `Trainer::step` and a read of the losses). "train_loop" copies from pageable memory as
  train_step does; "train_loop-pinned" (CUDA only) from pinned memory with
  `non_blocking=True`, as a loop over a `DataLoader(pin_memory=True)` does.
- resident_step: the same step with the batch resident on the device, per step over a run of
  20 steps and one synchronize (as Kiln's row: 20 `Trainer::step_data` and a read of the
  losses). "resident_step" is eager; "resident_step-graph" (CUDA only) is the whole step —
  forward, loss, backward, `opt.step()` — captured once in a CUDA graph with static tensors and
  replayed, PyTorch's fastest form of such a step short of compiling it.
- epoch: one whole epoch of the same MLP's training (SGD lr 0.01 momentum 0.9) from a data set
  resident on the device (x[i, j] = ((i·input + j) % 17) / 17, labels i % out): a
  `torch.randperm(rows, device=device)` at the start of the epoch, then batches of 256 in that
  order (the last one smaller, as a DataLoader without drop_last), each indexed from the
  resident tensors, eager; wall time from before the reshuffle to a synchronize after the last
  step, median of 3 epochs after 1 warm-up epoch. GFLOP/s: 6 · Σ rows · fan_in · fan_out per
  layer over the epoch's seconds.
Every other figure is the median of 7 runs after 2 warm-up runs.
"""

import argparse
import json
import statistics
import time

import torch

REPS = 7
WARMUP = 2
# The groups `kiln bench --ops` takes, in its report order.
OPS = ("copy", "matmul", "optimizers", "train_step", "epoch")
# `kiln bench`'s epoch rows: 3 epochs timed after 1 warm-up epoch.
EPOCH_REPS = 3
EPOCH_WARMUP = 1
# Kiln's optimizer set (`bench_optimizer_set`): name -> (torch class, extra arguments, state
# tensors kept). Everything else is PyTorch's default.
OPTIMIZERS = {
    "sgd": (torch.optim.SGD, {"momentum": 0.9}, 1),
    "adam": (torch.optim.Adam, {}, 2),
    "adamw": (torch.optim.AdamW, {}, 2),
    "rmsprop": (torch.optim.RMSprop, {}, 1),
    "adagrad": (torch.optim.Adagrad, {}, 1),
    "nadam": (torch.optim.NAdam, {}, 2),
    "radam": (torch.optim.RAdam, {}, 2),
    "adamax": (torch.optim.Adamax, {}, 2),
    "adadelta": (torch.optim.Adadelta, {}, 2),
    "rprop": (torch.optim.Rprop, {}, 2),
    "asgd": (torch.optim.ASGD, {}, 1),
}


def timed(device, fn, kernel=True, reps=REPS, warmup=WARMUP):
    """Median seconds of fn() over reps runs after warmup."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
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


def bench(device, quick, ops=OPS):
    rows = []
    timing = "cuda-event" if device == "cuda" else "wall"
    gen = torch.Generator(device="cpu").manual_seed(0)

    def rand(*shape):
        return (torch.rand(*shape, generator=gen) * 2 - 1).to(device)

    sizes = [1 << 20] if quick else [1 << 20, 10_000_000, 100_000_000]
    for n in sizes if "copy" in ops else []:
        src, dst = rand(n), torch.empty(n, device=device)
        t = timed(device, lambda: dst.copy_(src))
        rows.append(row(device, "copy", f"{n} floats", t, timing, gbps=8 * n / t / 1e9))

    squares = [256, 512] if quick else [256, 512, 1024, 2048, 4096]
    shapes = [((s, s, s), "nn", "square") for s in squares]
    b, i, o = (32, 64, 128) if quick else (256, 784, 1024)
    shapes += [((b, o, i), "nt", "layer forward"), ((o, i, b), "tn", "layer dW"), ((b, i, o), "nn", "layer dX")]
    for (m, n, k), t_name, what in shapes if "matmul" in ops else []:
        # Stored as Kiln stores them: A [M,K] or [K,M] for tn, B [K,N] or [N,K] for nt.
        a = rand(k, m).t() if t_name == "tn" else rand(m, k)
        bm = rand(n, k).t() if t_name == "nt" else rand(k, n)
        c = torch.empty(m, n, device=device)
        t = timed(device, lambda: torch.matmul(a, bm, out=c))
        rows.append(row(device, "matmul", f"{m}x{n}x{k} {t_name} ({what})", t, timing,
                        gflops=2 * m * n * k / t / 1e9))

    if "optimizers" in ops:
        rows += bench_optimizers(device, sizes, timing)

    cases = [(64, [128, 10], 32)]
    if not quick:
        cases += [(784, [1024, 1024, 10], 256), (784, [1024, 1024, 10], 1024)]
    for inputs, widths, batch in cases if "train_step" in ops else []:
        model, opt, loss_fn = mlp(device, inputs, widths)
        x_host = torch.tensor([[((r * inputs + c) % 17) / 17 for c in range(inputs)] for r in range(batch)])
        y_host = torch.tensor([r % widths[-1] for r in range(batch)])

        def step(x_src=x_host, y_src=y_host, non_blocking=False):
            x = x_src.to(device, non_blocking=non_blocking)
            y = y_src.to(device, non_blocking=non_blocking)
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()

        t = timed(device, step, kernel=False)
        shape = f"{inputs}->" + "->".join(map(str, widths)) + f" batch {batch}"
        flops = mlp_flops(batch, inputs, widths)
        rows.append(row(device, "train_step", shape, t, "wall", gflops=flops / t / 1e9))
        loops = [("train_loop", lambda: step())]
        if device == "cuda":
            x_pinned, y_pinned = x_host.pin_memory(), y_host.pin_memory()
            loops.append(("train_loop-pinned", lambda: step(x_pinned, y_pinned, True)))
        for op, one in loops:
            def run(one=one):
                for _ in range(RESIDENT_RUN):
                    one()

            t = timed(device, run, kernel=False) / RESIDENT_RUN
            rows.append(row(device, op, shape, t, "wall", gflops=flops / t / 1e9))
        x_dev, y_dev = x_host.to(device), y_host.to(device)
        for op, run in resident_steps(device, model, opt, loss_fn, x_dev, y_dev):
            t = timed(device, run, kernel=False) / RESIDENT_RUN
            rows.append(row(device, op, shape, t, "wall", gflops=flops / t / 1e9))

    if "epoch" in ops:
        rows.append(bench_epoch(device, quick))
    return rows


# Steps per train_loop or resident_step measurement, as Kiln's rows.
RESIDENT_RUN = 20


def resident_steps(device, model, opt, loss_fn, x, y):
    """(op, a run of RESIDENT_RUN steps) for the eager step on resident tensors and, on CUDA,
    the whole step captured in a CUDA graph (PyTorch's "whole network capture" recipe)."""
    def eager():
        for _ in range(RESIDENT_RUN):
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()

    runs = [("resident_step", eager)]
    if device == "cuda":
        # Warm up on a side stream (allocations, the optimizer's state), then capture.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                opt.zero_grad(set_to_none=True)
                loss_fn(model(x), y).backward()
                opt.step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            loss_fn(model(x), y).backward()
            opt.step()

        def replay():
            for _ in range(RESIDENT_RUN):
                graph.replay()

        runs.append(("resident_step-graph", replay))
    return runs


def mlp(device, inputs, widths):
    """Kiln's bench MLP (Linear, ReLU between them), SGD lr 0.01 momentum 0.9, cross-entropy."""
    layers, fan_in = [], inputs
    for w in widths:
        layers += [torch.nn.Linear(fan_in, w), torch.nn.ReLU()]
        fan_in = w
    model = torch.nn.Sequential(*layers[:-1]).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return model, opt, torch.nn.CrossEntropyLoss()


def mlp_flops(n, inputs, widths):
    """Forward plus both backward products of every layer over n rows."""
    flops, fan_in = 0, inputs
    for w in widths:
        flops += 6 * n * fan_in * w
        fan_in = w
    return flops


def bench_epoch(device, quick):
    """One epoch from a data set resident on the device, reshuffled there each epoch."""
    n, inputs, widths, batch = (4096, 64, [128, 10], 256) if quick else (60000, 784, [1024, 1024, 10], 256)
    torch.manual_seed(0)
    model, opt, loss_fn = mlp(device, inputs, widths)
    # x[i, j] = ((i * inputs + j) % 17) / 17, labels i % out, built on the device.
    x_all = (torch.arange(n * inputs, device=device) % 17).to(torch.float32).div_(17).view(n, inputs)
    y_all = torch.arange(n, device=device) % widths[-1]

    def epoch():
        order = torch.randperm(n, device=device)
        for start in range(0, n, batch):  # the last batch smaller (no drop_last)
            idx = order[start:start + batch]
            x, y = x_all[idx], y_all[idx]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()

    t = timed(device, epoch, kernel=False, reps=EPOCH_REPS, warmup=EPOCH_WARMUP)
    shape = f"{n}x{inputs} {inputs}->" + "->".join(map(str, widths)) + f" batch {batch}"
    return row(device, "epoch", shape, t, "wall", gflops=mlp_flops(n, inputs, widths) / t / 1e9)


def bench_optimizers(device, sizes, timing):
    rows = []
    variants = [("", "default", {}), ("-fused", "fused", {"fused": True})]
    if device == "cuda":
        variants.append(("-single", "single", {"foreach": False}))
    # torch's own choice when neither foreach nor fused is given (foreach on CUDA).
    default_impl = "foreach" if device == "cuda" else "single"
    for name, (cls, args, states) in OPTIMIZERS.items():
        for n in sizes:
            for suffix, impl, extra in variants:
                p = torch.nn.Parameter(torch.ones(n, device=device))
                p.grad = torch.full((n,), 1e-3, device=device)
                try:
                    opt = cls([p], lr=0.01, **args, **extra)
                    # Creates the state; radam's first 5 steps skip the adaptive term.
                    for _ in range(5):
                        opt.step()
                except (RuntimeError, TypeError, ValueError):
                    if impl != "fused":
                        raise
                    p = opt = None
                    continue  # no fused kernel for this optimizer on this device
                t = timed(device, opt.step)
                rows.append(row(device, name + suffix, f"{n} params", t, timing,
                                gbps=(3 + 2 * states) * 4 * n / t / 1e9,
                                impl=default_impl if impl == "default" else impl))
                del p, opt
                if device == "cuda":
                    torch.cuda.empty_cache()
    return rows


def side_by_side(kiln_rows, torch_rows):
    """Kiln's GPU rows beside PyTorch's CUDA rows, and Kiln's CPU device beside PyTorch's CPU.

    Each Kiln row gets one line per PyTorch row of its op or a variant of it ("adam",
    "adam-fused", "adam-single"), the default first; the last column, on the first line of the
    group, is the fastest PyTorch variant's time / Kiln's time (at least 1: Kiln is ahead).
    """
    print("| op | shape | Kiln | PyTorch | PyTorch / Kiln | fastest PyTorch / Kiln |")
    print("|---|---|---|---|---|---|")
    pairs = {"gpu": "torch-cuda", "cpu": "torch-cpu"}

    def rate(r):
        if r.get("gflops"):
            return f" ({r['gflops']:.1f} GFLOP/s)"
        if r.get("gbps"):
            return f" ({r['gbps']:.1f} GB/s)"
        return ""

    for k in kiln_rows:
        group = [t for t in torch_rows
                 if pairs.get(k["device"]) == t["device"] and t["shape"] == k["shape"]
                 and (t["op"] == k["op"] or t["op"].startswith(k["op"] + "-"))]
        group.sort(key=lambda t: t["op"] != k["op"])  # stable: the default first
        if not group:
            continue
        fastest = min(group, key=lambda t: t["median_s"])
        best = f"**{fastest['median_s'] / k['median_s']:.2f}** ({fastest['op']})"
        kiln = f"{k['median_s'] * 1e3:.3f} ms{rate(k)}"
        for i, t in enumerate(group):
            print(f"| {t['op']} | {k['shape']} ({k['device']}) | {kiln if i == 0 else ''} "
                  f"| {t['median_s'] * 1e3:.3f} ms{rate(t)} | {t['median_s'] / k['median_s']:.2f} "
                  f"| {best if i == 0 else ''} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true", help="print {\"results\": [...]}")
    ap.add_argument("--kiln", help="kiln bench --json output to compare with")
    ap.add_argument("--torch", help="this script's --json output, instead of measuring")
    ap.add_argument("--ops", default=",".join(OPS), help="comma-separated: " + ", ".join(OPS))
    args = ap.parse_args()
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    unknown = [o for o in ops if o not in OPS]
    if unknown:
        ap.error(f"unknown op(s) {', '.join(unknown)}; ops: {', '.join(OPS)}")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if args.torch:
        with open(args.torch) as f:
            rows = json.load(f)["results"]
    else:
        rows = bench(args.device, args.quick, ops)
    if args.kiln:
        with open(args.kiln) as f:
            side_by_side(json.load(f)["results"], rows)
    if args.json or not (args.kiln or args.torch):
        print(json.dumps({"results": rows}))


if __name__ == "__main__":
    main()
