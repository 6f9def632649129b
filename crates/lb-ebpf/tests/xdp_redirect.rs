//! XDP acceleration on a two-armed node: the client arrives on one device
//! and the remote backends sit behind others, so `lb_xdp` forwards a new
//! flow's packets out of another device than they came in on
//! (`bpf_redirect` after the FIB lookup, counted as `redirect`), where
//! `tests/xdp.rs` covers the one-armed node (`XDP_TX`).
//!
//! lb-testkit's [`Topology`]: client ns -> node ns -> one namespace per
//! backend, each on its own veth. The tc programs and `lb_xdp` run on the
//! node's client-facing device and on its backend-facing devices (the
//! devices a remote backend's route must leave through for SNAT). The
//! backends are remote (lb-core `Backend::local` false), so every flow is
//! SNATed to the node, or in DSR mode sent to its backend inside IPIP
//! (the backend side, `lb_ebpf::dsr::BackendSide`, decapsulates and
//! answers the client with the frontend's address). SNATed replies come
//! back into the backend-facing device, where XDP passes them to tc's
//! reverse SNAT. Each backend's end of its
//! veth runs the pass-through XDP program: a veth drops frames redirected
//! into it unless its peer has an XDP program (or GRO).
//!
//! Real TCP (small and 64 KiB) and UDP clients through a LoadBalancer VIP
//! and a NodePort: SNAT in native and generic XDP, DSR in native XDP; the XDP counters show every
//! client packet was redirected at XDP and none left to tc. The same over
//! IPv6 (the topology's `fd00:` addresses, VIP [`VIP_V6`], SNAT to the
//! node's IPv6 address) in native and generic XDP.
//!
//! Privileged (root). Bounded: a few dozen requests with 10 s socket
//! timeouts per test.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::*;
use lb_core::*;
use lb_ebpf::abi::DropReason;
use lb_ebpf::xdp::{self, XdpMode};
use lb_ebpf::{EbpfDataplane, LoadOptions, MapCapacity};
use lb_testkit::topology::{VIP_V4, VIP_V6};
use lb_testkit::{tcp_request, BpffsGuard, EchoServer, Topology};

const TIMEOUT: Duration = Duration::from_secs(10);

fn tag(k: usize) -> Vec<u8> {
    format!("be{k}:").into_bytes()
}

/// Turns transmit checksum offload off on the client's device, so its
/// frames carry complete checksums as frames from a wire do (XDP updates
/// them incrementally; an offloaded frame has the pseudo-header sum only).
fn full_checksums(topo: &Topology) {
    let st = topo
        .client
        .command("ethtool")
        .args(["-K", &topo.client_link.name, "tx", "off"])
        .status()
        .expect("run ethtool");
    assert!(st.success(), "ethtool -K tx off: {st}");
}

/// The client's `Icmp: InDestUnreachs` counter.
fn icmp_dest_unreachs(topo: &Topology) -> u64 {
    let snmp = topo.client.exec_ok(&["cat", "/proc/net/snmp"]).unwrap();
    let rows: Vec<Vec<&str>> = snmp
        .lines()
        .filter(|l| l.starts_with("Icmp:"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let col = rows[0].iter().position(|k| *k == "InDestUnreachs").unwrap();
    rows[1][col].parse().unwrap()
}

fn two_armed(mode: LbMode, xdp_mode: XdpMode, v6: bool) {
    lb_testkit::require_privileges();
    let topo = Topology::new(2).expect("topology");
    full_checksums(&topo);
    let mut servers = Vec::new();
    let mut passes = Vec::new();
    let mut sides = Vec::new();
    for (i, b) in topo.backends.iter().enumerate() {
        let a: IpAddr = if v6 { b.v6.into() } else { b.v4.into() };
        servers.push(EchoServer::tcp(&b.ns, SocketAddr::new(a, 8080), &tag(i + 1)).unwrap());
        servers.push(EchoServer::udp(&b.ns, SocketAddr::new(a, 5353), &tag(i + 1)).unwrap());
        let dev = b.link.name.clone();
        passes.push(
            b.ns.run_in(|| xdp::attach_pass(&dev))
                .unwrap()
                .expect("pass-through XDP on the backend's end"),
        );
        if mode == LbMode::Dsr {
            let node = topo.node_v4;
            sides.push(
                b.ns.run_in(|| lb_ebpf::dsr::BackendSide::attach(&dev, &[node]))
                    .unwrap()
                    .expect("DSR backend side"),
            );
        }
    }
    // Remote backends (not on this node).
    let backend_ips: Vec<IpAddr> = topo
        .backends
        .iter()
        .map(|b| if v6 { b.v6.into() } else { b.v4.into() })
        .collect();
    let (vip, node_ip): (IpAddr, IpAddr) = if v6 {
        (VIP_V6.into(), topo.node_v6.into())
    } else {
        (VIP_V4.into(), topo.node_v4.into())
    };
    let mut devs = vec![topo.node_client_dev.clone()];
    devs.extend(topo.backends.iter().map(|b| b.node_link.name.clone()));
    let cfg = {
        let mut c = NodeConfig::new("node-1", vec![topo.node_v4.into(), topo.node_v6.into()]);
        c.mode = mode;
        c.maglev = MaglevConfig::new(251, 7).unwrap();
        c
    };
    let bpffs = BpffsGuard::new().expect("bpffs");
    let pin_dir = bpffs.pin_path("lb");
    let _pins = Pins(pin_dir.clone());
    let (_loaded, xdp_loaded) = topo
        .node
        .run_in(|| {
            let names: Vec<&str> = devs.iter().map(String::as_str).collect();
            let l = lb_ebpf::load(&LoadOptions::new(&pin_dir, &names)).expect("load tc");
            let x = xdp::attach(&pin_dir, &devs, xdp_mode, &MapCapacity::default())
                .expect("attach XDP");
            (l, x)
        })
        .unwrap();
    assert_eq!(xdp_loaded.mode(), xdp_mode);
    assert_eq!(xdp::attachments(&pin_dir).unwrap().len(), devs.len());
    let mut dp = EbpfDataplane::open(&pin_dir, &cfg).expect("open dataplane");
    let desired = DesiredState::build(&cfg, &web_and_dns_ip(vip, &backend_ips)).unwrap();
    Reconciler::new()
        .apply(&mut dp, &desired)
        .expect("reconcile");

    // XDP cannot resolve a neighbour: a frame whose next hop the node has
    // not resolved yet goes to tc (bpf_redirect_neigh). Resolve the
    // backends first so every client frame is XDP's.
    for &b in &backend_ips {
        tcp_request(&topo.node, SocketAddr::new(b, 8080), b"arp", TIMEOUT)
            .expect("node -> backend");
    }

    // DSR: the backends' replies come back through this node (their only
    // link), which discards those from its own address (NodePort) as
    // martians; a DSR node is not on the reply path in practice.
    let frontends = |port: u16, node_port: u16| {
        let mut v = vec![SocketAddr::new(vip, port)];
        if mode != LbMode::Dsr {
            v.push(SocketAddr::new(node_ip, node_port));
        }
        v
    };
    let (tcp_seen, udp_seen) = echo_rounds(
        &topo.client,
        &frontends(80, 30080),
        &frontends(53, 30053),
        &format!("{mode:?}/{xdp_mode}"),
    );
    let seen: std::collections::BTreeSet<u8> = tcp_seen.union(&udp_seen).copied().collect();
    assert_eq!(seen.len(), 2, "both backends served ({seen:?})");

    let s = xdp::stats(&pin_dir).unwrap();
    let c = dp.counters().unwrap();
    let packets: u64 = c.services.values().map(|s| s.packets).sum();
    assert!(packets > 50, "{packets}");
    let too_big = c.drops_for(DropReason::FragNeeded);
    if mode == LbMode::Dsr {
        // IPIP adds 20 bytes: the client's full-sized segments do not fit
        // the 1500-byte backend links. The node answers each with ICMP
        // fragmentation needed (MTU 1480) and the client's TCP sends
        // smaller ones; the transfers above completed.
        assert!(too_big > 0, "full-sized segments were answered");
        let decap: u64 = sides.iter().map(|s| s.stats().unwrap().decapsulated).sum();
        assert_eq!(decap + too_big, packets, "decapsulated or answered");
        let icmp = icmp_dest_unreachs(&topo);
        assert!(icmp >= 1, "the client got fragmentation needed ({icmp})");
        let route = topo
            .client
            .exec_ok(&["ip", "route", "get", &VIP_V4.to_string()])
            .unwrap();
        assert!(route.contains("mtu 1480"), "path MTU learnt: {route}");
        assert_eq!(dp.maps().snat.keys().count(), 0, "DSR holds no SNAT state");
    } else {
        assert_eq!(too_big, 0);
        let snat = if v6 {
            dp.maps().snat6.keys().count()
        } else {
            dp.maps().snat.keys().count()
        };
        assert!(snat > 0, "remote backends are SNATed");
    }
    // Over-MTU packets go to tc, which answers them (XDP cannot).
    assert_eq!(
        (s.redirect, s.tx, s.pass),
        (packets - too_big, 0, too_big),
        "{mode:?}/{xdp_mode}: every client packet redirected out of a backend device at XDP ({s:?})"
    );
    assert_eq!(s.drop, 0, "{s:?}");
}

#[test]
fn native_xdp_snat_redirects_to_a_second_device() {
    two_armed(LbMode::Snat, XdpMode::Native, false);
}

#[test]
fn native_xdp_dsr_redirects_to_a_second_device() {
    two_armed(LbMode::Dsr, XdpMode::Native, false);
}

#[test]
fn generic_xdp_snat_redirects_to_a_second_device() {
    two_armed(LbMode::Snat, XdpMode::Generic, false);
}

#[test]
fn native_xdp_snat_redirects_ipv6_to_a_second_device() {
    two_armed(LbMode::Snat, XdpMode::Native, true);
}

#[test]
fn generic_xdp_snat_redirects_ipv6_to_a_second_device() {
    two_armed(LbMode::Snat, XdpMode::Generic, true);
}
