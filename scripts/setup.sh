#!/usr/bin/env bash
# Installs whatever moat's build and tests need that this machine lacks:
# Debian packages, the pinned nightly with rust-src, and bpf-linker.
# Idempotent; takes well under 5 seconds when everything is present.
#
# Usage: scripts/setup.sh            (as root on a fresh Debian 12 machine)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "setup: $*"; }

# Debian packages, by what needs them:
#   libseccomp-dev pkg-config  the libseccomp crate links to the system library
#   bubblewrap                 a peer that loads `moat profile compile` output (tests)
#   prometheus                 prometheus + promtool: dashboards and alert rules are
#                              checked against a real server (tests)
#   systemd                    systemd-analyze checks the moatd unit file (tests)
#   docker.io                  a real dockerd for the authorization-plugin and
#                              attribution tests
#   busybox-static             the rootfs of the OCI bundles (tests, benchmarks)
#   crun runc bpftrace         the peers moat is measured against (scripts/bench.sh
#                              and its quick mode in the tests)
#   gnuplot-nox                draws the benchmark plots
#   python3                    scripts/check-module-cycles.py (scripts/test.sh)
#   python3-venv               the virtualenv for kubernetes-validate (below)
#   dbus-daemon                a real bus daemon for moat's D-Bus client (tests)
#   strace gcc libc6-dev       the reference syscall list and the compiled workloads
#                              of the profile-recording tests (record_profile.rs)
#   dpkg-dev help2man lintian  scripts/package-deb.sh: dpkg-shlibdeps, man pages from
#                              --help, and the package check (tests)
#   logrotate                  the packaged logrotate rule run against moatd (tests)
PACKAGES=(libseccomp-dev pkg-config bubblewrap prometheus systemd docker.io busybox-static
    crun runc bpftrace gnuplot-nox python3 dbus-daemon strace gcc libc6-dev dpkg-dev help2man
    lintian logrotate python3-venv)

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup: error: missing Debian packages: ${missing[*]}; run this script as root (or: sudo apt-get install ${missing[*]})" >&2
        exit 1
    fi
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# kubernetes-validate (PyPI) checks deploy/kubernetes/ against the Kubernetes
# API schemas (tests/tests/kubernetes_manifests.rs), in a virtualenv of its own
# since Debian's Python is externally managed.
TOOLS_VENV=${MOAT_TOOLS_VENV:-/opt/moat-tools}
if [[ ! -x $TOOLS_VENV/bin/kubernetes-validate ]]; then
    if [[ $(id -u) -ne 0 && ! -w $(dirname "$TOOLS_VENV") ]]; then
        echo "setup: error: kubernetes-validate missing in $TOOLS_VENV; run this script as root" >&2
        exit 1
    fi
    say "installing kubernetes-validate in $TOOLS_VENV"
    python3 -m venv "$TOOLS_VENV"
    "$TOOLS_VENV/bin/pip" install --quiet 'kubernetes-validate==1.37.0'
fi

scripts/install-bpf-toolchain.sh
say "ready"
