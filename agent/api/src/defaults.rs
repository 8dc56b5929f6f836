//! Default addresses and paths, shared by moatd (its configuration defaults) and
//! the `moat` CLI (where it looks for moatd).

/// Where moatd reads its configuration when `--config` is not given.
pub const CONFIG_PATH: &str = "/etc/moat/moatd.toml";

/// moatd's default HTTP port.
pub const PORT: u16 = 9740;

/// moatd's default `http.listen` address.
pub const LISTEN: &str = "127.0.0.1:9740";

/// moatd's default metrics URL, as the CLI reaches it.
pub const AGENT_URL: &str = "http://127.0.0.1:9740/metrics";

/// moatd's default audit log (`audit.log`), which `moat events` reads.
pub const AUDIT_LOG: &str = "/var/log/moat/audit.jsonl";

/// The cgroup under which `moat run` places workloads by default (its
/// `--cgroup-parent`), and under which moatd looks for them
/// (`workloads.moat_parent`), relative to each hierarchy's root.
pub const CGROUP_PARENT: &str = "moat";

/// The slice under which `moat run` places each workload as a transient
/// scope `moat-<name>.scope` with the systemd cgroup manager, and under
/// which moatd recognises those scopes as workload `<name>`.
pub const MOAT_SLICE: &str = "moat.slice";

/// The prefix of a workload's scope unit: `moat-<name>.scope`.
pub const MOAT_SCOPE_PREFIX: &str = "moat-";

/// The workload's own cgroup in its scope (`moat-<name>.scope/payload`);
/// the scope's other leaf, `supervisor`, holds moat's keeper.
pub const MOAT_SCOPE_PAYLOAD: &str = "payload";

/// The cgroup Docker's cgroupfs driver places containers under.
pub const DOCKER_PARENT: &str = "docker";

/// The slice Docker's systemd driver places containers' scopes
/// (`docker-<id>.scope`) under.
pub const DOCKER_SCOPE_PARENT: &str = "system.slice";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_and_listen_address_agree_with_the_port() {
        assert_eq!(LISTEN, format!("127.0.0.1:{PORT}"));
        assert_eq!(AGENT_URL, format!("http://{LISTEN}/metrics"));
    }
}
