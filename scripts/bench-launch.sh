#!/usr/bin/env bash
# Measures launch latency side by side: `moat run` of /bin/true (default
# seccomp profile, user namespace, pids limit) against crun and runc running
# /bin/true from an OCI bundle with an equivalent config, bubblewrap running
# it under the same seccomp filter, and plain /bin/true as the floor. Also
# reports each launcher's peak RSS and which namespaces and cgroups each one
# gave the workload.
#
# Installs crun, runc, bubblewrap and busybox-static if missing, builds moat
# and the bench in release mode, builds the bundle (busybox rootfs) in a
# temporary directory, and on a hybrid cgroup host mounts hugetlb on cgroup
# v1 for the run (crun refuses hybrid mode while cgroup v2 has a controller;
# scripts/lib/crun-hybrid.sh). Writes docs/benchmarks-launch.md and prints
# it. On exit it leaves the machine as it found it: hugetlb back on cgroup
# v2, no moat-bench cgroups, no temporary files (the installed packages
# stay).
#
# Usage: scripts/bench-launch.sh [launch_bench options, e.g. --rounds 50 or
#        --quick --json /tmp/launch.json]
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
parent=moat-bench

# Debian packages the bench needs beyond scripts/setup.sh's.
missing=()
for p in crun runc bubblewrap busybox-static; do
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

# shellcheck source=scripts/lib/crun-hybrid.sh
source scripts/lib/crun-hybrid.sh
CRUN_HYBRID_SAY=bench-launch

# Cleanup state, filled in as things are made.
tmp=""
new_parents=()
for h in "$cg"/*/; do
    [[ -e $h/cgroup.procs && ! -e $h/$parent ]] && new_parents+=("${h%/}/$parent")
done

cleanup() {
    local p c
    for p in "${new_parents[@]}"; do
        [[ -d $p ]] || continue
        for c in "$p"/*/; do
            if [[ -d $c ]]; then rmdir "$c" 2>/dev/null || true; fi
        done
        rmdir "$p" 2>/dev/null || say "warning: could not remove cgroup $p"
    done
    crun_hybrid_restore
    [[ -n $tmp ]] && rm -rf "$tmp"
    return 0
}
trap cleanup EXIT
# Leave through the EXIT trap on ^C or kill too.
trap 'exit 130' INT
trap 'exit 143' TERM

tmp=$(mktemp -d /tmp/moat-bench-launch.XXXXXX)
# The container's root (host uid 100000) must reach the rootfs.
chmod 755 "$tmp"
bundle=$tmp/bundle
say "building the OCI bundle in $bundle"
mkdir -p "$bundle"/rootfs/{bin,proc,dev,sys}
cp /bin/busybox "$bundle/rootfs/bin/busybox"
ln -s busybox "$bundle/rootfs/bin/true"

# crun refuses a hybrid host while cgroup v2 has any controller; this
# mounts hugetlb on cgroup v1 when that is what it takes (undone on exit).
crun_hybrid_enable

say "target/release/launch_bench --bundle $bundle $*"
mkdir -p docs
report=$tmp/report.md
{
    echo "# Launch latency: moat run against crun, runc and bubblewrap"
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
