//! A small reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`), for the few
//! struct offsets and tracepoint prototypes the eBPF programs need.
//!
//! Rust eBPF has no CO-RE field relocations, so the programs read kernel structs at
//! offsets resolved here at load time and passed in as read-only globals. Only what
//! that needs is parsed: the type table (every kind, so that type ids line up), the
//! members of structs and unions, function prototypes' parameter counts and the
//! string section. See the kernel's `Documentation/bpf/btf.rst` for the format.

use std::{collections::HashMap, path::Path};

/// Where the running kernel exposes its BTF.
pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xEB9F;

/// BTF type kinds (`BTF_KIND_*`).
mod kind {
    pub const INT: u32 = 1;
    pub const PTR: u32 = 2;
    pub const ARRAY: u32 = 3;
    pub const STRUCT: u32 = 4;
    pub const UNION: u32 = 5;
    pub const ENUM: u32 = 6;
    pub const FWD: u32 = 7;
    pub const TYPEDEF: u32 = 8;
    pub const VOLATILE: u32 = 9;
    pub const CONST: u32 = 10;
    pub const RESTRICT: u32 = 11;
    pub const FUNC: u32 = 12;
    pub const FUNC_PROTO: u32 = 13;
    pub const VAR: u32 = 14;
    pub const DATASEC: u32 = 15;
    pub const FLOAT: u32 = 16;
    pub const DECL_TAG: u32 = 17;
    pub const TYPE_TAG: u32 = 18;
    pub const ENUM64: u32 = 19;
}

/// What can go wrong reading BTF or resolving a field in it.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file could not be read.
    #[error("reading BTF from {path} failed")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The data is not BTF, or is truncated or inconsistent.
    #[error("malformed BTF: {0}")]
    Malformed(String),
    /// A struct, member or typedef is not in the kernel's BTF.
    #[error("BTF has no {what} `{name}` (needed for `{path}`)")]
    NotFound {
        /// "struct", "member", "typedef".
        what: &'static str,
        /// The name looked up.
        name: String,
        /// The full path being resolved, e.g. `task_struct.seccomp.mode`.
        path: String,
    },
    /// The field exists but cannot be read at a byte offset (a bitfield), or the
    /// type is not what was expected.
    #[error("BTF field `{path}`: {reason}")]
    Unusable {
        /// The full path being resolved.
        path: String,
        /// Why.
        reason: String,
    },
}

/// One BTF type, with just what the resolver needs.
#[derive(Debug, Clone)]
struct Type {
    kind: u32,
    name_off: u32,
    /// `size` for structs/unions/ints, `type` for pointers, typedefs, modifiers.
    size_or_type: u32,
    vlen: u32,
    /// Struct and union members (empty for other kinds).
    members: Vec<Member>,
    /// For arrays: (element type id, number of elements).
    array: Option<(u32, u32)>,
}

impl Type {
    /// The size in bytes of a resolved type (pointers are 8 bytes), if it has one.
    fn byte_size(&self) -> Option<u32> {
        match self.kind {
            kind::PTR => Some(8),
            kind::INT | kind::STRUCT | kind::UNION | kind::ENUM | kind::ENUM64 | kind::FLOAT => {
                Some(self.size_or_type)
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Member {
    name_off: u32,
    type_id: u32,
    /// Offset in bits from the start of the containing struct.
    bit_offset: u32,
    /// Non-zero for a bitfield.
    bitfield_size: u32,
}

/// The parsed type table and string section.
#[derive(Debug)]
pub struct Btf {
    /// Indexed by type id; id 0 (`void`) is a placeholder.
    types: Vec<Type>,
    strings: Vec<u8>,
    /// Struct (and union) ids by name; the first one wins.
    structs: HashMap<String, u32>,
    /// Typedef ids by name.
    typedefs: HashMap<String, u32>,
    /// Enumerator values by name (of every enum); the first one wins.
    enumerators: HashMap<String, i64>,
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Btf, BtfError> {
        Self::from_file(Path::new(VMLINUX))
    }

    /// Reads BTF from a raw BTF file.
    pub fn from_file(path: &Path) -> Result<Btf, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&data)
    }

    /// Parses raw BTF (native endian, as the kernel exposes it).
    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        let mut header = Reader { data, pos: 0 };
        let magic = header.u16()?;
        if magic != MAGIC {
            return Err(BtfError::Malformed(format!(
                "bad magic {magic:#06x} (expected {MAGIC:#06x}; only native-endian BTF is read)"
            )));
        }
        let _version = header.u8()?;
        let _flags = header.u8()?;
        let hdr_len = header.u32()? as usize;
        let type_off = header.u32()? as usize;
        let type_len = header.u32()? as usize;
        let str_off = header.u32()? as usize;
        let str_len = header.u32()? as usize;

        let section = |off: usize, len: usize, what: &str| {
            hdr_len
                .checked_add(off)
                .and_then(|start| Some((start, start.checked_add(len)?)))
                .filter(|&(_, end)| end <= data.len())
                .map(|(start, end)| &data[start..end])
                .ok_or_else(|| BtfError::Malformed(format!("{what} section out of bounds")))
        };
        let type_data = section(type_off, type_len, "type")?;
        let strings = section(str_off, str_len, "string")?.to_vec();

        let mut types = vec![Type {
            kind: 0,
            name_off: 0,
            size_or_type: 0,
            vlen: 0,
            members: Vec::new(),
            array: None,
        }];
        let mut enumerators = HashMap::new();
        let mut r = Reader {
            data: type_data,
            pos: 0,
        };
        while r.pos < type_data.len() {
            let name_off = r.u32()?;
            let info = r.u32()?;
            let size_or_type = r.u32()?;
            let vlen = info & 0xffff;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 != 0;
            let mut members = Vec::new();
            let mut array = None;
            match kind {
                kind::INT => r.skip(4)?,
                kind::PTR
                | kind::FWD
                | kind::TYPEDEF
                | kind::VOLATILE
                | kind::CONST
                | kind::RESTRICT
                | kind::FUNC
                | kind::FLOAT
                | kind::TYPE_TAG => {}
                kind::ARRAY => {
                    let elem_type = r.u32()?;
                    let _index_type = r.u32()?;
                    let nelems = r.u32()?;
                    array = Some((elem_type, nelems));
                }
                kind::STRUCT | kind::UNION => {
                    for _ in 0..vlen {
                        let name_off = r.u32()?;
                        let type_id = r.u32()?;
                        let offset = r.u32()?;
                        let (bit_offset, bitfield_size) = if kind_flag {
                            (offset & 0x00ff_ffff, offset >> 24)
                        } else {
                            (offset, 0)
                        };
                        members.push(Member {
                            name_off,
                            type_id,
                            bit_offset,
                            bitfield_size,
                        });
                    }
                }
                kind::ENUM => {
                    for _ in 0..vlen {
                        let name_off = r.u32()?;
                        let value = r.u32()?;
                        // kind_flag: signed values.
                        let value = if kind_flag {
                            i64::from(value as i32)
                        } else {
                            i64::from(value)
                        };
                        enumerators.entry(name_off).or_insert(value);
                    }
                }
                kind::FUNC_PROTO => r.skip(8 * vlen as usize)?,
                kind::VAR => r.skip(4)?,
                kind::DATASEC => r.skip(12 * vlen as usize)?,
                kind::DECL_TAG => r.skip(4)?,
                kind::ENUM64 => {
                    for _ in 0..vlen {
                        let name_off = r.u32()?;
                        let lo = r.u32()?;
                        let hi = r.u32()?;
                        let value = (u64::from(hi) << 32 | u64::from(lo)) as i64;
                        enumerators.entry(name_off).or_insert(value);
                    }
                }
                other => {
                    return Err(BtfError::Malformed(format!(
                        "unknown type kind {other} at type id {}",
                        types.len()
                    )))
                }
            }
            types.push(Type {
                kind,
                name_off,
                size_or_type,
                vlen,
                members,
                array,
            });
        }
        let enumerators = enumerators
            .into_iter()
            .map(|(name_off, value)| (str_at(&strings, name_off).to_owned(), value))
            .filter(|(name, _)| !name.is_empty())
            .collect();

        let mut btf = Btf {
            types,
            strings,
            structs: HashMap::new(),
            typedefs: HashMap::new(),
            enumerators,
        };
        for (id, ty) in btf.types.iter().enumerate().skip(1) {
            let map = match ty.kind {
                kind::STRUCT | kind::UNION => &mut btf.structs,
                kind::TYPEDEF => &mut btf.typedefs,
                _ => continue,
            };
            let name = str_at(&btf.strings, ty.name_off);
            if !name.is_empty() {
                map.entry(name.to_owned()).or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    /// Number of types, `void` included.
    pub fn len(&self) -> usize {
        self.types.len()
    }

    /// Whether there are no types besides `void`.
    pub fn is_empty(&self) -> bool {
        self.types.len() <= 1
    }

    /// The byte offset of a (possibly nested) member: `"task_struct.seccomp.mode"`
    /// is `seccomp.mode` in `struct task_struct`. Members of anonymous structs and
    /// unions are found as if they were direct members, as in C. Bitfields are
    /// refused.
    pub fn member_offset(&self, path: &str) -> Result<u32, BtfError> {
        let mut parts = path.split('.');
        let mut type_id = self.struct_id(parts.next().unwrap_or_default(), path)?;
        let mut offset_bits: u64 = 0;
        let mut any = false;
        for name in parts {
            any = true;
            let container = self.resolve(type_id);
            let ty = &self.types[container as usize];
            if ty.kind != kind::STRUCT && ty.kind != kind::UNION {
                return Err(BtfError::Unusable {
                    path: path.to_owned(),
                    reason: format!("`{name}` is looked up in a type that is not a struct"),
                });
            }
            let (member_bits, member) =
                self.find_member(container, name, 0)
                    .ok_or_else(|| BtfError::NotFound {
                        what: "member",
                        name: name.to_owned(),
                        path: path.to_owned(),
                    })?;
            if member.bitfield_size != 0 {
                return Err(BtfError::Unusable {
                    path: path.to_owned(),
                    reason: format!("`{name}` is a bitfield"),
                });
            }
            offset_bits += member_bits;
            type_id = member.type_id;
        }
        if !any {
            return Err(BtfError::Unusable {
                path: path.to_owned(),
                reason: "no member named".to_owned(),
            });
        }
        if !offset_bits.is_multiple_of(8) {
            return Err(BtfError::Unusable {
                path: path.to_owned(),
                reason: format!("offset of {offset_bits} bits is not byte-aligned"),
            });
        }
        u32::try_from(offset_bits / 8).map_err(|_| BtfError::Unusable {
            path: path.to_owned(),
            reason: "offset too large".to_owned(),
        })
    }

    /// The size in bytes of the member at `path` (as in [`Btf::member_offset`]), after
    /// resolving typedefs and modifiers; pointers are 8 bytes.
    pub fn member_size(&self, path: &str) -> Result<u32, BtfError> {
        let ty = &self.types[self.member_type(path)? as usize];
        ty.byte_size().ok_or_else(|| BtfError::Unusable {
            path: path.to_owned(),
            reason: format!("type kind {} has no size here", ty.kind),
        })
    }

    /// The number of parameters of the function prototype a typedef names through
    /// a pointer, e.g. `btf_trace_sched_process_exit` (whose first parameter is the
    /// tracepoint's `void *data`, followed by the `TP_PROTO` arguments).
    pub fn typedef_fn_params(&self, typedef: &str) -> Result<u32, BtfError> {
        let id = *self
            .typedefs
            .get(typedef)
            .ok_or_else(|| BtfError::NotFound {
                what: "typedef",
                name: typedef.to_owned(),
                path: typedef.to_owned(),
            })?;
        let mut ty = &self.types[self.resolve(self.types[id as usize].size_or_type) as usize];
        if ty.kind == kind::PTR {
            ty = &self.types[self.resolve(ty.size_or_type) as usize];
        }
        if ty.kind != kind::FUNC_PROTO {
            return Err(BtfError::Unusable {
                path: typedef.to_owned(),
                reason: format!("not a function pointer (kind {})", ty.kind),
            });
        }
        Ok(ty.vlen)
    }

    /// The value of the enumerator `name` (of any enum, e.g. `pids_cgrp_id` of
    /// `enum cgroup_subsys_id`).
    pub fn enum_value(&self, name: &str) -> Result<i64, BtfError> {
        self.enumerators
            .get(name)
            .copied()
            .ok_or_else(|| BtfError::NotFound {
                what: "enumerator",
                name: name.to_owned(),
                path: name.to_owned(),
            })
    }

    /// For a member that is an array (as in [`Btf::member_offset`]): the size in
    /// bytes of one element (pointers are 8 bytes) and the number of elements.
    pub fn member_array(&self, path: &str) -> Result<(u32, u32), BtfError> {
        let ty = &self.types[self.member_type(path)? as usize];
        let Some((elem, nelems)) = ty.array.filter(|_| ty.kind == kind::ARRAY) else {
            return Err(BtfError::Unusable {
                path: path.to_owned(),
                reason: format!("not an array (kind {})", ty.kind),
            });
        };
        let elem = &self.types[self.resolve(elem) as usize];
        let size = elem.byte_size().ok_or_else(|| BtfError::Unusable {
            path: path.to_owned(),
            reason: format!("array element of type kind {} has no size here", elem.kind),
        })?;
        Ok((size, nelems))
    }

    /// The type of the member at `path` (as in [`Btf::member_offset`]), typedefs
    /// and modifiers resolved; a bare struct name is the struct itself.
    fn member_type(&self, path: &str) -> Result<u32, BtfError> {
        let (struct_name, rest) = path.split_once('.').unwrap_or((path, ""));
        let mut type_id = self.struct_id(struct_name, path)?;
        for name in rest.split('.').filter(|n| !n.is_empty()) {
            let container = self.resolve(type_id);
            let (_, member) =
                self.find_member(container, name, 0)
                    .ok_or_else(|| BtfError::NotFound {
                        what: "member",
                        name: name.to_owned(),
                        path: path.to_owned(),
                    })?;
            type_id = member.type_id;
        }
        Ok(self.resolve(type_id))
    }

    /// The id of struct (or union) `name`, looked up for `path`.
    fn struct_id(&self, name: &str, path: &str) -> Result<u32, BtfError> {
        self.structs
            .get(name)
            .copied()
            .ok_or_else(|| BtfError::NotFound {
                what: "struct",
                name: name.to_owned(),
                path: path.to_owned(),
            })
    }

    /// Follows typedefs and modifiers to the underlying type id.
    fn resolve(&self, mut id: u32) -> u32 {
        // Bounded, so a malformed cycle cannot loop forever.
        for _ in 0..64 {
            let Some(ty) = self.types.get(id as usize) else {
                return 0;
            };
            match ty.kind {
                kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG => {
                    id = ty.size_or_type;
                }
                _ => return id,
            }
        }
        0
    }

    /// Finds `name` among the members of struct/union `id`, descending into
    /// anonymous members; returns its bit offset from the start of `id`.
    fn find_member(&self, id: u32, name: &str, depth: u32) -> Option<(u64, Member)> {
        if depth > 16 {
            return None;
        }
        let ty = self.types.get(id as usize)?;
        for member in &ty.members {
            let member_name = str_at(&self.strings, member.name_off);
            if member_name == name {
                return Some((u64::from(member.bit_offset), *member));
            }
            if member_name.is_empty() {
                let inner = self.resolve(member.type_id);
                let inner_ty = self.types.get(inner as usize)?;
                if inner_ty.kind == kind::STRUCT || inner_ty.kind == kind::UNION {
                    if let Some((bits, found)) = self.find_member(inner, name, depth + 1) {
                        return Some((u64::from(member.bit_offset) + bits, found));
                    }
                }
            }
        }
        None
    }
}

/// The NUL-terminated string at `offset` in the string section ("" if out of range
/// or not UTF-8).
fn str_at(strings: &[u8], offset: u32) -> &str {
    let Some(rest) = strings.get(offset as usize..) else {
        return "";
    };
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).unwrap_or("")
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], BtfError> {
        let bytes = self
            .data
            .get(self.pos..self.pos + N)
            .ok_or_else(|| BtfError::Malformed(format!("truncated at byte {}", self.pos)))?;
        self.pos += N;
        Ok(bytes.try_into().expect("slice of length N"))
    }

    fn u8(&mut self) -> Result<u8, BtfError> {
        Ok(self.take::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, BtfError> {
        Ok(u16::from_ne_bytes(self.take()?))
    }

    fn u32(&mut self) -> Result<u32, BtfError> {
        Ok(u32::from_ne_bytes(self.take()?))
    }

    fn skip(&mut self, n: usize) -> Result<(), BtfError> {
        if self.pos + n > self.data.len() {
            return Err(BtfError::Malformed(format!(
                "truncated at byte {}",
                self.pos
            )));
        }
        self.pos += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
