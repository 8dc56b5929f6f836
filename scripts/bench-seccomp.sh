#!/usr/bin/env bash
# Measures the seccomp engine: compile time of the built-in default profile
# (and of the largest fixture profile), beside libseccomp's own
# single-filter layout, and the per-syscall cost of the installed filter:
# no filter, moat's filter in-process (binary tree and linear dispatch), the
# same loops as a `moat run` workload, and under crun with the same profile
# in OCI form.
#
# Installs crun if missing, builds moat and the bench in release mode, on a
# hybrid cgroup host mounts hugetlb on cgroup v1 for the run (crun refuses
# hybrid mode while cgroup v2 has a controller; scripts/lib/crun-hybrid.sh),
# runs the bench (a couple of minutes; progress on stderr), writes the
# report to docs/benchmarks-seccomp.md and prints it. On exit it leaves the
# machine as it found it: hugetlb back on cgroup v2, no moat-bench cgroups,
# no temporary files (the installed package stays).
#
# Usage: scripts/bench-seccomp.sh [seccomp_bench options, e.g. --rounds 9 or
#        --quick --json /tmp/seccomp.json]
# As root (the `moat run` and crun variants need it; as another user they
# are skipped and the rest runs). Method: see the doc comment of
# tests/src/bin/seccomp_bench.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "bench-seccomp: $*" >&2; }

out=docs/benchmarks-seccomp.md
cmd="scripts/bench-seccomp.sh${*:+ $*}"
cg=/sys/fs/cgroup
parent=moat-bench

if [[ $(id -u) -eq 0 ]] && ! dpkg-query -W -f='${Status}' crun 2>/dev/null | grep -q "install ok installed"; then
    say "installing crun"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends crun >/dev/null
fi

say "cargo build --release --bin moat --bin seccomp_bench"
cargo build --release --bin moat --bin seccomp_bench

# shellcheck source=scripts/lib/crun-hybrid.sh
source scripts/lib/crun-hybrid.sh
CRUN_HYBRID_SAY=bench-seccomp

# Cleanup state, filled in as things are made. The bench removes the
# moat-bench cgroups it makes; this covers a bench that was killed.
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
    [[ -n $tmp ]] && rm -f "$tmp"
    return 0
}
trap cleanup EXIT
# Leave through the EXIT trap on ^C or kill too.
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ $(id -u) -eq 0 ]]; then
    crun_hybrid_enable
fi

say "target/release/seccomp_bench --moat target/release/moat $*"
mkdir -p docs
tmp=$(mktemp "$out.XXXXXX")
{
    echo "# seccomp engine benchmarks"
    echo
    echo "Generated on $(date -u '+%Y-%m-%d %H:%M:%S UTC') by \`$cmd\`;"
    echo "run that command from the repository root to reproduce (it rewrites this file)."
    echo "Method: see the doc comment of \`tests/src/bin/seccomp_bench.rs\`."
    echo
    target/release/seccomp_bench --moat target/release/moat "$@"
} >"$tmp"
chmod 644 "$tmp"
mv "$tmp" "$out"
tmp=""

echo >&2
say "wrote $out"
cat "$out"
