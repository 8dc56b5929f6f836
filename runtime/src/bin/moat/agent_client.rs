//! A minimal client for moatd's `/metrics`: an HTTP/1.1 GET over a plain TCP
//! connection with timeouts, and a parser for the Prometheus text exposition
//! format (what moatd serves unless the scraper asks for OpenMetrics).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};

/// moatd's default metrics URL (its default `http.listen`).
pub const DEFAULT_AGENT_URL: &str = "http://127.0.0.1:9740/metrics";

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

impl HttpUrl {
    /// Parses `http://host[:port][/path]`; `host:port[/path]` without a scheme is
    /// taken as HTTP too.
    pub fn parse(text: &str) -> Result<HttpUrl> {
        let rest = if let Some(rest) = text.strip_prefix("http://") {
            rest
        } else if text.starts_with("https://") {
            bail!("{text}: https is not supported: moatd serves plain HTTP (http://...)");
        } else if text.contains("://") {
            bail!("{text}: unsupported scheme: expected http://HOST:PORT/metrics");
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
            bail!("{text}: user names and passwords in the URL are not supported");
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| anyhow!("{text}: unterminated `[` in the host"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| anyhow!("{text}: expected `:PORT` after `]`"))?,
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
            bail!("{text}: no host: expected http://HOST:PORT/metrics");
        }
        let port = match port {
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| anyhow!("{text}: invalid port {p:?}"))?,
        };
        Ok(HttpUrl {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }

    /// The `Host` header value.
    fn host_header(&self) -> String {
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

/// Why a GET failed: the agent could not be reached at all, or it answered
/// something unusable.
#[derive(Debug)]
pub enum GetError {
    /// Name resolution, connection or transfer failed.
    Unreachable(std::io::Error),
    /// The agent answered, but not with a usable 200 response.
    Bad(anyhow::Error),
}

impl std::fmt::Display for GetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GetError::Unreachable(err) => write!(f, "{err}"),
            GetError::Bad(err) => write!(f, "{err:#}"),
        }
    }
}

/// `GET url` with `Connection: close`; returns the body of a 200 response.
pub fn get(url: &HttpUrl) -> std::result::Result<String, GetError> {
    let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(GetError::Unreachable)?
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
    let mut stream = stream.ok_or(GetError::Unreachable(last_err))?;
    let transfer = |stream: &mut TcpStream| -> std::io::Result<Vec<u8>> {
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: moat/{}\r\n\
             Accept: text/plain;version=0.0.4\r\nConnection: close\r\n\r\n",
            url.path,
            url.host_header(),
            env!("CARGO_PKG_VERSION"),
        );
        stream.write_all(request.as_bytes())?;
        let mut raw = Vec::new();
        stream.take(MAX_RESPONSE_BYTES + 1).read_to_end(&mut raw)?;
        Ok(raw)
    };
    let raw = transfer(&mut stream).map_err(GetError::Unreachable)?;
    if raw.len() as u64 > MAX_RESPONSE_BYTES {
        return Err(GetError::Bad(anyhow!(
            "the response is larger than {MAX_RESPONSE_BYTES} bytes"
        )));
    }
    parse_response(&raw).map_err(GetError::Bad)
}

/// The body of a complete HTTP/1.x response, if its status is 200.
fn parse_response(raw: &[u8]) -> Result<String> {
    if raw.is_empty() {
        bail!("the connection was closed without a response");
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("not an HTTP response (no end of headers)"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        bail!("not an HTTP/1 response: {status_line:?}");
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| anyhow!("bad Content-Length {value:?}"))?,
            );
        }
    }
    let body = if chunked {
        dechunk(body)?
    } else if let Some(length) = length {
        if body.len() < length {
            bail!(
                "the response was cut short: {} of {length} bytes",
                body.len()
            );
        }
        body[..length].to_vec()
    } else {
        body.to_vec()
    };
    let body = String::from_utf8(body).map_err(|_| anyhow!("the response is not UTF-8"))?;
    if status != 200 {
        let first = body.lines().next().unwrap_or_default().trim();
        let detail = if first.is_empty() {
            String::new()
        } else {
            format!(": {}", truncate(first, 200))
        };
        bail!("HTTP status {status}{detail}");
    }
    Ok(body)
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// Decodes a `Transfer-Encoding: chunked` body.
fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len());
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("the chunked response was cut short"))?;
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| anyhow!("bad chunk size {size_text:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            bail!("the chunked response was cut short");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// One sample of the text exposition format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name, e.g. `moat_forks_total`.
    pub name: String,
    /// Label pairs, in the order written.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a text exposition (Prometheus 0.0.4, and the sample lines of
/// OpenMetrics): comments and blank lines are skipped; a line that is not a
/// sample is an error naming its line number.
pub fn parse_exposition(text: &str) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let sample =
            parse_sample(line).with_context(|| format!("metrics line {}: {line:?}", index + 1))?;
        samples.push(sample);
    }
    Ok(samples)
}

fn parse_sample(line: &str) -> Result<Sample> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_ascii_whitespace())
        .ok_or_else(|| anyhow!("no value"))?;
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        bail!("invalid metric name {name:?}");
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let end = loop {
            // Skip separators and white space before a label name.
            while let Some(&(_, c)) = chars.peek() {
                if c == ',' || c.is_ascii_whitespace() {
                    chars.next();
                } else {
                    break;
                }
            }
            let Some(&(start, c)) = chars.peek() else {
                bail!("unterminated label set");
            };
            if c == '}' {
                break start + 1;
            }
            let mut label_name = String::new();
            while let Some(&(_, c)) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    label_name.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            if label_name.is_empty() {
                bail!("invalid label name at {:?}", &after[start..]);
            }
            while chars.peek().is_some_and(|&(_, c)| c.is_ascii_whitespace()) {
                chars.next();
            }
            if chars.next().map(|(_, c)| c) != Some('=') {
                bail!("expected `=` after label {label_name:?}");
            }
            while chars.peek().is_some_and(|&(_, c)| c.is_ascii_whitespace()) {
                chars.next();
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                bail!("expected `\"` to open the value of label {label_name:?}");
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    None => bail!("unterminated value of label {label_name:?}"),
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, other)) => {
                            value.push('\\');
                            value.push(other);
                        }
                        None => bail!("unterminated value of label {label_name:?}"),
                    },
                    Some((_, c)) => value.push(c),
                }
            }
            labels.push((label_name, value));
        };
        rest = &after[end..];
    }
    let mut fields = rest.split_ascii_whitespace();
    let value_text = fields.next().ok_or_else(|| anyhow!("no value"))?;
    let value = parse_value(value_text).ok_or_else(|| anyhow!("invalid value {value_text:?}"))?;
    // An optional timestamp (and OpenMetrics exemplars) may follow; unused here.
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
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
        assert_eq!(parse_response(raw).unwrap(), "abc");
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(raw).unwrap(), "abcde");
        let raw = b"HTTP/1.1 500 Internal Server Error\r\n\r\nreading the kernel maps failed\n";
        let err = parse_response(raw).unwrap_err().to_string();
        assert_eq!(err, "HTTP status 500: reading the kernel maps failed");
    }

    #[test]
    fn exposition() {
        let text = "# HELP x y\n# TYPE moat_forks_total counter\n\
                    moat_forks_total{workload=\"a\\\"b\",kind=\"process\"} 12\n\
                    moat_build_info{version=\"0.1.0\",kernel=\"6.18\",} 1 1700000000\n\
                    process_open_fds 7\nup NaN\n";
        let samples = parse_exposition(text).unwrap();
        assert_eq!(samples.len(), 4);
        assert_eq!(samples[0].name, "moat_forks_total");
        assert_eq!(samples[0].label("workload"), Some("a\"b"));
        assert_eq!(samples[0].label("kind"), Some("process"));
        assert_eq!(samples[0].value, 12.0);
        assert_eq!(samples[1].labels.len(), 2);
        assert_eq!(samples[2].value, 7.0);
        assert!(samples[3].value.is_nan());
        assert!(parse_exposition("bad{x=1} 2\n").is_err());
        assert!(parse_exposition("x{a=\"1\" 2\n").is_err());
    }
}
