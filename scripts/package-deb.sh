#!/usr/bin/env bash
# Builds the Debian package moat_<version>_<arch>.deb from the workspace:
# `moat` and `moatd` (release, stripped), every systemd unit and drop-in of
# agent/systemd/, /etc/moat/moatd.toml (a conffile, from
# agent/moatd.example.toml), the dashboards and Prometheus rules under
# /usr/share/moat/, a logrotate file for the audit log, man pages generated
# from --help (help2man), and the maintainer scripts of packaging/deb/.
#
# Usage: scripts/package-deb.sh [--out DIR] [--no-build] [--bin-dir DIR] [--lintian]
#   --out DIR      where the .deb goes [default: target/deb]
#   --no-build     package the release binaries already built
#   --bin-dir DIR  package moat and moatd from DIR instead, without building
#                  (the tests package their debug build)
#   --lintian      run lintian on the package (profile debian) and fail on an
#                  error or a warning
# Prints the path of the package on its last line. Needs dpkg-deb, help2man
# and dpkg-shlibdeps (dpkg-dev); scripts/setup.sh installs them.
set -euo pipefail
cd "$(dirname "$0")/.."

out=target/deb
build=1
lintian=0
bin_dir=
while (($#)); do
    case $1 in
    --out) out=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --bin-dir) bin_dir=$2; build=0; shift 2 ;;
    --lintian) lintian=1; shift ;;
    -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "package-deb: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

say() { echo "package-deb: $*" >&2; }

target_dir=${CARGO_TARGET_DIR:-target}
if ((build)); then
    cargo build --release --locked --bin moat --bin moatd >&2
fi
bins=${bin_dir:-$target_dir/release}
for bin in moat moatd; do
    [[ -x $bins/$bin ]] || { say "error: $bins/$bin is missing (build it, or drop --no-build)"; exit 1; }
done

version=$("$bins/moatd" --version | awk '{print $2}')
arch=$(dpkg --print-architecture)
work=$(mktemp -d "${TMPDIR:-/tmp}/moat-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
umask 022

# Binaries, stripped as dh_strip does.
install -d "$root/usr/bin"
for bin in moat moatd; do
    install -m 0755 "$bins/$bin" "$root/usr/bin/$bin"
    strip --remove-section=.comment --remove-section=.note --strip-unneeded "$root/usr/bin/$bin"
done

# systemd units: every unit file of agent/systemd/ and every drop-in folder
# (NAME.d/*.conf), so a unit added there is packaged without editing this
# script:
# - services with an [Install] section are enabled, and started where systemd
#   runs; other units (moatd-authz.socket, which needs `[authz] enabled` in
#   moatd.toml, else moatd refuses the socket it is passed) are installed for
#   the administrator to enable;
# - a drop-in for one of these units is installed with it; a drop-in for
#   another package's unit (docker.service.d) would change that unit at once,
#   so it goes to /usr/share/doc/moat/examples/systemd/ to be copied to
#   /etc/systemd/system/ by whoever turns the feature on.
# The units name /usr/local/bin (for a manual install); the package's binaries
# are in /usr/bin.
unit_dir=$root/lib/systemd/system
install -d "$unit_dir"
units=()        # units with an [Install] section: unmasked, masked on removal, purged
enable_units=() # of those, enabled at install and started where systemd runs
stop_units=()   # stopped on removal
for f in agent/systemd/*; do
    name=$(basename "$f")
    [[ -f $f && $name =~ \.(service|socket|timer|path|target|slice)$ ]] || continue
    install -m 0644 "$f" "$unit_dir/$name"
    [[ $name =~ \.(service|socket|timer|path)$ ]] && stop_units+=("$name")
    if grep -q '^\[Install\]' "$f"; then
        units+=("$name")
        [[ $name == *.service ]] && enable_units+=("$name")
    fi
done
for f in agent/systemd/*; do
    name=$(basename "$f")
    [[ -f $f && $name =~ \.(service|socket|timer|path|target|slice)$ ]] && continue
    if [[ -d $f && $name == *.d ]]; then
        if [[ -e $unit_dir/${name%.d} ]]; then
            dest=$unit_dir/$name
        else
            dest=$root/usr/share/doc/moat/examples/systemd/$name
        fi
        for conf in "$f"/*.conf; do
            [[ -e $conf ]] && install -D -m 0644 "$conf" "$dest/$(basename "$conf")"
        done
    else
        say "error: agent/systemd/$name is neither a unit nor a NAME.d drop-in folder: say in $0 where it goes"
        exit 1
    fi
done
find "$unit_dir" "$root/usr/share/doc/moat/examples" -type f -exec sed -i 's#/usr/local/bin/#/usr/bin/#g' {} + 2>/dev/null || true

# Configuration and logrotate (conffiles).
install -D -m 0644 agent/moatd.example.toml "$root/etc/moat/moatd.toml"
install -D -m 0644 packaging/deb/logrotate "$root/etc/logrotate.d/moat"

# Dashboards, rules, runbooks.
share=$root/usr/share/moat
install -D -m 0644 -t "$share/dashboards" dashboards/*.json
install -D -m 0644 -t "$share/prometheus" dashboards/*.yml
install -D -m 0644 -t "$share/kubernetes" deploy/kubernetes/*.yaml

# Documentation.
doc=$root/usr/share/doc/moat
install -D -m 0644 README.md "$doc/README.md"
install -D -m 0644 docs/ARCHITECTURE.md "$doc/ARCHITECTURE.md"
install -D -m 0644 dashboards/README.md "$doc/dashboards.md"
install -D -m 0644 -t "$doc/examples" agent/moatd.example.toml agent/policy.example.toml
install -m 0644 packaging/deb/copyright "$doc/copyright"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
date=$(git log -1 --format=%aD 2>/dev/null || date -R)
printf 'moat (%s) unstable; urgency=medium\n\n  * Built from commit %s.\n\n -- moat developers <dev@moat.invalid>  %s\n' \
    "$version" "$commit" "$date" | gzip -9n >"$doc/changelog.gz"

# Man pages from --help: moat(1), one per moat subcommand, moatd(8).
man1=$root/usr/share/man/man1
man8=$root/usr/share/man/man8
install -d "$man1" "$man8"
help2man --no-info --no-discard-stderr --section 8 --version-string "$version" \
    --name "moat's node agent: seccomp denials and process events as metrics and audit events" \
    "$bins/moatd" | gzip -9n >"$man8/moatd.8.gz"
help2man --no-info --no-discard-stderr --section 1 --version-string "$version" \
    --name "seccomp profiles, user namespaces, pids limits and workloads" \
    "$bins/moat" | gzip -9n >"$man1/moat.1.gz"
subcommands=$("$bins/moat" --help | awk '/^Commands:/{on=1; next} on && /^  [a-z]/{print $1} on && /^$/{exit}' | grep -vx help)
for sub in $subcommands; do
    wrapper=$work/moat-$sub
    printf '#!/bin/sh\nexec %q %s "$@"\n' "$(realpath "$bins/moat")" "$sub" >"$wrapper"
    chmod +x "$wrapper"
    summary=$("$bins/moat" --help | awk -v s="$sub" '$1 == s { $1 = ""; sub(/^ +/, ""); print; exit }')
    help2man --no-info --no-discard-stderr --section 1 --version-string "$version" \
        --name "$summary" "$wrapper" | gzip -9n >"$man1/moat-$sub.1.gz"
done

# Control files.
install -d "$root/DEBIAN"
for script in postinst prerm postrm; do
    sed -e "s/@UNITS@/${units[*]}/" -e "s/@ENABLE_UNITS@/${enable_units[*]}/" \
        -e "s/@STOP_UNITS@/${stop_units[*]}/" \
        "packaging/deb/$script" >"$root/DEBIAN/$script"
    chmod 0755 "$root/DEBIAN/$script"
done
(cd "$root" && find etc -type f | sed 's#^#/#' | sort) >"$root/DEBIAN/conffiles"
(cd "$root" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' |
    sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
# Shared-library dependencies as dpkg-shlibdeps finds them.
mkdir -p "$work/shlibs/debian"
printf 'Source: moat\n\nPackage: moat\nArchitecture: any\n' >"$work/shlibs/debian/control"
shlibs=$(cd "$work/shlibs" && dpkg-shlibdeps -O "$root/usr/bin/moat" "$root/usr/bin/moatd" |
    sed -n 's/^shlibs:Depends=//p')
installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<EOF
Package: moat
Version: $version
Architecture: $arch
Maintainer: moat developers <dev@moat.invalid>
Installed-Size: $installed_size
Depends: $shlibs, passwd
Recommends: logrotate
Suggests: prometheus
Section: admin
Priority: optional
Description: seccomp profiles, user namespaces and pids limits, observed
 moat takes the node-level protections of containers (seccomp profiles,
 user namespaces, a pids cgroup limit against fork bombs, a Docker
 authorization plugin) and makes them a product of their own: "moat run"
 launches a command under them, and the node agent moatd counts every
 seccomp denial and process event on the node with eBPF, serving them as
 Prometheus metrics and writing audit events.
 .
 This package installs moat, moatd and its systemd unit (enabled and
 started), the configuration in /etc/moat, and Grafana dashboards and
 Prometheus rules in /usr/share/moat.
EOF

mkdir -p "$out"
deb=$out/moat_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
say "built $deb"
if ((lintian)); then
    lintian --profile debian --info --display-info --fail-on error,warning "$deb" >&2
fi
echo "$deb"
