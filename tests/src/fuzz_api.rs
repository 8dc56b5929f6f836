//! The fuzz entry points of the readers in `moat-api` that the `moat` CLI
//! runs on what moatd (or whoever wrote the file, or answers on the port)
//! gives it: the audit log behind `moat events`, and the HTTP answer and text
//! exposition behind `moat stats`. Listed in [`crate::fuzz::TARGETS`].

use moat_api::{
    audit::AuditEvent,
    client,
    exposition::{Exposition, Sample},
    text,
};

/// The audit reader behind `moat events`: the log split into lines as the CLI
/// splits it, each line read by `AuditEvent::parse_line`. A line that reads
/// as an event must write back (as moatd writes it) to a line that reads as
/// the same event, and the line made terminal-safe (`--json`, and moatd's
/// writer) must read as the same event and be safe.
pub fn audit_reader(data: &[u8]) {
    for raw in data.split(|&b| b == b'\n') {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let Ok(event) = AuditEvent::parse_line(raw) else {
            continue;
        };
        let written = serde_json::to_string(&event).expect("an event always serialises");
        let again = AuditEvent::parse_line(written.as_bytes())
            .unwrap_or_else(|e| panic!("moatd's own line does not read back: {e}: {written}"));
        assert_eq!(again, event, "round trip through {written}");
        if let Ok(line) = std::str::from_utf8(raw) {
            let safe = text::escape_unsafe_in_json(line);
            assert!(
                !safe.chars().any(|c| c != '\n' && text::is_unsafe(c)),
                "unsafe characters left in {safe:?}"
            );
            let same = AuditEvent::parse_line(safe.as_bytes())
                .unwrap_or_else(|e| panic!("the escaped line does not read: {e}: {safe}"));
            assert_eq!(same, event, "escaping changed the event: {safe}");
        }
    }
}

/// The exposition reader behind `moat stats`: the bytes as moatd's HTTP answer
/// (`client::parse_response`, chunked bodies included), and the bytes as the
/// text exposition itself (`Exposition::parse`). A parsed exposition must
/// render back (label values escaped as the text format does) to text that
/// parses to the same samples, and every sample must be found by its name and
/// labels.
pub fn exposition_reader(data: &[u8]) {
    if let Ok(response) = client::parse_response(data, false) {
        if let Ok(exposition) = Exposition::parse(&response.body) {
            check_exposition(&exposition);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(exposition) = Exposition::parse(text) {
            check_exposition(&exposition);
        }
    }
}

fn check_exposition(exposition: &Exposition) {
    let rendered: String = exposition.samples.iter().map(render).collect();
    let again = Exposition::parse(&rendered)
        .unwrap_or_else(|e| panic!("a rendered exposition does not parse: {e}\n{rendered}"));
    assert_eq!(again.samples.len(), exposition.samples.len(), "{rendered}");
    for (a, b) in exposition.samples.iter().zip(&again.samples) {
        assert_eq!((&a.name, &a.labels), (&b.name, &b.labels), "{rendered}");
        assert!(
            a.value == b.value || (a.value.is_nan() && b.value.is_nan()),
            "{} became {} in {rendered}",
            a.value,
            b.value
        );
    }
    for sample in &exposition.samples {
        let labels: Vec<(&str, &str)> = sample
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        // A repeated label name makes the series unaddressable by design.
        let unique = labels
            .iter()
            .enumerate()
            .all(|(i, (k, _))| labels[..i].iter().all(|(other, _)| other != k));
        if unique {
            assert!(
                exposition.get(&sample.name, &labels).is_some(),
                "{sample:?} not found by its own name and labels"
            );
        }
    }
}

/// One sample in the text format: label values with `\`, `"` and newlines
/// escaped.
fn render(sample: &Sample) -> String {
    let mut line = sample.name.clone();
    if !sample.labels.is_empty() {
        line.push('{');
        for (i, (name, value)) in sample.labels.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            let value = value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            line.push_str(&format!("{name}=\"{value}\""));
        }
        line.push('}');
    }
    let value = if sample.value.is_nan() {
        "NaN".to_owned()
    } else if sample.value == f64::INFINITY {
        "+Inf".to_owned()
    } else if sample.value == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{:e}", sample.value)
    };
    line.push_str(&format!(" {value}\n"));
    line
}
