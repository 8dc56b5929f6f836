# moat's Debian package on a node that systemd runs: the postinst enables and
# starts moatd, which is Type=notify (READY=1 once its programs are attached
# and /metrics answers, a STATUS= line in systemctl status); a moatd that stops
# pinging the watchdog is killed and restarted by systemd; `systemctl stop`,
# `start` and `restart` lose no counts (the programs and maps stay pinned in
# /sys/fs/bpf/moat and the next moatd reuses them); removal stops moatd,
# detaches and unpins its programs (the prerm's `moatd --unload`) and keeps
# the configuration and the audit log; purge deletes them.
#
# Run: scripts/package-deb.sh --bin-dir target/debug --out target/deb &&
#      scripts/lab-node.sh package-systemd --debug \
#        --install scripts/lab/install/deb.sh --file target/deb/moat_0.1.0_amd64.deb
# lab-packages:
# shellcheck shell=bash

lab_expect "PID 1" "$(cat /proc/1/comm)" systemd
lab_expect "moat is installed" "$(dpkg-query -W -f='${Status}' moat)" "install ok installed"
lab_expect "moatd enabled by the postinst" "$(systemctl is-enabled moatd.service)" enabled
lab_check "user moat" getent passwd moat
lab_check "subordinate uids of moat" grep -q '^moat:' /etc/subuid
lab_check "subordinate gids of moat" grep -q '^moat:' /etc/subgid

# Started by the postinst; `systemctl start` returns only once READY=1 came.
active() { [ "$(systemctl is-active moatd.service)" = active ]; }
lab_wait "moatd active" 120 active
lab_expect "Type" "$(systemctl show -P Type moatd.service)" notify
lab_expect "WatchdogUSec" "$(systemctl show -P WatchdogUSec moatd.service)" 30s
metrics_answer() { lab_http_get 127.0.0.1 9740 /metrics >/dev/null; }
lab_check "/metrics answers once active" metrics_answer
status=$(systemctl show -P StatusText moatd.service)
lab_expect "STATUS= line" "$status" "serving http://127.0.0.1:9740/metrics; audit log /var/log/moat/audit.jsonl"
lab_check "systemctl status shows it" bash -c 'systemctl status moatd.service | grep -q "Status: \"serving http"'
lab_value exposure "$(systemd-analyze security moatd.service 2>/dev/null | sed -n 's/.*Overall exposure level for moatd.service: \([0-9.]*\).*/\1/p')"

# The watchdog, shortened to 4 s: a moatd that stops (SIGSTOP stops every
# thread, the collector with them) is killed (SIGABRT) and restarted.
mkdir -p /etc/systemd/system/moatd.service.d
printf '[Service]\nWatchdogSec=4s\n' >/etc/systemd/system/moatd.service.d/lab-watchdog.conf
systemctl daemon-reload
systemctl restart moatd.service
lab_expect "moatd restarted with WatchdogSec=4s" "$(systemctl show -P WatchdogUSec moatd.service)" 4s
sleep 10
lab_expect "pinged in time: no restart in 10 s" "$(systemctl show -P NRestarts moatd.service)" 0
old=$(systemctl show -P MainPID moatd.service)
restarted_once() { [ "$(systemctl show -P NRestarts moatd.service)" = 1 ] && active; }
kill -STOP "$old"
lab_wait "systemd restarts a moatd that stopped pinging" 60 \
    restarted_once
new=$(systemctl show -P MainPID moatd.service)
lab_check "a new moatd ($new, was $old)" test "$new" != "$old"
lab_check "the journal names the watchdog" bash -c 'journalctl -u moatd.service --no-pager | grep -qi watchdog'
rm -r /etc/systemd/system/moatd.service.d
systemctl daemon-reload

# Restarts lose no counts (issue 16). One long-lived workload (its scope must
# still exist when moatd reads its counters) makes 1000 getppid calls, refused
# with EPERM, for each line it reads: once under the running moatd, once while
# moatd is stopped, once after `systemctl restart`. moat_seccomp_denials_total
# is then exactly 3000: nothing missed, nothing attached (and counted) twice.
metrics() { lab_http_get 127.0.0.1 9740 /metrics; }
pins_state() { metrics | sed -n 's/^moat_ebpf_pins_info{state="\([a-z]*\)"} 1$/\1/p'; }
# The loaded eBPF programs whose name starts with moat_ (bpf(2) from perl: the
# image has no bpftool).
cat >/tmp/bpf-progs.pl <<'PERL'
my ($id, $bpf) = (0, 321);
while (1) {
    my $attr = pack("L4", $id, 0, 0, 0) . ("\0" x 112);
    syscall($bpf, 11, $attr, 128) == 0 or last;    # BPF_PROG_GET_NEXT_ID
    $id = unpack("x4 L", $attr);
    my $get = pack("L4", $id, 0, 0, 0) . ("\0" x 112);
    my $fd = syscall($bpf, 13, $get, 128);         # BPF_PROG_GET_FD_BY_ID
    next if $fd < 0;
    my $info = "\0" x 256;
    my $req = pack("L L Q", $fd, 256, unpack("Q", pack("P", $info))) . ("\0" x 112);
    if (syscall($bpf, 15, $req, 128) == 0) {       # BPF_OBJ_GET_INFO_BY_FD
        my $name = unpack("Z16", substr($info, 64, 16));
        print "$id $name\n" if $name =~ /^moat_/;
    }
    syscall(3, $fd);
}
PERL
moat_progs() { perl /tmp/bpf-progs.pl | wc -l; }
cat >/tmp/getppid.json <<'JSON'
{"defaultAction": "SCMP_ACT_ALLOW",
 "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}
JSON
n=1000
# shellcheck disable=SC2016 # perl's variables
coproc WORKLOAD {
    moat run --name restarts --seccomp-profile /tmp/getppid.json -- perl -e '
        $| = 1;
        my $n = shift;
        while (<STDIN>) {
            my $seen = 0;
            for (1 .. $n) { $seen++ if syscall(110) == -1 && $! + 0 == 1 }
            print "$seen\n";
        }' "$n" 2>/tmp/restarts.err
}
# phase WHAT: one round of $n denials; checks the workload saw them all.
phase() {
    local seen=""
    echo go >&"${WORKLOAD[1]}"
    read -r -t 120 seen <&"${WORKLOAD[0]}"
    lab_expect "$1: getppid calls the workload saw refused" "$seen" "$n"
    [[ $seen == "$n" ]] || cat /tmp/restarts.err
}
denials() { metrics | lab_metric moat_seccomp_denials_total workload=restarts syscall=getppid action=errno errno=EPERM; }
denials_are() { [[ $(denials) == "$1" ]]; }

phase "under the running moatd"
lab_wait "moat_seccomp_denials_total{workload=restarts} is $n" 30 denials_are "$n"
pinned=$(moat_progs)
lab_check "moat's programs are loaded ($pinned)" test "$pinned" -gt 0

lab_check "systemctl stop moatd" systemctl stop moatd.service
lab_expect "moatd stopped" "$(systemctl is-active moatd.service)" inactive
lab_check "no moatd process" bash -c '! grep -qx moatd /proc/[0-9]*/comm'
lab_check "the pins stay in /sys/fs/bpf/moat" bash -c 'ls -d /sys/fs/bpf/moat/agent-*'
lab_expect "moat's programs stay loaded while moatd is stopped" "$(moat_progs)" "$pinned"
phase "while moatd is stopped"
lab_check "systemctl start moatd" systemctl start moatd.service
lab_expect "moatd started: pins reused" "$(pins_state)" reused
lab_wait "moat_seccomp_denials_total{workload=restarts} is $((2 * n)) after the start" 30 denials_are $((2 * n))

lab_check "systemctl restart moatd" systemctl restart moatd.service
lab_expect "moatd restarted: pins reused" "$(pins_state)" reused
lab_expect "the same number of moat programs (none attached twice)" "$(moat_progs)" "$pinned"
phase "after systemctl restart"
lab_wait "moat_seccomp_denials_total{workload=restarts} is $((3 * n)) after the restart" 30 denials_are $((3 * n))
lab_value restart_denials "$(denials)"
wfd=${WORKLOAD[1]}
exec {wfd}>&-
wait "$WORKLOAD_PID"
lab_expect "the workload's exit status" "$?" 0
lab_expect "moat_seccomp_denials_total{workload=restarts} once it has ended" "$(denials)" $((3 * n))

# Remove: stopped, configuration and audit log kept.
echo '# changed' >>/etc/moat/moatd.toml
lab_check "an audit log exists" test -f /var/log/moat/audit.jsonl
dpkg -L moat >/tmp/moat.files
lab_check "dpkg -r moat" dpkg -r moat
lab_expect "moatd stopped on removal" "$(systemctl is-active moatd.service)" inactive
lab_check "no moatd process left" bash -c '! grep -qx moatd /proc/[0-9]*/comm'
ls -la /sys/fs/bpf
lab_check "the prerm's moatd --unload removed /sys/fs/bpf/moat" test ! -e /sys/fs/bpf/moat
no_moat_progs() { [[ $(moat_progs) == 0 ]]; }
lab_wait "no moat program loaded after removal" 30 no_moat_progs
lab_check "the unit is gone" test ! -e /lib/systemd/system/moatd.service
lab_check "configuration kept" grep -q '^# changed' /etc/moat/moatd.toml
lab_check "audit log kept" test -f /var/log/moat/audit.jsonl
# Purge: both gone.
lab_check "dpkg -P moat" dpkg -P moat
lab_check "/etc/moat deleted on purge" test ! -e /etc/moat
lab_check "/var/log/moat deleted on purge" test ! -e /var/log/moat
lab_check "the enablement is gone" test ! -e /etc/systemd/system/multi-user.target.wants/moatd.service
status=$(dpkg-query -W -f='${db:Status-Status}' moat 2>/dev/null)
lab_check "dpkg: moat is not installed (${status:-unknown})" test "${status:-not-installed}" = not-installed
left=$(while read -r f; do [[ -e $f && ! -d $f ]] && echo "$f"; done </tmp/moat.files)
lab_expect "none of the package's files left" "$left" ""
lab_check "still no pins" test ! -e /sys/fs/bpf/moat
lab_check "still no moat program loaded" no_moat_progs
