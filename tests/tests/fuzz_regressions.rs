//! Replays every committed fuzz input (`tests/fuzz/regressions/<target>/`)
//! through the entry point the fuzzer ran it on (`moat_tests::fuzz`): each
//! once crashed, hung or blew up a target, and each must now return.

use std::time::{Duration, Instant};

use moat_tests::fuzz::TARGETS;
use moat_tests::workspace_root;

/// What a regression input may take (the fuzzer's own timeout is 10 s).
const PER_INPUT: Duration = Duration::from_secs(10);

#[test]
fn every_committed_fuzz_input_runs_to_completion() {
    let mut replayed = 0;
    for (name, entry) in TARGETS {
        let dir = workspace_root().join("tests/fuzz/regressions").join(name);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (every target has a regressions dir)",
                dir.display()
            )
        });
        for e in entries {
            let path = e.unwrap().path();
            if path.file_name().is_some_and(|n| n == ".gitkeep") {
                continue;
            }
            let data = std::fs::read(&path).unwrap();
            let start = Instant::now();
            entry(&data);
            let took = start.elapsed();
            assert!(took < PER_INPUT, "{}: took {took:?}", path.display());
            replayed += 1;
        }
    }
    eprintln!("replayed {replayed} fuzz inputs");
}

/// The targets listed in the shared registry are the ones cargo-fuzz builds.
#[test]
fn every_target_has_a_fuzz_binary_and_a_regressions_dir() {
    let manifest = std::fs::read_to_string(workspace_root().join("tests/fuzz/Cargo.toml")).unwrap();
    for (name, _) in TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "tests/fuzz/Cargo.toml has no [[bin]] {name}"
        );
        let src = workspace_root().join(format!("tests/fuzz/fuzz_targets/{name}.rs"));
        let text = std::fs::read_to_string(&src).unwrap();
        assert!(
            text.contains(&format!("moat_tests::fuzz::{name}(")),
            "{}",
            src.display()
        );
        assert!(workspace_root()
            .join("tests/fuzz/regressions")
            .join(name)
            .is_dir());
    }
}
