//! `moatd`, moat's node agent.
//!
//! For now it loads the fork counter, runs until SIGTERM or SIGINT, and logs how
//! many forks it saw before exiting.

use anyhow::Context as _;
use clap::Parser;
use moat_agent::Programs;
use tokio::signal::unix::{signal, SignalKind};

/// moat's node agent: watches process activity on this node with eBPF.
#[derive(Debug, Parser)]
#[command(
    name = "moatd",
    version,
    long_about = "moat's node agent: watches process activity on this node with eBPF.\n\n\
                  moatd loads its eBPF programs (today: a counter of new tasks on the \
                  `sched_process_fork` raw tracepoint), logs that it is running, and stays \
                  in the foreground until it receives SIGTERM or SIGINT. It then logs the \
                  counters it saw, detaches its programs and exits with status 0.\n\n\
                  It needs root, or CAP_BPF with CAP_PERFMON (CAP_SYS_ADMIN on kernels \
                  before 5.8). It does not need CAP_SYS_RESOURCE on kernels since 5.11.",
    after_help = "Environment:\n  \
                  RUST_LOG  log filter when --log is not given (default: info), \
                  e.g. RUST_LOG=moat_agent=debug\n\n\
                  Exit status:\n  \
                  0  stopped by SIGTERM or SIGINT\n  \
                  1  the eBPF programs could not be loaded or attached, or another error"
)]
struct Args {
    /// Log filter in env_logger syntax (`error`, `warn`, `info`, `debug`, `trace`,
    /// or per module, e.g. `info,moat_agent=debug`); overrides RUST_LOG.
    #[arg(long, value_name = "FILTER")]
    log: Option<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(args.log.as_deref());

    // Registered before loading, so a signal that arrives while the programs load
    // still ends in a clean exit rather than the default, fatal, disposition.
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    let mut programs = Programs::load().context("loading moat's eBPF programs")?;
    programs
        .attach_fork_counter()
        .context("attaching the fork counter")?;
    log::info!(
        "moatd {} running (pid {}): counting forks; stop with SIGTERM or SIGINT",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    );

    let signal_name = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };

    let counts = programs
        .process_counts()
        .context("reading the process counters")?;
    log::info!(
        "received {signal_name}; saw {} forks; exiting",
        counts.forks()
    );
    drop(programs);
    Ok(())
}

fn init_logging(filter: Option<&str>) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if let Some(filter) = filter {
        builder.parse_filters(filter);
    }
    builder.init();
}
