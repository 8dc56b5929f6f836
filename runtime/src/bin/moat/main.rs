//! `moat`: the command users type.

mod profile_cmd;

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
    /// Validate, compile and show seccomp profiles (Docker and OCI format).
    #[command(subcommand)]
    Profile(profile_cmd::ProfileCommand),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_target(false)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Profile(cmd) => profile_cmd::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("moat: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
