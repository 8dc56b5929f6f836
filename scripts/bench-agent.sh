#!/usr/bin/env bash
# Measures the node agent moatd: the overhead of its eBPF programs on a
# getppid loop, a fork/exit/wait loop and hashing /usr/share/doc, side by
# side with no agent, with a bpftrace script counting the same events and
# with empty programs on sys_exit and on sys_enter+sys_exit (the machine's
# fixed cost of those tracepoints);
# a storm of 1,000,000 denied syscalls (exact count, audit delivery and
# drops, CPU, RSS, /metrics latency meanwhile); start-to-ready; and
# /metrics latency and size with 10, 100 and 1000 workloads.
# Installs bpftrace if it is missing, builds moatd and the bench in release
# mode, runs it (two or three minutes; progress on stderr), writes the
# report to docs/benchmarks-agent.md and prints it.
#
# Usage (as root): scripts/bench-agent.sh [agent_bench options, e.g. --rounds 7,
# or --json FILE to also write the results for bench_report]
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "bench-agent.sh: run as root (eBPF programs, cgroups)" >&2
    exit 1
fi

out=docs/benchmarks-agent.md
cmd="scripts/bench-agent.sh${*:+ $*}"

if ! command -v bpftrace >/dev/null 2>&1; then
    echo "==> apt-get install -y bpftrace" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y bpftrace >&2 ||
        { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y bpftrace >&2; }
fi

echo "==> cargo build --release --bin moatd --bin agent_bench" >&2
cargo build --release --bin moatd --bin agent_bench

echo "==> target/release/agent_bench $*" >&2
mkdir -p docs
tmp=$(mktemp "$out.XXXXXX")
trap 'rm -f "$tmp"' EXIT
{
    echo "# moatd benchmarks"
    echo
    echo "Generated on $(date -u '+%Y-%m-%d %H:%M:%S UTC') by \`$cmd\` (as root);"
    echo "run that command from the repository root to reproduce (it rewrites this file)."
    echo "Method: see the doc comment of \`tests/src/bin/agent_bench/main.rs\`."
    echo
    target/release/agent_bench "$@"
} >"$tmp"
chmod 644 "$tmp"
mv "$tmp" "$out"
trap - EXIT

# The bench removes what it creates, on failure too; say so if it did not.
left=$(find /sys/fs/cgroup/unified/moat /sys/fs/cgroup/moat -maxdepth 1 -name 'bench-*' 2>/dev/null || true)
if [[ -n $left ]]; then
    echo "bench-agent.sh: warning: cgroups left behind: $left" >&2
fi
if pgrep -x agent_bench >/dev/null || pgrep -f "agent-bench-[0-9]+/moatd.toml" >/dev/null; then
    echo "bench-agent.sh: warning: bench processes still running" >&2
fi

echo >&2
echo "==> wrote $out" >&2
cat "$out"
