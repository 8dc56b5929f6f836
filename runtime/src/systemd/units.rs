//! moat's unit names: the workload's scope `moat-<name>.scope` and the
//! slice it goes in, and where systemd puts their cgroups.

pub use moat_api::defaults::MOAT_SCOPE_PREFIX as SCOPE_PREFIX;

/// The scope unit of workload `name` (a valid workload name:
/// `[A-Za-z0-9_.-]`, which unit names allow as they are).
pub fn scope_name(name: &str) -> String {
    format!("{SCOPE_PREFIX}{name}.scope")
}

/// Checks that `slice` can be the slice of moat's workloads: a slice unit
/// name (`<prefix>.slice`) whose prefix is `[A-Za-z0-9_.-]`, where each `-`
/// separates a level (`moat-batch.slice` is inside `moat.slice`), so no
/// `-` starts or ends it and no two follow each other. The root slice
/// `-.slice` is refused: workloads go in a slice of their own.
pub fn validate_slice(slice: &str) -> Result<(), String> {
    let Some(prefix) = slice.strip_suffix(".slice") else {
        return Err(format!(
            "{slice:?} is not a slice unit name: with the systemd cgroup manager \
             --cgroup-parent names a slice, e.g. \"moat.slice\""
        ));
    };
    if prefix.is_empty() || prefix == "-" {
        return Err(format!(
            "{slice:?}: workloads need a slice of their own, not the root slice"
        ));
    }
    if let Some(c) = prefix
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "{slice:?}: character {c:?} is not allowed (use letters, digits, '_', '.' and '-')"
        ));
    }
    if prefix.starts_with('-') || prefix.ends_with('-') || prefix.contains("--") {
        return Err(format!(
            "{slice:?}: a '-' separates two levels of slices, so it cannot start or end \
             the name or follow another '-'"
        ));
    }
    if slice.len() > 255 {
        return Err(format!("{slice:?}: longer than 255 characters"));
    }
    Ok(())
}

/// The cgroup of `slice`, relative to the hierarchy's root, as systemd
/// makes it: `moat-batch.slice` is `moat.slice/moat-batch.slice`.
pub fn slice_path(slice: &str) -> Result<String, String> {
    validate_slice(slice)?;
    let prefix = &slice[..slice.len() - ".slice".len()];
    let mut levels = Vec::new();
    for (i, c) in prefix.char_indices() {
        if c == '-' {
            levels.push(format!("{}.slice", &prefix[..i]));
        }
    }
    levels.push(slice.to_owned());
    Ok(levels.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_nest_at_each_dash_as_systemd_nests_them() {
        assert_eq!(slice_path("moat.slice").unwrap(), "moat.slice");
        assert_eq!(
            slice_path("moat-batch-x.slice").unwrap(),
            "moat.slice/moat-batch.slice/moat-batch-x.slice"
        );
        assert_eq!(slice_path("a.b-c.slice").unwrap(), "a.b.slice/a.b-c.slice");
        assert_eq!(scope_name("web.1"), "moat-web.1.scope");
    }

    #[test]
    fn what_is_not_a_slice_of_its_own_is_refused_with_the_reason() {
        for (bad, why) in [
            ("moat", "not a slice unit name"),
            ("moat.scope", "not a slice unit name"),
            ("-.slice", "root slice"),
            (".slice", "root slice"),
            ("a--b.slice", "'-' separates"),
            ("-a.slice", "'-' separates"),
            ("a-.slice", "'-' separates"),
            ("a/b.slice", "character '/'"),
            ("a@b.slice", "character '@'"),
            ("a b.slice", "character ' '"),
        ] {
            let e = validate_slice(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
