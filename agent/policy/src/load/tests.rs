use super::*;

fn err(text: &str) -> String {
    parse(text, Path::new("p.toml")).unwrap_err().to_string()
}

fn ok(text: &str) -> Policy {
    parse(text, Path::new("p.toml")).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_baseline_parses_and_every_check_appears_in_it() {
    let b = baseline();
    assert_eq!(b.source, Source::Baseline);
    for name in Check::NAMES {
        assert!(
            b.rules.iter().any(|r| r.check.name() == name),
            "baseline has no {name} rule"
        );
    }
    let names: Vec<&str> = b.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names.len(), 13);
    assert!(b.exceptions.is_empty());
}

#[test]
fn a_full_file_with_exceptions() {
    let p = ok(r#"
extends = "baseline"

[[rule]]
name = "no-ptrace"
check = "capabilities"
allowed = ["net_admin", "CAP_NET_RAW"]
message = "no"

[[exception]]
rule = "capabilities"
users = ["ci"]
capabilities = ["NET_ADMIN"]
reason = "network tests"

[[exception]]
rule = "host-paths"
paths = ["/etc/localtime/"]

[[exception]]
rule = "plugins"
users = ["admin"]
"#);
    assert_eq!(p.rules.len(), 14);
    assert_eq!(
        p.rules[13].check,
        Check::Capabilities {
            allowed: vec!["CAP_NET_ADMIN".into(), "CAP_NET_RAW".into()]
        }
    );
    assert_eq!(
        p.exceptions[0].scope,
        Scope::Capabilities(vec!["CAP_NET_ADMIN".into()])
    );
    assert_eq!(
        p.exceptions[1].scope,
        Scope::Paths(vec!["/etc/localtime".into()])
    );
    assert_eq!(p.exceptions[1].users, None);
    assert_eq!(p.exceptions[2].scope, Scope::All);
    assert!(matches!(
        p.source,
        Source::File {
            extends_baseline: true,
            ..
        }
    ));
}

#[test]
fn duplicate_keys_name_their_toml_path() {
    assert_eq!(
        err("[[rule]]\nname = \"a\"\ncheck = \"privileged\"\nname = \"b\"\nmessage = \"m\"\n"),
        "p.toml:4:1: rule[0].name: duplicate key"
    );
    assert_eq!(
        err("extends = \"baseline\"\nextends = \"baseline\"\n"),
        "p.toml:2:1: extends: duplicate key"
    );
    let e = err(
        "[[rule]]\nname=\"a\"\ncheck=\"privileged\"\nmessage=\"m\"\n[[rule]]\nname=\"b\"\ncheck=\"privileged\"\nmessage=\"m\"\nmessage=\"n\"\n",
    );
    assert_eq!(e, "p.toml:9:1: rule[1].message: duplicate key");
}

#[test]
fn unknown_keys_get_a_suggestion() {
    assert_eq!(
        err("[[rule]]\nname = \"a\"\nchek = \"privileged\"\nmessage = \"m\"\n"),
        "p.toml:1:1: rule[0].check: missing (required)"
    );
    assert_eq!(
        err("[[rule]]\nname = \"a\"\ncheck = \"privileged\"\nmessage = \"m\"\nmesage = \"x\"\n"),
        "p.toml:5:1: rule[0].mesage: unknown key (did you mean message?)"
    );
    assert_eq!(
        err("extnds = \"baseline\"\n"),
        "p.toml:1:1: extnds: unknown key (did you mean extends?)"
    );
    assert_eq!(
        err("[[rule]]\nname = \"a\"\ncheck = \"privileged\"\nmessage = \"m\"\npaths = [\"/x\"]\n"),
        "p.toml:5:1: rule[0].paths: check \"privileged\" takes no \"paths\" (only host-paths rules do)"
    );
    assert_eq!(
        err("extends = \"baseline\"\n[[exception]]\nrule = \"privileged\"\npaths = [\"/x\"]\n"),
        "p.toml:4:1: exception[0].paths: rule \"privileged\" (check privileged) takes no \"paths\" in exceptions"
    );
}

#[test]
fn bad_values_name_the_key_and_reason() {
    let rule = |body: &str| format!("[[rule]]\nname = \"r\"\nmessage = \"m\"\n{body}\n");
    assert_eq!(
        err(&rule("check = \"privilegd\"")),
        "p.toml:4:9: rule[0].check: unknown check \"privilegd\" (did you mean privileged?)"
    );
    assert_eq!(
        err(&rule("check = \"capabilities\"\nallowed = [\"SYS_AMDIN\"]")),
        "p.toml:5:12: rule[0].allowed[0]: unknown capability \"SYS_AMDIN\" (did you mean CAP_SYS_ADMIN?)"
    );
    assert_eq!(
        err(&rule(
            "check = \"host-namespaces\"\nnamespaces = [\"netwrk\"]"
        )),
        "p.toml:5:15: rule[0].namespaces[0]: unknown namespace \"netwrk\" (did you mean network?)"
    );
    assert_eq!(
        err(&rule("check = \"host-namespaces\"")),
        "p.toml:1:1: rule[0].namespaces: missing (required by this check)"
    );
    assert_eq!(
        err(&rule("check = \"host-paths\"\npaths = [\"etc\"]")),
        "p.toml:5:10: rule[0].paths[0]: \"etc\" is not an absolute path"
    );
    assert_eq!(
        err(&rule("check = \"host-paths\"\npaths = []")),
        "p.toml:5:9: rule[0].paths: must not be empty"
    );
    assert_eq!(
        err(&rule("check = 1")),
        "p.toml:4:9: rule[0].check: expected a string, found an integer"
    );
    assert_eq!(
        err("[rule]\nname = \"x\"\n"),
        "p.toml:1:1: rule: expected an array of tables ([[rule]]), found a table"
    );
    assert_eq!(
        err("extends = \"strict\"\n"),
        "p.toml:1:11: extends: unknown policy \"strict\": only \"baseline\" (the built-in one) can be extended"
    );
}

#[test]
fn names_users_and_references_are_checked() {
    let two = "[[rule]]\nname=\"a\"\ncheck=\"plugins\"\nmessage=\"m\"\n[[rule]]\nname=\"a\"\ncheck=\"privileged\"\nmessage=\"m\"\n";
    assert_eq!(
        err(two),
        "p.toml:6:6: rule[1].name: duplicate rule name \"a\""
    );
    assert_eq!(
        err("extends=\"baseline\"\n[[rule]]\nname=\"privileged\"\ncheck=\"privileged\"\nmessage=\"m\"\n"),
        "p.toml:3:6: rule[0].name: duplicate rule name \"privileged\" (a baseline rule)"
    );
    assert_eq!(
        err("[[rule]]\nname=\"Bad Name\"\ncheck=\"plugins\"\nmessage=\"m\"\n"),
        "p.toml:2:6: rule[0].name: \"Bad Name\" is not a valid rule name: use lower-case letters, digits and '-', at most 64 characters"
    );
    assert_eq!(
        err("[[rule]]\nname=\"request-body\"\ncheck=\"plugins\"\nmessage=\"m\"\n"),
        "p.toml:2:6: rule[0].name: \"request-body\" is reserved for the evaluator's own denials"
    );
    assert_eq!(
        err("extends=\"baseline\"\n[[exception]]\nrule=\"capabilites\"\n"),
        "p.toml:3:6: exception[0].rule: no rule named \"capabilites\" (did you mean capabilities?)"
    );
    assert_eq!(
        err("extends=\"baseline\"\n[[exception]]\nrule=\"plugins\"\nusers=[\"\"]\n"),
        "p.toml:4:8: exception[0].users[0]: an empty user name would match requests with no identity"
    );
    assert_eq!(
        err("extends=\"baseline\"\n[[exception]]\nrule=\"plugins\"\nusers=[]\n"),
        "p.toml:4:7: exception[0].users: must not be empty"
    );
}

#[test]
fn an_empty_policy_is_refused() {
    for text in ["", "# nothing\n", "[[exception]]\nrule = \"x\"\n"] {
        let e = err(text);
        assert!(
            e.contains("no rules") || e.contains("no rule named"),
            "{text:?}: {e}"
        );
    }
}

#[test]
fn syntax_errors_have_a_position() {
    assert_eq!(
        err("[[rule]\n"),
        "p.toml:1:8: (document): unclosed array table, expected `]`"
    );
}

#[test]
fn missing_file_means_baseline_only_for_load_or_baseline() {
    let dir = std::env::temp_dir().join(format!("moat-policy-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("absent.toml");
    assert_eq!(load_or_baseline(&missing).unwrap().source, Source::Baseline);
    assert_eq!(
        load_file(&missing).unwrap_err().to_string(),
        format!("{}: no such file", missing.display())
    );
    // A directory exists but cannot be read as a file: an error, not the
    // baseline.
    assert!(load_or_baseline(&dir).is_err());
    let f = dir.join("p.toml");
    std::fs::write(&f, "extends = \"baseline\"\n").unwrap();
    assert_eq!(load_or_baseline(&f).unwrap().rules.len(), 13);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_example_policy_file_parses() {
    let p = ok(include_str!("../../../policy.example.toml"));
    assert_eq!(p.rules.len(), 14);
    assert_eq!(p.rules[13].name, "no-secrets-mounts");
    assert_eq!(p.exceptions.len(), 3);
}
