//! Reading and writing record files.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::StateError;
use super::record::WorkloadRecord;
use super::TEMP_EXT;

/// Reads a workload record; `None` if the file does not exist.
pub(super) fn read_record(path: &Path, name: &str) -> Result<Option<WorkloadRecord>, StateError> {
    read_named(path, name, |r: &WorkloadRecord| &r.name)
}

/// Reads the record of workload `name` (whose own name `name_of` gives);
/// `None` if the file does not exist.
pub(super) fn read_named<T: DeserializeOwned>(
    path: &Path,
    name: &str,
    name_of: impl Fn(&T) -> &str,
) -> Result<Option<T>, StateError> {
    let Some(bytes) = read_optional(path)? else {
        return Ok(None);
    };
    let rec: T = serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
        file: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    // A record under another name's file would let two workloads share a
    // name; such a file was not written by us.
    let found = name_of(&rec);
    if found != name {
        return Err(StateError::Corrupt {
            file: path.to_path_buf(),
            reason: format!(
                "it holds the record of {found:?}, not of the workload its file name says"
            ),
        });
    }
    Ok(Some(rec))
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(StateError::Io {
            path: path.to_path_buf(),
            op: "read",
            error,
        }),
    }
}

pub(super) fn remove_if_exists(path: &Path) -> Result<(), StateError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(StateError::Io {
            path: path.to_path_buf(),
            op: "remove",
            error,
        }),
    }
}

/// Writes `value` as JSON to `path` through a temp file and a rename, so
/// that readers never see a partial record. Callers hold the lock, so one
/// fixed temp name per record suffices (and a crashed writer's leftover is
/// overwritten rather than accumulating).
pub(super) fn write_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}{TEMP_EXT}"));
    let io_err = |path: &Path, op, error| StateError::Io {
        path: path.to_path_buf(),
        op,
        error,
    };
    let mut bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| io_err(path, "encode", io::Error::other(e)))?;
    bytes.push(b'\n');
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io_err(&tmp, "create", e))?;
        f.write_all(&bytes).map_err(|e| io_err(&tmp, "write", e))?;
        // Without this a crash after the rename could leave an empty file
        // on a disk-backed state directory.
        f.sync_all().map_err(|e| io_err(&tmp, "sync", e))?;
        fs::rename(&tmp, path).map_err(|e| io_err(path, "rename temp file into", e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
