//! Swarm service specs (`POST /services/create`, `/services/{id}/update`).
//! A service's tasks are started by the swarm executor, which never asks
//! the plugin, so the spec is the only place to judge them.

use super::mounts::mounts;
use super::security::{cap_adds, inline_profile};
use super::{Finding, Kind, Namespace};
use crate::gojson::{DecodeError, Obj};

/// Everything the policy reads from a `swarm.ServiceSpec`. The
/// `Privileges.Seccomp`, `.AppArmor` fields are those of API 1.44 and later;
/// 20.10 ignores them, and reading them costs nothing.
pub fn service_spec(root: &Obj, out: &mut Vec<Finding>) -> Result<(), DecodeError> {
    let tt = root.obj("TaskTemplate")?;
    if let Some(cs) = tt.ptr_obj("ContainerSpec")? {
        if let Some(p) = cs.ptr_obj("Privileges")? {
            privileges(&p, out)?;
        }
        if let Some(caps) = cs.strings("CapabilityAdd")? {
            cap_adds(&caps, &cs.field_path("CapabilityAdd"), out);
        }
        if let Some(list) = cs.objs("Mounts")? {
            mounts(&list, out)?;
        }
    }
    if let Some(limits) = tt
        .ptr_obj("Resources")?
        .map(|r| r.ptr_obj("Limits"))
        .transpose()?
        .flatten()
    {
        let pids = limits.i64("Pids")?;
        if pids < 0 {
            out.push(Finding::new(
                Kind::PidsUnlimited,
                &limits.field_path("Pids"),
                pids.to_string(),
            ));
        }
    }
    // The host network by name; a network ID is not resolved here.
    for holder in [&tt, root] {
        for n in holder.objs("Networks")?.unwrap_or_default() {
            let target = n.string("Target")?;
            if target.eq_ignore_ascii_case("host") {
                out.push(Finding::new(
                    Kind::HostNamespace(Namespace::Network),
                    &n.field_path("Target"),
                    target,
                ));
            }
        }
    }
    let runtime = tt.string("Runtime")?;
    if tt.ptr_obj("PluginSpec")?.is_some() || runtime.eq_ignore_ascii_case("plugin") {
        out.push(Finding::new(
            Kind::Plugin,
            &tt.field_path("PluginSpec"),
            "a plugin service (installs a managed plugin on every node)",
        ));
    }
    Ok(())
}

fn privileges(p: &Obj, out: &mut Vec<Finding>) -> Result<(), DecodeError> {
    if let Some(se) = p.ptr_obj("SELinuxContext")? {
        if se.bool("Disable")? {
            out.push(Finding::new(
                Kind::SelinuxDisabled,
                &se.field_path("Disable"),
                "true",
            ));
        }
    }
    if let Some(sc) = p.ptr_obj("Seccomp")? {
        let mode = sc.string("Mode")?;
        let at = sc.field_path("Mode");
        if mode.eq_ignore_ascii_case("unconfined") {
            out.push(Finding::new(Kind::SeccompUnconfined, &at, mode));
        } else if mode.eq_ignore_ascii_case("custom") {
            let profile = sc.bytes("Profile")?.unwrap_or_default();
            inline_profile(&profile, &sc.field_path("Profile"), out);
        }
    }
    if let Some(aa) = p.ptr_obj("AppArmor")? {
        let mode = aa.string("Mode")?;
        if mode.eq_ignore_ascii_case("disabled") {
            out.push(Finding::new(
                Kind::ApparmorUnconfined,
                &aa.field_path("Mode"),
                mode,
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gojson::parse;

    fn spec(json: &str) -> Vec<String> {
        let v = parse(json.as_bytes()).unwrap();
        let mut out = Vec::new();
        service_spec(&Obj::root(&v).unwrap(), &mut out).unwrap();
        out.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn reads_privileges_caps_mounts_pids_networks_and_plugins() {
        let got = spec(
            r#"{"Name":"s","TaskTemplate":{"ContainerSpec":{"Image":"x",
            "Privileges":{"SELinuxContext":{"Disable":true},"Seccomp":{"Mode":"unconfined"},
                          "AppArmor":{"Mode":"disabled"}},
            "CapabilityAdd":["CAP_SYS_ADMIN"],"Mounts":[{"Type":"bind","Source":"/var/run/docker.sock"}]},
            "Resources":{"Limits":{"Pids":-1}},"Networks":[{"Target":"host"}]},
            "Networks":[{"Target":"HOST"}]}"#,
        );
        assert_eq!(got.len(), 8, "{got:#?}");
        assert!(got.contains(&"TaskTemplate.Resources.Limits.Pids: -1".to_string()));
        assert!(got.contains(&"Networks[0].Target: HOST".to_string()));
    }

    #[test]
    fn custom_seccomp_profiles_travel_as_base64() {
        // {"defaultAction":"SCMP_ACT_ALLOW"}
        let got = spec(
            r#"{"TaskTemplate":{"ContainerSpec":{"Privileges":{"Seccomp":{"Mode":"custom",
            "Profile":"eyJkZWZhdWx0QWN0aW9uIjoiU0NNUF9BQ1RfQUxMT1cifQ=="}}}}}"#,
        );
        assert_eq!(got.len(), 1);
        assert!(got[0].contains("SCMP_ACT_ALLOW"), "{got:?}");
    }

    #[test]
    fn a_plain_service_has_no_findings() {
        assert!(spec(
            r#"{"TaskTemplate":{"ContainerSpec":{"Image":"x","Mounts":[{"Type":"volume","Source":"v"}]},
            "Resources":{"Limits":{"Pids":100}}}}"#
        )
        .is_empty());
    }
}
