//! `moat policy ...`: check a node policy file, try it on recorded Docker
//! authorization requests, and apply it to `moat run`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Subcommand;

use moat_policy::model::{Check, Exception, Policy, Scope};
use moat_policy::{Decision, RunIntent};
use moat_runtime::caps::CapSet;
use moat_runtime::cgroup::PidsLimit;
use moat_runtime::launch::RunRequest;
use moat_runtime::seccomp::profile::Action;
use moat_runtime::seccomp::ProfileRef;
use moat_runtime::userns::UsernsSpec;

/// Exit code of `moat policy eval` when the policy denies.
const EXIT_DENIED: u8 = 3;

/// Environment variable that overrides [`moat_policy::DEFAULT_POLICY_PATH`]
/// for `moat run` (tests use it).
pub const POLICY_FILE_ENV: &str = "MOAT_POLICY_FILE";

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file and summarise its rules and exceptions.
    ///
    /// Exits 0 and prints every rule (name, check, what it covers, message)
    /// and exception when the file is valid; exits 1 with one line naming the
    /// file, the position, the TOML key and the reason when it is not
    /// (duplicate and unknown keys, unknown checks, capabilities or
    /// namespaces, relative paths, exceptions naming no rule, and a file
    /// with no rules are all refused).
    #[command(after_long_help = "\
EXAMPLES:
  moat policy check /etc/moat/policy.toml
  moat policy show baseline > /etc/moat/policy.toml && moat policy check /etc/moat/policy.toml")]
    Check {
        /// The policy file (`baseline` for the built-in one).
        file: String,
    },
    /// Decide on a recorded Docker authorization request, as moatd's plugin
    /// would, without a daemon.
    ///
    /// `--request` takes a `POST /AuthZPlugin.AuthZReq` body as dockerd
    /// sends it (`RequestMethod`, `RequestUri`, base64 `RequestBody`,
    /// `RequestHeaders`, `User`...). `--inspect` takes the output of
    /// `docker inspect CONTAINER` (one object, or the one-element array the
    /// CLI prints) and decides as the plugin does at
    /// `containers/{id}/start`. Prints the decision, the rule, the endpoint
    /// and the message.
    #[command(after_long_help = "\
EXIT STATUS:
  0 if the request is allowed, 3 if it is denied,
  1 if the policy or the request cannot be read.

EXAMPLES:
  moat policy eval baseline --request create.json
  moat policy eval /etc/moat/policy.toml --request - < create.json
  docker inspect web | moat policy eval baseline --inspect - --user ci-runner")]
    Eval {
        /// The policy file, or `baseline` for the built-in one.
        policy: String,
        /// A recorded authorization request (JSON; `-` for standard input).
        #[arg(long, value_name = "REQ.json", required_unless_present = "inspect")]
        request: Option<PathBuf>,
        /// A container's inspect output (JSON; `-` for standard input).
        #[arg(long, value_name = "INSPECT.json", conflicts_with = "request")]
        inspect: Option<PathBuf>,
        /// With --inspect: the user starting the container (the client
        /// certificate's common name), for user-scoped exceptions.
        #[arg(long, value_name = "NAME", requires = "inspect", default_value = "")]
        user: String,
    },
    /// Print a built-in policy as a policy file.
    Show {
        /// The built-in policy's name (only `baseline` exists).
        name: String,
    },
}

pub fn run(cmd: PolicyCommand) -> Result<ExitCode> {
    match cmd {
        PolicyCommand::Check { file } => check(&file),
        PolicyCommand::Eval {
            policy,
            request,
            inspect,
            user,
        } => eval(&policy, request.as_deref(), inspect.as_deref(), &user),
        PolicyCommand::Show { name } => match name.as_str() {
            "baseline" => {
                std::io::stdout().write_all(moat_policy::load::BASELINE_TOML.as_bytes())?;
                Ok(ExitCode::SUCCESS)
            }
            other => {
                bail!("no built-in policy named {other:?}; the built-in policies are: baseline")
            }
        },
    }
}

fn load(spec: &str) -> Result<Policy> {
    if spec == "baseline" {
        return Ok(moat_policy::baseline());
    }
    Ok(moat_policy::load_file(Path::new(spec))?)
}

fn check(spec: &str) -> Result<ExitCode> {
    let policy = load(spec)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "policy:      {}", policy.source)?;
    writeln!(out, "rules:       {}", policy.rules.len())?;
    let width = policy.rules.iter().map(|r| r.name.len()).max().unwrap_or(0);
    for r in &policy.rules {
        writeln!(
            out,
            "  {:width$}  {}{}",
            r.name,
            r.check.name(),
            covers(&r.check)
        )?;
        writeln!(out, "  {:width$}    {}", "", r.message)?;
    }
    writeln!(out, "exceptions:  {}", policy.exceptions.len())?;
    for e in &policy.exceptions {
        writeln!(out, "  {}", describe(e))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn covers(check: &Check) -> String {
    match check {
        Check::Capabilities { allowed } if allowed.is_empty() => String::new(),
        Check::Capabilities { allowed } => format!(" (allowed to all: {})", allowed.join(", ")),
        Check::HostNamespaces { namespaces } => {
            let names: Vec<&str> = namespaces.iter().map(|n| n.name()).collect();
            format!(" ({})", names.join(", "))
        }
        Check::HostPaths { paths } => format!(" ({})", paths.join(", ")),
        _ => String::new(),
    }
}

fn describe(e: &Exception) -> String {
    let who = match &e.users {
        None => "everyone".to_string(),
        Some(u) => format!("users {}", u.join(", ")),
    };
    let what = match &e.scope {
        Scope::All => "everything it denies".to_string(),
        Scope::Capabilities(c) => c.join(", "),
        Scope::Namespaces(n) => n.iter().map(|n| n.name()).collect::<Vec<_>>().join(", "),
        Scope::Paths(p) => p.join(", "),
    };
    let why = e
        .reason
        .as_ref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    format!("rule {}: {who} may {what}{why}", e.rule)
}

fn read_input(path: &Path) -> Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading standard input")?;
        return Ok(buf);
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn eval(
    spec: &str,
    request: Option<&Path>,
    inspect: Option<&Path>,
    user: &str,
) -> Result<ExitCode> {
    let policy = load(spec)?;
    let decision = match (request, inspect) {
        (Some(path), _) => {
            let bytes = read_input(path)?;
            let req = moat_policy::AuthzRequest::from_json(&bytes)
                .with_context(|| format!("{}: not an authorization request", path.display()))?;
            moat_policy::evaluate(&policy, &req)
        }
        (None, Some(path)) => {
            let bytes = read_input(path)?;
            let json = moat_policy::InspectJson::parse(&unwrap_cli_array(&bytes))
                .with_context(|| format!("{}: not inspect output", path.display()))?;
            moat_policy::evaluate_inspect(&policy, user, &json)
        }
        (None, None) => bail!("give --request or --inspect"),
    };
    print_decision(&decision)?;
    Ok(if decision.allow {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DENIED)
    })
}

/// `docker inspect` prints a one-element array; the API returns the object.
fn unwrap_cli_array(bytes: &[u8]) -> Vec<u8> {
    if let Ok(serde_json::Value::Array(mut items)) = serde_json::from_slice(bytes) {
        if items.len() == 1 {
            if let Ok(v) = serde_json::to_vec(&items.remove(0)) {
                return v;
            }
        }
    }
    bytes.to_vec()
}

fn print_decision(d: &Decision) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "decision:  {}", if d.allow { "allow" } else { "deny" })?;
    writeln!(out, "rule:      {}", d.rule.as_deref().unwrap_or("-"))?;
    writeln!(out, "endpoint:  {}", d.endpoint_label())?;
    if !d.message.is_empty() {
        writeln!(out, "message:   {}", d.message)?;
    }
    Ok(())
}

/// Applies the node policy to a `moat run` before anything starts: without
/// a policy file nothing changes; a file that does not load, or a rule the
/// launch violates, refuses it.
pub fn check_run(req: &RunRequest) -> Result<()> {
    let path = std::env::var_os(POLICY_FILE_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(moat_policy::DEFAULT_POLICY_PATH));
    match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        _ => {}
    }
    let policy = moat_policy::load_file(&path)
        .map_err(|e| anyhow::anyhow!("the node policy does not load, so nothing runs: {e}"))?;
    let decision = moat_policy::evaluate_run(&policy, &run_intent(req));
    if decision.allow {
        return Ok(());
    }
    bail!(
        "refused by the node policy {}: rule {:?}: {}",
        path.display(),
        decision.rule.unwrap_or_default(),
        decision.message
    )
}

/// What a launch asks for, in the policy's terms.
pub fn run_intent(req: &RunRequest) -> RunIntent {
    let seccomp_unconfined = match &req.profile {
        ProfileRef::Unconfined => true,
        // A profile that does not load fails the launch later anyway.
        other => other
            .load()
            .ok()
            .flatten()
            .is_some_and(|(p, _)| matches!(p.default_action, Action::Allow | Action::Log)),
    };
    let defaults = CapSet::docker_default();
    RunIntent {
        seccomp_unconfined,
        added_caps: req
            .caps
            .iter()
            .filter(|c| !defaults.contains(c))
            .map(str::to_string)
            .collect(),
        userns_host: req.userns == UsernsSpec::Host,
        pids_unlimited: req.pids_limit == PidsLimit::Unlimited,
        user: invoking_user(),
    }
}

/// The real uid's account name (or the number when it has none): `moat
/// run` needs root, so this is who ran it, not a name the caller can set.
fn invoking_user() -> String {
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name)
}
