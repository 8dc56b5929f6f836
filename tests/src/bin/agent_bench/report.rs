//! The report: the machine, the conditions and the Markdown table.

use super::*;

/// The machine and the peers' versions, for the report and the JSON.
pub(super) fn machine(env: &Env) -> Vec<(String, String)> {
    let mut machine = bench::machine();
    machine.push((
        "bpftrace".into(),
        env.bpftrace
            .as_ref()
            .and_then(|b| Command::new(b).arg("--version").output().ok())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "not installed".into()),
    ));
    machine.push(("moatd".into(), format!("`{}`", env.moatd.display())));
    machine
}

/// How the figures were made, one sentence each (the report's
/// `### Conditions` items and the JSON's `conditions`); `notes` last.
pub(super) fn conditions(cfg: &Config, m: &Measured, notes: Vec<String>) -> Vec<String> {
    let o = &m.overhead;
    let mut c = vec![
        format!(
            "Mode: {}; build: {}.",
            bench::mode(cfg.quick),
            bench::build()
        ),
        format!(
            "Overhead: {} interleaved rounds (variant order rotated per round) after one \
             discarded pass without an agent; each round starts the variant's agent, runs {} \
             `getppid` calls, {} fork/`_exit`/`waitpid` iterations, `sha256sum` over {} \
             files of `/usr/share/doc` ({} per process) and {} one-byte round trips through \
             two pipes with a child, both pinned to one CPU (two context switches and four \
             syscalls each; the workload that pays for moatd's program on `sched_switch`), \
             then stops the agent. Figures are medians over the rounds. The workloads run in \
             a process forked before any agent, in the harness's own cgroup (attributed to \
             `host`).",
            cfg.rounds, o.calls, o.forks, m.hash_files, HASH_BATCH, o.round_trips
        ),
        "Floor variants: `empty sys_exit` and `empty sys_enter+sys_exit` attach raw-tracepoint \
         programs of two instructions (`r0 = 0; exit`), loaded with bpf(2) by the harness \
         itself, to those tracepoints: the fixed price this machine charges for running any \
         program there, which no agent goes below. `empty sys_enter+sys_exit` also attaches \
         one to `sched_switch`, as moatd's pairing does (it writes its per-CPU cache back \
         there). `moatd / empty sys_enter+sys_exit` is the cost of moatd's own logic over that \
         floor."
            .to_string(),
        "Overhead plot: each bar is a variant's median over the no-agent median of the same \
         workload; its error bar spans the variant's fastest and slowest round over that same \
         no-agent median."
            .to_string(),
        format!(
            "moatd runs with `workloads.max_labels = 2000` (so {} workloads keep their labels), \
             everything else at its defaults (audit: 100/s per cgroup after a burst of 200).",
            cfg.levels.iter().copied().max().unwrap_or(0)
        ),
        format!(
            "Storm: {} `getppid` calls denied with `EACCES` by a filter compiled by moat's \
             engine, one process in `<v2 mount>/moat/{STORM_NAME}`; `/metrics` timed every 50 ms \
             meanwhile from another thread ({} samples).",
            cfg.storm,
            m.storm.scrape_ms.len()
        ),
        format!(
            "Many workloads: for each of {:?}, a fresh moatd and that many cgroups \
             `<v2 mount>/moat/bench-<i>`, each given a child that forks once; one untimed \
             scrape, then {} timed ones.",
            cfg.levels, cfg.scrapes
        ),
        "The machine is a 2-CPU VM shared with other work: the agent, the workloads and the \
         scrapes compete for the same CPUs."
            .to_string(),
    ];
    c.extend(notes);
    c
}

/// The Markdown report: the table, the machine, the conditions, the
/// per-round overhead values and the bpftrace script.
pub(super) fn render(
    cfg: &Config,
    rows: &[Row],
    machine: &[(String, String)],
    conditions: &[String],
    o: &Overhead,
) -> String {
    let mut s = String::new();
    bench::write_table(&mut s, rows);
    bench::write_machine(&mut s, machine);
    bench::write_conditions(&mut s, conditions);

    let _ = writeln!(s, "\n### Overhead, per-round values\n");
    bench::write_round_header(&mut s, cfg.rounds);
    for (w, wl) in WORKLOADS.iter().enumerate() {
        for (v, var) in VARIANTS.iter().enumerate() {
            if o.samples[v][w].is_empty() {
                continue;
            }
            let _ = write!(s, "| {} ({}) | {var} |", wl.label, wl.unit);
            for x in &o.samples[v][w] {
                let _ = write!(s, " {x:.1} |");
            }
            let _ = writeln!(s);
        }
    }

    let _ = writeln!(s, "\n### The bpftrace script (variant `bpftrace`)\n");
    let _ = writeln!(
        s,
        "The closest bpftrace equivalent of what moatd counts: an unpaired `sys_exit` is a \
         denial, counted per (cgroup, syscall, return value); a new task's first return is \
         marked as paired; forks, execs and exits are counted per cgroup. bpftrace has only \
         hash maps (moatd uses a tid-indexed array and per-CPU hash maps), and it does not skip \
         threads already blocked in a syscall when it attaches.\n"
    );
    let _ = writeln!(s, "```\n{}```", BPFTRACE_SCRIPT);
    s
}
