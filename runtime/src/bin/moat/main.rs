//! `moat`: the command users type.

mod events_cmd;
mod output_file;
mod policy_cmd;
mod profile_cmd;
mod ps_cmd;
mod record_cmd;
mod record_out;
mod run_cmd;
mod stats_cmd;
mod term;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// moat: seccomp, user namespaces and pids limits for Linux workloads,
/// observable.
#[derive(Debug, Parser)]
#[command(name = "moat", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate, compile, show, compare (diff) and record seccomp profiles
    /// (Docker and OCI format).
    #[command(subcommand)]
    Profile(profile_cmd::ProfileCommand),
    /// Run a command under seccomp, a user namespace, a pids limit and
    /// namespaces of its own (as root).
    Run(run_cmd::RunArgs),
    /// Check the node policy (/etc/moat/policy.toml) and try it on recorded
    /// Docker authorization requests.
    #[command(subcommand)]
    Policy(policy_cmd::PolicyCommand),
    /// List workloads: running, starting, and stale ones a killed `moat
    /// run` left behind.
    Ps(ps_cmd::PsArgs),
    // No doc comments on these two: they would replace the long help their
    // argument structs define.
    Events(events_cmd::EventsArgs),
    Stats(stats_cmd::StatsArgs),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_target(false)
        .init();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // `moat run` reserves its other codes for the workload, so its
            // usage errors are moat failures (125), as with `docker run`.
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp
                | clap::error::ErrorKind::DisplayVersion
                | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => 0,
                _ if std::env::args().nth(1).as_deref() == Some("run") => 125,
                _ => 2,
            };
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Profile(cmd) => profile_cmd::run(cmd),
        // Exit codes of `run` are the workload's; it reports its own errors.
        Command::Run(args) => return run_cmd::run(args),
        Command::Policy(cmd) => policy_cmd::run(cmd),
        Command::Ps(args) => ps_cmd::run(args),
        Command::Events(args) => events_cmd::run(args),
        Command::Stats(args) => stats_cmd::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("moat: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
