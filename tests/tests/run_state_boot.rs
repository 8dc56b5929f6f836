//! `moat run` after a crash: records are written without fsync, so a crash
//! may leave one cut short; once the state directory's `boot_id` shows it
//! comes from an earlier boot, such a record is removed with a warning
//! instead of stopping every launch, while one of this boot still stops
//! them (it may stand for a running workload).

use moat_tests::runenv::{err, RunEnv};

fn this_boot() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn a_record_an_earlier_boot_left_cut_short_does_not_stop_launches() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("boot-crash") else {
        return;
    };
    // A first launch makes the state directory and marks this boot.
    let o = env.run(&["--", "true"]);
    assert!(o.status.success(), "{}", err(&o));
    let boot_id = env.state().join("boot_id");
    assert_eq!(
        std::fs::read_to_string(&boot_id).unwrap().trim(),
        this_boot()
    );
    let cut = env.state().join("workloads/web.json");

    // The same boot: a record moat cannot read stops the launch, named.
    std::fs::write(&cut, "{\"name\": \"web\", \"supervisor\": {\"pi").unwrap();
    let o = env.run(&["--", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", err(&o));
    assert!(err(&o).contains("web.json"), "{}", err(&o));
    assert!(cut.exists());

    // As after a crash: the state says it was written in another boot.
    std::fs::write(&boot_id, "00000000-1111-2222-3333-444444444444\n").unwrap();
    let o = env.run(&["--", "true"]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        err(&o).contains("web.json") && err(&o).contains("earlier boot"),
        "{}",
        err(&o)
    );
    assert!(!cut.exists());
    assert_eq!(
        std::fs::read_to_string(&boot_id).unwrap().trim(),
        this_boot()
    );
}
