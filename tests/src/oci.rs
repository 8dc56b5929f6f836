//! OCI bundles for the peers the benchmarks compare moat with (crun, runc):
//! moat's built-in seccomp profile in OCI form, a `config.json` equivalent to
//! a `moat run` launch, root file systems, and the cgroups and runtime
//! commands around them. `launch_bench` runs `/bin/true` from such a bundle;
//! `seccomp_bench` runs its own syscall loop from one.
//!
//! # The OCI seccomp profile
//!
//! moat's built-in profile ([`builtin::default_profile`]) is resolved for
//! this host ([`Host::detect`]) and Docker's default capabilities with
//! [`resolve::resolve`], exactly what `moat run` compiles, and written as an
//! OCI `linux.seccomp` object ([`oci_seccomp`]): `defaultAction`,
//! `defaultErrnoRet`, `architectures` and one `syscalls` entry per resolved
//! rule (`names`, `action`, `errnoRet`, `args`). As a check
//! ([`check_round_trip`]), the object is parsed back with moat's own parser
//! and resolved again; the rules must come out the same.
//!
//! # The configuration
//!
//! [`oci_config`] follows `crun spec --rootless`, i.e. the namespaces pid,
//! network, ipc, uts, user and mount, its mounts (`/proc`, a `/dev` tmpfs,
//! devpts, `/dev/shm`, mqueue, read-only `/sys` and `/sys/fs/cgroup`), its
//! masked and read-only paths and a read-only root, changed to be
//! equivalent to a `moat run --userns auto --pids-limit N`: uid/gid mapping
//! `0:HOST_ID:ID_RANGE`, `linux.resources.pids.limit`, cgroups under a
//! given parent, Docker's default capabilities (bounding, effective,
//! permitted; inheritable and ambient empty, as moat), `noNewPrivileges`,
//! no rlimits, no terminal, and the seccomp object above.

use std::fs::{self, File};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use moat_runtime::caps::CapSet;
use moat_runtime::seccomp::arch::Host;
use moat_runtime::seccomp::{builtin, parse, resolve, Source};
use serde_json::{json, Map, Value};

/// First host id of the containers' user namespace range.
pub const HOST_ID: u32 = 100_000;
/// Size of the containers' user namespace range.
pub const ID_RANGE: u32 = 65_536;
/// The namespaces of `crun spec --rootless`, in OCI spelling.
pub const OCI_NAMESPACES: [&str; 6] = ["pid", "network", "ipc", "uts", "user", "mount"];

/// moat's built-in profile resolved for this host and Docker's default
/// capabilities: what `moat run` compiles.
pub fn resolved_default() -> Result<resolve::Resolved, String> {
    let profile =
        builtin::default_profile().map_err(|e| format!("the built-in default profile: {e}"))?;
    let host = Host::detect().map_err(|e| format!("detecting the host: {e}"))?;
    let target = resolve::Target {
        host,
        caps: CapSet::docker_default(),
    };
    Ok(resolve::resolve(&profile, builtin::SOURCE, &target))
}

/// A resolved profile as an OCI `linux.seccomp` object.
pub fn oci_seccomp(r: &resolve::Resolved) -> Result<Value, String> {
    let to_value = |what: &str, v: Result<Value, serde_json::Error>| {
        v.map_err(|e| format!("writing the OCI seccomp {what}: {e}"))
    };
    let mut o = Map::new();
    o.insert(
        "defaultAction".into(),
        r.default_action.action.as_str().into(),
    );
    if let Some(e) = r.default_action.errno {
        o.insert("defaultErrnoRet".into(), e.into());
    }
    o.insert(
        "architectures".into(),
        r.architectures
            .iter()
            .map(|a| a.name())
            .collect::<Vec<_>>()
            .into(),
    );
    if !r.flags.is_empty() {
        o.insert(
            "flags".into(),
            to_value("flags", serde_json::to_value(&r.flags))?,
        );
    }
    let mut syscalls = Vec::with_capacity(r.rules.len());
    for rule in &r.rules {
        let mut s = Map::new();
        s.insert("names".into(), rule.names.clone().into());
        s.insert("action".into(), rule.action.action.as_str().into());
        if let Some(e) = rule.action.errno {
            s.insert("errnoRet".into(), e.into());
        }
        if !rule.args.is_empty() {
            s.insert(
                "args".into(),
                to_value("args", serde_json::to_value(&rule.args))?,
            );
        }
        syscalls.push(Value::Object(s));
    }
    o.insert("syscalls".into(), syscalls.into());
    Ok(Value::Object(o))
}

/// Parses the OCI object back with moat's parser, resolves it again and
/// checks that the rules are the same as the ones it was written from, so
/// that a peer given `seccomp` runs the filter moat runs.
pub fn check_round_trip(seccomp: &Value, original: &resolve::Resolved) -> Result<(), String> {
    let text = seccomp.to_string();
    let profile = parse::from_str(&text, Source::Builtin("oci-export"))
        .map_err(|e| format!("moat cannot parse the OCI profile it wrote: {e}"))?;
    let target = resolve::Target {
        host: Host::detect().map_err(|e| format!("detecting the host: {e}"))?,
        caps: CapSet::docker_default(),
    };
    let again = resolve::resolve(&profile, Source::Builtin("oci-export"), &target);
    let key = |r: &resolve::Resolved| {
        (
            r.default_action,
            r.architectures.clone(),
            r.rules
                .iter()
                .map(|x| (x.names.clone(), x.action, x.args.clone()))
                .collect::<Vec<_>>(),
        )
    };
    if key(&again) != key(original) {
        return Err("the OCI profile does not resolve to the rules it was written from".into());
    }
    Ok(())
}

/// What varies between the bundles' configurations.
#[derive(Debug, Clone, Copy)]
pub struct Container<'a> {
    /// `process.args`: the program (a path inside the rootfs) and its
    /// arguments.
    pub args: &'a [&'a str],
    /// The `linux.seccomp` object ([`oci_seccomp`]).
    pub seccomp: &'a Value,
    /// The cgroup parent: `cgroupsPath` is `/<parent>/oci-<our pid>`.
    pub cgroup_parent: &'a str,
    /// `linux.resources.pids.limit`.
    pub pids_limit: u64,
}

/// The `config.json` of a bundle running `c` (see the module comment).
pub fn oci_config(c: &Container) -> Value {
    let caps: Vec<String> = CapSet::docker_default()
        .iter()
        .map(str::to_string)
        .collect();
    let id_map = json!([{ "containerID": 0, "hostID": HOST_ID, "size": ID_RANGE }]);
    json!({
        "ociVersion": "1.0.0",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": c.args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
                "inheritable": [],
                "ambient": []
            },
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "bench",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
              "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }
        ],
        "linux": {
            "uidMappings": id_map,
            "gidMappings": id_map,
            "namespaces": OCI_NAMESPACES.iter().map(|t| json!({ "type": t })).collect::<Vec<_>>(),
            "cgroupsPath": format!("/{}/oci-{}", c.cgroup_parent, std::process::id()),
            "resources": {
                "devices": [{ "allow": false, "access": "rwm" }],
                "pids": { "limit": c.pids_limit }
            },
            "seccomp": c.seccomp,
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

/// Writes `bundle/config.json` for `c`.
pub fn write_config(bundle: &Path, c: &Container) -> Result<(), String> {
    let path = bundle.join("config.json");
    let text = serde_json::to_string_pretty(&oci_config(c))
        .map_err(|e| format!("{}: cannot serialise: {e}", path.display()))?;
    fs::write(&path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))
}

fn io_error(what: &Path, e: std::io::Error) -> String {
    format!("{}: {e}", what.display())
}

/// Makes `rootfs` and the mount points the configuration uses (`proc`,
/// `dev`, `sys`).
pub fn make_mount_points(rootfs: &Path) -> Result<(), String> {
    for d in ["proc", "dev", "sys"] {
        fs::create_dir_all(rootfs.join(d)).map_err(|e| io_error(&rootfs.join(d), e))?;
    }
    Ok(())
}

/// Makes `dir/rootfs` from a static busybox: `bin/busybox`, `bin/true`
/// linking to it, and the mount points the config uses.
pub fn build_rootfs(dir: &Path, busybox: &Path) -> Result<(), String> {
    let rootfs = dir.join("rootfs");
    make_mount_points(&rootfs)?;
    fs::create_dir_all(rootfs.join("bin")).map_err(|e| io_error(&rootfs.join("bin"), e))?;
    let target = rootfs.join("bin/busybox");
    fs::copy(busybox, &target).map_err(|e| io_error(busybox, e))?;
    symlink("busybox", rootfs.join("bin/true")).map_err(|e| io_error(&rootfs.join("bin/true"), e))
}

/// Copies the dynamically linked program `exe` into `rootfs` as `dest` (a
/// path inside the rootfs, e.g. `/seccomp_bench`), with every shared
/// library and the ELF interpreter `ldd` lists, each at the path `ldd`
/// gives (so the loader's default search path finds them without a cache).
/// Returns the library paths copied.
pub fn copy_with_libraries(rootfs: &Path, exe: &Path, dest: &str) -> Result<Vec<PathBuf>, String> {
    let out = Command::new("ldd")
        .arg(exe)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ldd on {}: {e}", exe.display()))?;
    if !out.status.success() {
        return Err(format!(
            "ldd {} failed ({}): {}",
            exe.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    if let Some(l) = text.lines().find(|l| l.contains("not found")) {
        return Err(format!("ldd {}: {}", exe.display(), l.trim()));
    }
    let libs = ldd_paths(&text);
    if libs.is_empty() {
        return Err(format!(
            "ldd {} lists no libraries (a static program needs no copying: \
             copy it alone)",
            exe.display()
        ));
    }
    copy_into(rootfs, exe, Path::new(dest))?;
    for lib in &libs {
        copy_into(rootfs, lib, lib)?;
    }
    Ok(libs)
}

/// The absolute paths in `ldd` output: `name => /path (0x…)` and the
/// interpreter's `/path (0x…)`; the vDSO has none.
fn ldd_paths(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| {
            let l = l.split_once("=>").map_or(l, |(_, r)| r).trim();
            let path = l.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Copies `src` (following symlinks) to `dest` inside `rootfs`, making the
/// directories on the way; the mode is kept.
fn copy_into(rootfs: &Path, src: &Path, dest: &Path) -> Result<(), String> {
    let rel = dest.strip_prefix("/").unwrap_or(dest);
    let target = rootfs.join(rel);
    if let Some(dir) = target.parent() {
        fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    }
    fs::copy(src, &target)
        .map(drop)
        .map_err(|e| format!("copying {} to {}: {e}", src.display(), target.display()))
}

/// The command that runs the bundle `bundle` with the OCI runtime `exe`
/// (crun or runc) as container `id`, its state under `state_root` (a
/// private `--root`, so the host's `/run/<runtime>` is left alone). Its
/// stdin is `stdin`, never `/dev/null`: crun 1.8 `fchown`s the container's
/// stdio to the container's root, which would hand the host's `/dev/null`
/// to uid 100000.
pub fn runtime_command(
    exe: &Path,
    state_root: &Path,
    bundle: &Path,
    id: &str,
    stdin: File,
) -> Command {
    let mut c = Command::new(exe);
    c.arg("--root")
        .arg(state_root)
        .arg("run")
        .arg("--bundle")
        .arg(bundle)
        .arg(id)
        .stdin(stdin);
    c
}

/// Why crun 1.8 would refuse this host's cgroup layout, if it would: a
/// hybrid host (v1 hierarchies beside a v2 mount at `unified`) whose
/// cgroup v2 has a controller. `scripts/lib/crun-hybrid.sh` fixes that on
/// the development machine by mounting hugetlb on cgroup v1.
pub fn crun_layout_problem() -> Option<String> {
    let v2 = Path::new("/sys/fs/cgroup/unified/cgroup.controllers");
    let controllers = fs::read_to_string(v2).ok()?;
    let controllers = controllers.trim();
    (!controllers.is_empty()).then(|| {
        format!(
            "crun refuses this hybrid cgroup host while cgroup v2 has controllers ({controllers}); \
             scripts/lib/crun-hybrid.sh (crun_hybrid_enable) mounts hugetlb on cgroup v1 to fix that"
        )
    })
}

pub use crate::which;

/// The cgroups named `name` directly under each mounted hierarchy's root
/// that did not exist when [`CgroupParents::before`] was called: the
/// parents the launchers (moat, crun, runc) make for a bench's workloads,
/// which the bench removes when it is done.
#[derive(Debug, Default)]
pub struct CgroupParents {
    new: Vec<PathBuf>,
}

impl CgroupParents {
    /// Notes which hierarchies have no cgroup `name` yet.
    pub fn before(name: &str) -> CgroupParents {
        let new = cgroup_hierarchies()
            .into_iter()
            .map(|h| h.join(name))
            .filter(|p| !p.exists())
            .collect();
        CgroupParents { new }
    }

    /// Removes the parents made since [`CgroupParents::before`] (their
    /// children first). A cgroup still in use stays; the warning, prefixed
    /// with `program`, goes to stderr.
    pub fn remove(&self, program: &str) {
        for parent in &self.new {
            if let Ok(children) = fs::read_dir(parent) {
                for c in children.flatten() {
                    if c.file_type().is_ok_and(|t| t.is_dir()) {
                        let _ = fs::remove_dir(c.path());
                    }
                }
            }
            if parent.exists() {
                if let Err(e) = fs::remove_dir(parent) {
                    eprintln!(
                        "{program}: warning: could not remove {}: {e}",
                        parent.display()
                    );
                }
            }
        }
    }
}

/// The root of every mounted cgroup hierarchy under `/sys/fs/cgroup`.
pub fn cgroup_hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.procs").exists() {
        return vec![root.to_path_buf()];
    }
    let mut v: Vec<PathBuf> = fs::read_dir(root)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.join("cgroup.procs").exists())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_paths_are_the_absolute_ones() {
        let text = "\tlinux-vdso.so.1 (0x00007f3916e05000)\n\
                    \tlibseccomp.so.2 => /lib/x86_64-linux-gnu/libseccomp.so.2 (0x00007f)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f3916ae7000)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f3916e07000)\n";
        assert_eq!(
            ldd_paths(text),
            [
                "/lib/x86_64-linux-gnu/libseccomp.so.2",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn the_default_profile_survives_the_oci_round_trip() {
        let r = resolved_default().unwrap();
        let s = oci_seccomp(&r).unwrap();
        check_round_trip(&s, &r).unwrap();
        let config = oci_config(&Container {
            args: &["/bin/true"],
            seccomp: &s,
            cgroup_parent: "p",
            pids_limit: 7,
        });
        assert_eq!(config["linux"]["resources"]["pids"]["limit"], 7);
        assert_eq!(config["process"]["args"][0], "/bin/true");
    }
}
