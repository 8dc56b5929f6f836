//! `docker run --rm IMAGE true` on a daemon with the plugin and on one
//! without, interleaved (see the method in `main.rs`).

use std::time::Instant;

use moat_tests::dockerd::{Dockerd, IMAGE};

use super::{progress, Config};

/// Rounds run before the measured ones.
pub(super) const WARMUP: usize = 2;

/// Wall times of the runs, ms.
pub(super) struct Runs {
    /// On the daemon without the plugin.
    pub plain: Vec<f64>,
    /// On the daemon asking the plugin.
    pub judged: Vec<f64>,
    /// `dockerd --version`.
    pub version: String,
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
    };
    for round in 0..WARMUP + cfg.runs {
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
    progress(
        started,
        format!("{} interleaved docker run pairs", runs.plain.len()),
    );
    Ok(runs)
}
