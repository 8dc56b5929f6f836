#!/usr/bin/env bash
# Installs what is missing, builds moat in release mode and runs its main
# job with built-in defaults: the node agent `moatd` in the foreground
# (metrics on http://127.0.0.1:9740/metrics, audit events in
# /var/log/moat/audit.jsonl; stop it with Ctrl-C). Extra arguments go to
# moatd, e.g. `scripts/run.sh --audit-log -`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
echo "==> cargo build --release"
cargo build --release --locked
echo "==> moatd (Ctrl-C to stop)"
exec target/release/moatd "$@"
