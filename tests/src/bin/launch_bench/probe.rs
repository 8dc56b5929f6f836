//! The namespace and cgroup probe: a `busybox sh` script run under each
//! launcher instead of `/bin/true`, its output compared with the harness's
//! own namespaces and cgroups. For crun, runc and bwrap it doubles as the
//! check that they accept the configuration.

use std::fs;

use moat_tests::oci;

use super::launcher::Launcher;
use super::variants::{Kind, Variant};
use super::{first_line, Opts, NAMESPACES};

/// What a probe saw from inside the workload.
pub(super) struct Probe {
    /// Namespaces that differ from the harness's.
    pub(super) new_namespaces: Vec<&'static str>,
    /// `/proc/self/cgroup` lines that differ from the harness's own.
    pub(super) cgroups: Vec<String>,
    /// `/proc/self/uid_map`, one line per extent, whitespace collapsed.
    pub(super) uid_map: Vec<String>,
}

/// Prints the workload's namespaces, cgroups and uid map, one tagged line
/// each. `$1` is the busybox binary: applets are run through it, so the
/// rootfs needs no more links than `bin/true`.
pub(super) const PROBE_SCRIPT: &str = "\
b=$1
for n in cgroup ipc mnt net pid time user uts; do echo \"ns $n $($b readlink /proc/self/ns/$n)\"; done
$b cat /proc/self/cgroup | while read -r l; do echo \"cg $l\"; done
$b cat /proc/self/uid_map | while read -r l; do echo \"map $l\"; done";

/// The harness's own namespaces and cgroups, which the probes compare with.
struct Own {
    /// `(name, link)` of `/proc/self/ns/<name>`.
    ns: Vec<(String, String)>,
    /// `/proc/self/cgroup` lines.
    cgroups: Vec<String>,
}

impl Own {
    fn read() -> Own {
        let ns = NAMESPACES
            .iter()
            .filter_map(|n| {
                let link = fs::read_link(format!("/proc/self/ns/{n}")).ok()?;
                Some((n.to_string(), link.to_string_lossy().into_owned()))
            })
            .collect();
        let cgroups = fs::read_to_string("/proc/self/cgroup")
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        Own { ns, cgroups }
    }
}

impl Launcher<'_> {
    /// Runs the namespace probe under `v`.
    fn probe(&mut self, v: &Variant, own: &Own) -> Result<Probe, String> {
        let busybox = self.opts.busybox.to_string_lossy().into_owned();
        let out = self
            .command(v, &[&busybox, "sh", "-c", PROBE_SCRIPT, "sh", &busybox])?
            .output()
            .map_err(|e| format!("{}: cannot start {}: {e}", v.kind.label(), v.exe.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "the probe failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let mut probe = Probe {
            new_namespaces: Vec::new(),
            cgroups: Vec::new(),
            uid_map: Vec::new(),
        };
        for line in stdout.lines() {
            let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
            match tag {
                "ns" => {
                    let (name, link) = rest.split_once(' ').unwrap_or((rest, ""));
                    let Some(&ns) = NAMESPACES.iter().find(|n| **n == name) else {
                        continue;
                    };
                    let host = own
                        .ns
                        .iter()
                        .find(|(n, _)| n == ns)
                        .map(|(_, l)| l.as_str());
                    if host != Some(link.trim()) {
                        probe.new_namespaces.push(ns);
                    }
                }
                "cg" if !own.cgroups.iter().any(|c| c == rest) => {
                    probe.cgroups.push(rest.to_string());
                }
                "map" => probe
                    .uid_map
                    .push(rest.split_whitespace().collect::<Vec<_>>().join(" ")),
                _ => {}
            }
        }
        if probe.uid_map.is_empty() {
            return Err(format!("the probe printed nothing useful:\n{stdout}"));
        }
        Ok(probe)
    }
}

/// runc replaces a container's stdio by its `/dev/null` when their device
/// numbers match, and a regular file has the same (0) as a pipe: a
/// `/dev/null` that is not the null device silently swallows the probe's
/// output (and every `> /dev/null` on the host fills a file).
pub(super) fn check_dev_null() -> Result<(), String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = fs::metadata("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    if m.file_type().is_char_device() && m.rdev() == libc::makedev(1, 3) {
        return Ok(());
    }
    Err(format!(
        "/dev/null is not the null device (mode {:o}, owner {}); restore it first: \
         rm /dev/null && mknod -m 666 /dev/null c 1 3",
        m.mode(),
        m.uid()
    ))
}

/// Runs the namespace probe under every variant that is not skipped. In
/// `--quick` a peer whose probe fails is skipped (it does not run here);
/// otherwise that is an error.
pub(super) fn probe_all(
    opts: &Opts,
    launcher: &mut Launcher,
    variants: &mut [Variant],
    have_busybox: bool,
) -> Result<(), String> {
    let own = Own::read();
    for v in variants.iter_mut() {
        let needs_busybox = v.kind.is_moat() || v.kind == Kind::Bwrap;
        if v.skipped.is_some() || v.kind == Kind::Floor || (needs_busybox && !have_busybox) {
            continue;
        }
        eprintln!("launch_bench: probing {}", v.kind.label());
        match launcher.probe(v, &own) {
            Ok(p) => v.probe = Some(p),
            Err(e) if opts.quick && !v.kind.is_moat() => {
                let mut why = format!("it does not run here: {}", first_line(&e));
                if let (Kind::Crun, Some(layout)) = (v.kind, oci::crun_layout_problem()) {
                    why = format!("{layout} ({why})");
                }
                eprintln!("launch_bench: skipping {}: {e}", v.kind.label());
                v.skipped = Some(why);
            }
            Err(e) => return Err(format!("{}: {e}", v.kind.label())),
        }
    }
    Ok(())
}
