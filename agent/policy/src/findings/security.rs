//! Security options, capabilities and seccomp profiles, as the daemon reads
//! them (moby `daemon/daemon_unix.go` `parseSecurityOpt`, `oci/caps`,
//! `daemon/seccomp_linux.go`).

use super::{Finding, Kind};
use crate::caps;
use crate::gojson::{self, Obj};

/// Checks `SecurityOpt` entries. The daemon splits each on the first `=`
/// (or, when there is none, on the first `:`, the old form) and keeps the
/// last value per key; every entry is checked here, so an unconfined one
/// is reported even if a later one would replace it.
pub fn security_opts(opts: &[String], at: &str, out: &mut Vec<Finding>) {
    for (i, opt) in opts.iter().enumerate() {
        let at = format!("{at}[{i}]");
        if opt == "disable" {
            out.push(Finding::new(Kind::SelinuxDisabled, &at, opt.clone()));
            continue;
        }
        let split = if opt.contains('=') {
            opt.split_once('=')
        } else {
            opt.split_once(':')
        };
        let Some((key, value)) = split else { continue };
        match key {
            "label" if value == "disable" => {
                out.push(Finding::new(Kind::SelinuxDisabled, &at, opt.clone()))
            }
            "apparmor" if value == "unconfined" => {
                out.push(Finding::new(Kind::ApparmorUnconfined, &at, opt.clone()))
            }
            "seccomp" => seccomp_value(value, &at, out),
            _ => {}
        }
    }
}

/// A `seccomp=` value: `unconfined`, empty or `builtin` (the default
/// profile), or a whole profile inlined as JSON (what the CLI sends for
/// `--security-opt seccomp=FILE`).
fn seccomp_value(value: &str, at: &str, out: &mut Vec<Finding>) {
    match value {
        "unconfined" => out.push(Finding::new(
            Kind::SeccompUnconfined,
            at,
            "seccomp=unconfined",
        )),
        "" | "builtin" => {}
        json => inline_profile(json.as_bytes(), at, out),
    }
}

/// A custom profile is unconfined when its default action allows
/// (`SCMP_ACT_ALLOW`, or `SCMP_ACT_LOG` which allows and logs). Its rules
/// are not judged. A profile that does not decode is reported too: the
/// policy cannot tell what it would do.
pub fn inline_profile(json: &[u8], at: &str, out: &mut Vec<Finding>) {
    let parsed = gojson::parse(json)
        .map_err(|e| e.to_string())
        .and_then(|v| {
            Obj::root(&v)
                .and_then(|o| o.string("defaultAction"))
                .map_err(|e| e.to_string())
        });
    match parsed {
        Ok(action) if action == "SCMP_ACT_ALLOW" || action == "SCMP_ACT_LOG" => {
            out.push(Finding::new(
                Kind::SeccompUnconfined,
                at,
                format!("custom seccomp profile with defaultAction {action}"),
            ))
        }
        Ok(_) => {}
        Err(e) => out.push(Finding::new(
            Kind::SeccompUnconfined,
            at,
            format!("custom seccomp profile that does not decode ({e})"),
        )),
    }
}

/// Capabilities added beyond Docker's default set, by the daemon's name
/// for them.
pub fn cap_adds(list: &[String], at: &str, out: &mut Vec<Finding>) {
    for (i, cap) in list.iter().enumerate() {
        let name = caps::daemon_name(cap);
        if !caps::is_default(&name) {
            out.push(Finding::new(
                Kind::Capability(name.clone()),
                &format!("{at}[{i}]"),
                format!("adds {name}"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> Vec<Finding> {
        let mut out = Vec::new();
        let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        security_opts(&list, "SecurityOpt", &mut out);
        out
    }

    #[test]
    fn both_separators_and_last_value_semantics() {
        assert_eq!(
            opts(&["seccomp=unconfined"])[0].kind,
            Kind::SeccompUnconfined
        );
        assert_eq!(
            opts(&["seccomp:unconfined"])[0].kind,
            Kind::SeccompUnconfined
        );
        assert_eq!(
            opts(&["apparmor=unconfined"])[0].kind,
            Kind::ApparmorUnconfined
        );
        assert_eq!(
            opts(&["apparmor:unconfined"])[0].kind,
            Kind::ApparmorUnconfined
        );
        assert_eq!(opts(&["label=disable"])[0].kind, Kind::SelinuxDisabled);
        assert_eq!(opts(&["disable"])[0].kind, Kind::SelinuxDisabled);
        // `=` wins over `:`: this key is "seccomp:unconfined", which the
        // daemon refuses.
        assert!(opts(&["seccomp:unconfined=x"]).is_empty());
        // Keys and values are case-sensitive in the daemon.
        assert!(opts(&[
            "Seccomp=unconfined",
            "seccomp=builtin",
            "seccomp=",
            "no-new-privileges"
        ])
        .is_empty());
        assert_eq!(opts(&["seccomp=unconfined", "seccomp="]).len(), 1);
    }

    #[test]
    fn inline_profiles_are_judged_by_their_default_action() {
        assert!(opts(&[r#"seccomp={"defaultAction":"SCMP_ACT_ERRNO"}"#]).is_empty());
        let allow = opts(&[r#"seccomp={"DEFAULTACTION":"SCMP_ACT_ALLOW"}"#]);
        assert_eq!(allow[0].kind, Kind::SeccompUnconfined);
        assert!(allow[0].what.contains("SCMP_ACT_ALLOW"));
        let log =
            opts(&[r#"seccomp={"defaultAction":"SCMP_ACT_ERRNO","defaultaction":"SCMP_ACT_LOG"}"#]);
        assert_eq!(log.len(), 1);
        let bad = opts(&["seccomp={"]);
        assert!(bad[0].what.contains("does not decode"), "{}", bad[0]);
    }

    #[test]
    fn capabilities_outside_the_default_set() {
        let mut out = Vec::new();
        let list: Vec<String> = ["chown", "sys_admin", "ALL", "Net_Admin"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        cap_adds(&list, "CapAdd", &mut out);
        let names: Vec<String> = out.iter().map(|f| f.to_string()).collect();
        assert_eq!(
            names,
            [
                "CapAdd[1]: adds CAP_SYS_ADMIN",
                "CapAdd[2]: adds ALL",
                "CapAdd[3]: adds CAP_NET_ADMIN"
            ]
        );
    }
}
