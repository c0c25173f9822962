#!/usr/bin/env bash
# Disk images for the VM tests (tests/vm.rs, docs/testing.md#devices-in-a-vm), made without
# mounting anything (mkfs.ext4 -d), as root.
#
#   image.sh rootfs CACHE               debootstrap Debian 12 once per package list into
#                                       CACHE/debian-<hash>/; prints that folder
#   image.sh debian ROOTFS AGENT OUT    OUT/root.img: ROOTFS plus the agent installed as the
#                                       Yocto recipe installs it, and the test's control
#                                       service; OUT/vmlinuz, OUT/initrd.img
#   image.sh bare ROOTFS AGENT OUT      the same without the agent installed: AGENT as
#                                       `edge-agent` and the repository's packaging/ in
#                                       /root/edge-agent/, where docs/install.md starts
#   image.sh busybox ROOTFS AGENT OUT   OUT/busybox.img: ROOTFS's busybox-static as /sbin/init
#                                       with Buildroot's inittab, rcS and rcK, and the agent as
#                                       buildroot/package/edge-agent installs it; OUT/vmlinuz,
#                                       OUT/initrd.img
#   image.sh accel ROOTFS               prints kvm when QEMU's KVM boots ROOTFS's kernel, else
#                                       tcg (and on stderr why)
#   image.sh data OUT SIZE_MIB [DIR]    OUT: an empty ext4 data partition labelled edge-data
#                                       (DIR's files in it)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

# What the Debian image holds; its hash names the cached rootfs.
suite=bookworm
mirror=http://deb.debian.org/debian
packages=systemd-sysv,udev,dbus,kmod,docker.io,apparmor,busybox-static,linux-image-amd64,initramfs-tools,e2fsprogs,procps

die() { echo "image.sh: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null || die "$1 is missing: install $2 (tests/run.sh does)"; }

rootfs() {
    local cache=$1
    need debootstrap debootstrap
    local key
    key=$(printf '%s %s \n' "$suite" "$packages" | sha256sum | cut -c1-12)
    local dir="$cache/debian-$key"
    if [ ! -e "$dir/.complete" ]; then
        rm -rf "$dir.partial"
        mkdir -p "$cache"
        debootstrap --variant=minbase --include="$packages" "$suite" "$dir.partial" "$mirror" \
            >"$cache/debootstrap-$key.log" 2>&1 \
            || die "debootstrap failed; its log: $cache/debootstrap-$key.log (and $dir.partial/debootstrap/debootstrap.log)"
        rm -rf "$dir.partial/var/cache/apt/archives/"*.deb
        touch "$dir.partial/.complete"
        rm -rf "$dir"
        mv "$dir.partial" "$dir"
    fi
    echo "$dir"
}

# The kernel and initrd of ROOTFS, for QEMU's direct kernel boot.
kernel() {
    local root=$1 out=$2
    cp "$(ls "$root"/boot/vmlinuz-* | tail -n 1)" "$out/vmlinuz"
    cp "$(ls "$root"/boot/initrd.img-* | tail -n 1)" "$out/initrd.img"
}

# A /dev/kvm that opens may still not run a stock kernel: PVM (the kvm_pvm module, on some
# cloud sandboxes) runs only kernels built as PVM guests, and QEMU then hangs without a word. So
# the kernel must print its banner under KVM within 20 s (it then panics without a root file
# system and QEMU exits).
accel() {
    local root=$1
    need qemu-system-x86_64 qemu-system-x86
    if [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
        echo "no /dev/kvm this user can open" >&2
        echo tcg
        return
    fi
    local log
    log=$(mktemp)
    { (timeout 20 qemu-system-x86_64 -accel kvm -cpu host -m 256 -nodefaults -no-user-config \
        -display none -no-reboot -kernel "$(ls "$root"/boot/vmlinuz-* | tail -n 1)" \
        -append "console=ttyS0 panic=-1" -serial "file:$log") >/dev/null 2>&1; } 2>/dev/null || true
    if grep -q "Linux version" "$log"; then
        echo kvm
    else
        local why=
        [ -d /sys/module/kvm_pvm ] && why=" (the kvm_pvm module is loaded: PVM runs only PVM guest kernels)"
        echo "/dev/kvm opens but QEMU's KVM did not start a stock kernel within 20 s$why" >&2
        echo tcg
    fi
    rm -f "$log"
}

# ext4 image OUT of SIZE_MIB holding folder DIR (owners, modes and device nodes kept).
ext4() {
    local dir=$1 out=$2 size=$3 label=$4
    rm -f "$out"
    mkfs.ext4 -q -F -L "$label" -E root_owner=0:0 -d "$dir" "$out" "${size}M" \
        || die "mkfs.ext4 -d $dir $out failed"
}

# Checks the inputs of an image and prints its empty staging folder in OUT.
new_stage() {
    local rootfs=$1 agent=$2 out=$3
    [ -e "$rootfs/.complete" ] || die "$rootfs is not a finished rootfs (image.sh rootfs)"
    [ -x "$agent" ] || die "no agent binary at $agent (cross/build-static.sh build x86_64-unknown-linux-musl)"
    mkdir -p "$out"
    rm -rf "$out/stage"
    echo "$out/stage"
}

# A staging folder in OUT holding a copy of the Debian ROOTFS, printed.
debian_stage() {
    local rootfs=$1 agent=$2 out=$3
    local stage
    stage=$(new_stage "$rootfs" "$agent" "$out")
    cp -a "$rootfs" "$stage"
    rm -f "$stage/.complete"
    echo "$stage"
}

# The Debian machine in STAGE: a host name, DHCP on QEMU's user network, the data partition
# when attached, a persistent journal, and the tests' control channel; then OUT/root.img,
# OUT/vmlinuz and OUT/initrd.img. `nofail`: nothing waits for the data partition when none is
# attached; systemd's default device timeout (90 s), not a shorter one, so that a data
# partition udev is slow to name on a loaded machine is still mounted.
debian_image() {
    local stage=$1 out=$2
    echo edge-vm >"$stage/etc/hostname"
    cat >"$stage/etc/fstab" <<'FSTAB'
/dev/vda / ext4 rw,errors=remount-ro 0 1
LABEL=edge-data /data ext4 defaults,nofail 0 2
FSTAB
    mkdir -p "$stage/data" "$stage/var/log/journal"
    cat >"$stage/etc/systemd/network/10-vm.network" <<'NET'
[Match]
Name=en* eth*
[Network]
DHCP=ipv4
NET
    systemctl --root="$stage" --quiet enable systemd-networkd.service
    install -D -m 0755 "$here/control.sh" "$stage/usr/local/sbin/vm-control"
    cat >"$stage/etc/systemd/system/vm-control.service" <<'UNIT'
[Unit]
Description=VM test control channel (tests/support/vm.rs)
DefaultDependencies=no
After=systemd-udevd.service
[Service]
ExecStart=/usr/local/sbin/vm-control
Restart=always
[Install]
WantedBy=sysinit.target
UNIT
    systemctl --root="$stage" --quiet enable vm-control.service
    # No waiting for a getty or apt's timers on a test machine.
    systemctl --root="$stage" --quiet mask apt-daily.timer apt-daily-upgrade.timer \
        e2scrub_all.timer fstrim.timer 2>/dev/null || true

    ext4 "$stage" "$out/root.img" 3072 root
    kernel "$stage" "$out"
    rm -rf "$stage"
}

debian() {
    local agent=$2 out=$3
    local stage
    stage=$(debian_stage "$@")

    # The agent, as yocto-layer's recipe installs it (do_install and the systemd class, which
    # enables SYSTEMD_SERVICE), and nothing else of it configured.
    install -D -m 0755 "$agent" "$stage/usr/bin/edge-agent"
    install -D -m 0644 "$repo/packaging/edge-agent.service" "$stage/usr/lib/systemd/system/edge-agent.service"
    install -D -m 0644 "$repo/packaging/edge-agent.path" "$stage/usr/lib/systemd/system/edge-agent.path"
    install -d -m 0755 "$stage/etc/edge-agent"
    install -m 0600 "$repo/packaging/edge-agent.env" "$stage/etc/edge-agent/edge-agent.env"
    systemctl --root="$stage" --quiet enable edge-agent.service edge-agent.path
    debian_image "$stage" "$out"
}

# Nothing of the agent installed: what an operator copies to a Debian device before following
# docs/install.md (the binary named edge-agent and packaging/ in one folder).
bare() {
    local agent=$2 out=$3
    local stage
    stage=$(debian_stage "$@")
    install -D -m 0755 "$agent" "$stage/root/edge-agent/edge-agent"
    cp -r "$repo/packaging" "$stage/root/edge-agent/packaging"
    debian_image "$stage" "$out"
}

# BusyBox init as Buildroot sets it up: its inittab (package/busybox/inittab) runs rcS, which
# starts /etc/init.d/S??* in order, and rcK at poweroff, which stops them in reverse order
# (package/initscripts/init.d/); syslogd as S01syslogd does. The agent's files as
# buildroot/package/edge-agent/edge-agent.mk installs them. No Docker (the agent polls without
# it); busybox from Debian (its applets differ from a Buildroot configuration's).
busybox_image() {
    local rootfs=$1 agent=$2 out=$3
    local stage
    stage=$(new_stage "$rootfs" "$agent" "$out")
    mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,etc/init.d,proc,sys,dev,tmp,run,root,data,lib/modules}
    mkdir -p "$stage"/var/{lib,log}
    ln -s ../run "$stage/var/run"
    install -m 0755 "$rootfs/bin/busybox" "$stage/bin/busybox"
    local applet
    for applet in $("$stage/bin/busybox" --list-full); do
        [ -e "$stage/$applet" ] || ln -s /bin/busybox "$stage/$applet"
    done

    install -D -m 0755 "$agent" "$stage/usr/bin/edge-agent"
    install -D -m 0755 "$repo/packaging/edge-agent.init" "$stage/etc/init.d/S70edge-agent"
    install -D -m 0600 "$repo/packaging/edge-agent.env" "$stage/etc/edge-agent/edge-agent.env"

    cat >"$stage/etc/inittab" <<'INITTAB'
::sysinit:/bin/mount -t proc proc /proc
::sysinit:/bin/mount -o remount,rw /
::sysinit:/bin/mkdir -p /dev/pts /dev/shm
::sysinit:/bin/mount -a
::sysinit:/bin/mkdir -p /run/lock/subsys
::sysinit:/bin/hostname -F /etc/hostname
::sysinit:/etc/init.d/rcS
::shutdown:/etc/init.d/rcK
::shutdown:/bin/umount -a -r
INITTAB
    cat >"$stage/etc/init.d/rcS" <<'RCS'
#!/bin/sh
for i in /etc/init.d/S??*; do
    [ ! -f "$i" ] && continue
    "$i" start
done
RCS
    cat >"$stage/etc/init.d/rcK" <<'RCK'
#!/bin/sh
for i in $(ls -r /etc/init.d/S??*); do
    [ ! -f "$i" ] && continue
    "$i" stop
done
RCK
    cat >"$stage/etc/init.d/S01syslogd" <<'SYSLOG'
#!/bin/sh
case "$1" in
start) syslogd ;;
stop) killall syslogd; sync ;;
esac
SYSLOG
    # The test machine: QEMU's user network (static, as slirp hands out), and the control
    # channel (its module is not in the initrd).
    cat >"$stage/etc/init.d/S10vm" <<'VM'
#!/bin/sh
case "$1" in
start)
    insmod /lib/modules/virtio_console.ko
    ip link set lo up
    # The initrd's udev has named it already (ens2, say).
    for dev in /sys/class/net/*; do dev=${dev##*/}; [ "$dev" = lo ] || break; done
    ip link set "$dev" up
    ip addr add 10.0.2.15/24 dev "$dev"
    ip route add default via 10.0.2.2
    /usr/local/sbin/vm-control </dev/null >/dev/null 2>&1 &
    ;;
esac
VM
    chmod 0755 "$stage"/etc/init.d/*
    install -D -m 0755 "$here/control.sh" "$stage/usr/local/sbin/vm-control"
    cp "$rootfs"/lib/modules/*/kernel/drivers/char/virtio_console.ko "$stage/lib/modules/"
    cat >"$stage/etc/fstab" <<'FSTAB'
proc /proc proc defaults 0 0
devpts /dev/pts devpts defaults,gid=5,mode=620 0 0
tmpfs /dev/shm tmpfs mode=0777 0 0
tmpfs /tmp tmpfs mode=1777 0 0
tmpfs /run tmpfs mode=0755,nosuid,nodev 0 0
sysfs /sys sysfs defaults 0 0
FSTAB
    echo edge-busybox >"$stage/etc/hostname"
    echo 'root::0:0:root:/root:/bin/sh' >"$stage/etc/passwd"
    echo 'root:x:0:' >"$stage/etc/group"

    ext4 "$stage" "$out/busybox.img" 128 root
    kernel "$rootfs" "$out"
    rm -rf "$stage"
}

data() {
    local out=$1 size=$2 dir=${3:-}
    if [ -z "$dir" ]; then
        dir=$(mktemp -d)
        ext4 "$dir" "$out" "$size" edge-data
        rmdir "$dir"
    else
        ext4 "$dir" "$out" "$size" edge-data
    fi
}

case "${1:-}" in
    rootfs) rootfs "$2" ;;
    debian) debian "$2" "$3" "$4" ;;
    bare) bare "$2" "$3" "$4" ;;
    busybox) busybox_image "$2" "$3" "$4" ;;
    accel) accel "$2" ;;
    data) data "$2" "$3" "${4:-}" ;;
    *) die "usage: see the comment at the top of $0" ;;
esac
