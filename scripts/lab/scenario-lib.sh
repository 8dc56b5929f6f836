# Helpers for the kernel lab's node scenarios (tests/lab/scenarios/*.sh),
# sourced before the scenario by the node's runner (scripts/lab/node-run).
# Results are lines the host parses (scripts/lab-node.sh):
#   ok: WHAT            a check that held
#   FAIL: WHAT          a check that did not: the scenario fails
#   value: KEY=VALUE    a figure, also written to $LAB_RESULTS/values
# Everything else a scenario prints is kept in its output log.
# A scenario that calls lab_reboot is run again after the reboot, with
# LAB_PHASE one higher (1 at first), and branches on it.
# shellcheck shell=bash

LAB_PHASE=${LAB_PHASE:-1}
LAB_CHECKS=0
LAB_FAILED=0
# The checks of the phases before a lab_reboot count with this one's.
if [[ -f ${LAB_RESULTS:-}/counts ]]; then
    read -r LAB_CHECKS LAB_FAILED <"$LAB_RESULTS/counts"
fi

lab_ok() {
    LAB_CHECKS=$((LAB_CHECKS + 1))
    echo "ok: $*"
}

lab_fail() {
    LAB_CHECKS=$((LAB_CHECKS + 1))
    LAB_FAILED=$((LAB_FAILED + 1))
    echo "FAIL: $*"
}

# lab_check WHAT COMMAND...: ok when COMMAND succeeds.
lab_check() {
    local what=$1
    shift
    if "$@"; then lab_ok "$what"; else lab_fail "$what (failed: $*)"; fi
}

# lab_expect WHAT GOT WANT: ok when they are equal (as strings).
lab_expect() {
    if [[ $2 == "$3" ]]; then lab_ok "$1: $2"; else lab_fail "$1: got '$2', want '$3'"; fi
}

# lab_value KEY VALUE: a figure for the host's summary.
lab_value() {
    echo "value: $1=$2"
    echo "$1=$2" >>"$LAB_RESULTS/values"
}

# lab_wait WHAT SECONDS COMMAND...: waits until COMMAND succeeds; ok or FAIL.
lab_wait() {
    local what=$1 limit=$2 start=$SECONDS
    shift 2
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS - start >= limit)); then
            lab_fail "$what (not within $limit s)"
            return 1
        fi
        sleep 0.2
    done
    lab_ok "$what (after $((SECONDS - start)) s)"
}

# lab_http_get HOST PORT PATH: the body of an HTTP/1.0 GET, with bash's
# /dev/tcp (a minbase node has no curl or wget). Fails unless the status is 200.
lab_http_get() {
    local status
    exec 3<>"/dev/tcp/$1/$2" || return 1
    printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$3" "$1" >&3
    IFS=' ' read -r _ status _ <&3
    [[ $status == 200 ]] || {
        exec 3<&-
        return 1
    }
    # Headers end at the first empty line.
    while IFS= read -r line <&3 && [[ ${line%$'\r'} != "" ]]; do :; done
    cat <&3
    exec 3<&-
}

# lab_metric NAME [LABEL=VALUE...] < METRICS: the sum of the samples of NAME
# that carry every given label value (0 when there is none).
lab_metric() {
    local name=$1
    shift
    awk -v name="$name" -v want="$*" '
        BEGIN { n = split(want, w, " ") }
        /^#/ { next }
        {
            split($0, parts, /[{ ]/)
            if (parts[1] != name) next
            for (i = 1; i <= n; i++) {
                split(w[i], kv, "=")
                if (index($0, kv[1] "=\"" kv[2] "\"") == 0) next
            }
            sum += $NF
        }
        END { printf "%d\n", sum }'
}

# lab_reboot: ends this phase of the scenario and reboots the node (what it
# changed on its disk is kept); after the boot the runner runs the scenario
# again with LAB_PHASE one higher. Call it at the scenario's top level.
lab_reboot() {
    echo "$LAB_CHECKS $LAB_FAILED" >"$LAB_RESULTS/counts"
    echo "$((LAB_PHASE + 1))" >"$LAB_RESULTS/reboot"
    echo "lab_reboot: phase $LAB_PHASE done ($LAB_CHECKS checks, $LAB_FAILED failed), rebooting for phase $((LAB_PHASE + 1))"
    exit 0
}

# Called by the runner after the scenario: the scenario's status.
lab_finish() {
    echo "checks: $LAB_CHECKS, failed: $LAB_FAILED"
    ((LAB_CHECKS > 0 && LAB_FAILED == 0))
}
