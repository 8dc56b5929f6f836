//! `/metrics` with many workloads.

use super::*;

pub(super) struct Many {
    pub(super) n: usize,
    pub(super) first_ms: f64,
    /// The timed scrapes, in ms.
    pub(super) scrape_ms: Vec<f64>,
    pub(super) bytes: usize,
    pub(super) series: usize,
    pub(super) labels: usize,
    pub(super) setup_s: f64,
}

impl Many {
    /// The latency goal, set for [`GOAL_MANY_AT`] workloads and judged on
    /// every level at least that large (more workloads only make it harder).
    pub(super) fn goal(&self) -> Option<Goal> {
        (self.n >= GOAL_MANY_AT).then(|| Goal {
            text: format!("< {GOAL_MANY_SCRAPE_MS} ms (median)"),
            met: Some(Stats::of(&self.scrape_ms).median < GOAL_MANY_SCRAPE_MS),
        })
    }

    pub(super) fn rows(&self, cfg: &Config, rows: &mut Vec<Row>) {
        let scrape = Stats::of(&self.scrape_ms);
        let label = format!(
            "`/metrics` latency with {} workloads, median of {}",
            self.n, cfg.scrapes
        );
        let value = format!("{:.1} ms (max {:.1})", scrape.median, scrape.max);
        match self.goal() {
            Some(g) => rows.push(Row::with_goal(label, value, g.text, g.met == Some(true))),
            None => rows.push(Row::info(label, value)),
        }
        rows.push(Row::info(
            format!("`/metrics` first scrape with {} new workloads", self.n),
            format!("{:.1} ms", self.first_ms),
        ));
        rows.push(Row::info(
            format!("`/metrics` body with {} workloads", self.n),
            format!("{} bytes, {} series", self.bytes, self.series),
        ));
        rows.push(Row::with_goal(
            format!(
                "`bench-*` workload labels in `/metrics` with {} workloads",
                self.n
            ),
            format!("{}", self.labels),
            format!("= {}", self.n),
            self.labels == self.n,
        ));
        let _ = self.setup_s;
    }
}

pub(super) fn many_workloads(
    cfg: &Config,
    env: &Env,
    ready_ms: &mut Vec<f64>,
) -> Result<Vec<Many>, String> {
    let mut out = Vec::new();
    for &n in &cfg.levels {
        env.progress(format_args!("/metrics with {n} workloads: starting moatd"));
        let moatd = Moatd::start(env, &format!("many-{n}"))?;
        ready_ms.push(moatd.ready_ms);
        let mut cgroups = Cgroups::new();
        let t = Instant::now();
        for i in 0..n {
            let dir = cgroups
                .create(env.parent.join(format!("bench-{i}")))?
                .to_path_buf();
            let mut child = Held::fork(|_| {
                // SAFETY: the grandchild exits at once; reaping it.
                unsafe {
                    let pid = libc::fork();
                    if pid == 0 {
                        libc::_exit(0);
                    }
                    if pid < 0 {
                        return 1;
                    }
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                0
            })?;
            child.join(&dir)?;
            child.release()?;
            child.wait()?;
        }
        let setup_s = t.elapsed().as_secs_f64();
        env.progress(format_args!(
            "{n} workloads made in {setup_s:.1} s; scraping"
        ));
        let t = Instant::now();
        moatd.metrics()?;
        let first_ms = bench::ms(t.elapsed());
        let mut lat = Vec::new();
        let mut body = String::new();
        for _ in 0..cfg.scrapes {
            let t = Instant::now();
            body = moatd.metrics()?;
            lat.push(bench::ms(t.elapsed()));
        }
        let mut names: Vec<&str> = body
            .lines()
            .filter_map(|l| l.split_once("workload=\"bench-")?.1.split_once('"'))
            .map(|(n, _)| n)
            .filter(|n| n.parse::<usize>().is_ok())
            .collect();
        names.sort_unstable();
        names.dedup();
        out.push(Many {
            n,
            first_ms,
            scrape_ms: lat,
            bytes: body.len(),
            series: body
                .lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
                .count(),
            labels: names.len(),
            setup_s,
        });
        moatd.stop()?;
        cgroups.remove_all()?;
    }
    Ok(out)
}
