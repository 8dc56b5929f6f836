//! The uid and gid a workload runs as: checked before anything starts.
//!
//! `setresuid(2)` and `setresgid(2)` take `-1` (4294967295) as "leave this
//! id unchanged", so a workload asked to run as -1 would keep moat's uid or
//! gid 0. Inside a user namespace, an id its map leaves out does not exist:
//! the kernel refuses it, except -1, which again leaves moat's own id,
//! the host's root, in place. Both are refused here, before the name is
//! reserved or any cgroup or process exists; the child checks again what
//! it got ([`super::child`]).

use super::LaunchError;
use crate::userns::{IdMap, UserNamespace};

/// Checks that `uid` and `gid` are ids the workload can really have: not
/// -1, and mapped in `ns` (when it runs in a user namespace).
pub fn check(uid: u32, gid: u32, ns: Option<&UserNamespace>) -> Result<(), LaunchError> {
    let invalid = |reason: String| LaunchError::InvalidUser { uid, gid, reason };
    let sides = [
        ("uid", uid, ns.map(|n| n.uid_map.as_slice())),
        ("gid", gid, ns.map(|n| n.gid_map.as_slice())),
    ];
    for (what, id, map) in sides {
        if id == u32::MAX {
            return Err(invalid(format!(
                "{what} {id} is ({what}_t)-1, which set{}(2) takes as \"leave unchanged\": \
                 the workload would keep moat's {what} 0",
                if what == "uid" { "resuid" } else { "resgid" }
            )));
        }
        let Some(map) = map else { continue };
        let inside = |m: &IdMap| {
            u64::from(m.container_id) <= u64::from(id) && u64::from(id) < m.container_end()
        };
        if !map.iter().any(inside) {
            let lines: Vec<String> = map.iter().map(IdMap::to_string).collect();
            return Err(invalid(format!(
                "{what} {id} is not mapped in the workload's user namespace (its {what} map is \
                 {}, CONTAINER:HOST:SIZE)",
                lines.join(",")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(container_id: u32, size: u32) -> UserNamespace {
        UserNamespace::from_maps(vec![IdMap {
            container_id,
            host_id: 100_000,
            size,
        }])
    }

    fn refused(uid: u32, gid: u32, ns: Option<&UserNamespace>) -> String {
        check(uid, gid, ns).unwrap_err().to_string()
    }

    #[test]
    fn minus_one_is_refused_with_or_without_a_namespace() {
        let e = refused(u32::MAX, 0, None);
        assert!(
            e.starts_with("invalid --user 4294967295:0: uid 4294967295 is (uid_t)-1"),
            "{e}"
        );
        assert!(e.contains("setresuid(2)"), "{e}");
        let e = refused(1000, u32::MAX, None);
        assert!(
            e.contains("gid 4294967295 is (gid_t)-1, which setresgid(2)"),
            "{e}"
        );
        // Even where the map would cover it.
        let all = ns(0, u32::MAX);
        assert!(refused(u32::MAX, 0, Some(&all)).contains("(uid_t)-1"));
    }

    #[test]
    fn ids_must_be_inside_the_maps() {
        let n = ns(1000, 10);
        check(1000, 1009, Some(&n)).unwrap();
        let e = refused(999, 1000, Some(&n));
        assert!(e.contains("uid 999 is not mapped"), "{e}");
        assert!(e.contains("its uid map is 1000:100000:10"), "{e}");
        let e = refused(1000, 1010, Some(&n));
        assert!(e.contains("gid 1010 is not mapped"), "{e}");
        // uid and gid maps are checked each on its own side.
        let mut split = ns(0, 1);
        split.gid_map[0].container_id = 5;
        check(0, 5, Some(&split)).unwrap();
        assert!(refused(0, 0, Some(&split)).contains("gid 0 is not mapped"));
        // No namespace: any id but -1.
        check(0, 0, None).unwrap();
        check(u32::MAX - 1, u32::MAX - 1, None).unwrap();
    }
}
