//! The cgroup watcher: learns workload cgroups the moment they are created.

use std::{
    collections::{HashMap, HashSet},
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use super::Attributor;

/// Learns the workloads' cgroups the moment they are created.
///
/// A workload may live for less than a scrape interval, and counters keyed by its
/// cgroup id outlive its directory: an id met after the directory is gone can no
/// longer be resolved. So a thread watches the moat and Docker parent directories
/// with inotify (cgroup file systems report `mkdir` like any other) and records
/// each new directory's id at once. Parents that do not exist yet are watched from
/// when they appear (checked every second). Stops when `stop` is set.
///
/// It also watches `pids.events` of each new workload in the pids hierarchy and
/// notifies `pids_changed` when the kernel reports a change (a refused fork), so
/// that a limit hit is read before a short-lived workload's cgroup disappears.
pub fn spawn_watcher(
    attributor: Arc<std::sync::Mutex<Attributor>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    pids_changed: Option<Arc<tokio::sync::Notify>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    // SAFETY: plain syscall; the fd is owned below.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and nothing else owns it.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let dirs = attributor
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .watched_dirs();
    std::thread::Builder::new()
        .name("moat-cgroup-watch".to_owned())
        .spawn(move || watch_loop(&fd, &attributor, dirs, &stop, pids_changed.as_deref()))
}

/// Adds an inotify watch; returns the watch descriptor.
fn add_watch(fd: i32, path: &Path, mask: u32) -> Option<i32> {
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: valid fd and NUL-terminated path.
    let wd = unsafe { libc::inotify_add_watch(fd, path.as_ptr(), mask) };
    (wd >= 0).then_some(wd)
}

fn watch_loop(
    fd: &std::os::fd::OwnedFd,
    attributor: &std::sync::Mutex<Attributor>,
    dirs: Vec<(bool, PathBuf, String)>,
    stop: &std::sync::atomic::AtomicBool,
    pids_changed: Option<&tokio::sync::Notify>,
) {
    use std::os::fd::AsRawFd as _;
    let raw = fd.as_raw_fd();
    // watch descriptor → (pids hierarchy?, absolute dir, relative dir)
    let mut watches: HashMap<i32, (bool, PathBuf, String)> = HashMap::new();
    // watch descriptors of `pids.events` files
    let mut pids_files: HashSet<i32> = HashSet::new();
    let mut last_try: Option<Instant> = None;
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if last_try.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            last_try = Some(Instant::now());
            for (pids, dir, rel) in &dirs {
                if watches.values().any(|(_, d, _)| d == dir) {
                    continue;
                }
                if let Some(wd) = add_watch(raw, dir, libc::IN_CREATE | libc::IN_ONLYDIR) {
                    log::debug!("watching {} for new cgroups", dir.display());
                    watches.insert(wd, (*pids, dir.clone(), rel.clone()));
                }
            }
        }
        let mut pollfd = libc::pollfd {
            fd: raw,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pollfd, 1, 200) };
        if ready <= 0 {
            continue;
        }
        // SAFETY: reads into a buffer we own, of the given length.
        let len = unsafe { libc::read(raw, buf.as_mut_ptr().cast(), buf.len()) };
        let Ok(len) = usize::try_from(len) else {
            continue;
        };
        let mut offset = 0;
        let header = std::mem::size_of::<libc::inotify_event>();
        let mut learnt = Vec::new();
        let mut pids_event = false;
        while offset + header <= len {
            // SAFETY: the kernel wrote a whole event header at `offset`.
            let event: libc::inotify_event =
                unsafe { std::ptr::read_unaligned(buf[offset..].as_ptr().cast()) };
            let name_len = event.len as usize;
            let name_bytes = &buf[offset + header..(offset + header + name_len).min(len)];
            offset += header + name_len;
            if event.mask & libc::IN_IGNORED != 0 {
                watches.remove(&event.wd);
                pids_files.remove(&event.wd);
                continue;
            }
            if event.mask & libc::IN_MODIFY != 0 && pids_files.contains(&event.wd) {
                pids_event = true;
                continue;
            }
            if event.mask & libc::IN_CREATE == 0 || event.mask & libc::IN_ISDIR == 0 {
                continue;
            }
            let name_end = name_bytes
                .iter()
                .position(|b| *b == 0)
                .unwrap_or(name_bytes.len());
            let Ok(name) = std::str::from_utf8(&name_bytes[..name_end]) else {
                continue;
            };
            let Some((pids, dir, rel)) = watches.get(&event.wd) else {
                continue;
            };
            let path = dir.join(name);
            if let Ok(meta) = fs::metadata(&path) {
                learnt.push((*pids, format!("{rel}/{name}"), meta.ino()));
            }
            if pids_changed.is_some() && path.join("pids.events").exists() {
                // Removed with the cgroup, which drops the watch (IN_IGNORED).
                if let Some(wd) = add_watch(raw, &path.join("pids.events"), libc::IN_MODIFY) {
                    pids_files.insert(wd);
                }
            }
        }
        if pids_event {
            if let Some(notify) = pids_changed {
                notify.notify_one();
            }
        }
        if !learnt.is_empty() {
            let mut attributor = attributor.lock().unwrap_or_else(|p| p.into_inner());
            for (pids, rel, id) in learnt {
                log::debug!("new cgroup {rel} (id {id})");
                attributor.learn(pids, &rel, id);
            }
        }
    }
}
