//! Packet-level tests of the DSR backend side (`bpf/lb_dsr_backend.c`):
//! `BPF_PROG_TEST_RUN` on its ingress and egress programs with crafted IPIP
//! frames (no device, no namespace). Privileged (root); a few dozen test
//! runs.

mod common;

use std::net::Ipv4Addr;

use common::*;
use lb_ebpf::dsr::{BackendSide, BackendStats, PROG_DSR_EGRESS, PROG_DSR_INGRESS};

const NODE1: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
const NODE2: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 201, 1, 2);

/// `inner` (an Ethernet frame) inside an outer IPv4 header `src -> BACKEND`
/// (protocol 4, DF) carrying `be_port` in its Identification, as a node's
/// `lb_dsr_encap` builds it.
fn ipip(src: Ipv4Addr, be_port: u16, inner: &[u8]) -> Vec<u8> {
    let ip = &inner[14..];
    let mut outer = [0u8; 20];
    outer[0] = 0x45;
    outer[2..4].copy_from_slice(&((ip.len() + 20) as u16).to_be_bytes());
    outer[4..6].copy_from_slice(&be_port.to_be_bytes());
    outer[6] = 0x40;
    outer[8] = 64;
    outer[9] = 4;
    outer[12..16].copy_from_slice(&src.octets());
    outer[16..20].copy_from_slice(&BACKEND.octets());
    let sum = lb_testkit::internet_checksum(&outer);
    outer[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut f = inner[..14].to_vec();
    f.extend_from_slice(&outer);
    f.extend_from_slice(ip);
    f
}

fn side(nodes: &[Ipv4Addr]) -> BackendSide {
    lb_testkit::require_privileges();
    BackendSide::load(nodes).expect("load the DSR backend side")
}

fn ingress(side: &mut BackendSide, frame: &[u8]) -> (u32, Vec<u8>) {
    run(side.program_mut(PROG_DSR_INGRESS).unwrap(), frame)
}

fn egress(side: &mut BackendSide, frame: &[u8]) -> (u32, Vec<u8>) {
    run(side.program_mut(PROG_DSR_EGRESS).unwrap(), frame)
}

#[test]
fn ipip_from_an_allowed_node_is_decapsulated_and_replies_reverse_translated() {
    let mut s = side(&[NODE1]);
    let syn = tcp("192.168.10.2:40000", "198.51.100.10:80");
    let (rv, out) = ingress(&mut s, &ipip(NODE1, 8080, &syn));
    assert_eq!(rv, TC_ACT_OK);
    assert_eq!(
        endpoints(&out),
        (sa("192.168.10.2:40000"), sa("10.201.1.2:8080"))
    );
    assert_eq!(lb_testkit::parse(&out).unwrap().payload, b"hello");

    let (rv, back) = egress(&mut s, &tcp("10.201.1.2:8080", "192.168.10.2:40000"));
    assert_eq!(rv, TC_ACT_OK);
    assert_eq!(
        endpoints(&back),
        (sa("198.51.100.10:80"), sa("192.168.10.2:40000"))
    );
    let st = s.stats().unwrap();
    assert_eq!((st.decapsulated, st.reversed, st.unknown_node), (1, 1, 0));
}

#[test]
fn ipip_from_an_unknown_source_is_dropped_counted_and_leaves_no_flow() {
    let mut s = side(&[NODE1]);
    let syn = tcp("192.168.10.2:40001", "198.51.100.10:80");
    let (rv, _) = ingress(&mut s, &ipip(NODE2, 8080, &syn));
    assert_eq!(rv, TC_ACT_SHOT);
    assert_eq!(
        s.stats().unwrap(),
        BackendStats {
            unknown_node: 1,
            ..Default::default()
        }
    );
    // No reply translation was planted: the backend's packet leaves as is.
    let reply = tcp("10.201.1.2:8080", "192.168.10.2:40001");
    let (rv, back) = egress(&mut s, &reply);
    assert_eq!(rv, TC_ACT_OK);
    assert_eq!(back, reply);

    // Plain (not IPIP) traffic is not the backend side's business.
    let plain = tcp("10.0.2.2:40000", "10.201.1.2:8080");
    assert_eq!(ingress(&mut s, &plain), (TC_ACT_OK, plain.clone()));
    assert_eq!(s.stats().unwrap().unknown_node, 1);
}

#[test]
fn the_allowlist_can_be_replaced_at_run_time() {
    let mut s = side(&[NODE1]);
    assert_eq!(s.nodes().unwrap().into_iter().collect::<Vec<_>>(), [NODE1]);
    let syn = tcp("192.168.10.2:40002", "198.51.100.10:80");
    assert_eq!(ingress(&mut s, &ipip(NODE2, 8080, &syn)).0, TC_ACT_SHOT);

    s.set_nodes(&[NODE2]).unwrap();
    assert_eq!(s.nodes().unwrap().into_iter().collect::<Vec<_>>(), [NODE2]);
    let (rv, out) = ingress(&mut s, &ipip(NODE2, 8080, &syn));
    assert_eq!(rv, TC_ACT_OK);
    assert_eq!(endpoints(&out).1, sa("10.201.1.2:8080"));
    assert_eq!(ingress(&mut s, &ipip(NODE1, 8080, &syn)).0, TC_ACT_SHOT);

    // Too many addresses: refused, the allowlist unchanged.
    let many: Vec<Ipv4Addr> = (0..=lb_ebpf::dsr::DSR_NODES_MAX as u32)
        .map(|i| Ipv4Addr::from(0x0a00_0000 + i))
        .collect();
    assert!(s.set_nodes(&many).is_err());
    assert_eq!(s.nodes().unwrap().into_iter().collect::<Vec<_>>(), [NODE2]);
    let st = s.stats().unwrap();
    assert_eq!((st.decapsulated, st.unknown_node), (1, 2));
}
