//! "Did you mean" suggestions for misspelt names in user input: the same
//! rule for profiles, capabilities and policy files, defined once in the
//! policy crate (which cannot depend on this one).

pub use moat_policy::suggest::closest;
