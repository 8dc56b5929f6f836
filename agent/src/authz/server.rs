//! The plugin's HTTP/1.1 server on its unix socket.
//!
//! - `POST /Plugin.Activate` → `{"Implements":["authz"]}`;
//! - `POST /AuthZPlugin.AuthZReq` → the decision ([`Judge::authz_req`]);
//! - `POST /AuthZPlugin.AuthZRes` → allow ([`Judge::authz_res`]);
//! - anything else → 404 (405 for a known path with another method).
//!
//! dockerd's plugin client has no timeout, so the server bounds everything
//! itself: at most `max_connections` connections are served at once; at the
//! cap a new connection closes the oldest idle one (see [`super::conns`]),
//! or waits, with the ones after it in the socket's backlog, when every one
//! is inside a request; requests are served concurrently, so the inspect a
//! start waits for gets through; a connection idle for `idle_timeout` (or
//! slower than that with a request's headers) is closed;
//! a request's body and decision must be done within `request_timeout`,
//! else it is denied; a plugin request over
//! [`moat_policy::wire::MAX_REQUEST_BYTES`] is denied without being read
//! further.

use std::{
    convert::Infallible,
    sync::Arc,
    time::{Duration, Instant},
};

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{
    body::{Bytes, Incoming},
    header::{HeaderValue, ALLOW, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use moat_policy::wire::MAX_REQUEST_BYTES;
use tokio::{
    net::UnixListener,
    sync::{watch, Semaphore},
    task::JoinSet,
};

use super::{
    conns::{Conn, Registry},
    decide::Judge,
};

/// The plugin protocol's content type.
const PLUGIN_JSON: &str = "application/vnd.docker.plugins.v1.2+json";

/// How long open requests get to finish once moatd stops.
const DRAIN: Duration = Duration::from_secs(1);

/// How long an evicted connection gets to close by itself.
const EVICT_GRACE: Duration = Duration::from_millis(100);

/// The server's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Idle time (or time to send a request's headers) before a connection
    /// is closed.
    pub idle_timeout: Duration,
    /// Time for a request's body and its decision.
    pub request_timeout: Duration,
}

/// Serves `listener` with `judge` until `shutdown` turns true; open requests
/// then get [`DRAIN`] to finish.
pub async fn serve(
    listener: UnixListener,
    judge: Arc<Judge>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let registry = Arc::new(Registry::default());
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                // EMFILE and friends: wait a little rather than spin.
                log::warn!("accepting a plugin connection failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // At the cap, an idle connection makes room; when every one is
        // inside a request, this one waits for a slot (and the next ones
        // in the kernel's backlog).
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if registry.evict_oldest_idle() {
                    log::debug!("plugin connection cap reached: closed the oldest idle one");
                }
                tokio::select! {
                    _ = shutdown.changed() => break,
                    permit = slots.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                }
            }
        };
        let judge = judge.clone();
        let mut stop = shutdown.clone();
        let entry = registry.enter();
        connections.spawn(async move {
            let _permit = permit;
            let conn = entry.conn.clone();
            let service =
                service_fn(move |request| handle(request, judge.clone(), limits, conn.clone()));
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.idle_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(err) = result {
                        log::debug!("plugin connection: {err}");
                    }
                }
                _ = stop.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
                () = entry.conn.evicted() => {
                    // hyper closes a connection between requests at once,
                    // but one that has not finished a request's head yet
                    // only when the head arrives: that one is dropped.
                    connection.as_mut().graceful_shutdown();
                    let grace = tokio::time::sleep(EVICT_GRACE);
                    tokio::select! {
                        _ = connection.as_mut() => {}
                        () = grace => {
                            if entry.conn.is_busy() {
                                let _ = connection.await;
                            }
                        }
                    }
                }
            }
            drop(entry);
        });
        while connections.try_join_next().is_some() {}
    }
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN, drained).await.is_err() {
        connections.abort_all();
    }
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(PLUGIN_JSON));
    response
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(
        status,
        serde_json::to_vec(&serde_json::json!({ "Err": message })).unwrap_or_default(),
    )
}

/// The body, whole, by `deadline`; `Err` says why not.
async fn read_body(request: Request<Incoming>, deadline: Instant) -> Result<Bytes, String> {
    let limited = Limited::new(request.into_body(), MAX_REQUEST_BYTES);
    match tokio::time::timeout_at(deadline.into(), limited.collect()).await {
        Err(_) => Err("its body did not arrive in time".to_owned()),
        Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => Err(format!(
            "it is larger than the {MAX_REQUEST_BYTES} bytes a daemon sends"
        )),
        Ok(Err(err)) => Err(format!("reading its body failed: {err}")),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

async fn handle(
    request: Request<Incoming>,
    judge: Arc<Judge>,
    limits: Limits,
    conn: Arc<Conn>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    conn.begin();
    let response = respond(request, judge, limits).await;
    conn.end();
    response
}

async fn respond(
    request: Request<Incoming>,
    judge: Arc<Judge>,
    limits: Limits,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let started = Instant::now();
    let deadline = started + limits.request_timeout;
    let path = request.uri().path().to_owned();
    let known = matches!(
        path.as_str(),
        "/Plugin.Activate" | "/AuthZPlugin.AuthZReq" | "/AuthZPlugin.AuthZRes"
    );
    if !known {
        return Ok(error(StatusCode::NOT_FOUND, "not found"));
    }
    if request.method() != Method::POST {
        let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "only POST");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return Ok(response);
    }
    Ok(match path.as_str() {
        "/Plugin.Activate" => json(StatusCode::OK, br#"{"Implements":["authz"]}"#.to_vec()),
        "/AuthZPlugin.AuthZReq" => {
            let body = read_body(request, deadline).await;
            let answer = judge.authz_req(body, started, deadline).await;
            json(
                StatusCode::OK,
                serde_json::to_vec(&answer).unwrap_or_default(),
            )
        }
        _ => {
            // The daemon only reads Allow of an AuthZRes it already let
            // through; a body that cannot be read ends no gate hold (the
            // hold expires).
            let body = read_body(request, deadline).await.unwrap_or_default();
            let answer = judge.authz_res(&body);
            json(
                StatusCode::OK,
                serde_json::to_vec(&answer).unwrap_or_default(),
            )
        }
    })
}
