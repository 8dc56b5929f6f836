# A real Prometheus (Debian's package and unit) scraping moatd on a node that
# systemd runs: the exact count of a known workload's denials reaches
# Prometheus's own query API, and the target is up.
#
# Run: scripts/lab-node.sh prometheus-scrape [--kernel 6.12]
# lab-packages: prometheus
# shellcheck shell=bash

lab_check "moat run works before moatd" moat run --name warmup -- true
systemd-run --unit=moatd-lab --description="moatd (kernel lab)" \
    /usr/local/bin/moatd --listen 127.0.0.1:9740 --audit-log /var/log/moat/audit.jsonl
lab_wait "moatd serves /metrics" 120 lab_http_get 127.0.0.1 9740 /metrics

# The packaged unit, with a configuration that scrapes moatd every second.
cat >/etc/prometheus/prometheus.yml <<'YAML'
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: moatd
    static_configs:
      - targets: ["127.0.0.1:9740"]
YAML
lab_check "systemctl restart prometheus" systemctl restart prometheus.service
lab_wait "Prometheus is ready" 120 lab_http_get 127.0.0.1 9090 /-/ready

cat >/tmp/getppid.json <<'JSON'
{"defaultAction": "SCMP_ACT_ALLOW",
 "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}
JSON
refused=$(moat run --name denials --seccomp-profile /tmp/getppid.json -- \
    perl -e 'my $n = 0; for (1 .. 1234) { $n++ if syscall(110) == -1 } print "$n\n"')
lab_expect "getppid calls the workload saw refused" "$refused" 1234

query() { lab_http_get 127.0.0.1 9090 "/api/v1/query?query=$1"; }
# sum(moat_seccomp_denials_total{workload="denials"}), URL-encoded.
scraped() { query 'sum(moat_seccomp_denials_total%7Bworkload%3D%22denials%22%7D)' | grep -q '"1234"\]'; }
lab_wait "Prometheus has sum(moat_seccomp_denials_total{workload=\"denials\"}) = 1234" 60 scraped
lab_value prometheus_denials "$(query 'sum(moat_seccomp_denials_total%7Bworkload%3D%22denials%22%7D)' |
    sed -n 's/.*"value":\[[^,]*,"\([0-9]*\)"\].*/\1/p')"
up() { query 'up%7Bjob%3D%22moatd%22%7D' | grep -q '"1"\]'; }
lab_check "up{job=\"moatd\"} is 1" up
lab_check "systemctl stop moatd-lab.service" systemctl stop moatd-lab.service
