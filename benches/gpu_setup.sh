# Sourced by the device scripts (gpu_session.sh, gpu_ab.sh) with `out` (a folder under /tmp)
# and `kiln` (a build to probe the adapter with) set: makes `out`, packs it into
# $OUT/<name of out>.tgz when the script ends however it ends (the device tool brings back at
# most 8 files), unpacks the carried Vulkan loader (.gl) and finds the NVIDIA driver.
mkdir -p "$out"
pack() { [ -n "${OUT:-}" ] && tar czf "$OUT/$(basename "$out").tgz" -C "$(dirname "$out")" "$(basename "$out")"; }
trap pack EXIT TERM
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export NODEVICE_SELECT=1 RUST_BACKTRACE=0
if ! "$kiln" devices 2>/dev/null | grep NVIDIA >/dev/null; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
