use super::*;

fn round_trip(values: Vec<Value>) -> Vec<Value> {
    let m = Message::call(Some("d.e"), "/a/b", "i.f", "M", values);
    let bytes = m.encode(7);
    let back = Message::decode(&bytes).unwrap();
    assert_eq!(back.serial, 7);
    assert_eq!(back.kind, Kind::Call);
    assert_eq!(back.path.as_deref(), Some("/a/b"));
    assert_eq!(back.interface.as_deref(), Some("i.f"));
    assert_eq!(back.member.as_deref(), Some("M"));
    assert_eq!(back.destination.as_deref(), Some("d.e"));
    back.body
}

#[test]
fn a_start_transient_unit_body_survives_a_round_trip() {
    let props = Value::Array(
        "(sv)".into(),
        vec![
            Value::Struct(vec![
                Value::Str("Description".into()),
                Value::variant(Value::Str("moat workload w".into())),
            ]),
            Value::Struct(vec![
                Value::Str("PIDs".into()),
                Value::variant(Value::Array("u".into(), vec![Value::U32(4242)])),
            ]),
            Value::Struct(vec![
                Value::Str("TasksMax".into()),
                Value::variant(Value::U64(u64::MAX)),
            ]),
            Value::Struct(vec![
                Value::Str("Delegate".into()),
                Value::variant(Value::Bool(true)),
            ]),
        ],
    );
    let body = vec![
        Value::Str("moat-w.scope".into()),
        Value::Str("fail".into()),
        props,
        Value::Array("(sa(sv))".into(), vec![]),
    ];
    let sig: String = body.iter().map(Value::signature).collect();
    assert_eq!(sig, "ssa(sv)a(sa(sv))");
    assert_eq!(round_trip(body.clone()), body);
}

#[test]
fn every_basic_type_and_dict_entries_survive_a_round_trip() {
    let body = vec![
        Value::Byte(3),
        Value::Bool(false),
        Value::I16(-2),
        Value::U16(65535),
        Value::I32(-70000),
        Value::U32(1 << 31),
        Value::I64(-1),
        Value::U64(1 << 40),
        Value::Path("/org/x".into()),
        Value::Sig("a{sv}".into()),
        Value::Array(
            "{sv}".into(),
            vec![Value::Entry(
                Box::new(Value::Str("k".into())),
                Box::new(Value::variant(Value::Byte(1))),
            )],
        ),
        Value::Array("t".into(), vec![]),
    ];
    assert_eq!(round_trip(body.clone()), body);
}

#[test]
fn a_hello_call_has_the_layout_of_the_specification() {
    // Header: 'l', call, no flags, version 1, body 0, serial 1, then the
    // fields: path, interface, member, destination.
    let m = Message::call(
        Some("org.freedesktop.DBus"),
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "Hello",
        vec![],
    );
    let b = m.encode(1);
    assert_eq!(&b[..12], &[b'l', 1, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0]);
    let fields_len = u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize;
    // (y v(o)) at 16: code 1, sig "o", string length 21 + the path.
    assert_eq!(&b[16..20], &[1, 1, b'o', 0]);
    assert_eq!(u32::from_le_bytes(b[20..24].try_into().unwrap()), 21);
    assert_eq!(&b[24..45], b"/org/freedesktop/DBus");
    assert_eq!(b.len(), (16 + fields_len).div_ceil(8) * 8);
    assert_eq!(
        Message::total_len(&b[..16].try_into().unwrap()).unwrap(),
        b.len()
    );
}

#[test]
fn a_job_removed_signal_decodes() {
    let m = Message {
        kind: Kind::Signal,
        serial: 99,
        path: Some("/org/freedesktop/systemd1".into()),
        interface: Some("org.freedesktop.systemd1.Manager".into()),
        member: Some("JobRemoved".into()),
        error_name: None,
        reply_serial: None,
        destination: None,
        sender: None,
        body: vec![
            Value::U32(12),
            Value::Path("/org/freedesktop/systemd1/job/12".into()),
            Value::Str("moat-w.scope".into()),
            Value::Str("done".into()),
        ],
    };
    let back = Message::decode(&m.encode(99)).unwrap();
    assert_eq!(back, m);
}

#[test]
fn malformed_messages_are_refused_whole() {
    let good = Message::call(None, "/", "a.b", "C", vec![Value::Str("xyz".into())]).encode(1);
    // Truncated anywhere.
    for cut in [0, 10, 16, good.len() - 1] {
        assert!(Message::decode(&good[..cut]).is_err(), "cut at {cut}");
    }
    // Big-endian is refused with a reason.
    let mut be = good.clone();
    be[0] = b'B';
    let e = Message::decode(&be).unwrap_err();
    assert!(e.0.contains("little-endian"), "{e}");
    // A string without its NUL.
    let mut no_nul = good.clone();
    let last = no_nul.len() - 1;
    no_nul[last] = b'!';
    assert!(Message::decode(&no_nul).is_err());
    // A boolean that is neither 0 nor 1.
    let mut r = Reader::new(&[2, 0, 0, 0], 0);
    assert!(r.read("b").is_err());
    // Non-zero padding.
    let mut r = Reader::new(&[1, 0xff, 0, 0, 5, 0, 0, 0], 0);
    r.read("y").unwrap();
    assert!(r.read("u").is_err());
    // An array whose length runs past the buffer.
    let mut r = Reader::new(&[0xff, 0xff, 0, 0, 1, 0, 0, 0], 0);
    assert!(r.read("au").is_err());
}

#[test]
fn signatures_split_into_complete_types() {
    assert_eq!(split_first_type("a(sa(sv))s").unwrap(), ("a(sa(sv))", "s"));
    assert_eq!(split_first_type("a{sv}").unwrap(), ("a{sv}", ""));
    for bad in ["", "a", "(", "()", "{s}", "{sss}", "z", "(s"] {
        assert!(split_first_type(bad).is_err(), "{bad:?}");
    }
    let deep = format!("{}y", "a".repeat(100));
    assert!(split_first_type(&deep).is_err());
}

#[test]
fn nested_variants_are_bounded() {
    // A variant holding a variant ... 100 deep must not recurse unbounded.
    let mut v = Value::Byte(1);
    for _ in 0..100 {
        v = Value::variant(v);
    }
    let mut w = Writer::default();
    w.put(&v);
    let mut r = Reader::new(&w.buf, 0);
    assert!(r.read("v").is_err());
}
