//! Records as JSON files in a [`TrustedDir`].

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::StateError;
use super::record::WorkloadRecord;
use super::record_file;
use super::trusted::TrustedDir;

/// Reads the workload record of `name`; `None` if there is none.
pub(super) fn read_record(
    dir: &TrustedDir,
    name: &str,
) -> Result<Option<WorkloadRecord>, StateError> {
    read_named(dir, name, |r: &WorkloadRecord| &r.name)
}

/// Reads the record of workload `name` (whose own name `name_of` gives)
/// from `dir`; `None` if there is none.
pub(super) fn read_named<T: DeserializeOwned>(
    dir: &TrustedDir,
    name: &str,
    name_of: impl Fn(&T) -> &str,
) -> Result<Option<T>, StateError> {
    let file = record_file(name);
    let path = dir.path().join(&file);
    let Some(bytes) = dir.read(&file)? else {
        return Ok(None);
    };
    let rec: T = serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
        file: path.clone(),
        reason: e.to_string(),
    })?;
    // A record under another name's file would let two workloads share a
    // name; such a file was not written by us.
    let found = name_of(&rec);
    if found != name {
        return Err(StateError::Corrupt {
            file: path,
            reason: format!(
                "it holds the record of {found:?}, not of the workload its file name says"
            ),
        });
    }
    Ok(Some(rec))
}

/// Writes `value` as JSON to the file `file` of `dir`, atomically (and
/// durably with `durable`).
pub(super) fn write_json<T: Serialize>(
    dir: &TrustedDir,
    file: &str,
    value: &T,
    durable: bool,
) -> Result<(), StateError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| StateError::Io {
        path: dir.path().join(file),
        op: "encode",
        error: std::io::Error::other(e),
    })?;
    bytes.push(b'\n');
    dir.write_atomic(file, &bytes, durable)
}
