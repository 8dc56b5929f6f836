#!/usr/bin/env bash
# Installs what is missing, builds moat in release mode and runs its main
# job with built-in defaults: for now, `moat profile check` on the built-in
# default seccomp profile.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
echo "==> cargo build --release"
cargo build --release --locked
echo "==> moat profile check default"
exec target/release/moat profile check default "$@"
