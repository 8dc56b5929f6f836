//! A small blocking HTTP/1.1 client: one request per connection (`Connection:
//! close`), with timeouts and a size bound; response heads and chunk sizes are
//! parsed by `httparse`. Enough for `moat stats` and the tests to read moatd's
//! `/metrics` (and Prometheus's API), without an async runtime.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream, ToSocketAddrs as _},
    time::Duration,
};

/// How long to wait for the connection to be established.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long any single read or write may block.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Responses larger than this are refused (moatd's are a few hundred KiB at most).
const MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;

/// An `http://host[:port][/path]` URL. The path defaults to `/metrics` when it is
/// empty or `/`, so `http://127.0.0.1:9740` names the agent as well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// Host name or address, without brackets for IPv6.
    pub host: String,
    /// Port (80 when the URL has none).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

/// A URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{url}: {reason}")]
pub struct UrlError {
    /// The URL as given.
    pub url: String,
    /// What is wrong with it.
    pub reason: String,
}

impl HttpUrl {
    /// Parses `http://host[:port][/path]`; `host:port[/path]` without a scheme is
    /// taken as HTTP too.
    pub fn parse(text: &str) -> Result<HttpUrl, UrlError> {
        let bad = |reason: &str| UrlError {
            url: text.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = if let Some(rest) = text.strip_prefix("http://") {
            rest
        } else if text.starts_with("https://") {
            return Err(bad(
                "https is not supported: moatd serves plain HTTP (http://...)",
            ));
        } else if text.contains("://") {
            return Err(bad("unsupported scheme: expected http://HOST:PORT/metrics"));
        } else {
            text
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let path = if path.is_empty() || path == "/" {
            "/metrics"
        } else {
            path
        };
        if authority.contains('@') {
            return Err(bad("user names and passwords in the URL are not supported"));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| bad("unterminated `[` in the host"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad("expected `:PORT` after `]`"))?,
                ),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host: expected http://HOST:PORT/metrics"));
        }
        let port = match port {
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| bad(&format!("invalid port {p:?}")))?,
        };
        Ok(HttpUrl {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }

    /// The URL of `path` on `addr`.
    pub fn at(addr: SocketAddr, path: &str) -> HttpUrl {
        HttpUrl {
            host: addr.ip().to_string(),
            port: addr.port(),
            path: path.to_owned(),
        }
    }

    /// The `Host` header value.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 80 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// Why a request failed: the server could not be reached at all, or it answered
/// something unusable.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Name resolution, connection or transfer failed.
    #[error(transparent)]
    Unreachable(std::io::Error),
    /// The server answered, but not with a usable response.
    #[error("{0}")]
    Bad(String),
}

/// An HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body, decoded from chunks if it was chunked.
    pub body: String,
}

impl Response {
    /// The value of header `name` (lower case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `METHOD url` with extra `headers`; returns the response whatever its status.
pub fn request(
    method: &str,
    url: &HttpUrl,
    headers: &[(&str, &str)],
) -> Result<Response, ClientError> {
    let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(ClientError::Unreachable)?
        .collect();
    let mut last_err = std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("{} resolves to no address", url.host),
    );
    let mut stream = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(err) => last_err = err,
        }
    }
    let mut stream = stream.ok_or(ClientError::Unreachable(last_err))?;
    let mut text = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: moat/{}\r\nConnection: close\r\n",
        url.path,
        url.host_header(),
        env!("CARGO_PKG_VERSION"),
    );
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    let transfer = |stream: &mut TcpStream| -> std::io::Result<Vec<u8>> {
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.write_all(text.as_bytes())?;
        let mut raw = Vec::new();
        stream.take(MAX_RESPONSE_BYTES + 1).read_to_end(&mut raw)?;
        Ok(raw)
    };
    let raw = transfer(&mut stream).map_err(ClientError::Unreachable)?;
    if raw.len() as u64 > MAX_RESPONSE_BYTES {
        return Err(ClientError::Bad(format!(
            "the response is larger than {MAX_RESPONSE_BYTES} bytes"
        )));
    }
    parse_response(&raw, method == "HEAD").map_err(ClientError::Bad)
}

/// `GET url` asking for the Prometheus text format; returns the body of a 200
/// response, and any other status as [`ClientError::Bad`] with the body's first
/// line.
pub fn get(url: &HttpUrl) -> Result<String, ClientError> {
    let response = request("GET", url, &[("Accept", "text/plain;version=0.0.4")])?;
    if response.status != 200 {
        let first = response.body.lines().next().unwrap_or_default().trim();
        let detail = if first.is_empty() {
            String::new()
        } else {
            format!(": {}", truncate(first, 200))
        };
        return Err(ClientError::Bad(format!(
            "HTTP status {}{detail}",
            response.status
        )));
    }
    Ok(response.body)
}

/// Reads a complete HTTP/1.x response (`raw`: everything the server sent
/// before it closed the connection; `head_only` for the answer to a HEAD): the
/// status, the headers and the body (`Content-Length` or chunked), or why it
/// is not one. What [`request`] does with what it received; public for the
/// fuzz target of `moat stats`' reader.
pub fn parse_response(raw: &[u8], head_only: bool) -> Result<Response, String> {
    if raw.is_empty() {
        return Err("the connection was closed without a response".to_owned());
    }
    let mut header_slots = [httparse::EMPTY_HEADER; 64];
    let mut head = httparse::Response::new(&mut header_slots);
    let head_len = match head.parse(raw) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return Err("not an HTTP response (no end of headers)".to_owned())
        }
        Err(err) => return Err(format!("not an HTTP/1 response: {err}")),
    };
    let status = head.code.ok_or("no status code")?;
    let headers: Vec<(String, String)> = head
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).trim().to_owned(),
            )
        })
        .collect();
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let chunked = find("transfer-encoding").is_some_and(|v| {
        v.rsplit(',')
            .next()
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"))
    });
    let body = &raw[head_len..];
    let body = if head_only {
        Vec::new()
    } else if chunked {
        dechunk(body)?
    } else if let Some(length) = find("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| format!("bad Content-Length {length:?}"))?;
        if body.len() < length {
            return Err(format!(
                "the response was cut short: {} of {length} bytes",
                body.len()
            ));
        }
        body[..length].to_vec()
    } else {
        body.to_vec()
    };
    let body = String::from_utf8(body).map_err(|_| "the response is not UTF-8".to_owned())?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Decodes a `Transfer-Encoding: chunked` body.
fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(data.len());
    loop {
        let (consumed, size) = match httparse::parse_chunk_size(data) {
            Ok(httparse::Status::Complete(found)) => found,
            Ok(httparse::Status::Partial) => {
                return Err("the chunked response was cut short".to_owned())
            }
            Err(_) => return Err("bad chunk size".to_owned()),
        };
        data = &data[consumed..];
        if size == 0 {
            return Ok(out);
        }
        let size = usize::try_from(size).map_err(|_| "bad chunk size".to_owned())?;
        // A server can announce any size, up to u64::MAX: compare without
        // adding to it (found by the exposition_reader fuzz target).
        if data.len().saturating_sub(2) < size {
            return Err("the chunked response was cut short".to_owned());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = HttpUrl::parse("http://127.0.0.1:9740/metrics").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 9740, "/metrics")
        );
        let u = HttpUrl::parse("http://localhost:1").unwrap();
        assert_eq!(u.path, "/metrics");
        let u = HttpUrl::parse("[::1]:9740/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 9740, "/metrics")
        );
        assert_eq!(u.host_header(), "[::1]:9740");
        let u = HttpUrl::parse("http://node/x?y=1").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/x?y=1"));
        assert!(HttpUrl::parse("https://a/metrics").is_err());
        assert!(HttpUrl::parse("http://:80/").is_err());
        assert!(HttpUrl::parse("http://a:99999/").is_err());
    }

    #[test]
    fn responses() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef";
        assert_eq!(parse_response(raw, false).unwrap().body, "abc");
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(raw, false).unwrap().body, "abcde");
        let raw = b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\nreading the kernel maps failed\n";
        let response = parse_response(raw, false).unwrap();
        assert_eq!(response.status, 500);
        assert_eq!(response.header("content-type"), Some("text/plain"));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n", false).is_err());
        assert!(parse_response(b"", false).is_err());
        let cut = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab";
        assert!(parse_response(cut, false).is_err());
        // A chunk announced as 2^64 - 1 bytes is cut short, not an overflow.
        let huge = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nab\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(huge, false).unwrap_err(),
            "the chunked response was cut short"
        );
    }
}
