//! "Did you mean" suggestions for misspelt names in user input (policy
//! files here; `moat_runtime::suggest` re-exports it for profiles and flags).

/// Returns the candidate closest to `input` by edit distance, when it is
/// close enough to be a plausible typo (at most a third of the length).
pub fn closest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let input_l = input.to_ascii_lowercase();
    let limit = (input.len() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (levenshtein(&input_l, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_typo_and_ignores_unrelated_words() {
        let c = ["defaultAction", "syscalls", "archMap"];
        assert_eq!(closest("defaultActoin", c), Some("defaultAction"));
        assert_eq!(closest("sycalls", c), Some("syscalls"));
        assert_eq!(closest("banana", c), None);
    }

    #[test]
    fn distance_is_symmetric_edit_count() {
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("", "abc"), 3);
    }
}
