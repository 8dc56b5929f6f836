//! The profile writer and the merge, on fixtures, with exact output.

use std::collections::BTreeSet;

use moat_common::{AUDIT_ARCH_I386, AUDIT_ARCH_X86_64};

use super::write::{build_profile, name_syscalls, per_arch_names, to_json};
use crate::caps::CapSet;
use crate::seccomp::{self, builtin, parse, Source};

/// A profile as `moat run --record-profile` wrote it earlier.
const EARLIER: &str = r#"{
  "comment": "an earlier recording",
  "defaultAction": "SCMP_ACT_ERRNO",
  "defaultErrnoRet": 1,
  "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
  "syscalls": [
    {"names": ["getpid"], "action": "SCMP_ACT_ALLOW", "comment": "recorded on SCMP_ARCH_X86_64, SCMP_ARCH_X86"},
    {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "comment": "recorded on SCMP_ARCH_X86_64"},
    {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38, "comment": "refused as the base profile refuses it (not recorded)"}
  ]
}"#;

/// The merge of EARLIER and a recording of close, write and clone (x86_64)
/// and exit (i386), under the built-in default profile.
const MERGED: &str = r#"{
  "comment": "merged",
  "defaultAction": "SCMP_ACT_ERRNO",
  "defaultErrnoRet": 1,
  "architectures": [
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X86"
  ],
  "syscalls": [
    {
      "names": [
        "getpid"
      ],
      "action": "SCMP_ACT_ALLOW",
      "comment": "recorded on SCMP_ARCH_X86_64, SCMP_ARCH_X86"
    },
    {
      "names": [
        "close",
        "read",
        "write"
      ],
      "action": "SCMP_ACT_ALLOW",
      "comment": "recorded on SCMP_ARCH_X86_64"
    },
    {
      "names": [
        "exit"
      ],
      "action": "SCMP_ACT_ALLOW",
      "comment": "recorded on SCMP_ARCH_X86"
    },
    {
      "names": [
        "clone"
      ],
      "action": "SCMP_ACT_ALLOW",
      "args": [
        {
          "index": 0,
          "value": 2114060288,
          "valueTwo": 0,
          "op": "SCMP_CMP_MASKED_EQ"
        }
      ],
      "comment": "argument rule of the base profile; recorded on SCMP_ARCH_X86_64"
    },
    {
      "names": [
        "clone3"
      ],
      "action": "SCMP_ACT_ERRNO",
      "errnoRet": 38,
      "comment": "refused as the base profile refuses it (not recorded)"
    }
  ]
}
"#;

#[test]
fn a_recording_merges_into_an_earlier_profile_exactly() {
    if !cfg!(target_arch = "x86_64") {
        eprintln!("SKIP: the fixture is x86_64's");
        return;
    }
    let earlier = parse::from_str(EARLIER, Source::File("earlier.json".into())).unwrap();
    let recorded: BTreeSet<(u32, u32)> = [
        (AUDIT_ARCH_X86_64, 3),  // close
        (AUDIT_ARCH_X86_64, 1),  // write
        (AUDIT_ARCH_X86_64, 56), // clone
        (AUDIT_ARCH_I386, 1),    // exit
    ]
    .into();
    let (mut names, unnamed) = name_syscalls(&recorded);
    assert!(unnamed.is_empty());
    for (name, arches) in per_arch_names(&earlier) {
        names.entry(name).or_default().extend(arches);
    }
    let base = builtin::default_profile().unwrap();
    let (resolved, _) =
        seccomp::resolve_for_host(&base, builtin::SOURCE, &CapSet::docker_default()).unwrap();
    let profile = build_profile(&names, Some(&resolved), "merged".into());
    assert_eq!(to_json(&profile), MERGED);
    // What was written parses, and merging it again changes nothing.
    let again = parse::from_str(MERGED, Source::File("merged.json".into())).unwrap();
    let rebuilt = build_profile(&per_arch_names(&again), Some(&resolved), "merged".into());
    assert_eq!(to_json(&rebuilt), MERGED);
}

#[test]
fn numbers_without_a_name_are_kept_apart() {
    let recorded: BTreeSet<(u32, u32)> =
        [(AUDIT_ARCH_X86_64, 39), (AUDIT_ARCH_X86_64, 4000)].into();
    let (names, unnamed) = name_syscalls(&recorded);
    assert_eq!(names.keys().collect::<Vec<_>>(), ["getpid"]);
    assert_eq!(unnamed, [(crate::seccomp::profile::Arch::X86_64, 4000)]);
}

#[test]
fn a_profile_without_recorded_comments_merges_on_its_architectures() {
    let foreign = parse::from_str(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X32"],
            "syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"},{"names":["kill"],"action":"SCMP_ACT_ERRNO"}]}"#,
        Source::File("f.json".into()),
    )
    .unwrap();
    let names = per_arch_names(&foreign);
    assert_eq!(names.len(), 1);
    assert_eq!(
        names["read"].iter().map(|a| a.name()).collect::<Vec<_>>(),
        ["SCMP_ARCH_X86_64", "SCMP_ARCH_X32"]
    );
}
