//! How many bits of each syscall argument the kernel reads.
//!
//! A filter sees every argument as a 64-bit register, but the kernel casts
//! an `int family` to 32 bits before using it: a condition compared on all
//! 64 bits can be dodged by setting the high bits (`socket(0x1_0000_0028)`
//! is AF_VSOCK to the kernel and "not 40" to a 64-bit comparison). The
//! compiler therefore compares each argument on the bits the kernel reads.
//!
//! The widths come from the kernel's own prototypes: [`super::width_table`]
//! is generated from the `SYSCALL_DEFINE` types that the kernel exports in
//! its tracefs syscall events, with typedefs resolved through BTF, and the
//! `syscall_arg_widths` test checks it against the running kernel.

use super::profile::Arch;
use super::width_table::TABLE;

/// What an argument is, from its C type in the kernel's prototype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// An 8-bit integer.
    W8,
    /// A 16-bit integer (e.g. `umode_t`).
    W16,
    /// A 32-bit integer (`int`, `unsigned int`, `pid_t`, `uid_t`...).
    W32,
    /// A 64-bit integer (`long`, `size_t`, `loff_t`...).
    W64,
    /// A pointer: the filter sees the address, never what it points to.
    Ptr,
}

impl Kind {
    /// Bits the kernel reads on a 64-bit architecture.
    pub fn bits(self) -> u32 {
        match self {
            Kind::W8 => 8,
            Kind::W16 => 16,
            Kind::W32 => 32,
            Kind::W64 | Kind::Ptr => 64,
        }
    }
}

/// The generated table: syscall names (libseccomp's x86_64 spelling) and
/// the kinds of their arguments, as the kernel declares them.
pub fn table() -> &'static [(&'static str, &'static [Kind])] {
    TABLE
}

/// Arguments the kernel declares wider than it reads. Each entry names the
/// kernel code that truncates.
const NARROWED: &[(&str, usize, Kind)] = &[
    // kernel/fork.c: `.flags = (lower_32_bits(clone_flags) & ~CSIGNAL)`
    // (since 5.7, for glibc's sign-extended flags); the exit signal too.
    ("clone", 0, Kind::W32),
];

/// The kind of argument `index` of `syscall` in the kernel's (x86_64)
/// prototype, or `None` when moat's table does not know the syscall.
pub fn kind(syscall: &str, index: u32) -> Option<Kind> {
    let i = index as usize;
    if let Some(&(_, _, k)) = NARROWED.iter().find(|(n, a, _)| *n == syscall && *a == i) {
        return Some(k);
    }
    let pos = TABLE.binary_search_by(|(n, _)| (*n).cmp(syscall)).ok()?;
    // An argument past the prototype's end is not read at all: comparing
    // it is meaningless, and it is left as written.
    TABLE[pos].1.get(i).copied()
}

/// The architectures whose prototypes the table describes: the x86 family
/// it was generated on, and arm64/arm, which share the generic prototypes.
fn table_applies(arch: Arch) -> bool {
    matches!(
        arch,
        Arch::X86_64 | Arch::X32 | Arch::X86 | Arch::Aarch64 | Arch::Arm
    )
}

/// Whether `arch` passes syscall arguments in 32-bit registers, so the
/// kernel never reads more than 32 bits of any argument.
fn registers_are_32_bit(arch: Arch) -> bool {
    matches!(
        arch,
        Arch::X86
            | Arch::Arm
            | Arch::Mips
            | Arch::Mipsel
            | Arch::Ppc
            | Arch::S390
            | Arch::Parisc
            | Arch::M68k
            | Arch::Sh
            | Arch::Sheb
    )
}

/// Whether libseccomp's program for `arch` compares the high 32 bits of
/// arguments at all (it does not for 32-bit ABIs, x32 included).
pub fn filter_sees_high_bits(arch: Arch) -> bool {
    matches!(
        arch,
        Arch::X86_64
            | Arch::Aarch64
            | Arch::Mips64
            | Arch::Mipsel64
            | Arch::Ppc64
            | Arch::Ppc64Le
            | Arch::S390X
            | Arch::Riscv64
            | Arch::Parisc64
            | Arch::Loongarch64
    )
}

/// How many low bits of argument `index` of `syscall` the kernel reads on
/// `arch`, or `None` when moat does not know (the condition is then
/// compiled on all 64 bits, as libseccomp does).
pub fn kernel_bits(arch: Arch, syscall: &str, index: u32) -> Option<u32> {
    let k = table_applies(arch).then(|| kind(syscall, index)).flatten();
    if registers_are_32_bit(arch) {
        return Some(k.map_or(32, |k| k.bits().min(32)));
    }
    k.map(Kind::bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_for_binary_search() {
        assert!(TABLE.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(TABLE.len() > 300, "generated from a whole kernel");
    }

    #[test]
    fn widths_of_the_arguments_docker_filters() {
        let x = Arch::X86_64;
        assert_eq!(kernel_bits(x, "socket", 0), Some(32), "int family");
        assert_eq!(kernel_bits(x, "socket", 2), Some(32), "int protocol");
        assert_eq!(kernel_bits(x, "personality", 0), Some(32));
        assert_eq!(kernel_bits(x, "clone", 0), Some(32), "lower_32_bits");
        assert_eq!(kernel_bits(x, "clone", 1), Some(64), "newsp");
        assert_eq!(kind("clone", 2), Some(Kind::Ptr));
        assert_eq!(kernel_bits(x, "ioctl", 1), Some(32), "unsigned int cmd");
        assert_eq!(kernel_bits(x, "ioctl", 2), Some(64), "unsigned long arg");
        assert_eq!(kernel_bits(x, "unshare", 0), Some(64), "unsigned long");
        assert_eq!(kernel_bits(x, "fchmod", 1), Some(16), "umode_t");
        assert_eq!(kernel_bits(x, "stat", 0), Some(64), "a pointer");
        assert_eq!(kernel_bits(x, "no_such_call", 0), None);
    }

    #[test]
    fn thirty_two_bit_abis_read_at_most_32_bits() {
        assert_eq!(kernel_bits(Arch::X86, "unshare", 0), Some(32));
        assert_eq!(kernel_bits(Arch::X86, "socketcall", 0), Some(32));
        assert_eq!(kernel_bits(Arch::X86, "fchmod", 1), Some(16));
        assert_eq!(kernel_bits(Arch::X32, "unshare", 0), Some(64));
        assert!(!filter_sees_high_bits(Arch::X32));
        assert_eq!(kernel_bits(Arch::S390X, "socket", 0), None);
    }
}
