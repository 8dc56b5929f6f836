use super::*;

const OPS: [Operator; 7] = [
    Operator::Equal,
    Operator::NotEqual,
    Operator::Less,
    Operator::LessOrEqual,
    Operator::Greater,
    Operator::GreaterOrEqual,
    Operator::MaskedEqual,
];

fn cond(op: Operator, value: u64, value_two: u64) -> ArgCondition {
    ArgCondition {
        index: 0,
        value,
        value_two,
        op,
    }
}

/// What the kernel-side definition says: the condition on the N bits the
/// kernel reads of register `r`.
fn expected(c: &ArgCondition, n: u32, r: u64) -> bool {
    let kv = if n == 64 { r } else { r & ((1u64 << n) - 1) };
    let v = c.value;
    match c.op {
        Operator::Equal => kv == v,
        Operator::NotEqual => kv != v,
        Operator::Less => kv < v,
        Operator::LessOrEqual => kv <= v,
        Operator::Greater => kv > v,
        Operator::GreaterOrEqual => kv >= v,
        Operator::MaskedEqual => kv & v == c.value_two,
    }
}

/// What the compiled comparisons do with register `r`: a marked atom
/// compares the low word only (its high word is ignored by the fixup).
fn eval_atom(a: &Atom, r: u64) -> bool {
    let x = if a.marked { r & 0xffff_ffff } else { r };
    match a.op {
        AtomOp::Eq => x == a.datum,
        AtomOp::Ne => x != a.datum,
        AtomOp::Lt => x < a.datum,
        AtomOp::Le => x <= a.datum,
        AtomOp::Gt => x > a.datum,
        AtomOp::Ge => x >= a.datum,
        AtomOp::MaskedEq(m) => x & m == a.datum,
    }
}

fn eval(l: &Lowered, r: u64) -> bool {
    match l {
        Lowered::Always => true,
        Lowered::Never => false,
        Lowered::AnyOf(atoms) => atoms.iter().any(|a| eval_atom(a, r)),
    }
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn interesting(n: u32) -> Vec<u64> {
    let max = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
    let mut v = vec![0, 1, 2, 5, 38, 40, 0x28, max - 1, max];
    v.extend([
        max.wrapping_add(1),
        max.wrapping_add(0x28),
        1 << 32,
        0x1_0000_0028,
    ]);
    v.extend([u64::MAX, u64::MAX - 1, 0x8000_0000, 0x7fff_ffff, 0xfff0]);
    v
}

#[test]
fn sixteen_bit_arguments_every_value_every_operator() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for op in OPS {
        for &v in &interesting(16) {
            for &v2 in &[0u64, 0x28, 0x8000, 0x1_0000] {
                let c = cond(op, v, v2);
                for sees_high in [true, false] {
                    let l = lower(&c, Some(16), sees_high);
                    for kv in 0..=0xffffu64 {
                        // The kernel ignores bits 16-63: give them garbage.
                        let r = kv | (rng.next() << 16);
                        assert_eq!(
                            eval(&l, r),
                            expected(&c, 16, r),
                            "{op:?} {v:#x}/{v2:#x} on {r:#x}: {l:?}"
                        );
                    }
                }
                if op != Operator::MaskedEqual {
                    break; // value_two only matters for MASKED_EQ
                }
            }
        }
    }
}

#[test]
fn thirty_two_bit_arguments_ignore_the_high_word() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for op in OPS {
        for &v in &interesting(32) {
            for &v2 in &[0u64, 0x28, 0x8000_0000, 0x1_0000_0028] {
                let c = cond(op, v, v2);
                let l = lower(&c, Some(32), true);
                let mut probes: Vec<u64> = interesting(32)
                    .into_iter()
                    .flat_map(|x| [x, x ^ 1, x.wrapping_sub(1), x.wrapping_add(1)])
                    .collect();
                probes.extend((0..2000).map(|_| rng.next()));
                for low in probes {
                    for high in [0u64, 1, 0xffff_ffff, rng.next() >> 32] {
                        let r = (low & 0xffff_ffff) | (high << 32);
                        assert_eq!(
                            eval(&l, r),
                            expected(&c, 32, r),
                            "{op:?} {v:#x}/{v2:#x} on {r:#x}: {l:?}"
                        );
                    }
                }
                if op != Operator::MaskedEqual {
                    break;
                }
            }
        }
    }
}

#[test]
fn range_operators_on_32_bits_are_marked_only_where_high_words_are_compared() {
    let l = lower(&cond(Operator::Less, 38, 0), Some(32), true);
    assert_eq!(
        l,
        Lowered::AnyOf(vec![Atom {
            index: 0,
            op: AtomOp::Lt,
            datum: 38,
            marked: true
        }])
    );
    let l = lower(&cond(Operator::Less, 38, 0), Some(32), false);
    assert!(matches!(&l, Lowered::AnyOf(a) if !a[0].marked));
    // EQ needs no marker: a masked comparison with a zero high mask.
    let l = lower(&cond(Operator::Equal, 40, 0), Some(32), true);
    assert_eq!(
        l,
        Lowered::AnyOf(vec![Atom {
            index: 0,
            op: AtomOp::MaskedEq(0xffff_ffff),
            datum: 40,
            marked: false
        }])
    );
}

#[test]
fn sixty_four_bit_and_unknown_arguments_are_compared_as_written() {
    for bits in [Some(64), None] {
        for op in OPS {
            let l = lower(&cond(op, 0x1_0000_0028, 7), bits, true);
            let Lowered::AnyOf(atoms) = &l else {
                panic!("{l:?}")
            };
            assert_eq!(atoms.len(), 1);
            assert!(!atoms[0].marked);
            for r in [0x28u64, 0x1_0000_0028, 0x2_0000_0028, 7, u64::MAX] {
                assert_eq!(eval(&l, r), expected(&cond(op, 0x1_0000_0028, 7), 64, r));
            }
        }
    }
}

#[test]
fn values_the_kernel_cannot_see_make_conditions_constant() {
    let hi = 0x1_0000_0028;
    let c = |op| lower(&cond(op, hi, 0), Some(32), true);
    assert_eq!(c(Operator::Equal), Lowered::Never);
    assert_eq!(c(Operator::Greater), Lowered::Never);
    assert_eq!(c(Operator::GreaterOrEqual), Lowered::Never);
    assert_eq!(c(Operator::NotEqual), Lowered::Always);
    assert_eq!(c(Operator::Less), Lowered::Always);
    assert_eq!(c(Operator::LessOrEqual), Lowered::Always);
    let m = lower(&cond(Operator::MaskedEqual, u64::MAX, hi), Some(32), true);
    assert_eq!(m, Lowered::Never);
}

fn atom_eq(i: u32, v: u64) -> Atom {
    atom(i, AtomOp::Eq, v)
}

#[test]
fn conditions_on_distinct_arguments_multiply_out() {
    let two = Lowered::AnyOf(vec![atom_eq(0, 1), atom_eq(0, 2)]);
    let one = Lowered::AnyOf(vec![atom_eq(1, 9)]);
    let alts = alternatives(&[(0, two.clone()), (1, one.clone())]).unwrap();
    assert_eq!(
        alts,
        [
            vec![atom_eq(0, 1), atom_eq(1, 9)],
            vec![atom_eq(0, 2), atom_eq(1, 9)]
        ]
    );
    assert!(alternatives(&[(0, two.clone()), (1, Lowered::Never)])
        .unwrap()
        .is_empty());
    assert_eq!(
        alternatives(&[(0, Lowered::Always), (1, one.clone())]).unwrap(),
        [vec![always(0), atom_eq(1, 9)]]
    );
    assert_eq!(alternatives(&[]).unwrap(), [Vec::<Atom>::new()]);
}

#[test]
fn a_repeated_argument_makes_every_condition_its_own_rule() {
    let alts = alternatives(&[
        (0, Lowered::AnyOf(vec![atom_eq(0, 1)])),
        (0, Lowered::Never),
        (0, Lowered::Always),
        (2, Lowered::AnyOf(vec![atom_eq(2, 3), atom_eq(2, 4)])),
    ])
    .unwrap();
    assert_eq!(
        alts,
        [
            vec![atom_eq(0, 1)],
            vec![always(0)],
            vec![atom_eq(2, 3)],
            vec![atom_eq(2, 4)]
        ]
    );
}

#[test]
fn too_many_alternatives_are_refused() {
    let wide = Lowered::AnyOf((0..16).map(|v| atom_eq(0, v)).collect());
    let conds: Vec<(u32, Lowered)> = (0..3).map(|i| (i, wide.clone())).collect();
    assert_eq!(alternatives(&conds), Err(4096));
}
