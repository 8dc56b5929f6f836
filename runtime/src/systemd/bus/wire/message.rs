//! Messages: the header fields moat uses, and their encoding and decoding
//! around a body of [`Value`]s.

use std::fmt;

use super::{bad, Reader, Value, WireError, Writer};

/// The kind of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A method call.
    Call = 1,
    /// A method's reply.
    Return = 2,
    /// A method's error reply.
    Error = 3,
    /// A signal.
    Signal = 4,
}

/// A message: the header fields moat uses, and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its kind.
    pub kind: Kind,
    /// The sender's serial.
    pub serial: u32,
    /// `PATH`
    pub path: Option<String>,
    /// `INTERFACE`
    pub interface: Option<String>,
    /// `MEMBER`
    pub member: Option<String>,
    /// `ERROR_NAME`
    pub error_name: Option<String>,
    /// `REPLY_SERIAL`
    pub reply_serial: Option<u32>,
    /// `DESTINATION`
    pub destination: Option<String>,
    /// `SENDER`
    pub sender: Option<String>,
    /// The body.
    pub body: Vec<Value>,
}

/// The largest message accepted (the specification's maximum).
pub const MAX_MESSAGE: usize = 128 * 1024 * 1024;

impl Message {
    /// A method call.
    pub fn call(
        destination: Option<&str>,
        path: &str,
        interface: &str,
        member: &str,
        body: Vec<Value>,
    ) -> Message {
        Message {
            kind: Kind::Call,
            serial: 0,
            path: Some(path.to_owned()),
            interface: Some(interface.to_owned()),
            member: Some(member.to_owned()),
            error_name: None,
            reply_serial: None,
            destination: destination.map(str::to_owned),
            sender: None,
            body,
        }
    }

    /// The message as bytes, with `serial`.
    pub fn encode(&self, serial: u32) -> Vec<u8> {
        let mut body = Writer::default();
        for v in &self.body {
            body.put(v);
        }
        let signature: String = self.body.iter().map(Value::signature).collect();
        let mut fields = Vec::new();
        let mut field = |code: u8, v: Value| {
            fields.push(Value::Struct(vec![Value::Byte(code), Value::variant(v)]));
        };
        if let Some(p) = &self.path {
            field(1, Value::Path(p.clone()));
        }
        if let Some(i) = &self.interface {
            field(2, Value::Str(i.clone()));
        }
        if let Some(m) = &self.member {
            field(3, Value::Str(m.clone()));
        }
        if let Some(e) = &self.error_name {
            field(4, Value::Str(e.clone()));
        }
        if let Some(r) = self.reply_serial {
            field(5, Value::U32(r));
        }
        if let Some(d) = &self.destination {
            field(6, Value::Str(d.clone()));
        }
        if !signature.is_empty() {
            field(8, Value::Sig(signature));
        }
        let mut w = Writer::default();
        w.buf.extend_from_slice(&[b'l', self.kind as u8, 0, 1]);
        w.put(&Value::U32(body.buf.len() as u32));
        w.put(&Value::U32(serial));
        w.put(&Value::Array("(yv)".into(), fields));
        w.pad(8);
        w.buf.extend_from_slice(&body.buf);
        w.buf
    }

    /// How long the message starting with these 16 bytes is in all, or an
    /// error for a header moat cannot read.
    pub fn total_len(head: &[u8; 16]) -> Result<usize, WireError> {
        if head[0] != b'l' {
            return bad("not little-endian (systemd and dbus-daemon on this host write their own order; only 'l' is read)");
        }
        if head[3] != 1 {
            return bad(format!("protocol version {}", head[3]));
        }
        let body = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes")) as usize;
        let fields = u32::from_le_bytes(head[12..16].try_into().expect("4 bytes")) as usize;
        let header = (16 + fields).div_ceil(8) * 8;
        let total = header.saturating_add(body);
        if total > MAX_MESSAGE {
            return bad(format!("message of {total} bytes"));
        }
        Ok(total)
    }

    /// Decodes a whole message.
    pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
        let head: &[u8; 16] = bytes
            .get(..16)
            .and_then(|h| h.try_into().ok())
            .ok_or(WireError("shorter than a header".into()))?;
        let total = Message::total_len(head)?;
        if bytes.len() != total {
            return bad(format!("{} bytes for a message of {total}", bytes.len()));
        }
        let kind = match head[1] {
            1 => Kind::Call,
            2 => Kind::Return,
            3 => Kind::Error,
            4 => Kind::Signal,
            k => return bad(format!("message type {k}")),
        };
        let body_len = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes")) as usize;
        let mut r = Reader::new(bytes, 0);
        r.take(8)?;
        let serial = match r.read("u")? {
            Value::U32(s) => s,
            _ => unreachable!("read(\"u\") returns a u32"),
        };
        let Value::Array(_, fields) = r.read("a(yv)")? else {
            unreachable!("read(\"a(yv)\") returns an array")
        };
        r.align(8)?;
        let mut m = Message {
            kind,
            serial,
            path: None,
            interface: None,
            member: None,
            error_name: None,
            reply_serial: None,
            destination: None,
            sender: None,
            body: Vec::new(),
        };
        let mut signature = String::new();
        for f in fields {
            let Value::Struct(f) = f else { continue };
            let (Some(Value::Byte(code)), Some(v)) = (f.first(), f.get(1)) else {
                continue;
            };
            let v = v.unwrap_variant();
            let text = v.as_str().map(str::to_owned);
            match code {
                1 => m.path = text,
                2 => m.interface = text,
                3 => m.member = text,
                4 => m.error_name = text,
                5 => m.reply_serial = v.as_u64().map(|n| n as u32),
                6 => m.destination = text,
                7 => m.sender = text,
                8 => signature = text.unwrap_or_default(),
                _ => {}
            }
        }
        let body_start = r.position();
        if body_start + body_len != bytes.len() {
            return bad("body length does not match");
        }
        let mut body = Reader::new(&bytes[body_start..], 0);
        m.body = body.read_all(&signature)?;
        if body.position() != body_len {
            return bad(format!("body has bytes past its signature {signature:?}"));
        }
        Ok(m)
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} {}.{} on {}",
            self.kind,
            self.interface.as_deref().unwrap_or("?"),
            self.member.as_deref().unwrap_or("?"),
            self.path.as_deref().unwrap_or("?")
        )
    }
}
