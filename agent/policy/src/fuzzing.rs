//! The invariants the fuzz target (`tests/fuzz/fuzz_targets/authz_request.rs`)
//! checks on arbitrary input, here so that saved inputs are replayed as
//! ordinary tests (`tests/fuzz_regressions.rs`). Not part of the API.

use crate::eval::{evaluate, evaluate_inspect, evaluate_wire, Decision, InspectJson};
use crate::wire::AuthzRequest;
use crate::{baseline, endpoint};

/// Endpoints whose bodies the policy reads, chosen by the input's first byte.
const BODY_TARGETS: [(&str, &str); 7] = [
    ("POST", "/v1.41/containers/create"),
    ("POST", "/v1.23/containers/c/start"),
    ("POST", "/v1.41/containers/c/update"),
    ("POST", "/v1.41/containers/c/exec"),
    ("POST", "/v1.41/services/create"),
    ("POST", "/v1.41/volumes/create"),
    ("POST", "/v1.41/build?networkmode=host"),
];

fn consistent(d: &Decision) {
    assert_eq!(d.allow, d.rule.is_none(), "{d:?}");
    assert_eq!(d.allow, d.message.is_empty(), "{d:?}");
}

/// Feeds `data` to every decoder: as a whole plugin request, as a request
/// body, as inspect output and as a request URI. Panics if a decision is
/// inconsistent (a deny without a rule, an allow with one).
pub fn check(data: &[u8]) {
    let policy = baseline();
    consistent(&evaluate_wire(&policy, data));
    if let Some((&sel, body)) = data.split_first() {
        let (method, uri) = BODY_TARGETS[sel as usize % BODY_TARGETS.len()];
        let mut req = AuthzRequest {
            method: method.into(),
            uri: uri.into(),
            body: Some(body.to_vec()),
            ..Default::default()
        };
        req.headers
            .insert("Content-Type".into(), "application/json".into());
        let d = evaluate(&policy, &req);
        consistent(&d);
        // A body that does not parse is always denied.
        if crate::gojson::parse(body).is_err() {
            assert!(!d.allow, "unparsable body allowed: {d:?}");
        }
        if let Ok(json) = InspectJson::parse(body) {
            consistent(&evaluate_inspect(&policy, "u", &json));
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(route) = endpoint::classify("POST", text) {
            // The cleaned path never contains an empty, "." or ".." element.
            assert!(route.path.starts_with('/'), "{route:?}");
            assert!(!route.path.contains("//"), "{route:?}");
            let _ = route.query_values("networkmode");
        }
    }
}
