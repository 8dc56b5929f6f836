//! `moat profile ...`: check, compile and show seccomp profiles.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};

use moat_runtime::caps::CapSet;
use moat_runtime::seccomp::{self, arch::Host, compile, summary, ProfileRef};

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Validate a profile and summarise what it does on this host.
    ///
    /// Prints the default action, the architectures, how many of this
    /// architecture's syscalls are allowed and denied, the syscalls whose
    /// verdict depends on their arguments, and warnings: syscall names
    /// libseccomp does not know (skipped, as Docker does), conditions whose
    /// value has bits the kernel never reads (a 32-bit argument compared
    /// with a value above 32 bits never or always holds), comparisons of
    /// pointers, and 64-bit arguments on x32. Notes say which multiplexed
    /// calls (i386 socketcall) are refused because their arguments are
    /// filtered.
    /// Exits non-zero, naming the file, field and reason, if the profile is
    /// invalid.
    Check {
        /// Profile file (Docker or OCI format, or an OCI config.json),
        /// `default` for the built-in profile, or `-` for standard input.
        /// A file must be a regular file of at most 16 MiB.
        profile: String,
        #[command(flatten)]
        opts: CompileArgs,
        /// Also list every allowed and denied syscall.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Compile a profile to a raw classic-BPF program.
    ///
    /// The output is an array of `struct sock_filter` in native byte order,
    /// the format `bwrap --seccomp FD` and `seccomp(2)` take.
    Compile {
        /// Profile file (a regular file of at most 16 MiB), `default` for
        /// the built-in profile, or `-` for standard input.
        profile: String,
        /// Where to write the program (`-` for standard output).
        #[arg(long, short)]
        output: PathBuf,
        #[command(flatten)]
        opts: CompileArgs,
    },
    /// Show what one profile allows that the other does not.
    ///
    /// Both are resolved for this host and the same capability set, then
    /// compared syscall by syscall on every architecture either accepts
    /// (the native one first). Lines:
    ///   `ARCH: only A allows (N): NAME ...` (B refuses them whatever the
    ///   arguments), the same for B, and
    ///   `ARCH: NAME: A VERDICT; B VERDICT` for the other differences:
    ///   argument rules (`allows if arg0 & 0x7e020000 == 0x0; otherwise
    ///   refuses (SCMP_ACT_ERRNO(EPERM))`), different errnos or actions,
    ///   an architecture only one accepts.
    /// Exits 0 when they decide alike, 1 when they differ, 2 on an error.
    Diff {
        /// The first profile: a file, or `default`.
        a: String,
        /// The second profile: a file, or `default`.
        b: String,
        #[command(flatten)]
        opts: CompileArgs,
    },
    /// Record the syscalls of a running workload (a moat workload or a
    /// Docker container) for a while and write a least-privilege profile,
    /// through moatd's kernel side (moatd must be running).
    Record(crate::record_cmd::RecordArgs),
    /// Print a built-in profile as Docker-format JSON.
    Show {
        /// The built-in profile's name (only `default` exists).
        name: String,
    },
}

/// Options that decide how a profile resolves and compiles.
#[derive(Debug, Args)]
pub struct CompileArgs {
    /// Add a capability to Docker's default set before resolving
    /// `includes.caps` / `excludes.caps` (e.g. SYS_ADMIN or CAP_SYS_ADMIN;
    /// ALL for every capability). Repeatable.
    #[arg(long = "cap-add", value_name = "CAP")]
    cap_add: Vec<String>,
    /// Remove a capability from the set (ALL empties it). Repeatable.
    #[arg(long = "cap-drop", value_name = "CAP")]
    cap_drop: Vec<String>,
    /// Refuse syscall names libseccomp does not know, instead of skipping
    /// them with a warning as Docker does.
    #[arg(long)]
    strict: bool,
    /// How the program dispatches on the syscall number: a binary tree
    /// where it pays off (auto), always linear, or always a tree.
    #[arg(long, value_enum, default_value_t = DispatchArg::Auto)]
    dispatch: DispatchArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DispatchArg {
    Auto,
    Linear,
    Tree,
}

impl CompileArgs {
    fn caps(&self) -> Result<CapSet> {
        CapSet::docker_default()
            .with_changes(&self.cap_add, &self.cap_drop)
            .context("invalid --cap-add/--cap-drop")
    }

    fn options(&self) -> compile::Options {
        compile::Options {
            strict: self.strict,
            dispatch: match self.dispatch {
                DispatchArg::Auto => compile::Dispatch::Auto,
                DispatchArg::Linear => compile::Dispatch::Linear,
                DispatchArg::Tree => compile::Dispatch::BinaryTree,
            },
            ..Default::default()
        }
    }
}

pub fn run(cmd: ProfileCommand) -> Result<ExitCode> {
    match cmd {
        ProfileCommand::Check {
            profile,
            opts,
            verbose,
        } => check(&profile, &opts, verbose),
        ProfileCommand::Compile {
            profile,
            output,
            opts,
        } => compile_to(&profile, &output, &opts),
        ProfileCommand::Show { name } => show(&name),
        ProfileCommand::Diff { a, b, opts } => diff(&a, &b, &opts),
        ProfileCommand::Record(args) => crate::record_cmd::run(args),
    }
}

fn diff(a: &str, b: &str, opts: &CompileArgs) -> Result<ExitCode> {
    let caps = opts.caps()?;
    let (pa, sa) = load(a)?;
    let (pb, sb) = load(b)?;
    let (ra, host) = seccomp::resolve_for_host(&pa, sa.clone(), &caps)?;
    let (rb, _) = seccomp::resolve_for_host(&pb, sb.clone(), &caps)?;
    let lines = moat_runtime::record::diff::diff(&ra, &rb, host.native);
    let mut out = std::io::stdout().lock();
    writeln!(out, "A: {sa}")?;
    writeln!(out, "B: {sb}")?;
    writeln!(
        out,
        "resolved for {} ({}), kernel {}, capabilities {caps}",
        host.go_arch,
        host.native.name(),
        host.kernel
    )?;
    if lines.is_empty() {
        writeln!(out, "no difference")?;
        return Ok(ExitCode::SUCCESS);
    }
    for l in lines {
        writeln!(out, "{l}")?;
    }
    Ok(ExitCode::from(1))
}

fn load(profile: &str) -> Result<(seccomp::profile::Profile, seccomp::Source)> {
    if profile == "-" {
        return Ok((seccomp::parse::from_stdin()?, seccomp::Source::Stdin));
    }
    match ProfileRef::parse(profile).load()? {
        Some(p) => Ok(p),
        None => bail!("`unconfined` means no filter; there is nothing to check or compile"),
    }
}

fn check(profile: &str, opts: &CompileArgs, verbose: bool) -> Result<ExitCode> {
    let caps = opts.caps()?;
    let (parsed, source) = load(profile)?;
    let (resolved, compiled) =
        seccomp::compile_for_host(&parsed, source.clone(), &caps, opts.options())?;
    let host = Host::detect().map_err(anyhow::Error::msg)?;
    let s = summary::summarize(&resolved, &compiled, &host);
    let mut out = std::io::stdout().lock();
    writeln!(out, "profile:            {source}")?;
    writeln!(
        out,
        "host:               {} ({}), kernel {}",
        host.go_arch,
        host.native.name(),
        host.kernel
    )?;
    writeln!(out, "capabilities:       {caps}")?;
    writeln!(out, "default action:     {}", s.default_action)?;
    let arches = if s.architectures.is_empty() {
        "native only".to_string()
    } else {
        s.architectures.join(", ")
    };
    writeln!(out, "architectures:      {arches}")?;
    writeln!(
        out,
        "rules:              {} apply, {} skipped on this host",
        s.rules_applied, s.rules_skipped
    )?;
    writeln!(out, "allowed syscalls:   {}", s.allowed.len())?;
    writeln!(out, "denied syscalls:    {}", s.denied.len())?;
    writeln!(
        out,
        "argument-filtered:  {} ({})",
        s.argument_filtered.len(),
        s.argument_filtered.join(", ")
    )?;
    writeln!(
        out,
        "program:            {} instructions, {} dispatch",
        s.instructions,
        if s.binary_tree {
            "binary-tree"
        } else {
            "linear"
        }
    )?;
    writeln!(out, "warnings:           {}", compiled.warnings.len())?;
    for w in &compiled.warnings {
        writeln!(out, "  warning: {w}")?;
    }
    for n in compiled.notes() {
        writeln!(out, "  note: {n}")?;
    }
    if verbose {
        writeln!(out, "allowed: {}", s.allowed.join(" "))?;
        for (name, v) in &s.denied {
            writeln!(out, "denied: {name} -> {v}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn compile_to(profile: &str, output: &std::path::Path, opts: &CompileArgs) -> Result<ExitCode> {
    let caps = opts.caps()?;
    let (parsed, source) = load(profile)?;
    let (_, compiled) = seccomp::compile_for_host(&parsed, source, &caps, opts.options())?;
    for w in &compiled.warnings {
        log::warn!("{w}");
    }
    let bytes = compiled.program.to_bytes();
    if output.as_os_str() == "-" {
        std::io::stdout().lock().write_all(&bytes)?;
    } else {
        crate::output_file::write(output, &bytes)?;
        eprintln!(
            "wrote {} ({} instructions, {} bytes)",
            output.display(),
            compiled.program.len(),
            bytes.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn show(name: &str) -> Result<ExitCode> {
    match name {
        "default" => {
            let mut out = std::io::stdout().lock();
            out.write_all(seccomp::builtin::DEFAULT_JSON.as_bytes())?;
            if !seccomp::builtin::DEFAULT_JSON.ends_with('\n') {
                out.write_all(b"\n")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        other => bail!("no built-in profile named {other:?}; the built-in profiles are: default"),
    }
}
