//! `moat profile diff A B`: exact output on fixtures (issue 15).

use std::path::PathBuf;
use std::process::{Command, Output};

use moat_tests::moatd::TempDir;
use moat_tests::{binary, fixtures_dir};

fn moat(args: &[&str]) -> Output {
    Command::new(binary("moat"))
        .args(args)
        .output()
        .expect("run moat")
}

fn write(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The lines after the three header lines (A, B, what they were resolved for).
fn body(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() >= 4, "{out}");
    assert!(lines[2].starts_with("resolved for "), "{out}");
    lines[3..].join("\n")
}

const A: &str = r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86"],
"syscalls":[{"names":["read","write","getpid"],"action":"SCMP_ACT_ALLOW"},
{"names":["socket"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"}]},
{"names":["clone3"],"action":"SCMP_ACT_ERRNO","errnoRet":38}]}"#;
const B: &str = r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,"architectures":["SCMP_ARCH_X86_64"],
"syscalls":[{"names":["read","write","close"],"action":"SCMP_ACT_ALLOW"},
{"names":["socket"],"action":"SCMP_ACT_ALLOW"},
{"names":["clone3"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#;

#[test]
fn diff_names_what_each_allows_per_architecture_with_argument_rules() {
    if !cfg!(target_arch = "x86_64") {
        eprintln!("SKIP: the expected output is x86_64's");
        return;
    }
    let dir = TempDir::new("diff");
    let a = write(&dir, "a.json", A);
    let b = write(&dir, "b.json", B);
    let o = moat(&["profile", "diff", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        out.starts_with(&format!("A: {}\nB: {}\n", a.display(), b.display())),
        "{out}"
    );
    assert_eq!(
        body(&o),
        "\
SCMP_ARCH_X86_64: only A allows (1): getpid
SCMP_ARCH_X86_64: only B allows (1): close
SCMP_ARCH_X86_64: clone3: A refuses (SCMP_ACT_ERRNO(ENOSYS)); B refuses (SCMP_ACT_ERRNO(EPERM))
SCMP_ARCH_X86_64: socket: A allows if arg0 == 0x1; otherwise refuses (SCMP_ACT_ERRNO(EPERM)); B allows
SCMP_ARCH_X86: only A allows (3): getpid read write
SCMP_ARCH_X86: socket: A allows if arg0 == 0x1; otherwise refuses (SCMP_ACT_ERRNO(EPERM)); B refuses (architecture not in the profile)"
    );

    // The same profile twice: no difference, exit 0.
    let o = moat(&["profile", "diff", a.to_str().unwrap(), a.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(body(&o), "no difference");
}

#[test]
fn diff_of_the_builtin_default_and_dockers_is_empty() {
    let Some(fixtures) = fixtures_dir() else {
        eprintln!("SKIP: ../shared/fixtures is not there");
        return;
    };
    let docker = fixtures.join("moby-default-seccomp.json");
    let o = moat(&["profile", "diff", "default", docker.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_eq!(body(&o), "no difference");
    // With every capability the rules that depend on them apply alike too.
    let o = moat(&[
        "profile",
        "diff",
        "default",
        docker.to_str().unwrap(),
        "--cap-add",
        "ALL",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn diff_refuses_a_bad_profile_naming_it() {
    let dir = TempDir::new("diff-bad");
    let bad = write(&dir, "bad.json", r#"{"defaultAction":"SCMP_ACT_NOPE"}"#);
    let o = moat(&["profile", "diff", "default", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.json: defaultAction"), "{err}");
}
