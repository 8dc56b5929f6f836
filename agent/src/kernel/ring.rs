//! The ring-buffer reader: audit records from the programs, decoded, delivered by
//! a reader thread to a bounded channel.

use std::{
    os::fd::AsFd as _,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use moat_common::{audit_kind, AuditEvent};
use tokio::sync::mpsc;

use super::{
    error::{Error, Result},
    loader::{Kernel, ReaderThread},
    maps::{clamp_errno, denial_action},
    records::{AuditKind, AuditRecord},
};

/// How often the audit reader thread checks whether it should stop, at most.
const READER_POLL: Duration = Duration::from_millis(100);

impl Kernel {
    /// Audit records, delivered by a reader thread (`moat-audit-ring`) that waits on
    /// the ring buffer with `poll(2)` and feeds a bounded tokio channel.
    ///
    /// A thread rather than a task so that it works whatever runtime (or none) the
    /// caller uses; it stops when the receiver is dropped or the [`Kernel`] is.
    /// Can be called once per load (as can [`Kernel::audit_reader`]).
    pub fn audit_records(&mut self) -> Result<mpsc::Receiver<AuditRecord>> {
        let mut reader = self.audit_reader()?;
        let (tx, rx) = mpsc::channel(self.config.audit_channel_capacity);
        let stop = Arc::new(AtomicBool::new(false));
        let stop_thread = stop.clone();
        let handle = std::thread::Builder::new()
            .name("moat-audit-ring".to_owned())
            .spawn(move || {
                while !stop_thread.load(Ordering::Relaxed) {
                    while let Some(record) = reader.try_next() {
                        if tx.blocking_send(record).is_err() {
                            return;
                        }
                    }
                    if tx.is_closed() {
                        return;
                    }
                    if let Err(err) = reader.wait(READER_POLL) {
                        log::warn!("waiting on the audit ring buffer failed: {err}");
                        std::thread::sleep(READER_POLL);
                    }
                }
            })
            .map_err(Error::SpawnReader)?;
        self.reader = Some(ReaderThread { stop, handle });
        Ok(rx)
    }

    /// The ring buffer itself, for a caller that reads it directly (tests that need
    /// to know every submitted record has been read). Can be called once per load.
    pub fn audit_reader(&mut self) -> Result<AuditReader> {
        let ring = self.ring.take().ok_or(Error::AuditReaderTaken)?;
        Ok(AuditReader { ring, malformed: 0 })
    }
}

/// Direct access to the audit ring buffer.
pub struct AuditReader {
    ring: RingBuf<MapData>,
    malformed: u64,
}

impl std::fmt::Debug for AuditReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditReader")
            .field("malformed", &self.malformed)
            .finish_non_exhaustive()
    }
}

impl AuditReader {
    /// The next record, or `None` when the ring buffer is empty right now.
    pub fn try_next(&mut self) -> Option<AuditRecord> {
        loop {
            let item = self.ring.next()?;
            match decode_record(&item) {
                Some(record) => return Some(record),
                None => {
                    // Only a mismatched build of the two halves could cause this.
                    self.malformed += 1;
                    log::warn!("skipping a malformed audit record of {} bytes", item.len());
                }
            }
        }
    }

    /// Waits until the ring buffer has data or `timeout` passes; returns whether it
    /// has data.
    pub fn wait(&self, timeout: Duration) -> std::io::Result<bool> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.ring.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(ready) => Ok(ready > 0),
            Err(nix::errno::Errno::EINTR) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    /// Records that could not be decoded (a build mismatch), since creation.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }
}

/// Decodes one ring-buffer record.
pub fn decode_record(bytes: &[u8]) -> Option<AuditRecord> {
    if bytes.len() < std::mem::size_of::<AuditEvent>() {
        return None;
    }
    // SAFETY: at least size_of::<AuditEvent>() bytes; AuditEvent is plain data for
    // which every bit pattern is valid; read_unaligned needs no alignment.
    let event: AuditEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let kind = match event.kind {
        audit_kind::SECCOMP_DENIED => AuditKind::SeccompDenied {
            arch: event.arch,
            syscall_nr: event.syscall_nr,
            action: denial_action(event.action)?,
            errno: clamp_errno(event.errno),
        },
        audit_kind::FORK_FAILED => AuditKind::ForkFailed {
            errno: clamp_errno(event.errno),
        },
        audit_kind::USERNS_CREATED => AuditKind::UsernsCreated,
        _ => return None,
    };
    let comm_len = event
        .comm
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(event.comm.len());
    Some(AuditRecord {
        boot_ns: event.boot_ns,
        pid: event.pid,
        tid: event.tid,
        cgroup_id: event.cgroup_id,
        comm: String::from_utf8_lossy(&event.comm[..comm_len]).into_owned(),
        kind,
    })
}

#[cfg(test)]
mod tests {
    use moat_common::action;

    use super::*;
    use crate::kernel::records::DenialAction;

    fn event_bytes(event: &AuditEvent) -> Vec<u8> {
        // SAFETY: AuditEvent is plain data without padding.
        unsafe {
            std::slice::from_raw_parts(
                (event as *const AuditEvent).cast::<u8>(),
                std::mem::size_of::<AuditEvent>(),
            )
        }
        .to_vec()
    }

    #[test]
    fn decodes_records() {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"sh-x");
        let event = AuditEvent {
            boot_ns: 5,
            cgroup_id: 77,
            pid: 10,
            tid: 11,
            kind: audit_kind::SECCOMP_DENIED,
            arch: moat_common::AUDIT_ARCH_X86_64,
            syscall_nr: 110,
            action: action::ERRNO,
            errno: 13,
            _pad: 0,
            comm,
        };
        let record = decode_record(&event_bytes(&event)).unwrap();
        assert_eq!(
            record,
            AuditRecord {
                boot_ns: 5,
                pid: 10,
                tid: 11,
                cgroup_id: 77,
                comm: "sh-x".to_owned(),
                kind: AuditKind::SeccompDenied {
                    arch: moat_common::AUDIT_ARCH_X86_64,
                    syscall_nr: 110,
                    action: DenialAction::Errno,
                    errno: 13,
                },
            }
        );
        let fork = AuditEvent {
            kind: audit_kind::FORK_FAILED,
            errno: 11,
            comm: [b'a'; 16],
            ..event
        };
        let record = decode_record(&event_bytes(&fork)).unwrap();
        assert_eq!(record.kind, AuditKind::ForkFailed { errno: 11 });
        assert_eq!(record.comm, "a".repeat(16));
        let bad = AuditEvent { kind: 99, ..event };
        assert!(decode_record(&event_bytes(&bad)).is_none());
        assert!(decode_record(&[0; 8]).is_none());
    }
}
