//! Architectures: the host's, Docker's Go names for them, and the seccomp
//! and audit identifiers the kernel uses.

use super::profile::{Arch, KernelVersion};

/// Go architecture names accepted in `includes.arches` / `excludes.arches`.
/// Docker's own profile also uses `x86` and `x32`, which never equal a Go
/// `GOARCH` value; they are accepted so such profiles parse, and behave as
/// they do in Docker (they never match).
const GO_ARCHES: &[&str] = &[
    "386",
    "x86",
    "amd64",
    "x32",
    "arm",
    "arm64",
    "loong64",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "mips64p32",
    "mips64p32le",
    "ppc",
    "ppc64",
    "ppc64le",
    "riscv64",
    "s390",
    "s390x",
];

/// Every seccomp architecture moat knows.
pub const ALL_ARCHES: &[Arch] = &[
    Arch::X86,
    Arch::X86_64,
    Arch::X32,
    Arch::Arm,
    Arch::Aarch64,
    Arch::Mips,
    Arch::Mips64,
    Arch::Mips64N32,
    Arch::Mipsel,
    Arch::Mipsel64,
    Arch::Mipsel64N32,
    Arch::Ppc,
    Arch::Ppc64,
    Arch::Ppc64Le,
    Arch::S390,
    Arch::S390X,
    Arch::Parisc,
    Arch::Parisc64,
    Arch::Riscv64,
    Arch::Loongarch64,
    Arch::M68k,
    Arch::Sh,
    Arch::Sheb,
];

/// Whether `name` is an architecture name Docker profiles use.
pub fn is_go_arch(name: &str) -> bool {
    GO_ARCHES.contains(&name)
}

/// The host a profile is resolved for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Docker's (Go's) name of the architecture, e.g. `amd64`.
    pub go_arch: &'static str,
    /// The native seccomp architecture.
    pub native: Arch,
    /// The running kernel, `major.minor`.
    pub kernel: KernelVersion,
}

impl Host {
    /// Reads the machine and kernel release from `uname(2)`.
    pub fn detect() -> Result<Host, String> {
        let u = nix::sys::utsname::uname().map_err(|e| format!("uname failed: {e}"))?;
        let machine = u.machine().to_string_lossy().into_owned();
        let release = u.release().to_string_lossy().into_owned();
        let (go_arch, native) = from_machine(&machine)
            .ok_or_else(|| format!("unsupported machine architecture {machine:?}"))?;
        let kernel = parse_release(&release)
            .ok_or_else(|| format!("cannot parse kernel release {release:?}"))?;
        Ok(Host {
            go_arch,
            native,
            kernel,
        })
    }
}

/// Maps `uname -m` to Docker's Go arch name and the native seccomp arch.
pub fn from_machine(machine: &str) -> Option<(&'static str, Arch)> {
    Some(match machine {
        "x86_64" => ("amd64", Arch::X86_64),
        "i386" | "i486" | "i586" | "i686" => ("386", Arch::X86),
        "aarch64" | "arm64" => ("arm64", Arch::Aarch64),
        m if m.starts_with("armv") => ("arm", Arch::Arm),
        "ppc64le" => ("ppc64le", Arch::Ppc64Le),
        "ppc64" => ("ppc64", Arch::Ppc64),
        "s390x" => ("s390x", Arch::S390X),
        "riscv64" => ("riscv64", Arch::Riscv64),
        "loongarch64" => ("loong64", Arch::Loongarch64),
        "mips64" => ("mips64", Arch::Mips64),
        _ => return None,
    })
}

/// Parses the `major.minor` prefix of a kernel release such as
/// `6.18.44-fc-v595`.
pub fn parse_release(release: &str) -> Option<KernelVersion> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some(KernelVersion { major, minor })
}

impl Arch {
    /// The `SCMP_ARCH_*` spelling.
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// The `AUDIT_ARCH_*` value the kernel puts in `seccomp_data.arch`, for
    /// the architectures this project evaluates filters for and those that
    /// multiplex socket calls (see `seccomp::mux`).
    pub fn audit_arch(self) -> Option<u32> {
        const LE: u32 = 0x4000_0000;
        const BITS64: u32 = 0x8000_0000;
        Some(match self {
            // x32 shares x86_64's audit arch; its syscall numbers carry bit 30.
            Arch::X86_64 | Arch::X32 => 62 | BITS64 | LE,
            Arch::X86 => 3 | LE,
            Arch::Aarch64 => 183 | BITS64 | LE,
            Arch::Arm => 40 | LE,
            Arch::Riscv64 => 243 | BITS64 | LE,
            Arch::S390X => 22 | BITS64,
            Arch::Ppc64Le => 21 | BITS64 | LE,
            Arch::Ppc64 => 21 | BITS64,
            Arch::Ppc => 20,
            Arch::S390 => 22,
            Arch::Mips => 8,
            Arch::Mipsel => 8 | LE,
            Arch::M68k => 4,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_strings_parse() {
        assert_eq!(
            parse_release("6.18.44-fc-v595"),
            Some(KernelVersion {
                major: 6,
                minor: 18
            })
        );
        assert_eq!(
            parse_release("5.4.0"),
            Some(KernelVersion { major: 5, minor: 4 })
        );
        assert_eq!(parse_release("garbage"), None);
    }

    #[test]
    fn machine_names_map_to_docker_arches() {
        assert_eq!(from_machine("x86_64"), Some(("amd64", Arch::X86_64)));
        assert_eq!(from_machine("aarch64"), Some(("arm64", Arch::Aarch64)));
        assert_eq!(from_machine("vax"), None);
    }

    #[test]
    fn audit_arches_match_the_kernel() {
        assert_eq!(Arch::X86_64.audit_arch(), Some(0xc000_003e));
        assert_eq!(Arch::X86.audit_arch(), Some(0x4000_0003));
        assert_eq!(Arch::Aarch64.audit_arch(), Some(0xc000_00b7));
        assert_eq!(Arch::X86_64.name(), "SCMP_ARCH_X86_64");
    }

    #[test]
    fn detects_this_host() {
        let h = Host::detect().unwrap();
        assert!(h.kernel.major >= 3);
    }
}
