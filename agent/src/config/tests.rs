use std::path::Path;

use super::*;
use crate::kernel::KernelConfig;

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(text, Path::new("/etc/moat/moatd.toml")).map_err(|e| e.to_string())
}

#[test]
fn empty_file_is_defaults() {
    assert_eq!(parse("").unwrap(), Config::default());
    assert_eq!(parse("[audit]\n").unwrap(), Config::default());
}

#[test]
fn wrong_type_names_file_key_and_reason() {
    assert_eq!(
        parse("[audit]\nrate_limit = \"x\"\n").unwrap_err(),
        "/etc/moat/moatd.toml: audit.rate_limit: invalid type: string \"x\", expected u32"
    );
}

#[test]
fn unknown_key_gets_a_suggestion() {
    let err = parse("[audit]\nrate_limt = 5\n").unwrap_err();
    assert!(
        err.starts_with(
            "/etc/moat/moatd.toml: audit.rate_limt: unknown key; did you mean `rate_limit`?"
        ),
        "{err}"
    );
    let err = parse("listen = \"127.0.0.1:1\"\n").unwrap_err();
    assert!(
        err.starts_with(
            "/etc/moat/moatd.toml: listen: unknown key; did you mean `listen` in section `[http]`?"
        ),
        "{err}"
    );
    let err = parse("[audti]\n").unwrap_err();
    assert!(
        err.starts_with("/etc/moat/moatd.toml: audti: unknown key; did you mean `audit`?"),
        "{err}"
    );
}

#[test]
fn bad_values_are_refused() {
    let err = parse("[http]\nlisten = \"localhost\"\n").unwrap_err();
    assert!(
        err.starts_with("/etc/moat/moatd.toml: http.listen: "),
        "{err}"
    );
    let err = parse("[workloads]\nmoat_parent = \"/moat\"\n").unwrap_err();
    assert!(
        err.starts_with("/etc/moat/moatd.toml: workloads.moat_parent: "),
        "{err}"
    );
    let err = parse("[audit]\nlog = \"\"\n").unwrap_err();
    assert!(
        err.starts_with("/etc/moat/moatd.toml: audit.log: "),
        "{err}"
    );
    let err = parse("[workloads]\npoll_interval_ms = 0\n").unwrap_err();
    assert!(
        err.starts_with("/etc/moat/moatd.toml: workloads.poll_interval_ms: "),
        "{err}"
    );
}

#[test]
fn kernel_settings_are_checked_by_the_kernel_side() {
    let err = parse("[kernel]\nring_buffer_bytes = 1000\n").unwrap_err();
    assert!(
        err.starts_with("/etc/moat/moatd.toml: kernel.ring_buffer_bytes: 1000: must be"),
        "{err}"
    );
    let err = parse("[audit]\nrate_burst = 0\n").unwrap_err();
    assert!(
        err.starts_with("/etc/moat/moatd.toml: audit.rate_burst: 0: "),
        "{err}"
    );
    // moatd keeps its programs pinned across restarts; the library default
    // (for in-process users) does not.
    assert_eq!(
        Config::default().kernel_config(),
        KernelConfig {
            keep_pinned: true,
            ..KernelConfig::default()
        }
    );
    let off = parse("[audit]\nrate_limit = 0\n").unwrap();
    assert_eq!(off.kernel_config().audit_rate_per_sec, 0);
}

#[test]
fn section_keys_list_every_field() {
    for (section, keys) in SECTION_KEYS {
        let err = parse(&format!("[{section}]\nzzzzzzzzzzzz = 1\n")).unwrap_err();
        let known = err.split("known keys here: ").nth(1).unwrap();
        assert_eq!(known.trim_end_matches(')'), keys.join(", "), "[{section}]");
    }
}

#[test]
fn syntax_errors_carry_the_line() {
    let err = parse("[audit]\nrate_limit = = 3\n").unwrap_err();
    assert!(err.starts_with("/etc/moat/moatd.toml:2:"), "{err}");
}

#[test]
fn values_are_read() {
    let config = parse(
        "[http]\nlisten = \"0.0.0.0:1234\"\n[audit]\nlog = \"-\"\n\
         [workloads]\nmax_labels = 3\nmoat_parent = \"a/b\"\n",
    )
    .unwrap();
    assert_eq!(config.http.listen.port(), 1234);
    assert_eq!(config.audit.log, AuditTarget::Stdout);
    assert_eq!(config.workloads.max_labels, 3);
    assert_eq!(config.workloads.moat_parent, "a/b");
}

#[test]
fn example_file_parses_to_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("moatd.example.toml");
    let config = Config::load_file(&path).unwrap();
    assert_eq!(config, Config::default());
}

#[test]
fn the_moat_parent_default_is_the_runtime_s() {
    // `moat run --cgroup-parent` and the runtime's cgroup code default to the
    // same parent moatd looks under; the contract crate names it once.
    assert_eq!(
        moat_runtime::cgroup::CgroupConfig::default().parent,
        moat_api::defaults::CGROUP_PARENT
    );
    assert_eq!(
        Config::default().workloads.moat_parent,
        moat_api::defaults::CGROUP_PARENT
    );
}

#[test]
fn tracing_section_parses_and_refuses_bad_values() {
    use crate::kernel::{DenialTier, MechanismChoice};
    let config = parse("[tracing]\ndenials = \"fatal\"\n").unwrap();
    assert_eq!(config.kernel_config().denials, DenialTier::Fatal);
    assert_eq!(config.kernel_config().mechanism, MechanismChoice::Auto);
    let config = parse("[tracing]\nmechanism = \"pairing\"\n").unwrap();
    assert_eq!(config.kernel_config().mechanism, MechanismChoice::Pairing);
    let err = parse("[tracing]\ndenials = \"some\"\n").unwrap_err();
    assert!(
        err.starts_with("/etc/moat/moatd.toml: tracing.denials: \"some\" is not a denial tier"),
        "{err}"
    );
    let err = parse("[tracing]\nmechanism = \"kprobe\"\n").unwrap_err();
    assert!(
        err.starts_with(
            "/etc/moat/moatd.toml: tracing.mechanism: \"kprobe\" is not a tracing mechanism"
        ),
        "{err}"
    );
    // A mechanism forced with the fatal tier would be silently ignored.
    let err = parse("[tracing]\ndenials = \"fatal\"\nmechanism = \"fexit\"\n").unwrap_err();
    assert!(
        err.starts_with("/etc/moat/moatd.toml: tracing.mechanism: fexit: only \"auto\""),
        "{err}"
    );
    let err = parse("[tracing]\ndenial = \"fatal\"\n").unwrap_err();
    assert!(err.contains("did you mean `denials`?"), "{err}");
}
