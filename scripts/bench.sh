#!/usr/bin/env bash
# The one benchmark command: moat against its peers, side by side, in one
# run on this machine, with a report and plots.
#
#   1. installs what is missing (scripts/setup.sh: crun, runc, bubblewrap,
#      bpftrace, gnuplot, busybox, the BPF toolchain);
#   2. builds moat, moatd and the harnesses in release mode;
#   3. runs seccomp_bench (filter cost against no filter and against crun
#      running the same loop in a container; profile compile time), then
#      launch_bench (moat run against crun run, runc run, bwrap and plain
#      /bin/true), with hugetlb moved to cgroup v1 so that crun runs on this
#      hybrid host, then agent_bench (tracing overhead against no agent and
#      bpftrace; the denial storm; /metrics at 10, 100, 1000 workloads),
#      then authz_bench (the Docker authorization plugin's decision latency
#      at 1000 requests/s, and `docker run` with and without the plugin);
#   4. writes BENCHMARKS.md, its plots docs/bench/*.png (and the raw
#      results docs/bench/*.json), and each harness's detailed report
#      docs/benchmarks-{seccomp,launch,agent,authz}.md;
#   5. restores the machine (hugetlb back on cgroup v2, no bench cgroups,
#      no bench processes) and checks that it did.
#
# Usage (as root, from anywhere):
#   scripts/bench.sh                 the full run, about 6 minutes
#   scripts/bench.sh --quick         a smoke run of about 25 s (tiny
#                                    counts; the figures mean little)
#   scripts/bench.sh --only launch -- --rounds 50
#                                    one harness alone, with its own options
#                                    (see target/release/launch_bench --help);
#                                    writes only its docs/benchmarks-launch.md
#                                    and docs/bench/launch.json
# Options:
#   --only NAME     run only the harness NAME: seccomp, launch, agent or authz
#   -- ARGS...      with --only: options passed on to that harness
#   --out DIR       write the report under DIR instead of the repository
#                   root (DIR/BENCHMARKS.md, DIR/docs/...)
#   --bin-dir DIR   use the binaries already built in DIR (moat, moatd,
#                   seccomp_bench, launch_bench, agent_bench, authz_bench,
#                   bench_report)
#                   instead of building release ones; for the test suite
#   --no-setup      do not run scripts/setup.sh (everything is installed)
#   -h, --help      this text
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
say() { echo "bench: $*" >&2; }
die() {
    say "error: $*"
    exit 1
}

quick=()
out=$root
bin_dir=""
setup=1
only=""
harness_args=()
while (($#)); do
    case $1 in
    --quick) quick=(--quick) ;;
    --only)
        (($# > 1)) || die "--only needs a harness name: seccomp, launch, agent or authz"
        only=$2
        [[ $only =~ ^(seccomp|launch|agent|authz)$ ]] || die "--only $only: not a harness (seccomp, launch, agent or authz)"
        shift
        ;;
    --)
        shift
        harness_args=("$@")
        break
        ;;
    --out)
        (($# > 1)) || die "--out needs a directory"
        out=$2
        shift
        ;;
    --bin-dir)
        (($# > 1)) || die "--bin-dir needs a directory"
        bin_dir=$2
        shift
        ;;
    --no-setup) setup=0 ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) die "unknown argument '$1' (see scripts/bench.sh --help)" ;;
    esac
    shift
done

[[ -n $only || ${#harness_args[@]} -eq 0 ]] || die "options after -- go to one harness: add --only NAME"
[[ $(id -u) -eq 0 ]] || die "run as root: the harnesses load eBPF programs, make cgroups and user namespaces, and run crun, runc and dockerd rootful (try: sudo scripts/bench.sh)"
mkdir -p "$out"
out=$(cd "$out" && pwd)
command="scripts/bench.sh${quick:+ --quick}${only:+ --only $only}${harness_args[*]:+ -- ${harness_args[*]}}"
started=$(date +%s)
step=0
steps=$([[ -n $only ]] && echo 4 || echo 6)
progress() {
    step=$((step + 1))
    say "[$step/$steps, $(($(date +%s) - started)) s] $*"
}

progress "installing what is missing"
if ((setup)); then
    scripts/setup.sh >&2
fi
for tool in crun runc bwrap bpftrace gnuplot busybox dockerd; do
    command -v "$tool" >/dev/null || die "$tool is missing: run scripts/setup.sh (or drop --no-setup)"
done

progress "building"
if [[ -z $bin_dir ]]; then
    cargo build --release --locked --bin moat --bin moatd \
        --bin seccomp_bench --bin launch_bench --bin agent_bench --bin authz_bench \
        --bin bench_report >&2
    bin_dir=$root/target/release
fi
bin_dir=$(cd "$bin_dir" && pwd)
for b in moat moatd seccomp_bench launch_bench agent_bench authz_bench bench_report; do
    [[ -x $bin_dir/$b ]] || die "$bin_dir/$b is missing: build it (cargo build --release --bin $b) or drop --bin-dir"
done

# Everything a run may leave behind, checked before and after.
bench_cgroups() {
    find /sys/fs/cgroup -mindepth 1 -maxdepth 3 -type d \
        \( -name 'moat-bench*' -o -name 'bench-*' \) 2>/dev/null | sort || true
}
bench_processes() {
    pgrep -a -f "$bin_dir/(seccomp|launch|agent|authz)_bench|agent-bench-[0-9]+/moatd.toml|/tmp/moat-ab-(plain|authz)-[0-9]+/" || true
}
cgroups_before=$(bench_cgroups)
# The harnesses remove the moat-bench parents they make; these are the ones
# to remove should a harness be killed first.
new_parents=()
for h in /sys/fs/cgroup/*/; do
    [[ -e $h/cgroup.procs && ! -e $h/moat-bench ]] && new_parents+=("${h}moat-bench")
done
v2_controllers_before=$(cat /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null || true)

work=$(mktemp -d /tmp/moat-bench.XXXXXX)
# shellcheck source=scripts/lib/crun-hybrid.sh
source scripts/lib/crun-hybrid.sh
CRUN_HYBRID_SAY=bench
cleanup() {
    local p
    for p in "${new_parents[@]}"; do
        [[ -d $p ]] || continue
        find "$p" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null || true
        rmdir "$p" 2>/dev/null || say "warning: could not remove cgroup $p"
    done
    crun_hybrid_restore
    rm -rf "$work"
}
trap cleanup EXIT
# Leave through the EXIT trap on ^C or kill too, so the machine is restored.
trap 'exit 130' INT
trap 'exit 143' TERM

# run_harness NAME TITLE ARGS...: runs NAME_bench with --json, keeping its
# Markdown report for docs/benchmarks-NAME.md. A failed harness stops the
# run: a report with a hole would read as a complete one.
run_harness() {
    local name=$1 title=$2
    shift 2
    local t0=$SECONDS
    set -- "$@" "${harness_args[@]}"
    say "$name: $bin_dir/${name}_bench ${quick[*]} $*"
    {
        echo "# $title"
        echo
        echo "Generated on $(date -u '+%Y-%m-%d %H:%M:%S UTC') by \`$command\` (as root);"
        echo "run that command from the repository root to reproduce."
        echo "Method: see the doc comment of \`tests/src/bin/${name}_bench\`."
        echo
        "$bin_dir/${name}_bench" "${quick[@]}" --json "$work/$name.json" "$@"
    } >"$work/$name.md" || die "${name}_bench failed (its messages are above); nothing was written"
    say "$name: done in $((SECONDS - t0)) s"
}

# wanted NAME: whether harness NAME is part of this run.
wanted() { [[ -z $only || $only == "$1" ]]; }
if wanted seccomp || wanted launch; then
    progress "the harnesses with crun as a peer: $(wanted seccomp && echo "filter cost and compile time ")$(wanted launch && echo "launch latency ")(crun needs hugetlb on cgroup v1 here)"
    crun_hybrid_enable
    if wanted seccomp; then
        run_harness seccomp "seccomp engine benchmarks" --moat "$bin_dir/moat"
    fi
    if wanted launch; then
        run_harness launch "Launch latency: moat run against crun, runc and bwrap" --moat "$bin_dir/moat"
    fi
    crun_hybrid_restore
fi
if wanted agent; then
    progress "tracing overhead, denial storm and /metrics scale"
    run_harness agent "moatd benchmarks" --moatd "$bin_dir/moatd"
fi
if wanted authz; then
    progress "the Docker authorization plugin: decision latency and docker run"
    run_harness authz "Docker authorization plugin benchmarks" --moatd "$bin_dir/moatd"
fi

progress "writing the report$([[ -n $only ]] || echo " and plots")"
mkdir -p "$out/docs/bench"
for name in seccomp launch agent authz; do
    wanted "$name" || continue
    cp "$work/$name.json" "$out/docs/bench/$name.json"
    cp "$work/$name.md" "$out/docs/benchmarks-$name.md"
done
# BENCHMARKS.md is the whole picture: a single harness leaves it alone.
if [[ -z $only ]]; then
    commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    # The run's own outputs do not count as changes to what was measured.
    [[ -z $(git status --porcelain --untracked-files=no -- . ':!BENCHMARKS.md' ':!docs/bench' \
        ':!docs/benchmarks-*.md' 2>/dev/null) ]] || commit+=" (with uncommitted changes)"
    memory=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
    vulns=/sys/devices/system/cpu/vulnerabilities
    mitigations="spectre_v2: $(cat $vulns/spectre_v2 2>/dev/null || echo n/a); spec_rstack_overflow: $(cat $vulns/spec_rstack_overflow 2>/dev/null || echo n/a)"
    "$bin_dir/bench_report" --markdown "$out/BENCHMARKS.md" --plots "$out/docs/bench" \
        --command "$command" \
        --machine "Commit measured=$commit" \
        --machine "Memory=$memory" \
        --machine "CPU mitigations (sysfs)=$mitigations" \
        "$work"/{seccomp,launch,agent,authz}.json >/dev/null
fi
chmod -R a+rX "$out/docs"
[[ ! -e $out/BENCHMARKS.md ]] || chmod a+r "$out/BENCHMARKS.md"

# The machine as it was: same cgroup v2 controllers, no bench cgroups, no
# bench processes.
cleanup
trap - EXIT
restored=1
v2_controllers_after=$(cat /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null || true)
if [[ $v2_controllers_after != "$v2_controllers_before" ]]; then
    say "warning: cgroup v2 controllers were '$v2_controllers_before', now '$v2_controllers_after'"
    restored=0
fi
if [[ $(bench_cgroups) != "$cgroups_before" ]]; then
    say "warning: bench cgroups left behind: $(bench_cgroups)"
    restored=0
fi
if [[ -n $(bench_processes) ]]; then
    say "warning: bench processes still running: $(bench_processes)"
    restored=0
fi
((restored)) || die "the machine was not fully restored (see the warnings above)"

if [[ -n $only ]]; then
    say "done in $(($(date +%s) - started)) s: $out/docs/benchmarks-$only.md, $out/docs/bench/$only.json"
else
    say "done in $(($(date +%s) - started)) s: $out/BENCHMARKS.md, $out/docs/bench/*.png"
fi
