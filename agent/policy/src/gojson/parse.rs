//! A JSON parser that keeps what Go's `encoding/json` needs and serde_json
//! throws away: every object member in order, duplicates included, and
//! strings decoded the way Go decodes them (each invalid UTF-8 byte and each
//! unpaired surrogate escape becomes U+FFFD).
//!
//! The grammar is Go's scanner's (RFC 8259, no extensions). Like
//! `json.Decoder.Decode`, which is how dockerd reads request bodies, only the
//! first value is read: bytes after it are ignored. Depth and node count are
//! bounded, and nesting is limited before it is recursed into, so no input
//! can exhaust the stack or memory.

use super::{Member, Value};

/// Deepest nesting accepted. Docker bodies are under 10 deep; Go allows
/// 10000, so a deeper body is refused here (and the request denied) rather
/// than read.
pub const MAX_DEPTH: usize = 128;

/// Most values (of any kind) one document may hold. A container create
/// body from the CLI has about 100; a 1 MiB body can hold 350,000. The cap
/// bounds the tree and everything derived from it (under 100 MiB for the
/// worst shape measured).
pub const MAX_NODES: usize = 200_000;

/// Why a document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON as Go's scanner accepts it.
    #[error("invalid JSON at byte {offset}: {reason}")]
    Syntax {
        /// Byte offset of the problem.
        offset: usize,
        /// What was wrong.
        reason: &'static str,
    },
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("JSON nested deeper than {MAX_DEPTH} levels at byte {offset}")]
    TooDeep {
        /// Byte offset of the opening bracket.
        offset: usize,
    },
    /// More than [`MAX_NODES`] values.
    #[error("JSON document has more than {MAX_NODES} values")]
    TooLarge,
}

/// Parses the first JSON value of `input`, ignoring anything after it.
pub fn parse(input: &[u8]) -> Result<Value, ParseError> {
    let mut p = Parser {
        s: input,
        i: 0,
        nodes: 0,
    };
    p.ws();
    if p.i >= p.s.len() {
        return Err(p.err("empty document"));
    }
    p.value(0)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    nodes: usize,
}

impl Parser<'_> {
    fn err(&self, reason: &'static str) -> ParseError {
        ParseError::Syntax {
            offset: self.i,
            reason,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn count(&mut self) -> Result<(), ParseError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(ParseError::TooLarge);
        }
        Ok(())
    }

    fn value(&mut self, depth: usize) -> Result<Value, ParseError> {
        self.count()?;
        match self.peek() {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => Ok(Value::String(self.string()?.into_boxed_str())),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal(b"true", Value::Bool(true)),
            Some(b'f') => self.literal(b"false", Value::Bool(false)),
            Some(b'n') => self.literal(b"null", Value::Null),
            Some(_) => Err(self.err("expected a value")),
            None => Err(self.err("unexpected end of input")),
        }
    }

    fn enter(&self, depth: usize) -> Result<usize, ParseError> {
        if depth >= MAX_DEPTH {
            return Err(ParseError::TooDeep { offset: self.i });
        }
        Ok(depth + 1)
    }

    fn object(&mut self, depth: usize) -> Result<Value, ParseError> {
        let depth = self.enter(depth)?;
        self.i += 1;
        let mut members = Vec::new();
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(Value::Object(members));
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(self.err("expected a string key"));
            }
            let key = self.string()?.into_boxed_str();
            self.ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected ':' after an object key"));
            }
            self.i += 1;
            self.ws();
            let value = self.value(depth)?;
            members.push(Member { key, value });
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Value::Object(members));
                }
                _ => return Err(self.err("expected ',' or '}' in an object")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, ParseError> {
        let depth = self.enter(depth)?;
        self.i += 1;
        let mut items = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.ws();
            items.push(self.value(depth)?);
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.err("expected ',' or ']' in an array")),
            }
        }
    }

    fn literal(&mut self, word: &'static [u8], v: Value) -> Result<Value, ParseError> {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(self.err("invalid literal"))
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    /// Keeps the literal as written: Go converts it per target type
    /// (`strconv.ParseInt` for int64 fields, which refuses `1.0` and `1e3`).
    fn number(&mut self) -> Result<Value, ParseError> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(self.err("invalid number: no digits after '.'"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(self.err("invalid number: no digits in the exponent"));
            }
        }
        // The scanned bytes are ASCII digits and signs.
        let text = String::from_utf8_lossy(&self.s[start..self.i]);
        Ok(Value::Number(text.into_owned().into_boxed_str()))
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        let h = self.s.get(at..at + 4)?;
        let mut v = 0u32;
        for &b in h {
            v = v * 16 + (b as char).to_digit(16)?;
        }
        Some(v)
    }

    /// Reads a string and decodes it as Go's `unquoteBytes` does.
    fn string(&mut self) -> Result<String, ParseError> {
        self.i += 1; // opening quote
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.err("unterminated string"));
            };
            match c {
                b'"' => {
                    self.i += 1;
                    return Ok(out);
                }
                0..=0x1f => return Err(self.err("control character in a string")),
                b'\\' => self.escape(&mut out)?,
                0x20..=0x7f => {
                    out.push(c as char);
                    self.i += 1;
                }
                _ => {
                    let (ch, size) = decode_rune(&self.s[self.i..]);
                    out.push(ch);
                    self.i += size;
                }
            }
        }
    }

    fn escape(&mut self, out: &mut String) -> Result<(), ParseError> {
        let Some(e) = self.s.get(self.i + 1).copied() else {
            return Err(self.err("unterminated escape"));
        };
        let simple = match e {
            b'"' => Some('"'),
            b'\\' => Some('\\'),
            b'/' => Some('/'),
            b'b' => Some('\u{8}'),
            b'f' => Some('\u{c}'),
            b'n' => Some('\n'),
            b'r' => Some('\r'),
            b't' => Some('\t'),
            b'u' => None,
            _ => return Err(self.err("invalid escape")),
        };
        if let Some(ch) = simple {
            out.push(ch);
            self.i += 2;
            return Ok(());
        }
        let Some(r) = self.hex4(self.i + 2) else {
            return Err(self.err("invalid \\u escape"));
        };
        self.i += 6;
        if (0xD800..0xE000).contains(&r) {
            // A pair is consumed only when it decodes; otherwise this half
            // becomes U+FFFD and the next escape is read on its own.
            if (0xD800..0xDC00).contains(&r)
                && self.s.get(self.i..self.i + 2) == Some(b"\\u".as_slice())
            {
                if let Some(lo) = self
                    .hex4(self.i + 2)
                    .filter(|v| (0xDC00..0xE000).contains(v))
                {
                    let cp = 0x10000 + ((r - 0xD800) << 10) + (lo - 0xDC00);
                    out.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
                    self.i += 6;
                    return Ok(());
                }
            }
            out.push('\u{FFFD}');
        } else {
            out.push(char::from_u32(r).unwrap_or('\u{FFFD}'));
        }
        Ok(())
    }
}

/// Go's `utf8.DecodeRune` on non-empty input whose first byte is not
/// ASCII: the rune and its length, or U+FFFD and length 1 when the bytes
/// are not valid UTF-8 (so each invalid byte becomes one U+FFFD).
fn decode_rune(s: &[u8]) -> (char, usize) {
    let n = match s[0] {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return ('\u{FFFD}', 1),
    };
    match s.get(..n).map(std::str::from_utf8) {
        Some(Ok(text)) => (text.chars().next().unwrap_or('\u{FFFD}'), n),
        _ => ('\u{FFFD}', 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &Value) -> &str {
        match v {
            Value::String(s) => s,
            other => panic!("not a string: {other:?}"),
        }
    }

    #[test]
    fn keeps_duplicate_members_in_order() {
        let v = parse(br#"{"a":1,"A":2,"a":null}"#).unwrap();
        let Value::Object(m) = v else { panic!() };
        let keys: Vec<&str> = m.iter().map(|m| &*m.key).collect();
        assert_eq!(keys, ["a", "A", "a"]);
        assert_eq!(m[2].value, Value::Null);
    }

    #[test]
    fn reads_only_the_first_value_like_json_decoder() {
        assert_eq!(
            parse(b" {} trailing garbage {").unwrap(),
            Value::Object(vec![])
        );
        assert!(parse(b"").is_err());
        assert!(parse(b"   ").is_err());
    }

    #[test]
    fn invalid_utf8_becomes_one_replacement_per_byte_as_in_go() {
        // E2 82 is a truncated 3-byte sequence: Go emits two U+FFFD (Rust's
        // from_utf8_lossy would emit one).
        let v = parse(b"\"a\xE2\x82b\xFF\xED\xA0\x80\"").unwrap();
        assert_eq!(s(&v), "a\u{FFFD}\u{FFFD}b\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}");
        let v = parse("\"\u{17F}\u{212A}\"".as_bytes()).unwrap();
        assert_eq!(s(&v), "\u{17F}\u{212A}");
    }

    #[test]
    fn surrogate_escapes_decode_as_in_go() {
        assert_eq!(s(&parse(br#""\ud83d\ude00""#).unwrap()), "\u{1F600}");
        assert_eq!(s(&parse(br#""\ud83dx""#).unwrap()), "\u{FFFD}x");
        // A high half followed by a non-low escape: FFFD, then the escape.
        assert_eq!(s(&parse(br#""\ud83d\u0041""#).unwrap()), "\u{FFFD}A");
        assert_eq!(s(&parse(br#""\ude00""#).unwrap()), "\u{FFFD}");
        assert_eq!(s(&parse(br#""\u017f""#).unwrap()), "\u{17F}");
    }

    #[test]
    fn refuses_what_go_refuses() {
        for bad in [
            &b"{\"a\":1,}"[..],
            b"[1,]",
            b"{'a':1}",
            b"{\"a\" 1}",
            b"[01]",
            b"1.",
            b"-",
            b"1e",
            b"\"\x01\"",
            b"\"\\x\"",
            b"\"\\'\"",
            b"tru",
            b"{\"a\":1",
            b"NaN",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse(b"-0.5e+3").unwrap(), Value::Number("-0.5e+3".into()));
        // json.Decoder stops after the first value: "01" is 0, then "1".
        assert_eq!(parse(b"01").unwrap(), Value::Number("0".into()));
    }

    #[test]
    fn depth_and_size_are_bounded_without_recursing_past_the_limit() {
        let deep = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(deep.as_bytes()).is_ok());
        let deeper = "[".repeat(100_000);
        assert!(matches!(
            parse(deeper.as_bytes()),
            Err(ParseError::TooDeep { .. })
        ));
        let wide = format!("[{}0]", "0,".repeat(MAX_NODES));
        assert_eq!(parse(wide.as_bytes()), Err(ParseError::TooLarge));
    }
}
