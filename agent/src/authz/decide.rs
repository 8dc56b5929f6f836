//! One `AuthZReq`, decided: the policy on the request as received, then, at
//! a container start, the policy on the configuration the daemon will run;
//! the answer by mode; the metrics and the audit event.

use std::{sync::Arc, time::Instant};

use moat_api::audit::AuditAction;
use moat_policy::{
    endpoint::{self, Endpoint},
    eval::RULE_REQUEST,
    evaluate, evaluate_inspect, AuthzRequest, AuthzResponse, Decision,
};
use tokio::sync::Semaphore;

use super::{
    audit::{AuditSink, Denial},
    gate::{Gate, Side, Ticket},
    inspect::Inspector,
    policy::PolicyStore,
};
use crate::{
    config::AuthzMode,
    export::metrics::authz::{AuthzStats, Verdict},
};

/// The rule reported when the start-time inspect fails.
pub const RULE_INSPECT: &str = "container-inspect";
/// The rule reported when a start or rename could not get the gate in time.
pub const RULE_GATE: &str = "start-gate";
/// The rule reported when a request was not decided in time.
pub const RULE_TIMEOUT: &str = "timeout";

/// Requests larger than this are decoded on a blocking thread, so a large
/// body does not hold up the runtime's workers.
const INLINE_BYTES: usize = 256 << 10;

/// What the plugin concluded about one request.
#[derive(Debug, Clone)]
struct Outcome {
    verdict: Verdict,
    endpoint: Endpoint,
    rule: String,
    message: String,
    container: Option<String>,
}

impl Outcome {
    fn allow(endpoint: Endpoint) -> Self {
        Outcome {
            verdict: Verdict::Allow,
            endpoint,
            rule: String::new(),
            message: String::new(),
            container: None,
        }
    }

    fn error(endpoint: Endpoint, rule: &str, message: String) -> Self {
        Outcome {
            verdict: Verdict::Error,
            endpoint,
            rule: rule.to_owned(),
            message,
            container: None,
        }
    }

    fn from_decision(d: Decision) -> Self {
        let endpoint = d.endpoint.unwrap_or(Endpoint::Other);
        if d.allow {
            return Outcome::allow(endpoint);
        }
        let rule = d.rule.unwrap_or_default();
        Outcome {
            verdict: if rule == RULE_REQUEST {
                Verdict::Error
            } else {
                Verdict::Deny
            },
            endpoint,
            rule,
            message: d.message,
            container: None,
        }
    }
}

/// What a request does beyond its body, for the start-time check.
enum Target {
    /// `POST /containers/{name}/start` or `/restart`.
    Start(String),
    /// `POST /containers/{name}/rename`.
    Rename,
    /// Anything else.
    Other,
}

fn target(req: &AuthzRequest) -> Target {
    let Ok(route) = endpoint::classify(&req.method, &req.uri) else {
        return Target::Other;
    };
    if req.method != "POST" {
        return Target::Other;
    }
    let name = |suffix: &str| {
        route
            .path
            .strip_prefix("/containers/")
            .and_then(|rest| rest.strip_suffix(suffix))
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
    };
    if let Some(n) = name("/start").or_else(|| name("/restart")) {
        return Target::Start(n);
    }
    if name("/rename").is_some() {
        return Target::Rename;
    }
    Target::Other
}

/// Decides `AuthZReq`s (and notes `AuthZRes`) for the server.
#[derive(Debug)]
pub struct Judge {
    store: Arc<PolicyStore>,
    mode: AuthzMode,
    inspector: Inspector,
    inspect_slots: Semaphore,
    gate: Gate,
    stats: Arc<AuthzStats>,
    audit: AuditSink,
}

impl Judge {
    /// A judge of `store`'s policy in `mode`.
    pub fn new(
        store: Arc<PolicyStore>,
        mode: AuthzMode,
        inspector: Inspector,
        max_inspects: usize,
        stats: Arc<AuthzStats>,
        audit: AuditSink,
    ) -> Self {
        Self {
            store,
            mode,
            inspector,
            inspect_slots: Semaphore::new(max_inspects),
            gate: Gate::default(),
            stats,
            audit,
        }
    }

    /// Decides the `AuthZReq` whose body is `body` (or could not be read:
    /// `Err` says why), by `deadline`; counts it and writes its audit
    /// event.
    pub async fn authz_req(
        &self,
        body: Result<hyper::body::Bytes, String>,
        started: Instant,
        deadline: Instant,
    ) -> AuthzResponse {
        let (req, outcome, ticket) = match body {
            Err(why) => (
                AuthzRequest::default(),
                Outcome::error(
                    Endpoint::Other,
                    RULE_REQUEST,
                    format!("the authorization request could not be read: {why}"),
                ),
                None,
            ),
            Ok(bytes) => {
                let decided =
                    tokio::time::timeout_at(deadline.into(), self.decide(bytes, deadline));
                match decided.await {
                    Ok(decided) => decided,
                    Err(_) => (
                        AuthzRequest::default(),
                        Outcome::error(
                            Endpoint::Other,
                            RULE_TIMEOUT,
                            format!(
                                "moat's authorization plugin did not decide within {} ms",
                                deadline.saturating_duration_since(started).as_millis()
                            ),
                        ),
                        None,
                    ),
                }
            }
        };
        let (verdict, response) = self.answer(&req, &outcome);
        if let Some(ticket) = ticket {
            if response.allow {
                ticket.allowed();
            }
        }
        self.stats
            .record(verdict, outcome.endpoint, started.elapsed());
        response
    }

    /// Notes an `AuthZRes` (the handler has run): ends the gate hold of an
    /// allowed start or rename. Responses are always allowed: denying one
    /// cannot undo what the handler did.
    pub fn authz_res(&self, body: &[u8]) -> AuthzResponse {
        let waiting = [Side::Start, Side::Rename]
            .into_iter()
            .any(|side| self.gate.awaits_response(side));
        if waiting {
            #[derive(serde::Deserialize)]
            struct Head {
                #[serde(rename = "RequestMethod", default)]
                method: String,
                #[serde(rename = "RequestUri", default)]
                uri: String,
            }
            if let Ok(head) = serde_json::from_slice::<Head>(body) {
                let req = AuthzRequest {
                    method: head.method,
                    uri: head.uri,
                    ..Default::default()
                };
                match target(&req) {
                    Target::Start(_) => self.gate.finished(Side::Start),
                    Target::Rename => self.gate.finished(Side::Rename),
                    Target::Other => {}
                }
            }
        }
        AuthzResponse {
            allow: true,
            ..Default::default()
        }
    }

    async fn decide(
        &self,
        bytes: hyper::body::Bytes,
        deadline: Instant,
    ) -> (AuthzRequest, Outcome, Option<Ticket<'_>>) {
        let loaded = self.store.current();
        let parsed = if bytes.len() > INLINE_BYTES {
            let loaded = loaded.clone();
            tokio::task::spawn_blocking(move || parse_and_evaluate(&loaded.policy, &bytes))
                .await
                .unwrap_or_else(|e| Err(format!("the decision panicked: {e}")))
        } else {
            parse_and_evaluate(&loaded.policy, &bytes)
        };
        let (req, decision) = match parsed {
            Ok(parsed) => parsed,
            Err(why) => {
                return (
                    AuthzRequest::default(),
                    Outcome::error(Endpoint::Other, RULE_REQUEST, why),
                    None,
                )
            }
        };
        let outcome = Outcome::from_decision(decision);
        if outcome.verdict != Verdict::Allow {
            return (req, outcome, None);
        }
        let enforce = self.mode == AuthzMode::Enforce;
        let gate_by = deadline
            .checked_sub(self.inspector.timeout())
            .unwrap_or(deadline);
        match target(&req) {
            Target::Other => (req, outcome, None),
            Target::Rename if !enforce => (req, outcome, None),
            Target::Rename => match self.gate.enter(Side::Rename, gate_by).await {
                Some(ticket) => (req, outcome, Some(ticket)),
                None => {
                    let message = "a container start is being checked; the rename waited for it \
                                   too long: retry it"
                        .to_owned();
                    (
                        req,
                        Outcome::error(outcome.endpoint, RULE_GATE, message),
                        None,
                    )
                }
            },
            Target::Start(name) => {
                let ticket = if enforce {
                    match self.gate.enter(Side::Start, gate_by).await {
                        Some(ticket) => Some(ticket),
                        None => {
                            let message = format!(
                                "container {name:?} is being renamed; the start waited for it \
                                 too long: retry it"
                            );
                            let o = Outcome::error(outcome.endpoint, RULE_GATE, message);
                            return (req, o, None);
                        }
                    }
                } else {
                    None
                };
                let checked = self
                    .check_container(&loaded.policy, &req.user, &name, outcome.endpoint)
                    .await;
                (req, checked, ticket)
            }
        }
    }

    /// Inspects container `name` and judges the configuration the daemon
    /// stored for it; a failed inspect is an error (denied in enforce
    /// mode).
    async fn check_container(
        &self,
        policy: &moat_policy::Policy,
        user: &str,
        name: &str,
        endpoint: Endpoint,
    ) -> Outcome {
        let failed = |why: String| {
            Outcome::error(
                endpoint,
                RULE_INSPECT,
                format!("cannot inspect container {name:?} to judge its configuration: {why}"),
            )
        };
        let Ok(_slot) = self.inspect_slots.acquire().await else {
            return failed("the plugin is shutting down".to_owned());
        };
        let inspected = match self.inspector.inspect(name).await {
            Ok(inspected) => inspected,
            Err(err) => return failed(error_chain(&err)),
        };
        let mut outcome = Outcome::from_decision(evaluate_inspect(policy, user, &inspected.json));
        // The start's own endpoint (restart is `other`), whatever the
        // inspect decision names.
        outcome.endpoint = endpoint;
        outcome.container = Some(inspected.id);
        outcome
    }

    /// The verdict and the answer by mode, and the audit event of anything
    /// but an allow.
    fn answer(&self, req: &AuthzRequest, outcome: &Outcome) -> (Verdict, AuthzResponse) {
        let enforce = self.mode == AuthzMode::Enforce;
        let verdict = match (outcome.verdict, enforce) {
            (Verdict::Deny, false) => Verdict::WouldDeny,
            (v, _) => v,
        };
        let outcome = Outcome {
            verdict,
            ..outcome.clone()
        };
        let allow = AuthzResponse {
            allow: true,
            ..Default::default()
        };
        if verdict == Verdict::Allow {
            return (verdict, allow);
        }
        self.audit.send(&Denial {
            action: if enforce {
                AuditAction::AuthzDenied
            } else {
                AuditAction::AuthzWouldDeny
            },
            mode: self.mode.as_str(),
            user: &req.user,
            method: &req.method,
            uri: &req.uri,
            endpoint: outcome.endpoint.label(),
            rule: &outcome.rule,
            message: &outcome.message,
            container: outcome.container.as_deref(),
        });
        if !enforce {
            return (verdict, allow);
        }
        let deny = AuthzResponse {
            allow: false,
            msg: format!("{} [rule: {}]", outcome.message, outcome.rule),
            err: String::new(),
        };
        (verdict, deny)
    }
}

/// Reads and decides a plugin request; `Err` when it is not one.
fn parse_and_evaluate(
    policy: &moat_policy::Policy,
    bytes: &[u8],
) -> Result<(AuthzRequest, Decision), String> {
    let req = AuthzRequest::from_json(bytes).map_err(|e| e.to_string())?;
    let decision = evaluate(policy, &req);
    Ok((req, decision))
}

/// An error and its sources, `: `-separated.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
