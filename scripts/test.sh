#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: formatting, lints,
# unit tests and the privileged end-to-end tests (run as root for those;
# they print SKIP with the reason when a prerequisite is truly absent).
# This is exactly what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo; echo "==> $*"; }

step "setup"
scripts/setup.sh

step "cargo fmt --check"
cargo fmt --all --check
(cd ebpf/moat-ebpf && cargo +moat-nightly fmt --check)

step "module layout"
# The agent's modules import each other one way (kernel -> collect -> export).
scripts/check-module-cycles.py

step "file sizes"
# One concept per module: a source file over 600 lines is split (test files,
# named tests.rs or in a crate's tests/ folder, are exempt; the tests crate's
# own src/, its harnesses and benchmarks, is not).
too_long=$(git ls-files '*.rs' | grep -Ev '(^|/)tests\.rs$|^([^/]+/)*[^/]+/tests/' | xargs wc -l |
    awk '$2 != "total" && $1 > 600 { print "  " $2 ": " $1 " lines" }')
if [[ -n $too_long ]]; then
    echo "source files over 600 lines (split them by concept):"
    echo "$too_long"
    exit 1
fi
echo "every source file is under 600 lines"

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

# Every fuzz target for a bounded time (MOAT_FUZZ_SECONDS each, 20 by
# default; 0 skips), before the tests so that their summary ends the log;
# a crash fails the run and keeps its input as a regression, which the
# tests below replay (tests/fuzz/README.md).
fuzz_status=0
fuzz_seconds=${MOAT_FUZZ_SECONDS:-20}
if ((fuzz_seconds > 0)); then
    step "fuzz (${fuzz_seconds}s per target)"
    scripts/fuzz.sh --seconds "$fuzz_seconds" || fuzz_status=1
fi

step "cargo test"
# --show-output keeps what passing tests print, so that a privileged test
# that skipped says why in the CI log; the reasons are summed up at the end.
log=$(mktemp /tmp/moat-test-log.XXXXXX)
lab_log=$(mktemp /tmp/moat-lab-log.XXXXXX)
trap 'rm -f "$log" "$lab_log"' EXIT
status=0
cargo test --workspace --locked --no-fail-fast -- --show-output 2>&1 | tee "$log" || status=$?

# The kernel lab: the privileged suites again on another kernel, booted in
# QEMU as a pure cgroup v2 host, and the systemd node scenarios. CI runs one
# kernel (Debian 12's default, 6.1) to stay well under its time budget;
# `scripts/test-kernels.sh` alone runs every lab kernel (6.1 and 6.12).
# Both print `SKIP: <reason>` only when a prerequisite is truly absent (not
# root; no kernel package reachable and none cached; no Debian mirror for the
# node image and none cached).
step "kernel lab: scripts/test-kernels.sh --kernel 6.1"
if [[ $(id -u) -ne 0 ]]; then
    echo "SKIP: kernel lab: needs root" | tee -a "$lab_log"
else
    scripts/test-kernels.sh --kernel 6.1 --skip-if-unavailable 2>&1 | tee -a "$lab_log" ||
        status=1
    # The debug binaries cargo test built (a release build would double the
    # build time); the scenario checks behaviour, not speed.
    # systemd-moatd: moatd as a service, exact counts with each cgroup
    # manager; systemd-scope: moat run's systemd cgroup manager itself.
    for scenario in systemd-moatd systemd-scope; do
        step "kernel lab node image: scripts/lab-node.sh $scenario --kernel 6.12 --debug"
        node_status=0
        scripts/lab-node.sh "$scenario" --kernel 6.12 --debug 2>&1 | tee -a "$lab_log" ||
            node_status=${PIPESTATUS[0]}
        # 2: a prerequisite is missing, and the script said so with SKIP.
        ((node_status == 0 || node_status == 2)) || status=1
    done
    # The Debian package (of those debug binaries) installed on the node.
    # package-systemd: postinst starts moatd, Type=notify and the watchdog
    # under the real systemd, stop/start/restart without losing counts,
    # remove (the prerm unloads the pinned programs) and purge.
    # docker-authz-reboot: dockerd with moat's authorization plugin, enabled
    # and then rebooted into (99-115 s here with its docker.io layer cached).
    for scenario in package-systemd docker-authz-reboot; do
        step "kernel lab node image: scripts/lab-node.sh $scenario --kernel 6.12 --debug"
        node_status=0
        deb=$(scripts/package-deb.sh --bin-dir "${CARGO_TARGET_DIR:-target}/debug" --out "${CARGO_TARGET_DIR:-target}/deb" | tail -n 1) &&
            scripts/lab-node.sh "$scenario" --kernel 6.12 --debug \
                --install scripts/lab/install/deb.sh --file "$deb" 2>&1 | tee -a "$lab_log" ||
            node_status=${PIPESTATUS[0]}
        ((node_status == 0 || node_status == 2)) || status=1
    done
fi

step "skipped tests"
if grep -qh "SKIP" "$log" "$lab_log"; then
    grep -h "SKIP" "$log" "$lab_log" | grep -v '^\[' | sed 's/^[[:space:]]*//' | sort | uniq -c
else
    echo "none: every privileged test ran"
fi

if ((fuzz_status != 0)); then
    echo "fuzzing found a crash: see the fuzz step above"
    status=1
fi
exit "$status"
