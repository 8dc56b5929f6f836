use super::*;

/// Builds raw BTF from (name, info, size_or_type, extra words) entries.
struct Builder {
    types: Vec<u8>,
    strings: Vec<u8>,
}

impl Builder {
    fn new() -> Self {
        Builder {
            types: Vec::new(),
            strings: vec![0],
        }
    }

    fn string(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        off
    }

    fn ty(&mut self, name: &str, kind: u32, kind_flag: bool, vlen: u32, st: u32, extra: &[u32]) {
        let name = self.string(name);
        let info = (u32::from(kind_flag) << 31) | (kind << 24) | vlen;
        for word in [name, info, st].iter().chain(extra) {
            self.types.extend_from_slice(&word.to_ne_bytes());
        }
    }

    fn member(&mut self, name: &str, type_id: u32, offset: u32) -> [u32; 3] {
        [self.string(name), type_id, offset]
    }

    fn build(self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_ne_bytes());
        out.push(1);
        out.push(0);
        out.extend_from_slice(&24u32.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&(self.types.len() as u32).to_ne_bytes());
        out.extend_from_slice(&(self.types.len() as u32).to_ne_bytes());
        out.extend_from_slice(&(self.strings.len() as u32).to_ne_bytes());
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strings);
        out
    }
}

/// [1] int, [2] struct inner { int a; int b; } (8), [3] typedef inner_t = 2,
/// [4] struct outer { int x; union { int y; inner_t in; }; int bits:3 } where the
/// anonymous union is [5], [6] const -> 4, [7] func_proto (3 params), [8] ptr -> 7,
/// [9] typedef fnptr = 8.
fn sample() -> Btf {
    let mut b = Builder::new();
    b.ty("int", kind::INT, false, 0, 4, &[0x20]);
    let m_a = b.member("a", 1, 0);
    let m_b = b.member("b", 1, 32);
    b.ty("inner", kind::STRUCT, false, 2, 8, &[m_a, m_b].concat());
    b.ty("inner_t", kind::TYPEDEF, false, 0, 2, &[]);
    let m_x = b.member("x", 1, 0);
    let m_u = b.member("", 5, 64);
    let m_bits = b.member("bits", 1, (3 << 24) | 192);
    b.ty(
        "outer",
        kind::STRUCT,
        true,
        3,
        32,
        &[m_x, m_u, m_bits].concat(),
    );
    let m_y = b.member("y", 1, 0);
    let m_in = b.member("in", 3, 0);
    b.ty("", kind::UNION, false, 2, 8, &[m_y, m_in].concat());
    b.ty("", kind::CONST, false, 0, 4, &[]);
    b.ty("", kind::FUNC_PROTO, false, 3, 0, &[0, 1, 0, 1, 0, 1]);
    b.ty("", kind::PTR, false, 0, 7, &[]);
    b.ty("fnptr", kind::TYPEDEF, false, 0, 8, &[]);
    // [10] enum e { E_ONE = 1, E_MINUS = -2 } (signed), [11] fnptr arr[5],
    // [12] struct holder { int x; fnptr arr[5]; }
    let e_one = b.string("E_ONE");
    let e_minus = b.string("E_MINUS");
    b.ty(
        "e",
        kind::ENUM,
        true,
        2,
        4,
        &[e_one, 1, e_minus, (-2i32) as u32],
    );
    b.ty("", kind::ARRAY, false, 0, 0, &[9, 1, 5]);
    let m_hx = b.member("x", 1, 0);
    let m_arr = b.member("arr", 11, 64);
    b.ty(
        "holder",
        kind::STRUCT,
        false,
        2,
        48,
        &[m_hx, m_arr].concat(),
    );
    Btf::parse(&b.build()).expect("sample parses")
}

#[test]
fn resolves_enumerators_and_arrays() {
    let btf = sample();
    assert_eq!(btf.enum_value("E_ONE").unwrap(), 1);
    assert_eq!(btf.enum_value("E_MINUS").unwrap(), -2);
    assert!(matches!(
        btf.enum_value("E_NONE"),
        Err(BtfError::NotFound {
            what: "enumerator",
            ..
        })
    ));
    assert_eq!(btf.member_offset("holder.arr").unwrap(), 8);
    assert_eq!(btf.member_array("holder.arr").unwrap(), (8, 5));
    assert!(btf.member_array("holder.x").is_err());
}

#[test]
fn resolves_nested_and_anonymous_members() {
    let btf = sample();
    assert_eq!(btf.len(), 13);
    assert_eq!(btf.member_offset("outer.x").unwrap(), 0);
    assert_eq!(btf.member_offset("outer.y").unwrap(), 8);
    assert_eq!(btf.member_offset("outer.in.b").unwrap(), 12);
    assert_eq!(btf.member_offset("inner.b").unwrap(), 4);
    assert_eq!(btf.member_size("outer.in").unwrap(), 8);
    assert_eq!(btf.member_size("outer.in.a").unwrap(), 4);
}

#[test]
fn refuses_bitfields_and_unknown_names() {
    let btf = sample();
    assert!(matches!(
        btf.member_offset("outer.bits"),
        Err(BtfError::Unusable { .. })
    ));
    assert!(matches!(
        btf.member_offset("outer.nope"),
        Err(BtfError::NotFound { what: "member", .. })
    ));
    assert!(matches!(
        btf.member_offset("nope.x"),
        Err(BtfError::NotFound { what: "struct", .. })
    ));
    assert!(btf.member_offset("outer").is_err());
}

#[test]
fn counts_function_pointer_parameters() {
    let btf = sample();
    assert_eq!(btf.typedef_fn_params("fnptr").unwrap(), 3);
    assert!(btf.typedef_fn_params("inner_t").is_err());
}

#[test]
fn rejects_garbage() {
    assert!(matches!(Btf::parse(&[0; 8]), Err(BtfError::Malformed(_))));
    let mut data = sample_bytes_truncated();
    data.truncate(30);
    assert!(Btf::parse(&data).is_err());
}

fn sample_bytes_truncated() -> Vec<u8> {
    let mut b = Builder::new();
    b.ty("int", kind::INT, false, 0, 4, &[0x20]);
    b.build()
}

/// The running kernel's BTF, when there is one: the offsets moat needs resolve.
#[test]
fn resolves_the_running_kernel() {
    if !Path::new(VMLINUX).exists() {
        eprintln!("SKIP: {VMLINUX} is missing");
        return;
    }
    let btf = Btf::from_sys_fs().expect("vmlinux BTF parses");
    assert!(btf.len() > 1000);
    let pid = btf.member_offset("task_struct.pid").unwrap();
    let tgid = btf.member_offset("task_struct.tgid").unwrap();
    assert_eq!(tgid, pid + 4, "pid and tgid are adjacent pid_t fields");
    assert_eq!(btf.member_size("task_struct.seccomp.mode").unwrap(), 4);
    // pt_regs is the user ABI on x86-64: orig_ax is the 16th word.
    if cfg!(target_arch = "x86_64") {
        assert_eq!(btf.member_offset("pt_regs.orig_ax").unwrap(), 15 * 8);
        assert_eq!(btf.member_offset("pt_regs.di").unwrap(), 14 * 8);
        assert_eq!(btf.member_offset("task_struct.thread_info").unwrap(), 0);
    }
    let params = btf
        .typedef_fn_params("btf_trace_sched_process_exit")
        .unwrap();
    assert!(params == 2 || params == 3, "{params}");
    // The chain to a task's pids cgroup id (see kernel::resolve_params).
    let pids = btf.enum_value("pids_cgrp_id").unwrap();
    let (elem, count) = btf.member_array("css_set.subsys").unwrap();
    assert_eq!(elem, 8);
    assert!(pids >= 0 && pids < i64::from(count), "{pids} of {count}");
    assert_eq!(btf.member_size("kernfs_node.id").unwrap(), 8);
    assert_eq!(btf.member_size("cgroup.kn").unwrap(), 8);
}
