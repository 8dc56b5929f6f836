//! "Did you mean" suggestions for misspelt names in user input (policy
//! files here; `moat_runtime::suggest` re-exports it for profiles and flags).

/// Returns the candidate closest to `input` by edit distance (Levenshtein, from
/// `strsim`), when it is
/// close enough to be a plausible typo (at most a third of the length).
pub fn closest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let input_l = input.to_ascii_lowercase();
    let limit = (input.len() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(&input_l, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
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
    fn ties_go_to_the_first_candidate() {
        assert_eq!(closest("ab", ["ac", "ad"]), Some("ac"));
    }
}
