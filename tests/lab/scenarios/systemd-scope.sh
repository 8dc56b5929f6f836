# moat run's systemd cgroup manager on a node that systemd runs: each
# workload is a transient scope moat-NAME.scope in moat.slice (the default
# where systemd is PID 1), its pids limit is the scope's TasksMax, systemctl
# sees and stops it, it is gone after; moat run inside a service with and
# without Delegate=yes; a refused scope leaves nothing behind; a stale
# record's scope is stopped by the next moat run.
#
# Run: scripts/lab-node.sh systemd-scope [--kernel 6.12] [--debug]
# lab-packages:
# shellcheck shell=bash

scope_dir=/sys/fs/cgroup/moat.slice
# Background processes must not hold the scenario's output open.
quiet() { "$@" >/dev/null 2>&1 </dev/null; }
gone() { [[ ! -e $scope_dir/moat-$1.scope ]] && ! systemctl is-active -q "moat-$1.scope"; }
exit_field() { sed -n "s/.*\"$2\": *\([0-9a-z]*\).*/\1/p" "/run/moat/exits/$1.json"; }

# The default manager, and where the workload is.
out=$(moat run --name where --cgroupns host -- cat /proc/self/cgroup)
lab_expect "the workload's cgroup (default manager)" "$out" "0::/moat.slice/moat-where.scope/payload"
lab_wait "moat-where.scope is gone after" 10 gone where
lab_expect "moat.slice TasksMax (the node-wide cap)" "$(systemctl show -P TasksMax moat.slice)" 512
lab_expect "moat.slice pids.max" "$(cat $scope_dir/pids.max)" 512
lab_check "no record left" test ! -e /run/moat/workloads/where.json

# A running workload: systemctl, systemd-cgls and moat ps see it.
moat run --name live --pids-limit 16 -- sleep 300 >/dev/null 2>&1 </dev/null &
live_pid=$!
lab_wait "moat-live.scope is active" 30 systemctl is-active -q moat-live.scope
lab_expect "its slice" "$(systemctl show -P Slice moat-live.scope)" moat.slice
lab_expect "its TasksMax (the workload's 16 and moat's keeper)" "$(systemctl show -P TasksMax moat-live.scope)" 17
lab_expect "the workload's pids.max" "$(cat $scope_dir/moat-live.scope/payload/pids.max)" 16
lab_expect "the keeper in the scope's leaf" "$(cat $scope_dir/moat-live.scope/supervisor/cgroup.procs | wc -l)" 1
lab_expect "the workload alone in payload" "$(cat $scope_dir/moat-live.scope/payload/pids.current)" 1
lab_expect "Delegate=yes" "$(systemctl show -P Delegate moat-live.scope)" yes
status=$(systemctl status --no-pager moat-live.scope 2>&1)
echo "$status"
lab_check "systemctl status shows the workload's description" grep -q "moat workload live: sleep 300" <<<"$status"
lab_check "systemctl status shows its process" grep -q "sleep 300" <<<"$status"
cgls=$(systemd-cgls --no-pager /moat.slice 2>&1)
echo "$cgls"
lab_check "systemd-cgls shows moat-live.scope under moat.slice" grep -q "moat-live.scope" <<<"$cgls"
lab_check "systemd-cgls shows the workload in it" grep -q "sleep 300" <<<"$cgls"
ps_json=$(moat ps --json)
lab_check "moat ps names the unit" grep -q '"unit": "moat-live.scope"' <<<"$ps_json"
lab_check "moat ps counts its pids (1, limit 16)" \
    bash -c "grep -q '\"pids_current\": 1,' <<<'$ps_json' && grep -q '\"pids_limit\": \"16\"' <<<'$ps_json'"
lab_check "the record names the unit" grep -q '"unit": *"moat-live.scope"' /run/moat/workloads/live.json
cp /run/moat/workloads/live.json /tmp/live-record.json

# systemctl stop: SIGTERM reaches the workload; moat run reports it.
lab_check "systemctl stop moat-live.scope" systemctl stop moat-live.scope
wait "$live_pid"
lab_expect "moat run's exit status after systemctl stop" "$?" 143
lab_expect "the exit record's signal" "$(exit_field live signal)" 15
lab_wait "moat-live.scope is gone" 10 gone live
lab_check "no record left" test ! -e /run/moat/workloads/live.json

# Forks under a limit of 5 tasks: perl and 4 children, 6 refused; the
# scope's pids.events is read before systemd removes the emptied scope.
exact=0
slowest=0
systemd-analyze log-level debug
for i in $(seq 1 10); do
    t0=$(date +%s%N)
    out=$(RUST_LOG=debug moat run --name forks --pids-limit 5 -- perl -e '
        my ($ok, $failed, @kids) = (0, 0);
        for (1 .. 10) {
            my $pid = fork;
            if (!defined $pid) { $failed++ } elsif ($pid == 0) { sleep 60; exit 0 } else { push @kids, $pid }
        }
        kill 9, @kids; waitpid $_, 0 for @kids;
        print scalar(@kids), " $failed\n"' 2>/tmp/forks.err)
    ms=$((($(date +%s%N) - t0) / 1000000))
    ((ms > slowest)) && slowest=$ms
    hits=$(exit_field forks pids_limit_hits)
    [[ $out == "4 6" && $hits == 6 ]] && exact=$((exact + 1))
    echo "run $i: workload saw '$out', exit record pids_limit_hits $hits, $ms ms"
    ((ms > 5000)) && cat /tmp/forks.err
done
systemd-analyze log-level info
lab_value forks_slowest_ms "$slowest"
lab_value forks_exact_of_10 "$exact"
lab_expect "runs whose exit record counts exactly 6 refused forks" "$exact" 10

# A fork bomb under --pids-limit 32: contained; the node still forks.
start=$SECONDS
moat run --name bomb --pids-limit 32 -- sh -c 'b() { b | b & }; b; sleep 5' 2>/dev/null
lab_value bomb_exit "$?"
lab_value bomb_seconds "$((SECONDS - start))"
hits=$(exit_field bomb pids_limit_hits)
lab_value bomb_hits "$hits"
lab_check "the exit record counts pids limit hits ($hits)" test "${hits:-0}" -gt 0
lab_check "the node can still fork" /bin/true
lab_wait "moat-bomb.scope is gone" 10 gone bomb
lab_check "systemd answers" bash -c 'systemctl list-units --no-pager >/dev/null'

# What the scope costs a launch: `moat run -- true` with each manager in
# turn, the median of 7 each (this node's CPU is emulated, so only the
# difference means something).
declare -A launch
for i in 1 2 3 4 5 6 7; do
    for mgr in systemd cgroupfs; do
        t0=$(date +%s%N)
        moat run --cgroup-manager "$mgr" --name "t-$mgr-$i" -- true
        launch[$mgr]+="$((($(date +%s%N) - t0) / 1000000)) "
    done
done
for mgr in systemd cgroupfs; do
    lab_value "launch_ms_$mgr" "$(tr ' ' '\n' <<<"${launch[$mgr]}" | sed '/^$/d' | sort -n | sed -n 4p)"
done

# --cgroup-parent names the slice; '-' nests.
out=$(moat run --name nested --cgroup-parent moat-ci.slice --cgroupns host -- cat /proc/self/cgroup)
lab_expect "a workload in moat-ci.slice" "$out" "0::/moat.slice/moat-ci.slice/moat-nested.scope/payload"
out=$(moat run --name notaslice --cgroup-parent moat -- true 2>&1)
lab_expect "a non-slice --cgroup-parent: exit 125" "$?" 125
lab_check "... saying it must be a slice ($out)" grep -q "not a slice unit name" <<<"$out"

# cgroupfs, asked for: as before systemd was in the picture.
out=$(moat run --cgroup-manager cgroupfs --name fs --cgroupns host -- cat /proc/self/cgroup)
lab_expect "the workload's cgroup (cgroupfs)" "$out" "0::/moat/fs"
lab_check "no scope for it" bash -c '! systemctl list-units --all --no-legend | grep -q moat-fs.scope'

# Fail closed: a unit of the workload's scope name exists and is not moat's.
quiet systemd-run --unit=moat-taken.scope --slice=moat.slice --scope sleep 300 &
lab_wait "a foreign moat-taken.scope runs" 30 systemctl is-active -q moat-taken.scope
out=$(moat run --name taken -- true 2>&1)
lab_expect "moat run with a taken scope name: exit 125" "$?" 125
echo "$out"
lab_check "... naming the unit and why ($out)" grep -q "moat-taken.scope.*UnitExists" <<<"$out"
lab_expect "the foreign scope is untouched" "$(systemctl is-active moat-taken.scope)" active
lab_check "no record left" test ! -e /run/moat/workloads/taken.json
lab_check "no exit record" test ! -e /run/moat/exits/taken.json
systemctl stop moat-taken.scope

# A stale record (its moat run killed) whose scope still runs: the next
# moat run stops the scope and drops the record. (A real killed moat run
# takes its workload with it; the scope here stands for one that did not.)
quiet systemd-run --unit=moat-ghost.scope --slice=moat.slice --scope sleep 300 &
lab_wait "moat-ghost.scope runs" 30 systemctl is-active -q moat-ghost.scope
perl -0pe 's/"live"/"ghost"/; s/moat-live\.scope/moat-ghost.scope/g;
    s/"supervisor": \{[^}]*\}/"supervisor": {"pid": 999999, "start_time": 1}/;
    s/"pid": \{[^}]*\}/"pid": {"pid": 999998, "start_time": 1}/' /tmp/live-record.json >/run/moat/workloads/ghost.json
cat /run/moat/workloads/ghost.json
lab_check "moat ps shows it stale" bash -c 'moat ps 2>&1 | grep -q "^ghost .*stale"'
lab_check "the next moat run works" moat run --name after -- true
lab_wait "the stale record's scope is stopped" 10 gone ghost
lab_check "the stale record is gone" test ! -e /run/moat/workloads/ghost.json

# A killed moat run: its keeper and init die with it (PR_SET_PDEATHSIG),
# the workload with its init, the scope empties and systemd removes it; the
# record left behind is stale, and the next moat run drops it.
moat run --name killed -- sleep 300 >/dev/null 2>&1 </dev/null &
killed=$!
lab_wait "moat-killed.scope is active" 30 systemctl is-active -q moat-killed.scope
kill -9 "$killed"
wait "$killed" 2>/dev/null
lab_wait "a killed moat run's scope is gone" 10 gone killed
lab_check "moat ps shows the killed workload stale" bash -c 'moat ps 2>&1 | grep -q "^killed .*stale"'
lab_check "the next moat run works" moat run --name after2 -- true
lab_check "the stale record is dropped" test ! -e /run/moat/workloads/killed.json

# moat run as a service's ExecStart (output to files: --pipe and --wait
# need a bus daemon, which this node does not have).
cat >/tmp/svc.sh <<'EOF'
#!/bin/bash
moat run --name "$1" --cgroupns host -- cat /proc/self/cgroup
echo "moat run: $(cat /proc/self/cgroup)"
EOF
chmod +x /tmp/svc.sh
service() {
    local unit=$1
    shift
    rm -f "/tmp/$unit.out"
    systemd-run --quiet --unit="$unit" -p StandardOutput="file:/tmp/$unit.out" \
        -p StandardError="file:/tmp/$unit.out" "$@"
    lab_wait "$unit ran" 60 bash -c "! systemctl is-active -q $unit"
    cat "/tmp/$unit.out"
}
out=$(service deleg -p Delegate=yes /tmp/svc.sh indeleg)
echo "$out"
lab_check "with Delegate=yes the workload is inside the unit" \
    grep -qx "0::/system.slice/deleg.service/moat/indeleg" <<<"$out"
lab_check "... and the unit's own processes moved to its leaf" \
    grep -qx "moat run: 0::/system.slice/deleg.service/supervisor" <<<"$out"
out=$(service plain /tmp/svc.sh inplain)
echo "$out"
lab_check "without Delegate= the workload gets its scope in moat.slice" \
    grep -qx "0::/moat.slice/moat-inplain.scope/payload" <<<"$out"
out=$(service plainfs moat run --cgroup-manager cgroupfs --name infs --cgroupns host -- cat /proc/self/cgroup)
lab_check "cgroupfs asked for in a service" grep -qx "0::/moat/infs" <<<"$out"
lab_check "nothing left in moat.slice" bash -c "! ls -d $scope_dir/moat-*.scope 2>/dev/null"
lab_check "no workload records left" bash -c '! ls /run/moat/workloads/*.json 2>/dev/null'
systemctl list-units --all --no-pager 'moat*' || true
