//! Lowering a rule's argument conditions to the comparisons handed to
//! libseccomp, on the bits of each argument that the kernel reads.
//!
//! A condition is defined on the value the kernel sees: for an argument
//! the kernel reads as N bits, `kv = arg mod 2^N`, compared with the
//! profile's 64-bit value. libseccomp compares all 64 bits on a 64-bit
//! architecture, so:
//! - EQ and MASKED_EQ become a masked comparison on the low N bits, which
//!   libseccomp compiles without looking at the high word;
//! - NE, LT, LE, GT and GE on a 32-bit argument are compiled with a marker
//!   in the datum's high word, and [`super::fixup::ignore_marked_high_words`]
//!   turns each comparison of a high word with the marker into the jump it
//!   takes when the high words are equal, leaving the low-word comparison;
//! - on narrower arguments (`umode_t`, 16 bits) they become a union of
//!   masked comparisons (at most N), exact for every value;
//! - a value the kernel can never see (high bits set) makes the condition
//!   always or never hold, and `moat profile check` says so.

use super::profile::{ArgCondition, Operator};

/// One comparison libseccomp can emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Atom {
    /// Argument index.
    pub index: u32,
    /// Operator (with its mask for MASKED_EQ).
    pub op: AtomOp,
    /// The value compared with (low 32 bits only when `marked`).
    pub datum: u64,
    /// Compare only the low word: the high word gets the marker.
    pub marked: bool,
}

/// libseccomp's comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum AtomOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `(arg & mask) == datum`.
    MaskedEq(u64),
}

/// A condition after lowering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lowered {
    /// Holds for every value the kernel can see.
    Always,
    /// Holds for none.
    Never,
    /// Holds when any of these comparisons does.
    AnyOf(Vec<Atom>),
}

/// A comparison that always holds, keeping the rule conditional (as it was
/// written) so that libseccomp orders it with the syscall's other rules as
/// before: `(arg & 0) == 0`.
pub fn always(index: u32) -> Atom {
    Atom {
        index,
        op: AtomOp::MaskedEq(0),
        datum: 0,
        marked: false,
    }
}

fn atom(index: u32, op: AtomOp, datum: u64) -> Atom {
    Atom {
        index,
        op,
        datum,
        marked: false,
    }
}

/// Lowers `c` for an argument the kernel reads as `bits` bits (`None`:
/// unknown, compared on 64 bits as written). `sees_high` tells whether the
/// architecture's program compares high words at all (32-bit ABIs do not).
pub fn lower(c: &ArgCondition, bits: Option<u32>, sees_high: bool) -> Lowered {
    let i = c.index;
    let (v, v2) = (c.value, c.value_two);
    let n = match bits {
        Some(n) if n < 64 => n,
        _ => {
            let a = match c.op {
                Operator::Equal => atom(i, AtomOp::Eq, v),
                Operator::NotEqual => atom(i, AtomOp::Ne, v),
                Operator::Less => atom(i, AtomOp::Lt, v),
                Operator::LessOrEqual => atom(i, AtomOp::Le, v),
                Operator::Greater => atom(i, AtomOp::Gt, v),
                Operator::GreaterOrEqual => atom(i, AtomOp::Ge, v),
                // Docker's JSON: `value` is the mask, `valueTwo` the bits.
                Operator::MaskedEqual => atom(i, AtomOp::MaskedEq(v), v2),
            };
            return Lowered::AnyOf(vec![a]);
        }
    };
    let max = (1u64 << n) - 1;
    // A range or NE comparison on exactly 32 bits: libseccomp's own
    // operator on the low word, the high word ignored (see module doc).
    let low_word = |op| {
        Lowered::AnyOf(vec![Atom {
            index: i,
            op,
            datum: v,
            marked: sees_high,
        }])
    };
    match c.op {
        Operator::Equal if v > max => Lowered::Never,
        Operator::Equal => Lowered::AnyOf(vec![atom(i, AtomOp::MaskedEq(max), v)]),
        Operator::MaskedEqual => {
            let mask = v & max;
            if v2 & !mask != 0 {
                Lowered::Never
            } else if mask == 0 {
                Lowered::Always
            } else {
                Lowered::AnyOf(vec![atom(i, AtomOp::MaskedEq(mask), v2)])
            }
        }
        Operator::NotEqual if v > max => Lowered::Always,
        Operator::NotEqual if n == 32 => low_word(AtomOp::Ne),
        Operator::NotEqual => Lowered::AnyOf(
            (0..n)
                .map(|b| atom(i, AtomOp::MaskedEq(1 << b), !v & (1 << b)))
                .collect(),
        ),
        Operator::Less | Operator::LessOrEqual => {
            // kv < limit, with limit in 1..=max for what is left.
            let limit = if c.op == Operator::Less {
                v
            } else {
                v.saturating_add(1)
            };
            if limit > max {
                Lowered::Always
            } else if limit == 0 {
                Lowered::Never
            } else if n == 32 {
                low_word(if c.op == Operator::Less {
                    AtomOp::Lt
                } else {
                    AtomOp::Le
                })
            } else {
                Lowered::AnyOf(below(i, n, limit))
            }
        }
        Operator::Greater | Operator::GreaterOrEqual => {
            // kv > floor, with floor in 0..max for what is left.
            let floor = if c.op == Operator::Greater {
                Some(v)
            } else {
                v.checked_sub(1)
            };
            match floor {
                None => Lowered::Always,
                Some(f) if f >= max => Lowered::Never,
                Some(_) if n == 32 => low_word(if c.op == Operator::Greater {
                    AtomOp::Gt
                } else {
                    AtomOp::Ge
                }),
                Some(f) => Lowered::AnyOf(above(i, n, f)),
            }
        }
    }
}

/// Bits `b` and above, within `n` bits.
fn from_bit(b: u32, n: u32) -> u64 {
    ((1u64 << n) - 1) & !((1u64 << b) - 1)
}

/// `{x < 2^n : x < limit}` as masked comparisons: for each set bit `b` of
/// `limit`, the values that agree with it above `b` and have `b` clear.
fn below(i: u32, n: u32, limit: u64) -> Vec<Atom> {
    (0..n)
        .filter(|b| limit & (1 << b) != 0)
        .map(|b| {
            let mask = from_bit(b, n);
            atom(i, AtomOp::MaskedEq(mask), limit & mask & !(1 << b))
        })
        .collect()
}

/// `{x < 2^n : x > floor}`: for each clear bit `b` of `floor`, the values
/// that agree with it above `b` and have `b` set.
fn above(i: u32, n: u32, floor: u64) -> Vec<Atom> {
    (0..n)
        .filter(|b| floor & (1 << b) == 0)
        .map(|b| {
            let mask = from_bit(b, n);
            atom(i, AtomOp::MaskedEq(mask), (floor & mask) | (1 << b))
        })
        .collect()
}

/// More alternatives than this from one rule is refused: only products of
/// several narrow range conditions get there.
pub const MAX_ALTERNATIVES: usize = 1024;

/// The rule's conditions, given as (argument index, lowered condition), as
/// alternatives (ORed) of comparisons (ANDed), with runc's rule: conditions
/// on distinct arguments are ANDed; if an argument repeats, every condition
/// is a rule of its own (libseccomp cannot AND two comparisons of one
/// argument). An empty result never matches; `[[]]` always does. A
/// condition that always holds stays in as [`always`], so a conditional
/// rule stays conditional. `Err` carries the count when there would be
/// more than [`MAX_ALTERNATIVES`].
pub fn alternatives(conds: &[(u32, Lowered)]) -> Result<Vec<Vec<Atom>>, usize> {
    let mut seen = [false; 6];
    let repeats = conds.iter().any(|(i, _)| {
        let slot = &mut seen[(*i as usize).min(5)];
        std::mem::replace(slot, true)
    });
    if repeats {
        let mut out = Vec::new();
        for (i, l) in conds {
            match l {
                Lowered::Always => out.push(vec![always(*i)]),
                Lowered::Never => {}
                Lowered::AnyOf(atoms) => out.extend(atoms.iter().map(|a| vec![*a])),
            }
        }
        return Ok(out);
    }
    let mut out: Vec<Vec<Atom>> = vec![Vec::new()];
    for (i, l) in conds {
        let atoms = match l {
            Lowered::Never => return Ok(Vec::new()),
            Lowered::Always => vec![always(*i)],
            Lowered::AnyOf(atoms) => atoms.clone(),
        };
        let count = out.len() * atoms.len();
        if count > MAX_ALTERNATIVES {
            return Err(count);
        }
        out = out
            .iter()
            .flat_map(|g| {
                atoms.iter().map(move |a| {
                    let mut g = g.clone();
                    g.push(*a);
                    g
                })
            })
            .collect();
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
