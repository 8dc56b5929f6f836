//! `docker run --rm IMAGE true` on a daemon with the plugin and on one
//! without, interleaved (see the method in `main.rs`).

use std::time::Instant;

use moat_tests::dockerd::{Dockerd, IMAGE};

use super::{progress, Config};

/// Rounds run before the measured ones.
pub(super) const WARMUP: usize = 2;

/// Wall times of the runs, ms, and what they cost in CPU time.
pub(super) struct Runs {
    /// On the daemon without the plugin.
    pub plain: Vec<f64>,
    /// On the daemon asking the plugin.
    pub judged: Vec<f64>,
    /// `dockerd --version`.
    pub version: String,
    /// CPU time (user + system) per measured run: the daemon without the
    /// plugin, the one with it, and moatd, ms.
    pub cpu_plain: f64,
    /// See [`Runs::cpu_plain`].
    pub cpu_judged: f64,
    /// See [`Runs::cpu_plain`].
    pub cpu_moatd: f64,
}

/// CPU time (user + system) `pid` has used, ms.
pub(super) fn cpu_ms(pid: u32) -> Result<f64, String> {
    let stat = procfs::process::Process::new(pid as i32)
        .and_then(|p| p.stat())
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    Ok((stat.utime + stat.stime) as f64 * 1e3 / procfs::ticks_per_second() as f64)
}

fn timed_run(d: &Dockerd) -> Result<f64, String> {
    let t = Instant::now();
    let out = d.docker(&["run", "--rm", "--network", "none", IMAGE, "true"]);
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if !out.status.success() {
        return Err(format!(
            "docker run on {}: {}",
            d.socket().display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(ms)
}

pub(super) fn measure(
    cfg: &Config,
    mut plain: Dockerd,
    mut judged: Dockerd,
    plugin: &str,
    moatd_pid: u32,
    started: Instant,
) -> Result<Runs, String> {
    plain.start(&[])?;
    judged.start(&[plugin])?;
    plain.import_busybox();
    judged.import_busybox();
    progress(started, "two dockerds up, busybox imported");
    let mut runs = Runs {
        plain: Vec::new(),
        judged: Vec::new(),
        version: std::process::Command::new(moat_tests::dockerd::DOCKERD)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default(),
        cpu_plain: 0.0,
        cpu_judged: 0.0,
        cpu_moatd: 0.0,
    };
    let pids = [
        plain.pid().ok_or("dockerd (no plugin) is not running")?,
        judged.pid().ok_or("dockerd (plugin) is not running")?,
        moatd_pid,
    ];
    let mut cpu_before = [0.0; 3];
    for round in 0..WARMUP + cfg.runs {
        if round == WARMUP {
            for (i, pid) in pids.iter().enumerate() {
                cpu_before[i] = cpu_ms(*pid)?;
            }
        }
        let order: [(&Dockerd, bool); 2] = if round % 2 == 0 {
            [(&plain, false), (&judged, true)]
        } else {
            [(&judged, true), (&plain, false)]
        };
        for (d, with_plugin) in order {
            let ms = timed_run(d)?;
            if round >= WARMUP {
                if with_plugin {
                    runs.judged.push(ms);
                } else {
                    runs.plain.push(ms);
                }
            }
        }
    }
    let per_run = |i: usize| -> Result<f64, String> {
        Ok((cpu_ms(pids[i])? - cpu_before[i]) / cfg.runs as f64)
    };
    runs.cpu_plain = per_run(0)?;
    runs.cpu_judged = per_run(1)?;
    runs.cpu_moatd = per_run(2)?;
    progress(
        started,
        format!("{} interleaved docker run pairs", runs.plain.len()),
    );
    Ok(runs)
}
