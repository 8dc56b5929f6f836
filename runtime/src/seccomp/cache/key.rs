//! The cache key: everything that decides the compiled program, and its
//! SHA-256 digest, which names the entry.
//!
//! The profile enters as its resolved form (the rules that apply on this
//! host for this capability set, with every action and errno explicit),
//! which is exactly what the compiler reads; the capability set, the host,
//! the compiler options and the install flags are added on top. The
//! environment that could change the output for the same input enters too:
//! the kernel (release, build and machine), libseccomp (the library's
//! version and the API level it detected), and moat itself (its version,
//! the compiler that built it, and the identity of the running executable,
//! so that any rebuild is a new key).

use std::os::unix::fs::MetadataExt;

use sha2::{Digest, Sha256};

use crate::caps::CapSet;
use crate::seccomp::arch::Host;
use crate::seccomp::compile::Options;
use crate::seccomp::resolve::Resolved;

/// What a cache entry is for. Each field is text; two keys that differ in
/// any byte have different digests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// The resolved profile (every field but where it came from).
    pub profile: String,
    /// The capability set.
    pub caps: String,
    /// The host it was resolved for: architecture and kernel version.
    pub host: String,
    /// Compiler options (strictness, dispatch, layout, compatibility).
    pub options: String,
    /// Install flags beyond the profile's (`--log-denials`).
    pub install_flags: u32,
    /// The running kernel: `uname` release, version and machine.
    pub kernel: String,
    /// The linked libseccomp's version and API level.
    pub libseccomp: String,
    /// moat's version, compiler and executable.
    pub moat: String,
}

impl Key {
    /// The key of compiling `resolved` with `options` on this machine, or
    /// why there is none (an environment fact moat cannot read: then
    /// nothing is cached).
    pub fn new(
        resolved: &Resolved,
        caps: &CapSet,
        host: &Host,
        options: Options,
        install_flags: u32,
    ) -> Result<Key, String> {
        Ok(Key {
            profile: profile_text(resolved),
            caps: format!("{caps:?}"),
            host: format!("{host:?}"),
            options: options_text(options),
            install_flags,
            kernel: kernel_text()?,
            libseccomp: libseccomp_text()?,
            moat: moat_text()?,
        })
    }

    /// The SHA-256 digest of every field, each preceded by its name and
    /// length so that no two keys can run together into the same bytes.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"moat seccomp cache key 1\n");
        let flags = self.install_flags.to_string();
        let fields: [(&str, &str); 8] = [
            ("profile", &self.profile),
            ("caps", &self.caps),
            ("host", &self.host),
            ("options", &self.options),
            ("install_flags", &flags),
            ("kernel", &self.kernel),
            ("libseccomp", &self.libseccomp),
            ("moat", &self.moat),
        ];
        for (name, value) in fields {
            h.update(name.as_bytes());
            h.update((value.len() as u64).to_le_bytes());
            h.update(value.as_bytes());
        }
        h.finalize().into()
    }
}

/// The resolved profile as text. Every field is named, so a field added
/// to [`Resolved`] does not compile here until someone decides whether it
/// changes the output; the source only appears in messages.
fn profile_text(r: &Resolved) -> String {
    let Resolved {
        source: _,
        default_action,
        architectures,
        flags,
        listener_path,
        listener_metadata,
        rules,
        skipped: _,
    } = r;
    format!(
        "{default_action:?}\n{architectures:?}\n{flags:?}\n{listener_path:?}\n\
         {listener_metadata:?}\n{rules:?}"
    )
}

fn options_text(o: Options) -> String {
    let Options {
        strict,
        dispatch,
        layout,
        as_libseccomp,
    } = o;
    format!("strict={strict} dispatch={dispatch:?} layout={layout:?} as_libseccomp={as_libseccomp}")
}

fn kernel_text() -> Result<String, String> {
    let u = nix::sys::utsname::uname().map_err(|e| format!("uname failed: {e}"))?;
    Ok(format!(
        "{} {} {}",
        u.release().to_string_lossy(),
        u.version().to_string_lossy(),
        u.machine().to_string_lossy()
    ))
}

fn libseccomp_text() -> Result<String, String> {
    let v = libseccomp::ScmpVersion::current()
        .map_err(|e| format!("cannot read libseccomp's version: {e}"))?;
    Ok(format!(
        "{}.{}.{} api {}",
        v.major,
        v.minor,
        v.micro,
        libseccomp::get_api()
    ))
}

/// moat's version and compiler, and the running executable's device,
/// inode, size and change times: a rebuilt or replaced moat is another
/// key, whatever its version says.
fn moat_text() -> Result<String, String> {
    let m = std::fs::metadata("/proc/self/exe")
        .map_err(|e| format!("cannot identify moat's executable (/proc/self/exe): {e}"))?;
    Ok(format!(
        "{} {} exe {}:{}:{}:{}.{:09}:{}.{:09}",
        env!("CARGO_PKG_VERSION"),
        env!("MOAT_RUSTC_VERSION"),
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::{builtin, resolve};

    pub(crate) fn key_for(caps: &CapSet) -> Key {
        let host = Host::detect().unwrap();
        let profile = builtin::default_profile().unwrap();
        let target = resolve::Target {
            host: host.clone(),
            caps: caps.clone(),
        };
        let resolved = resolve::resolve(&profile, builtin::SOURCE, &target);
        Key::new(&resolved, caps, &host, Options::default(), 0).unwrap()
    }

    #[test]
    fn the_same_input_gives_the_same_digest() {
        let a = key_for(&CapSet::docker_default());
        let b = key_for(&CapSet::docker_default());
        assert_eq!(a, b);
        assert_eq!(a.digest(), b.digest());
        assert!(a.libseccomp.starts_with("2."), "{}", a.libseccomp);
        assert!(a.moat.contains(env!("CARGO_PKG_VERSION")), "{}", a.moat);
    }

    #[test]
    fn every_field_changes_the_digest() {
        let base = key_for(&CapSet::docker_default());
        let d = base.digest();
        let changed: Vec<(&str, Key)> = vec![
            (
                "profile",
                Key {
                    profile: base.profile.replace("Errno", "Trap"),
                    ..base.clone()
                },
            ),
            ("caps", key_for(&CapSet::all())),
            (
                "host",
                Key {
                    host: base.host.replace("amd64", "arm64"),
                    ..base.clone()
                },
            ),
            (
                "options",
                Key {
                    options: options_text(Options {
                        strict: true,
                        ..Options::default()
                    }),
                    ..base.clone()
                },
            ),
            (
                "install_flags",
                Key {
                    install_flags: libc::SECCOMP_FILTER_FLAG_LOG as u32,
                    ..base.clone()
                },
            ),
            (
                "kernel",
                Key {
                    kernel: format!("{}+1", base.kernel),
                    ..base.clone()
                },
            ),
            (
                "libseccomp",
                Key {
                    libseccomp: "2.5.5 api 6".into(),
                    ..base.clone()
                },
            ),
            (
                "moat",
                Key {
                    moat: format!("{} ", base.moat),
                    ..base.clone()
                },
            ),
        ];
        for (field, k) in changed {
            assert_ne!(k, base, "{field} did not change");
            assert_ne!(k.digest(), d, "{field} did not change the digest");
        }
    }

    #[test]
    fn fields_cannot_run_together() {
        let base = key_for(&CapSet::docker_default());
        let a = Key {
            caps: "ab".into(),
            host: "c".into(),
            ..base.clone()
        };
        let b = Key {
            caps: "a".into(),
            host: "bc".into(),
            ..base
        };
        assert_ne!(a.digest(), b.digest());
    }
}
