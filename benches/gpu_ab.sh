#!/usr/bin/env bash
# Two builds of kiln side by side on a lent GPU, for a kernel change: `gpubin/kiln-a` (before)
# and `gpubin/kiln-b` (after) each run `kiln tune` and then `kiln bench --device gpu` twice,
# alternating (a, b, a, b) so that clock and thermal drift fall on both; PyTorch's reference
# runs once in the same call and is joined with each bench. Before the call, on the
# development machine (see benches/gpu_session.sh for .gl and gpubin):
#   cp <old build>/kiln gpubin/kiln-a; cargo build --release && cp target/release/kiln gpubin/kiln-b
# then run `bash benches/gpu_ab.sh [ops]` there with carry [".gl", "gpubin"]. Writes
# kiln-gpu-ab.tgz (every file) and ab.md (the joined tables) under $OUT.
set -uo pipefail
ops=${1:-copy,matmul,optimizers,train_step,epoch}
out=/tmp/kiln-gpu-ab
kiln=gpubin/kiln-b
. benches/gpu_setup.sh
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > "$out/gpu.txt" 2>&1
for build in a b; do
    KILN_CACHE_DIR="$out/cache-$build" gpubin/kiln-$build tune > "$out/tune-$build.txt" 2>&1
done
for round in 1 2; do
    for build in a b; do
        KILN_CACHE_DIR="$out/cache-$build" gpubin/kiln-$build bench --device gpu --ops "$ops" \
            --json > "$out/kiln-$build-$round.json" 2> "$out/kiln-$build-$round.err"
    done
done
python3 benches/pytorch_reference.py --json > "$out/torch.json" 2> "$out/torch.err"
for round in 1 2; do
    for build in a b; do
        echo "## kiln-$build, round $round"
        python3 benches/pytorch_reference.py --kiln "$out/kiln-$build-$round.json" \
            --torch "$out/torch.json"
    done
done > "$out/ab.md" 2>&1
[ -n "${OUT:-}" ] && cp "$out/ab.md" "$OUT/ab.md"
cat "$out/gpu.txt" "$out/tune-b.txt"
