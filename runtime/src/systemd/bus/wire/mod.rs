//! The D-Bus wire format (little-endian): values, marshalling driven by
//! signatures, and messages with their header fields.
//!
//! Only what talking to systemd needs: every basic type but `d` and `h`,
//! arrays, structs, dict entries and variants. A received message is
//! decoded completely, so a malformed one is refused as a whole.

mod message;

pub use message::{Kind, Message, MAX_MESSAGE};

/// A D-Bus value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `y`
    Byte(u8),
    /// `b`
    Bool(bool),
    /// `n`
    I16(i16),
    /// `q`
    U16(u16),
    /// `i`
    I32(i32),
    /// `u`
    U32(u32),
    /// `x`
    I64(i64),
    /// `t`
    U64(u64),
    /// `s`
    Str(String),
    /// `o`
    Path(String),
    /// `g`
    Sig(String),
    /// `a<elem>`: the element signature is kept so that an empty array
    /// can be written.
    Array(String, Vec<Value>),
    /// `(...)`
    Struct(Vec<Value>),
    /// `{kv}` (only inside an array)
    Entry(Box<Value>, Box<Value>),
    /// `v`
    Variant(Box<Value>),
}

impl Value {
    /// The value's signature.
    pub fn signature(&self) -> String {
        match self {
            Value::Byte(_) => "y".into(),
            Value::Bool(_) => "b".into(),
            Value::I16(_) => "n".into(),
            Value::U16(_) => "q".into(),
            Value::I32(_) => "i".into(),
            Value::U32(_) => "u".into(),
            Value::I64(_) => "x".into(),
            Value::U64(_) => "t".into(),
            Value::Str(_) => "s".into(),
            Value::Path(_) => "o".into(),
            Value::Sig(_) => "g".into(),
            Value::Array(elem, _) => format!("a{elem}"),
            Value::Struct(fields) => {
                let inner: String = fields.iter().map(Value::signature).collect();
                format!("({inner})")
            }
            Value::Entry(k, v) => format!("{{{}{}}}", k.signature(), v.signature()),
            Value::Variant(_) => "v".into(),
        }
    }

    /// A variant holding `v`.
    pub fn variant(v: Value) -> Value {
        Value::Variant(Box::new(v))
    }

    /// The string of an `s`, `o` or `g`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) | Value::Path(s) | Value::Sig(s) => Some(s),
            _ => None,
        }
    }

    /// The number of an unsigned integer type (`y`, `q`, `u`, `t`).
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Byte(n) => Some(u64::from(*n)),
            Value::U16(n) => Some(u64::from(*n)),
            Value::U32(n) => Some(u64::from(*n)),
            Value::U64(n) => Some(*n),
            _ => None,
        }
    }

    /// The value inside a variant, or the value itself.
    pub fn unwrap_variant(&self) -> &Value {
        match self {
            Value::Variant(v) => v.unwrap_variant(),
            v => v,
        }
    }
}

/// Why bytes are not a valid D-Bus message or value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed D-Bus data: {0}")]
pub struct WireError(pub String);

fn bad<T>(why: impl Into<String>) -> Result<T, WireError> {
    Err(WireError(why.into()))
}

fn alignment(code: u8) -> usize {
    match code {
        b'y' | b'g' | b'v' => 1,
        b'n' | b'q' => 2,
        b'b' | b'i' | b'u' | b's' | b'o' | b'a' | b'h' => 4,
        _ => 8, // x t d ( {
    }
}

/// Writes values, padding as the format requires.
#[derive(Debug, Default)]
pub struct Writer {
    /// The bytes written so far.
    pub buf: Vec<u8>,
}

impl Writer {
    fn pad(&mut self, align: usize) {
        while !self.buf.len().is_multiple_of(align) {
            self.buf.push(0);
        }
    }

    fn put_u32(&mut self, n: u32) {
        self.pad(4);
        self.buf.extend_from_slice(&n.to_le_bytes());
    }

    fn put_string(&mut self, s: &str) {
        self.put_u32(s.len() as u32);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
    }

    /// Writes `v`.
    pub fn put(&mut self, v: &Value) {
        match v {
            Value::Byte(n) => self.buf.push(*n),
            Value::Bool(b) => self.put_u32(u32::from(*b)),
            Value::I16(n) => {
                self.pad(2);
                self.buf.extend_from_slice(&n.to_le_bytes());
            }
            Value::U16(n) => {
                self.pad(2);
                self.buf.extend_from_slice(&n.to_le_bytes());
            }
            Value::I32(n) => {
                self.pad(4);
                self.buf.extend_from_slice(&n.to_le_bytes());
            }
            Value::U32(n) => self.put_u32(*n),
            Value::I64(n) => {
                self.pad(8);
                self.buf.extend_from_slice(&n.to_le_bytes());
            }
            Value::U64(n) => {
                self.pad(8);
                self.buf.extend_from_slice(&n.to_le_bytes());
            }
            Value::Str(s) | Value::Path(s) => self.put_string(s),
            Value::Sig(s) => {
                self.buf.push(s.len() as u8);
                self.buf.extend_from_slice(s.as_bytes());
                self.buf.push(0);
            }
            Value::Array(elem, items) => {
                self.put_u32(0);
                let len_at = self.buf.len() - 4;
                // The length excludes the padding before the first element.
                self.pad(alignment(elem.as_bytes().first().copied().unwrap_or(b'y')));
                let start = self.buf.len();
                for item in items {
                    self.put(item);
                }
                let len = (self.buf.len() - start) as u32;
                self.buf[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
            }
            Value::Struct(fields) => {
                self.pad(8);
                for f in fields {
                    self.put(f);
                }
            }
            Value::Entry(k, v) => {
                self.pad(8);
                self.put(k);
                self.put(v);
            }
            Value::Variant(inner) => {
                self.put(&Value::Sig(inner.signature()));
                self.put(inner);
            }
        }
    }
}

/// Reads values of given signatures from a buffer whose offset 0 is
/// 8-aligned (the start of a message or of its body).
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Where alignment is counted from, in `buf`.
    base: usize,
    depth: usize,
}

/// How deep containers may nest (the specification's limit is 64).
const MAX_DEPTH: usize = 64;

impl<'a> Reader<'a> {
    /// A reader of `buf`, aligned as if `buf[0]` were at `base` modulo 8
    /// of the message.
    pub fn new(buf: &'a [u8], base: usize) -> Self {
        Reader {
            buf,
            pos: 0,
            base,
            depth: 0,
        }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    fn align(&mut self, align: usize) -> Result<(), WireError> {
        while !(self.base + self.pos).is_multiple_of(align) {
            match self.buf.get(self.pos) {
                Some(0) => self.pos += 1,
                Some(_) => return bad("non-zero padding"),
                None => return bad("truncated in padding"),
            }
        }
        Ok(())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return bad(format!(
                "truncated: {n} bytes wanted at offset {}",
                self.pos
            ));
        };
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        self.align(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn text(&mut self, len: usize) -> Result<String, WireError> {
        let bytes = self.take(len)?;
        if self.take(1)? != [0] {
            return bad("string not NUL-terminated");
        }
        match std::str::from_utf8(bytes) {
            Ok(s) if !s.contains('\0') => Ok(s.to_owned()),
            _ => bad("string is not valid UTF-8 without NUL"),
        }
    }

    /// Reads every value of `signature`, in order.
    pub fn read_all(&mut self, signature: &str) -> Result<Vec<Value>, WireError> {
        let mut out = Vec::new();
        let mut rest = signature;
        while !rest.is_empty() {
            let (one, tail) = split_first_type(rest)?;
            out.push(self.read(one)?);
            rest = tail;
        }
        Ok(out)
    }

    /// Reads one value of the single complete type `sig`.
    pub fn read(&mut self, sig: &str) -> Result<Value, WireError> {
        let code = *sig
            .as_bytes()
            .first()
            .ok_or(WireError("empty type".into()))?;
        Ok(match code {
            b'y' => Value::Byte(self.take(1)?[0]),
            b'b' => match u32::from_le_bytes(self.fixed()?) {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                n => return bad(format!("boolean {n}")),
            },
            b'n' => Value::I16(i16::from_le_bytes(self.fixed()?)),
            b'q' => Value::U16(u16::from_le_bytes(self.fixed()?)),
            b'i' => Value::I32(i32::from_le_bytes(self.fixed()?)),
            b'u' => Value::U32(u32::from_le_bytes(self.fixed()?)),
            b'h' => Value::U32(u32::from_le_bytes(self.fixed()?)),
            b'x' => Value::I64(i64::from_le_bytes(self.fixed()?)),
            b't' => Value::U64(u64::from_le_bytes(self.fixed()?)),
            b'd' => Value::U64(u64::from_le_bytes(self.fixed()?)),
            b's' | b'o' => {
                let len = u32::from_le_bytes(self.fixed()?) as usize;
                let s = self.text(len)?;
                if code == b's' {
                    Value::Str(s)
                } else {
                    Value::Path(s)
                }
            }
            b'g' => {
                let len = self.take(1)?[0] as usize;
                Value::Sig(self.text(len)?)
            }
            b'v' => {
                let Value::Sig(inner) = self.read("g")? else {
                    unreachable!("read(\"g\") returns a signature")
                };
                let (one, tail) = split_first_type(&inner)?;
                if !tail.is_empty() {
                    return bad(format!("variant signature {inner:?} is not one type"));
                }
                self.nest(|r| r.read(one))?.into_variant()
            }
            b'a' => {
                let len = u32::from_le_bytes(self.fixed()?) as usize;
                if len > 64 * 1024 * 1024 {
                    return bad(format!("array of {len} bytes"));
                }
                let elem = &sig[1..];
                self.align(alignment(elem.as_bytes()[0]))?;
                let end = self.pos + len;
                if end > self.buf.len() {
                    return bad("array runs past the message");
                }
                let mut items = Vec::new();
                while self.pos < end {
                    items.push(self.nest(|r| r.read(elem))?);
                }
                if self.pos != end {
                    return bad("array elements overrun its length");
                }
                Value::Array(elem.to_owned(), items)
            }
            b'(' => {
                self.align(8)?;
                let inner = &sig[1..sig.len() - 1];
                Value::Struct(self.nest(|r| r.read_all(inner))?)
            }
            b'{' => {
                self.align(8)?;
                let inner = &sig[1..sig.len() - 1];
                let (k, v) = split_first_type(inner)?;
                let key = self.read(k)?;
                let value = self.nest(|r| r.read(v))?;
                Value::Entry(Box::new(key), Box::new(value))
            }
            c => return bad(format!("type code {:?}", c as char)),
        })
    }

    fn nest<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, WireError>,
    ) -> Result<T, WireError> {
        if self.depth >= MAX_DEPTH {
            return bad("containers nested too deeply");
        }
        self.depth += 1;
        let r = f(self);
        self.depth -= 1;
        r
    }
}

impl Value {
    fn into_variant(self) -> Value {
        Value::Variant(Box::new(self))
    }
}

/// Splits the first complete type off `sig`.
pub fn split_first_type(sig: &str) -> Result<(&str, &str), WireError> {
    let b = sig.as_bytes();
    let end = type_end(b, 0, 0)?;
    Ok((&sig[..end], &sig[end..]))
}

fn type_end(b: &[u8], at: usize, depth: usize) -> Result<usize, WireError> {
    if depth > MAX_DEPTH {
        return bad("signature nested too deeply");
    }
    match b.get(at) {
        None => bad("incomplete signature"),
        Some(b'a') => type_end(b, at + 1, depth + 1),
        Some(open @ (b'(' | b'{')) => {
            let close = if *open == b'(' { b')' } else { b'}' };
            let mut i = at + 1;
            let mut n = 0;
            while b.get(i) != Some(&close) {
                i = type_end(b, i, depth + 1)?;
                n += 1;
            }
            if n == 0 || (*open == b'{' && n != 2) {
                return bad("empty struct or malformed dict entry in signature");
            }
            Ok(i + 1)
        }
        Some(c) if b"ybnqiuxtdsoghv".contains(c) => Ok(at + 1),
        Some(c) => bad(format!("type code {:?} in signature", *c as char)),
    }
}

#[cfg(test)]
mod tests;
