//! Keeps `seccomp_bench` from rotting: a `--quick` run must succeed and
//! print the report table with a number in every measured row.

use std::process::Command;

use moat_tests::fixtures_dir;

/// The value cell of the table row whose figure is `figure`.
fn value<'a>(table: &'a str, figure: &str) -> Option<&'a str> {
    table.lines().find_map(|l| {
        let cells: Vec<&str> = l.split('|').map(str::trim).collect();
        // "| figure | value | goal | met |" splits into 6 cells.
        (cells.len() == 6 && cells[1] == figure).then_some(cells[2])
    })
}

/// The leading number of a cell such as `1.234 ms` or `+3.1 ns`.
fn leading_number(cell: &str) -> Option<f64> {
    let end = cell
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+')))
        .unwrap_or(cell.len());
    cell[..end].parse().ok()
}

#[test]
fn quick_run_prints_the_whole_table() {
    let out = Command::new(env!("CARGO_BIN_EXE_seccomp_bench"))
        .arg("--quick")
        .output()
        .expect("run seccomp_bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "seccomp_bench --quick failed ({}):\n{stderr}\n{stdout}",
        out.status
    );

    let mut figures: Vec<String> = [
        "Compile default profile, median",
        "Compile default profile, min",
        "Compile default profile, max",
        "Program length, binary tree",
        "Program length, linear",
    ]
    .map(String::from)
    .to_vec();
    for w in [
        "getppid (allowed)",
        "socket+close (arg-filtered)",
        "mount (denied)",
    ] {
        for v in ["no filter", "tree", "linear"] {
            figures.push(format!("{w}, {v}"));
        }
        for r in ["tree / no filter", "linear / no filter", "linear / tree"] {
            figures.push(format!("{w}: {r}"));
        }
    }
    for f in &figures {
        let cell = value(&stdout, f).unwrap_or_else(|| panic!("no row {f:?} in:\n{stdout}"));
        let n = leading_number(cell)
            .unwrap_or_else(|| panic!("row {f:?} has no numeric value: {cell:?}"));
        assert!(
            n.is_finite() && n > 0.0,
            "row {f:?}: {n} is not a positive number"
        );
    }

    let goal = stdout
        .lines()
        .find(|l| l.starts_with("| Compile default profile, median |"))
        .expect("compile row");
    assert!(
        goal.contains("< 5 ms"),
        "the goal column is missing: {goal}"
    );

    let fixture_rows = stdout
        .lines()
        .filter(|l| l.starts_with("| Compile fixture "))
        .count();
    if fixtures_dir().is_some() {
        assert_eq!(
            fixture_rows, 3,
            "the fixtures exist but are not timed:\n{stdout}"
        );
    } else {
        eprintln!("SKIP fixture rows: ../shared/fixtures not present");
        assert!(stdout.contains("| Compile largest fixture | skipped"));
    }
    for section in ["### Machine", "### Conditions"] {
        assert!(stdout.contains(section), "no {section} section");
    }
}
