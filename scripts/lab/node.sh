# shellcheck shell=bash
# shellcheck disable=SC2034 # LAB_NODE_* results are read by scripts/lab-node.sh
# The kernel lab's node image (scripts/lab-node.sh): a Debian 12 root file
# system with systemd as PID 1, cached as disk images. Sourced after lib.sh.
#
#   $LAB_CACHE/node/base-<key>/tree   debootstrap --variant=minbase + lab_node_configure
#   $LAB_CACHE/node/base-<key>.img    the same as a disk image (GPT, ext4)
#   $LAB_CACHE/node/layer-<key>.img   the base plus a scenario's extra packages
#
# <key> is a hash of the recipe (the functions below and the package lists), so
# a changed recipe builds a new image and never reuses a stale one. Images are
# booted with snapshot=on: a boot never changes them.

LAB_NODE_SUITE=bookworm
LAB_NODE_INCLUDE=systemd,systemd-sysv,udev,iproute2,kmod

# What the base image gets on top of debootstrap: serial getty and background
# timers masked (they would compete with the scenario for an emulated CPU),
# and one unit that, once the node is up, mounts the lab disk (NVMe namespace
# 2) and runs its `run` script with its output on the serial console.
lab_node_configure() {
    local tree=$1 unit
    for unit in serial-getty@ttyS0.service getty@tty1.service apt-daily.timer \
        apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer; do
        ln -sfn /dev/null "$tree/etc/systemd/system/$unit"
    done
    echo lab-node >"$tree/etc/hostname"
    printf '127.0.0.1 localhost\n127.0.1.1 lab-node\n::1 localhost\n' >"$tree/etc/hosts"
    : >"$tree/etc/fstab"
    ln -sfn /lib/systemd/system/multi-user.target "$tree/etc/systemd/system/default.target"
    mkdir -p "$tree/usr/local/sbin" "$tree/etc/systemd/system/multi-user.target.wants"
    cat >"$tree/usr/local/sbin/moat-lab-boot" <<'EOF'
#!/bin/bash
# Mounts the kernel lab's disk (NVMe namespace 2) and runs its `run` script.
for b in /sys/block/nvme*; do
    [[ $(cat "$b/nsid" 2>/dev/null) == 2 ]] && dev=/dev/${b##*/}
done
mkdir -p /run/moat-lab
if [[ -n ${dev:-} ]] && mount -o ro "$dev" /run/moat-lab; then
    exec /run/moat-lab/run
fi
echo "lab: no lab disk (NVMe namespace 2)"
systemctl poweroff -f
EOF
    chmod 755 "$tree/usr/local/sbin/moat-lab-boot"
    cat >"$tree/etc/systemd/system/moat-lab.service" <<'EOF'
[Unit]
Description=moat kernel lab: the scenario on the lab disk
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/moat-lab-boot
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
EOF
    ln -sfn /etc/systemd/system/moat-lab.service \
        "$tree/etc/systemd/system/multi-user.target.wants/moat-lab.service"
    # Nothing to keep between boots (every boot starts from the image).
    mkdir -p "$tree/etc/systemd/journald.conf.d"
    printf '[Journal]\nStorage=volatile\n' >"$tree/etc/systemd/journald.conf.d/lab.conf"
}

# The cache key of the base image.
lab_node_base_key() {
    { echo "$LAB_NODE_SUITE $LAB_NODE_INCLUDE"; declare -f lab_node_configure; } |
        sha256sum | cut -c1-12
}

# Sets LAB_NODE_BASE (the tree) and LAB_NODE_IMAGE (its disk image), building
# them when they are not cached. Returns 2 with LAB_NODE_WHY when debootstrap
# cannot reach the archive and nothing is cached.
lab_node_base() {
    local key dir t0=$SECONDS
    key=$(lab_node_base_key)
    dir=$LAB_CACHE/node/base-$key
    LAB_NODE_BASE=$dir/tree
    LAB_NODE_IMAGE=$dir.img
    if [[ -f $dir/.done && -f $LAB_NODE_IMAGE ]]; then
        return 0
    fi
    lab_say "debootstrap --variant=minbase --include=$LAB_NODE_INCLUDE $LAB_NODE_SUITE (cached in $dir)"
    lab_rm "$dir" "$LAB_NODE_IMAGE"
    mkdir -p "$dir"
    if ! debootstrap --variant=minbase --include="$LAB_NODE_INCLUDE" "$LAB_NODE_SUITE" \
        "$dir/tree" >"$dir/debootstrap.log" 2>&1; then
        LAB_NODE_WHY="debootstrap failed (no network?): $(tail -n 1 "$dir/debootstrap.log")"
        lab_rm "$dir/tree"
        return 2
    fi
    lab_node_configure "$dir/tree"
    rm -f "$dir/tree/var/cache/apt/archives/"*.deb
    lab_mkfs "$dir/tree" "$LAB_NODE_IMAGE" 2048 moat-node
    touch "$dir/.done"
    lab_say "node base image: $(du -sm "$dir/tree" | cut -f1) MiB tree, built in $((SECONDS - t0)) s"
}

# Sets LAB_NODE_IMAGE to an image of the base with Debian packages $@ added
# (a cached layer per package set; the base image itself when there are none).
lab_node_layer() {
    local key dir t0=$SECONDS rc=0
    (($#)) || return 0
    key=$( (
        lab_node_base_key
        printf '%s\n' "$@" | sort -u
    ) | sha256sum | cut -c1-12)
    dir=$LAB_CACHE/node/layer-$key
    if [[ -f $dir/.done && -f $dir.img ]]; then
        LAB_NODE_IMAGE=$dir.img
        return 0
    fi
    lab_say "node layer with $* (cached in $dir)"
    lab_rm "$dir" "$dir.img"
    mkdir -p "$dir"
    cp -a "$LAB_NODE_BASE" "$dir/tree"
    # apt and the maintainer scripts in a chroot: /proc, /sys and /dev from the
    # host, no service started (policy-rc.d), all undone whatever happens.
    printf '#!/bin/sh\nexit 101\n' >"$dir/tree/usr/sbin/policy-rc.d"
    chmod 755 "$dir/tree/usr/sbin/policy-rc.d"
    cp /etc/resolv.conf "$dir/tree/etc/resolv.conf" 2>/dev/null || true
    (
        t=$dir/tree
        trap 'umount "$t/dev" "$t/sys" "$t/proc" 2>/dev/null' EXIT
        mount -t proc proc "$t/proc"
        mount -t sysfs sysfs "$t/sys"
        mount --bind /dev "$t/dev"
        DEBIAN_FRONTEND=noninteractive chroot "$t" sh -c \
            "apt-get update -qq && apt-get install -y -qq --no-install-recommends $* && apt-get clean"
    ) >"$dir/apt.log" 2>&1 || rc=$?
    rm -f "$dir/tree/usr/sbin/policy-rc.d"
    if ((rc != 0)); then
        LAB_NODE_WHY="installing $* into the node image failed: $(tail -n 1 "$dir/apt.log")"
        lab_rm "$dir"
        return 2
    fi
    lab_mkfs "$dir/tree" "$dir.img" 2048 moat-node
    lab_rm "$dir/tree"
    touch "$dir/.done"
    LAB_NODE_IMAGE=$dir.img
    lab_say "node layer image built in $((SECONDS - t0)) s"
}
