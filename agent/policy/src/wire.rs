//! The authorization plugin protocol's messages, as dockerd 20.10 sends them
//! (moby `pkg/authorization/api.go`).
//!
//! Field names are the daemon's, which differ from Docker's documentation
//! table: `RequestUri` (not `RequestURI`), `RequestHeaders`. Every field may
//! be absent (`omitempty`). Bodies and certificates are Go `[]byte`, i.e.
//! standard padded base64 in JSON; certificates carry PEM text.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::base64;

/// The largest request accepted (4 MiB). dockerd forwards a body only when
/// it is under 1 MiB (`maxBodySize`), so the largest message it sends is an
/// `AuthZRes` with a request and a response body under 1 MiB each, base64
/// (×4/3: 2 × 1,398,102 bytes), plus headers and certificates. Anything
/// larger did not come from a daemon and is denied, never truncated.
pub const MAX_REQUEST_BYTES: usize = 4 << 20;

/// `POST /AuthZPlugin.AuthZReq` and `/AuthZPlugin.AuthZRes` bodies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct AuthzRequest {
    /// The TLS client certificate's common name; empty on the unix socket.
    #[serde(rename = "User", default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// `TLS` when `user` comes from a client certificate.
    #[serde(
        rename = "UserAuthNMethod",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub user_authn_method: String,
    /// The HTTP method.
    #[serde(
        rename = "RequestMethod",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub method: String,
    /// The request target as the client sent it: version prefix, percent
    /// encoding and query included.
    #[serde(
        rename = "RequestUri",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub uri: String,
    /// The request body, when the daemon forwarded it (JSON, 0 < length <
    /// 1 MiB, URI not ending in `/auth`).
    #[serde(
        rename = "RequestBody",
        default,
        deserialize_with = "de_bytes",
        serialize_with = "ser_bytes",
        skip_serializing_if = "Option::is_none"
    )]
    pub body: Option<Vec<u8>>,
    /// Request headers, one value each (`Authorization` and `X-Registry-*`
    /// removed by the daemon).
    #[serde(
        rename = "RequestHeaders",
        default,
        deserialize_with = "de_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub headers: BTreeMap<String, String>,
    /// The client's certificates (PEM), when TLS is used.
    #[serde(
        rename = "RequestPeerCertificates",
        default,
        deserialize_with = "de_certs",
        skip_serializing
    )]
    pub peer_certificates: Vec<Vec<u8>>,
    /// The handler's status code (`AuthZRes` only).
    #[serde(
        rename = "ResponseStatusCode",
        default,
        skip_serializing_if = "is_zero"
    )]
    pub response_status: i64,
    /// The response body (`AuthZRes` only).
    #[serde(
        rename = "ResponseBody",
        default,
        deserialize_with = "de_bytes",
        skip_serializing
    )]
    pub response_body: Option<Vec<u8>>,
    /// The response headers (`AuthZRes` only).
    #[serde(
        rename = "ResponseHeaders",
        default,
        deserialize_with = "de_map",
        skip_serializing
    )]
    pub response_headers: BTreeMap<String, String>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// The plugin's answer: `{"Allow":bool,"Msg":"...","Err":"..."}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthzResponse {
    /// Whether the request may proceed.
    #[serde(rename = "Allow")]
    pub allow: bool,
    /// Shown to the client on a deny (`authorization denied by plugin
    /// NAME: MSG`).
    #[serde(rename = "Msg", default, skip_serializing_if = "String::is_empty")]
    pub msg: String,
    /// An error; the daemon denies the request when it is set.
    #[serde(rename = "Err", default, skip_serializing_if = "String::is_empty")]
    pub err: String,
}

/// Why a plugin request could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Larger than [`MAX_REQUEST_BYTES`].
    #[error(
        "authorization request of {size} bytes is larger than the {MAX_REQUEST_BYTES} accepted"
    )]
    TooLarge {
        /// Its size.
        size: usize,
    },
    /// Not the protocol's JSON.
    #[error("authorization request does not decode: {0}")]
    Json(#[from] serde_json::Error),
}

impl AuthzRequest {
    /// Reads a request as the daemon sends it, refusing oversized ones
    /// before parsing.
    pub fn from_json(bytes: &[u8]) -> Result<AuthzRequest, WireError> {
        if bytes.len() > MAX_REQUEST_BYTES {
            return Err(WireError::TooLarge { size: bytes.len() });
        }
        Ok(serde_json::from_slice(bytes)?)
    }

    /// A request header by name, case-insensitively (Go canonicalises
    /// names, so `Content-Type` is the usual spelling).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn de_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) => base64::decode(&s)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

fn ser_bytes<S: serde::Serializer>(b: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    match b {
        Some(b) => s.serialize_str(&base64::encode(b)),
        None => s.serialize_none(),
    }
}

fn de_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    Ok(Option::<BTreeMap<String, String>>::deserialize(d)?.unwrap_or_default())
}

fn de_certs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
    Option::<Vec<String>>::deserialize(d)?
        .unwrap_or_default()
        .iter()
        .map(|s| base64::decode(s).map_err(serde::de::Error::custom))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_daemons_field_names_and_base64_bodies() {
        let r = AuthzRequest::from_json(
            br#"{"User":"ci","UserAuthNMethod":"TLS","RequestMethod":"POST",
                "RequestUri":"/v1.41/containers/create?name=x","RequestBody":"e30=",
                "RequestHeaders":{"Content-Type":"application/json","Content-Length":"2"},
                "RequestPeerCertificates":["LS0t"],"Unknown":1}"#,
        )
        .unwrap();
        assert_eq!(r.user, "ci");
        assert_eq!(r.method, "POST");
        assert_eq!(r.uri, "/v1.41/containers/create?name=x");
        assert_eq!(r.body.as_deref(), Some(&b"{}"[..]));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.peer_certificates, vec![b"---".to_vec()]);
    }

    #[test]
    fn every_field_is_optional_and_null_is_absent() {
        let r = AuthzRequest::from_json(b"{}").unwrap();
        assert_eq!(r, AuthzRequest::default());
        let r = AuthzRequest::from_json(br#"{"RequestBody":null,"RequestHeaders":null}"#).unwrap();
        assert_eq!(r.body, None);
    }

    #[test]
    fn refuses_oversize_and_bad_base64() {
        let big = vec![b' '; MAX_REQUEST_BYTES + 1];
        assert!(matches!(
            AuthzRequest::from_json(&big),
            Err(WireError::TooLarge { .. })
        ));
        assert!(AuthzRequest::from_json(br#"{"RequestBody":"e30"}"#).is_err());
    }

    #[test]
    fn response_serialises_as_the_daemon_expects() {
        let r = AuthzResponse {
            allow: false,
            msg: "no".into(),
            err: String::new(),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"Allow":false,"Msg":"no"}"#
        );
        let r = AuthzResponse {
            allow: true,
            ..Default::default()
        };
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"Allow":true}"#);
    }
}
