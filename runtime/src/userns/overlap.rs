//! Which host ids a new workload may take, given the running ones.
//!
//! Two workloads that share a host id can signal each other's processes
//! and own each other's files, whatever namespaces they are in. The rules:
//!
//! - An `--userns auto` range is its workload's own: `auto` never hands
//!   out ids a running workload holds (through a map, auto or explicit, or
//!   as the non-root `--user` of a workload without a user namespace), and
//!   neither an explicit map nor a host `--user` may take ids of a running
//!   auto range.
//! - Explicit maps are the operator's choice: the same map twice is a
//!   shared identity on purpose (two workloads writing one volume) and is
//!   allowed; a map that partly overlaps another running explicit map is
//!   almost certainly a mistake and is refused.
//! - The host ids of workloads without a user namespace are not checked
//!   against explicit maps or each other: they are host ids that any host
//!   process may have, and moat does not own them.
//!
//! Host uid and gid 0 are left out: a workload running as host root is not
//! confined by ids anyway.
//!
//! The caller holds the state lock, so the running set cannot change
//! between the check and the new workload's record.

use super::spec::{overlaps, IdMap};
use super::{UserNamespace, UsernsError};

/// A running workload's hold on host ids.
#[derive(Debug, Clone, Copy)]
pub struct Holder<'a> {
    /// Its name, for messages.
    pub name: &'a str,
    /// Its user namespace, if it has one.
    pub ns: Option<&'a UserNamespace>,
    /// Whether that namespace came from `--userns auto`.
    pub auto: bool,
    /// The uid it runs as (a host uid when it has no user namespace).
    pub uid: u32,
    /// The gid it runs as.
    pub gid: u32,
}

impl Holder<'_> {
    /// How the holder got its ids, for messages.
    fn describe(&self) -> String {
        match self.ns {
            Some(ns) if self.auto => format!("--userns auto, {}", list(&ns.uid_map)),
            Some(ns) => format!("--userns {}", list(&ns.uid_map)),
            None => format!("--user {}:{}", self.uid, self.gid),
        }
    }
}

fn list(maps: &[IdMap]) -> String {
    maps.iter()
        .map(IdMap::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The first pair of maps whose host ranges meet, as the shared host ids.
fn shared(a: &[IdMap], b: &[IdMap]) -> Option<(u64, u64)> {
    a.iter().find_map(|x| {
        b.iter().find_map(|y| {
            overlaps(
                u64::from(x.host_id),
                x.host_end(),
                u64::from(y.host_id),
                y.host_end(),
            )
            .then(|| {
                (
                    u64::from(x.host_id.max(y.host_id)),
                    x.host_end().min(y.host_end()) - 1,
                )
            })
        })
    })
}

fn overlap_err(asked: String, holder: &Holder<'_>, detail: String, advice: &str) -> UsernsError {
    UsernsError::Overlap {
        asked,
        workload: holder.name.to_owned(),
        held: holder.describe(),
        detail,
        advice: advice.to_owned(),
    }
}

/// Checks an explicit `--userns` map against the running workloads.
pub fn check_explicit(ns: &UserNamespace, holders: &[Holder<'_>]) -> Result<(), UsernsError> {
    let asked = format!("--userns {}", list(&ns.uid_map));
    for h in holders {
        let Some(theirs) = h.ns else { continue };
        if !h.auto && theirs == ns {
            continue;
        }
        for (side, mine, held) in [
            ("uids", &ns.uid_map, &theirs.uid_map),
            ("gids", &ns.gid_map, &theirs.gid_map),
        ] {
            if let Some((lo, hi)) = shared(mine, held) {
                let (detail, advice) = if h.auto {
                    (
                        format!("host {side} {lo}-{hi} are in its auto range"),
                        "an auto range belongs to its workload alone",
                    )
                } else {
                    (
                        format!("host {side} {lo}-{hi} are in its map, which is not the same"),
                        "give the same map to share its ids on purpose, or ids apart from it",
                    )
                };
                return Err(overlap_err(asked, h, detail, advice));
            }
        }
    }
    Ok(())
}

/// Checks the host uid and gid of a workload without a user namespace
/// against the running auto ranges.
pub fn check_host_ids(uid: u32, gid: u32, holders: &[Holder<'_>]) -> Result<(), UsernsError> {
    let asked = format!("--user {uid}:{gid}");
    for h in holders.iter().filter(|h| h.auto) {
        let Some(ns) = h.ns else { continue };
        for (side, id, map) in [("uid", uid, &ns.uid_map), ("gid", gid, &ns.gid_map)] {
            if id != 0 && map.iter().any(|m| m.host_overlaps(id, 1)) {
                return Err(overlap_err(
                    asked,
                    h,
                    format!("host {side} {id} is in its auto range"),
                    "an auto range belongs to its workload alone",
                ));
            }
        }
    }
    Ok(())
}

/// The host ids `--userns auto` must not hand out: every running map, and
/// the non-root host uid and gid of every workload without a user
/// namespace (as one-id maps).
pub fn taken(holders: &[Holder<'_>]) -> Vec<UserNamespace> {
    holders
        .iter()
        .map(|h| match h.ns {
            Some(ns) => ns.clone(),
            None => {
                let one = |id: u32| {
                    (id != 0)
                        .then_some(IdMap {
                            container_id: 0,
                            host_id: id,
                            size: 1,
                        })
                        .into_iter()
                        .collect()
                };
                UserNamespace {
                    uid_map: one(h.uid),
                    gid_map: one(h.gid),
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(host_id: u32, size: u32) -> UserNamespace {
        UserNamespace::from_maps(vec![IdMap {
            container_id: 0,
            host_id,
            size,
        }])
    }

    fn holder<'a>(name: &'a str, ns: Option<&'a UserNamespace>, auto: bool) -> Holder<'a> {
        Holder {
            name,
            ns,
            auto,
            uid: 0,
            gid: 0,
        }
    }

    #[test]
    fn explicit_maps_may_not_touch_an_auto_range() {
        let a = map(100_000, 65536);
        let hs = [holder("a", Some(&a), true)];
        let e = check_explicit(&map(165_535, 10), &hs)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--userns 0:165535:10 would share host ids with running workload \"a\""),
            "{e}"
        );
        assert!(e.contains("(--userns auto, 0:100000:65536)"), "{e}");
        assert!(
            e.contains("host uids 165535-165535 are in its auto range"),
            "{e}"
        );
        // Even the very same map: an auto range is not shared.
        assert!(check_explicit(&a, &hs).is_err());
        check_explicit(&map(165_536, 10), &hs).unwrap();
        check_explicit(&map(0, 100_000), &hs).unwrap();
        // The gid side counts on its own.
        let mut g = map(500_000, 10);
        g.gid_map[0].host_id = 100_005;
        let e = check_explicit(&g, &hs).unwrap_err().to_string();
        assert!(e.contains("host gids 100005-100014"), "{e}");
    }

    #[test]
    fn explicit_maps_repeat_but_do_not_partly_overlap() {
        let b = map(300_000, 1000);
        let hs = [holder("b", Some(&b), false)];
        check_explicit(&b, &hs).unwrap();
        let e = check_explicit(&map(300_500, 1000), &hs)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("running workload \"b\" (--userns 0:300000:1000)"),
            "{e}"
        );
        assert!(
            e.contains("host uids 300500-300999 are in its map, which is not the same"),
            "{e}"
        );
        assert!(e.contains("give the same map"), "{e}");
        // Host-namespace workloads are not checked against explicit maps.
        let h = Holder {
            uid: 300_100,
            gid: 300_100,
            ..holder("h", None, false)
        };
        check_explicit(&map(300_000, 1000), &[h]).unwrap();
    }

    #[test]
    fn host_ids_may_not_be_in_an_auto_range() {
        let a = map(100_000, 65536);
        let hs = [holder("a", Some(&a), true), holder("b", Some(&a), false)];
        let e = check_host_ids(100_000, 1000, &hs).unwrap_err().to_string();
        assert!(
            e.starts_with("--user 100000:1000 would share host ids"),
            "{e}"
        );
        assert!(e.contains("host uid 100000 is in its auto range"), "{e}");
        let e = check_host_ids(1000, 165_535, &hs).unwrap_err().to_string();
        assert!(e.contains("host gid 165535"), "{e}");
        check_host_ids(165_536, 99_999, &hs).unwrap();
        check_host_ids(0, 0, &hs).unwrap();
        // Only auto ranges: the explicit holder "b" has the same map.
        check_host_ids(100_000, 0, &hs[1..]).unwrap();
    }

    #[test]
    fn auto_avoids_every_map_and_non_root_host_ids() {
        let a = map(100_000, 65536);
        let b = map(200_000, 10);
        let hs = [
            holder("a", Some(&a), true),
            holder("b", Some(&b), false),
            Holder {
                uid: 300_000,
                gid: 0,
                ..holder("h", None, false)
            },
            holder("root", None, false),
        ];
        let t = taken(&hs);
        assert_eq!(t.len(), 4);
        assert_eq!(t[0], a);
        assert_eq!(t[1], b);
        assert_eq!(t[2].uid_map, map(300_000, 1).uid_map);
        assert!(t[2].gid_map.is_empty());
        assert!(t[3].uid_map.is_empty() && t[3].gid_map.is_empty());
    }
}
