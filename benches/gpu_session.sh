#!/usr/bin/env bash
# Everything BENCHMARKS.md needs from a lent NVIDIA machine, in one `device` call (see the
# device tool's README). Before the call, on the development machine:
#   echo /.gl/ >> .git/info/exclude; echo /gpubin/ >> .git/info/exclude
#   (fetch the Vulkan loader .debs into .gl as the device README says)
#   cargo build --release --bins --examples && mkdir -p gpubin
#   cp target/release/kiln target/release/examples/upload_paths gpubin/
#   cp -r ../shared/data/mnist gpubin/
# then run `bash benches/gpu_session.sh` there with carry [".gl", "gpubin"] (KILN=path runs
# another build).
# Writes nvidia-smi.txt, devices.txt, tune.txt, kiln.json, profile.txt, torch.json, side_by_side.md,
# mnist.txt (benches/mnist.toml on the GPU and the CPU device, and PyTorch's twin),
# nosplit.txt (matmul, step and profile rows with KILN_SPLIT_K=0),
# big-models.txt (models over one binding, and a 1B-parameter MLP), tiles.txt (the matmul rows
# with each tile shape forced), upload.txt (host batch writes on 1 to 8 threads,
# examples/upload_paths.rs, where gpubin has it) and the tile cache, packed into $OUT/kiln-gpu-session.tgz (the device tool
# brings back at most 8 files), also when a step fails or the call runs out of time.
set -euo pipefail
out=/tmp/kiln-gpu-session
kiln=${KILN:-gpubin/kiln}
. benches/gpu_setup.sh
export KILN_CACHE_DIR="$out"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
"$kiln" devices | tee "$out/devices.txt"
"$kiln" tune | tee "$out/tune.txt"
# How fast this host checks and copies a batch into staging memory, on 1 to 8 threads (the
# choice `GpuContext::write_finite` measures for itself on a trainer's first batches).
if [ -x gpubin/upload_paths ]; then
    gpubin/upload_paths > "$out/upload.txt" 2>&1 || echo "exit $?" >> "$out/upload.txt"
fi
"$kiln" bench --device both --activations both --json > "$out/kiln.json"
# Where each step's time goes, as a table to read (the same rows are in kiln.json).
"$kiln" bench --device gpu --activations both --ops profile > "$out/profile.txt" 2>&1 || true
# The same rows with the tuner kept from splitting k: what split-k changes, same binary, same call.
KILN_SPLIT_K=0 "$kiln" bench --device gpu --ops matmul,train_step,profile \
    > "$out/nosplit.txt" 2>&1 || true
python3 benches/pytorch_reference.py --json > "$out/torch.json"
python3 benches/pytorch_reference.py --kiln "$out/kiln.json" --torch "$out/torch.json" \
    > "$out/side_by_side.md"
cat "$out/side_by_side.md"
# Every product of the bench with each tile shape forced: what the tuner's size classes should
# pick, measured rather than guessed. The last twelve are matmul_tiles::EXPERIMENTS, not yet
# among the tuner's candidates: warps of 4×8 threads, 16 outputs a thread one way, and the
# inner loop unrolled by the host.
for tiles in 32x32x16/4x4 32x32x32/4x4 32x32x64/4x4 32x64x32/4x4 64x32x32/4x4 64x64x8/4x4 \
    64x64x16/4x4 64x64x32/4x4 64x64x16/8x8 128x64x8/8x4 64x128x8/4x8 128x128x8/8x8 \
    128x128x16/8x8 \
    128x128x8/8x8/warp 128x128x16/8x8/warp 64x64x16/4x4/warp 128x128x8/8x16 128x128x8/16x8 \
    128x256x8/8x16 256x128x8/16x8 128x256x8/8x16/warp \
    128x128x8/8x8/unroll 128x128x16/8x8/unroll 64x64x16/4x4/unroll 128x128x8/8x8/warp/unroll; do
    echo "== $tiles"
    KILN_MATMUL_TILES=$tiles "$kiln" bench --device gpu --ops matmul || echo "exit $?"
done > "$out/tiles.txt" 2>&1
pack
# A failing command is recorded and the rest still run: one call is all the session has.
{
    for device in gpu gpu cpu; do
        echo "== kiln --device $device"
        "$kiln" train benches/mnist.toml --device "$device" 2>&1 | tail -2 || echo "exit $?"
    done
    python3 benches/mnist_reference.py gpubin/mnist --split-seed 1 || echo "exit $?"
} 2>&1 | tee "$out/mnist.txt"
# On digits, 3 updates with AdamW: 64→20000→20000→20000→10 (~801M parameters: each weight in
# one binding, each arena over one 2 GiB binding) and 31 layers of 6000 (~1.08B parameters:
# each arena over one 4 GiB buffer).
TIMEFORMAT="%R s wall"
{
    for layers in '{ dense = 20000 }, "relu", { dense = 20000 }, "relu", { dense = 20000 }, "relu", { dense = 10 }' \
        "$(printf '{ dense = 6000 }, "relu", %.0s' $(seq 31)){ dense = 10 }"; do
        printf '[model]\nlayers = [%s]\nloss = "cross_entropy"\n[data]\nsource = "digits"\n[optimizer]\nkind = "adamw"\nlr = 0.0001\n[train]\nsteps = 3\nbatch_size = 64\n' \
            "$layers" > "$out/big.toml"
        echo "== $(grep -o 'dense = [0-9]*' "$out/big.toml" | sort | uniq -c | tr '\n' ' ')"
        time ("$kiln" train "$out/big.toml" --device gpu 2>&1 | tail -3 || echo "exit $?")
    done
} 2>&1 | tee "$out/big-models.txt"
