//! Which daemon handler a request reaches, decided the way dockerd 20.10
//! routes it, so that no spelling of a path reaches a handler the policy
//! did not classify.
//!
//! How the daemon routes (moby `api/server/server.go`, gorilla/mux 1.8, Go
//! `net/url`):
//! - the request target is parsed by `url.ParseRequestURI`: absolute form
//!   (`http://host/v1.41/...`, any scheme) is accepted and its authority
//!   dropped; the query starts at the first `?`; `#` is part of the path;
//! - routes match the *decoded* path, so `/v1.41/containers%2Fcreate` is
//!   `/v1.41/containers/create`;
//! - a path that `path.Clean` would change (`//`, `/./`, `/../`) is
//!   redirected (301), never handled; this module classifies the cleaned
//!   path anyway, which is at least as strict;
//! - every route exists with and without a `/v{version:[0-9.]+}` prefix;
//!   `{name:.*}` variables may contain `/`;
//! - the version defaults to 1.41 when absent, and is compared field by
//!   field as numbers (Go's `versions.compare`).
//!
//! The plugin sees the raw target (`RequestUri`), so it repeats all of this.

use std::cmp::Ordering;

/// The API version a request without a version prefix gets (20.10's
/// `api.DefaultVersion`).
pub const DEFAULT_API_VERSION: &str = "1.41";

/// The handlers the policy distinguishes; everything else is [`Other`].
///
/// [`Other`]: Endpoint::Other
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /containers/create`.
    ContainerCreate,
    /// `POST /containers/{name}/start` (takes a HostConfig body before API 1.24).
    ContainerStart,
    /// `POST /containers/{name}/update`.
    ContainerUpdate,
    /// `POST /containers/{name}/exec` (creates an exec instance).
    ContainerExec,
    /// `POST /exec/{id}/start`.
    ExecStart,
    /// `GET /containers/{name}/json`.
    ContainerInspect,
    /// `POST /services/create`.
    ServiceCreate,
    /// `POST /services/{id}/update`.
    ServiceUpdate,
    /// `POST /plugins/pull` (install).
    PluginPull,
    /// `POST /plugins/create`.
    PluginCreate,
    /// `POST /plugins/{name}/enable`.
    PluginEnable,
    /// `POST /plugins/{name}/disable`.
    PluginDisable,
    /// `POST /plugins/{name}/set`.
    PluginSet,
    /// `POST /plugins/{name}/upgrade`.
    PluginUpgrade,
    /// `DELETE /plugins/{name}`.
    PluginRemove,
    /// `POST /volumes/create`.
    VolumeCreate,
    /// `POST /networks/create`.
    NetworkCreate,
    /// `POST /swarm/join`.
    SwarmJoin,
    /// `POST /build`.
    Build,
    /// Anything else.
    Other,
}

impl Endpoint {
    /// Every endpoint, e.g. to pre-register metric labels.
    pub const ALL: [Endpoint; 20] = [
        Endpoint::ContainerCreate,
        Endpoint::ContainerStart,
        Endpoint::ContainerUpdate,
        Endpoint::ContainerExec,
        Endpoint::ExecStart,
        Endpoint::ContainerInspect,
        Endpoint::ServiceCreate,
        Endpoint::ServiceUpdate,
        Endpoint::PluginPull,
        Endpoint::PluginCreate,
        Endpoint::PluginEnable,
        Endpoint::PluginDisable,
        Endpoint::PluginSet,
        Endpoint::PluginUpgrade,
        Endpoint::PluginRemove,
        Endpoint::VolumeCreate,
        Endpoint::NetworkCreate,
        Endpoint::SwarmJoin,
        Endpoint::Build,
        Endpoint::Other,
    ];

    /// A bounded label, e.g. `containers/create` or `other`.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::ContainerCreate => "containers/create",
            Endpoint::ContainerStart => "containers/{id}/start",
            Endpoint::ContainerUpdate => "containers/{id}/update",
            Endpoint::ContainerExec => "containers/{id}/exec",
            Endpoint::ExecStart => "exec/{id}/start",
            Endpoint::ContainerInspect => "containers/{id}/json",
            Endpoint::ServiceCreate => "services/create",
            Endpoint::ServiceUpdate => "services/{id}/update",
            Endpoint::PluginPull => "plugins/pull",
            Endpoint::PluginCreate => "plugins/create",
            Endpoint::PluginEnable => "plugins/{name}/enable",
            Endpoint::PluginDisable => "plugins/{name}/disable",
            Endpoint::PluginSet => "plugins/{name}/set",
            Endpoint::PluginUpgrade => "plugins/{name}/upgrade",
            Endpoint::PluginRemove => "plugins/{name}/remove",
            Endpoint::VolumeCreate => "volumes/create",
            Endpoint::NetworkCreate => "networks/create",
            Endpoint::SwarmJoin => "swarm/join",
            Endpoint::Build => "build",
            Endpoint::Other => "other",
        }
    }
}

/// How a path is matched: exactly, or `prefix` + a non-empty `{name:.*}` +
/// `suffix`.
enum Pattern {
    Exact(&'static str),
    Var(&'static str, &'static str),
}

const ROUTES: &[(&str, Pattern, Endpoint)] = &[
    (
        "POST",
        Pattern::Exact("/containers/create"),
        Endpoint::ContainerCreate,
    ),
    (
        "POST",
        Pattern::Var("/containers/", "/start"),
        Endpoint::ContainerStart,
    ),
    (
        "POST",
        Pattern::Var("/containers/", "/update"),
        Endpoint::ContainerUpdate,
    ),
    (
        "POST",
        Pattern::Var("/containers/", "/exec"),
        Endpoint::ContainerExec,
    ),
    (
        "POST",
        Pattern::Var("/exec/", "/start"),
        Endpoint::ExecStart,
    ),
    (
        "GET",
        Pattern::Var("/containers/", "/json"),
        Endpoint::ContainerInspect,
    ),
    (
        "POST",
        Pattern::Exact("/services/create"),
        Endpoint::ServiceCreate,
    ),
    (
        "POST",
        Pattern::Var("/services/", "/update"),
        Endpoint::ServiceUpdate,
    ),
    (
        "POST",
        Pattern::Exact("/plugins/pull"),
        Endpoint::PluginPull,
    ),
    (
        "POST",
        Pattern::Exact("/plugins/create"),
        Endpoint::PluginCreate,
    ),
    (
        "POST",
        Pattern::Var("/plugins/", "/enable"),
        Endpoint::PluginEnable,
    ),
    (
        "POST",
        Pattern::Var("/plugins/", "/disable"),
        Endpoint::PluginDisable,
    ),
    (
        "POST",
        Pattern::Var("/plugins/", "/set"),
        Endpoint::PluginSet,
    ),
    (
        "POST",
        Pattern::Var("/plugins/", "/upgrade"),
        Endpoint::PluginUpgrade,
    ),
    (
        "DELETE",
        Pattern::Var("/plugins/", ""),
        Endpoint::PluginRemove,
    ),
    (
        "POST",
        Pattern::Exact("/volumes/create"),
        Endpoint::VolumeCreate,
    ),
    (
        "POST",
        Pattern::Exact("/networks/create"),
        Endpoint::NetworkCreate,
    ),
    ("POST", Pattern::Exact("/swarm/join"), Endpoint::SwarmJoin),
    ("POST", Pattern::Exact("/build"), Endpoint::Build),
];

/// A request target the daemon's HTTP server would refuse (400) before any
/// handler or plugin sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("request URI {uri:?} is malformed: {reason}")]
pub struct UriError {
    /// The target as received.
    pub uri: String,
    /// Why.
    pub reason: &'static str,
}

/// A classified request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The handler.
    pub endpoint: Endpoint,
    /// The API version in effect: the prefix's, or [`DEFAULT_API_VERSION`].
    pub version: String,
    /// The decoded, cleaned path without the version prefix.
    pub path: String,
    /// The raw query string (after the first `?`), undecoded.
    pub query: String,
}

impl Route {
    /// Whether the request's API version is below `v` (Go's
    /// `versions.LessThan`).
    pub fn version_below(&self, v: &str) -> bool {
        compare_versions(&self.version, v) == Ordering::Less
    }

    /// Every value of query parameter `key` (exact name, as `url.Values`),
    /// decoded as `url.QueryUnescape` does; pairs that do not decode are
    /// skipped.
    pub fn query_values(&self, key: &str) -> Vec<String> {
        self.query
            .split('&')
            .filter_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let k = unescape(k, true)?;
                (k == key.as_bytes())
                    .then(|| unescape(v, true))
                    .flatten()
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
            })
            .collect()
    }
}

/// Classifies a request by its method and raw target.
pub fn classify(method: &str, uri: &str) -> Result<Route, UriError> {
    let (path, query) = parse_target(uri)?;
    let cleaned = clean(&String::from_utf8_lossy(&path));
    let (version, rest) = split_version(&cleaned);
    let endpoint = ROUTES
        .iter()
        .find(|(m, p, _)| *m == method && matches(p, rest))
        .map_or(Endpoint::Other, |(_, _, e)| *e);
    Ok(Route {
        endpoint,
        version: version.unwrap_or(DEFAULT_API_VERSION).to_string(),
        path: rest.to_string(),
        query: query.to_string(),
    })
}

fn matches(p: &Pattern, path: &str) -> bool {
    match p {
        Pattern::Exact(e) => path == *e,
        Pattern::Var(prefix, suffix) => path
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(suffix))
            .is_some_and(|name| !name.is_empty()),
    }
}

/// `/v{[0-9.]+}/...` → the version and the rest (which keeps its `/`).
fn split_version(path: &str) -> (Option<&str>, &str) {
    if let Some(after) = path.strip_prefix("/v") {
        let n = after
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        if n > 0 && after[n..].starts_with('/') {
            return (Some(&after[..n]), &after[n..]);
        }
    }
    (None, path)
}

/// Go's `url.ParseRequestURI` as far as routing needs it: the decoded path
/// bytes and the raw query.
fn parse_target(uri: &str) -> Result<(Vec<u8>, &str), UriError> {
    let fail = |reason| UriError {
        uri: uri.to_string(),
        reason,
    };
    if uri.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(fail("control character"));
    }
    if uri.is_empty() {
        return Err(fail("empty"));
    }
    if uri == "*" {
        return Ok((b"*".to_vec(), ""));
    }
    let (scheme, rest) = split_scheme(uri).map_err(fail)?;
    let (mut rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, q),
        None => (rest, ""),
    };
    if !rest.starts_with('/') {
        return Err(fail(if scheme {
            "opaque URI (no path)"
        } else {
            "not an absolute path"
        }));
    }
    if scheme && rest.starts_with("//") {
        // The authority ends at the next '/'; the path is what follows.
        rest = rest[2..].find('/').map_or("", |i| &rest[2 + i..]);
    }
    let path = unescape(rest, false).ok_or_else(|| fail("invalid percent-encoding"))?;
    Ok((path, query))
}

/// Go's `getScheme`: `Ok((true, rest))` after a scheme, `Ok((false, uri))`
/// when there is none.
fn split_scheme(uri: &str) -> Result<(bool, &str), &'static str> {
    for (i, b) in uri.bytes().enumerate() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
            b':' if i == 0 => return Err("missing protocol scheme"),
            b':' => return Ok((true, &uri[i + 1..])),
            _ => return Ok((false, uri)),
        }
    }
    Ok((false, uri))
}

/// Percent-decoding as Go's `unescape`: `%XX` only, anything else refused;
/// `+` is a space only in query components.
fn unescape(s: &str, query: bool) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = |c: u8| (c as char).to_digit(16);
                let hi = hex(*b.get(i + 1)?)?;
                let lo = hex(*b.get(i + 2)?)?;
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            b'+' if query => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

/// Go's `path.Clean` for a rooted path: one `/` between elements, no `.`,
/// `..` resolved (and dropped at the root), no trailing `/`.
pub fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    for p in &parts {
        out.push('/');
        out.push_str(p);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Go's `versions.compare`: dot-separated fields compared as integers, a
/// field that is not a (small enough) integer counting as 0.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (fa, fb): (Vec<&str>, Vec<&str>) = (a.split('.').collect(), b.split('.').collect());
    let field =
        |f: &[&str], i: usize| -> i64 { f.get(i).and_then(|s| s.parse::<i64>().ok()).unwrap_or(0) };
    for i in 0..fa.len().max(fb.len()) {
        match field(&fa, i).cmp(&field(&fb, i)) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(method: &str, uri: &str) -> Endpoint {
        classify(method, uri).unwrap().endpoint
    }

    #[test]
    fn every_spelling_of_create_is_create() {
        for uri in [
            "/containers/create",
            "/v1.41/containers/create",
            "/v1.41/containers%2Fcreate",
            "/v1.41/containers%2fcreate",
            "/v1.41/%63ontainers/create",
            "//containers/create",
            "/v1.41//containers/create",
            "/containers/create?name=x",
            "/containers/create?x=/auth",
            "/v1.41/./containers/../containers/create",
            "/v1.41/containers/create/",
            "/v1.12/containers/create",
            "/v9.99/containers/create",
            "/v./containers/create",
            "http://docker/v1.41/containers/create",
            "HTTP://x:1/containers/create?a=b",
            "unix:/containers/create",
            "/../containers/create",
        ] {
            assert_eq!(ep("POST", uri), Endpoint::ContainerCreate, "{uri}");
        }
    }

    #[test]
    fn near_misses_are_other() {
        for (m, uri) in [
            ("GET", "/containers/create"),
            ("post", "/containers/create"),
            ("POST", "/Containers/create"),
            ("POST", "/v1.41/v1.41/containers/create"),
            ("POST", "/vx/containers/create"),
            ("POST", "/v1.41"),
            ("POST", "/containers/create#x"),
            ("POST", "/containers/start"),
            ("POST", "/containers/update"),
            ("GET", "/containers/json"),
            ("POST", "/services/update"),
            ("DELETE", "/plugins"),
            ("POST", "/plugins/enable"),
            ("POST", "/v1.41/containers/create;x"),
        ] {
            assert_eq!(ep(m, uri), Endpoint::Other, "{m} {uri}");
        }
    }

    #[test]
    fn names_may_contain_slashes_as_with_dot_star_variables() {
        assert_eq!(
            ep("POST", "/containers/a/b/start"),
            Endpoint::ContainerStart
        );
        assert_eq!(
            ep("POST", "/containers/x/start/update"),
            Endpoint::ContainerUpdate
        );
        assert_eq!(ep("POST", "/containers/x%2Fexec"), Endpoint::ContainerExec);
        assert_eq!(
            ep("POST", "/v1.41/containers/c1%2Fexec/..%2Fexec"),
            Endpoint::ContainerExec
        );
        assert_eq!(
            ep("POST", "/v1.41/containers/c1/exec"),
            Endpoint::ContainerExec
        );
        assert_eq!(ep("POST", "/exec/abc/start"), Endpoint::ExecStart);
        assert_eq!(
            ep("POST", "/plugins/moat:latest/disable"),
            Endpoint::PluginDisable
        );
        assert_eq!(ep("POST", "/plugins/pull/enable"), Endpoint::PluginEnable);
        assert_eq!(ep("DELETE", "/v1.41/plugins/a/b"), Endpoint::PluginRemove);
        assert_eq!(
            ep("POST", "/services/abc/update?version=3"),
            Endpoint::ServiceUpdate
        );
        assert_eq!(
            ep("GET", "/v1.41/containers/abc/json"),
            Endpoint::ContainerInspect
        );
    }

    #[test]
    fn malformed_targets_are_errors() {
        for uri in [
            "",
            "containers/create",
            ":x",
            "/a%zz",
            "/a%2",
            "/a\nb",
            "http:x",
        ] {
            assert!(classify("POST", uri).is_err(), "{uri:?}");
        }
        assert_eq!(ep("OPTIONS", "*"), Endpoint::Other);
    }

    #[test]
    fn versions_compare_as_go_does() {
        let r = classify("POST", "/v1.23/containers/x/start").unwrap();
        assert_eq!(r.version, "1.23");
        assert!(r.version_below("1.24"));
        assert!(!classify("POST", "/containers/x/start")
            .unwrap()
            .version_below("1.24"));
        assert_eq!(compare_versions("1.023", "1.23"), Ordering::Equal);
        assert_eq!(compare_versions("1.23.9", "1.24"), Ordering::Less);
        assert_eq!(
            compare_versions("1.99999999999999999999", "1.12"),
            Ordering::Less
        );
        assert_eq!(compare_versions("2", "1.41"), Ordering::Greater);
    }

    #[test]
    fn query_values_decode_like_url_values() {
        let r = classify(
            "POST",
            "/build?networkmode=ho%73t&x=1&networkmode=a+b&bad=%z",
        )
        .unwrap();
        assert_eq!(r.query_values("networkmode"), ["host", "a b"]);
        assert!(r.query_values("NetworkMode").is_empty());
    }

    #[test]
    fn clean_matches_go_path_clean() {
        for (i, o) in [
            ("/", "/"),
            ("//", "/"),
            ("/a/./b/../c/", "/a/c"),
            ("/..", "/"),
            ("/a//b", "/a/b"),
            ("/a/b/../../..", "/"),
        ] {
            assert_eq!(clean(i), o, "{i}");
        }
    }
}
