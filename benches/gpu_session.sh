#!/usr/bin/env bash
# Everything BENCHMARKS.md needs from a lent NVIDIA machine, in one `device` call (see the
# device tool's README). Before the call, on the development machine:
#   echo /.gl/ >> .git/info/exclude; echo /gpubin/ >> .git/info/exclude
#   (fetch the Vulkan loader .debs into .gl as the device README says)
#   cargo build --release && mkdir -p gpubin && cp target/release/kiln gpubin/
# then run `bash benches/gpu_session.sh` there with carry [".gl", "gpubin"].
# Writes nvidia-smi.txt, devices.txt, tune.txt, kiln.json, torch.json, side_by_side.md and the
# tile cache under $OUT.
set -euo pipefail
out=${OUT:-/tmp/kiln-gpu-session}
mkdir -p "$out"
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export NODEVICE_SELECT=1 KILN_CACHE_DIR="$out"
if ! gpubin/kiln devices 2>/dev/null | grep NVIDIA >/dev/null; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
gpubin/kiln devices | tee "$out/devices.txt"
gpubin/kiln tune | tee "$out/tune.txt"
gpubin/kiln bench --device both --json > "$out/kiln.json"
python3 benches/pytorch_reference.py --json > "$out/torch.json"
python3 benches/pytorch_reference.py --kiln "$out/kiln.json" --torch "$out/torch.json" \
    > "$out/side_by_side.md"
cat "$out/side_by_side.md"
