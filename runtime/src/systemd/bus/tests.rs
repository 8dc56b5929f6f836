//! The client against a real bus daemon (`dbus-daemon`, started on a
//! socket of the test's own).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

struct Daemon {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn daemon() -> Option<Daemon> {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("bus");
    let child = Command::new("dbus-daemon")
        .arg("--session")
        .arg("--nofork")
        .arg(format!("--address=unix:path={}", socket.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            println!("SKIP: dbus-daemon cannot be started ({e}); scripts/setup.sh installs it");
            return None;
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "dbus-daemon made no socket");
        std::thread::sleep(Duration::from_millis(10));
    }
    Some(Daemon {
        child,
        socket,
        _dir: dir,
    })
}

const DBUS: &str = "org.freedesktop.DBus";
const DBUS_PATH: &str = "/org/freedesktop/DBus";

#[test]
fn a_real_bus_daemon_accepts_hello_calls_and_routes_matched_signals() {
    let Some(d) = daemon() else { return };
    let mut a = Bus::connect(&d.socket, true).unwrap();
    assert!(a.is_daemon());
    let id = a.call(DBUS, DBUS_PATH, DBUS, "GetId", vec![]).unwrap();
    assert!(
        matches!(&id[..], [Value::Str(s)] if s.len() == 32),
        "{id:?}"
    );
    // Our own unique name is among the names the daemon lists.
    let names = a.call(DBUS, DBUS_PATH, DBUS, "ListNames", vec![]).unwrap();
    let Value::Array(_, names) = &names[0] else {
        panic!("{names:?}")
    };
    assert!(names
        .iter()
        .any(|n| n.as_str().is_some_and(|s| s.starts_with(':'))));

    // An error reply carries the daemon's error name.
    let e = a
        .call(DBUS, DBUS_PATH, DBUS, "NoSuchMethodHere", vec![])
        .unwrap_err();
    assert_eq!(
        e.remote_name(),
        Some("org.freedesktop.DBus.Error.UnknownMethod")
    );

    // A signal from another client reaches `a` once it asked for it.
    a.call(
        DBUS,
        DBUS_PATH,
        DBUS,
        "AddMatch",
        vec![Value::Str(
            "type='signal',interface='org.example.T',member='Done'".into(),
        )],
    )
    .unwrap();
    let mut b = Bus::connect(&d.socket, true).unwrap();
    for result in ["other", "done"] {
        let mut m = Message::call(
            None,
            "/org/example",
            "org.example.T",
            "Done",
            vec![
                Value::U32(1),
                Value::Path("/job/1".into()),
                Value::Str("x.scope".into()),
                Value::Str(result.into()),
            ],
        );
        m.kind = Kind::Signal;
        b.send(&m).unwrap();
    }
    let got = a
        .wait_signal("Done", Duration::from_secs(10), |m| {
            m.body.get(3).and_then(Value::as_str) == Some("done")
        })
        .unwrap();
    assert_eq!(got.member.as_deref(), Some("Done"));
    assert!(got.sender.is_some_and(|s| s.starts_with(':')));

    // Nothing more comes: the wait ends at its timeout.
    let e = a
        .wait_signal("nothing", Duration::from_millis(200), |_| true)
        .unwrap_err();
    assert!(matches!(e, BusError::Timeout { .. }), "{e}");
}

#[test]
fn a_socket_nobody_listens_on_is_a_connect_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("none");
    let e = Bus::connect(&path, true).unwrap_err();
    assert!(matches!(e, BusError::Connect { .. }));
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
}
