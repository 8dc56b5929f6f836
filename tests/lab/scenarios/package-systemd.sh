# moat's Debian package on a node that systemd runs: the postinst enables and
# starts moatd, which is Type=notify (READY=1 once its programs are attached
# and /metrics answers, a STATUS= line in systemctl status); a moatd that stops
# pinging the watchdog is killed and restarted by systemd; removal stops it
# and keeps the configuration and the audit log; purge deletes them.
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

# Remove: stopped, configuration and audit log kept.
echo '# changed' >>/etc/moat/moatd.toml
lab_check "an audit log exists" test -f /var/log/moat/audit.jsonl
lab_check "dpkg -r moat" dpkg -r moat
lab_expect "moatd stopped on removal" "$(systemctl is-active moatd.service)" inactive
lab_check "no moatd process left" bash -c '! grep -qx moatd /proc/[0-9]*/comm'
lab_check "the unit is gone" test ! -e /lib/systemd/system/moatd.service
lab_check "configuration kept" grep -q '^# changed' /etc/moat/moatd.toml
lab_check "audit log kept" test -f /var/log/moat/audit.jsonl
# Purge: both gone.
lab_check "dpkg -P moat" dpkg -P moat
lab_check "/etc/moat deleted on purge" test ! -e /etc/moat
lab_check "/var/log/moat deleted on purge" test ! -e /var/log/moat
lab_check "the enablement is gone" test ! -e /etc/systemd/system/multi-user.target.wants/moatd.service
