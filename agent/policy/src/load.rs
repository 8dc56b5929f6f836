//! Reading policy files (`/etc/moat/policy.toml`).
//!
//! A bad file is refused as a whole, with one line naming the file, the
//! position, the TOML key and the reason:
//! `/etc/moat/policy.toml:7:1: rule[1].chek: unknown key (did you mean check?)`.
//! Duplicate keys, unknown keys, wrong types, unknown checks, capabilities
//! and namespaces, relative paths, and exceptions naming no rule are all
//! refused: a typo silently ignored would leave a node less protected than
//! its operator believes. A file with no rules is refused too, so that an
//! empty or truncated file never means "allow everything".

use std::borrow::Cow;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::caps;
use crate::endpoint::clean;
use crate::findings::Namespace;
use crate::model::{Check, Exception, Policy, Rule, Scope, Source};
use crate::suggest::closest;

/// Where the node's policy lives.
pub const DEFAULT_POLICY_PATH: &str = "/etc/moat/policy.toml";

/// The built-in baseline, as a policy file (`moat policy show baseline`).
pub const BASELINE_TOML: &str = include_str!("baseline.toml");

/// A policy file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The file cannot be read.
    #[error("{}: {reason}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is not valid TOML, or a key is wrong.
    #[error("{}:{line}:{column}: {key}: {reason}", file.display())]
    Key {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The TOML path, e.g. `rule[1].check` (or `(document)`).
        key: String,
        /// Why.
        reason: String,
    },
}

/// The built-in baseline.
pub fn baseline() -> Policy {
    static BASELINE: OnceLock<Policy> = OnceLock::new();
    let mut p = BASELINE
        .get_or_init(|| {
            // The text is part of the program; a unit test parses it.
            parse(BASELINE_TOML, Path::new("(built-in baseline)"))
                .expect("the built-in baseline parses")
        })
        .clone();
    p.source = Source::Baseline;
    p
}

/// Loads `path`; a missing file means the built-in baseline. This is the
/// plugin's rule: the node is never without a policy. Any other failure
/// (unreadable, invalid) is an error, never the baseline.
pub fn load_or_baseline(path: &Path) -> Result<Policy, PolicyError> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(baseline()),
        _ => load_file(path),
    }
}

/// Loads a policy file.
pub fn load_file(path: &Path) -> Result<Policy, PolicyError> {
    let text = std::fs::read_to_string(path).map_err(|e| PolicyError::Read {
        file: path.to_owned(),
        reason: match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            _ => format!("cannot read: {e}"),
        },
    })?;
    parse(&text, path)
}

/// Parses the text of a policy file; `file` names it in errors.
pub fn parse(text: &str, file: &Path) -> Result<Policy, PolicyError> {
    let cx = Cx { text, file };
    let doc = DeTable::parse(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let message = e.message().trim().to_string();
        let key = if message == "duplicate key" {
            duplicate_path(text, &span)
        } else {
            None
        };
        cx.err(&span, &key.unwrap_or_else(|| "(document)".into()), message)
    })?;
    let root = doc.get_ref();
    cx.known_keys(root, "", &["extends", "rule", "exception"], |_| None)?;

    let mut rules = Vec::new();
    let extends_baseline = match root.get("extends") {
        None => false,
        Some(v) => {
            let s = cx.string(v, "extends")?;
            if s != "baseline" {
                return Err(cx.err(
                    &v.span(),
                    "extends",
                    format!(
                    "unknown policy {s:?}: only \"baseline\" (the built-in one) can be extended"
                ),
                ));
            }
            rules.extend(baseline().rules);
            true
        }
    };
    for (i, t) in cx.tables(root, "rule")?.into_iter().enumerate() {
        let rule = cx.rule(&t, &format!("rule[{i}]"))?;
        if let Some(prev) = rules.iter().find(|r: &&Rule| r.name == rule.name) {
            let origin = if extends_baseline && baseline().rules.contains(prev) {
                " (a baseline rule)"
            } else {
                ""
            };
            return Err(cx.err(
                &t.table.get("name").map_or(t.span.clone(), Spanned::span),
                &format!("rule[{i}].name"),
                format!("duplicate rule name {:?}{origin}", rule.name),
            ));
        }
        rules.push(rule);
    }
    let mut exceptions = Vec::new();
    for (i, t) in cx.tables(root, "exception")?.into_iter().enumerate() {
        exceptions.push(cx.exception(&t, &format!("exception[{i}]"), &rules)?);
    }
    if rules.is_empty() {
        return Err(cx.err(
            &(0..0),
            "rule",
            "the policy defines no rules: add [[rule]] tables or `extends = \"baseline\"` \
             (an empty policy would allow everything; delete the file to use the baseline)",
        ));
    }
    Ok(Policy {
        rules,
        exceptions,
        source: Source::File {
            path: file.to_owned(),
            extends_baseline,
        },
    })
}

type Table<'i> = DeTable<'i>;
type Value<'i> = Spanned<DeValue<'i>>;

/// A table with the span of its value.
#[derive(Clone)]
struct Tbl<'t, 'i> {
    table: &'t Table<'i>,
    span: Range<usize>,
}

struct Cx<'a> {
    text: &'a str,
    file: &'a Path,
}

fn kind(v: &DeValue) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// Members in document order (the map itself is sorted by name).
fn members<'t, 'i>(t: &'t Table<'i>) -> Vec<(&'t Spanned<Cow<'i, str>>, &'t Value<'i>)> {
    let mut m: Vec<_> = t.iter().collect();
    m.sort_by_key(|(k, _)| k.span().start);
    m
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl Cx<'_> {
    fn err(&self, span: &Range<usize>, key: &str, reason: impl Into<String>) -> PolicyError {
        let before = &self.text[..span.start.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        PolicyError::Key {
            file: self.file.to_owned(),
            line,
            column,
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    /// Refuses keys outside `allowed`; `elsewhere` explains a key that is
    /// valid in another kind of rule.
    fn known_keys(
        &self,
        t: &Table,
        path: &str,
        allowed: &[&str],
        elsewhere: impl Fn(&str) -> Option<String>,
    ) -> Result<(), PolicyError> {
        for (k, _) in members(t) {
            if allowed.contains(&k.get_ref().as_ref()) {
                continue;
            }
            let reason = elsewhere(k.get_ref()).unwrap_or_else(|| {
                match closest(k.get_ref(), allowed.iter().copied()) {
                    Some(s) => format!("unknown key (did you mean {s}?)"),
                    None => format!("unknown key (expected one of: {})", allowed.join(", ")),
                }
            });
            return Err(self.err(&k.span(), &join(path, k.get_ref()), reason));
        }
        Ok(())
    }

    fn string(&self, v: &Value, key: &str) -> Result<String, PolicyError> {
        match v.get_ref() {
            DeValue::String(s) => Ok(s.to_string()),
            other => Err(self.err(
                &v.span(),
                key,
                format!("expected a string, found {}", kind(other)),
            )),
        }
    }

    fn required(
        &self,
        t: &Tbl,
        path: &str,
        key: &str,
    ) -> Result<(String, Range<usize>), PolicyError> {
        match t.table.get(key) {
            Some(v) => Ok((self.string(v, &join(path, key))?, v.span())),
            None => Err(self.err(&t.span, &join(path, key), "missing (required)")),
        }
    }

    /// A non-empty array of strings, with each item's path and span.
    fn strings(
        &self,
        v: &Value,
        key: &str,
    ) -> Result<Vec<(String, String, Range<usize>)>, PolicyError> {
        let DeValue::Array(items) = v.get_ref() else {
            return Err(self.err(
                &v.span(),
                key,
                format!("expected an array of strings, found {}", kind(v.get_ref())),
            ));
        };
        if items.is_empty() {
            return Err(self.err(&v.span(), key, "must not be empty"));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let at = format!("{key}[{i}]");
                Ok((self.string(item, &at)?, at, item.span()))
            })
            .collect()
    }

    /// `[[name]]` tables.
    fn tables<'t, 'i>(
        &self,
        root: &'t Table<'i>,
        name: &str,
    ) -> Result<Vec<Tbl<'t, 'i>>, PolicyError> {
        let Some(v) = root.get(name) else {
            return Ok(Vec::new());
        };
        let DeValue::Array(items) = v.get_ref() else {
            return Err(self.err(
                &v.span(),
                name,
                format!(
                    "expected an array of tables ([[{name}]]), found {}",
                    kind(v.get_ref())
                ),
            ));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| match item.get_ref() {
                DeValue::Table(table) => Ok(Tbl {
                    table,
                    span: item.span(),
                }),
                other => Err(self.err(
                    &item.span(),
                    &format!("{name}[{i}]"),
                    format!("expected a table, found {}", kind(other)),
                )),
            })
            .collect()
    }

    fn rule(&self, t: &Tbl, path: &str) -> Result<Rule, PolicyError> {
        let (name, name_span) = self.required(t, path, "name")?;
        check_rule_name(&name).map_err(|r| self.err(&name_span, &join(path, "name"), r))?;
        let (check_name, check_span) = self.required(t, path, "check")?;
        let (message, message_span) = self.required(t, path, "message")?;
        if message.trim().is_empty() {
            return Err(self.err(&message_span, &join(path, "message"), "must not be empty"));
        }
        let param = param_key(&check_name);
        let mut allowed = vec!["name", "check", "message"];
        allowed.extend(param);
        self.known_keys(t.table, path, &allowed, |k| {
            Check::NAMES
                .iter()
                .find(|c| param_key(c) == Some(k))
                .map(|owner| format!("check {check_name:?} takes no {k:?} (only {owner} rules do)"))
        })?;
        let get = |k: &str| t.table.get(k);
        let check = match check_name.as_str() {
            "privileged" => Check::Privileged,
            "seccomp-unconfined" => Check::SeccompUnconfined,
            "apparmor-unconfined" => Check::ApparmorUnconfined,
            "selinux-disabled" => Check::SelinuxDisabled,
            "systempaths-unconfined" => Check::SystempathsUnconfined,
            "host-devices" => Check::HostDevices,
            "pids-unlimited" => Check::PidsUnlimited,
            "plugins" => Check::Plugins,
            "swarm-join" => Check::SwarmJoin,
            "capabilities" => Check::Capabilities {
                allowed: match get("allowed") {
                    Some(v) => self.caps(v, &join(path, "allowed"))?,
                    None => Vec::new(),
                },
            },
            "host-namespaces" => Check::HostNamespaces {
                namespaces: self.namespaces(
                    self.param(t, path, "namespaces")?,
                    &join(path, "namespaces"),
                )?,
            },
            "host-paths" => Check::HostPaths {
                paths: self.paths(self.param(t, path, "paths")?, &join(path, "paths"))?,
            },
            other => {
                let reason = match closest(other, Check::NAMES) {
                    Some(s) => format!("unknown check {other:?} (did you mean {s}?)"),
                    None => format!(
                        "unknown check {other:?} (expected one of: {})",
                        Check::NAMES.join(", ")
                    ),
                };
                return Err(self.err(&check_span, &join(path, "check"), reason));
            }
        };
        Ok(Rule {
            name,
            check,
            message,
        })
    }

    fn param<'v, 'i>(
        &self,
        t: &Tbl<'v, 'i>,
        path: &str,
        key: &str,
    ) -> Result<&'v Value<'i>, PolicyError> {
        t.table.get(key).ok_or_else(|| {
            self.err(
                &t.span,
                &join(path, key),
                "missing (required by this check)",
            )
        })
    }

    fn caps(&self, v: &Value, key: &str) -> Result<Vec<String>, PolicyError> {
        self.strings(v, key)?
            .into_iter()
            .map(|(s, at, span)| {
                caps::policy_name(&s).map_err(|sugg| {
                    let hint = sugg
                        .map(|s| format!(" (did you mean {s}?)"))
                        .unwrap_or_default();
                    self.err(&span, &at, format!("unknown capability {s:?}{hint}"))
                })
            })
            .collect()
    }

    fn namespaces(&self, v: &Value, key: &str) -> Result<Vec<Namespace>, PolicyError> {
        let names: Vec<&str> = Namespace::ALL.iter().map(|n| n.name()).collect();
        self.strings(v, key)?
            .into_iter()
            .map(|(s, at, span)| {
                Namespace::parse(&s).ok_or_else(|| {
                    let hint = closest(&s, names.iter().copied())
                        .map(|c| format!(" (did you mean {c}?)"))
                        .unwrap_or_else(|| format!(" (expected one of: {})", names.join(", ")));
                    self.err(&span, &at, format!("unknown namespace {s:?}{hint}"))
                })
            })
            .collect()
    }

    fn paths(&self, v: &Value, key: &str) -> Result<Vec<String>, PolicyError> {
        self.strings(v, key)?
            .into_iter()
            .map(|(s, at, span)| {
                if s.starts_with('/') {
                    Ok(clean(&s))
                } else {
                    Err(self.err(&span, &at, format!("{s:?} is not an absolute path")))
                }
            })
            .collect()
    }

    fn exception(&self, t: &Tbl, path: &str, rules: &[Rule]) -> Result<Exception, PolicyError> {
        let (name, name_span) = self.required(t, path, "rule")?;
        let Some(rule) = rules.iter().find(|r| r.name == name) else {
            let hint = closest(&name, rules.iter().map(|r| r.name.as_str()))
                .map(|s| format!(" (did you mean {s}?)"))
                .unwrap_or_default();
            return Err(self.err(
                &name_span,
                &join(path, "rule"),
                format!("no rule named {name:?}{hint}"),
            ));
        };
        let param = param_key(rule.check.name()).filter(|p| *p != "allowed");
        let scope_key = match param {
            Some("namespaces") => Some("namespaces"),
            Some("paths") => Some("paths"),
            _ if matches!(rule.check, Check::Capabilities { .. }) => Some("capabilities"),
            _ => None,
        };
        let mut allowed = vec!["rule", "users", "reason"];
        allowed.extend(scope_key);
        self.known_keys(t.table, path, &allowed, |k| {
            ["capabilities", "namespaces", "paths"]
                .contains(&k)
                .then(|| {
                    format!(
                        "rule {name:?} (check {}) takes no {k:?} in exceptions",
                        rule.check.name()
                    )
                })
        })?;
        let get = |k: &str| t.table.get(k);
        let users = match get("users") {
            None => None,
            Some(v) => Some(
                self.strings(v, &join(path, "users"))?
                    .into_iter()
                    .map(|(s, at, span)| {
                        if s.is_empty() {
                            Err(self.err(
                                &span,
                                &at,
                                "an empty user name would match requests with no identity",
                            ))
                        } else {
                            Ok(s)
                        }
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        let reason = get("reason")
            .map(|v| self.string(v, &join(path, "reason")))
            .transpose()?;
        let scope = match scope_key.and_then(|k| get(k).map(|v| (k, v))) {
            None => Scope::All,
            Some(("capabilities", v)) => {
                Scope::Capabilities(self.caps(v, &join(path, "capabilities"))?)
            }
            Some(("namespaces", v)) => {
                Scope::Namespaces(self.namespaces(v, &join(path, "namespaces"))?)
            }
            Some((_, v)) => Scope::Paths(self.paths(v, &join(path, "paths"))?),
        };
        Ok(Exception {
            rule: name,
            users,
            scope,
            reason,
        })
    }
}

mod names;

use names::{check_rule_name, duplicate_path, param_key};

#[cfg(test)]
mod tests;
