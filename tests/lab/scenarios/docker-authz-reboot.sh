# moat's Docker authorization plugin on a node that boots with it: docker.io
# and moat's Debian package installed, the plugin turned on as README.md
# ("Docker authorization plugin") says ([authz] enabled = true in moatd.toml,
# moatd-authz.socket enabled, docker.service's drop-in, "authorization-plugins":
# ["moat"] in /etc/docker/daemon.json), then the node is rebooted (lab_reboot):
# after the boot dockerd is active with the plugin in force, and the first
# `docker run --privileged` is denied by it (at the create request, before
# any image is looked for or pulled: the node has no image and no network).
#
# Run: scripts/package-deb.sh --bin-dir target/debug --out target/deb &&
#      scripts/lab-node.sh docker-authz-reboot --debug \
#        --install scripts/lab/install/deb.sh --file target/deb/moat_0.1.0_amd64.deb
# lab-packages: docker.io
# shellcheck shell=bash

if ((LAB_PHASE == 1)); then
    lab_expect "moat is installed" "$(dpkg-query -W -f='${Status}' moat)" "install ok installed"
    lab_expect "docker.io is installed" "$(dpkg-query -W -f='${Status}' docker.io)" "install ok installed"
    lab_expect "docker.service enabled by its package" "$(systemctl is-enabled docker.service)" enabled

    # moatd.toml: [authz] enabled = true (the package's file has the section,
    # with enabled = false).
    sed -i '/^\[authz\]/,/^\[/ s/^enabled = false$/enabled = true/' /etc/moat/moatd.toml
    lab_check "[authz] enabled = true in /etc/moat/moatd.toml" \
        bash -c "sed -n '/^\[authz\]/,/^\[/p' /etc/moat/moatd.toml | grep -qx 'enabled = true'"
    lab_check "moatd --check-config" bash -c 'moatd --check-config >/tmp/check-config.log 2>&1'
    lab_check "systemctl enable moatd-authz.socket" systemctl enable moatd-authz.socket
    # The drop-in the package ships as an example (it changes docker.service).
    dropin=/usr/share/doc/moat/examples/systemd/docker.service.d/moat-authz.conf
    lab_check "the package ships the docker.service drop-in" test -f "$dropin"
    install -D -m 0644 "$dropin" /etc/systemd/system/docker.service.d/moat-authz.conf
    # The plugin, and what dockerd needs on this node: it has no network and
    # no kernel modules (no bridge, no iptables, no overlay filesystem).
    mkdir -p /etc/docker
    cat >/etc/docker/daemon.json <<'JSON'
{
  "authorization-plugins": ["moat"],
  "bridge": "none",
  "iptables": false,
  "ip6tables": false,
  "storage-driver": "vfs"
}
JSON
    systemctl daemon-reload
    lab_expect "docker.service requires the plugin's socket" \
        "$(systemctl show -P Requires docker.service | tr ' ' '\n' | grep -x moatd-authz.socket)" moatd-authz.socket
    cat /proc/sys/kernel/random/boot_id >/root/lab-boot-id
    lab_reboot
fi

# After the reboot.
lab_check "a new boot (boot_id changed), the root disk kept" \
    test "$(cat /proc/sys/kernel/random/boot_id)" != "$(cat /root/lab-boot-id)"
lab_expect "PID 1" "$(cat /proc/1/comm)" systemd
lab_expect "booted with the plugin enabled: moatd-authz.socket" "$(systemctl is-active moatd-authz.socket)" active
docker_up() { systemctl is-active -q docker.service && docker info >/dev/null 2>&1; }
lab_wait "dockerd is active and answers" 300 docker_up
lab_expect "dockerd's authorization plugins" "$(docker info --format '{{.Plugins.Authorization}}')" "[moat]"
lab_expect "moatd.service" "$(systemctl is-active moatd.service)" active
lab_expect "no image on the node" "$(docker images -q | wc -l)" 0

# The first `docker run --privileged` after the boot.
out=$(docker run --privileged --network none lab/none:latest true 2>&1)
rc=$?
echo "$out"
lab_expect "docker run --privileged: exit status" "$rc" 125
lab_check "denied by the plugin: $out" grep -q "authorization denied by plugin moat: .*\[rule: privileged\]" <<<"$out"
lab_expect "still no image (nothing was pulled)" "$(docker images -q | wc -l)" 0
lab_expect "no container was created" "$(docker ps -aq | wc -l)" 0
lab_check "an authz_denied audit event with rule privileged" \
    grep -q '"action":"authz_denied".*"rule":"privileged"\|"rule":"privileged".*"action":"authz_denied"' /var/log/moat/audit.jsonl
denied=$(lab_http_get 127.0.0.1 9740 /metrics | lab_metric moat_authz_requests_total decision=deny)
lab_expect "moat_authz_requests_total{decision=deny}" "$denied" 1
# A request the policy allows goes through.
lab_check "docker volume create (allowed)" docker volume create lab-allowed
