#!/usr/bin/env bash
# Boots a Debian kernel with cgroup v2 only under QEMU (software emulation)
# and runs allot-sys's v2 controller tests (crates/allot-sys/tests/vm_v2.rs)
# as the VM's workload. Installs what it needs; fails loudly when the VM
# cannot boot or any test fails.
#
#   bash tests/vm/run-v2-vm.sh            # build, boot, test
#   KEEP=1 bash tests/vm/run-v2-vm.sh     # keep the work dir for inspection
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
work=$(mktemp -d /tmp/allot-vm.XXXXXX)
cleanup() { [ "${KEEP:-0}" = 1 ] && echo "work dir kept: $work" || rm -rf "$work"; }
trap cleanup EXIT

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
[ -x /bin/busybox ] || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
    echo "== installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
busybox=/bin/busybox

echo "== kernel"
kpkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$kpkg" ]; then
    apt-get update -qq
    kpkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
fi
[ -n "$kpkg" ] || { echo "cannot find a Debian cloud kernel package" >&2; exit 1; }
cache=${ALLOT_VM_CACHE:-/var/cache/allot-vm}
mkdir -p "$cache"
if ! ls "$cache"/"$kpkg"_*.deb >/dev/null 2>&1; then
    chmod 777 "$cache"
    (cd "$cache" && apt-get download "$kpkg" >/dev/null 2>&1) || { echo "cannot download $kpkg" >&2; exit 1; }
fi
dpkg-deb -x "$(ls "$cache"/"$kpkg"_*.deb | head -1)" "$work/kernel"
vmlinuz=$(ls "$work"/kernel/boot/vmlinuz-* | head -1)
echo "kernel: $(basename "$vmlinuz")"

echo "== static test binary"
export RUSTFLAGS="-C target-feature=+crt-static"
bin=$(cargo test -q -p allot-sys --features vm-tests --test vm_v2 --no-run --target x86_64-unknown-linux-gnu \
        --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "vm_v2" and m.get("executable"):
        print(m["executable"])')
[ -x "$bin" ] || { echo "could not build the vm_v2 test binary" >&2; exit 1; }

echo "== initramfs"
root=$work/root
mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp,run}
cp "$busybox" "$root/bin/busybox"
for t in sh mount mkdir cat echo sleep poweroff seq ls; do ln -s busybox "$root/bin/$t"; done
cp "$bin" "$root/vm_v2"
cat > "$root/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t cgroup2 none /sys/fs/cgroup
echo "+cpu +memory +pids +io" > /sys/fs/cgroup/cgroup.subtree_control
echo "VM-BOOTED $(cat /sys/fs/cgroup/cgroup.subtree_control)"
/vm_v2
echo "VM-EXIT $?"
poweroff -f
INIT
chmod +x "$root/init"
(cd "$root" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 > "$work/initramfs.cpio.gz")

echo "== boot (qemu tcg)"
log=$work/console.log
timeout 900 qemu-system-x86_64 -accel tcg -cpu max -m 1024 -smp 2 -kernel "$vmlinuz" \
    -initrd "$work/initramfs.cpio.gz" \
    -append "console=ttyS0 quiet panic=-1 rdinit=/init psi=1 systemd.unified_cgroup_hierarchy=1" \
    -nographic -no-reboot > "$log" 2>&1 || true
grep -E "^(VM-|VM:|vm:)" "$log" | tr -d '\r' || true
if ! grep -q "VM-BOOTED" "$log"; then
    echo "the VM did not boot; console:" >&2
    tail -40 "$log" >&2
    exit 1
fi
grep -q "^VM-EXIT 0" <(tr -d '\r' < "$log") || { echo "v2 VM tests failed" >&2; tail -60 "$log" | tr -d '\r' >&2; exit 1; }
echo "== v2 VM tests passed"
