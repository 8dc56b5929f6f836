//! Parts 2 and 3: the denial storm (exact counts, `/metrics` latency, CPU
//! time and memory meanwhile).

use super::*;

pub(super) struct Storm {
    pub(super) seen: i64,
    pub(super) counted: Option<f64>,
    pub(super) secs: f64,
    pub(super) audit_lines: usize,
    pub(super) audit_lines_total: usize,
    pub(super) dropped: Vec<(String, f64)>,
    pub(super) cpu_ms: f64,
    pub(super) rss_idle: f64,
    pub(super) rss_after: f64,
    pub(super) hwm: f64,
    pub(super) scrape_ms: Vec<f64>,
    pub(super) scrape_errors: usize,
}

impl Storm {
    pub(super) fn rows(&self, cfg: &Config, rows: &mut Vec<Row>, notes: &mut Vec<String>) {
        rows.push(Row::with_goal(
            "Storm: denials the workload saw",
            format!("{}", self.seen),
            format!("= {}", cfg.storm),
            self.seen == cfg.storm,
        ));
        let counted = self.counted.unwrap_or(f64::NAN);
        rows.push(Row::with_goal(
            format!("Storm: `moat_seccomp_denials_total{{workload=\"{STORM_NAME}\"}}`"),
            format!("{counted:.0}"),
            format!("= {} exactly", cfg.storm),
            counted == cfg.storm as f64,
        ));
        rows.push(Row::info(
            "Storm: duration",
            format!(
                "{:.0} ms ({:.0} denials/s)",
                self.secs * 1e3,
                cfg.storm as f64 / self.secs
            ),
        ));
        rows.push(Row::info(
            "Storm: audit events delivered (audit log lines of the workload)",
            format!("{}", self.audit_lines),
        ));
        let total: f64 = self.dropped.iter().map(|(_, n)| n).sum();
        let by: Vec<String> = self
            .dropped
            .iter()
            .filter(|(_, n)| *n > 0.0)
            .map(|(r, n)| format!("{r} {n:.0}"))
            .collect();
        rows.push(Row::info(
            "Storm: audit events dropped (`moat_audit_events_dropped_total`, all reasons)",
            if by.is_empty() {
                format!("{total:.0}")
            } else {
                format!("{total:.0} ({})", by.join(", "))
            },
        ));
        rows.push(Row::info(
            "Storm: moatd CPU time (utime+stime)",
            format!(
                "{:.0} ms ({:.1}% of one CPU over the storm)",
                self.cpu_ms,
                self.cpu_ms / (self.secs * 1e3) * 100.0
            ),
        ));
        let s = Stats::of(&self.scrape_ms);
        rows.push(Row::with_goal(
            format!(
                "Storm: `/metrics` latency, max of {} samples (every 50 ms)",
                self.scrape_ms.len()
            ),
            format!("{:.1} ms", s.max),
            format!("< {GOAL_STORM_SCRAPE_MS} ms"),
            s.max < GOAL_STORM_SCRAPE_MS && self.scrape_errors == 0 && !self.scrape_ms.is_empty(),
        ));
        rows.push(Row::info(
            "Storm: `/metrics` latency, p50",
            format!("{:.1} ms", s.median),
        ));
        rows.push(Row::info(
            "RSS at idle (VmRSS after start)",
            format!("{:.1} MiB", self.rss_idle),
        ));
        rows.push(Row::info(
            "RSS after the storm (VmRSS)",
            format!("{:.1} MiB", self.rss_after),
        ));
        rows.push(Row::info(
            "Peak RSS through the storm (VmHWM)",
            format!("{:.1} MiB", self.hwm),
        ));
        notes.push(format!(
            "Storm audit log: {} lines of `{STORM_NAME}` out of {} in all; the rest are other \
             processes of the node (which the agent sees too).",
            self.audit_lines, self.audit_lines_total
        ));
        if self.scrape_errors > 0 {
            notes.push(format!(
                "{} `/metrics` requests failed during the storm.",
                self.scrape_errors
            ));
        }
    }
}

pub(super) fn storm_filter() -> Result<(moat_runtime::seccomp::bpf::Program, u32), String> {
    let json = format!(
        r#"{{"defaultAction": "SCMP_ACT_ALLOW",
            "archMap": [{{"architecture": "SCMP_ARCH_X86_64",
                          "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}}],
            "syscalls": [{{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": {STORM_ERRNO}}}]}}"#
    );
    let source = Source::Builtin("agent_bench storm");
    let profile = parse::from_str(&json, source.clone()).map_err(|e| e.to_string())?;
    let (_, c) = compile_for_host(
        &profile,
        source,
        &CapSet::docker_default(),
        compile::Options::default(),
    )
    .map_err(|e| e.to_string())?;
    Ok((c.program, c.flags))
}

pub(super) fn storm(cfg: &Config, env: &Env, ready_ms: &mut Vec<f64>) -> Result<Storm, String> {
    env.progress(format_args!(
        "storm: starting moatd, then {} denied syscalls",
        cfg.storm
    ));
    let moatd = Moatd::start(env, "storm")?;
    ready_ms.push(moatd.ready_ms);
    std::thread::sleep(Duration::from_millis(500));
    let pid = moatd.pid();
    let rss_idle = status_mib(pid, "VmRSS")?;

    let (program, flags) = storm_filter()?;
    let mut cgroups = Cgroups::new();
    let dir = cgroups.create(env.parent.join(STORM_NAME))?.to_path_buf();
    let n = cfg.storm;
    let mut child = Held::fork(move |out| {
        if load::set_no_new_privs().is_err() || load::install(&program, flags).is_err() {
            let _ = write!(out, "installing the filter failed");
            return 1;
        }
        let mut denied = 0i64;
        for _ in 0..n {
            // SAFETY: no arguments.
            let r = unsafe { libc::syscall(libc::SYS_getppid) };
            if r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(STORM_ERRNO as i32)
            {
                denied += 1;
            }
        }
        let _ = write!(out, "{denied}");
        0
    })?;
    child.join(&dir)?;

    let cpu_before = cpu_ms(pid)?;
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        let addr = moatd.addr;
        std::thread::spawn(move || {
            let (mut lat, mut errors) = (Vec::new(), 0usize);
            let mut next = Instant::now();
            while !done.load(Ordering::SeqCst) {
                let t = Instant::now();
                match http_get(addr, "/metrics") {
                    Ok(r) if r.status == 200 => lat.push(bench::ms(t.elapsed())),
                    _ => errors += 1,
                }
                next += Duration::from_millis(50);
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
            (lat, errors)
        })
    };
    let t = Instant::now();
    child.release()?;
    let out = child.wait();
    let secs = t.elapsed().as_secs_f64();
    done.store(true, Ordering::SeqCst);
    let (scrape_ms, scrape_errors) = sampler.join().map_err(|_| "the sampler panicked")?;
    let seen: i64 = out?
        .trim()
        .parse()
        .map_err(|_| "the storm child reported no count")?;

    // Let the audit writer catch up: the log must not grow for 300 ms.
    let lines = |p: &Path| -> (usize, usize) {
        let text = std::fs::read_to_string(p).unwrap_or_default();
        let mut ours = 0;
        let mut all = 0;
        for l in text.lines() {
            all += 1;
            if serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .is_some_and(|v| v["workload"]["name"] == STORM_NAME)
            {
                ours += 1;
            }
        }
        (ours, all)
    };
    let mut last = std::fs::metadata(&moatd.audit)
        .map(|m| m.len())
        .unwrap_or(0);
    let mut stable_since = Instant::now();
    let settle = Instant::now();
    while stable_since.elapsed() < Duration::from_millis(300)
        && settle.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(50));
        let len = std::fs::metadata(&moatd.audit)
            .map(|m| m.len())
            .unwrap_or(0);
        if len != last {
            last = len;
            stable_since = Instant::now();
        }
    }
    let cpu = cpu_ms(pid)? - cpu_before;
    let (audit_lines, audit_lines_total) = lines(&moatd.audit);
    let body = moatd.metrics()?;
    let counted = sample_sum(
        &body,
        "moat_seccomp_denials_total",
        &[("workload", STORM_NAME)],
    );
    let dropped = ["rate_limited", "buffer_full", "write_failed"]
        .iter()
        .map(|r| {
            (
                r.to_string(),
                sample_sum(&body, "moat_audit_events_dropped_total", &[("reason", r)])
                    .unwrap_or(0.0),
            )
        })
        .collect();
    let rss_after = status_mib(pid, "VmRSS")?;
    let hwm = status_mib(pid, "VmHWM")?;
    moatd.stop()?;
    cgroups.remove_all()?;
    env.progress(format_args!(
        "storm: {seen} denials seen in {secs:.2} s, {} counted",
        counted.unwrap_or(f64::NAN)
    ));
    Ok(Storm {
        seen,
        counted,
        secs,
        audit_lines,
        audit_lines_total,
        dropped,
        cpu_ms: cpu,
        rss_idle,
        rss_after,
        hwm,
        scrape_ms,
        scrape_errors,
    })
}

// ---------------------------------------------------------------------------
// Part 4: /metrics with many workloads.
