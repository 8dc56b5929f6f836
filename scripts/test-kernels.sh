#!/usr/bin/env bash
# The kernel lab: runs moat's privileged test suites on other kernels, each
# booted in QEMU as a pure cgroup v2 host, and prints one summary line per
# kernel. Exits non-zero if any test fails, any suite gives no result, or any
# test skips that tests/lab/expected-skips does not expect.
#
# The tests are cargo's own test executables, built here once with
# `cargo test --no-run`; tests/lab/suites says which of them run. Each guest
# boots Debian 12's cloud kernel with a root disk holding busybox, the tools
# the tests run (bash, coreutils, util-linux, perl, kmod), the test
# executables and every binary of the workspace (moat, moatd and the programs
# tests drive) at the paths they were built at, the kernel's modules (loaded
# on demand, as on a Debian node), the repository files the tests read, and
# ../shared/fixtures. Results come back on a second disk.
#
# Usage: scripts/test-kernels.sh [OPTIONS]           (as root)
#   --kernel K       6.1, 6.12 (Debian 12 cloud kernels), or a full package
#                    name; repeat or comma-separate (default: 6.1,6.12)
#   --filter NAME    only tests whose name contains NAME (libtest filter);
#                    suites with no such test are left out
#   --suite NAME     only this suite (a target name in tests/lab/suites); repeatable
#   --env KEY=VALUE  set KEY for every suite in the guest (repeatable), e.g. to
#                    force one of moatd's tracing mechanisms for a run
#   --timeout SECS   limit for one kernel, boot to power-off (default 2400)
#   --skip-if-unavailable
#                    when a prerequisite is truly absent (no kernel package can
#                    be fetched and none is cached, or no QEMU), print
#                    `SKIP: <reason>` and exit 0 instead of failing (for CI)
#   --verbose        show the whole guest console, not only its progress lines
#   --list           print the suites (with how many tests each runs) and
#                    what is left out of the minimal lab, and exit
#
# Environment: MOAT_LAB_CACHE (default /var/cache/moat-lab: kernel packages,
# kept between runs), MOAT_LAB_ACCEL=kvm where KVM works (default: software
# emulation). Files of the last run: <target dir>/lab/ (console logs, results).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lab/lib.sh
source scripts/lab/lib.sh

kernels=()
filter=""
only_suites=()
guest_env=()
limit=2400
skip_if_unavailable=0
list_only=0
LAB_VERBOSE=0
while (($#)); do
    case $1 in
    --kernel)
        IFS=, read -ra k <<<"${2:?--kernel needs a value}"
        kernels+=("${k[@]}")
        shift 2
        ;;
    --filter)
        filter=${2:?--filter needs a value}
        shift 2
        ;;
    --suite)
        only_suites+=("${2:?--suite needs a value}")
        shift 2
        ;;
    --timeout)
        limit=${2:?--timeout needs a value}
        shift 2
        ;;
    --env)
        [[ ${2:-} =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || lab_die "--env needs KEY=VALUE, not '${2:-}'"
        guest_env+=("$2")
        shift 2
        ;;
    --skip-if-unavailable)
        skip_if_unavailable=1
        shift
        ;;
    --verbose)
        LAB_VERBOSE=1
        shift
        ;;
    --list)
        list_only=1
        shift
        ;;
    -h | --help)
        sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
        exit 0
        ;;
    *) lab_die "unknown option '$1' (see --help)" ;;
    esac
done
((${#kernels[@]})) || kernels=(6.1 6.12)

unavailable() {
    if ((skip_if_unavailable)); then
        echo "SKIP: kernel lab: $*"
        exit 0
    fi
    lab_die "$*"
}

[[ $(id -u) -eq 0 ]] || lab_die "run as root (the guest's disks are built with root-owned files)"
started=$SECONDS
if ! lab_need_packages; then
    unavailable "the lab's Debian packages (${LAB_PACKAGES[*]}) are missing and cannot be installed"
fi

# ---- kernels (first: without one there is nothing to build for) ----------
declare -A kdir
if ((!list_only)); then
    for k in "${kernels[@]}"; do
        lab_kernel "$k" || unavailable "kernel $k: $LAB_KERNEL_WHY"
        kdir[$k]=$LAB_KERNEL_DIR
    done
fi

# ---- the test executables, as cargo builds them --------------------------
lab_say "cargo test --no-run (the same test executables as on the host)"
target_dir=$(cargo metadata --format-version 1 --no-deps --locked | jq -r .target_directory)
LAB_OUT=$target_dir/lab
mkdir -p "$LAB_OUT"
cargo test --workspace --locked --no-run --message-format=json-render-diagnostics >"$LAB_OUT/artifacts.json"
# PACKAGE TARGET EXECUTABLE MANIFEST_DIR, for tests; bin NAME EXECUTABLE for binaries.
jq -r 'select(.reason == "compiler-artifact" and .executable != null)
    | .package_id as $id
    | (if ($id | test("#[^@]+@")) then ($id | capture("#(?<n>[^@]+)@").n)
       else ($id | capture("/(?<n>[^/#]+)#").n) end) as $pkg
    | (.manifest_path | sub("/Cargo.toml$"; "")) as $dir
    | if .profile.test then "test \($pkg) \(.target.name) \(.executable) \($dir)"
      else "bin \($pkg) \(.target.name) \(.executable) \($dir)" end' \
    "$LAB_OUT/artifacts.json" | sort -u >"$LAB_OUT/artifacts"

# ---- which suites run, and which tests each has ----------------------------
: >"$LAB_OUT/suites.run"
: >"$LAB_OUT/excluded"
suite_names=()
declare -A suite_tests skip_args
# Exclusions first: a whole target, or one test of a target (`TARGET::TEST`,
# passed to it as `--skip TEST`).
while read -r first pkg target reason; do
    [[ $first == - ]] || continue
    echo "$target: $reason" >>"$LAB_OUT/excluded"
    if [[ $target == *::* ]]; then
        skip_args[$pkg/${target%%::*}]+=" --skip ${target#*::}"
    fi
done <tests/lab/suites
while read -r first rest; do
    [[ -z $first || $first == \#* || $first == - ]] && continue
    pkg=$first
    read -r target args <<<"$rest"
    args="${args}${skip_args[$pkg/$target]:-}"
    args=${args# }
    if ((${#only_suites[@]})) && ! printf '%s\n' "${only_suites[@]}" | grep -qxF "$target"; then
        continue
    fi
    line=$(awk -v p="$pkg" -v t="$target" '$1 == "test" && $2 == p && $3 == t' "$LAB_OUT/artifacts")
    [[ -n $line ]] || lab_die "tests/lab/suites: cargo built no test target '$target' in package '$pkg'"
    read -r _ _ _ exe dir <<<"$line"
    # The suite's tests, as the executable lists them.
    # shellcheck disable=SC2086 # libtest arguments, split on purpose
    mapfile -t tests < <("$exe" --list --format terse $args 2>/dev/null | sed -n 's/: test$//p')
    ((${#tests[@]})) || lab_die "tests/lab/suites: '$pkg $target${args:+ $args}' selects no test"
    if [[ -n $filter ]]; then
        # --filter narrows the suite's own selection (libtest ORs its filters):
        # the tests chosen by name.
        mapfile -t tests < <(printf '%s\n' "${tests[@]}" | grep -F -- "$filter" || true)
        ((${#tests[@]})) || continue
        args="--exact ${tests[*]}"
    fi
    n=${#tests[@]}
    suite_names+=("$target")
    suite_tests[$target]=$n
    printf '%s\t%s\t%s\t%s\n' "$target" "$dir" "$exe" "--show-output${args:+ $args}" >>"$LAB_OUT/suites.run"
done <tests/lab/suites
if ((${#only_suites[@]})); then
    for s in "${only_suites[@]}"; do
        [[ -n ${suite_tests[$s]:-} ]] || lab_die "--suite $s: no such suite in tests/lab/suites${filter:+ with a test matching \"$filter\"}"
    done
fi
((${#suite_names[@]})) || lab_die "no suite has a test matching '$filter'"
if ((list_only)); then
    while IFS=$'\t' read -r name dir exe args; do
        echo "$name (${suite_tests[$name]} tests): ${exe#"$PWD"/} $args"
    done <"$LAB_OUT/suites.run"
    sed 's/^/not in the minimal lab: /' "$LAB_OUT/excluded"
    exit 0
fi

# ---- the guest's root disk ---------------------------------------------
lab_say "building the root disk"
root=$LAB_OUT/root
lab_rm "$root"
lab_skeleton "$root"
# The tools the tests run, from this host's own Debian packages, so that they
# behave as on the host (dash as /bin/sh forks where the tests count forks;
# perl with threads); busybox fills in the rest.
# strace gives the recording suite its reference list of syscalls.
guest_packages=(dash bash coreutils util-linux bsdutils mount tar libc-bin perl-base kmod strace
    "$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' 'libperl5.*' 2>/dev/null | awk '$1 == "ii" {print $2; exit}')")
for p in "${guest_packages[@]}"; do
    dpkg -L "$p" >/dev/null 2>&1 || lab_die "the guest's tools come from this host's Debian packages; '$p' is not installed"
    dpkg -L "$p"
done | grep -vE '^/usr/share/(doc|man|info|locale|lintian|bash-completion)/' | lab_copy_host_files "$root"
ln -sfn dash "$root/usr/bin/sh"
lab_copy_host_files "$root" <<<"/usr/bin/busybox"
busybox --list-full | while read -r applet; do
    [[ -e $root/$applet || -L $root/$applet ]] || ln -s /usr/bin/busybox "$root/$applet" 2>/dev/null || true
done
cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/bash
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
tty:x:5:
nogroup:x:65534:
EOF
printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"
printf 'passwd: files\ngroup: files\nhosts: files\n' >"$root/etc/nsswitch.conf"
# The repository (what tests open through CARGO_MANIFEST_DIR) and the shared
# fixtures beside it, at the paths the test executables were built with.
mkdir -p "$root$PWD"
tar -C "$PWD" --exclude=./target --exclude=./.git --exclude="./${target_dir#"$PWD"/}" -cf - . | tar -C "$root$PWD" -xf -
if [[ -d ../shared/fixtures ]]; then
    shared=$(cd .. && pwd)/shared
    mkdir -p "$root$shared"
    cp -rL ../shared/fixtures "$root$shared/"
fi
# The test executables and the binaries they drive, without debug info:
# every binary target cargo built for the workspace (moat, moatd, and the
# workloads tests run, such as hostile and syscall_probe), as its artifacts
# list them, so a new one needs no change here.
strip_to() {
    mkdir -p "$(dirname "$root$1")"
    objcopy --strip-debug "$1" "$root$1"
}
while IFS=$'\t' read -r name dir exe args; do
    strip_to "$exe"
done <"$LAB_OUT/suites.run"
while read -r kind pkg name exe dir; do
    [[ $kind == bin ]] && strip_to "$exe"
done <"$LAB_OUT/artifacts"
# Each kernel's modules, with the indexes depmod makes when Debian installs
# the package: the guest's kernel runs kmod's modprobe for what it loads on
# demand (the AF_VSOCK socket family, for one), as on a Debian node.
for k in "${kernels[@]}"; do
    [[ -d ${kdir[$k]}/modules ]] || continue
    for m in "${kdir[$k]}"/modules/*/; do
        m=${m%/}
        [[ -d $root/usr/lib/modules/${m##*/} ]] && continue
        mkdir -p "$root/usr/lib/modules"
        cp -a "$m" "$root/usr/lib/modules/"
        depmod -b "$root" "${m##*/}"
    done
done
# The recording suite's C workloads, compiled here (the guest has no
# compiler), as its Programs::build would compile them.
if grep -q '^record_profile' "$LAB_OUT/suites.run"; then
    command -v gcc >/dev/null || lab_die "the record_profile suite needs gcc on this host (scripts/setup.sh installs it)"
    workloads=$root/lab/record-workloads
    mkdir -p "$workloads"
    gcc -O1 -pthread -o "$workloads/workload" tests/tests/record/workload.c
    gcc -O1 -pthread -static -o "$workloads/workload-static" tests/tests/record/workload.c
    gcc -O1 -o "$workloads/helper" tests/tests/record/helper.c
    guest_env+=("MOAT_TEST_RECORD_WORKLOADS=/lab/record-workloads")
fi
lab_add_libraries "$root"
mkdir -p "$root/lab"
cp scripts/lab/guest-init.sh "$root/lab/init"
chmod 755 "$root/lab/init"
cp "$LAB_OUT/suites.run" "$root/lab/suites.run"
for kv in "${guest_env[@]}"; do printf 'export %q\n' "$kv"; done >"$root/lab/env"
echo $((limit - 60)) >"$root/lab/suite-timeout"
lab_mkfs "$root" "$LAB_OUT/root.img" 512 moat-lab
lab_say "root disk: $(du -sm "$root" | cut -f1) MiB in $LAB_OUT/root.img ($((SECONDS - started)) s so far)"

# ---- boot each kernel ---------------------------------------------------
# The summary of one kernel's results directory, as lines:
#   RESULT suite passed failed ignored | NORESULT suite exit | FAILED suite test
#   SKIP suite test reason
summarize() {
    local dir=$1 name
    for name in "${suite_names[@]}"; do
        if [[ ! -f $dir/$name.out ]]; then
            echo "NORESULT $name did-not-run"
            continue
        fi
        awk -v suite="$name" -v rc="$(cat "$dir/$name.rc" 2>/dev/null || echo '?')" '
            /^---- .* stdout ----$/ { t = $2; next }
            /^(successes|failures):$/ { t = "" }
            /^SKIP/ { sub(/\r$/, ""); print "SKIP", suite, (t == "" ? "?" : t), $0 }
            /^test .* \.\.\. FAILED$/ { print "FAILED", suite, $2 }
            /^test result: / {
                res = 1
                for (i = 1; i <= NF; i++) {
                    if ($(i+1) ~ /^passed/) p = $i
                    if ($(i+1) ~ /^failed/) f = $i
                    if ($(i+1) ~ /^ignored/) g = $i
                }
            }
            { last = $0 }
            END {
                if (res) print "RESULT", suite, p + 0, f + 0, g + 0, rc
                else print "NORESULT", suite, "exit " rc ": " last
            }' "$dir/$name.out"
    done
}

# Whether skip "SUITE TEST REASON" is in tests/lab/expected-skips.
expected_skip() {
    local suite=$1 test=$2 reason=$3 s t r
    while IFS=$'\t' read -r s t r; do
        [[ -z $s || $s == \#* ]] && continue
        [[ $s == "$suite" && $test == *"$t"* && $reason == *"$r"* ]] && return 0
    done <tests/lab/expected-skips
    return 1
}

status=0
summary=()
for k in "${kernels[@]}"; do
    LAB_TAG=$k
    LAB_CONSOLE=$LAB_OUT/console-$k.log
    kout=$LAB_OUT/results-$k
    lab_results_disk "$LAB_OUT/results-$k.img" 256
    lab_say "booting $(basename "${kdir[$k]}") ($(cat "${kdir[$k]}/version"))"
    t0=$SECONDS
    boot_rc=0
    # shellcheck disable=SC2046 # lab_nvme prints QEMU arguments
    lab_boot "${kdir[$k]}" "$limit" -m 2048 -smp 2 \
        -append "console=ttyS0 quiet panic=-1 root=PARTUUID=$LAB_ROOT_PARTUUID rootwait rw rootfstype=ext4 init=/lab/init" \
        $(lab_disks "$LAB_OUT/root.img:snapshot" "$LAB_OUT/results-$k.img") || boot_rc=$?
    secs=$((SECONDS - t0))
    if ! lab_read_results "$LAB_OUT/results-$k.img" "$kout"; then
        summary+=("FAILED: $k: no results (QEMU exit $boot_rc after ${secs} s; console: $LAB_CONSOLE)")
        tail -n 30 "$LAB_CONSOLE" | sed "s/^/[$k] /" >&2
        status=1
        continue
    fi
    summarize "$kout" >"$kout/summary"
    kernel=$(sed -n 's/^kernel //p' "$kout/env")
    mounts=$(sed -n 's/^cgroup_mounts //p' "$kout/env")
    layout="cgroup v2 only"
    [[ $mounts == *":cgroup "* || $mounts == *":cgroup" ]] && layout="hybrid"
    layout+=" (controllers: $(sed -n 's/^cgroup_controllers //p' "$kout/env"); subtree_control: $(sed -n 's/^cgroup_subtree_control //p' "$kout/env"))"
    read -r passed failed ignored < <(awk '$1 == "RESULT" {p += $3; f += $4; g += $5} END {print p + 0, f + 0, g + 0}' "$kout/summary")
    problems=()
    while read -r _ suite why; do problems+=("$suite: no test result ($why)"); done < <(grep '^NORESULT' "$kout/summary" || true)
    while read -r _ suite test; do problems+=("FAILED $suite::$test"); done < <(grep '^FAILED' "$kout/summary" || true)
    while read -r _ suite _ _ _ rc; do
        [[ $rc == 0 ]] || problems+=("$suite: exit status $rc")
    done < <(grep '^RESULT' "$kout/summary" || true)
    skips=()
    nskip=0
    unexpected=0
    while read -r _ suite test reason; do
        nskip=$((nskip + 1))
        if expected_skip "$suite" "$test" "$reason"; then
            skips+=("expected skip $suite::$test: $reason")
        else
            skips+=("UNEXPECTED skip $suite::$test: $reason")
            unexpected=$((unexpected + 1))
        fi
    done < <(grep '^SKIP' "$kout/summary" || true)
    # A kernel warning or oops while moat's programs run fails the lab too.
    while read -r splat; do
        problems+=("kernel log: $splat")
    done < <(grep -E 'WARNING: CPU|BUG: |Oops|general protection fault|Kernel panic' "$kout/dmesg" 2>/dev/null | head -n 5 || true)
    ((boot_rc == 0)) || problems+=("QEMU exit status $boot_rc (124: the ${limit} s limit)")
    ((unexpected == 0 && ${#problems[@]} == 0)) || status=1
    verdict=ok
    ((unexpected == 0 && ${#problems[@]} == 0)) || verdict=FAILED
    line="$verdict: $kernel | $layout | passed $passed, failed $failed, skipped $nskip ($unexpected unexpected), ignored $ignored | ${secs} s boot to result"
    summary+=("$line")
    for p in "${problems[@]}" "${skips[@]}"; do summary+=("    $p"); done
    {
        echo "$line"
        for p in "${problems[@]}" "${skips[@]}"; do echo "    $p"; done
    } >&2
done

echo
echo "==> kernel lab: ${#suite_names[@]} suites ($(printf '%s ' "${suite_names[@]}"))${guest_env[*]:+, with ${guest_env[*]}}"
while read -r line; do echo "    not in the minimal lab: $line"; done <"$LAB_OUT/excluded"
printf '%s\n' "${summary[@]}"
echo "lab: $((SECONDS - started)) s in all; logs and results in $LAB_OUT"
exit "$status"
