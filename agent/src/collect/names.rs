//! Names for label values and audit fields: syscalls by architecture, errnos,
//! architectures.

use std::{collections::HashMap, sync::Arc};

use libseccomp::{ScmpArch, ScmpSyscall};

const LE: u32 = 0x4000_0000;
const BITS64: u32 = 0x8000_0000;
/// `AUDIT_ARCH_X86_64`.
pub const AUDIT_ARCH_X86_64: u32 = 62 | BITS64 | LE;
/// `AUDIT_ARCH_I386`.
pub const AUDIT_ARCH_I386: u32 = 3 | LE;
/// `__X32_SYSCALL_BIT`: x32 syscalls use x86_64's audit arch with this bit set.
pub const X32_SYSCALL_BIT: i32 = 0x4000_0000;

/// The architectures known by name: (audit arch, name, libseccomp arch).
const ARCHES: &[(u32, &str, ScmpArch)] = &[
    (AUDIT_ARCH_X86_64, "x86_64", ScmpArch::X8664),
    (AUDIT_ARCH_I386, "x86", ScmpArch::X86),
    (183 | BITS64 | LE, "aarch64", ScmpArch::Aarch64),
    (40 | LE, "arm", ScmpArch::Arm),
    (243 | BITS64 | LE, "riscv64", ScmpArch::Riscv64),
    (22 | BITS64, "s390x", ScmpArch::S390X),
    (22, "s390", ScmpArch::S390),
    (21 | BITS64 | LE, "ppc64le", ScmpArch::Ppc64Le),
    (21 | BITS64, "ppc64", ScmpArch::Ppc64),
    (20, "ppc", ScmpArch::Ppc),
    (258 | BITS64 | LE, "loongarch64", ScmpArch::Loongarch64),
    (8, "mips", ScmpArch::Mips),
    (8 | LE, "mipsel", ScmpArch::Mipsel),
    (8 | BITS64, "mips64", ScmpArch::Mips64),
    (8 | BITS64 | LE, "mipsel64", ScmpArch::Mipsel64),
];

fn is_x32(audit_arch: u32, nr: i32) -> bool {
    audit_arch == AUDIT_ARCH_X86_64 && nr & X32_SYSCALL_BIT != 0
}

/// The architecture's name (`x86_64`, `x32`, `x86`, `aarch64`, ...), or its
/// `AUDIT_ARCH_*` value in hex when unknown.
pub fn arch_name(audit_arch: u32, nr: i32) -> String {
    if is_x32(audit_arch, nr) {
        return "x32".to_owned();
    }
    ARCHES
        .iter()
        .find(|(value, _, _)| *value == audit_arch)
        .map_or_else(
            || format!("{audit_arch:#x}"),
            |(_, name, _)| (*name).to_owned(),
        )
}

/// The syscall's name for its architecture, or the number as text when libseccomp
/// does not know it (newer syscalls, unknown architectures).
pub fn syscall_name(audit_arch: u32, nr: i32) -> String {
    let arch = if is_x32(audit_arch, nr) {
        Some(ScmpArch::X32)
    } else {
        ARCHES
            .iter()
            .find(|(value, _, _)| *value == audit_arch)
            .map(|(_, _, arch)| *arch)
    };
    arch.and_then(|arch| ScmpSyscall::from(nr).get_name_by_arch(arch).ok())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| nr.to_string())
}

/// The symbolic errno (`EPERM`), or the number as text when it has no name.
pub fn errno_name(errno: u16) -> String {
    moat_runtime::errno::name(u32::from(errno)).map_or_else(|| errno.to_string(), str::to_owned)
}

/// A cache of label values: libseccomp allocates for each syscall name lookup, and
/// a scrape names every series.
#[derive(Debug, Default)]
pub struct NameCache {
    syscalls: HashMap<(u32, i32), Arc<str>>,
    errnos: HashMap<u16, Arc<str>>,
}

impl NameCache {
    /// The name of (`audit_arch`, `nr`); see [`syscall_name`].
    pub fn syscall(&mut self, audit_arch: u32, nr: i32) -> Arc<str> {
        self.syscalls
            .entry((audit_arch, nr))
            .or_insert_with(|| Arc::from(syscall_name(audit_arch, nr)))
            .clone()
    }

    /// The name of `errno`; see [`errno_name`].
    pub fn errno(&mut self, errno: u16) -> Arc<str> {
        self.errnos
            .entry(errno)
            .or_insert_with(|| Arc::from(errno_name(errno)))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_syscalls_by_arch() {
        assert_eq!(syscall_name(AUDIT_ARCH_X86_64, 39), "getpid");
        assert_eq!(syscall_name(AUDIT_ARCH_I386, 20), "getpid");
        assert_eq!(
            syscall_name(AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 39),
            "getpid"
        );
        assert_eq!(syscall_name(AUDIT_ARCH_X86_64, 100_000), "100000");
        assert_eq!(syscall_name(0x1234, 1), "1");
        assert_eq!(arch_name(AUDIT_ARCH_X86_64, 39), "x86_64");
        assert_eq!(arch_name(AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 39), "x32");
        assert_eq!(arch_name(0x1234, 1), "0x1234");
        let mut names = NameCache::default();
        assert_eq!(&*names.syscall(AUDIT_ARCH_X86_64, 59), "execve");
    }

    #[test]
    fn names_errnos() {
        assert_eq!(errno_name(1), "EPERM");
        assert_eq!(errno_name(38), "ENOSYS");
        assert_eq!(errno_name(4000), "4000");
        let mut names = NameCache::default();
        assert_eq!(&*names.errno(1), "EPERM");
    }
}
