//! Which boot last wrote the state: the kernel's boot id, kept in the
//! state directory's `boot_id` file.
//!
//! Records are written without `fsync`, which would make every launch wait
//! for the disk three times (1-5 ms each on this machine's ext4 `/run`, far
//! more while other work writes). That is safe because of what records
//! describe: processes, cgroups and id ranges, none of which outlives the
//! boot. Within a boot a reader sees a whole record or none (records are
//! renamed into place, and the page cache is the same for everyone); only
//! a crash can leave one cut short or empty, and a crash ends everything
//! that record could name. So once the state is known to come from an
//! earlier boot, a record that cannot be parsed stands for nothing that
//! runs, and is removed (with a warning) instead of stopping every launch
//! as an unreadable record of this boot must.
//!
//! The `boot_id` file itself is written durably (file and directory
//! synced), once per boot, before any record of that boot is written, so
//! after a crash it still names the boot the records come from. Without a
//! readable boot id (no procfs) records are synced as before.

use super::error::StateError;
use super::lock::StateLock;
use super::name::validate_name;
use super::record::WorkloadRecord;
use super::RECORD_EXT;

/// The file in the state directory that names the boot that wrote it.
pub(super) const BOOT_FILE: &str = "boot_id";

/// Where the kernel gives this boot's id.
const KERNEL_BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// This boot's id (a UUID), if the kernel gives one.
pub(super) fn current() -> Option<String> {
    let id = std::fs::read_to_string(KERNEL_BOOT_ID).ok()?;
    let id = id.trim();
    let uuid = id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    uuid.then(|| id.to_string())
}

impl StateLock<'_> {
    /// Makes the state this boot's (whose id is `now`): when its `boot_id`
    /// names another boot, removes the records a crash may have cut short
    /// (regular files named as records whose content does not parse), each
    /// with a warning; then records `now` durably if it is not there yet.
    /// Anything else stays, and is judged as before: a crash does not make
    /// FIFOs, links or records filed under another name.
    pub(super) fn mark_boot(&self, now: &str) -> Result<(), StateError> {
        let root = &self.dir.root;
        let marked = root.read(BOOT_FILE)?;
        if marked.as_deref().map(|m| m.trim_ascii()) == Some(now.as_bytes()) {
            return Ok(());
        }
        if marked.is_some() {
            let dir = &self.dir.workloads;
            for file in dir.names()? {
                let valid = file
                    .strip_suffix(RECORD_EXT)
                    .is_some_and(|stem| validate_name(stem).is_ok());
                if !valid {
                    continue;
                }
                // Only what a crash leaves: a regular file whose content is
                // not a record. Anything else is judged as before.
                let Ok(Some(bytes)) = dir.read(&file) else {
                    continue;
                };
                if let Err(e) = serde_json::from_slice::<WorkloadRecord>(&bytes) {
                    log::warn!(
                        "{}: removing a record an earlier boot left unreadable ({e}); \
                         nothing it named outlived that boot",
                        dir.path().join(&file).display()
                    );
                    dir.remove(&file)?;
                }
            }
        }
        root.write_atomic(BOOT_FILE, format!("{now}\n").as_bytes(), true)
    }
}
