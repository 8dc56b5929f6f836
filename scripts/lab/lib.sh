# shellcheck shell=bash
# shellcheck disable=SC2034 # LAB_* results are read by the scripts that source this
# Shared by the kernel lab's scripts (scripts/test-kernels.sh, scripts/lab-node.sh):
# the cache, Debian's kernel packages, root file systems as ext4 images, and
# booting them in QEMU. Sourced, not run; every function is prefixed `lab_`.
#
# Layout:
#   $LAB_CACHE (default /var/cache/moat-lab, kept between runs, outside git)
#     kernels/<package>/vmlinuz, config     one extracted Debian kernel package each
#     node/<key>/                           debootstrapped node images (lab-node.sh)
#   $LAB_OUT (default <cargo target dir>/lab, one run's files)
#
# Disks are NVMe namespaces (NVMe is built into Debian's cloud kernels, as are
# ext4 and the 8250 serial port), so no initramfs and no modules are needed:
# the root is found by its partition's UUID, other disks by namespace id.

LAB_CACHE=${MOAT_LAB_CACHE:-/var/cache/moat-lab}

# Debian packages the lab needs on the host, by what needs them:
#   qemu-system-x86  boots the kernels (software emulation unless MOAT_LAB_ACCEL=kvm)
#   e2fsprogs        mkfs.ext4 -d builds the disk images without mounting anything
#   fdisk            sfdisk gives them a partition table, for root=PARTUUID=
#   busybox-static   the guest's shell and small tools (test-kernels.sh)
#   debootstrap      the Debian node image (lab-node.sh)
#   jq               reads cargo's JSON messages (which executable is which test)
#   kmod             depmod indexes the guest kernels' modules, and its modprobe
#                    loads them on demand in the guest (test-kernels.sh)
LAB_PACKAGES=(qemu-system-x86 e2fsprogs fdisk busybox-static debootstrap jq kmod)

lab_say() { echo "lab: $*" >&2; }
lab_die() {
    echo "lab: error: $*" >&2
    exit 1
}

# Installs the lab's host packages that are missing (kept out of
# scripts/setup.sh so that everyday builds do not pay for QEMU).
lab_need_packages() {
    local missing=() p
    for p in "${LAB_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    [[ $(id -u) -eq 0 ]] || lab_die "missing Debian packages: ${missing[*]}; run as root"
    lab_say "installing Debian packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

# The package-name pattern of a lab kernel: `6.1` and `6.12` are Debian 12's
# cloud kernels (the newest build in the archive is used); a full package name
# (linux-image-...-cloud-amd64) pins one.
lab_kernel_pattern() {
    case $1 in
    6.1) echo '^linux-image-6\.1\.0-[0-9]+-cloud-amd64$' ;;
    6.12) echo '^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64$' ;;
    linux-image-*)
        local name=${1//./\\.}
        echo "^${name//+/\\+}\$"
        ;;
    *) return 1 ;;
    esac
}

# Sets LAB_KERNEL_DIR to the directory holding `vmlinuz`, `config`,
# `version` and `modules/<uname -r>/` of kernel $1 (see lab_kernel_pattern),
# downloading and extracting the package when it is not cached. Returns 2,
# with the reason in LAB_KERNEL_WHY, when the archive has no such package (no
# network, no package lists) and nothing is cached.
lab_kernel() {
    local want=$1 pattern pkg dir tmp deb
    LAB_KERNEL_DIR=""
    LAB_KERNEL_WHY=""
    pattern=$(lab_kernel_pattern "$want") ||
        lab_die "unknown kernel '$want' (6.1, 6.12 or a linux-image-*-cloud-amd64 package name)"
    pkg=$(apt-cache search --names-only "$pattern" 2>/dev/null | awk '{print $1}' | sort -V | tail -n 1)
    if [[ -z $pkg && ! -e $LAB_CACHE/.apt-updated ]]; then
        # Package lists may be missing or stale on a fresh machine.
        if DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1; then
            mkdir -p "$LAB_CACHE"
            touch "$LAB_CACHE/.apt-updated"
        fi
        pkg=$(apt-cache search --names-only "$pattern" 2>/dev/null | awk '{print $1}' | sort -V | tail -n 1)
    fi
    # A kernel cached before the lab kept modules is fetched again.
    if [[ -n $pkg && -f $LAB_CACHE/kernels/$pkg/vmlinuz && -d $LAB_CACHE/kernels/$pkg/modules ]]; then
        LAB_KERNEL_DIR=$LAB_CACHE/kernels/$pkg
        return 0
    fi
    if [[ -n $pkg ]]; then
        tmp=$(mktemp -d "${TMPDIR:-/tmp}/moat-lab-kernel.XXXXXX")
        chmod 755 "$tmp"
        if (cd "$tmp" && apt-get download -q "$pkg" >"$tmp/log" 2>&1); then
            deb=$(ls "$tmp"/*.deb)
            mkdir -p "$tmp/x" "$LAB_CACHE/kernels"
            dpkg-deb -x "$deb" "$tmp/x"
            dir=$LAB_CACHE/kernels/$pkg
            rm -rf "$dir.new"
            mkdir -p "$dir.new"
            # The lab's disks, file systems and console are built in; the
            # modules are kept for what a Debian node loads on demand (socket
            # families such as AF_VSOCK, crypto), which the tests use.
            cp "$tmp"/x/boot/vmlinuz-* "$dir.new/vmlinuz"
            cp "$tmp"/x/boot/config-* "$dir.new/config"
            mv "$tmp"/x/lib/modules "$dir.new/modules"
            dpkg-deb -f "$deb" Version >"$dir.new/version"
            rm -rf "$dir"
            mv "$dir.new" "$dir"
            rm -rf "$tmp"
            lab_say "downloaded $pkg into $dir"
            LAB_KERNEL_DIR=$dir
            return 0
        fi
        lab_say "apt-get download $pkg failed: $(tail -n 1 "$tmp/log")"
        rm -rf "$tmp"
    fi
    # Offline: the newest cached build that matches.
    pkg=$(for d in "$LAB_CACHE"/kernels/*/; do basename "$d"; done | grep -E "$pattern" | sort -V | tail -n 1 || true)
    if [[ -n $pkg && -f $LAB_CACHE/kernels/$pkg/vmlinuz ]]; then
        lab_say "using the cached $pkg (the package archive cannot be reached)"
        [[ -d $LAB_CACHE/kernels/$pkg/modules ]] ||
            lab_say "the cached $pkg has no modules: the guest cannot load any"
        LAB_KERNEL_DIR=$LAB_CACHE/kernels/$pkg
        return 0
    fi
    LAB_KERNEL_WHY="no Debian package matches $pattern (apt-cache finds none: no network or no package lists) and none is cached in $LAB_CACHE/kernels"
    return 2
}

# rm -rf for the lab's trees, which refuses to delete anything while a file
# system is mounted below (debootstrap and chroots mount the host's /proc,
# /sys and /dev there; an interrupted run can leave them).
lab_rm() {
    local d
    for d in "$@"; do
        [[ -e $d ]] || continue
        d=$(readlink -f "$d")
        if awk -v d="$d/" 'index($2 "/", d) == 1 {found = 1} END {exit !found}' /proc/self/mounts; then
            lab_die "something is mounted below $d (see /proc/self/mounts); unmount it before the lab deletes it"
        fi
        rm -rf "$d"
    done
}

# Copies files of the host into root tree $1 at the same paths, following
# the host's merged /usr (so /bin/sh lands in usr/bin). Reads paths on stdin;
# directories and missing paths are ignored, symlinks are copied as symlinks
# together with what they point to.
lab_copy_host_files() {
    local root=$1 f dir target
    while IFS= read -r f; do
        [[ -e $f || -L $f ]] || continue
        [[ -d $f && ! -L $f ]] && continue
        dir=$(readlink -f "$(dirname "$f")")
        mkdir -p "$root$dir"
        [[ -e $root$dir/${f##*/} || -L $root$dir/${f##*/} ]] && continue
        cp -a "$f" "$root$dir/"
        if [[ -L $f ]]; then
            target=$(readlink -f "$f")
            if [[ -e $target ]]; then
                lab_copy_host_files "$root" <<<"$target"
            fi
        fi
    done
    return 0
}

# The shared libraries (and the dynamic loader) of every ELF file given as
# argument, one path per line, as this host resolves them.
lab_elf_libs() {
    local f
    for f in "$@"; do
        [[ $(head -c 4 "$f" 2>/dev/null | od -An -c | tr -d ' ') == 177ELF ]] || continue
        # ldd fails on static executables (busybox): they link nothing.
        { ldd "$f" 2>/dev/null || true; } | awk '/=> \//{print $3} /^\t\//{print $1}'
    done | sort -u
}

# Adds everything the ELF files under root tree $1 link to, from the host.
lab_add_libraries() {
    local root=$1 files
    mapfile -t files < <(find "$root" -type f \( -perm -u+x -o -name '*.so*' \))
    ((${#files[@]})) || return 0
    lab_elf_libs "${files[@]}" | lab_copy_host_files "$root"
}

# The minimal directories and top-level links of a merged-/usr root tree.
lab_skeleton() {
    local root=$1 d
    mkdir -p "$root"/{usr/bin,usr/sbin,usr/lib,usr/lib64,etc,root,tmp,run,proc,sys,dev,var/tmp,var/log,mnt}
    for d in bin sbin lib lib64; do
        [[ -e $root/$d ]] || ln -s "usr/$d" "$root/$d"
    done
    chmod 1777 "$root/tmp" "$root/var/tmp"
}

# The partition the guest's root file system is in, whatever name the
# kernel gives its disk (NVMe namespaces are scanned in parallel, so
# /dev/nvme0n1 is not always the first one): root=PARTUUID=$LAB_ROOT_PARTUUID.
LAB_ROOT_PARTUUID=6d6f6174-6c61-4200-8000-000000000001

# Builds disk image $2 from tree $1, with $3 MiB free: a GPT with one
# partition (LAB_ROOT_PARTUUID) holding an ext4 file system labelled $4,
# made with mkfs.ext4 -d, so nothing is mounted. The file is sparse.
lab_mkfs() {
    local tree=$1 img=$2 free=$3 label=$4 mib
    mib=$(du -sm "$tree" | awk '{print $1}')
    mib=$((mib * 5 / 4 + free))
    rm -f "$img"
    truncate -s $((mib + 2))M "$img"
    printf 'label: gpt\nstart=2048, size=%d, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=%s\n' \
        $((mib * 2048)) "$LAB_ROOT_PARTUUID" | sfdisk -q "$img" >/dev/null
    mkfs.ext4 -q -F -L "$label" -b 4096 -O ^has_journal -E root_owner=0:0,offset=1048576 \
        -d "$tree" "$img" "${mib}M" >/dev/null
}

# Builds a data disk (ext4 labelled $3, no partition table) from tree $1 into $2.
lab_mkfs_data() {
    local tree=$1 img=$2 label=$3 mib
    mib=$(du -sm "$tree" | awk '{print $1}')
    rm -f "$img"
    mkfs.ext4 -q -F -L "$label" -b 4096 -O ^has_journal -E root_owner=0:0 \
        -d "$tree" "$img" "$((mib * 5 / 4 + 32))M" >/dev/null
}

# Boots kernel directory $1 and waits for the guest to power off, or for $2
# seconds. The rest of the arguments go to QEMU (disks, -m, -append...).
# The serial console is written to $LAB_CONSOLE; lines that start with
# `lab:` (every line with LAB_VERBOSE=1) are also shown as they come, with
# $LAB_TAG in front. Returns QEMU's exit status (124: the time limit).
lab_boot() {
    local kdir=$1 limit=$2 rc=0 accel=() pattern='^lab:' reboot=(-no-reboot)
    shift 2
    # LAB_ALLOW_REBOOT=1: a guest reboot restarts the guest in the same QEMU
    # process (disks with snapshot=on keep their writes), for node scenarios
    # that call lab_reboot; otherwise a reboot (a panic, with panic=-1) ends QEMU.
    [[ ${LAB_ALLOW_REBOOT:-0} == 1 ]] && reboot=()
    case ${MOAT_LAB_ACCEL:-tcg} in
    kvm) accel=(-accel kvm -cpu host) ;;
    # One TCG thread for both vCPUs: with multi-threaded TCG, the guest's
    # live code patching (text_poke_bp, done when tracepoints and static
    # keys flip as programs attach) raced with the other vCPU and oopsed in
    # syscall_trace_enter ("Oops: int3") on 6.12 here, once in three runs.
    *) accel=(-accel "tcg,thread=single" -cpu max) ;;
    esac
    [[ ${LAB_VERBOSE:-0} == 1 ]] && pattern=''
    timeout -k 10 "$limit" qemu-system-x86_64 "${accel[@]}" -nodefaults -no-user-config \
        -display none -monitor none "${reboot[@]}" -serial stdio \
        -kernel "$kdir/vmlinuz" "$@" </dev/null |
        tee "$LAB_CONSOLE" | sed -u 's/\r$//' | grep --line-buffered -e "$pattern" |
        sed -u "s/^/[$LAB_TAG] /" >&2 || rc=${PIPESTATUS[0]}
    return "$rc"
}

# QEMU arguments for the guest's disks: namespaces 1, 2, ... of one NVMe
# controller, in the order given (the guest tells them apart by
# /sys/block/*/nsid: their names depend on the order they are probed in).
# Each argument is an image (raw, or qcow2 by its name), with `:snapshot`
# appended to keep it unchanged (writes go to a temporary overlay).
lab_disks() {
    local n=0 spec img fmt opt
    echo "-device nvme,id=nvme,serial=moat-lab"
    for spec in "$@"; do
        n=$((n + 1))
        img=${spec%:snapshot}
        opt=""
        [[ $spec == *:snapshot ]] && opt=",snapshot=on"
        fmt=raw
        [[ $img == *.qcow2 ]] && fmt=qcow2
        echo "-drive file=$img,if=none,id=disk$n,format=$fmt$opt -device nvme-ns,drive=disk$n,bus=nvme,nsid=$n"
    done
}

# A blank raw disk for the guest to write its results to (as a tar archive).
lab_results_disk() {
    rm -f "$1"
    truncate -s "${2:-256}M" "$1"
}

# Extracts the tar archive the guest wrote to results disk $1 into $2.
# Fails when the guest wrote none (it crashed or timed out before).
lab_read_results() {
    rm -rf "$2"
    mkdir -p "$2"
    tar -xf "$1" -C "$2" 2>/dev/null
}
