//! How the figures were made and on what: the conditions (the commands, the
//! seccomp profile, the cgroup layout, the state directories) and the
//! machine with the peers' versions.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use moat_runtime::seccomp::resolve;
use moat_tests::bench;
use moat_tests::oci::{self, HOST_ID, ID_RANGE, OCI_NAMESPACES};
use serde_json::Value as Json;

use super::launcher::Work;
use super::variants::Variant;
use super::{first_line, Opts, BWRAP_SECCOMP_FD, CGROUP_PARENT, PIDS_LIMIT};

/// How the figures were made, one sentence each (the Markdown's
/// conditions and the JSON's).
pub(super) fn conditions(
    opts: &Opts,
    work: &Work,
    resolved: &resolve::Resolved,
    seccomp: &Json,
    elapsed: Duration,
) -> Vec<String> {
    let n_args = resolved.rules.iter().filter(|r| !r.args.is_empty()).count();
    vec![
        format!(
            "Mode: {}; harness build: {}; {} warm-up rounds, then {} timed rounds, each running \
             every variant once in rotating order; whole commands timed from outside (spawn to \
             `wait4`); {:.1} s in all.",
            bench::mode(opts.quick),
            bench::build(),
            opts.warmups,
            opts.rounds,
            elapsed.as_secs_f64()
        ),
        format!(
            "moat: `{} run --pids-limit {PIDS_LIMIT} --userns auto --cgroup-parent \
             {CGROUP_PARENT} -- /bin/true` (built-in default seccomp profile, Docker's default \
             capabilities, `no_new_privs`), sub-ids `moat:{HOST_ID}:{}` from \
             `MOAT_SUBUID_FILE`/`MOAT_SUBGID_FILE`, private `MOAT_STATE_DIR`. `moat run` takes \
             the compiled filter from its seccomp cache (the default one, under that state \
             directory, filled by the warm-up rounds); `moat run (cold cache)` is the same \
             command with `MOAT_CACHE_DIR` at a private directory removed (untimed) before \
             every run, so each run compiles the profile and stores it.{}",
            opts.moat.display(),
            ID_RANGE * 100,
            opts.compare_moat
                .as_ref()
                .map(|m| format!(
                    " `moat run (--compare-moat)` is `{}` run the same way as `moat run`.",
                    m.display()
                ))
                .unwrap_or_default()
        ),
        format!(
            "crun, runc: `<runtime> --root <private dir> run --bundle <bundle> <fresh id>`; the \
             bundle's rootfs is a static busybox with `bin/true` linked to it; `config.json` is \
             `crun spec --rootless` (namespaces {}; its mounts, masked and read-only paths, \
             read-only root) with uid/gid map 0:{HOST_ID}:{ID_RANGE}, `pids.limit` \
             {PIDS_LIMIT}, `cgroupsPath` under `/{CGROUP_PARENT}`, Docker's default \
             capabilities, `noNewPrivileges`, no rlimits, no terminal.",
            OCI_NAMESPACES.join(", ")
        ),
        format!(
            "bwrap: `bwrap --unshare-user --uid 0 --gid 0 --ro-bind / / --seccomp \
             {BWRAP_SECCOMP_FD} -- /bin/true`, fd {BWRAP_SECCOMP_FD} being the raw cBPF of \
             `moat profile compile default` (compiled once, untimed); bwrap has no pids limit \
             (it makes no cgroup) and maps only one uid (0 to root), and it sets \
             `no_new_privs` itself."
        ),
        format!(
            "Seccomp for crun and runc: moat's built-in profile resolved for this host ({}) and \
             Docker's default capabilities, as OCI `linux.seccomp`: default {}, {} rules \
             ({n_args} with argument conditions), {} bytes of JSON; parsed back by moat's \
             parser it resolves to the same rules.",
            resolved
                .architectures
                .iter()
                .map(|a| a.name())
                .collect::<Vec<_>>()
                .join(", "),
            resolved.default_action,
            resolved.rules.len(),
            seccomp.to_string().len()
        ),
        "Peak RSS is `ru_maxrss` from `wait4` on the launcher's pid (the Markdown gives the \
         largest over the timed runs, the JSON the median, min and max). The kernel includes \
         the peaks of the launcher's reaped children in it: for moat the workload (a copy of \
         moat until its `execve`), for runc `runc init` (a re-execution of runc), for crun and \
         bwrap their own forks."
            .to_string(),
        format!("Cgroup layout: {}.", cgroup_layout()),
        format!(
            "State directories (moat's, crun's and runc's `--root`) are private ones on {}; \
             their defaults (`/run/moat`, `/run/crun`, `/run/runc`) are on {}.",
            fs_type(&work.dir),
            fs_type(Path::new("/run"))
        ),
    ]
}

/// Where the pids controller is and what cgroup v2 has (crun refuses a
/// hybrid host while v2 has any controller).
fn cgroup_layout() -> String {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let v1: Vec<String> = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 3 && f[2] == "cgroup").then(|| {
                f[3].split(',')
                    .filter(|o| {
                        !matches!(*o, "rw" | "ro" | "nosuid" | "nodev" | "noexec" | "relatime")
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            })
        })
        .collect();
    let v2 = mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[2] == "cgroup2").then(|| f[1].to_string())
    });
    let v2_controllers = v2
        .as_ref()
        .and_then(|m| fs::read_to_string(Path::new(m).join("cgroup.controllers")).ok())
        .map(|c| c.trim().to_string());
    let v2_text = match (&v2, &v2_controllers) {
        (Some(m), Some(c)) if c.is_empty() => format!("cgroup v2 at `{m}` with no controllers"),
        (Some(m), Some(c)) => format!("cgroup v2 at `{m}` with controllers `{c}`"),
        (Some(m), None) => format!("cgroup v2 at `{m}`"),
        (None, _) => "no cgroup v2".into(),
    };
    if v1.is_empty() {
        format!("v2 only ({v2_text})")
    } else {
        format!(
            "hybrid: cgroup v1 hierarchies `{}`; {v2_text}",
            v1.join("`, `")
        )
    }
}

/// The file system type of the mount `path` is on (longest mount point
/// prefix in `/proc/self/mounts`).
fn fs_type(path: &Path) -> String {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && path.starts_with(f[1])).then(|| (f[1].len(), f[2].to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, t)| t)
        .unwrap_or_else(|| "(unknown)".into())
}

/// The machine ([`bench::machine`]) and the peers' versions.
pub(super) fn machine(variants: &[Variant]) -> Vec<(String, String)> {
    let mut out = bench::machine();
    for v in variants.iter().filter(|v| v.kind.program().is_some()) {
        let name = v.kind.program().unwrap_or_default();
        let package = v.kind.package().unwrap_or(name);
        let text = if oci::which(name).is_none() {
            "not installed".to_string()
        } else {
            format!(
                "`{}` (Debian package {package} {})",
                command_line(&v.exe.to_string_lossy(), &["--version"]),
                package_version(package)
            )
        };
        out.push((name.to_string(), text));
    }
    out.push((
        "busybox".to_string(),
        format!(
            "Debian package busybox-static {}",
            package_version("busybox-static")
        ),
    ));
    out
}

/// The first line of a command's stdout, or why there is none.
fn command_line(program: &str, args: &[&str]) -> String {
    match Command::new(program)
        .args(args)
        .stderr(Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => first_line(&String::from_utf8_lossy(&o.stdout)).to_string(),
        Ok(o) => format!("(`{program}` failed: {})", o.status),
        Err(e) => format!("(`{program}`: {e})"),
    }
}

fn package_version(package: &str) -> String {
    match Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", package])
        .stderr(Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() && !o.stdout.is_empty() => {
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        }
        _ => "(not installed)".into(),
    }
}
