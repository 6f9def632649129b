//! `src/abi.rs` against `bpf/lb_abi.h`: every mirrored struct's size and
//! field offsets must equal those in the BTF of the built object.
//! Unprivileged.

use std::collections::HashMap;
use std::mem::{offset_of, size_of};

use lb_ebpf::abi::*;
use object::{Object, ObjectSection};

/// A struct's size and `(field, byte offset)` list from BTF.
#[derive(Debug)]
struct Layout {
    size: usize,
    fields: Vec<(String, usize)>,
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

/// Reads the named structs of the `.BTF` section of an ELF object.
fn btf_structs(elf: &[u8]) -> HashMap<String, Layout> {
    let file = object::File::parse(elf).expect("ELF");
    let btf = file
        .section_by_name(".BTF")
        .expect(".BTF section (built with -g)")
        .data()
        .unwrap();
    assert_eq!(u16::from_le_bytes([btf[0], btf[1]]), 0xeb9f, "BTF magic");
    let hdr = u32_at(btf, 4) as usize;
    let (toff, tlen) = (u32_at(btf, 8) as usize, u32_at(btf, 12) as usize);
    let (soff, slen) = (u32_at(btf, 16) as usize, u32_at(btf, 20) as usize);
    let types = &btf[hdr + toff..hdr + toff + tlen];
    let strs = &btf[hdr + soff..hdr + soff + slen];
    let name = |off: u32| {
        let s = &strs[off as usize..];
        String::from_utf8_lossy(&s[..s.iter().position(|&c| c == 0).unwrap()]).into_owned()
    };
    let mut out = HashMap::new();
    let mut p = 0;
    while p < types.len() {
        let (name_off, info, size) = (u32_at(types, p), u32_at(types, p + 4), u32_at(types, p + 8));
        let (kind, vlen, kflag) = (
            (info >> 24) & 0x1f,
            (info & 0xffff) as usize,
            info >> 31 == 1,
        );
        p += 12;
        let tail = match kind {
            1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
            3 => 12,                      // ARRAY
            4 | 5 | 15 | 19 => 12 * vlen, // STRUCT, UNION, DATASEC, ENUM64
            6 | 13 => 8 * vlen,           // ENUM, FUNC_PROTO
            2 | 7..=12 | 16 | 18 => 0,
            k => panic!("unknown BTF kind {k}"),
        };
        if kind == 4 && name_off != 0 {
            let fields = (0..vlen)
                .map(|i| {
                    let m = &types[p + 12 * i..];
                    let bits = u32_at(m, 8);
                    let bits = if kflag { bits & 0xff_ffff } else { bits };
                    (name(u32_at(m, 0)), (bits / 8) as usize)
                })
                .collect();
            out.insert(
                name(name_off),
                Layout {
                    size: size as usize,
                    fields,
                },
            );
        }
        p += tail;
    }
    out
}

macro_rules! check {
    ($layouts:expr, $c:literal, $t:ty, [$($f:ident),* $(,)?]) => {{
        let l = $layouts.get($c).unwrap_or_else(|| panic!("struct {} not in BTF", $c));
        assert_eq!(l.size, size_of::<$t>(), "size of {}", $c);
        let want: Vec<(String, usize)> = vec![$((stringify!($f).to_string(), offset_of!($t, $f))),*];
        assert_eq!(l.fields, want, "fields of {}", $c);
    }};
}

#[test]
fn rust_mirrors_match_the_btf_of_lb_tc() {
    let l = btf_structs(lb_ebpf::loader::TC_OBJECT);
    check!(
        l,
        "lb4_key",
        Lb4Key,
        [address, dport, backend_slot, proto, scope, pad]
    );
    check!(
        l,
        "lb4_service",
        Lb4Service,
        [
            backend_id,
            affinity_timeout,
            total_weight,
            rev_nat_index,
            count,
            total,
            weight,
            flags,
            fe_type,
            pad,
            stats_slot
        ]
    );
    check!(
        l,
        "lb4_backend",
        Lb4Backend,
        [address, port, proto, flags, stats_slot]
    );
    check!(l, "lb4_reverse_nat", Lb4ReverseNat, [address, port, pad]);
    check!(
        l,
        "ct4_key",
        Ct4Key,
        [saddr, daddr, sport, dport, proto, dir, pad]
    );
    check!(
        l,
        "ct4_entry",
        Ct4Entry,
        [
            backend_id,
            rev_nat_index,
            frontend_addr,
            frontend_port,
            snat_port,
            flags,
            pad,
            last_seen
        ]
    );
    check!(
        l,
        "lb4_affinity_key",
        Lb4AffinityKey,
        [client, rev_nat_index]
    );
    check!(
        l,
        "lb_affinity_val",
        LbAffinityVal,
        [last_used, backend_id, pad]
    );
    check!(
        l,
        "lb4_src_range_key",
        Lb4SrcRangeKey,
        [prefixlen, rev_nat_index, addr]
    );
    check!(
        l,
        "lb_config",
        LbConfig,
        [
            maglev_seed,
            maglev_table_size,
            node_ip_count,
            snat_port_min,
            snat_port_max,
            node_ips,
            lb_mode,
            node_ip6_count,
            node_ips6
        ]
    );
    check!(l, "lb_svc_stats", LbSvcStats, [packets, bytes, new_flows]);
    check!(l, "lb_svc_meta", LbSvcMeta, [name]);
    check!(l, "lb_be_meta", LbBeMeta, [zone]);
    check!(l, "lb4_sock_key", Lb4SockKey, [cookie, address, port, pad]);
    check!(
        l,
        "lb4_sock_val",
        Lb4SockVal,
        [address, port, pad, rev_nat_index]
    );
    check!(
        l,
        "lb4_snat_entry",
        Lb4SnatEntry,
        [
            client_addr,
            frontend_addr,
            client_port,
            frontend_port,
            rev_nat_index,
            last_seen
        ]
    );
}

#[test]
fn ipv6_mirrors_match_the_btf_of_lb_tc() {
    let l = btf_structs(lb_ebpf::loader::TC_OBJECT);
    check!(
        l,
        "lb6_key",
        Lb6Key,
        [address, dport, backend_slot, proto, scope, pad]
    );
    check!(
        l,
        "lb6_backend",
        Lb6Backend,
        [address, port, proto, flags, stats_slot]
    );
    check!(l, "lb6_reverse_nat", Lb6ReverseNat, [address, port, pad]);
    check!(
        l,
        "ct6_key",
        Ct6Key,
        [saddr, daddr, sport, dport, proto, dir, pad]
    );
    check!(
        l,
        "ct6_entry",
        Ct6Entry,
        [
            backend_id,
            rev_nat_index,
            frontend_addr,
            frontend_port,
            snat_port,
            flags,
            pad,
            last_seen
        ]
    );
    check!(
        l,
        "lb6_snat_entry",
        Lb6SnatEntry,
        [
            client_addr,
            frontend_addr,
            client_port,
            frontend_port,
            rev_nat_index,
            last_seen
        ]
    );
    check!(
        l,
        "lb6_affinity_key",
        Lb6AffinityKey,
        [client, rev_nat_index]
    );
    check!(
        l,
        "lb6_src_range_key",
        Lb6SrcRangeKey,
        [prefixlen, rev_nat_index, addr]
    );
    check!(l, "lb6_sock_key", Lb6SockKey, [cookie, address, port, pad]);
    check!(
        l,
        "lb6_sock_val",
        Lb6SockVal,
        [address, port, pad, rev_nat_index]
    );
}

#[test]
fn the_socket_object_has_the_same_layouts() {
    let tc = btf_structs(lb_ebpf::loader::TC_OBJECT);
    let sock = btf_structs(lb_ebpf::loader::SOCK_OBJECT);
    for name in [
        "lb4_key",
        "lb4_service",
        "lb4_backend",
        "lb4_sock_key",
        "lb4_sock_val",
        "lb6_key",
        "lb6_backend",
        "lb6_sock_key",
        "lb6_sock_val",
    ] {
        let (a, b) = (&tc[name], &sock[name]);
        assert_eq!((a.size, &a.fields), (b.size, &b.fields), "{name}");
    }
}

#[test]
fn aya_lpm_key_matches_lb4_src_range_key() {
    use lb_ebpf::maps::SrcRangeKey;
    assert_eq!(size_of::<SrcRangeKey>(), size_of::<Lb4SrcRangeKey>());
}

#[test]
fn aya_lpm_key_matches_lb6_src_range_key() {
    use lb_ebpf::maps::SrcRangeKey6;
    assert_eq!(size_of::<SrcRangeKey6>(), size_of::<Lb6SrcRangeKey>());
}
