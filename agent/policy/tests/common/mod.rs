//! Building authorization requests for the tests: recorded ones (captured
//! from dockerd 20.10.24 driven by the Docker CLI, see
//! `tests/requests/README.md`) and hand-made ones, as the daemon would send
//! them.

#![allow(dead_code)]

use std::path::PathBuf;

use moat_policy::{AuthzRequest, Decision};

fn dir(sub: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(sub)
}

/// A recorded request, `tests/requests/NAME.json`.
pub fn recorded(name: &str) -> AuthzRequest {
    let path = dir("requests").join(format!("{name}.json"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    AuthzRequest::from_json(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A recorded container inspect output, `tests/inspect/NAME.json`.
pub fn inspect(name: &str) -> moat_policy::InspectJson {
    let path = dir("inspect").join(format!("{name}.json"));
    moat_policy::InspectJson::parse(&std::fs::read(path).unwrap()).unwrap()
}

/// A recorded request whose JSON body is changed by `edit`; the headers
/// follow (Content-Length).
pub fn edited(name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> AuthzRequest {
    let mut r = recorded(name);
    let mut body: serde_json::Value = serde_json::from_slice(r.body.as_ref().unwrap()).unwrap();
    edit(&mut body);
    set_body(&mut r, &serde_json::to_vec(&body).unwrap());
    r
}

/// Replaces the body with raw bytes, as the daemon forwards it.
pub fn set_body(r: &mut AuthzRequest, body: &[u8]) {
    r.headers
        .insert("Content-Length".into(), body.len().to_string());
    r.body = Some(body.to_vec());
}

/// A request as the daemon forwards a JSON one from the CLI.
pub fn request(method: &str, uri: &str, body: Option<&str>) -> AuthzRequest {
    let mut r = AuthzRequest {
        method: method.into(),
        uri: uri.into(),
        ..Default::default()
    };
    r.headers
        .insert("User-Agent".into(), "Docker-Client/28.2.2 (linux)".into());
    if let Some(b) = body {
        r.headers
            .insert("Content-Type".into(), "application/json".into());
        set_body(&mut r, b.as_bytes());
    }
    r
}

/// Asserts a denial by `rule` whose message contains `needle`.
#[track_caller]
pub fn assert_denied(d: &Decision, rule: &str, needle: &str) {
    assert!(!d.allow, "expected a denial by {rule}, got {d:?}");
    assert_eq!(d.rule.as_deref(), Some(rule), "{d:?}");
    assert!(
        d.message.contains(needle),
        "{needle:?} not in {:?}",
        d.message
    );
}

/// Asserts an allow.
#[track_caller]
pub fn assert_allowed(d: &Decision) {
    assert!(d.allow, "expected allow, got {d:?}");
}
