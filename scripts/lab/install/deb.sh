# shellcheck shell=bash
# moat from its Debian package: `dpkg -i` of the moat_*.deb given with
# `scripts/lab-node.sh --install scripts/lab/install/deb.sh --file DEB`
# (scripts/package-deb.sh builds it). The postinst creates user moat and its
# subordinate ids, enables moatd and, systemd running, starts it.
# Runs in the node as root with LAB_FILES set to the lab disk's files/.
set -eu
debs=("$LAB_FILES"/moat_*.deb)
[ -e "${debs[0]}" ] || { echo "no moat_*.deb in $LAB_FILES (--file)" >&2; exit 1; }
dpkg -i "${debs[0]}"
moat --version
moatd --version
