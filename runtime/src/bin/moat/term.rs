//! The one escaping function for text the CLI prints: every field that comes
//! from a workload, a cgroup, moatd or a state file goes through [`escape`]
//! before it reaches the terminal (see `moat_api::text` for why).

use std::borrow::Cow;

use moat_api::text::is_unsafe;

/// `text` with each character that must not reach a terminal raw written as
/// an escape (`\x1b`, `\u{202e}`), and backslashes doubled so that an escape
/// cannot be forged; `text` itself when it has none.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c == '\\' || is_unsafe(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe(c) && u32::from(c) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", u32::from(c)));
            }
            c if is_unsafe(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_acts_on_a_terminal() {
        assert_eq!(escape("build"), "build");
        assert!(matches!(escape("web-1.service"), Cow::Borrowed(_)));
        assert_eq!(escape("a\u{1b}[2Jb"), "a\\x1b[2Jb");
        assert_eq!(escape("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(escape("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(escape("tab\there"), "tab\\there");
        // A literal backslash cannot pose as an escape.
        assert_eq!(escape("\\x1b"), "\\\\x1b");
        assert_eq!(escape("é漢"), "é漢");
    }
}
