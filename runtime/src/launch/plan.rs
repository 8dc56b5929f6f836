//! The command's process, prepared before any process exists: the PATH
//! search, `argv`, the environment and the working directory.
//!
//! The environment is not moat's: the operator's variables (agent sockets
//! such as `SSH_AUTH_SOCK`, tokens, `SUDO_*`) are not the workload's
//! business. As under Docker, it gets `PATH` (moat's, which found the
//! command), `HOME` (from `/etc/passwd` for its uid, else `/`), `TERM` when
//! moat has one, and what `--env` adds; `--env-host` passes moat's whole
//! environment instead, as Podman's option of that name does.
//!
//! The working directory is given by path, also when it is moat's own: the
//! command resolves it in its own mount namespace, so a directory under
//! `/proc` or `/sys` is the protected one, not the host's. Should the
//! command's user not reach moat's own directory, it starts in `/` (as
//! bubblewrap does); a `--workdir` it cannot reach is an error.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::child::ChildPlan;
use super::error::LaunchError;
use super::RunRequest;

/// `PATH` when moat has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn invalid(what: impl Into<String>) -> LaunchError {
    LaunchError::os(what, std::io::Error::from(std::io::ErrorKind::InvalidInput))
}

fn cstr(s: &[u8], what: &str) -> Result<CString, LaunchError> {
    CString::new(s).map_err(|_| invalid(format!("{what} contains a NUL byte")))
}

/// The environment the command gets (see the module documentation).
pub fn environment(
    req: &RunRequest,
    host: impl Iterator<Item = (String, String)>,
    passwd: &Path,
) -> Vec<(String, String)> {
    let host: Vec<(String, String)> = host.collect();
    let mut env: Vec<(String, String)> = if req.env_host {
        host
    } else {
        let get = |k: &str| host.iter().find(|(k2, _)| k2 == k).map(|(_, v)| v.clone());
        let mut base = vec![
            (
                "PATH".to_string(),
                get("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
            ),
            ("HOME".to_string(), home_of(req.uid, passwd)),
        ];
        if let Some(term) = get("TERM") {
            base.push(("TERM".into(), term));
        }
        base
    };
    env.retain(|(k, _)| !req.env.iter().any(|(k2, _)| k2 == k));
    env.extend(req.env.iter().cloned());
    env
}

/// The home directory of `uid` in `passwd`, else `/`.
fn home_of(uid: u32, passwd: &Path) -> String {
    std::fs::read_to_string(passwd)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 7 && f[2].parse() == Ok(uid) && !f[5].is_empty())
                    .then(|| f[5].to_string())
            })
        })
        .unwrap_or_else(|| "/".into())
}

/// The working directory: `--workdir`, else moat's own (by path).
fn workdir(req: &RunRequest) -> Result<PathBuf, LaunchError> {
    match &req.workdir {
        Some(d) => Ok(d.clone()),
        None => std::env::current_dir().map_err(|e| {
            LaunchError::os(
                "moat's working directory has no path the workload could resolve (deleted?); give one with --workdir",
                e,
            )
        }),
    }
}

/// The command's [`ChildPlan`], without the parts that depend on the
/// launch (seccomp program, terminal).
pub fn prepare_exec(req: &RunRequest) -> Result<ChildPlan, LaunchError> {
    let Some(program) = req.command.first() else {
        return Err(invalid("no command given"));
    };
    let host = std::env::vars_os().map(|(k, v)| {
        (
            k.to_string_lossy().into_owned(),
            v.to_string_lossy().into_owned(),
        )
    });
    let env = environment(req, host, Path::new("/etc/passwd"));
    let path_var = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| DEFAULT_PATH.into());
    let candidates: Vec<PathBuf> = if program.contains('/') {
        vec![PathBuf::from(program)]
    } else {
        std::env::split_paths(&path_var)
            .filter(|d| !d.as_os_str().is_empty())
            .map(|d| d.join(program))
            .collect()
    };
    let workdir = workdir(req)?;
    Ok(ChildPlan {
        exec_candidates: candidates
            .iter()
            .map(|p| cstr(p.as_os_str().as_bytes(), "the command path"))
            .collect::<Result<_, _>>()?,
        argv: req
            .command
            .iter()
            .map(|a| cstr(a.as_bytes(), "an argument"))
            .collect::<Result<_, _>>()?,
        env: env
            .iter()
            .map(|(k, v)| cstr(format!("{k}={v}").as_bytes(), "an environment variable"))
            .collect::<Result<_, _>>()?,
        workdir: Some(cstr(
            workdir.as_os_str().as_bytes(),
            "the working directory",
        )?),
        workdir_fallback: req.workdir.is_none(),
        uid: req.uid,
        gid: req.gid,
        caps: req.caps.mask(),
        last_cap: last_cap(),
        no_new_privs: req.no_new_privs,
        seccomp: None,
        cgroup_namespace: req.isolation.cgroup == super::namespaces::Share::Private,
        tty: None,
        preserve_fds: req.preserve_fds,
    })
}

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(crate::caps::ALL_CAPS.len() as u32 - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::CapSet;
    use crate::cgroup::{CgroupConfig, PidsLimit};
    use crate::seccomp::ProfileRef;
    use crate::userns::UsernsSpec;

    fn request(uid: u32, env_host: bool, env: &[(&str, &str)]) -> RunRequest {
        RunRequest {
            name: "t".into(),
            command: vec!["true".into()],
            profile: ProfileRef::Default,
            log_denials: false,
            pids_limit: PidsLimit::Inherit,
            pids_limit_text: "inherit".into(),
            userns: UsernsSpec::Host,
            uid,
            gid: uid,
            caps: CapSet::docker_default(),
            no_new_privs: true,
            cgroup: CgroupConfig::default(),
            cgroup_manager: None,
            cgroup_parent: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            env_host,
            isolation: Default::default(),
            preserve_fds: 0,
            workdir: None,
            state_dir: PathBuf::new(),
            seccomp_cache: None,
            subuid: PathBuf::new(),
            subgid: PathBuf::new(),
        }
    }

    fn host() -> impl Iterator<Item = (String, String)> {
        [
            ("PATH", "/opt/bin:/usr/bin"),
            ("SSH_AUTH_SOCK", "/tmp/agent"),
            ("TERM", "xterm"),
            ("HOME", "/home/operator"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
    }

    fn passwd(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("moat-passwd-{tag}-{}", std::process::id()));
        std::fs::write(
            &p,
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/false\n",
        )
        .unwrap();
        p
    }

    #[test]
    fn only_path_home_term_and_asked_for_variables_pass() {
        let pw = passwd("only");
        let env = environment(
            &request(0, false, &[("A", "1"), ("TERM", "dumb")]),
            host(),
            &pw,
        );
        assert_eq!(
            env,
            [
                ("PATH".to_string(), "/opt/bin:/usr/bin".to_string()),
                ("HOME".into(), "/root".into()),
                ("A".into(), "1".into()),
                ("TERM".into(), "dumb".into()),
            ]
        );
        let env = environment(&request(65534, false, &[]), host(), &pw);
        assert!(env.contains(&("HOME".into(), "/nonexistent".into())));
        let env = environment(&request(1234, false, &[]), std::iter::empty(), &pw);
        assert_eq!(
            env,
            [
                ("PATH".to_string(), DEFAULT_PATH.to_string()),
                ("HOME".into(), "/".into()),
            ]
        );
        let _ = std::fs::remove_file(pw);
    }

    #[test]
    fn env_host_passes_everything() {
        let pw = passwd("host");
        let env = environment(&request(0, true, &[("HOME", "/x")]), host(), &pw);
        assert!(env.contains(&("SSH_AUTH_SOCK".into(), "/tmp/agent".into())));
        assert!(env.contains(&("HOME".into(), "/x".into())));
        assert_eq!(env.iter().filter(|(k, _)| k == "HOME").count(), 1);
        let _ = std::fs::remove_file(pw);
    }
}
