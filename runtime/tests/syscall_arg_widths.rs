//! The argument-width table (`seccomp/width_table.rs`) matches the running
//! kernel's own syscall prototypes, and regenerates it on request:
//!
//! ```text
//! MOAT_REGENERATE_ARG_WIDTHS=1 cargo test -p moat-runtime --test syscall_arg_widths
//! ```
//!
//! Two sources from the kernel are used, and they must agree:
//! - the tracefs syscall events (`events/syscalls/sys_enter_*/format`),
//!   which list every `SYSCALL_DEFINE` argument with its declared C type;
//!   the types are resolved to sizes through BTF (`umode_t` is 2 bytes);
//! - the BTF prototypes of the `__do_sys_*` functions the compiler kept
//!   out of line (about a third of them), checked argument by argument.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use moat_runtime::seccomp::width::{self, Kind};

/// Kernel entry names that libseccomp (and the x86_64 syscall table) spell
/// differently: `4 common stat sys_newstat` and so on.
const ALIASES: &[(&str, &str)] = &[
    ("newstat", "stat"),
    ("newlstat", "lstat"),
    ("newfstat", "fstat"),
    ("newuname", "uname"),
    ("sendfile64", "sendfile"),
    ("umount", "umount2"),
];

fn libseccomp_name(kernel: &str) -> &str {
    ALIASES
        .iter()
        .find(|(k, _)| *k == kernel)
        .map_or(kernel, |(_, l)| l)
}

// ---------------------------------------------------------------------------
// A minimal BTF reader: enough to resolve type names and function prototypes.

const INT: u32 = 1;
const PTR: u32 = 2;
const TYPEDEF: u32 = 8;
const VOLATILE: u32 = 9;
const CONST: u32 = 10;
const RESTRICT: u32 = 11;
const FUNC: u32 = 12;
const FUNC_PROTO: u32 = 13;
const TYPE_TAG: u32 = 18;
const ENUM: u32 = 6;
const ENUM64: u32 = 19;

struct Type {
    kind: u32,
    name: String,
    /// Size for INT/ENUM, referenced type for the others.
    size_or_type: u32,
    /// FUNC_PROTO parameters' types.
    params: Vec<u32>,
}

struct Btf {
    types: Vec<Type>,
    by_name: BTreeMap<(u32, String), u32>,
}

impl Btf {
    fn load(path: &Path) -> Result<Btf, String> {
        let d = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let u32_at = |o: usize| u32::from_le_bytes(d[o..o + 4].try_into().unwrap());
        if d.len() < 24 || u16::from_le_bytes([d[0], d[1]]) != 0xeb9f {
            return Err("not little-endian BTF".into());
        }
        let hdr = u32_at(4) as usize;
        let (toff, tlen, soff) = (u32_at(8) as usize, u32_at(12) as usize, u32_at(16) as usize);
        let types_at = hdr + toff;
        let strs_at = hdr + soff;
        let string = |o: u32| {
            let s = &d[strs_at + o as usize..];
            String::from_utf8_lossy(&s[..s.iter().position(|&b| b == 0).unwrap_or(0)]).into_owned()
        };
        let mut types = vec![Type {
            kind: 0,
            name: "void".into(),
            size_or_type: 0,
            params: vec![],
        }];
        let mut p = types_at;
        while p < types_at + tlen {
            let (name_off, info, st) = (u32_at(p), u32_at(p + 4), u32_at(p + 8));
            p += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let mut params = vec![];
            p += match kind {
                1 | 14 | 17 => 4,
                3 => 12,
                4 | 5 | 15 | 19 => 12 * vlen,
                6 => 8 * vlen,
                13 => {
                    params = (0..vlen).map(|i| u32_at(p + 8 * i + 4)).collect();
                    8 * vlen
                }
                _ => 0,
            };
            types.push(Type {
                kind,
                name: string(name_off),
                size_or_type: st,
                params,
            });
        }
        let by_name = types
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.name.is_empty())
            .map(|(i, t)| ((t.kind, t.name.clone()), i as u32))
            .collect();
        Ok(Btf { types, by_name })
    }

    /// The kind of type `id`, through typedefs and qualifiers.
    fn kind_of(&self, mut id: u32) -> Result<Kind, String> {
        loop {
            let t = &self.types[id as usize];
            match t.kind {
                PTR => return Ok(Kind::Ptr),
                INT | ENUM | ENUM64 => return size_kind(t.size_or_type, &t.name),
                TYPEDEF | VOLATILE | CONST | RESTRICT | TYPE_TAG => id = t.size_or_type,
                k => return Err(format!("type {:?} of BTF kind {k}", t.name)),
            }
        }
    }

    fn named(&self, kind: u32, name: &str) -> Option<u32> {
        self.by_name.get(&(kind, name.to_string())).copied()
    }

    /// The kind of a C type as tracefs prints it (`const char *`,
    /// `unsigned long`, `umode_t`, `const enum landlock_rule_type`).
    fn kind_of_c(&self, c: &str) -> Result<Kind, String> {
        if c.contains('*') {
            return Ok(Kind::Ptr);
        }
        let words: Vec<&str> = c
            .split_whitespace()
            .filter(|w| !matches!(*w, "const" | "volatile"))
            .collect();
        let id = match words.as_slice() {
            ["enum", name] => self.named(ENUM, name).or_else(|| self.named(ENUM64, name)),
            [one] if !is_base_word(one) => self.named(TYPEDEF, one),
            ws if ws.iter().all(|w| is_base_word(w)) => self.named(INT, &gcc_int_name(ws)),
            _ => None,
        };
        let id = id.ok_or_else(|| format!("C type {c:?} not found in BTF"))?;
        self.kind_of(id)
    }

    /// `__do_sys_NAME` functions and their parameters' kinds.
    fn do_sys_prototypes(&self) -> Vec<(String, Result<Vec<Kind>, String>)> {
        self.types
            .iter()
            .filter(|t| t.kind == FUNC && t.name.starts_with("__do_sys_"))
            .map(|t| {
                let proto = &self.types[t.size_or_type as usize];
                let kinds = if proto.kind == FUNC_PROTO {
                    proto.params.iter().map(|&p| self.kind_of(p)).collect()
                } else {
                    Err("not a function prototype".into())
                };
                (t.name["__do_sys_".len()..].to_string(), kinds)
            })
            .collect()
    }
}

fn is_base_word(w: &str) -> bool {
    matches!(w, "unsigned" | "signed" | "int" | "long" | "short" | "char")
}

/// GCC's (and so BTF's) spelling of a base integer type: `unsigned long`
/// is `long unsigned int`.
fn gcc_int_name(words: &[&str]) -> String {
    let has = |w| words.contains(&w);
    let longs = words.iter().filter(|w| **w == "long").count();
    if has("char") {
        return match (has("unsigned"), has("signed")) {
            (true, _) => "unsigned char",
            (_, true) => "signed char",
            _ => "char",
        }
        .into();
    }
    let mut name = match (has("short"), longs) {
        (true, _) => "short ".to_string(),
        (_, 1) => "long ".to_string(),
        (_, 2) => "long long ".to_string(),
        _ => String::new(),
    };
    if has("unsigned") {
        name.push_str("unsigned ");
    }
    name.push_str("int");
    name
}

fn size_kind(bytes: u32, name: &str) -> Result<Kind, String> {
    match bytes {
        1 => Ok(Kind::W8),
        2 => Ok(Kind::W16),
        4 => Ok(Kind::W32),
        8 => Ok(Kind::W64),
        n => Err(format!("{name:?} is {n} bytes")),
    }
}

// ---------------------------------------------------------------------------
// tracefs

fn tracefs_syscalls() -> Option<PathBuf> {
    let candidates = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
    let find = || {
        candidates
            .iter()
            .map(|d| Path::new(d).join("events/syscalls"))
            .find(|p| p.is_dir())
    };
    if let Some(p) = find() {
        return Some(p);
    }
    // tracefs is not always mounted on a fresh machine; root can mount it.
    let _ = nix::mount::mount(
        Some("tracefs"),
        "/sys/kernel/tracing",
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    );
    find()
}

/// The declared C types of each syscall's arguments, by kernel name.
fn tracefs_prototypes(dir: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).expect("reading tracefs") {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(call) = name.strip_prefix("sys_enter_") else {
            continue;
        };
        let format = std::fs::read_to_string(e.path().join("format")).unwrap();
        let mut args: Vec<(u32, String)> = Vec::new();
        for line in format.lines() {
            let Some(rest) = line.trim().strip_prefix("field:") else {
                continue;
            };
            let (decl, tail) = rest.split_once(';').unwrap();
            let offset: u32 = tail
                .split("offset:")
                .nth(1)
                .and_then(|t| t.split(';').next())
                .and_then(|t| t.parse().ok())
                .unwrap();
            // The common fields and __syscall_nr come before offset 16.
            if offset < 16 {
                continue;
            }
            let ty = decl
                .rsplit_once(|c: char| c.is_whitespace() || c == '*')
                .unwrap();
            let ty = if decl[ty.0.len()..].starts_with('*') {
                format!("{} *", ty.0.trim())
            } else {
                ty.0.trim().to_string()
            };
            args.push((offset, ty));
        }
        args.sort();
        out.insert(call.to_string(), args.into_iter().map(|(_, t)| t).collect());
    }
    out
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::W8 => "W8",
        Kind::W16 => "W16",
        Kind::W32 => "W32",
        Kind::W64 => "W64",
        Kind::Ptr => "Ptr",
    }
}

fn render(table: &BTreeMap<String, Vec<Kind>>, release: &str) -> String {
    let mut s = String::from(
        "//! Generated: do not edit. Regenerate with\n\
         //! `MOAT_REGENERATE_ARG_WIDTHS=1 cargo test -p moat-runtime --test syscall_arg_widths`\n\
         //! (see that test). Each syscall's arguments as the kernel declares them in\n\
         //! `SYSCALL_DEFINE`, from the tracefs syscall events of Linux ",
    );
    s.push_str(release);
    s.push_str(
        " (x86_64),\n//! with typedef sizes from BTF.\n\
         use super::width::Kind::{self, *};\n\n\
         /// Syscall name (libseccomp's x86_64 spelling) and its arguments' kinds.\n\
         pub static TABLE: &[(&str, &[Kind])] = &[\n",
    );
    for (name, kinds) in table {
        let k: Vec<&str> = kinds.iter().map(|k| kind_name(*k)).collect();
        s.push_str(&format!("    ({name:?}, &[{}]),\n", k.join(", ")));
    }
    s.push_str("];\n");
    s
}

#[test]
fn the_table_matches_this_kernels_prototypes() {
    if !cfg!(target_arch = "x86_64") {
        eprintln!("SKIP: the table describes x86_64 prototypes");
        return;
    }
    let Some(dir) = tracefs_syscalls() else {
        eprintln!(
            "SKIP: no tracefs syscall events (CONFIG_FTRACE_SYSCALLS, or tracefs not mountable)"
        );
        return;
    };
    let btf = match Btf::load(Path::new("/sys/kernel/btf/vmlinux")) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("SKIP: no kernel BTF: {e}");
            return;
        }
    };
    let protos = tracefs_prototypes(&dir);
    assert!(protos.len() > 300, "only {} syscall events", protos.len());
    let mut generated = BTreeMap::new();
    let mut problems = Vec::new();
    for (kernel_name, types) in &protos {
        let kinds: Result<Vec<Kind>, String> = types.iter().map(|t| btf.kind_of_c(t)).collect();
        match kinds {
            Ok(k) => {
                generated.insert(libseccomp_name(kernel_name).to_string(), k);
            }
            Err(e) => problems.push(format!("{kernel_name}: {e}")),
        }
    }
    // The BTF prototypes of the out-of-line __do_sys_* functions agree.
    let mut checked = 0;
    for (kernel_name, kinds) in btf.do_sys_prototypes() {
        let Some(ours) = generated.get(libseccomp_name(&kernel_name)) else {
            continue;
        };
        match kinds {
            Ok(k) if &k == ours => checked += 1,
            // SYSCALL_DEFINE0 on x86 takes the unused pt_regs pointer.
            Ok(k) if ours.is_empty() && k == [Kind::Ptr] => {}
            Ok(k) => problems.push(format!("{kernel_name}: BTF says {k:?}, tracefs {ours:?}")),
            Err(e) => problems.push(format!("{kernel_name}: {e}")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        checked > 50,
        "only {checked} prototypes cross-checked in BTF"
    );
    eprintln!(
        "{} syscalls from tracefs, {checked} cross-checked against BTF __do_sys_*",
        generated.len()
    );

    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/seccomp/width_table.rs");
    if std::env::var_os("MOAT_REGENERATE_ARG_WIDTHS").is_some() {
        std::fs::write(&file, render(&generated, &release)).unwrap();
        eprintln!("wrote {} ({} syscalls)", file.display(), generated.len());
        return;
    }
    let checked_in: BTreeMap<String, Vec<Kind>> = width::table()
        .iter()
        .map(|(n, k)| (n.to_string(), k.to_vec()))
        .collect();
    let mut diffs = Vec::new();
    for (name, kinds) in &generated {
        match checked_in.get(name) {
            Some(k) if k == kinds => {}
            Some(k) => diffs.push(format!("{name}: table {k:?}, kernel {kinds:?}")),
            None => diffs.push(format!("{name}: missing from the table")),
        }
    }
    for name in checked_in.keys().filter(|n| !generated.contains_key(*n)) {
        diffs.push(format!("{name}: in the table, not in this kernel"));
    }
    assert!(
        diffs.is_empty(),
        "{} differences between {} and this kernel ({release}); regenerate with \
         MOAT_REGENERATE_ARG_WIDTHS=1 and review:\n{}",
        diffs.len(),
        file.display(),
        diffs.join("\n")
    );
}

#[test]
fn c_type_spellings_map_to_gcc_names() {
    assert_eq!(gcc_int_name(&["unsigned", "long"]), "long unsigned int");
    assert_eq!(gcc_int_name(&["unsigned"]), "unsigned int");
    assert_eq!(gcc_int_name(&["long"]), "long int");
    assert_eq!(gcc_int_name(&["int"]), "int");
    assert_eq!(gcc_int_name(&["unsigned", "short"]), "short unsigned int");
    assert_eq!(gcc_int_name(&["unsigned", "char"]), "unsigned char");
}
