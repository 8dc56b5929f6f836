//! Names and paths in policy files: rule names, the key a check takes, and
//! the TOML path of a duplicate key.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

use super::{join, Table};
use crate::eval::RESERVED_RULE_NAMES;

/// The key a check takes a list from, if any.
pub(super) fn param_key(check: &str) -> Option<&'static str> {
    match check {
        "capabilities" => Some("allowed"),
        "host-namespaces" => Some("namespaces"),
        "host-paths" => Some("paths"),
        _ => None,
    }
}

/// Rule names: lower-case letters, digits and `-`, starting with a letter
/// or digit, at most 64 characters, and not a name the evaluator reports
/// on its own.
pub(super) fn check_rule_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if !ok {
        return Err(format!(
            "{name:?} is not a valid rule name: use lower-case letters, digits and '-', \
             at most 64 characters"
        ));
    }
    if RESERVED_RULE_NAMES.contains(&name) {
        return Err(format!(
            "{name:?} is reserved for the evaluator's own denials"
        ));
    }
    Ok(())
}

/// The TOML path of a duplicate key, found from the document as far as it
/// parses: the latest earlier key with the same name.
pub(super) fn duplicate_path(text: &str, span: &Range<usize>) -> Option<String> {
    let name = text
        .get(span.clone())?
        .trim()
        .trim_matches(|c| c == '"' || c == '\'');
    let (doc, _) = DeTable::parse_recoverable(text);
    let mut best: Option<(usize, String)> = None;
    let mut visit = |start: usize, path: &str, key: &str| {
        if key == name && start < span.start && best.as_ref().is_none_or(|(s, _)| start > *s) {
            best = Some((start, path.to_string()));
        }
    };
    walk(doc.get_ref(), "", &mut visit);
    best.map(|(_, p)| p)
}

fn walk(t: &Table, path: &str, visit: &mut impl FnMut(usize, &str, &str)) {
    for (k, v) in t {
        let p = join(path, k.get_ref());
        visit(k.span().start, &p, k.get_ref());
        walk_value(v.get_ref(), &p, visit);
    }
}

fn walk_value(v: &DeValue, path: &str, visit: &mut impl FnMut(usize, &str, &str)) {
    match v {
        DeValue::Table(t) => walk(t, path, visit),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk_value(item.get_ref(), &format!("{path}[{i}]"), visit);
            }
        }
        _ => {}
    }
}
