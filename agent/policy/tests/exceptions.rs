//! Policy files: user-scoped exceptions, narrowing by value, extra rules.

mod common;

use std::path::Path;

use common::{assert_allowed, assert_denied, request};
use moat_policy::{evaluate, load::parse, Policy};

fn policy(text: &str) -> Policy {
    parse(text, Path::new("policy.toml")).unwrap_or_else(|e| panic!("{e}"))
}

fn as_user(user: &str, body: &str) -> moat_policy::AuthzRequest {
    let mut r = request("POST", "/v1.41/containers/create", Some(body));
    r.user = user.into();
    r.user_authn_method = if user.is_empty() { "" } else { "TLS" }.into();
    r
}

const CI: &str = r#"
extends = "baseline"

[[exception]]
rule = "capabilities"
users = ["ci-runner"]
capabilities = ["NET_ADMIN"]
reason = "integration tests configure interfaces"
"#;

#[test]
fn a_ci_user_may_add_net_admin_and_nothing_else() {
    let p = policy(CI);
    let net = r#"{"HostConfig":{"CapAdd":["NET_ADMIN"]}}"#;
    assert_allowed(&evaluate(&p, &as_user("ci-runner", net)));
    assert_denied(
        &evaluate(&p, &as_user("alice", net)),
        "capabilities",
        "CAP_NET_ADMIN",
    );
    // The unix socket carries no identity: never the CI user.
    assert_denied(
        &evaluate(&p, &as_user("", net)),
        "capabilities",
        "CAP_NET_ADMIN",
    );
    // Only the capability the exception names: SYS_ADMIN is still denied,
    // and the message lists only what is denied.
    let both = r#"{"HostConfig":{"CapAdd":["NET_ADMIN","SYS_ADMIN"]}}"#;
    let d = evaluate(&p, &as_user("ci-runner", both));
    assert_denied(&d, "capabilities", "CAP_SYS_ADMIN");
    assert!(!d.message.contains("NET_ADMIN"), "{}", d.message);
    // Other rules still apply to the CI user.
    let priv_ = r#"{"HostConfig":{"CapAdd":["NET_ADMIN"],"Privileged":true}}"#;
    assert_denied(
        &evaluate(&p, &as_user("ci-runner", priv_)),
        "privileged",
        "Privileged",
    );
}

#[test]
fn path_namespace_and_whole_rule_exceptions() {
    let p = policy(
        r#"
extends = "baseline"

[[exception]]
rule = "host-paths"
paths = ["/etc/localtime", "/etc/ssl/certs"]

[[exception]]
rule = "host-namespaces"
users = ["netops"]
namespaces = ["network"]

[[exception]]
rule = "plugins"
users = ["admin"]
"#,
    );
    let bind = |src: &str| format!(r#"{{"HostConfig":{{"Binds":["{src}:/x:ro"]}}}}"#);
    assert_allowed(&evaluate(&p, &as_user("", &bind("/etc/localtime"))));
    assert_allowed(&evaluate(&p, &as_user("", &bind("/etc/ssl/certs/ca.pem"))));
    assert_denied(
        &evaluate(&p, &as_user("", &bind("/etc/ssl"))),
        "host-paths",
        "/etc/ssl",
    );
    assert_denied(
        &evaluate(&p, &as_user("", &bind("/etc"))),
        "host-paths",
        "/etc",
    );
    let host_net = r#"{"HostConfig":{"NetworkMode":"host"}}"#;
    assert_allowed(&evaluate(&p, &as_user("netops", host_net)));
    let host_pid = r#"{"HostConfig":{"NetworkMode":"host","PidMode":"host"}}"#;
    assert_denied(
        &evaluate(&p, &as_user("netops", host_pid)),
        "host-namespaces",
        "PidMode",
    );
    let mut disable = request("POST", "/v1.41/plugins/moat/disable", None);
    assert_denied(&evaluate(&p, &disable), "plugins", "disabling a plugin");
    disable.user = "admin".into();
    assert_allowed(&evaluate(&p, &disable));
}

#[test]
fn a_file_without_the_baseline_applies_only_its_own_rules() {
    let p = policy(
        r#"
[[rule]]
name = "no-host-net"
check = "host-namespaces"
namespaces = ["network"]
message = "host networking is not allowed here"

[[rule]]
name = "caps"
check = "capabilities"
allowed = ["NET_ADMIN"]
message = "no extra capabilities"
"#,
    );
    let d = evaluate(&p, &as_user("", r#"{"HostConfig":{"NetworkMode":"host"}}"#));
    assert_denied(
        &d,
        "no-host-net",
        "host networking is not allowed here (HostConfig.NetworkMode: host)",
    );
    assert_allowed(&evaluate(
        &p,
        &as_user("", r#"{"HostConfig":{"Privileged":true}}"#),
    ));
    assert_allowed(&evaluate(
        &p,
        &as_user("", r#"{"HostConfig":{"CapAdd":["NET_ADMIN"]}}"#),
    ));
    assert_denied(
        &evaluate(&p, &as_user("", r#"{"HostConfig":{"CapAdd":["ALL"]}}"#)),
        "caps",
        "adds ALL",
    );
    // Exec bodies are read by no rule of this policy: a chunked exec passes.
    assert_allowed(&evaluate(
        &p,
        &request("POST", "/v1.41/containers/c/exec", None),
    ));
    // Create bodies are: a chunked create does not.
    assert_denied(
        &evaluate(&p, &request("POST", "/v1.41/containers/create", None)),
        "request-body",
        "it has no Content-Type",
    );
}
