//! Capability names as the Docker daemon reads them.
//!
//! The tables are the node's one copy: `moat_runtime::caps` re-exports
//! them (the runtime crate links this one).

use crate::gojson::go_upper_ascii;

/// Every capability the kernel knows, in kernel numbering order
/// (`include/uapi/linux/capability.h`).
pub const ALL_CAPS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Docker's default capability set (moby `oci/caps/defaults.go`, 20.10).
pub const DOCKER_DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The name the daemon makes of a `CapAdd` entry
/// (`caps.NormalizeLegacyCapabilities`): Go's `strings.ToUpper`, `ALL`
/// kept, otherwise `CAP_` prefixed when missing. An unknown result is
/// returned as it is (the daemon refuses it).
pub fn daemon_name(cap: &str) -> String {
    let upper = go_upper_ascii(cap);
    if upper == "ALL" || upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

/// Whether the daemon grants `name` (as [`daemon_name`] returns it) by
/// default.
pub fn is_default(name: &str) -> bool {
    DOCKER_DEFAULT_CAPS.contains(&name)
}

/// A name written in a policy file: case-insensitive, `CAP_` optional,
/// `ALL` allowed. `Err` carries the closest known name, if any.
pub fn policy_name(text: &str) -> Result<String, Option<&'static str>> {
    let upper = text.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(upper);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if ALL_CAPS.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(crate::suggest::closest(&full, ALL_CAPS.iter().copied()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_names_as_normalize_legacy_capabilities() {
        for spelling in [
            "sys_admin",
            "CAP_SYS_ADMIN",
            "Sys_Admin",
            "cap_sys_admin",
            "\u{17F}ys_admin",
        ] {
            assert_eq!(daemon_name(spelling), "CAP_SYS_ADMIN", "{spelling}");
        }
        assert_eq!(daemon_name("all"), "ALL");
        assert_eq!(daemon_name("net_adm\u{131}n"), "CAP_NET_ADMIN");
        assert!(is_default(&daemon_name("chown")));
        assert!(!is_default(&daemon_name("\u{212A}ill")));
    }

    #[test]
    fn policy_names_are_validated_with_a_suggestion() {
        assert_eq!(policy_name("net_admin").unwrap(), "CAP_NET_ADMIN");
        assert_eq!(policy_name("all").unwrap(), "ALL");
        assert_eq!(policy_name("SYS_AMDIN"), Err(Some("CAP_SYS_ADMIN")));
        assert_eq!(policy_name("banana"), Err(None));
    }
}
