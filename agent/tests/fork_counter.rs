//! The fork counter counts forks: load it through the library, fork, read it back.

mod common;

use std::process::Command;

use moat_agent::Programs;
use moat_common::process_counter;

const CHILDREN: u64 = 5;

#[test]
fn counts_forks_of_spawned_children() {
    skip_without_bpf!();

    let mut programs = Programs::load().expect("loading the embedded eBPF object");
    programs
        .attach_fork_counter()
        .expect("attaching the fork counter");
    assert!(programs.fork_counter_attached());
    let before = programs.process_counts().expect("reading counters");

    for _ in 0..CHILDREN {
        let status = Command::new("/bin/true")
            .status()
            .expect("spawning /bin/true");
        assert!(status.success());
    }

    let after = programs.process_counts().expect("reading counters");
    // Other processes on the node fork too, so only a lower bound holds.
    assert!(
        after.forks() >= CHILDREN,
        "counter summed over CPUs is {} after {CHILDREN} spawns",
        after.forks()
    );
    let delta = after.since(&before).forks();
    assert!(
        delta >= CHILDREN,
        "counter grew by {delta} across {CHILDREN} spawns"
    );
    assert_eq!(after.get(process_counter::FORK), Some(after.forks()));
}

#[test]
fn attaching_twice_is_harmless() {
    skip_without_bpf!();

    let mut programs = Programs::load().expect("loading the embedded eBPF object");
    programs.attach_fork_counter().expect("first attach");
    programs.attach_fork_counter().expect("second attach");
    let status = Command::new("/bin/true")
        .status()
        .expect("spawning /bin/true");
    assert!(status.success());
    assert!(programs.process_counts().expect("reading counters").forks() >= 1);
}

#[test]
fn counters_are_zero_until_attached() {
    skip_without_bpf!();

    let programs = Programs::load().expect("loading the embedded eBPF object");
    let status = Command::new("/bin/true")
        .status()
        .expect("spawning /bin/true");
    assert!(status.success());
    // Each load creates fresh maps, so nothing counts before the program is attached.
    assert_eq!(
        programs.process_counts().expect("reading counters").forks(),
        0
    );
}
