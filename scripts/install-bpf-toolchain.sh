#!/usr/bin/env bash
# Installs what building moat's kernel-side eBPF programs (ebpf/moat-ebpf) needs:
#
#   1. a rustup toolchain named `moat-nightly` that is the nightly of $NIGHTLY_DATE;
#   2. rust-src for that nightly (aya-build compiles `core` with `-Z build-std=core`);
#   3. bpf-linker $BPF_LINKER_VERSION, linked against the nightly's own libLLVM.
#
# Idempotent and quick (well under a second) when everything is already there, so
# scripts/setup.sh and CI can call it unconditionally.
#
# How the nightly is pinned: agent/build.rs asks aya-build for the toolchain
# `moat-nightly`, never for plain `nightly`. That name is a `rustup toolchain link`
# to the sysroot of a nightly whose commit date is $NIGHTLY_DATE: the machine's
# `nightly` when it has that date (this avoids a download: the machines we build on
# ship it, and have no network beyond the package registries), otherwise
# `nightly-$NIGHTLY_DATE`, installed with rustup. A link follows whatever sits in the
# linked directory, so if `nightly` is later updated in place the link would drift;
# every run therefore re-checks the date and re-links to `nightly-$NIGHTLY_DATE`
# when it no longer matches. The linked directory is a full rustup toolchain, so
# `cargo +moat-nightly` is the nightly's own cargo, not a fallback.
#
# Where libLLVM goes: bpf-linker's llvm-sys build wants an LLVM "prefix" holding
# lib/libLLVM.so, and the LLVM major version must equal the nightly's (its bitcode
# is what bpf-linker reads). We symlink the nightly's libLLVM into $PREFIX/lib,
# PREFIX=/usr/local when run as root (as on the build machines and in CI) and
# $HOME/.local otherwise; set MOAT_BPF_PREFIX to override. bpf-linker's build script
# records an rpath to $PREFIX/lib, so it finds libLLVM without ldconfig or
# LD_LIBRARY_PATH; the symlinks must therefore stay where they are.
# bpf-linker itself goes where `cargo install` puts binaries (~/.cargo/bin).
set -euo pipefail

NIGHTLY_DATE=2026-05-19
PINNED=moat-nightly
BPF_LINKER_VERSION=0.13.0

if [[ -n ${MOAT_BPF_PREFIX:-} ]]; then
    PREFIX=$MOAT_BPF_PREFIX
elif [[ $(id -u) -eq 0 ]]; then
    PREFIX=/usr/local
else
    PREFIX=$HOME/.local
fi

say() { echo "install-bpf-toolchain: $*"; }
die() {
    echo "install-bpf-toolchain: error: $*" >&2
    exit 1
}

# cargo install puts bpf-linker here; a non-login shell (CI) may not have it on PATH.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

command -v rustup >/dev/null || die "rustup not found; install rustup first (https://rustup.rs)"

# --- 1. the pinned nightly ---------------------------------------------------------
pinned_has_date() {
    local version
    version=$(rustup run "$PINNED" rustc --version 2>/dev/null) && [[ $version == *"$NIGHTLY_DATE"* ]]
}

if pinned_has_date; then
    say "toolchain $PINNED is the nightly of $NIGHTLY_DATE: ok"
else
    # No auto-install: a machine without `nightly` must not fetch whatever is newest.
    if nightly_version=$(RUSTUP_AUTO_INSTALL=0 rustc +nightly --version 2>/dev/null) && [[ $nightly_version == *"$NIGHTLY_DATE"* ]]; then
        base=nightly
        say "using the installed 'nightly' (it is the nightly of $NIGHTLY_DATE)"
    else
        base=nightly-$NIGHTLY_DATE
        say "installing $base (minimal profile)"
        # rustfmt too: CI checks the eBPF crate's formatting with `cargo +moat-nightly fmt`.
        rustup toolchain install "$base" --profile minimal --component rustfmt
    fi
    sysroot=$(rustc +"$base" --print sysroot)
    toolchains=$(rustup toolchain list)
    if grep -q "^$PINNED" <<<"$toolchains"; then
        say "removing the stale $PINNED link"
        rustup toolchain uninstall "$PINNED" >/dev/null
    fi
    say "rustup toolchain link $PINNED $sysroot"
    rustup toolchain link "$PINNED" "$sysroot"
    pinned_has_date || die "$PINNED does not report $NIGHTLY_DATE after linking"
    cargo +"$PINNED" --version >/dev/null 2>&1 || die "cargo +$PINNED does not run after linking"
fi

pinned_sysroot=$(rustc +"$PINNED" --print sysroot)

# --- 2. rust-src ---------------------------------------------------------------------
if [[ -d $pinned_sysroot/lib/rustlib/src/rust/library ]]; then
    say "rust-src for $PINNED: ok"
else
    # Components cannot be added to a linked toolchain; add it to the toolchain the
    # link points at, whose rustup name is the sysroot's directory name.
    base=$(basename "$(readlink -f "$pinned_sysroot")")
    say "rustup component add rust-src --toolchain $base"
    rustup component add rust-src --toolchain "$base"
    [[ -d $pinned_sysroot/lib/rustlib/src/rust/library ]] ||
        die "rust-src still missing under $pinned_sysroot"
fi

# --- 3. bpf-linker -------------------------------------------------------------------
want_minor=${BPF_LINKER_VERSION%.*}
if have=$(bpf-linker --version 2>/dev/null) && [[ $have == *" $want_minor"* ]]; then
    say "$have: ok"
else
    llvm_major=$(rustc +"$PINNED" --version --verbose | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
    [[ -n $llvm_major ]] || die "cannot tell the LLVM version of $PINNED"
    # The file name carries the rust version (e.g. libLLVM.so.22.1-rust-1.97.0-nightly),
    # so find it instead of spelling it out.
    shopt -s nullglob
    libs=("$pinned_sysroot"/lib/libLLVM.so.*)
    shopt -u nullglob
    [[ ${#libs[@]} -eq 1 ]] ||
        die "expected exactly one libLLVM.so.* in $pinned_sysroot/lib, found ${#libs[@]}"
    lib=${libs[0]}
    say "linking $lib into $PREFIX/lib"
    mkdir -p "$PREFIX/lib"
    ln -sf "$lib" "$PREFIX/lib/libLLVM.so"
    ln -sf "$lib" "$PREFIX/lib/$(basename "$lib")"

    say "cargo install bpf-linker $BPF_LINKER_VERSION (feature llvm-$llvm_major); this takes about 70 s"
    start=$SECONDS
    # Run outside any project directory so no rust-toolchain.toml picks the compiler.
    (
        cd /
        LLVM_PREFIX=$PREFIX cargo install bpf-linker --locked --force \
            --version "$BPF_LINKER_VERSION" \
            --no-default-features --features "llvm-$llvm_major"
    )
    have=$(bpf-linker --version) || die "bpf-linker was installed but does not run"
    say "$have installed in $((SECONDS - start)) s"
fi

say "done: eBPF programs build with toolchain $PINNED"
