//! Decision latency: recorded requests at a fixed rate over keep-alive
//! connections, open loop (see the method in `main.rs`).

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moat_tests::authz::{authz_requests, sample, PluginMoatd, PluginSetup};
use moat_tests::workspace_root;

use super::{progress, Config};

/// Connections the requests are spread over.
pub(super) const CONNECTIONS: usize = 4;
/// Requests sent before the measured rounds.
pub(super) const WARMUP: usize = 200;

/// One recorded request: its file name, the whole HTTP request, and the
/// answer the policy crate gives it.
struct Recorded {
    name: String,
    http: Vec<u8>,
    answer: String,
}

/// What the latency rounds measured.
pub(super) struct Latency {
    /// p50 of each round, ms.
    pub p50: Vec<f64>,
    /// p99 of each round, ms.
    pub p99: Vec<f64>,
    /// The slowest request of each round, ms.
    pub max: Vec<f64>,
    /// Requests sent in the rounds (warm-up excluded).
    pub sent: usize,
    /// Rate achieved over the rounds, requests per second.
    pub achieved: f64,
    /// Recorded requests in the mix.
    pub mix: usize,
    /// Of those, denied by the baseline.
    pub mix_denied: usize,
    /// Answers that differed from the policy crate's decision.
    pub wrong: usize,
    /// Growth of `moat_authz_requests_total` (warm-up included).
    pub counted: f64,
    /// Requests sent in all (warm-up included).
    pub sent_all: usize,
    /// Share of moatd's own timings at 1 ms or less, percent.
    pub server_within_1ms: f64,
    /// moatd's CPU time (user + system) over the rounds, per request, µs.
    pub cpu_per_request_us: f64,
}

fn load_mix() -> Result<Vec<Recorded>, String> {
    let dir = workspace_root().join("agent/policy/tests/requests");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter(|p| {
            !p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("start-")
        })
        .collect();
    files.sort();
    let policy = moat_policy::baseline();
    files
        .iter()
        .map(|path| {
            let body = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let answer =
                serde_json::to_string(&moat_policy::evaluate_wire(&policy, &body).to_response())
                    .map_err(|e| e.to_string())?;
            let mut http = format!(
                "POST /AuthZPlugin.AuthZReq HTTP/1.1\r\nHost: plugin\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            http.extend_from_slice(&body);
            Ok(Recorded {
                name: path.file_name().unwrap().to_string_lossy().into_owned(),
                http,
                answer,
            })
        })
        .collect()
}

/// Reads one HTTP/1.1 response (with `Content-Length`) from `s`; returns
/// its body. `buf` keeps bytes read past it.
fn read_response(s: &mut UnixStream, buf: &mut Vec<u8>) -> Result<String, String> {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                return Err(format!(
                    "the plugin answered {}",
                    head.lines().next().unwrap_or("")
                ));
            }
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or("an answer without Content-Length")?;
            let total = end + 4 + length;
            while buf.len() < total {
                let n = s.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    return Err("the plugin closed the connection".into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = String::from_utf8_lossy(&buf[end + 4..total]).into_owned();
            buf.drain(..total);
            return Ok(body);
        }
        let n = s.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the plugin closed the connection".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Sends requests `first..first + count` of the mix at `rate`, spread over
/// the connections; returns each one's latency (ms) and the number of
/// wrong answers.
fn send(
    socket: &Path,
    mix: &Arc<Vec<Recorded>>,
    first: usize,
    count: usize,
    rate: u32,
) -> Result<(Vec<f64>, usize), String> {
    let period = Duration::from_secs_f64(1.0 / f64::from(rate));
    let t0 = Instant::now() + Duration::from_millis(20);
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|w| {
            let mix = mix.clone();
            let socket = socket.to_owned();
            std::thread::spawn(move || -> Result<(Vec<f64>, usize), String> {
                let mut s = UnixStream::connect(&socket)
                    .map_err(|e| format!("connect {}: {e}", socket.display()))?;
                s.set_read_timeout(Some(Duration::from_secs(10)))
                    .map_err(|e| e.to_string())?;
                let mut buf = Vec::new();
                let mut latencies = Vec::with_capacity(count / CONNECTIONS + 1);
                let mut wrong = 0;
                let mut previous_done = t0;
                for i in (w..count).step_by(CONNECTIONS) {
                    let due = t0 + period * i as u32;
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    let written = Instant::now();
                    let r = &mix[(first + i) % mix.len()];
                    s.write_all(&r.http).map_err(|e| format!("write: {e}"))?;
                    let body = read_response(&mut s, &mut buf)?;
                    let done = Instant::now();
                    // Busy with an earlier answer past the due time: the
                    // wait counts. Woken late by the timer: it does not.
                    let from = if previous_done > due { due } else { written };
                    latencies.push((done - from).as_secs_f64() * 1e3);
                    previous_done = done;
                    if body != r.answer {
                        wrong += 1;
                        if wrong == 1 {
                            eprintln!("{}: answered {body}, expected {}", r.name, r.answer);
                        }
                    }
                }
                Ok((latencies, wrong))
            })
        })
        .collect();
    let mut all = Vec::with_capacity(count);
    let mut wrong = 0;
    for w in workers {
        let (l, n) = w.join().map_err(|_| "a sender thread panicked")??;
        all.extend(l);
        wrong += n;
    }
    Ok((all, wrong))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(super) fn measure(
    cfg: &Config,
    setup: &PluginSetup,
    agent: &PluginMoatd,
    started: Instant,
) -> Result<Latency, String> {
    let mix = Arc::new(load_mix()?);
    let mix_denied = mix
        .iter()
        .filter(|r| r.answer.contains("\"Allow\":false"))
        .count();
    let before = agent.metrics();
    let (_, wrong_warmup) = send(&setup.socket, &mix, 0, WARMUP, cfg.rate)?;
    let per_round = ((cfg.seconds * f64::from(cfg.rate)) as usize).max(CONNECTIONS);
    let mut lat = Latency {
        p50: Vec::new(),
        p99: Vec::new(),
        max: Vec::new(),
        sent: 0,
        achieved: 0.0,
        mix: mix.len(),
        mix_denied,
        wrong: wrong_warmup,
        counted: 0.0,
        sent_all: WARMUP,
        server_within_1ms: f64::NAN,
        cpu_per_request_us: f64::NAN,
    };
    let cpu_before = super::docker_run::cpu_ms(agent.pid())?;
    let mut elapsed = 0.0;
    for round in 0..cfg.rounds {
        let t = Instant::now();
        let (mut l, wrong) = send(
            &setup.socket,
            &mix,
            WARMUP + round * per_round,
            per_round,
            cfg.rate,
        )?;
        elapsed += t.elapsed().as_secs_f64();
        l.sort_by(f64::total_cmp);
        lat.p50.push(percentile(&l, 50.0));
        lat.p99.push(percentile(&l, 99.0));
        lat.max.push(*l.last().unwrap_or(&f64::NAN));
        lat.wrong += wrong;
        lat.sent += l.len();
        progress(
            started,
            format!(
                "latency round {}: {} requests, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
                round + 1,
                l.len(),
                percentile(&l, 50.0),
                percentile(&l, 99.0),
                l.last().copied().unwrap_or(f64::NAN)
            ),
        );
    }
    lat.cpu_per_request_us =
        (super::docker_run::cpu_ms(agent.pid())? - cpu_before) * 1e3 / lat.sent as f64;
    lat.sent_all += lat.sent;
    lat.achieved = lat.sent as f64 / elapsed;
    let after = agent.metrics();
    let (b, a) = (authz_requests(&before), authz_requests(&after));
    lat.counted = a.values().sum::<f64>() - b.values().sum::<f64>();
    let bucket = "moat_authz_request_duration_seconds_bucket{le=\"0.001\"}";
    let count = "moat_authz_request_duration_seconds_count";
    let within = sample(&after, bucket) - sample(&before, bucket);
    let all = sample(&after, count) - sample(&before, count);
    lat.server_within_1ms = 100.0 * within / all;
    if lat.wrong > 0 {
        return Err(format!(
            "{} answers differed from the policy crate's decision",
            lat.wrong
        ));
    }
    if lat.counted != lat.sent_all as f64 {
        return Err(format!(
            "moat_authz_requests_total grew by {}, but {} requests were sent",
            lat.counted, lat.sent_all
        ));
    }
    Ok(lat)
}
