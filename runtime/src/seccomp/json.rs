//! JSON text to a `serde_json::Value`, refusing duplicated object keys.
//!
//! serde_json keeps the last of two equal keys without a word, so
//! `{"defaultAction":"SCMP_ACT_ERRNO","defaultAction":"SCMP_ACT_ALLOW"}`
//! would be an allow-all profile. In a security policy a repeated key is a
//! typo or an attack: it is refused with its JSON path. Everything else
//! (syntax errors with line and column, the recursion limit) is
//! serde_json's own behaviour.

use std::cell::RefCell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why the text could not be read as JSON.
#[derive(Debug)]
pub enum JsonFault {
    /// A key appears twice in one object.
    DuplicateKey {
        /// JSON path of the repeated key, e.g. `syscalls[3].action`.
        path: String,
        /// 1-based line of the second occurrence.
        line: usize,
    },
    /// The text is not JSON.
    Syntax(serde_json::Error),
}

/// Parses `text`, refusing any object that repeats a key.
pub fn parse_strict(text: &str) -> Result<Value, JsonFault> {
    let dup = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    let seed = Node {
        path: &Path::Root,
        dup: &dup,
    };
    let parsed = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match (parsed, dup.into_inner()) {
        (Ok(v), _) => Ok(v),
        (Err(e), Some(path)) => Err(JsonFault::DuplicateKey {
            path,
            line: e.line(),
        }),
        (Err(e), None) => Err(JsonFault::Syntax(e)),
    }
}

/// The path to the value being read, as a linked list up the stack (no
/// allocation per value; the string is built only for an error).
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Key(Path::Root, k) => f.write_str(k),
            Path::Key(p, k) => write!(f, "{p}.{k}"),
            Path::Index(p, i) => write!(f, "{p}[{i}]"),
        }
    }
}

#[derive(Clone, Copy)]
struct Node<'a> {
    path: &'a Path<'a>,
    dup: &'a RefCell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let path = Path::Index(self.path, items.len());
            let seed = Node {
                path: &path,
                dup: self.dup,
            };
            match seq.next_element_seed(seed)? {
                Some(v) => items.push(v),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let path = Path::Key(self.path, &key);
            if map.contains_key(&key) {
                *self.dup.borrow_mut() = Some(path.to_string());
                return Err(A::Error::custom("duplicate key"));
            }
            let seed = Node {
                path: &path,
                dup: self.dup,
            };
            let v = access.next_value_seed(seed)?;
            map.insert(key, v);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dup_path(text: &str) -> (String, usize) {
        match parse_strict(text) {
            Err(JsonFault::DuplicateKey { path, line }) => (path, line),
            other => panic!("expected a duplicate key, got {other:?}"),
        }
    }

    #[test]
    fn duplicate_keys_are_found_anywhere_with_their_path() {
        assert_eq!(
            dup_path(r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultAction":"SCMP_ACT_ALLOW"}"#),
            ("defaultAction".into(), 1)
        );
        assert_eq!(
            dup_path("{\"syscalls\":[{},{},{},{\"names\":[],\n\"action\":1,\"action\":2}]}"),
            ("syscalls[3].action".into(), 2)
        );
        assert_eq!(
            dup_path(r#"{"a":[[{"b":{"c":1,"c":1}}]]}"#),
            ("a[0][0].b.c".into(), 1)
        );
    }

    #[test]
    fn the_same_key_in_different_objects_is_fine() {
        let v = parse_strict(r#"{"a":{"k":1},"b":{"k":2},"c":[{"k":3},{"k":4}]}"#).unwrap();
        assert_eq!(v["c"][1]["k"], 4);
    }

    #[test]
    fn values_equal_serde_json_for_valid_input() {
        let text = r#"{"n":-1,"u":18446744073709551615,"f":1.5,"s":"x\u00e9","b":true,"z":null,"a":[1,[2]]}"#;
        let ours = parse_strict(text).unwrap();
        let theirs: Value = serde_json::from_str(text).unwrap();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn syntax_errors_and_trailing_text_are_serde_json_errors() {
        for bad in ["{", "{} x", "[1,]", ""] {
            assert!(
                matches!(parse_strict(bad), Err(JsonFault::Syntax(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = "[".repeat(100_000);
        assert!(matches!(parse_strict(&deep), Err(JsonFault::Syntax(_))));
    }
}
