//! Container bodies: create (and start before API 1.24), update, exec, and
//! the daemon's own view of a container (`GET /containers/{id}/json`).

use super::mounts::{binds, mounts};
use super::security::{cap_adds, security_opts};
use super::{Finding, Kind, Namespace};
use crate::gojson::{DecodeError, Obj};

/// The paths Docker masks in every unprivileged container (moby
/// `oci/defaults.go`, 20.10).
pub const DEFAULT_MASKED_PATHS: [&str; 10] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];

/// The paths Docker makes read-only in every unprivileged container.
pub const DEFAULT_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Whether a HostConfig is what a client asked for or what the daemon
/// resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostConfigMode {
    /// From a request body: a negative `PidsLimit` is an explicit
    /// "unlimited" (0 means the default).
    Request,
    /// From `GET /containers/{id}/json`: the daemon has replaced a create's
    /// -1 by null, so a stored value <= 0 can only come from an update to
    /// "unlimited". `CgroupnsMode` is not judged: the daemon stores its own
    /// default there (`host` on cgroup v1 hosts), indistinguishable from a
    /// request.
    Inspect,
}

const NAMESPACE_FIELDS: [(&str, Namespace); 6] = [
    ("PidMode", Namespace::Pid),
    ("IpcMode", Namespace::Ipc),
    ("UTSMode", Namespace::Uts),
    ("CgroupnsMode", Namespace::Cgroup),
    ("UsernsMode", Namespace::User),
    ("NetworkMode", Namespace::Network),
];

/// Everything the policy reads from a `container.HostConfig`.
pub fn host_config(
    hc: &Obj,
    mode: HostConfigMode,
    out: &mut Vec<Finding>,
) -> Result<(), DecodeError> {
    if hc.bool("Privileged")? {
        out.push(Finding::new(
            Kind::Privileged,
            &hc.field_path("Privileged"),
            "true",
        ));
    }
    if let Some(opts) = hc.strings("SecurityOpt")? {
        security_opts(&opts, &hc.field_path("SecurityOpt"), out);
    }
    if let Some(caps) = hc.str_slice("CapAdd")? {
        cap_adds(&caps, &hc.field_path("CapAdd"), out);
    }
    // API 1.40 only (19.03): the whole capability set, replacing the default.
    if let Some(caps) = hc.strings("Capabilities")? {
        cap_adds(&caps, &hc.field_path("Capabilities"), out);
    }
    for (field, ns) in NAMESPACE_FIELDS {
        if mode == HostConfigMode::Inspect && ns == Namespace::Cgroup {
            continue;
        }
        // The daemon compares with "host" exactly; any case is reported.
        let v = hc.string(field)?;
        if v.eq_ignore_ascii_case("host") {
            out.push(Finding::new(
                Kind::HostNamespace(ns),
                &hc.field_path(field),
                v,
            ));
        }
    }
    for (field, defaults) in [
        ("MaskedPaths", &DEFAULT_MASKED_PATHS[..]),
        ("ReadonlyPaths", &DEFAULT_READONLY_PATHS[..]),
    ] {
        // null means the defaults; an explicit list replaces them.
        if let Some(list) = hc.strings(field)? {
            let listed: Vec<String> = list.iter().map(|p| super::mounts::host_path(p)).collect();
            let missing: Vec<&str> = defaults
                .iter()
                .filter(|d| !listed.iter().any(|l| l == *d))
                .copied()
                .collect();
            if !missing.is_empty() {
                out.push(Finding::new(
                    Kind::SystemPaths,
                    &hc.field_path(field),
                    format!("leaves out {}", missing.join(", ")),
                ));
            }
        }
    }
    if let Some(list) = hc.strings("Binds")? {
        binds(&list, &hc.field_path("Binds"), out);
    }
    if let Some(list) = hc.objs("Mounts")? {
        mounts(&list, out)?;
    }
    devices(hc, out)?;
    if let Some(limit) = hc.ptr_i64("PidsLimit")? {
        let unlimited = match mode {
            HostConfigMode::Request => limit < 0,
            HostConfigMode::Inspect => limit <= 0,
        };
        if unlimited {
            out.push(Finding::new(
                Kind::PidsUnlimited,
                &hc.field_path("PidsLimit"),
                limit.to_string(),
            ));
        }
    }
    Ok(())
}

fn devices(hc: &Obj, out: &mut Vec<Finding>) -> Result<(), DecodeError> {
    for d in hc.objs("Devices")?.unwrap_or_default() {
        let host = d.string("PathOnHost")?;
        out.push(Finding::new(
            Kind::HostDevice,
            d.path(),
            format!("host device {host:?}"),
        ));
    }
    let rules = hc.strings("DeviceCgroupRules")?.unwrap_or_default();
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("{}[{i}]", hc.field_path("DeviceCgroupRules"));
        out.push(Finding::new(
            Kind::HostDevice,
            &at,
            format!("device cgroup rule {rule:?}"),
        ));
    }
    for d in hc.objs("DeviceRequests")?.unwrap_or_default() {
        let driver = d.string("Driver")?;
        out.push(Finding::new(
            Kind::HostDevice,
            d.path(),
            format!("device request (driver {driver:?})"),
        ));
    }
    Ok(())
}

/// `POST /containers/create` (and `containers/{id}/start` before API 1.24,
/// which decodes the same wrapper). The daemon uses the `HostConfig` object
/// when it is there, and otherwise the deprecated top-level copies of its
/// fields (`{"Image":"x","Privileged":true}` is privileged); both are read.
pub fn create_body(root: &Obj, out: &mut Vec<Finding>) -> Result<(), DecodeError> {
    if let Some(hc) = root.ptr_obj("HostConfig")? {
        host_config(&hc, HostConfigMode::Request, out)?;
    }
    host_config(root, HostConfigMode::Request, out)
}

/// `POST /containers/{id}/update`: from API 1.40 on, `PidsLimit` 0 or
/// below makes the container unlimited (before 1.40 it is ignored).
pub fn update_body(
    root: &Obj,
    api_below_1_40: bool,
    out: &mut Vec<Finding>,
) -> Result<(), DecodeError> {
    if let Some(limit) = root.ptr_i64("PidsLimit")? {
        if !api_below_1_40 && limit <= 0 {
            out.push(Finding::new(
                Kind::PidsUnlimited,
                "PidsLimit",
                limit.to_string(),
            ));
        }
    }
    Ok(())
}

/// `POST /containers/{id}/exec`.
pub fn exec_body(root: &Obj, out: &mut Vec<Finding>) -> Result<(), DecodeError> {
    if root.bool("Privileged")? {
        out.push(Finding::new(Kind::Privileged, "Privileged", "true"));
    }
    Ok(())
}

/// `GET /containers/{id}/json`: the resolved configuration. Besides its
/// HostConfig, the resolved `Mounts` (binds with their host `Source`) and
/// `AppArmorProfile` are read.
///
/// The daemon adds `label=disable` itself for privileged containers and
/// for host pid or ipc namespaces, and sets `AppArmorProfile` to
/// `unconfined` for privileged ones: those are judged by the rules on
/// privileged mode and namespaces (so that an exception to them holds at
/// start too), not as SELinux or AppArmor findings of their own.
pub fn inspect(root: &Obj, out: &mut Vec<Finding>) -> Result<(), DecodeError> {
    let mut privileged = false;
    if let Some(hc) = root.ptr_obj("HostConfig")? {
        privileged = hc.bool("Privileged")?;
        let shares = |f| hc.string(f).map(|m| m.eq_ignore_ascii_case("host"));
        let daemon_label = privileged || shares("PidMode")? || shares("IpcMode")?;
        let mut found = Vec::new();
        host_config(&hc, HostConfigMode::Inspect, &mut found)?;
        found.retain(|f| !(daemon_label && f.kind == Kind::SelinuxDisabled));
        out.extend(found);
    }
    for m in root.objs("Mounts")?.unwrap_or_default() {
        if m.string("Type")? == "bind" {
            let src = m.string("Source")?;
            let p = super::mounts::host_path(&src);
            out.push(Finding::new(
                Kind::HostPath(p.clone()),
                &m.field_path("Source"),
                format!("host path {p:?}"),
            ));
        }
    }
    if !privileged && root.string("AppArmorProfile")? == "unconfined" {
        out.push(Finding::new(
            Kind::ApparmorUnconfined,
            "AppArmorProfile",
            "unconfined",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gojson::parse;

    fn create(json: &str) -> Vec<String> {
        let v = parse(json.as_bytes()).unwrap();
        let mut out = Vec::new();
        create_body(&Obj::root(&v).unwrap(), &mut out).unwrap();
        out.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn deprecated_top_level_host_config_fields_count() {
        assert_eq!(
            create(r#"{"Image":"x","Privileged":true}"#),
            ["Privileged: true"]
        );
        assert_eq!(
            create(r#"{"Image":"x","HostConfig":{"privileged":true}}"#),
            ["HostConfig.Privileged: true"]
        );
        assert_eq!(
            create(r#"{"Image":"x","HostConfig":{},"PidsLimit":-1}"#),
            ["PidsLimit: -1"]
        );
    }

    #[test]
    fn everything_a_host_config_can_ask_for() {
        let got = create(
            r#"{"HostConfig":{"Privileged":true,"SecurityOpt":["seccomp=unconfined"],
            "CapAdd":"sys_admin","PidMode":"host","IpcMode":"HOST","CgroupnsMode":"host",
            "UTSMode":"host","UsernsMode":"host","NetworkMode":"host","MaskedPaths":[],
            "ReadonlyPaths":["/proc/bus","/proc/fs","/proc/irq","/proc/sys/","/proc/sysrq-trigger"],
            "Binds":["/:/h"],"Mounts":[{"Type":"bind","Source":"/etc"}],
            "Devices":[{"PathOnHost":"/dev/sda"}],"DeviceCgroupRules":["a *:* rwm"],
            "DeviceRequests":[{"Driver":"nvidia"}],"PidsLimit":-2}}"#,
        );
        assert_eq!(got.len(), 16, "{got:#?}");
        assert!(got.contains(&"HostConfig.IpcMode: HOST".to_string()));
        assert!(got
            .iter()
            .any(|g| g.starts_with("HostConfig.MaskedPaths: leaves out /proc/asound")));
        // A trailing slash is the same path: ReadonlyPaths is complete.
        assert!(!got
            .iter()
            .any(|g| g.starts_with("HostConfig.ReadonlyPaths")));
        assert!(got.contains(&"HostConfig.PidsLimit: -2".to_string()));
    }

    #[test]
    fn defaults_and_zero_are_not_findings() {
        assert!(create(
            r#"{"HostConfig":{"MaskedPaths":null,"PidsLimit":0,"NetworkMode":"bridge",
            "PidMode":"container:x","CapAdd":["CHOWN"],"Binds":["v:/d"]}}"#
        )
        .is_empty());
    }

    #[test]
    fn update_zero_is_unlimited_from_api_1_40() {
        let v = parse(br#"{"PidsLimit":0}"#).unwrap();
        let root = Obj::root(&v).unwrap();
        let mut out = Vec::new();
        update_body(&root, true, &mut out).unwrap();
        assert!(out.is_empty());
        update_body(&root, false, &mut out).unwrap();
        assert_eq!(out[0].kind, Kind::PidsUnlimited);
    }

    #[test]
    fn inspect_leaves_the_daemons_own_consequences_of_privileged_to_that_rule() {
        let v = parse(
            br#"{"HostConfig":{"Privileged":true,"SecurityOpt":["label=disable"]},
            "AppArmorProfile":"unconfined"}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        inspect(&Obj::root(&v).unwrap(), &mut out).unwrap();
        let kinds: Vec<&Kind> = out.iter().map(|f| &f.kind).collect();
        assert_eq!(kinds, [&Kind::Privileged]);
        let v = parse(
            br#"{"HostConfig":{"SecurityOpt":["label=disable"]},"AppArmorProfile":"unconfined"}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        inspect(&Obj::root(&v).unwrap(), &mut out).unwrap();
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn inspect_reads_resolved_mounts_and_ignores_the_cgroupns_default() {
        let v = parse(
            br#"{"HostConfig":{"CgroupnsMode":"host","PidsLimit":null,"MaskedPaths":null},
            "Mounts":[{"Type":"volume","Source":"/var/lib/docker/volumes/v/_data"},
                      {"Type":"bind","Source":"/run/docker.sock"}],"AppArmorProfile":"docker-default"}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        inspect(&Obj::root(&v).unwrap(), &mut out).unwrap();
        let got: Vec<String> = out.iter().map(|f| f.to_string()).collect();
        assert_eq!(got, [r#"Mounts[1].Source: host path "/run/docker.sock""#]);
    }
}
