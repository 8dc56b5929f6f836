//! Reading a profile from JSON with errors that name the file, the field
//! (as a JSON path) and the reason.
//!
//! Parsing reads the JSON refusing duplicated keys (see [`super::json`]),
//! then makes two passes: a structural walk over the raw JSON that refuses
//! unknown keys with a did-you-mean (a typo such as `errnoret` would
//! otherwise silently weaken a filter), then typed deserialisation that
//! reports the path of the first bad value, then semantic checks.

use serde_json::Value;
use std::path::Path;

use super::error::{ProfileError, Source};
use super::json::JsonFault;
use super::profile::{Action, Profile};
use crate::{caps, errno, suggest};

const TOP_LEVEL_KEYS: &[&str] = &[
    "defaultAction",
    "defaultErrnoRet",
    "defaultErrno",
    "architectures",
    "archMap",
    "flags",
    "listenerPath",
    "listenerMetadata",
    "syscalls",
    "comment",
];
const ARCH_MAP_KEYS: &[&str] = &["architecture", "subArchitectures"];
const SYSCALL_KEYS: &[&str] = &[
    "name", "names", "action", "errnoRet", "errno", "args", "includes", "excludes", "comment",
];
const ARG_KEYS: &[&str] = &["index", "value", "valueTwo", "op"];
const FILTER_KEYS: &[&str] = &["caps", "arches", "minKernel"];

/// Highest valid argument index: syscalls take at most six arguments.
const MAX_ARG_INDEX: u32 = 5;
/// The filter's return value keeps 16 bits of data for the errno.
const MAX_ERRNO_RET: u32 = 0xffff;

/// Reads and validates a profile file. An OCI bundle `config.json` is
/// accepted too: its `linux.seccomp` object is used.
/// The file must be a regular file within [`super::input::MAX_PROFILE_BYTES`].
pub fn from_file(path: &Path) -> Result<Profile, ProfileError> {
    let text = super::input::read_file(path)?;
    from_str(&text, Source::File(path.to_path_buf()))
}

/// Reads and validates a profile from standard input (the path `-`).
pub fn from_stdin() -> Result<Profile, ProfileError> {
    let text = super::input::read_stdin()?;
    from_str(&text, Source::Stdin)
}

/// Parses and validates profile JSON from `source`.
pub fn from_str(text: &str, source: Source) -> Result<Profile, ProfileError> {
    let value = super::json::parse_strict(text).map_err(|fault| match fault {
        JsonFault::DuplicateKey { path, line } => ProfileError::Field {
            source_name: source.clone(),
            field: path,
            reason: format!("duplicate key (line {line}); each key may appear once per object"),
        },
        JsonFault::Syntax(e) => ProfileError::Json {
            source_name: source.clone(),
            line: e.line(),
            column: e.column(),
            reason: json_reason(&e),
        },
    })?;
    let (value, prefix) = unwrap_oci_config(value, &source)?;
    let field = |path: String, reason: String| ProfileError::Field {
        source_name: source.clone(),
        field: join(&prefix, &path),
        reason,
    };
    check_keys(&value).map_err(|(p, r)| field(p, r))?;
    let profile: Profile = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        field(
            if path == "." { String::new() } else { path },
            e.into_inner().to_string(),
        )
    })?;
    validate(&profile).map_err(|(p, r)| field(p, r))?;
    Ok(profile)
}

fn join(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (true, true) => "(top level)".to_string(),
        (true, false) => path.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) => format!("{prefix}.{path}"),
    }
}

/// serde_json appends " at line L column C" to its messages; we print the
/// position ourselves.
fn json_reason(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    }
}

fn unwrap_oci_config(mut value: Value, source: &Source) -> Result<(Value, String), ProfileError> {
    let is_oci = value.get("ociVersion").is_some();
    if !is_oci {
        return Ok((value, String::new()));
    }
    // Taken, not cloned: a profile may be large.
    match value.get_mut("linux").and_then(|l| l.get_mut("seccomp")) {
        Some(s) => Ok((s.take(), "linux.seccomp".to_string())),
        None => Err(ProfileError::Field {
            source_name: source.clone(),
            field: "linux.seccomp".to_string(),
            reason: "this OCI config.json has no seccomp section".to_string(),
        }),
    }
}

type FieldFault = (String, String);

fn unknown_key(path: &str, key: &str, known: &[&str]) -> FieldFault {
    let hint = match suggest::closest(key, known.iter().copied()) {
        Some(s) => format!("; did you mean {s:?}?"),
        None => format!("; known fields: {}", known.join(", ")),
    };
    let field = if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    };
    (field, format!("unknown field {key:?}{hint}"))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check_object(v: &Value, path: &str, known: &[&str]) -> Result<(), FieldFault> {
    if let Value::Object(map) = v {
        for key in map.keys() {
            if !known.contains(&key.as_str()) {
                return Err(unknown_key(path, key, known));
            }
        }
    }
    // Non-objects are left to typed deserialisation, which names the type.
    Ok(())
}

fn for_each_item(
    v: &Value,
    path: &str,
    mut f: impl FnMut(&Value, &str) -> Result<(), FieldFault>,
) -> Result<(), FieldFault> {
    if let Value::Array(items) = v {
        for (i, item) in items.iter().enumerate() {
            f(item, &format!("{path}[{i}]"))?;
        }
    }
    Ok(())
}

fn check_keys(v: &Value) -> Result<(), FieldFault> {
    if !v.is_object() {
        return Err((
            String::new(),
            format!("a profile is a JSON object, not {}", kind(v)),
        ));
    }
    check_object(v, "", TOP_LEVEL_KEYS)?;
    if let Some(list) = v.get("archMap") {
        for_each_item(list, "archMap", |e, p| check_object(e, p, ARCH_MAP_KEYS))?;
    }
    if let Some(list) = v.get("syscalls") {
        for_each_item(list, "syscalls", |rule, p| {
            check_object(rule, p, SYSCALL_KEYS)?;
            if let Some(args) = rule.get("args") {
                for_each_item(args, &format!("{p}.args"), |a, ap| {
                    check_object(a, ap, ARG_KEYS)
                })?;
            }
            for which in ["includes", "excludes"] {
                if let Some(f) = rule.get(which) {
                    check_object(f, &format!("{p}.{which}"), FILTER_KEYS)?;
                }
            }
            Ok(())
        })?;
    }
    Ok(())
}

fn check_errno(
    path: &str,
    action: Action,
    errno_ret: Option<u32>,
    errno_name: Option<&str>,
    action_field: &str,
) -> Result<(), FieldFault> {
    if let Some(n) = errno_ret {
        if !action.takes_errno() {
            return Err((
                path.to_string(),
                format!(
                    "errno {n} given for {} ({action_field}); only SCMP_ACT_ERRNO and SCMP_ACT_TRACE return an errno",
                    action.as_str()
                ),
            ));
        }
        if n > MAX_ERRNO_RET {
            return Err((
                path.to_string(),
                format!("errno {n} does not fit the filter's 16-bit return data (at most {MAX_ERRNO_RET})"),
            ));
        }
    }
    if let Some(name) = errno_name {
        let Some(num) = errno::from_name(name) else {
            return Err((path.to_string(), format!("unknown errno name {name:?}")));
        };
        if errno_ret.is_some_and(|n| n != num) {
            return Err((
                path.to_string(),
                format!(
                    "{name} is {num}, which disagrees with the numeric errno {}",
                    errno_ret.unwrap_or(0)
                ),
            ));
        }
    }
    Ok(())
}

fn validate(p: &Profile) -> Result<(), FieldFault> {
    if !p.architectures.is_empty() && !p.arch_map.is_empty() {
        return Err((
            "archMap".to_string(),
            "both 'architectures' and 'archMap' are given; use one of them".to_string(),
        ));
    }
    check_errno(
        "defaultErrnoRet",
        p.default_action,
        p.default_errno_ret,
        p.default_errno.as_deref(),
        "defaultAction",
    )?;
    if p.listener_metadata.is_some() && p.listener_path.is_none() {
        return Err((
            "listenerMetadata".to_string(),
            "listenerMetadata is set but listenerPath is not; the metadata has nowhere to go"
                .to_string(),
        ));
    }
    let uses_notify =
        p.default_action == Action::Notify || p.syscalls.iter().any(|r| r.action == Action::Notify);
    if uses_notify && p.listener_path.is_none() {
        return Err((
            "listenerPath".to_string(),
            "SCMP_ACT_NOTIFY is used but no listenerPath is given to receive the notifications"
                .to_string(),
        ));
    }
    for (i, rule) in p.syscalls.iter().enumerate() {
        let path = format!("syscalls[{i}]");
        if rule.name.is_some() && !rule.names.is_empty() {
            return Err((
                format!("{path}.name"),
                "both 'name' and 'names' are given; use 'names'".to_string(),
            ));
        }
        if rule.name.is_none() && rule.names.is_empty() {
            return Err((
                format!("{path}.names"),
                "no syscall names: the rule would match nothing".to_string(),
            ));
        }
        for (j, n) in rule.all_names().enumerate() {
            if n.trim().is_empty() {
                let f = if rule.name.is_some() {
                    format!("{path}.name")
                } else {
                    format!("{path}.names[{j}]")
                };
                return Err((f, "empty syscall name".to_string()));
            }
        }
        check_errno(
            &format!("{path}.errnoRet"),
            rule.action,
            rule.errno_ret,
            rule.errno.as_deref(),
            "action",
        )?;
        for (j, a) in rule.args.iter().enumerate() {
            if a.index > MAX_ARG_INDEX {
                return Err((
                    format!("{path}.args[{j}].index"),
                    format!(
                        "argument index {} is out of range: syscalls have arguments 0 to {MAX_ARG_INDEX}",
                        a.index
                    ),
                ));
            }
        }
        for (which, f) in [("includes", &rule.includes), ("excludes", &rule.excludes)] {
            for (k, c) in f.caps.iter().enumerate() {
                caps::canonical_name(c)
                    .map_err(|e| (format!("{path}.{which}.caps[{k}]"), e.to_string()))?;
            }
            for (k, a) in f.arches.iter().enumerate() {
                if !super::arch::is_go_arch(a) {
                    return Err((
                        format!("{path}.{which}.arches[{k}]"),
                        format!(
                            "unknown architecture {a:?}; expected a Go architecture name such as amd64, arm64, 386, s390x"
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Profile, String> {
        from_str(s, Source::File("p.json".into())).map_err(|e| e.to_string())
    }

    const MINIMAL: &str = r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#;

    #[test]
    fn parses_every_field() {
        let p = parse(
            r#"{
              "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38, "defaultErrno": "ENOSYS",
              "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
                          {"architecture": "SCMP_ARCH_RISCV64", "subArchitectures": null}],
              "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
              "listenerPath": "/run/l.sock", "listenerMetadata": "meta",
              "syscalls": [
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
                 "includes": {"arches": ["amd64"], "caps": ["CAP_SYS_ADMIN"], "minKernel": "4.8"},
                 "excludes": {"arches": ["s390x"], "caps": ["CAP_BPF"], "minKernel": "6.1"},
                 "comment": "c"},
                {"name": "syslog", "action": "SCMP_ACT_ERRNO", "errnoRet": 12345, "args": null},
                {"names": ["getpid"], "action": "SCMP_ACT_NOTIFY"}
              ]
            }"#,
        )
        .unwrap();
        assert_eq!(p.default_errno_ret, Some(38));
        assert_eq!(p.arch_map.len(), 2);
        assert!(p.arch_map[1].sub_architectures.is_empty());
        assert_eq!(p.flags.len(), 4);
        assert_eq!(p.syscalls[0].args[0].value, 2114060288);
        assert_eq!(
            p.syscalls[0].includes.min_kernel.unwrap().to_string(),
            "4.8"
        );
        assert_eq!(p.syscalls[1].all_names().collect::<Vec<_>>(), ["syslog"]);
        assert_eq!(p.syscalls[1].errno_ret, Some(12345));
    }

    #[test]
    fn accepts_an_oci_config_and_uses_linux_seccomp() {
        let p = parse(&format!(
            r#"{{"ociVersion": "1.0.2", "process": {{}}, "linux": {{"seccomp": {MINIMAL}}}}}"#
        ))
        .unwrap();
        assert_eq!(p.syscalls[0].names, ["read"]);
        let e = parse(
            r#"{"ociVersion":"1.0.2","linux":{"seccomp":{"defaultAction":"SCMP_ACT_NOPE"}}}"#,
        )
        .unwrap_err();
        assert!(
            e.starts_with("p.json: linux.seccomp.defaultAction: unknown variant `SCMP_ACT_NOPE`"),
            "{e}"
        );
    }

    #[test]
    fn invalid_json_names_line_and_column() {
        let e = parse("{\n  \"defaultAction\": \"SCMP_ACT_ERRNO\",\n  \"syscalls\": [,]\n}")
            .unwrap_err();
        assert!(
            e.starts_with("p.json: invalid JSON at line 3, column 16:"),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }

    #[test]
    fn unknown_action_and_operator_name_the_field() {
        let e = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOWED"}]}"#).unwrap_err();
        assert!(
            e.starts_with("p.json: syscalls[0].action: unknown variant `SCMP_ACT_ALLOWED`"),
            "{e}"
        );
        let e = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_EQUAL"}]}]}"#).unwrap_err();
        assert!(
            e.starts_with("p.json: syscalls[0].args[0].op: unknown variant `SCMP_CMP_EQUAL`"),
            "{e}"
        );
    }

    #[test]
    fn argument_index_above_five_is_refused() {
        let e = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#).unwrap_err();
        assert!(
            e.starts_with("p.json: syscalls[0].args[0].index: argument index 6 is out of range"),
            "{e}"
        );
    }

    #[test]
    fn arch_map_with_architectures_is_refused() {
        let e = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],"archMap":[{"architecture":"SCMP_ARCH_X86_64"}],"syscalls":[]}"#).unwrap_err();
        assert!(
            e.starts_with("p.json: archMap: both 'architectures' and 'archMap'"),
            "{e}"
        );
    }

    #[test]
    fn errno_on_allow_is_refused() {
        let e = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","errnoRet":1}]}"#).unwrap_err();
        assert!(
            e.starts_with("p.json: syscalls[0].errnoRet: errno 1 given for SCMP_ACT_ALLOW"),
            "{e}"
        );
        let e = parse(r#"{"defaultAction":"SCMP_ACT_KILL","defaultErrnoRet":1,"syscalls":[]}"#)
            .unwrap_err();
        assert!(
            e.starts_with("p.json: defaultErrnoRet: errno 1 given for SCMP_ACT_KILL"),
            "{e}"
        );
    }

    #[test]
    fn unknown_fields_get_a_suggestion() {
        let e = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","sycalls":[]}"#).unwrap_err();
        assert_eq!(
            e,
            r#"p.json: sycalls: unknown field "sycalls"; did you mean "syscalls"?"#
        );
        let e = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","errnoret":1}]}"#).unwrap_err();
        assert_eq!(
            e,
            r#"p.json: syscalls[0].errnoret: unknown field "errnoret"; did you mean "errnoRet"?"#
        );
        let e = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","zzz":1}"#).unwrap_err();
        assert!(e.contains("known fields: defaultAction"), "{e}");
    }

    #[test]
    fn empty_names_are_refused() {
        let e = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":[],"action":"SCMP_ACT_ALLOW"}]}"#).unwrap_err();
        assert!(
            e.starts_with("p.json: syscalls[0].names: no syscall names"),
            "{e}"
        );
        let e = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":[""],"action":"SCMP_ACT_ALLOW"}]}"#).unwrap_err();
        assert!(
            e.starts_with("p.json: syscalls[0].names[0]: empty syscall name"),
            "{e}"
        );
        let e = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"name":"a","names":["b"],"action":"SCMP_ACT_ALLOW"}]}"#).unwrap_err();
        assert!(e.starts_with("p.json: syscalls[0].name: both"), "{e}");
    }

    #[test]
    fn listener_rules() {
        let e = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","listenerMetadata":"x","syscalls":[]}"#)
            .unwrap_err();
        assert!(
            e.starts_with(
                "p.json: listenerMetadata: listenerMetadata is set but listenerPath is not"
            ),
            "{e}"
        );
        let e = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_NOTIFY"}]}"#).unwrap_err();
        assert!(
            e.starts_with("p.json: listenerPath: SCMP_ACT_NOTIFY is used"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_their_path() {
        for (json, want) in [
            (r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"5"}}]}"#, "p.json: syscalls[0].includes.minKernel: invalid kernel version \"5\""),
            (r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","excludes":{"caps":["CAP_SYS_ADMN"]}}]}"#, "p.json: syscalls[0].excludes.caps[0]: unknown capability \"CAP_SYS_ADMN\" (did you mean CAP_SYS_ADMIN?)"),
            (r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","includes":{"arches":["x86_64"]}}]}"#, "p.json: syscalls[0].includes.arches[0]: unknown architecture \"x86_64\""),
            (r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X87"]}"#, "p.json: architectures[0]: unknown variant `SCMP_ARCH_X87`"),
            (r#"{"defaultAction":"SCMP_ACT_ERRNO","flags":["TSYNC"]}"#, "p.json: flags[0]: unknown variant `TSYNC`"),
            (r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":-1,"op":"SCMP_CMP_EQ"}]}]}"#, "p.json: syscalls[0].args[0].value: invalid value: integer `-1`"),
            (r#"{"syscalls":[]}"#, "p.json: (top level): missing field `defaultAction`"),
            (r#"[]"#, "p.json: (top level): a profile is a JSON object, not an array"),
            (r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,"defaultErrno":"EPERM"}"#, "p.json: defaultErrnoRet: EPERM is 1, which disagrees"),
            (r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":70000}"#, "p.json: defaultErrnoRet: errno 70000 does not fit"),
        ] {
            let e = parse(json).unwrap_err();
            assert!(e.starts_with(want), "got {e:?}, want prefix {want:?}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn duplicate_keys_are_refused_with_their_path() {
        let e = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultAction":"SCMP_ACT_ALLOW"}"#)
            .unwrap_err();
        assert_eq!(
            e,
            "p.json: defaultAction: duplicate key (line 1); each key may appear once per object"
        );
        let e = parse(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
                {"names":["a"],"action":"SCMP_ACT_ALLOW"},{"names":["b"],"action":"SCMP_ACT_ALLOW"},
                {"names":["c"],"action":"SCMP_ACT_ALLOW"},
                {"names":["d"],"action":"SCMP_ACT_ERRNO","action":"SCMP_ACT_ALLOW"}]}"#,
        )
        .unwrap_err();
        assert!(
            e.starts_with("p.json: syscalls[3].action: duplicate key (line 4)"),
            "{e}"
        );
        let e = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"value":2,"op":"SCMP_CMP_EQ"}]}]}"#).unwrap_err();
        assert!(
            e.starts_with("p.json: syscalls[0].args[0].value: duplicate key"),
            "{e}"
        );
        let e = parse(r#"{"ociVersion":"1.0.2","linux":{"seccomp":{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[],"syscalls":[]}}}"#).unwrap_err();
        assert!(
            e.starts_with("p.json: linux.seccomp.syscalls: duplicate key"),
            "{e}"
        );
    }

    #[test]
    fn never_panics_on_truncations_of_a_real_profile() {
        let full = r#"{"defaultAction":"SCMP_ACT_ERRNO","archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":["SCMP_ARCH_X86"]}],"syscalls":[{"names":["clone"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}],"includes":{"caps":["CAP_SYS_ADMIN"]}}]}"#;
        assert!(parse(full).is_ok());
        for cut in 0..full.len() {
            let _ = parse(&full[..cut]);
        }
    }
}
