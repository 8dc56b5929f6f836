//! Makes one raw syscall with full 64-bit register values and prints its
//! result (the return value, or minus the errno) on one line: a workload for
//! the tests that attack seccomp filters from inside `moat run`.
//!
//! ```text
//! syscall_probe socket FAMILY TYPE PROTOCOL          socket(2), x86_64 ABI
//! syscall_probe i386-socketcall FAMILY TYPE PROTOCOL socketcall(SYS_SOCKET) via int 0x80
//! ```
//! Numbers may be decimal or 0x-hexadecimal and use all 64 bits.

fn num(s: &str) -> u64 {
    let r = match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.unwrap_or_else(|_| usage())
}

fn usage() -> ! {
    eprintln!("usage: syscall_probe socket|i386-socketcall FAMILY TYPE PROTOCOL");
    std::process::exit(2)
}

fn raw(ret: i64) -> i64 {
    if ret == -1 {
        -i64::from(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        ret
    }
}

#[cfg(target_arch = "x86_64")]
fn i386_socketcall(args: [u32; 3]) -> i64 {
    const SOCKETCALL: i64 = 102;
    const SYS_SOCKET: i64 = 1;
    // The compat entry reads the argument block through a 32-bit pointer:
    // it must live below 4 GiB.
    // SAFETY: an anonymous private mapping, checked below.
    let block = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
            -1,
            0,
        )
    };
    assert_ne!(block, libc::MAP_FAILED, "mmap MAP_32BIT");
    // SAFETY: the mapping holds 4096 bytes; three u32 fit.
    unsafe { std::ptr::copy_nonoverlapping(args.as_ptr(), block.cast::<u32>(), 3) };
    let mut ret = SOCKETCALL;
    let (mut bx, cx) = (SYS_SOCKET, block as i64);
    // SAFETY: plain integers and a valid low pointer; the kernel clears
    // r8-r11 on the compat path. rbx is reserved by LLVM, hence the swap.
    unsafe {
        std::arch::asm!(
            "xchg {bx}, rbx",
            "int 0x80",
            "xchg {bx}, rbx",
            bx = inout(reg) bx,
            inout("rax") ret,
            in("rcx") cx,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
        );
    }
    let _ = bx;
    ret
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() != 4 {
        usage();
    }
    let (f, t, p) = (num(&a[1]), num(&a[2]), num(&a[3]));
    let ret = match a[0].as_str() {
        // SAFETY: socket takes integers only.
        "socket" => raw(unsafe { libc::syscall(libc::SYS_socket, f, t, p) }),
        #[cfg(target_arch = "x86_64")]
        "i386-socketcall" => i386_socketcall([f as u32, t as u32, p as u32]),
        _ => usage(),
    };
    println!("{ret}");
}
