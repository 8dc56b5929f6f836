//! Decoding struct fields from a [`Value`] tree exactly as Go's decoder
//! fills a struct (see the module documentation of [`super`]).
//!
//! Each accessor is named after the Go type of the field it reads, because
//! that type decides what a repeated key or a `null` does:
//! | accessor | Go type | `null` | repeated key |
//! | --- | --- | --- | --- |
//! | [`Obj::bool`], [`Obj::string`], [`Obj::i64`] | `bool`, `string`, `int64` | no effect | last non-null wins |
//! | [`Obj::ptr_i64`] | `*int64` | resets to nil | last wins |
//! | [`Obj::obj`] | struct | no effect | objects merge |
//! | [`Obj::ptr_obj`] | `*struct` | resets to nil | objects merge |
//! | [`Obj::strings`], [`Obj::objs`], [`Obj::bytes`] | `[]T` | resets to nil | element-wise into the existing slice |
//! | [`Obj::str_slice`] | `strslice.StrSlice` | resets to nil | replaced (its `UnmarshalJSON`) |
//! | [`Obj::string_map`] | `map[string]string` | resets to nil | entries merge, by exact key |

use std::collections::BTreeMap;

use super::{field_matches, Member, Value};
use crate::base64;

/// A field's value cannot be decoded into its Go type: the daemon refuses
/// the whole request, and the policy denies it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct DecodeError {
    /// Where, e.g. `HostConfig.Mounts[0].Type`.
    pub path: String,
    /// Why.
    pub reason: String,
}

fn type_error(path: &str, expected: &str, found: &Value) -> DecodeError {
    DecodeError {
        path: path.to_string(),
        reason: format!("expected {expected}, found {}", found.kind()),
    }
}

/// A Go struct as decoded from one or more JSON objects (in order).
#[derive(Debug, Clone, Default)]
pub struct Obj<'a> {
    parts: Vec<&'a [Member]>,
    path: String,
}

impl<'a> Obj<'a> {
    /// The top-level struct of a document. A top-level `null` decodes to
    /// the zero struct, as in Go.
    pub fn root(v: &'a Value) -> Result<Obj<'a>, DecodeError> {
        match v {
            Value::Object(m) => Ok(Obj {
                parts: vec![m],
                path: String::new(),
            }),
            Value::Null => Ok(Obj::default()),
            other => Err(type_error("(body)", "an object", other)),
        }
    }

    /// Where this struct is in the document (empty at the top).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The path of field `name` of this struct.
    pub fn field_path(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    /// Every value decoded into field `name`, in document order.
    fn values(&self, name: &'a str) -> impl Iterator<Item = &'a Value> + '_ {
        self.parts
            .iter()
            .flat_map(|p| p.iter())
            .filter(move |m| field_matches(name, &m.key))
            .map(|m| &m.value)
    }

    /// A `bool` field (false when absent).
    pub fn bool(&self, name: &'static str) -> Result<bool, DecodeError> {
        let mut out = false;
        for v in self.values(name) {
            match v {
                Value::Null => {}
                Value::Bool(b) => out = *b,
                other => return Err(type_error(&self.field_path(name), "a boolean", other)),
            }
        }
        Ok(out)
    }

    /// A `string` field (empty when absent).
    pub fn string(&self, name: &'static str) -> Result<String, DecodeError> {
        let mut out = String::new();
        for v in self.values(name) {
            scalar_string(&mut out, v, &|| self.field_path(name))?;
        }
        Ok(out)
    }

    /// An `int64` field (0 when absent).
    pub fn i64(&self, name: &'static str) -> Result<i64, DecodeError> {
        let mut out = 0;
        for v in self.values(name) {
            if !matches!(v, Value::Null) {
                out = parse_i64(v, &self.field_path(name))?;
            }
        }
        Ok(out)
    }

    /// An `*int64` field (`None` when absent or null).
    pub fn ptr_i64(&self, name: &'static str) -> Result<Option<i64>, DecodeError> {
        let mut out = None;
        for v in self.values(name) {
            out = match v {
                Value::Null => None,
                v => Some(parse_i64(v, &self.field_path(name))?),
            };
        }
        Ok(out)
    }

    /// A struct field (a value, not a pointer): always present.
    pub fn obj(&self, name: &'static str) -> Result<Obj<'a>, DecodeError> {
        let mut out = Obj {
            parts: Vec::new(),
            path: self.field_path(name),
        };
        for v in self.values(name) {
            match v {
                Value::Null => {}
                Value::Object(m) => out.parts.push(m),
                other => return Err(type_error(&out.path, "an object", other)),
            }
        }
        Ok(out)
    }

    /// A pointer-to-struct field (`None` when absent or null).
    pub fn ptr_obj(&self, name: &'static str) -> Result<Option<Obj<'a>>, DecodeError> {
        let path = self.field_path(name);
        let mut out: Option<Obj<'a>> = None;
        for v in self.values(name) {
            match v {
                Value::Null => out = None,
                Value::Object(m) => out
                    .get_or_insert_with(|| Obj {
                        parts: Vec::new(),
                        path: path.clone(),
                    })
                    .parts
                    .push(m),
                other => return Err(type_error(&path, "an object", other)),
            }
        }
        Ok(out)
    }

    /// A `[]string` field (`None` when nil, `Some(vec![])` when empty).
    pub fn strings(&self, name: &'static str) -> Result<Option<Vec<String>>, DecodeError> {
        self.slice(name, |e: &mut String, v, path| scalar_string(e, v, path))
    }

    /// A `[]T` field for a struct `T` (elements are values, not pointers).
    pub fn objs(&self, name: &'static str) -> Result<Option<Vec<Obj<'a>>>, DecodeError> {
        let path = self.field_path(name);
        let parts = self.slice(name, |e: &mut Vec<&'a [Member]>, v, p| match v {
            Value::Null => Ok(()),
            Value::Object(m) => {
                // Most elements get one object: no spare capacity for the
                // first (later ones grow the usual way, not one by one).
                if e.is_empty() {
                    e.reserve_exact(1);
                }
                e.push(m);
                Ok(())
            }
            other => Err(type_error(&p(), "an object", other)),
        })?;
        Ok(parts.map(|elems| {
            elems
                .into_iter()
                .enumerate()
                .map(|(i, parts)| Obj {
                    parts,
                    path: format!("{path}[{i}]"),
                })
                .collect()
        }))
    }

    /// A `[]byte` field, as base64 text (Go's standard padded encoding).
    /// Go would also take an array of numbers; nothing sends one, and
    /// reading it exactly would mean modelling the capacity Go gives a
    /// decoded string, so it is refused (and the request denied).
    pub fn bytes(&self, name: &'static str) -> Result<Option<Vec<u8>>, DecodeError> {
        let path = self.field_path(name);
        let mut out: Option<Vec<u8>> = None;
        for v in self.values(name) {
            out = match v {
                Value::Null => None,
                Value::String(s) => Some(base64::decode(s).map_err(|e| DecodeError {
                    path: path.clone(),
                    reason: e.to_string(),
                })?),
                other => return Err(type_error(&path, "a base64 string", other)),
            };
        }
        Ok(out)
    }

    /// A `strslice.StrSlice` field (`CapAdd`, `CapDrop`, `Cmd`): a string or
    /// an array of strings; its `UnmarshalJSON` replaces the whole value,
    /// and decodes a null element as "".
    pub fn str_slice(&self, name: &'static str) -> Result<Option<Vec<String>>, DecodeError> {
        let path = self.field_path(name);
        let mut out = None;
        for v in self.values(name) {
            out = match v {
                Value::Null => None,
                Value::String(s) => Some(vec![s.to_string()]),
                Value::Array(items) => Some(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| {
                            let mut s = String::new();
                            scalar_string(&mut s, item, &|| format!("{path}[{i}]")).map(|()| s)
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                ),
                other => return Err(type_error(&path, "a string or an array of strings", other)),
            };
        }
        Ok(out)
    }

    /// A `map[string]string` field, entries sorted by key. (A map, not a
    /// list: a body with many distinct keys must not cost quadratic time.)
    pub fn string_map(
        &self,
        name: &'static str,
    ) -> Result<Option<Vec<(String, String)>>, DecodeError> {
        let path = self.field_path(name);
        let mut out: Option<BTreeMap<&str, String>> = None;
        for v in self.values(name) {
            match v {
                Value::Null => out = None,
                Value::Object(members) => {
                    let map = out.get_or_insert_with(BTreeMap::new);
                    for m in members {
                        // Go decodes each entry into a zeroed element: null
                        // stores "".
                        let mut s = String::new();
                        scalar_string(&mut s, &m.value, &|| format!("{path}.{}", m.key))?;
                        map.insert(&m.key, s);
                    }
                }
                other => return Err(type_error(&path, "an object", other)),
            }
        }
        Ok(out.map(|m| m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
    }

    /// Go's decoding of every occurrence of a slice field: `null` makes it
    /// nil; an array is decoded element by element into the slice's existing
    /// backing array, growing it as `reflect` does (capacity ×1.5, at least
    /// 4, copying only the first `len` elements), then the length is cut to
    /// the array's; an empty array makes a new empty slice.
    fn slice<E: Clone + Default>(
        &self,
        name: &'static str,
        elem: impl Fn(&mut E, &'a Value, &dyn Fn() -> String) -> Result<(), DecodeError>,
    ) -> Result<Option<Vec<E>>, DecodeError> {
        let path = self.field_path(name);
        let mut backing: Vec<E> = Vec::new(); // its length is the Go capacity
        let mut len = 0;
        let mut non_nil = false;
        for v in self.values(name) {
            match v {
                Value::Null => {
                    backing.clear();
                    len = 0;
                    non_nil = false;
                }
                Value::Array(items) => {
                    non_nil = true;
                    for (i, item) in items.iter().enumerate() {
                        if i >= backing.len() {
                            // Go copies the first len elements to a new,
                            // zeroed array; nothing else refers to the old one.
                            let cap = backing.len();
                            backing.truncate(len);
                            backing.resize((cap + cap / 2).max(4), E::default());
                        }
                        len = len.max(i + 1);
                        elem(&mut backing[i], item, &|| format!("{path}[{i}]"))?;
                    }
                    len = len.min(items.len());
                    if items.is_empty() {
                        backing.clear();
                    }
                }
                other => return Err(type_error(&path, "an array", other)),
            }
        }
        backing.truncate(len);
        Ok(non_nil.then_some(backing))
    }
}

/// Decodes a string into `out` (null leaves it); `path` is built only for
/// an error, since this runs for every element of large arrays and maps.
fn scalar_string(
    out: &mut String,
    v: &Value,
    path: &dyn Fn() -> String,
) -> Result<(), DecodeError> {
    match v {
        Value::Null => Ok(()),
        Value::String(s) => {
            *out = s.to_string();
            Ok(())
        }
        other => Err(type_error(&path(), "a string", other)),
    }
}

/// Go's `strconv.ParseInt(literal, 10, 64)`: integers only, in range.
fn parse_i64(v: &Value, path: &str) -> Result<i64, DecodeError> {
    match v {
        Value::Number(n) => n.parse::<i64>().map_err(|_| DecodeError {
            path: path.to_string(),
            reason: format!("number {n} is not a 64-bit integer"),
        }),
        other => Err(type_error(path, "a number", other)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    fn with<T>(json: &str, f: impl FnOnce(Obj) -> T) -> T {
        let v = parse(json.as_bytes()).unwrap();
        f(Obj::root(&v).unwrap())
    }

    #[test]
    fn scalars_last_non_null_wins_and_keys_fold() {
        assert!(with(r#"{"Privileged":false,"privileged":true}"#, |o| o
            .bool("Privileged")
            .unwrap()));
        assert!(!with(r#"{"Privileged":true,"PRIVILEGED":false}"#, |o| o
            .bool("Privileged")
            .unwrap()));
        // null does not reset a bool or a string.
        assert!(with(r#"{"Privileged":true,"privileged":null}"#, |o| o
            .bool("Privileged")
            .unwrap()));
        assert_eq!(
            with(r#"{"NetworkMode":"host","networkmode":null}"#, |o| o
                .string("NetworkMode")
                .unwrap()),
            "host"
        );
    }

    #[test]
    fn pointers_reset_on_null_and_structs_merge() {
        assert_eq!(
            with(r#"{"PidsLimit":-1,"pidslimit":null}"#, |o| o
                .ptr_i64("PidsLimit")
                .unwrap()),
            None
        );
        // Two HostConfig objects merge into one struct.
        with(
            r#"{"HostConfig":{"Privileged":true},"hostconfig":{"CapAdd":"X"}}"#,
            |o| {
                let hc = o.ptr_obj("HostConfig").unwrap().unwrap();
                assert!(hc.bool("Privileged").unwrap());
                assert_eq!(hc.str_slice("CapAdd").unwrap(), Some(vec!["X".into()]));
            },
        );
        // null between them drops what came before.
        with(
            r#"{"HostConfig":{"Privileged":true},"HostConfig":null,"HostConfig":{}}"#,
            |o| {
                let hc = o.ptr_obj("HostConfig").unwrap().unwrap();
                assert!(!hc.bool("Privileged").unwrap());
            },
        );
    }

    #[test]
    fn slices_reuse_elements_as_go_does() {
        // A null element leaves the previous string in place.
        assert_eq!(
            with(r#"{"Binds":["/etc:/x"],"binds":[null]}"#, |o| o
                .strings("Binds")
                .unwrap()),
            Some(vec!["/etc:/x".to_string()])
        );
        // A shorter array cuts the length but not the capacity: a later,
        // longer array brings the old element back and merges into it.
        with(
            r#"{"Mounts":[{"Type":"bind","Source":"/"},{"Type":"bind","Source":"/etc"}],
                "Mounts":[{}],"Mounts":[{},{}]}"#,
            |o| {
                let m = o.objs("Mounts").unwrap().unwrap();
                assert_eq!(m.len(), 2);
                assert_eq!(m[1].string("Source").unwrap(), "/etc");
                assert_eq!(m[1].path(), "Mounts[1]");
            },
        );
        // Elements a longer array left within the capacity come back;
        // past the capacity (4 here) the grown array starts from zero.
        with(
            r#"{"S":["a","b","c","d"],"S":["x"],"S":[null,null,null,null,null]}"#,
            |o| {
                assert_eq!(
                    o.strings("S").unwrap(),
                    Some(
                        vec!["x", "b", "c", "d", ""]
                            .into_iter()
                            .map(String::from)
                            .collect()
                    )
                );
            },
        );
        // [] is an empty, non-nil slice; null is nil.
        assert_eq!(
            with(r#"{"MaskedPaths":["/proc/kcore"],"maskedpaths":[]}"#, |o| o
                .strings("MaskedPaths")
                .unwrap()),
            Some(vec![])
        );
        assert_eq!(
            with(r#"{"MaskedPaths":[],"maskedpaths":null}"#, |o| o
                .strings("MaskedPaths")
                .unwrap()),
            None
        );
    }

    #[test]
    fn strslice_accepts_a_string_and_replaces_wholly() {
        assert_eq!(
            with(r#"{"CapAdd":"sys_admin"}"#, |o| o
                .str_slice("CapAdd")
                .unwrap()),
            Some(vec!["sys_admin".to_string()])
        );
        assert_eq!(
            with(r#"{"CapAdd":["A","B"],"capadd":[null]}"#, |o| o
                .str_slice("CapAdd")
                .unwrap()),
            Some(vec![String::new()])
        );
    }

    #[test]
    fn maps_merge_by_exact_key_and_null_entries_are_empty() {
        assert_eq!(
            with(
                r#"{"O":{"o":"bind","device":"/etc"},"o":{"o":null,"O":"x"}}"#,
                |o| o.string_map("O").unwrap()
            ),
            Some(vec![
                ("O".into(), "x".into()),
                ("device".into(), "/etc".into()),
                ("o".into(), String::new()),
            ])
        );
    }

    #[test]
    fn wrong_types_and_numbers_are_errors_with_a_path() {
        let e = with(r#"{"HostConfig":{"Privileged":"true"}}"#, |o| {
            o.ptr_obj("HostConfig")
                .unwrap()
                .unwrap()
                .bool("Privileged")
                .unwrap_err()
        });
        assert_eq!(
            e.to_string(),
            "HostConfig.Privileged: expected a boolean, found a string"
        );
        for n in ["1.0", "1e2", "9223372036854775808"] {
            let json = format!(r#"{{"PidsLimit":{n}}}"#);
            assert!(with(&json, |o| o.ptr_i64("PidsLimit").is_err()), "{n}");
        }
        assert_eq!(
            with(r#"{"PidsLimit":-0}"#, |o| o.ptr_i64("PidsLimit").unwrap()),
            Some(0)
        );
        let v = parse(b"[]").unwrap();
        assert!(Obj::root(&v).is_err());
    }

    #[test]
    fn bytes_are_base64() {
        assert_eq!(
            with(r#"{"P":"e30="}"#, |o| o.bytes("P").unwrap()),
            Some(b"{}".to_vec())
        );
        assert!(with(r#"{"P":[123,125]}"#, |o| o.bytes("P").is_err()));
        assert!(with(r#"{"P":"e30"}"#, |o| o.bytes("P").is_err()));
    }
}
