# shellcheck shell=bash
# Lets crun run on a hybrid cgroup host, and puts the host back afterwards.
#
# crun 1.8 refuses a hybrid host (cgroup v1 hierarchies plus a cgroup v2
# mount) while cgroup v2 has any controller. On the development machine v2
# holds only hugetlb; mounting hugetlb on cgroup v1 takes it away from v2,
# and crun then runs. This file does that mount and undoes it.
#
# Source it (it only defines functions and variables; it runs nothing and
# sets no traps or shell options of its own):
#
#   source scripts/lib/crun-hybrid.sh
#   trap crun_hybrid_restore EXIT     # or call it from your own cleanup
#   crun_hybrid_enable                # mounts hugetlb on v1 if needed
#   ... run crun ...
#   crun_hybrid_restore               # undoes exactly what enable did
#
# Functions (all return 0, so they are safe under `set -euo pipefail`;
# messages go to stderr prefixed with $CRUN_HYBRID_SAY, default
# `crun-hybrid`):
#
#   crun_hybrid_enable   On a hybrid host whose cgroup v2 has exactly the
#                        controller hugetlb, mounts hugetlb on cgroup v1 at
#                        /sys/fs/cgroup/hugetlb (making the directory if
#                        missing) and records that it did. Does nothing on a
#                        v2-only or v1-only host, when hugetlb is already
#                        mounted there (by us or by someone else), or when v2
#                        has other controllers (then it warns: crun will
#                        refuse). Idempotent.
#   crun_hybrid_restore  Only if enable mounted hugetlb: removes the cgroups
#                        made under that hierarchy during the run (children
#                        first), unmounts it, waits until hugetlb is back on
#                        cgroup v2 (retrying while dying cgroups linger) and
#                        removes the directory if enable made it. Idempotent;
#                        a no-op when enable did nothing.
#
# A hugetlb hierarchy someone else mounted is left alone by both.

CRUN_HYBRID_V2=/sys/fs/cgroup/unified
CRUN_HYBRID_HUGETLB=/sys/fs/cgroup/hugetlb
CRUN_HYBRID_SAY=${CRUN_HYBRID_SAY:-crun-hybrid}
# What crun_hybrid_enable did, for crun_hybrid_restore: 1 when it mounted
# hugetlb / made the mount point.
CRUN_HYBRID_MOUNTED=0
CRUN_HYBRID_MADE_DIR=0

_crun_hybrid_say() { echo "$CRUN_HYBRID_SAY: $*" >&2; }

# How many cgroups the hugetlb controller's hierarchy has (1 = only its
# root; 0 hierarchy id in /proc/cgroups means it is on v2 or unused).
_crun_hybrid_hugetlb_cgroups() { awk '$1 == "hugetlb" { print $3 }' /proc/cgroups; }
_crun_hybrid_on_v2() { grep -qw hugetlb "$CRUN_HYBRID_V2/cgroup.controllers" 2>/dev/null; }
_crun_hybrid_idle() { [[ $(_crun_hybrid_hugetlb_cgroups) == 1 ]]; }

# _crun_hybrid_wait_for SECONDS COMMAND...: polls COMMAND every 0.1 s;
# status 1 if it never succeeded.
_crun_hybrid_wait_for() {
    local tries=$(($1 * 10))
    shift
    until "$@"; do
        ((--tries > 0)) || return 1
        sleep 0.1
    done
}

crun_hybrid_enable() {
    local controllers
    ((CRUN_HYBRID_MOUNTED)) && return 0
    # Not hybrid: no v2 mount beside v1 hierarchies, or v2 at the root.
    [[ -e $CRUN_HYBRID_V2/cgroup.controllers ]] || return 0
    if mountpoint -q "$CRUN_HYBRID_HUGETLB" 2>/dev/null; then
        return 0
    fi
    controllers=$(cat "$CRUN_HYBRID_V2/cgroup.controllers")
    if [[ -z $controllers ]]; then
        return 0
    fi
    if [[ $controllers != hugetlb ]]; then
        _crun_hybrid_say "warning: cgroup v2 has controllers ($controllers): crun will refuse this hybrid host"
        return 0
    fi
    _crun_hybrid_say "mounting hugetlb on cgroup v1 at $CRUN_HYBRID_HUGETLB for crun (undone on exit)"
    if [[ ! -d $CRUN_HYBRID_HUGETLB ]]; then
        mkdir "$CRUN_HYBRID_HUGETLB" || {
            _crun_hybrid_say "warning: cannot make $CRUN_HYBRID_HUGETLB: crun will refuse this hybrid host"
            return 0
        }
        CRUN_HYBRID_MADE_DIR=1
    fi
    if mount -t cgroup -o hugetlb none "$CRUN_HYBRID_HUGETLB"; then
        CRUN_HYBRID_MOUNTED=1
    else
        _crun_hybrid_say "warning: cannot mount hugetlb on cgroup v1: crun will refuse this hybrid host"
        if ((CRUN_HYBRID_MADE_DIR)); then
            rmdir "$CRUN_HYBRID_HUGETLB" || true
            CRUN_HYBRID_MADE_DIR=0
        fi
    fi
    return 0
}

# A v1 hierarchy unmounted while it still has child cgroups (dying ones
# too: removed cgroups can linger for a while) is not destroyed: it stays,
# unmounted, and keeps its controller from cgroup v2. So after unmounting,
# wait for hugetlb to be back on v2; if it is not, wait until the hierarchy
# is down to its root cgroup, then mount and unmount it again.
crun_hybrid_restore() {
    local leftover attempt
    ((CRUN_HYBRID_MOUNTED)) || return 0
    # CRUN_HYBRID_MOUNTED stays set until hugetlb is back on v2: a restore
    # interrupted by a signal after the unmount (while dying cgroups hold the
    # hierarchy) is resumed by the EXIT trap's call instead of being skipped.
    if mountpoint -q "$CRUN_HYBRID_HUGETLB"; then
        # Every cgroup in this hierarchy was made during the run (it was
        # mounted fresh), so all of them go, deepest first; a busy one stays
        # and warns.
        find "$CRUN_HYBRID_HUGETLB" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null || true
        leftover=$(find "$CRUN_HYBRID_HUGETLB" -mindepth 1 -type d 2>/dev/null || true)
        [[ -z $leftover ]] || _crun_hybrid_say "warning: cgroups still in use in $CRUN_HYBRID_HUGETLB: $leftover"
        if ! umount "$CRUN_HYBRID_HUGETLB"; then
            _crun_hybrid_say "warning: could not unmount $CRUN_HYBRID_HUGETLB; hugetlb stays on cgroup v1"
            CRUN_HYBRID_MOUNTED=0
            return 0
        fi
    fi
    # Dying cgroups usually go within a second or two; a short first wait
    # keeps the common case quick.
    for attempt in 1 2 3 4 5 6 7 8; do
        if _crun_hybrid_wait_for 2 _crun_hybrid_on_v2; then
            _crun_hybrid_say "hugetlb is back on cgroup v2"
            break
        fi
        # Usual once: crun's removed cgroups were still dying at umount.
        _crun_hybrid_say "hugetlb is still held by its detached v1 hierarchy ($(_crun_hybrid_hugetlb_cgroups) cgroups); mounting and unmounting it again (attempt $attempt)"
        _crun_hybrid_wait_for 60 _crun_hybrid_idle || true
        if mount -t cgroup -o hugetlb none "$CRUN_HYBRID_HUGETLB"; then
            umount "$CRUN_HYBRID_HUGETLB" || true
        fi
    done
    _crun_hybrid_on_v2 ||
        _crun_hybrid_say "warning: hugetlb did not return to cgroup v2 (see /proc/cgroups; once its v1 hierarchy has no child cgroups, mount and unmount it again)"
    CRUN_HYBRID_MOUNTED=0
    if ((CRUN_HYBRID_MADE_DIR)); then
        rmdir "$CRUN_HYBRID_HUGETLB" || true
        CRUN_HYBRID_MADE_DIR=0
    fi
    return 0
}
