//! The one reader of the Prometheus text exposition format (0.0.4, and the sample
//! lines of OpenMetrics), used by `moat stats` and by the tests.

/// One sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name, e.g. `moat_forks_total`.
    pub name: String,
    /// Label pairs, in the order written.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether it is the series `name` with exactly the labels `labels` (in any
    /// order).
    pub fn is(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.name == name
            && self.labels.len() == labels.len()
            && labels.iter().all(|(k, v)| self.label(k) == Some(*v))
    }
}

/// A line that is not a sample.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metrics line {line}: {text:?}: {reason}")]
pub struct ExpositionError {
    /// 1-based line number.
    pub line: usize,
    /// The line.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Every sample of an exposition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    /// The samples, in order.
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// Parses a text exposition: comments and blank lines are skipped; a line that
    /// is not a sample is an error naming its line number.
    pub fn parse(text: &str) -> Result<Exposition, ExpositionError> {
        let mut samples = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let sample = parse_sample(line).map_err(|reason| ExpositionError {
                line: index + 1,
                text: line.to_owned(),
                reason,
            })?;
            samples.push(sample);
        }
        Ok(Exposition { samples })
    }

    /// The value of series `name` with exactly `labels`, if present.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.is(name, labels))
            .map(|s| s.value)
    }

    /// The value of a series written as in the exposition, e.g.
    /// `moat_forks_total{workload="a",kind="process"}`, if present. Label order
    /// does not matter. Panics if `series` is not a series.
    pub fn value(&self, series: &str) -> Option<f64> {
        let wanted = parse_sample(&format!("{series} 0"))
            .unwrap_or_else(|reason| panic!("{series:?} is not a series: {reason}"));
        let labels: Vec<(&str, &str)> = wanted
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.get(&wanted.name, &labels)
    }

    /// The samples of family `name`.
    pub fn family<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_ascii_whitespace())
        .ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return Err(format!("invalid metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let end = parse_labels(after, &mut labels)?;
        rest = &after[end..];
    }
    let mut fields = rest.split_ascii_whitespace();
    let value_text = fields.next().ok_or("no value")?;
    let value = parse_value(value_text).ok_or_else(|| format!("invalid value {value_text:?}"))?;
    // An optional timestamp (and OpenMetrics exemplars) may follow; unused here.
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Reads `name="value",...}` into `labels`; returns the byte offset after `}`.
fn parse_labels(after: &str, labels: &mut Vec<(String, String)>) -> Result<usize, String> {
    let mut chars = after.char_indices().peekable();
    loop {
        // Skip separators and white space before a label name.
        while chars
            .peek()
            .is_some_and(|&(_, c)| c == ',' || c.is_ascii_whitespace())
        {
            chars.next();
        }
        let Some(&(start, c)) = chars.peek() else {
            return Err("unterminated label set".to_owned());
        };
        if c == '}' {
            return Ok(start + 1);
        }
        let mut label_name = String::new();
        while let Some(&(_, c)) = chars.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                label_name.push(c);
                chars.next();
            } else {
                break;
            }
        }
        if label_name.is_empty() {
            return Err(format!("invalid label name at {:?}", &after[start..]));
        }
        while chars.peek().is_some_and(|&(_, c)| c.is_ascii_whitespace()) {
            chars.next();
        }
        if chars.next().map(|(_, c)| c) != Some('=') {
            return Err(format!("expected `=` after label {label_name:?}"));
        }
        while chars.peek().is_some_and(|&(_, c)| c.is_ascii_whitespace()) {
            chars.next();
        }
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err(format!(
                "expected `\"` to open the value of label {label_name:?}"
            ));
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                None => return Err(format!("unterminated value of label {label_name:?}")),
                Some((_, '"')) => break,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, other)) => {
                        value.push('\\');
                        value.push(other);
                    }
                    None => return Err(format!("unterminated value of label {label_name:?}")),
                },
                Some((_, c)) => value.push(c),
            }
        }
        labels.push((label_name, value));
    }
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition() {
        let text = "# HELP x y\n# TYPE moat_forks_total counter\n\
                    moat_forks_total{workload=\"a\\\"b\",kind=\"process\"} 12\n\
                    moat_build_info{version=\"0.1.0\",kernel=\"6.18\",} 1 1700000000\n\
                    process_open_fds 7\nup NaN\n";
        let samples = Exposition::parse(text).unwrap().samples;
        assert_eq!(samples.len(), 4);
        assert_eq!(samples[0].name, "moat_forks_total");
        assert_eq!(samples[0].label("workload"), Some("a\"b"));
        assert_eq!(samples[0].label("kind"), Some("process"));
        assert_eq!(samples[0].value, 12.0);
        assert_eq!(samples[1].labels.len(), 2);
        assert_eq!(samples[2].value, 7.0);
        assert!(samples[3].value.is_nan());
        assert!(Exposition::parse("bad{x=1} 2\n").is_err());
        let err = Exposition::parse("# c\nx{a=\"1\" 2\n").unwrap_err();
        assert_eq!(err.line, 2);
    }

    #[test]
    fn looks_series_up_by_labels_in_any_order() {
        let e = Exposition::parse(
            "moat_forks_total{workload=\"a\",kind=\"process\"} 3\n\
             moat_forks_total{workload=\"a\",kind=\"thread\"} 4\nmoat_x 5\n",
        )
        .unwrap();
        assert_eq!(
            e.value("moat_forks_total{kind=\"thread\",workload=\"a\"}"),
            Some(4.0)
        );
        assert_eq!(e.get("moat_forks_total", &[("workload", "a")]), None);
        assert_eq!(e.value("moat_x"), Some(5.0));
        assert_eq!(e.family("moat_forks_total").count(), 2);
    }
}
