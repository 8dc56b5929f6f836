//! The recorded requests replayed through the fuzz target's invariants: no
//! panic, and every decision consistent. (Inputs saved from fuzzing are in
//! `tests/fuzz/regressions/authz_request/`, replayed by
//! `tests/tests/fuzz_regressions.rs`.)

use std::path::PathBuf;

fn replay(dir: &str) -> usize {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(dir);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            continue;
        }
        moat_policy::fuzzing::check(&std::fs::read(&path).unwrap());
        n += 1;
    }
    n
}

#[test]
fn recorded_requests_keep_the_fuzz_invariants() {
    let recorded = replay("requests");
    assert!(recorded >= 30, "only {recorded} recorded requests");
}

/// The largest bodies the daemon forwards (just under 1 MiB), shaped to
/// stress each decoder path, are decided quickly: the daemon waits for the
/// plugin without a timeout, so a quadratic path would stall the node. A
/// quadratic map merge took minutes on the first of these.
#[test]
fn worst_case_bodies_of_1_mib_are_decided_in_linear_time() {
    const MIB: usize = 1 << 20;
    let fill = |head: &str, item: &dyn Fn(usize) -> String, tail: &str| {
        let mut s = head.to_string();
        let mut i = 0;
        while s.len() + tail.len() < MIB - 64 {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&item(i));
            i += 1;
        }
        s.push_str(tail);
        s
    };
    let bodies = [
        (
            5u8,
            fill(r#"{"DriverOpts":{"#, &|i| format!(r#""k{i}":"v""#), "}}"),
        ),
        (
            0,
            fill(
                r#"{"HostConfig":{"Binds":["#,
                &|i| format!(r#""/srv/{i}:/m{i}""#),
                "]}}",
            ),
        ),
        (
            0,
            fill(
                r#"{"Image":"x","#,
                &|i| format!(r#""Privileged{i}":true"#),
                "}",
            ),
        ),
        (
            0,
            fill(
                r#"{"#,
                &|_| r#""HostConfig":{"Mounts":[{}]}"#.to_string(),
                "}",
            ),
        ),
        (
            0,
            fill(
                r#"{"HostConfig":{"Binds":["#,
                &|_| "null".to_string(),
                "]}}",
            ),
        ),
        (
            4,
            fill(
                r#"{"TaskTemplate":{"ContainerSpec":{"Mounts":["#,
                &|_| "{}".to_string(),
                "]}}}",
            ),
        ),
        (
            0,
            format!(r#"{{"Labels":{}{}}}"#, "[".repeat(120), "]".repeat(120)),
        ),
    ];
    for (sel, body) in &bodies {
        assert!(body.len() < MIB);
        let mut input = vec![*sel];
        input.extend_from_slice(body.as_bytes());
        let start = std::time::Instant::now();
        moat_policy::fuzzing::check(&input);
        let took = start.elapsed();
        assert!(
            took < std::time::Duration::from_secs(10),
            "{} took {took:?}",
            &body[..40]
        );
    }
}
