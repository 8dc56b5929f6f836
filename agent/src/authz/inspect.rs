//! The container inspect at start: `GET /containers/{name}/json` on the
//! Docker API socket, bounded in time and size.
//!
//! The request passes through the daemon's authorization chain like any
//! other (dockerd sends this plugin an `AuthZReq` for it while the start
//! waits), so the plugin serves requests concurrently and the inspect has a
//! timeout of its own.

use std::{path::PathBuf, time::Duration};

use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::{body::Bytes, Request, StatusCode};
use hyper_util::rt::TokioIo;
use moat_policy::InspectJson;
use tokio::net::UnixStream;

/// The largest inspect answer read (a container with a very large
/// environment or label set; anything larger is refused).
const MAX_INSPECT_BYTES: usize = 16 << 20;

/// Why a container could not be inspected.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The Docker socket refused the connection.
    #[error("cannot connect to the Docker API at {}", socket.display())]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("the Docker API did not answer within {} ms", timeout.as_millis())]
    Timeout {
        /// The bound.
        timeout: Duration,
    },
    /// The HTTP exchange failed.
    #[error("the Docker API request failed")]
    Http(#[source] hyper::Error),
    /// The answer was not 200.
    #[error("the Docker API answered {status}: {message}")]
    Status {
        /// The status.
        status: StatusCode,
        /// The daemon's `message`.
        message: String,
    },
    /// The answer could not be read.
    #[error("the Docker API's answer could not be read: {reason}")]
    Body {
        /// Why.
        reason: String,
    },
}

/// A container's configuration as the daemon stores it.
#[derive(Debug)]
pub struct Inspected {
    /// The inspect JSON, parsed as the policy reads it.
    pub json: InspectJson,
    /// The container's full id.
    pub id: String,
}

/// Inspects containers through one Docker API socket.
#[derive(Debug, Clone)]
pub struct Inspector {
    socket: PathBuf,
    timeout: Duration,
}

/// `name` percent-encoded for a path segment: the daemon decodes it back to
/// the same name, whatever it contains (`/`, `?`, `%`...).
fn encode_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Inspector {
    /// An inspector of `socket`, each inspect bounded by `timeout`.
    pub fn new(socket: PathBuf, timeout: Duration) -> Self {
        Self { socket, timeout }
    }

    /// The configured bound.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Inspects container `name` (a name, an id or an id prefix, as the
    /// start request gave it), within the timeout.
    pub async fn inspect(&self, name: &str) -> Result<Inspected, InspectError> {
        tokio::time::timeout(self.timeout, self.exchange(name))
            .await
            .map_err(|_| InspectError::Timeout {
                timeout: self.timeout,
            })?
    }

    async fn exchange(&self, name: &str) -> Result<Inspected, InspectError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| InspectError::Connect {
                    socket: self.socket.clone(),
                    source,
                })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(InspectError::Http)?;
        // Driven here, not spawned: it ends with this function (or its
        // timeout), so no task outlives the inspect.
        let connection = async move {
            let _ = connection.await;
        };
        // No API version prefix: the daemon's own version, whose inspect
        // format the policy reads.
        let request = Request::get(format!("/containers/{}/json", encode_segment(name)))
            .header(hyper::header::HOST, "docker")
            .body(Empty::<Bytes>::new())
            .map_err(|e| InspectError::Body {
                reason: e.to_string(),
            })?;
        let exchange = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(InspectError::Http)?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_INSPECT_BYTES)
                .collect()
                .await
                .map_err(|e| InspectError::Body {
                    reason: e.to_string(),
                })?
                .to_bytes();
            Ok::<_, InspectError>((status, body))
        };
        tokio::pin!(connection, exchange);
        let mut connection_done = false;
        let (status, body) = loop {
            tokio::select! {
                biased;
                result = &mut exchange => break result?,
                () = &mut connection, if !connection_done => connection_done = true,
            }
        };
        if status != StatusCode::OK {
            #[derive(serde::Deserialize)]
            struct Message {
                message: String,
            }
            let message = serde_json::from_slice::<Message>(&body)
                .map(|m| m.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).trim().to_owned());
            return Err(InspectError::Status { status, message });
        }
        #[derive(serde::Deserialize)]
        struct Id {
            #[serde(rename = "Id")]
            id: String,
        }
        let id = serde_json::from_slice::<Id>(&body)
            .map_err(|e| InspectError::Body {
                reason: format!("no container Id: {e}"),
            })?
            .id;
        let json = InspectJson::parse(&body).map_err(|e| InspectError::Body {
            reason: e.to_string(),
        })?;
        Ok(Inspected { json, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded_as_one_segment() {
        assert_eq!(encode_segment("web-1_a.b"), "web-1_a.b");
        assert_eq!(encode_segment("a/b?c%d e"), "a%2Fb%3Fc%25d%20e");
        assert_eq!(encode_segment("é"), "%C3%A9");
    }
}
