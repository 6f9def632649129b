//! Connection-tracking lifetimes: the datapath stamps `last_seen` and flags
//! FIN/RST; `EbpfDataplane::gc(now)` removes what expired (CT, SNAT is
//! covered in tests/snat.rs, affinity, socket-LB entries). Privileged.

mod common;

use common::*;
use lb_core::*;
use lb_ebpf::abi::{Ct4Key, CT_F_CLOSING, CT_REPLY, CT_SERVICE};
use lb_ebpf::{now_secs, CtTimeouts, GcStats};
use lb_testkit::PacketBuilder;

fn ct_entries(fx: &mut Fixture) -> Vec<(Ct4Key, lb_ebpf::abi::Ct4Entry)> {
    fx.dp.maps().ct.iter().collect::<Result<_, _>>().unwrap()
}

fn fixture() -> Fixture {
    let mut fx = Fixture::new(MaglevConfig::default());
    let mut sticky = service(
        "default/sticky",
        &[("10.96.0.12:80", FrontendType::ClusterIp)],
        &["10.0.1.7:8080"],
    );
    sticky.session_affinity = SessionAffinity::ClientIp { timeout_secs: 30 };
    fx.apply(&[
        service(
            "default/web",
            &[("10.96.0.10:80", FrontendType::ClusterIp)],
            &["10.0.1.5:8080"],
        ),
        service(
            "default/dns",
            &[("10.96.0.11:53/UDP", FrontendType::ClusterIp)],
            &["10.0.1.6:5353/UDP"],
        ),
        sticky,
    ]);
    fx
}

#[test]
fn idle_flows_expire_by_protocol() {
    let mut fx = fixture();
    let now = now_secs();
    fx.ingress(&tcp("192.168.5.2:40000", "10.96.0.10:80"));
    fx.ingress(&udp("192.168.5.2:40001", "10.96.0.11:53"));
    let ct = ct_entries(&mut fx);
    assert_eq!(ct.len(), 4, "two flows, two directions each");
    for (_, e) in &ct {
        assert!(e.last_seen.abs_diff(now) <= 1, "stamped: {e:?}");
    }
    assert_eq!(fx.dp.gc(now).unwrap(), GcStats::default());
    // After the UDP lifetime only the TCP flow is left.
    let stats = fx.dp.gc(now + 61).unwrap();
    assert_eq!(stats.ct, 2);
    assert!(ct_entries(&mut fx).iter().all(|(k, _)| k.proto == 6));
    // After the TCP lifetime nothing is.
    assert_eq!(fx.dp.gc(now + 6 * 3600 + 2).unwrap().ct, 2);
    assert!(ct_entries(&mut fx).is_empty());
    // Custom lifetimes.
    fx.ingress(&udp("192.168.5.2:40002", "10.96.0.11:53"));
    let short = CtTimeouts {
        other: 5,
        ..CtTimeouts::default()
    };
    assert_eq!(fx.dp.gc_with(now + 3, &short).unwrap().ct, 0);
    assert_eq!(fx.dp.gc_with(now + 7, &short).unwrap().ct, 2);
}

#[test]
fn fin_or_rst_closes_both_directions_after_a_grace() {
    let mut fx = fixture();
    let now = now_secs();
    let (client, vip, be) = ("192.168.5.2:40000", "10.96.0.10:80", "10.0.1.5:8080");
    fx.ingress(&tcp(client, vip));
    // A second flow stays open.
    fx.ingress(&tcp("192.168.5.2:40009", vip));
    // The backend closes (FIN on egress): both directions are closing.
    let fin = PacketBuilder::tcp(sa(be), sa(client))
        .fin()
        .ack()
        .build()
        .unwrap();
    let (_, out) = fx.egress(&fin);
    assert_eq!(endpoints(&out).0, sa(vip));
    let closing: Vec<_> = ct_entries(&mut fx)
        .into_iter()
        .filter(|(_, e)| e.flags & CT_F_CLOSING != 0)
        .map(|(k, _)| k.dir)
        .collect();
    assert_eq!(closing.len(), 2, "{closing:?}");
    assert!(closing.contains(&CT_SERVICE) && closing.contains(&CT_REPLY));
    assert_eq!(fx.dp.gc(now + 5).unwrap().ct, 0, "within the grace");
    assert_eq!(fx.dp.gc(now + 12).unwrap().ct, 1, "after the grace");
    // The reply entry keeps the tuple reserved through the backend's
    // TIME_WAIT.
    let left: Vec<_> = ct_entries(&mut fx);
    assert_eq!(left.len(), 3, "{left:?}");
    assert_eq!(fx.dp.gc(now + 67).unwrap().ct, 1, "after TIME_WAIT");
    assert_eq!(ct_entries(&mut fx).len(), 2, "the open flow stays");

    // A client RST closes as well; a new SYN on the tuple starts over.
    let c2 = "192.168.5.2:40009";
    let rst = PacketBuilder::tcp(sa(c2), sa(vip)).rst().build().unwrap();
    fx.ingress(&rst);
    assert!(ct_entries(&mut fx)
        .iter()
        .all(|(_, e)| e.flags & CT_F_CLOSING != 0));
    let (_, out) = fx.ingress(&tcp(c2, vip));
    assert_eq!(endpoints(&out).1, sa(be));
    let fresh = ct_entries(&mut fx)
        .into_iter()
        .filter(|(k, _)| k.dir == CT_SERVICE)
        .all(|(_, e)| e.flags & CT_F_CLOSING == 0);
    assert!(fresh, "a new SYN re-creates the entry open");
}

#[test]
fn affinity_entries_expire_with_their_frontend_timeout() {
    let mut fx = fixture();
    let now = now_secs();
    fx.ingress(&tcp("192.168.5.2:40000", "10.96.0.12:80"));
    assert_eq!(fx.dp.maps().affinity.keys().count(), 1);
    assert_eq!(fx.dp.gc(now + 20).unwrap().affinity, 0);
    assert_eq!(fx.dp.gc(now + 32).unwrap().affinity, 1);
    assert_eq!(fx.dp.maps().affinity.keys().count(), 0);
}

#[test]
fn both_directions_live_as_long_as_the_flow() {
    let mut fx = fixture();
    let now = now_secs();
    fx.ingress(&udp("192.168.5.2:40000", "10.96.0.11:53"));
    // Only the backend has talked lately (replies, egress): the client's
    // direction is old, yet the flow is alive.
    let ct = ct_entries(&mut fx);
    assert_eq!(ct.len(), 2);
    for (k, mut e) in ct {
        e.last_seen = if k.dir == CT_SERVICE { now - 100 } else { now };
        fx.dp.maps().ct.insert(k, e, 0).unwrap();
    }
    assert_eq!(fx.dp.gc(now).unwrap().ct, 0, "the pair is kept");
    assert_eq!(ct_entries(&mut fx).len(), 2);
    // The same the other way round.
    for (k, mut e) in ct_entries(&mut fx) {
        e.last_seen = if k.dir == CT_REPLY { now - 100 } else { now };
        fx.dp.maps().ct.insert(k, e, 0).unwrap();
    }
    assert_eq!(fx.dp.gc(now).unwrap().ct, 0, "the pair is kept");
    // Once both are idle, both go.
    assert_eq!(fx.dp.gc(now + 61).unwrap().ct, 2);
    assert!(ct_entries(&mut fx).is_empty());
}

/// Synthetic flows for the family-parity test: the same flows, written as
/// the datapath writes them, into the `lb4_*` maps and into the `lb6_*`
/// maps.
mod parity {
    use super::*;
    use lb_ebpf::abi::*;
    use std::net::IpAddr;

    /// One tracked direction: `(src, sport, dst, dport, proto, dir)`.
    pub type Tuple = (IpAddr, u16, IpAddr, u16, u8, u8);

    /// A CT entry's fields.
    pub struct Entry {
        pub backend_id: u32,
        pub rev_nat: u32,
        pub frontend: (IpAddr, u16),
        pub snat_port: u16,
        pub flags: u16,
        pub last_seen: u64,
    }

    fn v4(a: IpAddr) -> u32 {
        match a {
            IpAddr::V4(a) => u32::from_ne_bytes(a.octets()),
            IpAddr::V6(_) => panic!("{a}"),
        }
    }

    fn v6(a: IpAddr) -> [u8; 16] {
        match a {
            IpAddr::V6(a) => a.octets(),
            IpAddr::V4(_) => panic!("{a}"),
        }
    }

    /// The `lb4_ct` / `lb4_snat` key of IPv4 tuple `t`.
    fn key4(t: Tuple) -> Ct4Key {
        Ct4Key {
            saddr: v4(t.0),
            daddr: v4(t.2),
            sport: t.1.to_be(),
            dport: t.3.to_be(),
            proto: t.4,
            dir: t.5,
            pad: [0; 2],
        }
    }

    /// The `lb6_ct` / `lb6_snat` key of IPv6 tuple `t`.
    fn key6(t: Tuple) -> Ct6Key {
        Ct6Key {
            saddr: v6(t.0),
            daddr: v6(t.2),
            sport: t.1.to_be(),
            dport: t.3.to_be(),
            proto: t.4,
            dir: t.5,
            pad: [0; 2],
        }
    }

    pub fn ct(fx: &mut Fixture, t: Tuple, e: &Entry) {
        let maps = fx.dp.maps();
        if t.0.is_ipv4() {
            let k = key4(t);
            let v = Ct4Entry {
                backend_id: e.backend_id,
                rev_nat_index: e.rev_nat,
                frontend_addr: v4(e.frontend.0),
                frontend_port: e.frontend.1.to_be(),
                snat_port: e.snat_port.to_be(),
                flags: e.flags,
                last_seen: e.last_seen,
                ..Ct4Entry::default()
            };
            maps.ct.insert(k, v, 0).unwrap();
        } else {
            let k = key6(t);
            let v = Ct6Entry {
                backend_id: e.backend_id,
                rev_nat_index: e.rev_nat,
                frontend_addr: v6(e.frontend.0),
                frontend_port: e.frontend.1.to_be(),
                snat_port: e.snat_port.to_be(),
                flags: e.flags,
                last_seen: e.last_seen,
                ..Ct6Entry::default()
            };
            maps.ct6.insert(k, v, 0).unwrap();
        }
    }

    /// A SNAT entry keyed by reply tuple `t`, for client `c` of frontend `f`.
    pub fn snat(fx: &mut Fixture, t: Tuple, c: (IpAddr, u16), f: (IpAddr, u16), last_seen: u64) {
        let maps = fx.dp.maps();
        if t.0.is_ipv4() {
            let k = key4(t);
            let v = Lb4SnatEntry {
                client_addr: v4(c.0),
                frontend_addr: v4(f.0),
                client_port: c.1.to_be(),
                frontend_port: f.1.to_be(),
                rev_nat_index: 0,
                last_seen,
            };
            maps.snat.insert(k, v, 0).unwrap();
        } else {
            let k = key6(t);
            let v = Lb6SnatEntry {
                client_addr: v6(c.0),
                frontend_addr: v6(f.0),
                client_port: c.1.to_be(),
                frontend_port: f.1.to_be(),
                rev_nat_index: 0,
                last_seen,
            };
            maps.snat6.insert(k, v, 0).unwrap();
        }
    }

    pub fn affinity(fx: &mut Fixture, client: IpAddr, rev_nat: u32, backend_id: u32, now: u64) {
        let maps = fx.dp.maps();
        let v = LbAffinityVal {
            last_used: now,
            backend_id,
            pad: 0,
        };
        if client.is_ipv4() {
            let k = Lb4AffinityKey {
                client: v4(client),
                rev_nat_index: rev_nat,
            };
            maps.affinity.insert(k, v, 0).unwrap();
        } else {
            let k = Lb6AffinityKey {
                client: v6(client),
                rev_nat_index: rev_nat,
            };
            maps.affinity6.insert(k, v, 0).unwrap();
        }
    }

    pub fn sock_rev(
        fx: &mut Fixture,
        cookie: u64,
        be: (IpAddr, u16),
        fe: (IpAddr, u16),
        rev_nat: u32,
    ) {
        let maps = fx.dp.maps();
        if be.0.is_ipv4() {
            let k = Lb4SockKey {
                cookie,
                address: v4(be.0),
                port: be.1.to_be(),
                pad: 0,
            };
            let v = Lb4SockVal {
                address: v4(fe.0),
                port: fe.1.to_be(),
                pad: 0,
                rev_nat_index: rev_nat,
            };
            maps.sock_rev.insert(k, v, 0).unwrap();
        } else {
            let k = Lb6SockKey {
                cookie,
                address: v6(be.0),
                port: be.1.to_be(),
                pad: [0; 3],
            };
            let v = Lb6SockVal {
                address: v6(fe.0),
                port: fe.1.to_be(),
                pad: 0,
                rev_nat_index: rev_nat,
            };
            maps.sock_rev6.insert(k, v, 0).unwrap();
        }
    }

    /// Entries left per family: (CT, SNAT, affinity, sock-rev) of the
    /// `lb4_*` maps and of the `lb6_*` maps.
    pub fn left(fx: &mut Fixture) -> [(usize, usize, usize, usize); 2] {
        let m = fx.dp.maps();
        [
            (
                m.ct.keys().count(),
                m.snat.keys().count(),
                m.affinity.keys().count(),
                m.sock_rev.keys().count(),
            ),
            (
                m.ct6.keys().count(),
                m.snat6.keys().count(),
                m.affinity6.keys().count(),
                m.sock_rev6.keys().count(),
            ),
        ]
    }
}

/// The IPv6 flow maps (`lb6_ct`, `lb6_snat`, `lb6_affinity`,
/// `lb6_sock_rev`) expire exactly as the IPv4 ones: the same flows in both
/// families (open and closing TCP with their reply entries, UDP, a SNATed
/// flow and an orphan SNAT entry, affinity of a live and of a gone
/// frontend, socket-LB entries of a live and of a gone frontend) leave the
/// same entries at every step. Bounded: a dozen entries, seven gc runs.
#[test]
fn ipv6_entries_expire_as_ipv4_ones_do() {
    use lb_ebpf::abi::{CT_F_CLOSING, CT_F_SNAT};
    use std::net::IpAddr;
    let node = NodeConfig::new("node-1", vec![ip(NODE_IP), ip("fd00:1::10")]);
    let mut fx = Fixture::with_node(node);
    let mut sticky = service(
        "default/sticky",
        &[
            ("10.96.0.12:80", FrontendType::ClusterIp),
            ("[fd00:96::12]:80", FrontendType::ClusterIp),
        ],
        &["10.0.1.7:8080", "[fd00:a::7]:8080"],
    );
    sticky.session_affinity = SessionAffinity::ClientIp { timeout_secs: 30 };
    fx.apply(&[
        service(
            "default/web",
            &[
                ("10.96.0.10:80", FrontendType::ClusterIp),
                ("[fd00:96::10]:80", FrontendType::ClusterIp),
            ],
            &["10.0.1.5:8080", "[fd00:a::5]:8080"],
        ),
        service(
            "default/dns",
            &[
                ("10.96.0.11:53/UDP", FrontendType::ClusterIp),
                ("[fd00:96::11]:53/UDP", FrontendType::ClusterIp),
            ],
            &["10.0.1.6:5353/UDP", "[fd00:a::6]:5353/UDP"],
        ),
        sticky,
    ]);
    let tables = fx.rec.current().clone();
    let fe_id = |a: &str| {
        let a: L3n4Addr = a.parse().unwrap();
        tables
            .frontends
            .values()
            .find(|f| f.key.addr == a)
            .unwrap()
            .id
            .0
    };
    let be_id = |a: &str| {
        let a: L3n4Addr = a.parse().unwrap();
        tables.backends.values().find(|b| b.addr == a).unwrap().id.0
    };
    let now = now_secs();
    let (tcp_p, udp_p) = (6u8, 17u8);
    for (client, node_ip, web, dns, sticky, web_be, dns_be, remote) in [
        (
            "192.168.5.2",
            NODE_IP,
            "10.96.0.10:80",
            "10.96.0.11:53/UDP",
            "10.96.0.12:80",
            "10.0.1.5:8080",
            "10.0.1.6:5353/UDP",
            "10.0.9.9",
        ),
        (
            "fd00:5::2",
            "fd00:1::10",
            "[fd00:96::10]:80",
            "[fd00:96::11]:53/UDP",
            "[fd00:96::12]:80",
            "[fd00:a::5]:8080",
            "[fd00:a::6]:5353/UDP",
            "fd00:9::9",
        ),
    ] {
        let c: IpAddr = client.parse().unwrap();
        let n: IpAddr = node_ip.parse().unwrap();
        let r: IpAddr = remote.parse().unwrap();
        let web_a: L3n4Addr = web.parse().unwrap();
        let dns_a: L3n4Addr = dns.parse().unwrap();
        let be_a: L3n4Addr = web_be.parse().unwrap();
        let dbe_a: L3n4Addr = dns_be.parse().unwrap();
        let entry = |be: &str, fe: &str, flags, snat_port| {
            let a: L3n4Addr = fe.parse().unwrap();
            parity::Entry {
                backend_id: be_id(be),
                rev_nat: fe_id(fe),
                frontend: (a.addr, a.port),
                snat_port,
                flags,
                last_seen: now,
            }
        };
        // Open TCP flow (DNAT): service and reply entries.
        let e = entry(web_be, web, 0, 0);
        parity::ct(&mut fx, (c, 40000, web_a.addr, 80, tcp_p, CT_SERVICE), &e);
        parity::ct(&mut fx, (be_a.addr, 8080, c, 40000, tcp_p, CT_REPLY), &e);
        // UDP flow.
        let e = entry(dns_be, dns, 0, 0);
        parity::ct(&mut fx, (c, 40001, dns_a.addr, 53, udp_p, CT_SERVICE), &e);
        parity::ct(&mut fx, (dbe_a.addr, 5353, c, 40001, udp_p, CT_REPLY), &e);
        // Closing TCP flow.
        let e = entry(web_be, web, CT_F_CLOSING, 0);
        parity::ct(&mut fx, (c, 40002, web_a.addr, 80, tcp_p, CT_SERVICE), &e);
        parity::ct(&mut fx, (be_a.addr, 8080, c, 40002, tcp_p, CT_REPLY), &e);
        // SNATed TCP flow to a remote backend: service entry + SNAT entry.
        let e = entry(web_be, web, CT_F_SNAT, 61000);
        parity::ct(&mut fx, (c, 40003, web_a.addr, 80, tcp_p, CT_SERVICE), &e);
        let reply = (r, 8080, n, 61000, tcp_p, CT_SERVICE);
        parity::snat(&mut fx, reply, (c, 40003), (web_a.addr, 80), now);
        // An orphan UDP SNAT entry (its flow is gone).
        let reply = (r, 5353, n, 61001, udp_p, CT_SERVICE);
        parity::snat(&mut fx, reply, (c, 40004), (dns_a.addr, 53), now);
        // Affinity of the sticky frontend and of a frontend that is gone.
        parity::affinity(&mut fx, c, fe_id(sticky), 1, now);
        parity::affinity(&mut fx, c, 9999, 1, now);
        // Socket LB: a live frontend and a gone one.
        parity::sock_rev(&mut fx, 7, (be_a.addr, 8080), (web_a.addr, 80), fe_id(web));
        parity::sock_rev(&mut fx, 8, (be_a.addr, 8080), (web_a.addr, 80), 9999);
    }
    let same = |fx: &mut Fixture, want: (usize, usize, usize, usize), when: &str| {
        let [l4, l6] = parity::left(fx);
        assert_eq!(l4, want, "IPv4 {when}");
        assert_eq!(l6, want, "IPv6 {when}");
    };
    same(&mut fx, (7, 2, 2, 2), "before");
    // (time, removed per family (ct, snat, affinity, sock_rev), left)
    let steps = [
        (0, (0, 0, 1, 1), (7, 2, 1, 1)),
        (5, (0, 1, 0, 0), (7, 1, 1, 1)),
        (12, (1, 0, 0, 0), (6, 1, 1, 1)),
        (32, (0, 0, 1, 0), (6, 1, 0, 1)),
        (61, (2, 0, 0, 0), (4, 1, 0, 1)),
        (67, (1, 0, 0, 0), (3, 1, 0, 1)),
        (6 * 3600 + 2, (3, 1, 0, 0), (0, 0, 0, 1)),
    ];
    for (dt, removed, left) in steps {
        let st = fx.dp.gc(now + dt).unwrap();
        let twice = GcStats {
            ct: 2 * removed.0,
            snat: 2 * removed.1,
            affinity: 2 * removed.2,
            sock_rev: 2 * removed.3,
        };
        assert_eq!(st, twice, "at +{dt}s");
        same(&mut fx, left, &format!("at +{dt}s"));
    }
}
