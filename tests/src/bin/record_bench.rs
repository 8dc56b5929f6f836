//! Profile recording figures (issue 15), for `scripts/bench.sh --only record`:
//!
//! 1. What recording costs: a getppid loop and a fork/exec loop, each run
//!    under `moat run` with moatd attached, (a) with no recording anywhere on
//!    the node, (b) not recorded while another workload is (the per-cgroup
//!    lookup every task pays while any recording exists), and (c) recorded
//!    (`--record-profile`). Rounds alternate between the three; each round's
//!    loop times itself (ns per call, µs per fork+exec+wait); medians and
//!    ranges over the rounds.
//! 2. What a recorded profile allows for a few common commands (a busybox sh
//!    script, `python3 -c`, curl to a loopback server) against the syscalls
//!    Docker's default profile allows on x86_64 (moat's `default`, which
//!    decides every syscall as Docker's does).
//!
//! Writes Markdown on standard output and, with `--json FILE`, the figures.
//! Needs root and nothing else running that records.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Opts {
    moat: PathBuf,
    moatd: PathBuf,
    rounds: usize,
    calls: u64,
    forks: u64,
    json: Option<PathBuf>,
}

fn usage() -> ! {
    eprintln!(
        "usage: record_bench --moat PATH --moatd PATH [--rounds N] [--calls N] [--forks N] [--quick] [--json FILE]"
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // The workloads: this binary, re-executed.
    if args.get(1).map(String::as_str) == Some("loop") {
        workload(&args[2..]);
    }
    let mut o = Opts {
        moat: PathBuf::from("target/release/moat"),
        moatd: PathBuf::from("target/release/moatd"),
        rounds: 9,
        calls: 2_000_000,
        forks: 2_000,
        json: None,
    };
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().unwrap_or_else(|| usage());
        match a.as_str() {
            "--moat" => o.moat = val().into(),
            "--moatd" => o.moatd = val().into(),
            "--rounds" => o.rounds = val().parse().unwrap_or_else(|_| usage()),
            "--calls" => o.calls = val().parse().unwrap_or_else(|_| usage()),
            "--forks" => o.forks = val().parse().unwrap_or_else(|_| usage()),
            "--json" => o.json = Some(val().into()),
            "--quick" => {
                o.rounds = 3;
                o.calls = 100_000;
                o.forks = 100;
            }
            _ => usage(),
        }
    }
    if let Err(e) = bench(&o) {
        eprintln!("record_bench: {e}");
        std::process::exit(1);
    }
}

/// `loop getppid N` prints ns per call; `loop fork N` µs per fork+exec+wait
/// of /bin/true.
fn workload(args: &[String]) -> ! {
    let n: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let t = Instant::now();
    let per = match args.first().map(String::as_str) {
        Some("getppid") => {
            for _ in 0..n {
                // SAFETY: getppid has no arguments.
                std::hint::black_box(unsafe { libc::syscall(libc::SYS_getppid) });
            }
            t.elapsed().as_nanos() as f64 / n as f64
        }
        Some("fork") => {
            for _ in 0..n {
                let s = Command::new("/bin/true").status().expect("spawn /bin/true");
                assert!(s.success());
            }
            t.elapsed().as_nanos() as f64 / n as f64 / 1000.0
        }
        _ => std::process::exit(2),
    };
    println!("{per}");
    std::process::exit(0)
}

struct Agent {
    child: Child,
    bpf_dir: PathBuf,
    dir: PathBuf,
}

impl Agent {
    fn start(o: &Opts) -> Result<Agent, String> {
        let dir = std::env::temp_dir().join(format!("record-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let bpf_dir = PathBuf::from(format!(
            "/sys/fs/bpf/moat-record-bench-{}",
            std::process::id()
        ));
        let child = Command::new(&o.moatd)
            .env("MOAT_BPF_DIR", &bpf_dir)
            .args(["--listen", "127.0.0.1:0", "--audit-log"])
            .arg(dir.join("audit.jsonl"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("moatd.log")).map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", o.moatd.display()))?;
        let agent = Agent {
            child,
            bpf_dir,
            dir,
        };
        let t = Instant::now();
        while !agent.bpf_dir.join("RECORD_SYSCALLS").exists()
            || t.elapsed() < Duration::from_secs(1)
        {
            if t.elapsed() > Duration::from_secs(20) {
                return Err("moatd did not pin its maps within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // The pins exist before the programs attach: wait for a recording to work.
        std::thread::sleep(Duration::from_millis(500));
        Ok(agent)
    }

    fn moat(&self, o: &Opts) -> Command {
        let mut c = Command::new(&o.moat);
        c.env("MOAT_BPF_DIR", &self.bpf_dir)
            .env("MOAT_STATE_DIR", self.dir.join("state"))
            .env_remove("MOAT_AGENT");
        c
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        // Its programs stay attached while pinned: removing the pins detaches them.
        moat_tests::moatd::remove_pins(&self.bpf_dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn median_range(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// One `moat run` of the loop; its own figure.
fn run_loop(
    agent: &Agent,
    o: &Opts,
    kind: &str,
    n: u64,
    record: Option<&Path>,
) -> Result<f64, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut c = agent.moat(o);
    c.args(["run", "--cgroup-parent", "moat-bench-record"]);
    if let Some(p) = record {
        c.arg("--record-profile").arg(p);
    }
    c.arg("--").arg(&me).args(["loop", kind, &n.to_string()]);
    let out = c.stdin(Stdio::null()).output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "moat run {kind}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| {
            format!(
                "{kind}: no figure in {:?}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
}

/// A workload recorded the whole time (the "another recording exists" case).
fn other_recording(agent: &Agent, o: &Opts, profile: &Path) -> Result<Child, String> {
    agent
        .moat(o)
        .args([
            "run",
            "--cgroup-parent",
            "moat-bench-record",
            "--record-profile",
        ])
        .arg(profile)
        .args(["--", "sleep", "100000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())
}

fn allowed_names(profile: &Path) -> Result<usize, String> {
    let text = std::fs::read_to_string(profile).map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let mut names = std::collections::BTreeSet::new();
    for r in v["syscalls"].as_array().into_iter().flatten() {
        if r["action"] == "SCMP_ACT_ALLOW" {
            for n in r["names"].as_array().into_iter().flatten() {
                names.insert(n.as_str().unwrap_or_default().to_string());
            }
        }
    }
    Ok(names.len())
}

fn bench(o: &Opts) -> Result<(), String> {
    let agent = Agent::start(o)?;
    let scratch = agent.dir.join("profiles");
    std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    let mut json = serde_json::Map::new();
    for (kind, n, unit) in [
        ("getppid", o.calls, "ns/call"),
        ("fork", o.forks, "µs/iter"),
    ] {
        let (mut none, mut other, mut rec) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..o.rounds {
            none.push(run_loop(&agent, o, kind, n, None)?);
            let mut bg = other_recording(&agent, o, &scratch.join("bg.json"))?;
            std::thread::sleep(Duration::from_millis(300));
            let r = run_loop(&agent, o, kind, n, None);
            // SIGTERM is forwarded: the background workload ends, its moat writes.
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(bg.id() as i32, libc::SIGTERM) };
            let _ = bg.wait();
            other.push(r?);
            let p = scratch.join(format!("{kind}-{round}.json"));
            rec.push(run_loop(&agent, o, kind, n, Some(&p))?);
        }
        let (a, b, c) = (
            median_range(&mut none),
            median_range(&mut other),
            median_range(&mut rec),
        );
        let label = if kind == "getppid" {
            "getppid loop"
        } else {
            "fork+exec+wait /bin/true loop"
        };
        rows.push(format!(
            "| {label} ({unit}) | {:.1} ({:.1}–{:.1}) | {:.1} ({:.1}–{:.1}) | {:.1} ({:.1}–{:.1}) | {:.3}× | {:.3}× |",
            a.0, a.1, a.2, b.0, b.1, b.2, c.0, c.1, c.2, b.0 / a.0, c.0 / a.0
        ));
        json.insert(
            kind.into(),
            serde_json::json!({"unit": unit, "not_recorded": a.0, "other_recorded": b.0, "recorded": c.0, "rounds": o.rounds}),
        );
    }

    // Profile sizes.
    let docker_default = {
        let out = agent
            .moat(o)
            .args(["profile", "check", "default"])
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let field = |k: &str| -> usize {
            text.lines()
                .find(|l| l.starts_with(k))
                .and_then(|l| l[k.len()..].split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        (field("allowed syscalls:"), field("argument-filtered:"))
    };
    let server = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = server.local_addr().map_err(|e| e.to_string())?.port();
    let serve = std::thread::spawn(move || {
        if let Ok((mut s, _)) = server.accept() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
        }
    });
    let url = format!("http://127.0.0.1:{port}/");
    let commands: Vec<(&str, Vec<String>)> = vec![
        (
            "busybox sh script",
            vec![
                "busybox".into(),
                "sh".into(),
                "-c".into(),
                "for f in /etc/hostname /etc/os-release; do busybox cat $f | busybox wc -l; done; busybox ls / >/dev/null".into(),
            ],
        ),
        (
            "python3 -c",
            vec![
                "/usr/bin/python3".into(),
                "-c".into(),
                "import json, os; print(json.dumps(sorted(os.listdir('/'))))".into(),
            ],
        ),
        (
            "curl to loopback",
            vec!["curl".into(), "-s".into(), "-o".into(), "/dev/null".into(), "--max-time".into(), "5".into(), url],
        ),
    ];
    let mut sizes = Vec::new();
    for (label, cmd) in &commands {
        let p = scratch.join(format!("{}.json", label.replace(' ', "-")));
        let out = agent
            .moat(o)
            .args([
                "run",
                "--cgroup-parent",
                "moat-bench-record",
                "--record-profile",
            ])
            .arg(&p)
            .arg("--")
            .args(cmd)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "recording {label}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let n = allowed_names(&p)?;
        sizes.push(format!(
            "| {label} | `{}` | {n} | {:.0} % |",
            cmd.join(" ").replace('|', "\\|"),
            100.0 * n as f64 / (docker_default.0 + docker_default.1) as f64
        ));
        json.insert(format!("profile: {label}"), serde_json::json!(n));
    }
    let _ = serve.join();
    json.insert(
        "docker default allowed".into(),
        serde_json::json!({"unconditionally": docker_default.0, "by argument": docker_default.1}),
    );
    let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup/pids/moat-bench-record"));
    let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup/unified/moat-bench-record"));

    println!("## Recording cost\n");
    println!("Each loop runs under `moat run` (default profile) with moatd attached; median (min–max) over {} rounds, the three cases alternating.\n", o.rounds);
    println!("| Figure | not recorded, no recording on the node | not recorded, another workload recorded | recorded (`--record-profile`) | Ratio (other recorded) | Ratio (recorded) |");
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        println!("{r}");
    }
    println!("\nWith no recording anywhere nothing runs for recording (the record-only `sys_enter` program is attached only while `moat` records); while any recording exists every syscall on the node runs that program (a second program on `sys_enter` besides the pairing's) and every task pays a lookup of its cgroup (and a walk of its ancestors if it is not the root); a recorded task also pays a lookup of (arch, syscall) in the recorded set.\n");
    println!("## Recorded profile sizes\n");
    println!(
        "Syscall names a recorded profile allows (x86_64), against Docker's default profile on this host: {} allowed whatever the arguments and {} by argument ({} in all).\n",
        docker_default.0,
        docker_default.1,
        docker_default.0 + docker_default.1
    );
    println!("| Command | Command line | Names allowed | Of Docker's default |");
    println!("|---|---|---|---|");
    for s in &sizes {
        println!("{s}");
    }
    if let Some(path) = &o.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&json).unwrap_or_default(),
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}
