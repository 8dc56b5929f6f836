//! `--userns auto`: a free range of host ids for each workload.
//!
//! The ids come from the subordinate ids delegated to user [`AUTO_USER`] in
//! `/etc/subuid` and `/etc/subgid` (the user need not exist: moat writes the
//! maps as root, so the files only serve as the administrator's record of
//! which host ids moat may hand out). Each workload gets [`AUTO_SIZE`] ids,
//! container ids `0..65536`, so that it can run a whole distribution's
//! users. The caller passes the ranges of the other running workloads and
//! must hold the state lock so that two allocations cannot pick the same
//! slot.

use std::path::Path;

use super::spec::IdMap;
use super::subid::{read_entries, read_subid, SubIdRange};
use super::{UserNamespace, UsernsError};

/// How many ids a workload gets with `--userns auto`.
pub const AUTO_SIZE: u32 = 65536;

/// The user whose subordinate ids `--userns auto` allocates from.
pub const AUTO_USER: &str = "moat";

/// Where a suggested subordinate range starts when the file has none
/// (shadow-utils' `SUB_UID_MIN`).
const SUGGESTED_START: u32 = 100_000;

/// How many ids to suggest: room for 100 workloads.
const SUGGESTED_COUNT: u32 = 100 * AUTO_SIZE;

/// Chooses, for `--userns auto`, a 65536-wide uid range and gid range inside
/// the subuid/subgid ranges of user `moat`, not overlapping any range in
/// `in_use` (the ranges of other running workloads). Picks the lowest free
/// 65536-aligned-within-the-subid-range slot, for uids and gids
/// independently.
///
/// Errors: no entries for `moat` in a file (or no file) →
/// [`UsernsError::NoSubIds`] with a line to add; entries too small for one
/// workload → [`UsernsError::RangesTooSmall`]; every slot used →
/// [`UsernsError::Exhausted`].
pub fn allocate(
    subuid: &Path,
    subgid: &Path,
    in_use: &[UserNamespace],
) -> Result<UserNamespace, UsernsError> {
    let used_uids: Vec<&IdMap> = in_use.iter().flat_map(|ns| &ns.uid_map).collect();
    let used_gids: Vec<&IdMap> = in_use.iter().flat_map(|ns| &ns.gid_map).collect();
    let uid = pick(subuid, &used_uids, in_use.len())?;
    let gid = pick(subgid, &used_gids, in_use.len())?;
    // Container ids 0..AUTO_SIZE, on the slot chosen for each.
    let map = |host_id| {
        vec![IdMap {
            container_id: 0,
            host_id,
            size: AUTO_SIZE,
        }]
    };
    Ok(UserNamespace {
        uid_map: map(uid),
        gid_map: map(gid),
    })
}

/// The lowest free slot in `file`'s ranges for [`AUTO_USER`].
fn pick(file: &Path, used: &[&IdMap], workloads: usize) -> Result<u32, UsernsError> {
    let ranges = match read_subid(file, AUTO_USER) {
        Ok(r) => r,
        // A missing file has the same remedy as an empty one.
        Err(UsernsError::Read { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    if ranges.is_empty() {
        return Err(UsernsError::NoSubIds {
            file: file.to_path_buf(),
            user: AUTO_USER.to_string(),
            line_to_add: suggested_line(file),
        });
    }

    let slots = slots(&ranges);
    if slots.is_empty() {
        return Err(UsernsError::RangesTooSmall {
            file: file.to_path_buf(),
            user: AUTO_USER.to_string(),
            largest: merge(&ranges)
                .iter()
                .map(|&(s, e)| e - s)
                .max()
                .unwrap_or(0),
        });
    }
    slots
        .iter()
        .copied()
        .find(|&slot| !used.iter().any(|m| m.host_overlaps(slot, AUTO_SIZE)))
        .ok_or_else(|| UsernsError::Exhausted {
            file: file.to_path_buf(),
            in_use: workloads,
            capacity: slots.len(),
        })
}

/// Every [`AUTO_SIZE`]-wide slot in `ranges`, lowest first. Slots are
/// aligned to the start of each range, after overlapping and adjacent
/// ranges are merged: the delegated ids are a set, and two adjacent lines
/// together can hold a slot that neither holds alone.
fn slots(ranges: &[SubIdRange]) -> Vec<u32> {
    let size = u64::from(AUTO_SIZE);
    let mut out = Vec::new();
    for (start, end) in merge(ranges) {
        let mut slot = start;
        while slot + size <= end {
            // end <= u32::MAX (checked when the file was read), so every
            // slot start fits in a u32.
            if let Ok(s) = u32::try_from(slot) {
                out.push(s);
            }
            slot += size;
        }
    }
    out
}

/// Sorted, merged `[start, end)` intervals covering `ranges`.
fn merge(ranges: &[SubIdRange]) -> Vec<(u64, u64)> {
    let mut iv: Vec<(u64, u64)> = ranges
        .iter()
        .filter(|r| r.count > 0)
        .map(|r| (u64::from(r.start), r.end()))
        .collect();
    iv.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(iv.len());
    for (s, e) in iv {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
}

/// A line for [`AUTO_USER`] that does not overlap the other users' ranges
/// in `file`: after the highest range, on shadow-utils' 65536 grid from
/// 100000, so that it looks like what `useradd` would have written.
fn suggested_line(file: &Path) -> String {
    // An unreadable or malformed file gives no information; the default
    // suggestion is still the right shape.
    let highest_end = read_entries(file)
        .ok()
        .and_then(|entries| entries.iter().map(|e| e.range.end()).max())
        .unwrap_or(0);
    let base = u64::from(SUGGESTED_START);
    let size = u64::from(AUTO_SIZE);
    let start = if highest_end <= base {
        base
    } else {
        base + (highest_end - base).div_ceil(size) * size
    };
    let count = u64::from(SUGGESTED_COUNT);
    let fits = start + count <= u64::from(u32::MAX);
    let (start, count) = if fits {
        (start, count)
    } else {
        // No room above the other users: the administrator has to choose;
        // the default at least shows the format.
        (base, count)
    };
    format!("{AUTO_USER}:{start}:{count}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::userns::test_support::TempDir;

    const FILE: &str = "moat:100000:6553600\n";

    fn ns(uid: u32, gid: u32) -> UserNamespace {
        UserNamespace {
            uid_map: vec![IdMap {
                container_id: 0,
                host_id: uid,
                size: AUTO_SIZE,
            }],
            gid_map: vec![IdMap {
                container_id: 0,
                host_id: gid,
                size: AUTO_SIZE,
            }],
        }
    }

    fn alloc_with(
        subuid: &str,
        subgid: &str,
        in_use: &[UserNamespace],
    ) -> Result<UserNamespace, UsernsError> {
        let dir = TempDir::new("alloc");
        let u = dir.file("subuid", subuid);
        let g = dir.file("subgid", subgid);
        allocate(&u, &g, in_use)
    }

    fn alloc(in_use: &[UserNamespace]) -> UserNamespace {
        alloc_with(FILE, FILE, in_use).unwrap()
    }

    #[test]
    fn lowest_free_slot() {
        assert_eq!(alloc(&[]), ns(100000, 100000));
    }

    #[test]
    fn skips_slots_in_use() {
        assert_eq!(alloc(&[ns(100000, 100000)]), ns(165536, 165536));
        // A hole left by a finished workload is reused first.
        assert_eq!(
            alloc(&[ns(100000, 100000), ns(231072, 231072)]),
            ns(165536, 165536)
        );
    }

    #[test]
    fn uids_and_gids_are_chosen_independently() {
        assert_eq!(alloc(&[ns(100000, 165536)]), ns(165536, 100000));
    }

    #[test]
    fn explicit_maps_block_the_slots_they_touch() {
        // A `--userns 0:170000:1` workload sits inside the second slot.
        let explicit = UserNamespace::from_maps(vec![IdMap {
            container_id: 0,
            host_id: 170000,
            size: 1,
        }]);
        assert_eq!(alloc(&[ns(100000, 100000), explicit]), ns(231072, 231072));
        // Ranges outside the delegated ids do not matter.
        let outside = UserNamespace::from_maps(vec![IdMap {
            container_id: 0,
            host_id: 0,
            size: 100000,
        }]);
        assert_eq!(alloc(&[outside]), ns(100000, 100000));
    }

    #[test]
    fn slots_are_aligned_to_the_range_start() {
        let f = "moat:100005:200000\n";
        assert_eq!(alloc_with(f, f, &[]).unwrap(), ns(100005, 100005));
        let used = [ns(100005, 100005), ns(165541, 165541)];
        assert_eq!(alloc_with(f, f, &used).unwrap(), ns(231077, 231077));
        // 200000 ids hold three slots, not four.
        let used = [used[0].clone(), used[1].clone(), ns(231077, 231077)];
        match alloc_with(f, f, &used) {
            Err(UsernsError::Exhausted {
                capacity, in_use, ..
            }) => {
                assert_eq!(capacity, 3);
                assert_eq!(in_use, 3);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn several_ranges_lowest_first_other_users_ignored() {
        let f = "alice:100000:65536\nmoat:500000:65536\nmoat:300000:65536\n";
        assert_eq!(alloc_with(f, f, &[]).unwrap(), ns(300000, 300000));
        assert_eq!(
            alloc_with(f, f, &[ns(300000, 300000)]).unwrap(),
            ns(500000, 500000)
        );
    }

    #[test]
    fn adjacent_ranges_merge() {
        let f = "moat:100000:40000\nmoat:140000:40000\n";
        assert_eq!(alloc_with(f, f, &[]).unwrap(), ns(100000, 100000));
    }

    #[test]
    fn ranges_too_small() {
        let f = "moat:100000:1000\n";
        match alloc_with(f, FILE, &[]) {
            Err(e @ UsernsError::RangesTooSmall { .. }) => {
                let s = e.to_string();
                assert!(s.contains("1000"), "{s}");
                assert!(s.contains("65536"), "{s}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn exhaustion() {
        let f = "moat:100000:131072\n";
        let used = [ns(100000, 100000), ns(165536, 165536)];
        let e = alloc_with(f, f, &used).unwrap_err();
        match &e {
            UsernsError::Exhausted {
                file,
                in_use,
                capacity,
            } => {
                assert!(file.ends_with("subuid"), "{file:?}");
                assert_eq!((*in_use, *capacity), (2, 2));
            }
            other => panic!("{other:?}"),
        }
        let s = e.to_string();
        assert!(s.contains("all 2 ranges of 65536 ids"), "{s}");
        assert!(s.contains("2 running workloads"), "{s}");
        // Gids exhausted while uids are not: the gid file is named.
        let used = [ns(300000, 100000), ns(400000, 165536)];
        match alloc_with(FILE, f, &used) {
            Err(UsernsError::Exhausted { file, .. }) => assert!(file.ends_with("subgid")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_entries_names_file_and_line_to_add() {
        let dir = TempDir::new("alloc-none");
        let u = dir.file("subuid", "");
        let g = dir.file("subgid", FILE);
        let e = allocate(&u, &g, &[]).unwrap_err();
        match &e {
            UsernsError::NoSubIds {
                file, line_to_add, ..
            } => {
                assert_eq!(file, &u);
                assert_eq!(line_to_add, "moat:100000:6553600");
            }
            other => panic!("{other:?}"),
        }
        let s = e.to_string();
        assert!(s.contains(&u.display().to_string()), "{s}");
        assert!(s.contains("moat:100000:6553600"), "{s}");
        assert!(s.contains("add the line"), "{s}");
    }

    #[test]
    fn no_entries_in_subgid() {
        let dir = TempDir::new("alloc-nogid");
        let u = dir.file("subuid", FILE);
        let g = dir.file("subgid", "# nothing\n");
        match allocate(&u, &g, &[]) {
            Err(UsernsError::NoSubIds { file, .. }) => assert_eq!(file, g),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn missing_file_is_no_entries() {
        let dir = TempDir::new("alloc-missing");
        let u = dir.path().join("subuid");
        let g = dir.file("subgid", FILE);
        match allocate(&u, &g, &[]) {
            Err(UsernsError::NoSubIds {
                file, line_to_add, ..
            }) => {
                assert_eq!(file, u);
                assert_eq!(line_to_add, "moat:100000:6553600");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn suggested_line_avoids_other_users() {
        let dir = TempDir::new("alloc-suggest");
        let u = dir.file("subuid", "alice:100000:65536\nbob:165536:65536\n");
        let g = dir.file("subgid", FILE);
        match allocate(&u, &g, &[]) {
            Err(UsernsError::NoSubIds { line_to_add, .. }) => {
                assert_eq!(line_to_add, "moat:231072:6553600")
            }
            other => panic!("{other:?}"),
        }
        // An unaligned end is rounded up to the grid.
        let u = dir.file("subuid", "alice:100000:70000\n");
        match allocate(&u, &g, &[]) {
            Err(UsernsError::NoSubIds { line_to_add, .. }) => {
                assert_eq!(line_to_add, "moat:231072:6553600")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_file_is_an_error() {
        match alloc_with("moat:100000\n", FILE, &[]) {
            Err(UsernsError::SubIdLine { line, field, .. }) => {
                assert_eq!((line, field), (1, "line"))
            }
            other => panic!("{other:?}"),
        }
    }
}
