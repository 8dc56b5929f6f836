#!/usr/bin/env bash
# The kernel lab's node image: boots a Debian 12 node (systemd as PID 1, pure
# cgroup v2) on a lab kernel, installs moat into it, runs one scenario
# (tests/lab/scenarios/NAME.sh) and returns its result: the exit status is the
# scenario's (0: every check held; 2: a prerequisite is missing; 125: the
# install step failed), and a summary line with its checks and figures is
# printed. Everything the node wrote is kept in <target dir>/lab/node-NAME-KERNEL/
# (output.log, values as KEY=VALUE lines, exit, env, journal, console.log).
#
# Usage: scripts/lab-node.sh SCENARIO [OPTIONS]          (as root)
#   --kernel K       6.1 or 6.12 (Debian 12 cloud kernels) or a package name (default 6.12)
#   --install FILE   the install step, run in the node as root before the
#                    scenario (default scripts/lab/install/binaries.sh: the
#                    release binaries, the unit file, user moat and its subids)
#   --file PATH      put PATH on the lab disk, in $LAB_FILES (repeatable)
#   --debug          install the debug binaries (what `cargo test` builds,
#                    so no release build is needed) instead of release ones
#   --timeout SECS   limit for the whole boot (default 1200)
#   --verbose        show the whole node console, not only the lab's lines
#   --list           list the scenarios and exit
#
# A scenario is a bash script run in the node as root once systemd has
# brought it up, with the helpers of scripts/lab/scenario-lib.sh (lab_check,
# lab_expect, lab_wait, lab_value, lab_http_get, lab_metric). One that calls
# lab_reboot reboots the node there (changes to its disk are kept) and is run
# again after the boot with LAB_PHASE=2 (3 after a second lab_reboot...). A
# `# lab-packages: PKG...` line asks for Debian packages in the image: each
# set is a cached layer (a second image), so one scenario's packages cost
# nothing to the others. The base image (debootstrap --variant=minbase) and
# the layers are cached in $MOAT_LAB_CACHE (default /var/cache/moat-lab).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lab/lib.sh
source scripts/lab/lib.sh
# shellcheck source=scripts/lab/node.sh
source scripts/lab/node.sh

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }
scenario=""
kernel=6.12
install=scripts/lab/install/binaries.sh
files=()
profile=release
limit=1200
LAB_VERBOSE=0
while (($#)); do
    case $1 in
    --kernel)
        kernel=${2:?--kernel needs a value}
        shift 2
        ;;
    --install)
        install=${2:?--install needs a file}
        shift 2
        ;;
    --file)
        files+=("${2:?--file needs a path}")
        shift 2
        ;;
    --timeout)
        limit=${2:?--timeout needs a value}
        shift 2
        ;;
    --debug)
        profile=debug
        shift
        ;;
    --verbose)
        LAB_VERBOSE=1
        shift
        ;;
    --list)
        for f in tests/lab/scenarios/*.sh; do
            printf '%-20s %s\n' "$(basename "$f" .sh)" "$(sed -n '1s/^# //p' "$f")"
        done
        exit 0
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    -*) lab_die "unknown option '$1' (see --help)" ;;
    *)
        [[ -z $scenario ]] || lab_die "one scenario at a time ('$scenario', then '$1')"
        scenario=$1
        shift
        ;;
    esac
done
[[ -n $scenario ]] || {
    usage >&2
    exit 2
}
script=tests/lab/scenarios/$scenario.sh
[[ -f $script ]] || lab_die "no scenario '$scenario' (tests/lab/scenarios/$scenario.sh); --list shows them"
[[ -f $install ]] || lab_die "--install $install: no such file"
for f in "${files[@]}"; do [[ -e $f ]] || lab_die "--file $f: no such file"; done
[[ $(id -u) -eq 0 ]] || lab_die "run as root"

started=$SECONDS
unavailable() {
    echo "SKIP: node scenario $scenario: $*"
    exit 2
}
lab_need_packages || unavailable "the lab's Debian packages (${LAB_PACKAGES[*]}) are missing"
lab_kernel "$kernel" || unavailable "kernel $kernel: $LAB_KERNEL_WHY"
kdir=$LAB_KERNEL_DIR
lab_node_base || unavailable "$LAB_NODE_WHY"
read -ra packages <<<"$(sed -n 's/^# lab-packages:[[:space:]]*//p' "$script" | head -n 1)"
lab_node_layer "${packages[@]}" || unavailable "$LAB_NODE_WHY"
image_ready=$SECONDS

lab_say "cargo build ($profile: moat, moatd)"
target_dir=$(cargo metadata --format-version 1 --no-deps --locked | jq -r .target_directory)
if [[ $profile == release ]]; then
    cargo build --release --locked --bin moat --bin moatd
else
    cargo build --locked --bin moat --bin moatd
fi
out=$target_dir/lab/node-$scenario-$kernel
lab_rm "$out"
mkdir -p "$out/disk/files"
disk=$out/disk
install -m 755 scripts/lab/node-run "$disk/run"
cp scripts/lab/scenario-lib.sh "$disk/scenario-lib.sh"
cp "$script" "$disk/scenario.sh"
echo "$scenario" >"$disk/scenario.name"
cp "$install" "$disk/install.sh"
for bin in moat moatd; do objcopy --strip-debug "$target_dir/$profile/$bin" "$disk/files/$bin"; done
cp agent/systemd/moatd.service agent/moatd.example.toml "$disk/files/"
for f in "${files[@]}"; do cp -r "$f" "$disk/files/"; done
lab_mkfs_data "$disk" "$out/lab.img" moat-lab
lab_results_disk "$out/results.img" 256

LAB_TAG="$kernel $scenario"
# Guest reboots restart the guest only for scenarios that ask for them: for
# the others a reboot (a kernel panic) ends QEMU at once.
grep -q '^[^#]*\blab_reboot\b' "$script" && export LAB_ALLOW_REBOOT=1
LAB_CONSOLE=$out/console.log
lab_say "booting $(basename "$kdir") with $(basename "$LAB_NODE_IMAGE") (images ready after $((image_ready - started)) s)"
t0=$SECONDS
boot_rc=0
# shellcheck disable=SC2046 # lab_disks prints QEMU arguments
lab_boot "$kdir" "$limit" -m 3072 -smp 2 \
    -append "console=ttyS0 quiet panic=-1 root=PARTUUID=$LAB_ROOT_PARTUUID rootwait rw init=/lib/systemd/systemd systemd.show_status=false" \
    $(lab_disks "$LAB_NODE_IMAGE:snapshot" "$out/lab.img" "$out/results.img") || boot_rc=$?
secs=$((SECONDS - t0))

if ! lab_read_results "$out/results.img" "$out/results" || [[ ! -f $out/results/exit ]]; then
    echo "node scenario $scenario on $kernel: NO RESULT (QEMU exit $boot_rc after $secs s; console: $LAB_CONSOLE)"
    tail -n 30 "$LAB_CONSOLE" | sed "s/^/[$LAB_TAG] /"
    exit 1
fi
res=$out/results
rc=$(cat "$res/exit")
checks=$(grep -c '^ok: \|^FAIL: ' "$res/output.log" 2>/dev/null || true)
failed=$(grep -c '^FAIL: ' "$res/output.log" 2>/dev/null || true)
verdict=passed
((rc == 0)) || verdict="FAILED (exit $rc)"
node_up=$(sed -n 's/^uptime_at_start //p' "$res/env")
scenario_s=$(cat "$res/seconds" 2>/dev/null || echo "?")
reboots=$(cat "$res/reboots" 2>/dev/null || echo 0)
echo
echo "node scenario $scenario on $(sed -n 's/^kernel //p' "$res/env") ($(sed -n 's/^systemd //p' "$res/env" | cut -d' ' -f1-2), $(sed -n 's/^cgroup_fs //p' "$res/env")): $verdict, ${checks:-0} checks, ${failed:-0} failed"
echo "    node up after ${node_up%.*} s, scenario ${scenario_s} s$( ((reboots == 0)) || echo " in $((reboots + 1)) boots"), boot to result ${secs} s, ${SECONDS}s in all (images and build included)"
grep '^FAIL: ' "$res/output.log" 2>/dev/null | sed 's/^/    /' || true
[[ -f $res/values ]] && echo "    values: $(tr '\n' ' ' <"$res/values")"
((rc == 125)) && sed 's/^/    install: /' "$res/install.log" | tail -n 20
echo "    files: $out/results/ (output.log, values, journal, env), console: $LAB_CONSOLE"
exit "$rc"
