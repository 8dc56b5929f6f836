//! The few `bpf(2)` commands `moat` needs to use what moatd pinned: open a
//! map by pin, look up, update, delete, walk the keys, tell which attached
//! programs use a map, and attach the pinned recording program. Raw syscalls (libc only), so that the `moat`
//! binary does not link aya (see docs/ARCHITECTURE.md).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
const BPF_LINK_GET_NEXT_ID: libc::c_long = 31;
/// `BPF_LINK_TYPE_RAW_TRACEPOINT`.
const LINK_RAW_TRACEPOINT: u32 = 1;
/// `BPF_PROG_TYPE_RAW_TRACEPOINT`.
const PROG_RAW_TRACEPOINT: u32 = 17;

/// `BPF_ANY`: create or replace.
pub const BPF_ANY: u64 = 0;

/// `union bpf_attr` as the element commands read it.
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` for `BPF_OBJ_GET`.
#[repr(C)]
#[derive(Default)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    _pad: u32,
}

/// `union bpf_attr` for the `*_GET_NEXT_ID` and `*_GET_FD_BY_ID` commands.
#[repr(C)]
#[derive(Default)]
struct IdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
    _pad: u32,
}

/// `union bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// `union bpf_attr` for `BPF_RAW_TRACEPOINT_OPEN` (without the cookie,
/// which older kernels do not know).
#[repr(C)]
#[derive(Default)]
struct RawTracepointAttr {
    name: u64,
    prog_fd: u32,
    _pad: u32,
}

/// The head of `struct bpf_prog_info`, up to `name` (the kernel accepts a
/// shorter struct and fills what fits).
#[repr(C)]
#[derive(Default)]
struct ProgInfoHead {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; 16],
}

/// The head of `struct bpf_map_info`.
#[repr(C)]
#[derive(Default)]
struct MapInfoHead {
    map_type: u32,
    id: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, initialised bpf_attr prefix of its size;
    // every pointer in it points to memory that outlives the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>(),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A map opened by its pin, with its key and value sizes checked.
#[derive(Debug)]
pub struct PinnedMap {
    fd: OwnedFd,
    /// The kernel's id of the map.
    pub id: u32,
}

impl PinnedMap {
    /// Opens the map pinned at `path`; its key and value must have the
    /// sizes given (else the pin is some other map).
    pub fn open(path: &Path, key_size: usize, value_size: usize) -> io::Result<PinnedMap> {
        let c = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
        let mut attr = ObjAttr {
            pathname: c.as_ptr() as u64,
            ..Default::default()
        };
        let raw = sys_bpf(BPF_OBJ_GET, &mut attr)?;
        // SAFETY: BPF_OBJ_GET returned a new descriptor that we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
        let mut info = MapInfoHead::default();
        let mut attr = InfoAttr {
            bpf_fd: fd.as_raw_fd() as u32,
            info_len: std::mem::size_of::<MapInfoHead>() as u32,
            info: &mut info as *mut MapInfoHead as u64,
        };
        sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
        if info.key_size as usize != key_size || info.value_size as usize != value_size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "not a map of the expected layout (key {} bytes, value {} bytes; expected {key_size} and {value_size}): moatd and moat are from different builds",
                    info.key_size, info.value_size
                ),
            ));
        }
        Ok(PinnedMap { fd, id: info.id })
    }

    fn elem<K, V>(&self, cmd: libc::c_long, key: &K, value: *mut V, flags: u64) -> io::Result<()> {
        let mut attr = ElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            key: key as *const K as u64,
            value: value as u64,
            flags,
            ..Default::default()
        };
        sys_bpf(cmd, &mut attr).map(|_| ())
    }

    /// The value at `key`, if any.
    pub fn lookup<K, V: Default>(&self, key: &K) -> io::Result<Option<V>> {
        let mut value = V::default();
        match self.elem(BPF_MAP_LOOKUP_ELEM, key, &mut value as *mut V, 0) {
            Ok(()) => Ok(Some(value)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sets `key` to `value` (`flags`: [`BPF_ANY`], ...).
    pub fn update<K, V>(&self, key: &K, value: &V, flags: u64) -> io::Result<()> {
        self.elem(BPF_MAP_UPDATE_ELEM, key, value as *const V as *mut V, flags)
    }

    /// Deletes `key`; absent is not an error.
    pub fn delete<K>(&self, key: &K) -> io::Result<()> {
        match self.elem::<K, u8>(BPF_MAP_DELETE_ELEM, key, std::ptr::null_mut(), 0) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(e),
            _ => Ok(()),
        }
    }

    /// Every key of a hash map. Other writers may change the map meanwhile:
    /// a deleted key makes the walk restart, so the result may hold a key
    /// twice (callers collect into a set) and the walk is bounded.
    pub fn keys<K: Copy + Default>(&self, bound: usize) -> io::Result<Vec<K>> {
        let mut out = Vec::new();
        let mut current: Option<K> = None;
        while out.len() < bound {
            let mut next = K::default();
            let mut attr = ElemAttr {
                map_fd: self.fd.as_raw_fd() as u32,
                key: current.as_ref().map_or(0, |k| k as *const K as u64),
                value: &mut next as *mut K as u64,
                ..Default::default()
            };
            match sys_bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
                Ok(_) => {
                    out.push(next);
                    current = Some(next);
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

/// The head of `struct bpf_link_info`.
#[repr(C)]
#[derive(Default)]
struct LinkInfoHead {
    link_type: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    tp_name: u64,
    tp_name_len: u32,
    _pad2: u32,
}

/// An attached raw tracepoint program that uses a given map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapUser {
    /// The link's id.
    pub link: u32,
    /// The program's name as the kernel keeps it (15 bytes at most).
    pub program: String,
}

/// The raw tracepoint links whose program uses the map `map_id`. A link
/// goes away (synchronously) when the descriptors of its owner close,
/// unlike a program, whose release the kernel may defer; so a link is the
/// proof that its owner (moatd, or a `moat` recording) is still there.
pub fn map_users(map_id: u32) -> io::Result<Vec<MapUser>> {
    let mut out = Vec::new();
    let mut start = 0u32;
    loop {
        let mut attr = IdAttr {
            id: start,
            ..Default::default()
        };
        match sys_bpf(BPF_LINK_GET_NEXT_ID, &mut attr) {
            Ok(_) => start = attr.next_id,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            Err(e) => return Err(e),
        }
        let Some(link) = fd_by_id(BPF_LINK_GET_FD_BY_ID, start)? else {
            continue;
        };
        let mut info = LinkInfoHead::default();
        if obj_info(&link, &mut info).is_err() || info.link_type != LINK_RAW_TRACEPOINT {
            continue;
        }
        let Some(prog) = fd_by_id(BPF_PROG_GET_FD_BY_ID, info.prog_id)? else {
            continue;
        };
        if let Some(program) = prog_using_map(&prog, map_id)? {
            out.push(MapUser {
                link: info.id,
                program: program.name,
            });
        }
    }
}

/// A program opened by its pin.
#[derive(Debug)]
pub struct PinnedProgram {
    fd: OwnedFd,
}

impl PinnedProgram {
    /// Opens the raw tracepoint program pinned at `path`, which must use the
    /// map `map_id` (else the pin belongs to some other set of maps).
    pub fn open(path: &Path, map_id: u32) -> io::Result<PinnedProgram> {
        let c = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
        let mut attr = ObjAttr {
            pathname: c.as_ptr() as u64,
            ..Default::default()
        };
        let raw = sys_bpf(BPF_OBJ_GET, &mut attr)?;
        // SAFETY: BPF_OBJ_GET returned a new descriptor that we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
        match prog_using_map(&fd, map_id)? {
            Some(info) if info.prog_type == PROG_RAW_TRACEPOINT => Ok(PinnedProgram { fd }),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a raw tracepoint program using the pinned recording maps: moatd and moat are from different builds",
            )),
        }
    }

    /// Attaches the program to the raw tracepoint `tracepoint`; the link
    /// lasts as long as the descriptor returned (and its id, the second
    /// value, names it in [`map_users`]).
    pub fn attach(&self, tracepoint: &str) -> io::Result<(OwnedFd, u32)> {
        let name = CString::new(tracepoint)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))?;
        let mut attr = RawTracepointAttr {
            name: name.as_ptr() as u64,
            prog_fd: self.fd.as_raw_fd() as u32,
            ..Default::default()
        };
        let raw = sys_bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr)?;
        // SAFETY: BPF_RAW_TRACEPOINT_OPEN returned a new descriptor (close
        // on exec, as every bpf descriptor) that we own.
        let link = unsafe { OwnedFd::from_raw_fd(raw as i32) };
        let mut info = LinkInfoHead::default();
        obj_info(&link, &mut info)?;
        Ok((link, info.id))
    }
}

fn fd_by_id(cmd: libc::c_long, id: u32) -> io::Result<Option<OwnedFd>> {
    let mut attr = IdAttr {
        id,
        ..Default::default()
    };
    match sys_bpf(cmd, &mut attr) {
        // SAFETY: a new descriptor that we own.
        Ok(raw) => Ok(Some(unsafe { OwnedFd::from_raw_fd(raw as i32) })),
        // Gone since it was listed, or a link still being set up (its
        // attach not finished): not there, for what `moat` asks.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EAGAIN)) => Ok(None),
        Err(e) => Err(e),
    }
}

fn obj_info<T>(fd: &OwnedFd, info: &mut T) -> io::Result<()> {
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<T>() as u32,
        info: info as *mut T as u64,
    };
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).map(|_| ())
}

/// What [`prog_using_map`] reports of a program.
struct ProgSummary {
    prog_type: u32,
    name: String,
}

/// The type and name of the program `prog` if it uses the map `map_id`.
fn prog_using_map(prog: &OwnedFd, map_id: u32) -> io::Result<Option<ProgSummary>> {
    let mut ids = [0u32; 64];
    let mut info = ProgInfoHead {
        nr_map_ids: ids.len() as u32,
        map_ids: ids.as_mut_ptr() as u64,
        ..Default::default()
    };
    if obj_info(prog, &mut info).is_err() {
        return Ok(None);
    }
    let n = (info.nr_map_ids as usize).min(ids.len());
    if !ids[..n].contains(&map_id) {
        return Ok(None);
    }
    let len = info
        .name
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(info.name.len());
    Ok(Some(ProgSummary {
        prog_type: info.prog_type,
        name: String::from_utf8_lossy(&info.name[..len]).into_owned(),
    }))
}
