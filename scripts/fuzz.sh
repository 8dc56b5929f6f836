#!/usr/bin/env bash
# Runs every fuzz target (tests/fuzz) for a bounded time, after installing
# cargo-fuzz when it is missing. Fails if a target crashes, hangs (over 10 s
# on one input) or blows its memory (over 2 GB); the input is then copied to
# tests/fuzz/regressions/<target>/, which `cargo test` replays.
#
# Usage: scripts/fuzz.sh [--seconds N] [TARGET...]   (default: 20 s, every target)
#
# Corpora live in target/fuzz-corpus/<target>/ and grow across runs; they
# are seeded from the real profiles in ../shared/fixtures (copied at run
# time, never committed) and from the project's own files.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

seconds=20
targets=()
while (($#)); do
    case $1 in
    --seconds) seconds=$2; shift 2 ;;
    -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
    esac
done

say() { echo "fuzz: $*"; }

TOOLCHAIN=moat-nightly
scripts/install-bpf-toolchain.sh >/dev/null # provides the pinned nightly
export PATH=$HOME/.cargo/bin:$PATH
if ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# The configuration target links the agent library; its eBPF object is not
# needed to parse a configuration.
export AYA_BUILD_SKIP=1
export CARGO_TARGET_DIR=${MOAT_FUZZ_TARGET_DIR:-$root/target/fuzz}

seed() {
    local target=$1 dir=$2
    case $target in
    profile)
        cp "$root/runtime/profiles/default.json" "$dir/moat-default.json"
        if [[ -d $root/../shared/fixtures ]]; then
            cp "$root"/../shared/fixtures/*.json "$dir/"
        else
            say "no ../shared/fixtures: seeding $target with moat's own profile only"
        fi
        ;;
    moatd_config)
        cp "$root/agent/moatd.example.toml" "$dir/example.toml"
        ;;
    authz_request)
        cp "$root"/agent/policy/tests/requests/* "$dir/"
        ;;
    audit_reader)
        # Lines as moatd writes them (the shape of agent/api/src/audit.rs).
        printf '%s\n' \
            '{"@timestamp":"2026-05-20T10:11:12.123456789Z","event":{"kind":"event","category":["process","intrusion_detection"],"type":["denied"],"action":"seccomp_denied","outcome":"failure"},"host":{"name":"node1"},"process":{"pid":42,"thread":{"id":43},"name":"curl","executable":"/usr/bin/curl"},"workload":{"name":"build"},"cgroup":{"path":"/moat/build"},"seccomp":{"syscall":"mount","syscall_nr":165,"arch":"x86_64","action":"errno","errno":"EPERM"}}' \
            '{"@timestamp":"2026-05-20T10:11:13Z","event":{"kind":"event","category":["process"],"type":["denied"],"action":"pids_limit_reached","outcome":"failure"},"host":{"name":"n"},"workload":{"name":"w\u001b[2J"},"cgroup":{"path":null},"pids":{"current":5,"limit":5,"limit_hits":16,"new_hits":15}}' \
            >"$dir/lines.jsonl"
        printf '%s' '{"event":{"action":"fork_burst"},"fork_burst":{"rate":1200,"threshold":1000}}' >"$dir/short.json"
        ;;
    exposition_reader)
        # What moatd serves: a text exposition, and HTTP answers around one.
        printf '# HELP moat_forks_total New tasks.\n# TYPE moat_forks_total counter\nmoat_forks_total{workload="a\\"b",kind="process"} 12\nmoat_pids_current{workload="w"} 3 1700000000\nup NaN\n' >"$dir/exposition.txt"
        printf 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1a\r\nmoat_forks_total{a="b"} 1\n\r\n0\r\n\r\n' >"$dir/chunked.http"
        printf 'HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nmoat_x 5\n' >"$dir/length.http"
        ;;
    esac
}

cd tests/fuzz
if ((${#targets[@]} == 0)); then
    mapfile -t targets < <(cargo +$TOOLCHAIN fuzz list)
fi
status=0
for target in "${targets[@]}"; do
    corpus=$root/target/fuzz-corpus/$target
    artifacts=$root/target/fuzz-artifacts/$target
    mkdir -p "$corpus" "$artifacts"
    seed "$target" "$corpus"
    dict=()
    [[ -f dict/$target.dict ]] && dict=(-dict="dict/$target.dict")
    say "$target for ${seconds}s"
    log=$root/target/fuzz-$target.log
    if cargo +$TOOLCHAIN fuzz run --sanitizer none "$target" "$corpus" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 "${dict[@]}" >"$log" 2>&1; then
        # The last status line and the final stats: executions and coverage.
        grep -E '^#[0-9]+' "$log" | tail -n 1 || true
        grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" || true
    else
        status=1
        tail -n 40 "$log"
        for f in "$artifacts"/*; do
            [[ -e $f ]] || continue
            cp "$f" "$root/tests/fuzz/regressions/$target/"
            say "$target: kept $(basename "$f") in tests/fuzz/regressions/$target/"
        done
    fi
done
exit "$status"
