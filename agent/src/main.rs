//! `moatd`, moat's node agent.
//!
//! Reads its configuration, binds the HTTP listener, mounts tracefs and bpffs if
//! needed, loads and attaches the eBPF programs, then serves `/metrics` and writes
//! audit events (see `moat_agent::daemon`), and with `[authz] enabled` serves the
//! Docker authorization plugin (see `moat_agent::authz`), until SIGTERM or SIGINT;
//! SIGHUP reopens the audit log and reloads the authorization policy.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::Context as _;
use clap::Parser;
use moat_agent::{
    authz::{self, policy::LoadedPolicy, systemd::ListenEnv, PluginSocket},
    config::{AuditTarget, Config},
    daemon,
    kernel::{cgroups::CgroupLayout, mounts, Kernel},
    notify::{Notifier, Watchdog},
};
use tokio::signal::unix::{signal, SignalKind};

/// Exit status for a usage or configuration error (clap uses 2 as well).
const EXIT_CONFIG: u8 = 2;
/// Exit status for a failure at run time.
const EXIT_FAILURE: u8 = 1;

/// moat's node agent: seccomp denials and process events of every workload on this
/// node, as Prometheus metrics and audit events.
#[derive(Debug, Parser)]
#[command(
    name = "moatd",
    version,
    long_about = "moat's node agent: seccomp denials and process events of every workload on \
                  this node, as Prometheus metrics and audit events.\n\n\
                  moatd loads eBPF programs that count, in the kernel, every syscall a \
                  seccomp filter refuses and every fork, exec, exit, failed fork and user \
                  namespace creation, per cgroup. It attributes them to workloads (moat \
                  workloads by name, Docker containers as docker:<id>, systemd units by unit \
                  name, everything else as host), serves them on /metrics in the Prometheus \
                  text format (OpenMetrics when the scraper asks for it), and writes audit \
                  events as JSON lines. It mounts tracefs (/sys/kernel/tracing) and bpffs \
                  (/sys/fs/bpf) if they are missing, and stays in the foreground, logging \
                  to standard error.\n\n\
                  With [authz] enabled in the configuration, moatd also serves the Docker \
                  authorization plugin on a unix socket (default \
                  /run/docker/plugins/moat.sock, or the socket systemd passes as \
                  moat-authz): dockerd asks it about every API request, and it answers with \
                  the node policy's decision (/etc/moat/policy.toml, the built-in baseline \
                  when that file does not exist), re-checking each container's stored \
                  configuration at start.\n\n\
                  Restarts and upgrades lose nothing: the programs' links and the maps \
                  moatd reads are pinned under the bpffs directory /sys/fs/bpf/moat \
                  (MOAT_BPF_DIR), so the programs keep counting while moatd is stopped, \
                  and the next moatd adopts them when their layout (the eBPF object, map \
                  and ring sizes, [tracing] settings) is its own; otherwise it detaches \
                  and replaces them, and says so in its log and in \
                  moat_ebpf_pins_info{state}. moatd --unload detaches them and removes \
                  the pins (the Debian package's removal runs it). Only one moatd uses a \
                  pin directory at a time: a second one refuses to start.\n\n\
                  Signals: SIGTERM or SIGINT stop moatd and exit 0, leaving the programs \
                  attached and pinned (with [kernel] keep_pinned = false, they are \
                  detached); SIGHUP reopens the audit log (for log rotation) and reloads \
                  the authorization policy (a policy that does not load is logged, and \
                  the one in force stays).\n\n\
                  It needs root, or CAP_BPF with CAP_PERFMON (CAP_SYS_ADMIN on kernels \
                  before 5.8) and CAP_SYS_ADMIN to mount. It does not need \
                  CAP_SYS_RESOURCE on kernels since 5.11.",
    after_help = concat!(
        "Files:\n  ",
        "/etc/moat/moatd.toml  configuration (optional; every option has a default; see ",
        "moatd.example.toml)\n  ",
        "/etc/moat/policy.toml  the node policy of the authorization plugin ([authz] policy)\n\n",
        "Environment:\n  ",
        "MOAT_BPF_DIR  the bpffs directory of the pins (default /sys/fs/bpf/moat)\n  ",
        "RUST_LOG  log filter when --log is not given (default: info), ",
        "e.g. RUST_LOG=moat_agent=debug\n  ",
        "NOTIFY_SOCKET  set by systemd for Type=notify: moatd sends STATUS= lines while ",
        "starting, READY=1 once the programs are attached and /metrics answers, and ",
        "STOPPING=1 on shutdown (a path or an abstract @name)\n  ",
        "WATCHDOG_USEC  set by systemd's WatchdogSec=: the collector sends WATCHDOG=1 ",
        "after each reading of the kernel maps, at most every half of it\n  ",
        "LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES  sockets passed by systemd ",
        "(moatd-authz.socket passes the plugin's, named moat-authz)\n\n",
        "Exit status:\n  ",
        "0  stopped by SIGTERM or SIGINT, --check-config found the configuration valid, or ",
        "--unload detached and unpinned the programs (or found none)\n  ",
        "1  the eBPF programs could not be loaded or attached, another moatd uses the pin ",
        "directory, the listen address, the plugin socket or the audit log could not be ",
        "used, --unload could not remove the pins, or another error at run time\n  ",
        "2  invalid command line, configuration or authorization policy"
    )
)]
struct Args {
    /// Configuration file [default: /etc/moat/moatd.toml, built-in defaults if it
    /// does not exist]. A file given here must exist.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Address and port to serve /metrics and / on; overrides http.listen
    /// [default: 127.0.0.1:9740].
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,

    /// Audit log file, or `-` for standard output; overrides audit.log
    /// [default: /var/log/moat/audit.jsonl].
    #[arg(long, value_name = "FILE")]
    audit_log: Option<String>,

    /// Check the configuration (and with [authz] enabled, the policy file), print
    /// it, and exit.
    #[arg(long)]
    check_config: bool,

    /// Detach the programs a stopped moatd left attached, remove their pins
    /// and the recording maps' (everything under MOAT_BPF_DIR, default
    /// /sys/fs/bpf/moat), and exit. Refused while a moatd runs on them.
    #[arg(long, conflicts_with = "check_config")]
    unload: bool,

    /// Log filter in env_logger syntax (`error`, `warn`, `info`, `debug`, `trace`,
    /// or per module, e.g. `info,moat_agent=debug`); overrides RUST_LOG.
    #[arg(long, value_name = "FILTER")]
    log: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log.as_deref());
    if args.unload {
        return unload();
    }
    // Read (and cleared) while moatd has a single thread.
    let listen_env = ListenEnv::take();

    let mut config = match Config::load(args.config.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("moatd: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(listen) = args.listen {
        config.override_listen(listen);
    }
    if let Some(audit_log) = &args.audit_log {
        if audit_log.is_empty() {
            eprintln!("moatd: --audit-log: must not be empty: give a file path, or \"-\" for standard output");
            return ExitCode::from(EXIT_CONFIG);
        }
        config.override_audit_log(AuditTarget::parse(audit_log));
    }
    let policy = if config.authz.enabled {
        match authz::load_policy(&config.authz.policy) {
            Ok(loaded) => Some(loaded),
            Err(err) => {
                eprintln!("moatd: authorization policy (authz.policy): {err}");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    } else {
        None
    };
    if args.check_config {
        println!("{config:#?}");
        if let Some(loaded) = &policy {
            println!(
                "authorization policy: {} (sha256 {}): {} rules, {} exceptions",
                loaded.source,
                loaded.sha256,
                loaded.policy.rules.len(),
                loaded.policy.exceptions.len()
            );
        }
        eprintln!("moatd: configuration OK");
        return ExitCode::SUCCESS;
    }
    let (notifier, watchdog) = match Notifier::from_env()
        .and_then(|notifier| Ok((notifier.clone(), Watchdog::from_env(&notifier)?)))
    {
        Ok(pair) => pair,
        Err(err) => {
            eprintln!("moatd: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };

    raise_nofile_limit();
    // Renders run on blocking threads one at a time (they share one registry):
    // a few threads suffice, and a burst of scrapes queues instead of starting
    // a thread each.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("moatd: cannot start the async runtime: {err}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let result = runtime.block_on(run(config, listen_env, policy, &notifier, watchdog));
    // Whatever is left on the blocking pool (nothing, normally) is not waited
    // for: the process is leaving.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            log::error!("{err:#}");
            notifier.status(&format!("failed: {err:#}"));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

async fn run(
    config: Config,
    listen_env: ListenEnv,
    policy: Option<LoadedPolicy>,
    notifier: &Notifier,
    watchdog: Option<Watchdog>,
) -> anyhow::Result<()> {
    // Registered first, so a signal that arrives while the programs load still ends
    // in a clean exit rather than the default, fatal, disposition.
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;

    // Bound before the programs load: scrapes arriving meanwhile wait in the backlog.
    let listener = daemon::bind(&config)?;
    // The plugin's socket too: dockerd's requests wait in its backlog.
    let plugin_socket = match &policy {
        Some(_) => Some(PluginSocket::open(&config.authz, &listen_env)?),
        None => {
            anyhow::ensure!(
                authz::systemd::plugin_fd(&listen_env, std::process::id())?.is_none(),
                "systemd passed the authorization plugin's socket ({}), but [authz] enabled is \
                 false: dockerd's requests would wait on it forever; enable [authz] or stop \
                 and disable moatd-authz.socket",
                authz::systemd::FD_NAME
            );
            None
        }
    };
    mounts::ensure_kernel_filesystems();
    let layout = CgroupLayout::detect(&config.workloads.cgroup_root);
    log::debug!("cgroup layout: {layout:?}");

    // The kernel side: programs loaded and attached, counters read at every
    // scrape and poll through `KernelSource`, audit records from its ring buffer.
    notifier.status("loading and attaching the eBPF programs");
    let mut kernel = Kernel::load(config.kernel_config())
        .context("loading and attaching moat's eBPF programs")?;
    log::info!("{}", kernel.tracing_mode());
    let records = kernel
        .audit_records()
        .context("starting the audit ring buffer reader")?;
    let kernel = Arc::new(kernel);

    let running = daemon::start_supervised(
        &config,
        &layout,
        listener,
        kernel.clone(),
        records,
        watchdog.clone(),
    )?;
    let authz = match (plugin_socket, policy) {
        (Some(socket), Some(policy)) => {
            Some(daemon::start_authz(&config, &running, socket, policy)?)
        }
        _ => None,
    };
    notifier.status("programs attached; waiting for /metrics to answer");
    daemon::wait_until_served(running.local_addr())
        .await
        .context("/metrics does not answer")?;
    notifier.ready(&format!(
        "serving http://{}/metrics; audit log {}",
        running.local_addr(),
        config.audit.log
    ));
    log::info!(
        "moatd {} running (pid {}): serving http://{}/metrics, audit log {}; \
         stop with SIGTERM or SIGINT, reopen the audit log (and reload the authorization \
         policy) with SIGHUP",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        running.local_addr(),
        config.audit.log,
    );

    let signal_name = loop {
        tokio::select! {
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
            _ = sighup.recv() => {
                log::info!("received SIGHUP; reopening the audit log");
                running.reopen_audit_log();
                if let Some(authz) = &authz {
                    authz.reload_policy();
                }
            }
        }
    };
    log::info!("received {signal_name}; shutting down");
    if let Some(watchdog) = &watchdog {
        watchdog.stop();
    }
    notifier.stopping(&format!("stopping on {signal_name}"));
    if let Some(authz) = authz {
        authz.shutdown().await;
    }
    let last = running.shutdown().await;
    let summary = match &last.kernel_error {
        None => format!(
            "saw {} seccomp denials and {} forks",
            last.denials_total, last.forks_total
        ),
        Some(err) => format!("could not read the counters ({err})"),
    };
    let programs = if kernel.config().keep_pinned {
        format!(
            "programs left attached, pinned in {} (moatd --unload removes them)",
            kernel.config().record_pin_dir.display()
        )
    } else {
        "programs detached".to_owned()
    };
    // The tasks are done, so this is the last reference: dropping it stops the
    // ring buffer reader and closes the programs (detached unless pinned).
    match Arc::try_unwrap(kernel) {
        Ok(kernel) => drop(kernel),
        Err(_) => log::warn!("the eBPF programs are still referenced; they are closed at exit"),
    }
    log::info!("received {signal_name}; {summary}; {programs}; exiting");
    Ok(())
}

/// `moatd --unload`: detaches and unpins what earlier moatds left attached.
fn unload() -> ExitCode {
    let dir = moat_agent::kernel::config::record_pin_dir_from_env();
    match moat_agent::kernel::pins::unload(&dir) {
        Ok(done) if done.layouts.is_empty() && done.pins.is_empty() => {
            log::info!("nothing pinned in {}; nothing to unload", dir.display());
            ExitCode::SUCCESS
        }
        Ok(done) => {
            log::info!(
                "detached and unpinned the eBPF programs in {} (layouts {:?}, pins {:?})",
                dir.display(),
                done.layouts,
                done.pins
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            log::error!("--unload: {:#}", anyhow::Error::from(err));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, so that the HTTP
/// connection cap (fitted below it) is as configured on hosts whose default soft
/// limit is small; logged when that fails.
fn raise_nofile_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(err) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                log::warn!("cannot raise RLIMIT_NOFILE from {soft} to {hard}: {err}");
            } else {
                log::debug!("raised RLIMIT_NOFILE from {soft} to {hard}");
            }
        }
        Ok(_) => {}
        Err(err) => log::warn!("cannot read RLIMIT_NOFILE: {err}"),
    }
}

fn init_logging(filter: Option<&str>) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if let Some(filter) = filter {
        builder.parse_filters(filter);
    }
    builder.init();
}
