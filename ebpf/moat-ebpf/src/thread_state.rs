//! The encoding of a [`crate::maps::THREAD_STATE`] slot: state in bits 56..64,
//! flags in 48..56, syscall nr in 0..32 (see the crate docs for the states).

pub(crate) const STATE_SHIFT: u32 = 56;
pub(crate) const FLAGS_SHIFT: u32 = 48;
pub(crate) const ST_UNKNOWN: u64 = 0;
pub(crate) const ST_IDLE: u64 = 1;
pub(crate) const ST_ENTERED: u64 = 2;
pub(crate) const ST_NEW_TASK: u64 = 3;
/// The syscall is fork, vfork, clone or clone3 (for the arch it was made in).
pub(crate) const F_FORK: u64 = 1;
/// The syscall is unshare.
pub(crate) const F_UNSHARE: u64 = 2;
/// Its flags include `CLONE_NEWUSER`.
pub(crate) const F_NEWUSER: u64 = 4;

pub(crate) const IDLE: u64 = ST_IDLE << STATE_SHIFT;
pub(crate) const NEW_TASK: u64 = ST_NEW_TASK << STATE_SHIFT;
pub(crate) const ENTERED: u64 = ST_ENTERED << STATE_SHIFT;
/// `slot >> FLAGS_SHIFT` of a plain entered syscall (no flags): the fast path.
pub(crate) const ENTERED_PLAIN_TOP: u64 = ENTERED >> FLAGS_SHIFT;
