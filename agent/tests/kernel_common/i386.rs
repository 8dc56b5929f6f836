//! i386 syscalls (`int 0x80`) from these 64-bit test processes.

/// i386 syscall `nr` with up to three arguments (ebx, ecx, edx); the return
/// value or minus the errno.
pub fn syscall3(nr: i64, a: u64, b: u64, c: u64) -> i64 {
    let mut ret = nr;
    // SAFETY: the i386 ABI: number in eax, arguments in ebx, ecx, edx; r8-r11
    // clobbered by kernels before 4.16. rbx is reserved by LLVM, hence the
    // swap. Callers pass arguments valid for the syscall.
    unsafe {
        std::arch::asm!(
            "xchg {bx}, rbx",
            "int 0x80",
            "xchg {bx}, rbx",
            bx = inout(reg) a => _,
            inout("rax") ret,
            in("rcx") b,
            in("rdx") c,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
        );
    }
    ret
}

/// i386 `getpid`.
pub const GETPID: i64 = 20;
/// i386 `getppid`.
pub const GETPPID: i64 = 64;
/// i386 `prctl`.
pub const PRCTL: i64 = 172;
/// i386 `seccomp`.
pub const SECCOMP: i64 = 354;

/// Whether this kernel runs i386 syscalls for this process.
pub fn available() -> bool {
    syscall3(GETPID, 0, 0, 0) == i64::from(std::process::id() as i32)
}
