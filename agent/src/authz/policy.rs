//! The policy in force: loaded at start (a missing file is the built-in
//! baseline, a file that does not load is an error), replaced on SIGHUP only
//! by a policy that loads, read by every decision without waiting.

use std::{
    fs,
    io::Read as _,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use moat_policy::{load::BASELINE_TOML, Policy, PolicyError};
use sha2::{Digest as _, Sha256};

/// The largest policy file read (a policy is a few kilobytes; this only
/// keeps a wrong path, such as a device, from being read without end).
const MAX_POLICY_BYTES: u64 = 4 << 20;

/// A policy and where it came from.
#[derive(Debug, Clone)]
pub struct LoadedPolicy {
    /// The rules and exceptions.
    pub policy: Policy,
    /// The file, or `baseline`.
    pub source: String,
    /// SHA-256 of the text (the file's bytes, or the built-in baseline's).
    pub sha256: String,
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn read_error(file: &Path, reason: String) -> PolicyError {
    PolicyError::Read {
        file: file.to_owned(),
        reason,
    }
}

/// Loads `path` as the plugin does: a missing file is the built-in
/// baseline; a file that cannot be read, that a user other than root (or
/// moatd's own user) owns or may write, or that does not parse, is an error.
pub fn load(path: &Path) -> Result<LoadedPolicy, PolicyError> {
    let meta = match fs::metadata(path) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Ok(LoadedPolicy {
                policy: moat_policy::baseline(),
                source: "baseline".to_owned(),
                sha256: hex_sha256(BASELINE_TOML.as_bytes()),
            })
        }
        Err(err) => return Err(read_error(path, format!("cannot read: {err}"))),
        Ok(meta) => meta,
    };
    if !meta.is_file() {
        return Err(read_error(path, "not a regular file".to_owned()));
    }
    check_owner(path, meta.uid(), meta.mode())?;
    let mut bytes = Vec::new();
    fs::File::open(path)
        .and_then(|f| f.take(MAX_POLICY_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|err| read_error(path, format!("cannot read: {err}")))?;
    if bytes.len() as u64 > MAX_POLICY_BYTES {
        return Err(read_error(
            path,
            format!("larger than {MAX_POLICY_BYTES} bytes: not a policy file"),
        ));
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|err| read_error(path, format!("cannot read: not UTF-8 text ({err})")))?;
    let policy = moat_policy::load::parse(text, path)?;
    Ok(LoadedPolicy {
        policy,
        source: path.display().to_string(),
        sha256: hex_sha256(&bytes),
    })
}

/// A policy file another user could rewrite would let that user decide for
/// the daemon: refused, as `sshd` refuses a writable `authorized_keys`.
fn check_owner(path: &Path, uid: u32, mode: u32) -> Result<(), PolicyError> {
    let me = nix::unistd::geteuid().as_raw();
    if uid != 0 && uid != me {
        return Err(read_error(
            path,
            format!("owned by uid {uid}: the policy file must belong to root"),
        ));
    }
    if mode & 0o022 != 0 {
        return Err(read_error(
            path,
            format!(
                "mode {:04o} lets other users write it: `chmod go-w {}`",
                mode & 0o7777,
                path.display()
            ),
        ));
    }
    Ok(())
}

/// The policy in force, shared by the plugin's tasks.
#[derive(Debug)]
pub struct PolicyStore {
    path: PathBuf,
    current: RwLock<Arc<LoadedPolicy>>,
}

impl PolicyStore {
    /// A store holding `loaded`, which came from `path`.
    pub fn new(path: PathBuf, loaded: LoadedPolicy) -> Self {
        Self {
            path,
            current: RwLock::new(Arc::new(loaded)),
        }
    }

    /// The policy file it reloads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The policy in force now.
    pub fn current(&self) -> Arc<LoadedPolicy> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Loads the file again; on success the new policy is in force, on
    /// failure the old one stays.
    pub fn reload(&self) -> Result<Arc<LoadedPolicy>, PolicyError> {
        let loaded = Arc::new(load(&self.path)?);
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = loaded.clone();
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn missing_is_baseline_and_broken_is_an_error_that_keeps_the_old_policy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        let loaded = load(&path).unwrap();
        assert_eq!(loaded.source, "baseline");
        assert_eq!(loaded.sha256.len(), 64);
        let store = PolicyStore::new(path.clone(), loaded);

        fs::write(
            &path,
            "[[rule]]\nname = \"x\"\ncheck = \"privilegd\"\nmessage = \"m\"\n",
        )
        .unwrap();
        let err = store.reload().unwrap_err().to_string();
        assert!(err.contains("privilegd"), "{err}");
        assert_eq!(store.current().source, "baseline");

        let text = "[[rule]]\nname = \"p\"\ncheck = \"privileged\"\nmessage = \"no\"\n";
        fs::write(&path, text).unwrap();
        let now = store.reload().unwrap();
        assert_eq!(now.source, path.display().to_string());
        assert_eq!(now.sha256, hex_sha256(text.as_bytes()));
        assert_eq!(store.current().policy.rules.len(), 1);
    }

    #[test]
    fn a_file_others_may_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        fs::write(
            &path,
            "[[rule]]\nname = \"p\"\ncheck = \"privileged\"\nmessage = \"no\"\n",
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("mode 0666 lets other users write it"), "{err}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load(&path).is_ok());
        assert!(load(dir.path())
            .unwrap_err()
            .to_string()
            .contains("not a regular file"));
    }
}
