//! The Markdown report, and what it and the JSON say besides the figures:
//! the conditions of the measurement and the machine.

use std::fmt::Write as _;
use std::process::{Command, Stdio};

use moat_runtime::seccomp::compile;
use moat_tests::bench;
use moat_tests::oci::{self, HOST_ID, ID_RANGE};

use super::outside::Outside;
use super::workloads::WORKLOADS;
use super::{first_line, Config, Measured, CGROUP_PARENT, IN_ROOTFS, PIDS_LIMIT, SINGLE_FILTER};

/// The Markdown report.
pub(super) fn render(
    cfg: Config,
    m: &Measured,
    conditions: &[String],
    machine: &[(String, String)],
) -> String {
    let mut s = String::new();
    bench::write_table(&mut s, &m.rows);
    bench::write_machine(&mut s, machine);

    bench::write_conditions(&mut s, conditions);

    let _ = writeln!(s, "\n### Per-round values (ns per call or iteration)\n");
    bench::write_round_header(&mut s, cfg.rounds);
    for (w, wl) in WORKLOADS.iter().enumerate() {
        for (v, var) in m.variants.iter().enumerate() {
            if var.skipped.is_some() {
                continue;
            }
            let _ = write!(s, "| {} | {} |", wl.label, var.name);
            for x in &m.samples[v][w] {
                let _ = write!(s, " {x:.1} |");
            }
            let _ = writeln!(s);
        }
    }
    s
}

/// How the figures were made, one sentence each (the Markdown's
/// conditions and the JSON's).
pub(super) fn conditions(cfg: Config, m: &Measured, outside: &Outside) -> Vec<String> {
    let mut c = vec![
        format!(
            "Mode: {}; build: {}.",
            bench::mode(cfg.quick),
            bench::build()
        ),
        format!(
            "Pinned to CPU {}; forked children inherit the pinning, the loops under `moat run` \
             and crun pin themselves to it (`--cpu`).",
            m.cpu
        ),
        format!(
            "Compile time: every loop is {} warm-ups, then {} timed runs (whole: parse + \
             detect host + resolve + libseccomp compile + export, `Dispatch::Auto`, Docker's \
             default capabilities; stage medians come from a separate loop). The JSON's \
             baseline \"{SINGLE_FILTER}\" is the same compile with `Layout::Combined`.",
            cfg.compile_warmup, cfg.compile_runs
        ),
        format!(
            "Per-syscall cost: {} rounds after one discarded warm-up round, each running every \
             variant once (order rotated per round); each run times {} calls of `getppid`, {} \
             iterations of `socket`+`close` (both syscalls timed, nothing subtracted) and {} \
             calls of `mount`, each after a warm-up of a tenth as many; figures are medians \
             over the rounds. `tree` is the default profile compiled with \
             `Dispatch::BinaryTree`, `linear` with `Dispatch::Linear`, both installed by a \
             forked child of the harness.",
            cfg.rounds, cfg.calls, cfg.socket_calls, cfg.calls
        ),
        format!(
            "`moat run`: `{} run --userns auto --pids-limit {PIDS_LIMIT} --cgroup-parent \
             {CGROUP_PARENT} -- seccomp_bench --loop all --calls {} --cpu {}` (built-in \
             default profile, Docker's default capabilities, `no_new_privs`); it is moat's \
             figure in the JSON: the filter as the product installs it.",
            outside.moat.display(),
            cfg.calls,
            m.cpu
        ),
        format!(
            "crun: `crun run` of a bundle whose rootfs holds `seccomp_bench` (as `{IN_ROOTFS}`) \
             and the libraries `ldd` lists; `config.json` as launch_bench's (`crun spec \
             --rootless` with user namespace 0:{HOST_ID}:{ID_RANGE}, `pids.limit` \
             {PIDS_LIMIT}, Docker's default capabilities, `noNewPrivileges`) with moat's \
             built-in profile resolved for this host in OCI form; crun compiles it with its \
             own libseccomp."
        ),
        "`mount` is denied by the filter before the mount code runs, while without a filter \
         the kernel's own (slower) error path runs, so its \"/ no filter\" ratios are below 1 \
         and are not a filter overhead; read its \"linear / tree\" and \"moat run / crun\" \
         figures (the JSON's baseline for it is crun)."
            .to_string(),
        "\"BPF insns run\" is computed, not measured: the instructions the program executes \
         for that syscall (counting interpreter, checked against the runtime's), and whether \
         the kernel's seccomp action cache (a port of its `seccomp_is_const_allow` emulation) \
         lets the kernel skip the program for it."
            .to_string(),
        format!(
            "libseccomp {}; `net.core.bpf_jit_enable` = {}.",
            compile::libseccomp_version(),
            read_trimmed("/proc/sys/net/core/bpf_jit_enable")
        ),
    ];
    for v in &m.variants {
        if let Some(why) = &v.skipped {
            c.push(format!("Variant {} skipped: {why}.", v.name));
        }
    }
    c.extend(m.notes.iter().cloned());
    c
}

/// The machine ([`bench::machine`]) and crun's version.
pub(super) fn machine() -> Vec<(String, String)> {
    let mut out = bench::machine();
    let crun = match oci::which("crun") {
        None => "not installed".to_string(),
        Some(path) => match Command::new(&path)
            .arg("--version")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
        {
            Ok(o) if o.status.success() => {
                format!("`{}`", first_line(&String::from_utf8_lossy(&o.stdout)))
            }
            Ok(o) => format!("(`crun --version` failed: {})", o.status),
            Err(e) => format!("(`crun --version`: {e})"),
        },
    };
    out.push(("crun".into(), crun));
    out
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|t| t.trim().to_string())
        .unwrap_or_else(|e| format!("(unreadable: {e})"))
}
