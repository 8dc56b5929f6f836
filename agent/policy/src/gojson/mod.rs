//! Reading a Docker API body the way the daemon reads it: Go's
//! `encoding/json` (Go 1.19 in Debian's docker.io 20.10.24) decoding into
//! the daemon's structs.
//!
//! A policy that decodes bodies any other way can be told one thing while
//! the daemon does another. What Go does, and this module reproduces:
//! - object keys match struct fields case-insensitively, with Unicode simple
//!   folding: `privileged`, `PRIVILEGED` and `ſecurityOpt` (U+017F) all
//!   reach their field, as does U+212A KELVIN SIGN for `k` ([`field_matches`]);
//! - every occurrence of a key is decoded, in order, into the same field:
//!   the last scalar wins, but `null` leaves a bool, string or number as it
//!   was, resets a pointer, slice or map, and objects decoded into the same
//!   struct *merge*;
//! - a JSON array is decoded into the existing slice element by element, so
//!   elements are merged with what was there (and, within the capacity Go
//!   allocated, with elements a longer earlier array left behind);
//! - unknown keys are ignored; a value of the wrong type fails the whole
//!   request (the daemon answers 400), so it is reported as an error here;
//! - invalid UTF-8 in strings becomes U+FFFD, byte by byte.
//!
//! [`parse`] builds a tree that keeps every member; [`Obj`] decodes fields
//! from it with the rules above.

mod parse;
mod view;

pub use parse::{parse, ParseError, MAX_DEPTH, MAX_NODES};
pub use view::{DecodeError, Obj};

/// A JSON value with every object member kept, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as written (Go parses it according to the field's type).
    Number(Box<str>),
    /// A string, decoded as Go decodes it.
    String(Box<str>),
    /// An array.
    Array(Vec<Value>),
    /// An object: members in order, duplicates kept.
    Object(Vec<Member>),
}

/// One `"key": value` member of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The key, decoded as Go decodes strings.
    pub key: Box<str>,
    /// The value.
    pub value: Value,
}

impl Value {
    /// What kind of JSON value this is, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }
}

/// Whether JSON object key `key` selects the Go struct field whose JSON name
/// is `field` (ASCII, as every Docker API field name is).
///
/// This is `bytes.EqualFold` restricted to an ASCII `field`, which is what
/// every Go version's decoder computes for such names: ASCII letters match
/// either case, other ASCII bytes match exactly, and the only non-ASCII
/// runes in the simple-fold orbit of an ASCII letter are U+017F LATIN SMALL
/// LETTER LONG S (orbit of `s`) and U+212A KELVIN SIGN (orbit of `k`).
pub fn field_matches(field: &str, key: &str) -> bool {
    let mut f = field.bytes();
    for kc in key.chars() {
        let Some(fb) = f.next() else {
            return false;
        };
        let ok = match kc {
            '\u{17F}' => fb.eq_ignore_ascii_case(&b's'),
            '\u{212A}' => fb.eq_ignore_ascii_case(&b'k'),
            c if c.is_ascii() => (c as u8).eq_ignore_ascii_case(&fb),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    f.next().is_none()
}

/// Go's `strings.ToUpper` where it matters for names the daemon compares
/// with ASCII constants (capabilities): ASCII letters, and the two
/// non-ASCII runes whose simple upper-case mapping is ASCII, U+0131
/// DOTLESS I (`I`) and U+017F LONG S (`S`). Any other rune stays non-ASCII
/// under Go's mapping, so it can never produce a known ASCII name; it is
/// kept as it is.
pub fn go_upper_ascii(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\u{131}' => 'I',
            '\u{17F}' => 'S',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_matches_go_equal_fold_for_ascii_field_names() {
        assert!(field_matches("Privileged", "privileged"));
        assert!(field_matches("Privileged", "PRIVILEGED"));
        assert!(field_matches("SecurityOpt", "\u{17F}ecurityOpt"));
        assert!(field_matches("SecurityOpt", "SECURITYOPT"));
        assert!(field_matches("Kind", "\u{212A}ind"));
        assert!(field_matches("CapAdd", "capadd"));
        // No other fold reaches ASCII: dotless i, fullwidth, Turkish İ.
        assert!(!field_matches("Privileged", "Pr\u{131}vileged"));
        assert!(!field_matches("Privileged", "\u{FF30}rivileged"));
        assert!(!field_matches("Privileged", "Privileged "));
        assert!(!field_matches("Privileged", "Privilege"));
        // Long s folds to s only, Kelvin to k only.
        assert!(!field_matches("Kind", "\u{17F}ind"));
        assert!(!field_matches("Sid", "\u{212A}id"));
        // Non-letters match exactly.
        assert!(field_matches("Ipv4", "IPV4"));
        assert!(!field_matches("A_B", "A-B"));
        // Only 0x41/0x61 mask to 'A': '@' and '`' do not.
        assert!(!field_matches("A", "@"));
        assert!(!field_matches("A", "`"));
    }

    #[test]
    fn upper_case_follows_go_for_capability_names() {
        assert_eq!(go_upper_ascii("sys_admin"), "SYS_ADMIN");
        assert_eq!(go_upper_ascii("\u{17F}ys_admin"), "SYS_ADMIN");
        assert_eq!(go_upper_ascii("net_adm\u{131}n"), "NET_ADMIN");
        // Kelvin sign is already upper case: it stays, and matches nothing.
        assert_eq!(go_upper_ascii("\u{212A}ill"), "\u{212A}ILL");
        // Go's ToUpper is the simple mapping: ß stays ß.
        assert_eq!(go_upper_ascii("\u{DF}"), "\u{DF}");
    }
}
