//! Workload names: which are allowed, and a default one from the command.

use std::fs::File;
use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use super::error::StateError;

/// The longest workload name.
pub const MAX_NAME_LEN: usize = 64;

/// Validates a workload name: `[a-zA-Z0-9_.-]`, 1..=64 chars, not `.` or
/// `..`. The error says which character is invalid.
pub fn validate_name(name: &str) -> Result<(), StateError> {
    let err = |reason: String| StateError::InvalidName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(err("it is empty".to_string()));
    }
    if let Some((i, c)) = name.chars().enumerate().find(|&(_, c)| !allowed_char(c)) {
        return Err(err(format!(
            "character {c:?} at position {} is not allowed (use letters, digits, '_', '.' and '-')",
            i + 1
        )));
    }
    // Only ASCII is left, so bytes are characters.
    if name.len() > MAX_NAME_LEN {
        return Err(err(format!(
            "it is {} characters long; at most {MAX_NAME_LEN} are allowed",
            name.len()
        )));
    }
    if name == "." || name == ".." {
        return Err(err("\".\" and \"..\" are reserved".to_string()));
    }
    Ok(())
}

fn allowed_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// A default name from the command: basename of argv\[0\] sanitised to the
/// allowed set (other characters become `_`), plus `-` and 6 random hex
/// chars, total <= 64. An empty basename becomes `workload`.
pub fn generate_name(command: &str) -> String {
    const SUFFIX_LEN: usize = 7; // "-" and 6 hex digits
    let base = command
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("");
    let mut name: String = base
        .chars()
        .map(|c| if allowed_char(c) { c } else { '_' })
        .take(MAX_NAME_LEN - SUFFIX_LEN)
        .collect();
    if name.is_empty() {
        name.push_str("workload");
    }
    name.push('-');
    name.push_str(&random_hex(3));
    name
}

/// `n` random bytes as 2n lowercase hex digits.
pub(super) fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    random_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fills `buf` from the kernel's random source. Names need to be unlikely
/// to collide, not secret (temporary files are created with `O_EXCL` and
/// `O_NOFOLLOW`, which is what protects them), so a last resort of time
/// and pid is acceptable where neither `getrandom` nor `/dev/urandom`
/// works.
fn random_bytes(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: the pointer and length describe `rest`, which is valid
        // for writes of that many bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n > 0 {
            filled += n as usize;
        } else if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        } else {
            break;
        }
    }
    if filled == buf.len() {
        return;
    }
    if let Ok(mut f) = File::open("/dev/urandom") {
        if io::Read::read_exact(&mut f, buf).is_ok() {
            return;
        }
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mix = nanos ^ (u128::from(std::process::id()) << 64);
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (mix >> ((i % 16) * 8)) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_name_accepts_the_allowed_set() {
        for n in [
            "a",
            "web-1",
            "A_b.c-9",
            "-x",
            ".hidden",
            "...",
            &"x".repeat(64),
        ] {
            validate_name(n).unwrap_or_else(|e| panic!("{n:?}: {e}"));
        }
    }

    #[test]
    fn validate_name_refusals() {
        let msg = |n: &str| validate_name(n).unwrap_err().to_string();
        assert!(msg("").contains("it is empty"));
        let e = msg(&"x".repeat(65));
        assert!(e.contains("65 characters long; at most 64"), "{e}");
        assert!(msg(".").contains("reserved"));
        assert!(msg("..").contains("reserved"));
        let e = msg("a/b");
        assert!(e.contains("character '/' at position 2"), "{e}");
        let e = msg("web 1");
        assert!(e.contains("character ' ' at position 4"), "{e}");
        let e = msg("héllo");
        assert!(e.contains("character 'é' at position 2"), "{e}");
        let e = msg("../etc");
        assert!(e.contains("'/'"), "{e}");
    }

    fn check_generated(name: &str, prefix: &str) {
        validate_name(name).unwrap_or_else(|e| panic!("{name:?}: {e}"));
        assert!(name.len() <= MAX_NAME_LEN, "{name}");
        let (base, hex) = name.rsplit_once('-').unwrap();
        assert_eq!(base, prefix, "{name}");
        assert_eq!(hex.len(), 6, "{name}");
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()), "{name}");
    }

    #[test]
    fn generate_name_from_commands() {
        check_generated(&generate_name("/usr/bin/sleep"), "sleep");
        check_generated(&generate_name("sleep"), "sleep");
        check_generated(&generate_name("./my prog!"), "my_prog_");
        check_generated(&generate_name("/opt/app/"), "app");
        check_generated(&generate_name("ünï"), "_n_");
        check_generated(&generate_name(""), "workload");
        check_generated(&generate_name("/"), "workload");
        check_generated(&generate_name(".."), "..");
        let long = "a".repeat(200);
        let n = generate_name(&long);
        assert_eq!(n.len(), 64);
        check_generated(&n, &"a".repeat(57));
    }

    #[test]
    fn generated_names_differ() {
        let a = generate_name("x");
        let b = generate_name("x");
        let c = generate_name("x");
        // Three equal draws of 24 random bits would be a broken source.
        assert!(a != b || b != c, "{a} {b} {c}");
    }
}
