//! The client against a double of systemd's private socket: a thread that
//! authenticates like sd-bus, records each call and answers from a script.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;

use super::bus::{Kind, Message};
use super::*;

/// What the double answers to one call.
enum Answer {
    /// A method return with this body, then these signals.
    Return(Vec<Value>, Vec<Message>),
    /// An error reply.
    Error(&'static str, &'static str),
}

fn signal(job: &str, unit: &str, result: &str) -> Message {
    Message {
        kind: Kind::Signal,
        serial: 0,
        path: Some(MANAGER_PATH.into()),
        interface: Some(MANAGER.into()),
        member: Some("JobRemoved".into()),
        error_name: None,
        reply_serial: None,
        destination: None,
        sender: None,
        body: vec![
            Value::U32(1),
            Value::Path(job.into()),
            Value::Str(unit.into()),
            Value::Str(result.into()),
        ],
    }
}

fn read_line(s: &mut UnixStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        s.read_exact(&mut byte).unwrap();
        line.push(byte[0]);
    }
    String::from_utf8(line).unwrap()
}

fn read_message(s: &mut UnixStream) -> Option<Message> {
    let mut head = [0u8; 16];
    s.read_exact(&mut head).ok()?;
    let total = Message::total_len(&head).unwrap();
    let mut bytes = vec![0u8; total];
    bytes[..16].copy_from_slice(&head);
    s.read_exact(&mut bytes[16..]).unwrap();
    Some(Message::decode(&bytes).unwrap())
}

/// Serves one client with `script`; the calls it received come back on
/// the channel.
fn double(script: Vec<Answer>) -> (tempfile::TempDir, PathBuf, mpsc::Receiver<Message>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("private");
    let listener = UnixListener::bind(&path).unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut nul = [0u8; 1];
        s.read_exact(&mut nul).unwrap();
        assert_eq!(nul, [0]);
        // Byte by byte: a buffered reader could swallow the first call.
        // BEGIN comes with AUTH, before the server's OK, as sd-bus sends it.
        let line = read_line(&mut s);
        assert!(line.starts_with("AUTH EXTERNAL "), "{line:?}");
        assert_eq!(read_line(&mut s), "BEGIN\r\n");
        s.write_all(b"OK 0123456789abcdef0123456789abcdef\r\n")
            .unwrap();
        let mut serial = 100;
        for answer in script {
            let Some(call) = read_message(&mut s) else {
                return;
            };
            let reply_to = call.serial;
            tx.send(call).unwrap();
            serial += 1;
            let (mut reply, signals) = match answer {
                Answer::Return(body, signals) => (
                    Message {
                        kind: Kind::Return,
                        body,
                        ..signal("", "", "")
                    },
                    signals,
                ),
                Answer::Error(name, text) => (
                    Message {
                        kind: Kind::Error,
                        error_name: Some(name.into()),
                        body: vec![Value::Str(text.into())],
                        ..signal("", "", "")
                    },
                    vec![],
                ),
            };
            reply.member = None;
            reply.interface = None;
            reply.path = None;
            reply.reply_serial = Some(reply_to);
            s.write_all(&reply.encode(serial)).unwrap();
            for sig in signals {
                serial += 1;
                s.write_all(&sig.encode(serial)).unwrap();
            }
        }
    });
    (dir, path, rx)
}

fn client(path: &std::path::Path) -> Systemd {
    Systemd::over(Bus::connect(path, false).unwrap())
}

#[test]
fn a_transient_scope_is_asked_for_with_its_properties_and_waited_for() {
    let job = "/org/freedesktop/systemd1/job/7";
    let (_d, path, calls) = double(vec![Answer::Return(
        vec![Value::Path(job.into())],
        // Another job ends first: it must not be taken for ours.
        vec![
            signal("/org/freedesktop/systemd1/job/6", "other.service", "failed"),
            signal(job, "moat-w.scope", "done"),
        ],
    )]);
    let mut sd = client(&path);
    sd.start_transient(
        "moat-w.scope",
        vec![
            ("PIDs", Value::Array("u".into(), vec![Value::U32(4242)])),
            ("TasksMax", Value::U64(32)),
        ],
    )
    .unwrap();
    let call = calls.recv().unwrap();
    assert_eq!(call.member.as_deref(), Some("StartTransientUnit"));
    assert_eq!(call.interface.as_deref(), Some(MANAGER));
    assert_eq!(call.path.as_deref(), Some(MANAGER_PATH));
    // A peer connection names no destination.
    assert_eq!(call.destination, None);
    assert_eq!(call.body[0], Value::Str("moat-w.scope".into()));
    assert_eq!(call.body[1], Value::Str("fail".into()));
    assert_eq!(
        call.body[2],
        Value::Array(
            "(sv)".into(),
            vec![
                Value::Struct(vec![
                    Value::Str("PIDs".into()),
                    Value::variant(Value::Array("u".into(), vec![Value::U32(4242)]))
                ]),
                Value::Struct(vec![
                    Value::Str("TasksMax".into()),
                    Value::variant(Value::U64(32))
                ]),
            ]
        )
    );
    assert_eq!(call.body[3], Value::Array("(sa(sv))".into(), vec![]));
}

#[test]
fn a_job_that_fails_is_an_error_naming_its_result() {
    let job = "/org/freedesktop/systemd1/job/9";
    let (_d, path, _calls) = double(vec![Answer::Return(
        vec![Value::Path(job.into())],
        vec![signal(job, "moat-w.scope", "failed")],
    )]);
    let e = client(&path)
        .start_transient("moat-w.scope", vec![])
        .unwrap_err();
    assert!(matches!(&e, SystemdError::Job { result, .. } if result == "failed"));
    assert!(e.to_string().contains("moat-w.scope"), "{e}");
}

#[test]
fn a_refused_unit_is_an_error_with_systemds_name_and_text() {
    let (_d, path, _calls) = double(vec![Answer::Error(
        "org.freedesktop.systemd1.UnitExists",
        "Unit moat-w.scope was already loaded or has a fragment file.",
    )]);
    let e = client(&path)
        .start_transient("moat-w.scope", vec![])
        .unwrap_err();
    assert_eq!(e.remote_name(), Some("org.freedesktop.systemd1.UnitExists"));
    let text = error_chain(&e);
    assert!(text.contains("already loaded"), "{text}");
    assert!(
        text.contains("starting transient unit moat-w.scope"),
        "{text}"
    );
}

#[test]
fn stopping_a_unit_that_is_not_loaded_is_nothing_to_do() {
    let job = "/org/freedesktop/systemd1/job/3";
    let (_d, path, calls) = double(vec![
        Answer::Error(
            "org.freedesktop.systemd1.NoSuchUnit",
            "Unit x.scope not loaded.",
        ),
        Answer::Return(
            vec![Value::Path(job.into())],
            vec![signal(job, "y.scope", "done")],
        ),
        Answer::Error(
            "org.freedesktop.systemd1.NoSuchUnit",
            "Unit y.scope not loaded.",
        ),
    ]);
    let mut sd = client(&path);
    assert!(!sd.stop_unit("x.scope").unwrap());
    assert!(sd.stop_unit("y.scope").unwrap());
    sd.reset_failed("y.scope").unwrap();
    let members: Vec<_> = calls.try_iter().map(|c| (c.member, c.body)).collect();
    assert_eq!(members[1].0.as_deref(), Some("StopUnit"));
    assert_eq!(
        members[1].1,
        vec![Value::Str("y.scope".into()), Value::Str("replace".into())]
    );
    assert_eq!(members[2].0.as_deref(), Some("ResetFailedUnit"));
}

#[test]
fn booted_means_run_systemd_system_is_a_directory() {
    let root = tempfile::tempdir().unwrap();
    assert!(!booted_at(root.path()));
    std::fs::create_dir_all(root.path().join("run/systemd")).unwrap();
    std::fs::write(root.path().join("run/systemd/system"), "").unwrap();
    assert!(!booted_at(root.path()), "a file is not a booted systemd");
    std::fs::remove_file(root.path().join("run/systemd/system")).unwrap();
    std::fs::create_dir(root.path().join("run/systemd/system")).unwrap();
    assert!(booted_at(root.path()));
}
