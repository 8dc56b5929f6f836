//! The request handler: `GET /metrics` (text format 0.0.4, or OpenMetrics when
//! the `Accept` header asks for it), `GET /` (a landing page linking to it), 404
//! for any other path and 405 for methods other than GET and HEAD.

use std::{convert::Infallible, sync::Arc};

use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    header::{HeaderValue, ACCEPT, ALLOW, CONTENT_TYPE},
    Method, Request, Response, StatusCode,
};

use crate::{
    collect::SnapshotSource,
    export::metrics::{Format, Metrics, RenderError},
};

/// How long a scrape waits for the collector's fresh snapshot before it is
/// served the last one published.
const FRESHNESS_BOUND: std::time::Duration = std::time::Duration::from_secs(1);

const LANDING_PAGE: &str = concat!(
    "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>moatd</title></head>\n",
    "<body>\n<h1>moatd ",
    env!("CARGO_PKG_VERSION"),
    "</h1>\n<p>moat's node agent: seccomp denials, process events and pids limits of every ",
    "workload on this node.</p>\n<ul><li><a href=\"/metrics\">Metrics</a></li></ul>\n",
    "</body>\n</html>\n"
);

/// Answers one request. Each scrape asks the collector for a snapshot taken
/// after the request arrived (so it sees everything counted before it) and
/// waits for it at most [`FRESHNESS_BOUND`].
pub(super) async fn handle(
    request: Request<Incoming>,
    metrics: Arc<Metrics>,
    source: SnapshotSource,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(response);
    }
    Ok(match request.uri().path() {
        "/metrics" => {
            let format = Format::negotiate(
                request
                    .headers()
                    .get(ACCEPT)
                    .and_then(|value| value.to_str().ok()),
            );
            let snapshot = source.fresh(FRESHNESS_BOUND).await;
            let rendered = tokio::task::spawn_blocking(move || metrics.render(snapshot, format))
                .await
                .map_err(|err| format!("the scrape panicked: {err}"))
                .and_then(|rendered| rendered.map_err(|err: RenderError| err.to_string()));
            match rendered {
                Ok(body) => {
                    let mut response = Response::new(Full::new(Bytes::from(body)));
                    response.headers_mut().insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static(format.content_type()),
                    );
                    response
                }
                Err(err) => plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("{err}\n")),
            }
        }
        "/" => {
            let mut response =
                Response::new(Full::new(Bytes::from_static(LANDING_PAGE.as_bytes())));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            response
        }
        _ => plain(StatusCode::NOT_FOUND, "not found: try /metrics\n"),
    })
}

fn plain(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
