//! Decisions: a policy applied to an authorization request, to a
//! container's resolved configuration, or to a `moat run`.
//!
//! Fail closed: a request whose body the policy's rules read, but which
//! reaches the plugin without one (chunked, `Content-Length: 0`, not JSON,
//! 1 MiB or more, or a URI ending in `/auth`: the daemon then forwards
//! none), or whose body does not decode as the daemon would decode it, is
//! denied with a message that says which.

use crate::endpoint::{self, Endpoint, Route};
use crate::findings::{self, Finding, Kind, Namespace};
use crate::gojson::{self, Obj};
use crate::model::{BodyKind, Policy};
use crate::run::RunIntent;
use crate::wire::{AuthzRequest, AuthzResponse};

/// The rule name reported when the request target cannot be parsed.
pub const RULE_REQUEST_URI: &str = "request-uri";
/// The rule name reported when a needed body is missing or unreadable.
pub const RULE_REQUEST_BODY: &str = "request-body";
/// The rule name reported when the plugin request itself is unreadable.
pub const RULE_REQUEST: &str = "request";

/// Rule names policy files may not use.
pub const RESERVED_RULE_NAMES: [&str; 3] = [RULE_REQUEST, RULE_REQUEST_URI, RULE_REQUEST_BODY];

/// At most this many findings are listed in a message.
const MAX_LISTED: usize = 5;

/// A decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allow: bool,
    /// The rule that denied it (or one of [`RESERVED_RULE_NAMES`]).
    pub rule: Option<String>,
    /// Why, for the client: the rule's message and what was found.
    pub message: String,
    /// The endpoint, when the decision is about an API request.
    pub endpoint: Option<Endpoint>,
}

impl Decision {
    fn allow(endpoint: Option<Endpoint>) -> Decision {
        Decision {
            allow: true,
            rule: None,
            message: String::new(),
            endpoint,
        }
    }

    fn deny(endpoint: Option<Endpoint>, rule: &str, message: String) -> Decision {
        Decision {
            allow: false,
            rule: Some(rule.to_string()),
            message,
            endpoint,
        }
    }

    /// The endpoint's metric label (`moat run` for run decisions).
    pub fn endpoint_label(&self) -> &'static str {
        self.endpoint.map_or("moat run", Endpoint::label)
    }

    /// The plugin's reply. A denial's message names the rule; dockerd shows
    /// it as `authorization denied by plugin NAME: MESSAGE [rule: RULE]`.
    pub fn to_response(&self) -> AuthzResponse {
        if self.allow {
            return AuthzResponse {
                allow: true,
                ..Default::default()
            };
        }
        AuthzResponse {
            allow: false,
            msg: format!(
                "{} [rule: {}]",
                self.message,
                self.rule.as_deref().unwrap_or("-")
            ),
            err: String::new(),
        }
    }
}

/// Decides on a plugin request as received (bytes of an `AuthZReq`).
/// A request that does not decode is denied.
pub fn evaluate_wire(policy: &Policy, bytes: &[u8]) -> Decision {
    match AuthzRequest::from_json(bytes) {
        Ok(req) => evaluate(policy, &req),
        Err(e) => Decision::deny(None, RULE_REQUEST, e.to_string()),
    }
}

/// Decides on an authorization request.
pub fn evaluate(policy: &Policy, req: &AuthzRequest) -> Decision {
    let route = match endpoint::classify(&req.method, &req.uri) {
        Ok(r) => r,
        Err(e) => return Decision::deny(None, RULE_REQUEST_URI, e.to_string()),
    };
    let ep = Some(route.endpoint);
    let findings = match request_findings(policy, req, &route) {
        Ok(f) => f,
        Err(why) => return Decision::deny(ep, RULE_REQUEST_BODY, why),
    };
    decide(policy, &findings, &req.user, ep)
}

/// Decides on a container's resolved configuration, the JSON of `GET
/// /containers/{id}/json`, e.g. at `containers/{id}/start`. `user` is the
/// user starting it.
pub fn evaluate_inspect(policy: &Policy, user: &str, inspect: &InspectJson) -> Decision {
    let ep = Some(Endpoint::ContainerStart);
    let mut out = Vec::new();
    let read = Obj::root(&inspect.0).and_then(|root| findings::inspect(&root, &mut out));
    match read {
        Ok(()) => decide(policy, &out, user, ep),
        Err(e) => Decision::deny(
            ep,
            RULE_REQUEST_BODY,
            format!("the container's configuration does not decode: {e}"),
        ),
    }
}

/// Decides on a `moat run`.
pub fn evaluate_run(policy: &Policy, intent: &RunIntent) -> Decision {
    decide(policy, &intent.findings(), &intent.user, None)
}

/// `GET /containers/{id}/json` output, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InspectJson(gojson::Value);

impl InspectJson {
    /// Parses inspect output.
    pub fn parse(bytes: &[u8]) -> Result<InspectJson, gojson::ParseError> {
        gojson::parse(bytes).map(InspectJson)
    }
}

fn decide(policy: &Policy, findings: &[Finding], user: &str, ep: Option<Endpoint>) -> Decision {
    let Some((rule, hits)) = policy.first_violation(findings, user) else {
        return Decision::allow(ep);
    };
    let mut listed: Vec<String> = hits
        .iter()
        .take(MAX_LISTED)
        .map(|f| f.to_string())
        .collect();
    if hits.len() > MAX_LISTED {
        listed.push(format!("and {} more", hits.len() - MAX_LISTED));
    }
    Decision::deny(
        ep,
        &rule.name,
        format!("{} ({})", rule.message, listed.join("; ")),
    )
}

/// The body kind an endpoint's handler decodes, if the policy reads it.
fn body_kind(route: &Route) -> Option<BodyKind> {
    Some(match route.endpoint {
        Endpoint::ContainerCreate => BodyKind::Container,
        // Before API 1.24 a start request may carry a HostConfig, which the
        // daemon applies; from 1.24 on it refuses any body.
        Endpoint::ContainerStart if route.version_below("1.24") => BodyKind::Container,
        Endpoint::ContainerUpdate => BodyKind::Update,
        Endpoint::ContainerExec => BodyKind::Exec,
        Endpoint::ServiceCreate | Endpoint::ServiceUpdate => BodyKind::Service,
        Endpoint::VolumeCreate => BodyKind::Volume,
        Endpoint::Build => BodyKind::Build,
        _ => return None,
    })
}

/// Lists what the request would do; `Err` says why a needed body could not
/// be read.
fn request_findings(
    policy: &Policy,
    req: &AuthzRequest,
    route: &Route,
) -> Result<Vec<Finding>, String> {
    let mut out = Vec::new();
    let what = |w: &str| {
        Finding::new(
            Kind::Plugin,
            "",
            format!("{w} ({})", route.endpoint.label()),
        )
    };
    match route.endpoint {
        Endpoint::PluginPull => out.push(what("installing a plugin")),
        Endpoint::PluginCreate => out.push(what("creating a plugin")),
        Endpoint::PluginEnable => out.push(what("enabling a plugin")),
        Endpoint::PluginDisable => out.push(what("disabling a plugin")),
        Endpoint::PluginSet => out.push(what("configuring a plugin")),
        Endpoint::PluginUpgrade => out.push(what("upgrading a plugin")),
        Endpoint::PluginRemove => out.push(what("removing a plugin")),
        Endpoint::SwarmJoin => out.push(Finding::new(
            Kind::SwarmJoin,
            "",
            "joining a swarm (its managers start tasks here without asking the plugin)",
        )),
        Endpoint::Build => {
            for v in route.query_values("networkmode") {
                if v.eq_ignore_ascii_case("host") {
                    out.push(Finding::new(
                        Kind::HostNamespace(Namespace::Network),
                        "query networkmode",
                        v,
                    ));
                }
            }
        }
        _ => {}
    }
    let Some(kind) = body_kind(route).filter(|k| policy.reads(*k)) else {
        return Ok(out);
    };
    if kind == BodyKind::Build {
        // Build parameters are read with FormValue, which also takes them
        // from a form body the plugin never sees.
        let media = media_type(req.header("Content-Type").unwrap_or(""));
        if media == "application/x-www-form-urlencoded" || media == "multipart/form-data" {
            return Err(format!(
                "build parameters sent as a {media} body are not shown to authorization plugins"
            ));
        }
        return Ok(out);
    }
    if route.endpoint == Endpoint::ContainerStart && req.body.is_none() && start_body_ignored(req) {
        return Ok(out);
    }
    let Some(body) = &req.body else {
        return Err(missing_body_reason(req, route));
    };
    let tree = gojson::parse(body)
        .map_err(|e| format!("the request body is not JSON the daemon would read: {e}"))?;
    let root = Obj::root(&tree).map_err(undecodable)?;
    match kind {
        BodyKind::Container => findings::create_body(&root, &mut out),
        BodyKind::Update => findings::update_body(&root, route.version_below("1.40"), &mut out),
        BodyKind::Exec => findings::exec_body(&root, &mut out),
        BodyKind::Service => findings::service_spec(&root, &mut out),
        BodyKind::Volume => root
            .string_map("DriverOpts")
            .map(|o| findings::volume_options(&o.unwrap_or_default(), "DriverOpts", &mut out)),
        BodyKind::Build => Ok(()),
    }
    .map_err(undecodable)?;
    Ok(out)
}

fn undecodable(e: gojson::DecodeError) -> String {
    format!("the request body does not decode as the daemon would decode it: {e}")
}

/// A pre-1.24 start without a body is fine when the daemon will not read
/// one either: it reads the body only when `Content-Length` is above 7 or
/// unknown (chunked, which removes the header).
fn start_body_ignored(req: &AuthzRequest) -> bool {
    req.header("Content-Length")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n <= 7)
}

/// Go's `mime.ParseMediaType` as far as the daemon uses it: the part before
/// `;`, trimmed, lower-cased.
fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn missing_body_reason(req: &AuthzRequest, route: &Route) -> String {
    let label = route.endpoint.label();
    let ct = req.header("Content-Type").unwrap_or("");
    let why = if req.uri.ends_with("/auth") {
        "its URI ends in \"/auth\", for which the daemon forwards no body".to_string()
    } else if media_type(ct) != "application/json" {
        let given = if ct.is_empty() {
            "it has no Content-Type".to_string()
        } else {
            format!("its Content-Type is {ct:?}")
        };
        format!(
            "{given}, and the daemon forwards only application/json bodies to authorization \
             plugins, while this handler may decode the body anyway"
        )
    } else {
        match req.header("Content-Length").map(str::trim) {
            None => "it has no Content-Length (chunked): the daemon reads such a body but \
                     does not forward it to authorization plugins (CVE-2024-41110)"
                .to_string(),
            Some("0") => "its Content-Length is 0: the daemon forwards no body then \
                          (CVE-2024-41110)"
                .to_string(),
            Some(n) if n.parse::<u64>().is_ok_and(|n| n >= 1 << 20) => {
                format!("its body ({n} bytes) is 1 MiB or more, which the daemon does not forward")
            }
            Some(_) => "the daemon forwarded no body".to_string(),
        }
    };
    format!("{label} needs a request body the policy can read, and this request has none: {why}")
}
