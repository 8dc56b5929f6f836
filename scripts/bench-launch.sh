#!/usr/bin/env bash
# Measures launch latency side by side: `moat run` of /bin/true (default
# seccomp profile, user namespace, pids limit) against crun and runc running
# /bin/true from an OCI bundle with an equivalent config, and plain /bin/true
# as the floor. Also reports each launcher's peak RSS and which namespaces
# and cgroups each one gave the workload.
#
# Installs crun, runc and busybox-static if missing, builds moat and the
# bench in release mode, builds the bundle (busybox rootfs) in a temporary
# directory, and on a hybrid cgroup host mounts hugetlb on cgroup v1 for the
# run (crun refuses hybrid mode while cgroup v2 has a controller). Writes
# docs/benchmarks-launch.md and prints it. On exit it leaves the machine as
# it found it: hugetlb back on cgroup v2, no moat-bench cgroups, no
# temporary files (the installed packages stay).
#
# Usage: scripts/bench-launch.sh [launch_bench options, e.g. --rounds 50]
# As root. Method: see the doc comment of tests/src/bin/launch_bench.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "bench-launch: $*" >&2; }
die() {
    say "error: $*"
    exit 1
}

[[ $(id -u) -eq 0 ]] || die "run as root (moat run with a user namespace map, rootful crun and runc)"

out=docs/benchmarks-launch.md
cmd="scripts/bench-launch.sh${*:+ $*}"
cg=/sys/fs/cgroup
v2=$cg/unified
hugetlb=$cg/hugetlb
parent=moat-bench

# Debian packages the bench needs beyond scripts/setup.sh's.
missing=()
for p in crun runc busybox-static; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

say "cargo build --release --bin moat --bin launch_bench"
cargo build --release --bin moat --bin launch_bench

# Cleanup state, filled in as things are made.
tmp=""
mounted_hugetlb=0
made_hugetlb_dir=0
new_parents=()
for h in "$cg"/*/; do
    [[ -e $h/cgroup.procs && ! -e $h/$parent ]] && new_parents+=("${h%/}/$parent")
done

# A v1 hierarchy unmounted while it still has child cgroups (dying ones
# too: removed cgroups can linger for a while) is not destroyed: it stays,
# unmounted, and keeps its controller from cgroup v2. So after unmounting,
# wait for hugetlb to be back on v2; if it is not, wait until the hierarchy
# is down to its root cgroup, then mount and unmount it again.
hugetlb_cgroups() { awk '$1 == "hugetlb" { print $3 }' /proc/cgroups; }
hugetlb_on_v2() { grep -qw hugetlb "$v2/cgroup.controllers"; }
hugetlb_idle() { [[ $(hugetlb_cgroups) == 1 ]]; }
# wait_for SECONDS COMMAND...: polls COMMAND every 0.1 s.
wait_for() {
    local tries=$(($1 * 10))
    shift
    until "$@"; do
        ((--tries > 0)) || return 1
        sleep 0.1
    done
}
restore_hugetlb() {
    local leftover attempt
    leftover=$(find "$hugetlb" -mindepth 1 -type d 2>/dev/null || true)
    [[ -z $leftover ]] || say "warning: cgroups left in $hugetlb: $leftover"
    umount "$hugetlb" || say "warning: could not unmount $hugetlb"
    for attempt in 1 2 3 4 5; do
        if wait_for 5 hugetlb_on_v2; then
            say "hugetlb is back on cgroup v2"
            return 0
        fi
        say "hugetlb is still on a (detached) v1 hierarchy with $(hugetlb_cgroups) cgroups; retrying ($attempt)"
        wait_for 60 hugetlb_idle || true
        if mount -t cgroup -o hugetlb none "$hugetlb"; then
            umount "$hugetlb" || true
        fi
    done
    say "warning: hugetlb did not return to cgroup v2 (see /proc/cgroups; once its v1 hierarchy has no child cgroups, mount and unmount it again)"
}

cleanup() {
    local p c
    for p in "${new_parents[@]}"; do
        [[ -d $p ]] || continue
        for c in "$p"/*/; do
            if [[ -d $c ]]; then rmdir "$c" 2>/dev/null || true; fi
        done
        rmdir "$p" 2>/dev/null || say "warning: could not remove cgroup $p"
    done
    if ((mounted_hugetlb)); then
        restore_hugetlb
        if ((made_hugetlb_dir)); then rmdir "$hugetlb" || true; fi
    fi
    [[ -n $tmp ]] && rm -rf "$tmp"
    return 0
}
trap cleanup EXIT

tmp=$(mktemp -d /tmp/moat-bench-launch.XXXXXX)
# The container's root (host uid 100000) must reach the rootfs.
chmod 755 "$tmp"
bundle=$tmp/bundle
say "building the OCI bundle in $bundle"
mkdir -p "$bundle"/rootfs/{bin,proc,dev,sys}
cp /bin/busybox "$bundle/rootfs/bin/busybox"
ln -s busybox "$bundle/rootfs/bin/true"

# crun refuses a hybrid host while cgroup v2 has any controller.
if [[ -e $v2/cgroup.controllers ]] && ! mountpoint -q "$hugetlb"; then
    v2_controllers=$(cat "$v2/cgroup.controllers")
    if [[ $v2_controllers == hugetlb ]]; then
        say "mounting hugetlb on cgroup v1 at $hugetlb for crun (undone on exit)"
        [[ -d $hugetlb ]] || { mkdir "$hugetlb" && made_hugetlb_dir=1; }
        mount -t cgroup -o hugetlb none "$hugetlb"
        mounted_hugetlb=1
        new_parents+=("$hugetlb/$parent")
    elif [[ -n $v2_controllers ]]; then
        say "warning: cgroup v2 has controllers ($v2_controllers): crun will refuse to run"
    fi
fi

say "target/release/launch_bench --bundle $bundle $*"
mkdir -p docs
report=$tmp/report.md
{
    echo "# Launch latency: moat run against crun and runc"
    echo
    echo "Generated on $(date -u '+%Y-%m-%d %H:%M:%S UTC') by \`$cmd\` (as root);"
    echo "run that command from the repository root to reproduce (it rewrites this file)."
    echo "Method: see the doc comment of \`tests/src/bin/launch_bench.rs\`."
    echo
    target/release/launch_bench --moat target/release/moat --bundle "$bundle" "$@"
} >"$report"
chmod 644 "$report"
mv "$report" "$out"

echo >&2
say "wrote $out"
cat "$out"
