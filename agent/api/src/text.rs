//! Text that reaches an operator's terminal: which characters must never get
//! there raw, and how JSON lines are kept free of them.
//!
//! Workload names come from cgroup names, process names from `comm`, and both
//! are chosen by whoever runs the workload: an escape sequence in one could
//! rewrite the operator's terminal (clear it, move the cursor, set its title,
//! write to the clipboard), and bidirectional-override characters could make a
//! line read other than it is. The `moat` CLI escapes every field it prints
//! with [`is_unsafe`]; moatd writes its audit lines with
//! [`escape_unsafe_in_json`], so that even the raw lines (`moat events --json`)
//! carry none of them (JSON decoders read the same strings).

use std::borrow::Cow;

/// Whether `c` must not reach a terminal as it is: a control character (C0,
/// DEL, C1, which include ESC and the 8-bit CSI), or a format character that
/// reorders or hides text (bidirectional marks, embeddings, overrides and
/// isolates; zero-width characters; line and paragraph separators).
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

/// `line` (JSON text) with no character [`is_unsafe`] left raw but newlines:
/// inside strings each is written as a `\uXXXX` escape (the same character
/// once decoded); between tokens, where JSON allows only white space, a tab or
/// carriage return becomes a space (the same JSON). So the line decodes to the
/// same values.
pub fn escape_unsafe_in_json(line: &str) -> Cow<'_, str> {
    if !line.chars().any(|c| c != '\n' && is_unsafe(c)) {
        return Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 16);
    let (mut in_string, mut escaped) = (false, false);
    for c in line.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            } else if is_unsafe(c) {
                // All of them are in the Basic Multilingual Plane.
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
                continue;
            }
            out.push(c);
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if c != '\n' && is_unsafe(c) {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_characters() {
        for c in [
            '\u{1b}', '\u{7}', '\u{7f}', '\u{9b}', '\u{202e}', '\u{2066}', '\u{200b}',
        ] {
            assert!(is_unsafe(c), "{c:?}");
        }
        for c in ['a', ' ', 'é', '漢', '-', '\\', '"'] {
            assert!(!is_unsafe(c), "{c:?}");
        }
    }

    #[test]
    fn json_lines_keep_their_values() {
        let value = serde_json::json!({"workload": {"name": "a\u{9b}2J\u{202e}b\u{7f}"}});
        let line = serde_json::to_string(&value).unwrap();
        assert!(line.contains('\u{9b}'), "serde_json leaves C1 raw");
        let safe = escape_unsafe_in_json(&line);
        assert!(!safe.chars().any(is_unsafe), "{safe}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&safe).unwrap(),
            value
        );
        assert!(matches!(
            escape_unsafe_in_json("{\"a\":1}"),
            Cow::Borrowed(_)
        ));
    }
}
