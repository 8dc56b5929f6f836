//! Go's `base64.StdEncoding` decoding, which is how `[]byte` fields travel in
//! JSON (the AuthZ request's bodies and certificates, swarm seccomp
//! profiles): the standard alphabet, `=` padding required, `\r` and `\n`
//! skipped anywhere.

/// Input that is not standard padded base64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal base64 data at input byte {offset}")]
pub struct Base64Error {
    /// Offset of the first offending character (in the input without
    /// line breaks, as Go reports it).
    pub offset: usize,
}

fn sextet(c: u8) -> Option<u32> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    } as u32)
}

/// Decodes standard padded base64.
pub fn decode(text: &str) -> Result<Vec<u8>, Base64Error> {
    let s: Vec<u8> = text
        .bytes()
        .filter(|b| *b != b'\r' && *b != b'\n')
        .collect();
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for (q, quad) in s.chunks(4).enumerate() {
        let at = q * 4;
        if quad.len() < 4 {
            return Err(Base64Error {
                offset: at + quad.len(),
            });
        }
        let pad = quad.iter().rev().take_while(|b| **b == b'=').count();
        let last = at + 4 == s.len();
        if pad > 2 || (pad > 0 && !last) {
            let first_pad = quad.iter().position(|b| *b == b'=').unwrap_or(0);
            return Err(Base64Error {
                offset: at + first_pad,
            });
        }
        let mut n = 0u32;
        for (i, &c) in quad[..4 - pad].iter().enumerate() {
            let v = sextet(c).ok_or(Base64Error { offset: at + i })?;
            n = n << 6 | v;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Ok(out)
}

/// Encodes as standard padded base64 (what Go's encoder writes).
pub fn encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_padded_standard_base64_and_skips_newlines() {
        assert_eq!(decode("").unwrap(), b"");
        assert_eq!(decode("eyJ9").unwrap(), b"{\"}");
        assert_eq!(decode("e30=").unwrap(), b"{}");
        assert_eq!(decode("ew==").unwrap(), b"{");
        assert_eq!(decode("e3\r\n0=").unwrap(), b"{}");
        assert_eq!(decode("+/+/").unwrap(), [0xfb, 0xff, 0xbf]);
    }

    #[test]
    fn encoding_round_trips() {
        for s in [&b""[..], b"{", b"{}", b"{\"}", b"\xff\x00\x10\x80"] {
            assert_eq!(decode(&encode(s)).unwrap(), s);
        }
        assert_eq!(encode(b"{}"), "e30=");
    }

    #[test]
    fn refuses_unpadded_url_safe_and_misplaced_padding() {
        assert!(decode("e30").is_err());
        assert!(decode("e30-").is_err());
        assert!(decode("e3_=").is_err());
        assert!(decode("ew==e30=").is_err());
        assert!(decode("e===").is_err());
        assert!(decode("=").is_err());
    }
}
