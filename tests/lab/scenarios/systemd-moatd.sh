# moatd as a systemd service and `moat run` on a node that systemd runs, on
# pure cgroup v2, with each cgroup manager (a systemd scope in moat.slice,
# and cgroupfs): moatd started with systemd-run, a fork bomb contained by
# --pids-limit, and /metrics (read with bash's /dev/tcp) counting known
# workloads exactly: 1234 refused getppid calls, and 4 forks allowed and 6
# refused under a limit of 5 tasks.
#
# Run: scripts/lab-node.sh systemd-moatd [--kernel 6.12]
# lab-packages:
# shellcheck shell=bash

lab_expect "PID 1" "$(cat /proc/1/comm)" systemd
lab_expect "/sys/fs/cgroup" "$(stat -fc %T /sys/fs/cgroup)" cgroup2fs
lab_check "no cgroup v1 hierarchy mounted" bash -c '! grep -q " cgroup " /proc/mounts'
lab_check "pids is enabled for children of the root" grep -qw pids /sys/fs/cgroup/cgroup.subtree_control

# moat's parents exist before moatd starts, as on a node where moat has run
# before (moatd watches them for new workloads from its start): moat.slice
# for the systemd cgroup manager (the default here), /moat for cgroupfs.
lab_check "moat run works before moatd" moat run --name warmup -- true
lab_check "moat run --cgroup-manager cgroupfs works before moatd" \
    moat run --cgroup-manager cgroupfs --name warmup-fs -- true

port=9740
systemd-run --unit=moatd-lab --description="moatd (kernel lab)" \
    /usr/local/bin/moatd --listen "127.0.0.1:$port" --audit-log /var/log/moat/audit.jsonl
lab_wait "moatd serves /metrics" 120 lab_http_get 127.0.0.1 "$port" /metrics
lab_expect "moatd-lab.service" "$(systemctl is-active moatd-lab.service)" active
pid=$(systemctl show -P MainPID moatd-lab.service)
lab_expect "moatd's cgroup" "$(cut -d: -f3 "/proc/$pid/cgroup")" /system.slice/moatd-lab.service

metrics() { lab_http_get 127.0.0.1 "$port" /metrics; }

cat >/tmp/getppid.json <<'JSON'
{"defaultAction": "SCMP_ACT_ALLOW",
 "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}
JSON

# The same workloads with each cgroup manager: moatd attributes them to
# their names exactly, whether the workload is moat.slice/moat-NAME.scope
# (systemd) or /moat/NAME (cgroupfs).
for mgr in systemd cgroupfs; do
    case $mgr in
    systemd) where() { echo "/sys/fs/cgroup/moat.slice/moat-$1.scope"; } ;;
    cgroupfs) where() { echo "/sys/fs/cgroup/moat/$1"; } ;;
    esac
    run() { moat run --cgroup-manager "$mgr" "$@"; }

    # Exactly 1234 getppid calls refused with EPERM.
    name=denials-$mgr
    refused=$(run --name "$name" --seccomp-profile /tmp/getppid.json -- \
        perl -e 'my $n = 0; for (1 .. 1234) { $n++ if syscall(110) == -1 && $!{EPERM} } print "$n\n"')
    lab_expect "$mgr: getppid calls the workload saw refused" "$refused" 1234
    denied() { [[ $(metrics | lab_metric moat_seccomp_denials_total "workload=$name" syscall=getppid action=errno errno=EPERM) == 1234 ]]; }
    lab_wait "$mgr: moat_seccomp_denials_total{workload=$name,syscall=getppid} is 1234" 30 denied
    lab_value "denials_$mgr" "$(metrics | lab_metric moat_seccomp_denials_total "workload=$name")"
    lab_check "$mgr: an audit record for the denials" grep -q "\"name\":\"$name\".*\"syscall\":\"getppid\"" /var/log/moat/audit.jsonl

    # Forks under a limit of 5 tasks: perl and 4 children fill it, 6 forks fail.
    name=forks-$mgr
    out=$(run --name "$name" --pids-limit 5 -- perl -e '
        my ($ok, $failed, @kids) = (0, 0);
        for (1 .. 10) {
            my $pid = fork;
            if (!defined $pid) { $failed++ } elsif ($pid == 0) { sleep 60; exit 0 } else { push @kids, $pid }
        }
        kill 9, @kids; waitpid $_, 0 for @kids;
        print scalar(@kids), " $failed\n"')
    lab_expect "$mgr: forks allowed and refused, as the workload saw them" "$out" "4 6"
    lab_expect "$mgr: refused forks in the exit record" \
        "$(sed -n 's/.*"pids_limit_hits": *\([0-9]*\).*/\1/p' "/run/moat/exits/$name.json")" 6
    forked() {
        local m
        m=$(metrics)
        [[ $(lab_metric moat_forks_total "workload=$name" kind=process <<<"$m") == 4 &&
            $(lab_metric moat_fork_failures_total "workload=$name" errno=EAGAIN <<<"$m") == 6 ]]
    }
    lab_wait "$mgr: moat_forks_total 4 and moat_fork_failures_total{errno=EAGAIN} 6 for workload $name" 30 forked
    lab_value "forks_$mgr" "$(metrics | lab_metric moat_forks_total "workload=$name" kind=process)"
    lab_value "fork_failures_$mgr" "$(metrics | lab_metric moat_fork_failures_total "workload=$name" errno=EAGAIN)"

    # A fork bomb under --pids-limit 32: contained, the node still forks,
    # systemd and moatd are unharmed, nothing of the workload is left.
    name=bomb-$mgr
    start=$SECONDS
    run --name "$name" --pids-limit 32 -- sh -c 'b() { b | b & }; b; sleep 5' 2>/dev/null
    lab_value "bomb_exit_$mgr" "$?"
    lab_value "bomb_seconds_$mgr" "$((SECONDS - start))"
    hits=$(sed -n 's/.*"pids_limit_hits": *\([0-9]*\).*/\1/p' "/run/moat/exits/$name.json")
    lab_check "$mgr: the exit record counts pids limit hits ($hits)" test "${hits:-0}" -gt 0
    lab_check "$mgr: the node can still fork" /bin/true
    lab_check "$mgr: nothing left of the bomb's cgroup" test ! -e "$(where "$name")"
    lab_expect "$mgr: moatd-lab.service after the bomb" "$(systemctl is-active moatd-lab.service)" active
    lab_check "$mgr: systemd answers" bash -c 'systemctl list-units --no-pager >/dev/null'
    refused() { (($(metrics | lab_metric moat_fork_failures_total "workload=$name" errno=EAGAIN) > 0)); }
    lab_wait "$mgr: moatd counts the bomb's refused forks" 30 refused
    lab_value "bomb_fork_failures_$mgr" "$(metrics | lab_metric moat_fork_failures_total "workload=$name" errno=EAGAIN)"
    # Every fork the bomb had refused hit its own limit: moatd's count of
    # its EAGAIN failures and the exit record's pids.events count agree.
    agree() { [[ $(metrics | lab_metric moat_fork_failures_total "workload=$name" errno=EAGAIN) == "$hits" ]]; }
    lab_wait "$mgr: moatd's refused forks of the bomb equal its exit record's $hits" 30 agree
    # (moat_pids_limit_hits_total is read from the workload's pids.events while
    # its cgroup exists; once the bomb is gone the audit event is what is left.)
    lab_check "$mgr: a pids_limit_reached audit event for the bomb" \
        grep -q "\"action\":\"pids_limit_reached\".*\"name\":\"$name\"\|\"name\":\"$name\".*\"action\":\"pids_limit_reached\"" /var/log/moat/audit.jsonl
done

# SIGTERM from systemctl stop: moatd detaches and exits 0.
# (A transient unit that ends well is unloaded; one that fails stays, failed.)
lab_check "systemctl stop moatd-lab.service" systemctl stop moatd-lab.service
lab_check "moatd exited cleanly on SIGTERM" test "$(systemctl is-failed moatd-lab.service)" != failed
cp /var/log/moat/audit.jsonl "$LAB_RESULTS/" 2>/dev/null
