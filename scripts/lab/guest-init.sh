#!/bin/busybox sh
# shellcheck shell=dash
# PID 1 of the kernel lab's guest (scripts/test-kernels.sh puts it at /lab/init
# of the root image). Sets up a pure cgroup v2 host as a distribution's init
# would, runs each suite listed in /lab/suites.run, and writes the results as
# a tar archive to the disk that is NVMe namespace 2, after every suite
# (so a guest that dies later still reports what ran). Then powers off.
#
# /lab/suites.run: one suite a line, tab-separated: NAME, the directory to
# run in (the package's manifest dir, as cargo does), the test executable,
# then libtest arguments.

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TERM=dumb RUST_BACKTRACE=1
# The test executables look for moat and moatd next to them; they were built
# before the image was made, and there is no cargo in here.
export MOAT_TEST_PREBUILT=1
# What --env asked for (export lines).
# shellcheck disable=SC1091
[ -f /lab/env ] && . /lab/env

say() { echo "lab: $*" >/dev/console; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
# /tmp stays on the root disk (as on Debian): the repository may live under
# /tmp (CI clones there), and a tmpfs would hide it.
mount -t tmpfs -o mode=755 tmpfs /run
# Pure cgroup v2, mounted as systemd mounts it, with the pids controller
# enabled for children of the root as systemd does.
mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 /sys/fs/cgroup ||
    mount -t cgroup2 cgroup2 /sys/fs/cgroup
echo +pids >/sys/fs/cgroup/cgroup.subtree_control
mount -t bpf -o mode=700 bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
ip link set lo up
hostname lab

# The results disk is namespace 2 of the lab's NVMe controller.
results=
for b in /sys/block/nvme*; do
    [ "$(cat "$b/nsid" 2>/dev/null)" = 2 ] && results=/dev/${b##*/}
done
mkdir -p /results
save() {
    [ -n "$results" ] && tar -cf "$results" -C /results . && sync
}

{
    echo "kernel $(uname -r)"
    echo "cmdline $(cat /proc/cmdline)"
    echo "cgroup_mounts $(awk '$3 ~ /^cgroup/ {printf "%s:%s ", $2, $3}' /proc/mounts)"
    echo "cgroup_controllers $(cat /sys/fs/cgroup/cgroup.controllers)"
    echo "cgroup_subtree_control $(cat /sys/fs/cgroup/cgroup.subtree_control)"
    echo "btf $([ -e /sys/kernel/btf/vmlinux ] && echo yes || echo no)"
    echo "sched_process_exit_group_dead $(grep -q group_dead /sys/kernel/tracing/events/sched/sched_process_exit/format && echo yes || echo no)"
    echo "cpus $(nproc)"
} >/results/env
[ -n "$results" ] || say "no results disk (NVMe namespace 2); results only on the console"
say "kernel $(uname -r), cgroup2 at /sys/fs/cgroup, controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
save

timeout_s=$(cat /lab/suite-timeout 2>/dev/null || echo 1200)
tab=$(printf '\t')
while IFS="$tab" read -r name dir exe args; do
    [ -n "$name" ] || continue
    start=$(cut -d' ' -f1 /proc/uptime)
    # shellcheck disable=SC2086 # the arguments are split on purpose
    (cd "$dir" && CARGO_MANIFEST_DIR=$dir timeout -k 10 "$timeout_s" "$exe" $args) \
        >"/results/$name.out" 2>&1 </dev/null
    rc=$?
    end=$(cut -d' ' -f1 /proc/uptime)
    echo "$rc" >"/results/$name.rc"
    echo "$start $end" >"/results/$name.time"
    say "$name: exit $rc, $(grep '^test result:' "/results/$name.out" | tail -n 1 | cut -d. -f2-) ($(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.0f", b-a}') s)"
    save
done </lab/suites.run

# What the kernel loaded on demand while the suites ran.
echo "modules_loaded $(cut -d' ' -f1 /proc/modules | sort | tr '\n' ' ')" >>/results/env
dmesg >/results/dmesg 2>&1
save
say "done"
sync
poweroff -f
