//! Builds the kernel-side crate `ebpf/moat-ebpf` for the BPF target and leaves the
//! object at `$OUT_DIR/moat-ebpf`, where `src/programs.rs` embeds it.
//!
//! The eBPF crate needs a nightly (`-Z build-std=core`) and bpf-linker, while the
//! agent builds on stable; aya-build bridges the two by running a nested
//! `rustup run moat-nightly cargo build`. `moat-nightly` is the pinned nightly set
//! up by `scripts/install-bpf-toolchain.sh`.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

/// The rustup toolchain the eBPF crate is built with (see install-bpf-toolchain.sh).
const TOOLCHAIN: &str = "moat-nightly";
const EBPF_PACKAGE: &str = "moat-ebpf";
const SETUP_HINT: &str = "run scripts/setup.sh (it installs the eBPF toolchain through \
                          scripts/install-bpf-toolchain.sh), then build again";

fn main() -> anyhow::Result<()> {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?);
    let ebpf_root = manifest_dir
        .parent()
        .context("agent/ has no parent directory")?
        .join("ebpf");
    let ebpf_dir = ebpf_root.join(EBPF_PACKAGE);
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let object = out_dir.join(EBPF_PACKAGE);

    // aya-build watches the eBPF crate itself; the shared types live beside it.
    println!(
        "cargo:rerun-if-changed={}",
        ebpf_root.join("moat-common").display()
    );

    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    if skip_requested() {
        // aya-build honours AYA_BUILD_SKIP by building nothing; leave an empty
        // object so that `cargo check`/`clippy` work without the eBPF toolchain.
        // `Kernel::load` refuses an empty object at run time.
        fs::write(&object, []).with_context(|| format!("writing {}", object.display()))?;
        println!("cargo:warning=AYA_BUILD_SKIP is set: moatd embeds no eBPF object and cannot load programs");
        return Ok(());
    }

    check_toolchain()?;

    // aya-build runs `cargo build --package moat-ebpf` in the current directory.
    // The eBPF crate is excluded from the root workspace (it is a workspace of its
    // own), so that command only finds it from inside its directory.
    env::set_current_dir(&ebpf_dir).with_context(|| format!("entering {}", ebpf_dir.display()))?;
    let ebpf_dir_str = ebpf_dir
        .to_str()
        .with_context(|| format!("non-UTF-8 path {}", ebpf_dir.display()))?;
    // aya-build forwards every stderr line of the nested cargo as a cargo:warning,
    // and cargo replays those on every later build; quiet keeps them to real
    // diagnostics (compiler messages still come through the JSON stream).
    env::set_var("CARGO_TERM_QUIET", "true");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: EBPF_PACKAGE,
            root_dir: ebpf_dir_str,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(TOOLCHAIN),
    )
    .with_context(|| format!("building the eBPF crate {} failed", ebpf_dir.display()))?;

    if !object.is_file() {
        bail!("building {EBPF_PACKAGE} produced no {}", object.display());
    }
    Ok(())
}

fn skip_requested() -> bool {
    env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Fails early, with the fix in the message, when the pieces the nested build needs
/// are missing: otherwise the failure surfaces as a confusing rustup or linker error
/// deep inside cargo warnings.
fn check_toolchain() -> anyhow::Result<()> {
    let rustc = Command::new("rustup")
        .args(["run", TOOLCHAIN, "rustc", "--print", "sysroot"])
        .output();
    let sysroot =
        match rustc {
            Ok(out) if out.status.success() => {
                PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
            }
            Ok(out) => {
                bail!(
            "the pinned nightly toolchain `{TOOLCHAIN}` is not installed ({}); {SETUP_HINT}",
            String::from_utf8_lossy(&out.stderr).lines().next().unwrap_or("rustup failed").trim()
        )
            }
            Err(err) => bail!(
                "cannot run rustup ({err}), needed for the `{TOOLCHAIN}` toolchain; {SETUP_HINT}"
            ),
        };
    let rust_src = sysroot.join("lib/rustlib/src/rust/library");
    if !rust_src.is_dir() {
        bail!(
            "rust-src is missing from `{TOOLCHAIN}` (no {}); {SETUP_HINT}",
            rust_src.display()
        );
    }

    // bpf-linker is found through PATH by rustc; check the same way, and run it, since
    // a bpf-linker whose libLLVM symlink has gone fails only when invoked.
    let linker = find_in_path("bpf-linker")
        .with_context(|| format!("bpf-linker is not on PATH; {SETUP_HINT}"))?;
    println!("cargo:rerun-if-changed={}", linker.display());
    let status = Command::new(&linker)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {}; {SETUP_HINT}", linker.display()))?;
    if !status.status.success() {
        bail!(
            "{} --version failed ({}); {SETUP_HINT}",
            linker.display(),
            String::from_utf8_lossy(&status.stderr).trim()
        );
    }
    Ok(())
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
