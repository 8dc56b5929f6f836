# shellcheck shell=bash
# moat from the lab disk's release binaries, installed as a package would.
# The install step of scripts/lab-node.sh (the default; --install picks
# another, e.g. one that runs `dpkg -i` on a .deb given with --file).
# Runs in the node as root with LAB_FILES set to the lab disk's files/.
set -eu
install -m 755 "$LAB_FILES/moat" "$LAB_FILES/moatd" /usr/local/bin/
install -D -m 644 "$LAB_FILES/moatd.service" /etc/systemd/system/moatd.service
install -D -m 644 "$LAB_FILES/moatd.example.toml" /usr/share/doc/moat/moatd.example.toml
# `moat run --userns auto` takes its ranges from user moat's subordinate ids.
getent group moat >/dev/null || groupadd --system moat
getent passwd moat >/dev/null ||
    useradd --system --gid moat --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin moat
grep -q '^moat:' /etc/subuid || echo 'moat:1000000:6553600' >>/etc/subuid
grep -q '^moat:' /etc/subgid || echo 'moat:1000000:6553600' >>/etc/subgid
systemctl daemon-reload
moat --version
moatd --version
