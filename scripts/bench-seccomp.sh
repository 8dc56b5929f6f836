#!/usr/bin/env bash
# Measures the seccomp engine: compile time of the built-in default profile
# (and of the largest fixture profile) and the per-syscall cost of the
# installed filter, binary tree against linear dispatch against no filter.
# Builds the bench in release mode, runs it (a couple of minutes; progress
# on stderr), writes the report to docs/benchmarks-seccomp.md and prints it.
#
# Usage: scripts/bench-seccomp.sh [seccomp_bench options, e.g. --rounds 9]
# Run as root for figures comparable with the committed ones (any user can
# run it: the bench sets no_new_privs in its children when not root).
set -euo pipefail
cd "$(dirname "$0")/.."

out=docs/benchmarks-seccomp.md
cmd="scripts/bench-seccomp.sh${*:+ $*}"

echo "==> cargo build --release -p moat-tests --bin seccomp_bench" >&2
cargo build --release -p moat-tests --bin seccomp_bench

echo "==> target/release/seccomp_bench $*" >&2
mkdir -p docs
tmp=$(mktemp "$out.XXXXXX")
trap 'rm -f "$tmp"' EXIT
{
    echo "# seccomp engine benchmarks"
    echo
    echo "Generated on $(date -u '+%Y-%m-%d %H:%M:%S UTC') by \`$cmd\`;"
    echo "run that command from the repository root to reproduce (it rewrites this file)."
    echo "Method: see the doc comment of \`tests/src/bin/seccomp_bench.rs\`."
    echo
    target/release/seccomp_bench "$@"
} >"$tmp"
chmod 644 "$tmp"
mv "$tmp" "$out"
trap - EXIT

echo >&2
echo "==> wrote $out" >&2
cat "$out"
