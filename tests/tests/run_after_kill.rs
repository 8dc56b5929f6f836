//! A `moat run` started right after another was SIGKILLed reclaims what the
//! killed one left: its init dies with it (PR_SET_PDEATHSIG, or the hung-up
//! life pipe when it had not run yet), but that takes a moment, and the next
//! launch waits for it rather than taking the record for a running
//! workload's and leaving it behind.

use std::process::Stdio;

use moat_tests::runenv::{err, RunEnv};

#[test]
fn the_launch_right_after_a_killed_one_reclaims_it() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("after-kill") else {
        return;
    };
    for round in 0..5 {
        let name = format!("victim{round}");
        let mut victim = env
            .run_cmd(&["--name", &name, "--", "sleep", "60"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        env.wait_started(&name);
        victim.kill().unwrap();
        victim.wait().unwrap();
        // At once: its init and the sleep are still being torn down.
        let o = env.run(&["--name", &format!("next{round}"), "--", "true"]);
        assert!(o.status.success(), "round {round}: {}", err(&o));
        assert_eq!(
            env.cgroups_under_parent(),
            Vec::<String>::new(),
            "round {round}: {}",
            err(&o)
        );
        assert_eq!(env.record_files(), Vec::<String>::new(), "round {round}");
    }
}
