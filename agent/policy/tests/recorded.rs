//! The built-in baseline against requests recorded from dockerd 20.10.24 and
//! the Docker CLI: each rule denies its recorded request, by name, and the
//! same request without the offending option is allowed.

mod common;

use common::{assert_allowed, assert_denied, edited, recorded};
use moat_policy::endpoint::Endpoint;
use moat_policy::{baseline, evaluate};
use serde_json::{json, Value};

type Edit = fn(&mut Value);

/// (recorded request, rule that denies it, a fragment of its message, the
/// edit that removes the offending option).
const TABLE: &[(&str, &str, &str, Edit)] = &[
    (
        "create-privileged",
        "privileged",
        "HostConfig.Privileged: true",
        |b| b["HostConfig"]["Privileged"] = json!(false),
    ),
    (
        "create-seccomp-unconfined",
        "seccomp-unconfined",
        "seccomp=unconfined",
        |b| b["HostConfig"]["SecurityOpt"] = Value::Null,
    ),
    (
        "create-apparmor-unconfined",
        "apparmor-unconfined",
        "apparmor=unconfined",
        |b| b["HostConfig"]["SecurityOpt"] = Value::Null,
    ),
    (
        "create-label-disable",
        "selinux-disabled",
        "label=disable",
        |b| b["HostConfig"]["SecurityOpt"] = Value::Null,
    ),
    (
        "create-systempaths",
        "systempaths-unconfined",
        "leaves out /proc/asound",
        |b| {
            b["HostConfig"]["MaskedPaths"] = Value::Null;
            b["HostConfig"]["ReadonlyPaths"] = Value::Null;
        },
    ),
    (
        "create-cap-add",
        "capabilities",
        "adds CAP_SYS_ADMIN",
        |b| b["HostConfig"]["CapAdd"] = Value::Null,
    ),
    (
        "create-pid-host",
        "host-namespaces",
        "HostConfig.PidMode: host",
        |b| b["HostConfig"]["PidMode"] = json!(""),
    ),
    (
        "create-network-host",
        "host-namespaces",
        "HostConfig.NetworkMode: host",
        |b| b["HostConfig"]["NetworkMode"] = json!("default"),
    ),
    (
        "create-userns-host",
        "host-userns",
        "HostConfig.UsernsMode: host",
        |b| b["HostConfig"]["UsernsMode"] = json!(""),
    ),
    (
        "create-bind-etc",
        "host-paths",
        "HostConfig.Binds[0]: host path \"/etc\"",
        |b| b["HostConfig"]["Binds"] = Value::Null,
    ),
    (
        "create-mount-docker-sock",
        "host-paths",
        "HostConfig.Mounts[0].Source: host path \"/var/run/docker.sock\"",
        |b| b["HostConfig"]["Mounts"] = json!([]),
    ),
    (
        "create-device",
        "host-devices",
        "host device \"/dev/null\"",
        |b| b["HostConfig"]["Devices"] = json!([]),
    ),
    (
        "create-device-cgroup-rule",
        "host-devices",
        "device cgroup rule \"a *:* rwm\"",
        |b| b["HostConfig"]["DeviceCgroupRules"] = Value::Null,
    ),
    (
        "create-pids-unlimited",
        "pids-unlimited",
        "HostConfig.PidsLimit: -1",
        |b| b["HostConfig"]["PidsLimit"] = json!(0),
    ),
    (
        "update-pids-unlimited",
        "pids-unlimited",
        "PidsLimit: -1",
        |b| b["PidsLimit"] = json!(100),
    ),
    ("exec-privileged", "privileged", "Privileged: true", |b| {
        b["Privileged"] = json!(false)
    }),
    (
        "volume-bind-etc",
        "host-paths",
        "DriverOpts.device: host path \"/etc\"",
        |b| b["DriverOpts"] = json!({}),
    ),
    (
        "service-bind-root",
        "host-paths",
        "TaskTemplate.ContainerSpec.Mounts[0].Source: host path \"/\"",
        |b| {
            b["TaskTemplate"]["ContainerSpec"]
                .as_object_mut()
                .unwrap()
                .remove("Mounts");
        },
    ),
    (
        "service-cap-add",
        "capabilities",
        "adds CAP_SYS_ADMIN",
        |b| {
            b["TaskTemplate"]["ContainerSpec"]
                .as_object_mut()
                .unwrap()
                .remove("CapabilityAdd");
        },
    ),
];

#[test]
fn each_baseline_rule_denies_its_recorded_request_and_allows_it_without_the_option() {
    let policy = baseline();
    for (name, rule, needle, edit) in TABLE {
        let denied = evaluate(&policy, &recorded(name));
        assert_denied(&denied, rule, needle);
        let fixed = evaluate(&policy, &edited(name, *edit));
        assert!(fixed.allow, "{name} without the option: {fixed:?}");
    }
}

#[test]
fn plugin_management_and_swarm_join_are_denied_by_endpoint() {
    let policy = baseline();
    for (name, ep) in [
        ("plugin-disable", Endpoint::PluginDisable),
        ("plugin-enable", Endpoint::PluginEnable),
        ("plugin-set", Endpoint::PluginSet),
        ("plugin-rm", Endpoint::PluginRemove),
    ] {
        let d = evaluate(&policy, &recorded(name));
        assert_denied(&d, "plugins", "plugin");
        assert_eq!(d.endpoint, Some(ep), "{name}");
    }
    assert_denied(
        &evaluate(&policy, &recorded("swarm-join")),
        "swarm-join",
        "joining a swarm",
    );
    assert_allowed(&evaluate(&policy, &recorded("plugin-ls")));
    assert_allowed(&evaluate(&policy, &recorded("info")));
}

#[test]
fn ordinary_requests_are_allowed() {
    let policy = baseline();
    for name in [
        "create-plain",
        "create-bind-ok",
        "create-cap-add-default",
        "create-pids-limited",
        "create-seccomp-file",
        "update-pids-limited",
        "exec-plain",
        "volume-plain",
        "service-plain",
        "start-plain",
    ] {
        let d = evaluate(&policy, &recorded(name));
        assert!(d.allow, "{name}: {d:?}");
    }
    let d = evaluate(&policy, &recorded("create-plain"));
    assert_eq!(d.endpoint_label(), "containers/create");
    assert_eq!(
        serde_json::to_string(&d.to_response()).unwrap(),
        r#"{"Allow":true}"#
    );
    let d = evaluate(&policy, &recorded("create-privileged"));
    assert_eq!(
        serde_json::to_string(&d.to_response()).unwrap(),
        r#"{"Allow":false,"Msg":"privileged containers and privileged exec are not allowed on this node (HostConfig.Privileged: true) [rule: privileged]"}"#
    );
}

#[test]
fn the_resolved_configuration_is_judged_at_start() {
    let policy = baseline();
    assert_allowed(&moat_policy::evaluate_inspect(
        &policy,
        "",
        &common::inspect("inspect-plain"),
    ));
    let d = moat_policy::evaluate_inspect(&policy, "", &common::inspect("inspect-privileged"));
    assert_denied(&d, "privileged", "HostConfig.Privileged: true");
    assert_eq!(d.endpoint, Some(Endpoint::ContainerStart));
    // seccomp is the first of its three violations in rule order.
    let d = moat_policy::evaluate_inspect(&policy, "", &common::inspect("inspect-bind-etc"));
    assert_denied(&d, "seccomp-unconfined", "seccomp=unconfined");
}
