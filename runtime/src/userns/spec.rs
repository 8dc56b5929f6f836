//! The `--userns` value and the id-map lines it stands for.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::UsernsError;

/// The most lines the kernel accepts in one `uid_map`/`gid_map`
/// (`UID_GID_MAP_MAX_EXTENTS`, since Linux 4.15).
pub const MAX_MAP_ENTRIES: usize = 340;

/// One line of `/proc/PID/uid_map` (or `gid_map`): `size` consecutive ids
/// starting at `container_id` inside the namespace are `host_id...` outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdMap {
    /// First id inside the namespace.
    pub container_id: u32,
    /// First id on the host (in the parent namespace).
    pub host_id: u32,
    /// Number of ids mapped.
    pub size: u32,
}

impl IdMap {
    /// One past the last host id, widened so that it cannot overflow.
    pub fn host_end(&self) -> u64 {
        u64::from(self.host_id) + u64::from(self.size)
    }

    /// One past the last container id, widened so that it cannot overflow.
    pub fn container_end(&self) -> u64 {
        u64::from(self.container_id) + u64::from(self.size)
    }

    /// Whether the host range shares an id with `[start, start + size)`.
    pub fn host_overlaps(&self, start: u32, size: u32) -> bool {
        overlaps(
            u64::from(self.host_id),
            self.host_end(),
            u64::from(start),
            u64::from(start) + u64::from(size),
        )
    }
}

impl fmt::Display for IdMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.container_id, self.host_id, self.size)
    }
}

/// What `--userns` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsernsSpec {
    /// No user namespace: the workload shares the host's ids.
    Host,
    /// A free range allocated from the subordinate ids of user `moat`.
    Auto,
    /// These mappings, for both uids and gids.
    Maps(Vec<IdMap>),
}

impl fmt::Display for UsernsSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsernsSpec::Host => f.write_str("host"),
            UsernsSpec::Auto => f.write_str("auto"),
            UsernsSpec::Maps(maps) => {
                for (i, m) in maps.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{m}")?;
                }
                Ok(())
            }
        }
    }
}

impl FromStr for UsernsSpec {
    type Err = UsernsError;

    /// Parses `host`, `auto` or `CONTAINER:HOST:SIZE[,CONTAINER:HOST:SIZE...]`,
    /// refusing what the kernel would refuse when the map is written: empty
    /// or overflowing ranges, overlapping container or host ranges, and more
    /// than [`MAX_MAP_ENTRIES`] lines.
    fn from_str(s: &str) -> Result<UsernsSpec, UsernsError> {
        let value = s.trim();
        match value {
            "host" => return Ok(UsernsSpec::Host),
            "auto" => return Ok(UsernsSpec::Auto),
            "" => return Err(spec_err(s, "the value is empty")),
            _ => {}
        }
        if !value.contains(':') {
            // A word that is not a keyword: most likely a typo of one.
            let reason = match crate::suggest::closest(value, ["host", "auto"]) {
                Some(k) => format!("not a keyword or a mapping; did you mean {k:?}?"),
                None => "not \"host\", \"auto\" or a mapping".to_string(),
            };
            return Err(spec_err(value, &reason));
        }

        let pieces: Vec<&str> = value.split(',').map(str::trim).collect();
        if pieces.len() > MAX_MAP_ENTRIES {
            // The whole value would make an unreadable message; its start
            // is enough to recognise it.
            return Err(spec_err(
                &format!("{},...", pieces[0]),
                &format!(
                    "{} mappings given; the kernel accepts at most {MAX_MAP_ENTRIES}",
                    pieces.len()
                ),
            ));
        }
        let mut maps = Vec::with_capacity(pieces.len());
        for (i, piece) in pieces.iter().enumerate() {
            if piece.is_empty() {
                return Err(spec_err(
                    value,
                    &format!("mapping {} is empty (stray comma?)", i + 1),
                ));
            }
            maps.push(parse_map(piece)?);
        }

        validate_maps(&maps)?;
        Ok(UsernsSpec::Maps(maps))
    }
}

/// Checks a list of mappings as the kernel will when it is written to
/// `uid_map`/`gid_map`: 1 to [`MAX_MAP_ENTRIES`] lines, none empty, none
/// running past `u32::MAX`, and no two sharing a container id or a host id.
/// [`UsernsSpec::from_str`] checks this; the launcher checks again, since
/// a [`UsernsSpec::Maps`] can be built without parsing.
pub fn validate_maps(maps: &[IdMap]) -> Result<(), UsernsError> {
    let Some(first) = maps.first() else {
        return Err(spec_err("", "no mapping given"));
    };
    if maps.len() > MAX_MAP_ENTRIES {
        return Err(spec_err(
            &format!("{first},..."),
            &format!(
                "{} mappings given; the kernel accepts at most {MAX_MAP_ENTRIES}",
                maps.len()
            ),
        ));
    }
    for m in maps {
        check_map(m)?;
    }
    // The kernel refuses overlapping extents on either side; saying so
    // here names the two pieces instead of a bare EINVAL later.
    for (i, a) in maps.iter().enumerate() {
        for b in &maps[..i] {
            if overlaps(
                u64::from(a.container_id),
                a.container_end(),
                u64::from(b.container_id),
                b.container_end(),
            ) {
                return Err(spec_err(
                    &a.to_string(),
                    &format!("its container ids overlap those of {b}"),
                ));
            }
            if overlaps(
                u64::from(a.host_id),
                a.host_end(),
                u64::from(b.host_id),
                b.host_end(),
            ) {
                return Err(spec_err(
                    &a.to_string(),
                    &format!("its host ids overlap those of {b}"),
                ));
            }
        }
    }
    Ok(())
}

/// Checks one mapping: not empty, not past `u32::MAX` on either side.
fn check_map(map: &IdMap) -> Result<(), UsernsError> {
    let piece = map.to_string();
    if map.size == 0 {
        return Err(spec_err(&piece, "size must be at least 1"));
    }
    // The kernel computes first + count in 32 bits and refuses a wrap.
    if map.container_id.checked_add(map.size).is_none() {
        return Err(spec_err(
            &piece,
            &format!(
                "container ids {}+{} go past {}",
                map.container_id,
                map.size,
                u32::MAX
            ),
        ));
    }
    if map.host_id.checked_add(map.size).is_none() {
        return Err(spec_err(
            &piece,
            &format!("host ids {}+{} go past {}", map.host_id, map.size, u32::MAX),
        ));
    }
    Ok(())
}

/// Parses one `CONTAINER:HOST:SIZE`.
fn parse_map(piece: &str) -> Result<IdMap, UsernsError> {
    let fields: Vec<&str> = piece.split(':').collect();
    if fields.len() != 3 {
        return Err(spec_err(
            piece,
            &format!(
                "a mapping has 3 fields separated by ':', this one has {}",
                fields.len()
            ),
        ));
    }
    let number = |text: &str, what: &str| -> Result<u32, UsernsError> {
        text.trim().parse::<u32>().map_err(|_| {
            spec_err(
                piece,
                &format!("{what} {text:?} is not a number from 0 to {}", u32::MAX),
            )
        })
    };
    Ok(IdMap {
        container_id: number(fields[0], "container id")?,
        host_id: number(fields[1], "host id")?,
        size: number(fields[2], "size")?,
    })
}

/// The text to write to `/proc/PID/uid_map` (or `gid_map`): one
/// `container host size` line per mapping.
pub fn render_map(maps: &[IdMap]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size))
        .collect()
}

/// Whether half-open ranges `[a0, a1)` and `[b0, b1)` intersect.
pub(crate) fn overlaps(a0: u64, a1: u64, b0: u64, b1: u64) -> bool {
    a0 < b1 && b0 < a1
}

fn spec_err(piece: &str, reason: &str) -> UsernsError {
    UsernsError::Spec {
        piece: piece.to_string(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<UsernsSpec, UsernsError> {
        s.parse()
    }

    fn err(s: &str) -> String {
        match parse(s) {
            Ok(v) => panic!("{s:?} parsed as {v:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn m(container_id: u32, host_id: u32, size: u32) -> IdMap {
        IdMap {
            container_id,
            host_id,
            size,
        }
    }

    #[test]
    fn keywords() {
        assert_eq!(parse("host").unwrap(), UsernsSpec::Host);
        assert_eq!(parse("auto").unwrap(), UsernsSpec::Auto);
        assert_eq!(parse(" auto ").unwrap(), UsernsSpec::Auto);
    }

    #[test]
    fn one_and_several_maps() {
        assert_eq!(
            parse("0:100000:65536").unwrap(),
            UsernsSpec::Maps(vec![m(0, 100000, 65536)])
        );
        assert_eq!(
            parse("0:100000:65536,65536:300000:1000").unwrap(),
            UsernsSpec::Maps(vec![m(0, 100000, 65536), m(65536, 300000, 1000)])
        );
        // Spaces around pieces are tolerated (shell quoting habits).
        assert_eq!(
            parse("0:100000:1, 1:200000:1").unwrap(),
            UsernsSpec::Maps(vec![m(0, 100000, 1), m(1, 200000, 1)])
        );
    }

    #[test]
    fn display_round_trips() {
        for s in ["host", "auto", "0:100000:65536,65536:300000:1000"] {
            assert_eq!(parse(s).unwrap().to_string(), s);
        }
        assert_eq!(m(1, 2, 3).to_string(), "1:2:3");
    }

    #[test]
    fn empty_value() {
        let e = err("");
        assert!(e.contains("empty"), "{e}");
        assert!(e.contains("CONTAINER:HOST:SIZE"), "{e}");
    }

    #[test]
    fn unknown_word_suggests_keyword() {
        let e = err("hots");
        assert!(e.contains("\"hots\""), "{e}");
        assert!(e.contains("did you mean \"host\""), "{e}");
        let e = err("namespace");
        assert!(e.contains("not \"host\", \"auto\" or a mapping"), "{e}");
        assert!(e.contains("expected \"host\", \"auto\""), "{e}");
    }

    #[test]
    fn wrong_field_count() {
        let e = err("0:100000");
        assert!(e.contains("\"0:100000\""), "{e}");
        assert!(e.contains("3 fields"), "{e}");
        assert!(e.contains("has 2"), "{e}");
        let e = err("0:1:2:3");
        assert!(e.contains("has 4"), "{e}");
    }

    #[test]
    fn bad_numbers_name_the_field() {
        let e = err("x:100000:65536");
        assert!(e.contains("container id \"x\""), "{e}");
        let e = err("0:-1:65536");
        assert!(e.contains("host id \"-1\""), "{e}");
        let e = err("0:100000:4294967296");
        assert!(e.contains("size \"4294967296\""), "{e}");
        let e = err("0:100000:");
        assert!(e.contains("size \"\""), "{e}");
    }

    #[test]
    fn zero_size() {
        let e = err("0:100000:0");
        assert!(e.contains("\"0:100000:0\""), "{e}");
        assert!(e.contains("size must be at least 1"), "{e}");
    }

    #[test]
    fn overflow() {
        let e = err("4294967295:0:1");
        assert!(e.contains("container ids"), "{e}");
        let e = err("0:4294967000:1000");
        assert!(e.contains("host ids"), "{e}");
        // Exactly reaching u32::MAX is what the kernel still accepts.
        assert!(parse("0:4294901759:65536").is_ok());
    }

    #[test]
    fn stray_comma() {
        let e = err("0:100000:65536,");
        assert!(e.contains("mapping 2 is empty"), "{e}");
        let e = err(",0:100000:65536");
        assert!(e.contains("mapping 1 is empty"), "{e}");
    }

    #[test]
    fn overlapping_container_ranges() {
        let e = err("0:100000:65536,1000:300000:10");
        assert!(e.contains("\"1000:300000:10\""), "{e}");
        assert!(
            e.contains("container ids overlap those of 0:100000:65536"),
            "{e}"
        );
        // Adjacent is fine.
        assert!(parse("0:100000:10,10:300000:10").is_ok());
    }

    #[test]
    fn overlapping_host_ranges() {
        let e = err("0:100000:65536,70000:100010:10");
        assert!(
            e.contains("host ids overlap those of 0:100000:65536"),
            "{e}"
        );
        assert!(parse("0:100000:10,10:100010:10").is_ok());
    }

    #[test]
    fn entry_limit() {
        let ok: Vec<String> = (0..340u32)
            .map(|i| format!("{i}:{}:1", 100000 + i))
            .collect();
        assert!(parse(&ok.join(",")).is_ok());
        let too_many: Vec<String> = (0..341u32)
            .map(|i| format!("{i}:{}:1", 100000 + i))
            .collect();
        let e = err(&too_many.join(","));
        assert!(e.contains("341 mappings given"), "{e}");
        assert!(e.contains("at most 340"), "{e}");
    }

    #[test]
    fn maps_built_without_parsing_are_checked_the_same() {
        validate_maps(&[m(0, 100000, 65536)]).unwrap();
        let e = validate_maps(&[]).unwrap_err().to_string();
        assert!(e.contains("no mapping given"), "{e}");
        let e = validate_maps(&[m(0, 1, 0)]).unwrap_err().to_string();
        assert!(e.contains("size must be at least 1"), "{e}");
        let e = validate_maps(&[m(0, u32::MAX, 2)]).unwrap_err().to_string();
        assert!(e.contains("host ids 4294967295+2 go past"), "{e}");
        let e = validate_maps(&[m(0, 10, 5), m(5, 12, 5)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("its host ids overlap those of 0:10:5"), "{e}");
        let many: Vec<IdMap> = (0..341).map(|i| m(i, 100000 + i, 1)).collect();
        let e = validate_maps(&many).unwrap_err().to_string();
        assert!(e.contains("341 mappings given"), "{e}");
        validate_maps(&many[..340]).unwrap();
    }

    #[test]
    fn render() {
        assert_eq!(render_map(&[]), "");
        assert_eq!(
            render_map(&[m(0, 100000, 65536), m(65536, 300000, 1000)]),
            "0 100000 65536\n65536 300000 1000\n"
        );
    }

    #[test]
    fn host_overlap_helper() {
        let a = m(0, 100000, 65536);
        assert!(a.host_overlaps(165535, 1));
        assert!(!a.host_overlaps(165536, 1));
        assert!(!a.host_overlaps(34464, 65536));
        assert!(a.host_overlaps(34465, 65536));
    }
}
