//! Records of an earlier boot: what a crash may leave cut short (records
//! are written without fsync) is removed once the state is known to come
//! from another boot, and only then.

use super::*;

const OTHER_BOOT: &str = "00000000-1111-2222-3333-444444444444\n";

fn this_boot() -> String {
    super::super::boot::current().expect("the kernel gives a boot id")
}

/// A state directory holding `good` and the files a crash (or something
/// else) left, with `boot_id` as given (`None`: no such file).
fn crashed(tag: &str, boot_id: Option<&str>) -> (TempRoot, WorkloadRecord) {
    let t = TempRoot::new(tag);
    let dir = StateDir::open(&t.0).unwrap();
    let good = record("good", dead_ref());
    dir.lock().unwrap().insert(&good).unwrap();
    let w = t.0.join("workloads");
    fs::write(w.join("empty.json"), "").unwrap();
    fs::write(w.join("cut.json"), "{\"name\": \"cut\", \"supervi").unwrap();
    fs::write(w.join("zeros.json"), [0u8; 64]).unwrap();
    // Not what a crash leaves: judged as before.
    let mut impostor = record("impostor", dead_ref());
    impostor.name = "someone".into();
    fs::write(
        w.join("impostor.json"),
        serde_json::to_vec(&impostor).unwrap(),
    )
    .unwrap();
    match boot_id {
        Some(id) => fs::write(t.0.join("boot_id"), id).unwrap(),
        None => fs::remove_file(t.0.join("boot_id")).unwrap(),
    }
    (t, good)
}

fn files(t: &TempRoot) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(t.0.join("workloads"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn the_first_lock_marks_the_boot() {
    let t = TempRoot::new("boot-mark");
    let dir = StateDir::open(&t.0).unwrap();
    assert!(!t.0.join("boot_id").exists());
    drop(dir.lock().unwrap());
    let id = fs::read_to_string(t.0.join("boot_id")).unwrap();
    assert_eq!(id.trim(), this_boot());
    assert_eq!(
        fs::metadata(t.0.join("boot_id"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
}

#[test]
fn records_an_earlier_boot_left_unreadable_are_removed() {
    let (t, good) = crashed("boot-earlier", Some(OTHER_BOOT));
    let dir = StateDir::open(&t.0).unwrap();
    let lock = dir.lock().unwrap();
    assert_eq!(files(&t), ["good.json", "impostor.json"]);
    // The impostor is still refused: a crash does not file a record under
    // another name.
    let e = lock.running().unwrap_err().to_string();
    assert!(e.contains("impostor.json"), "{e}");
    fs::remove_file(t.0.join("workloads/impostor.json")).unwrap();
    let (running, stale) = lock.running().unwrap();
    assert!(running.is_empty());
    assert_eq!(stale, vec![good]);
    drop(lock);
    assert_eq!(
        fs::read_to_string(t.0.join("boot_id")).unwrap().trim(),
        this_boot()
    );
}

#[test]
fn unreadable_records_of_this_boot_or_an_unknown_one_stay_refused() {
    let now = this_boot();
    for (tag, id) in [("boot-same", Some(now.as_str())), ("boot-none", None)] {
        let (t, _) = crashed(tag, id);
        let dir = StateDir::open(&t.0).unwrap();
        let lock = dir.lock().unwrap();
        assert_eq!(
            files(&t),
            [
                "cut.json",
                "empty.json",
                "good.json",
                "impostor.json",
                "zeros.json"
            ],
            "{tag}"
        );
        let e = lock.running().unwrap_err().to_string();
        assert!(e.contains("corrupt state record"), "{tag}: {e}");
        drop(lock);
        assert_eq!(
            fs::read_to_string(t.0.join("boot_id")).unwrap().trim(),
            now,
            "{tag}"
        );
    }
}
