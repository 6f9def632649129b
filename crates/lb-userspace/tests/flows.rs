//! Flow lifetimes and SNAT source ports through the packet path: idle
//! flows expire by protocol and TCP state, affinity by its service's
//! timeout, and SNATed flows get reply tuples of their own (or are dropped
//! and counted when the port range is exhausted).

use lb_core::*;
use lb_testkit::PacketBuilder;
use lb_userspace::ct::SnatPorts;
use lb_userspace::rng::FastRng;
use lb_userspace::{Config, Direction, DropKind, Outcome, PacketPath, UserspaceDataplane};

const VIP: &str = "10.96.0.10";

fn dataplane(config: Config, remote: bool, affinity: bool) -> (UserspaceDataplane, PacketPath) {
    let node = NodeConfig::new("node-1", vec!["192.168.1.10".parse().unwrap()]);
    let mut svc = Service::new("default/web".parse().unwrap());
    for fe in [format!("{VIP}:80"), format!("{VIP}:53/UDP")] {
        svc.frontends.push(FrontendParams::new(
            fe.parse().unwrap(),
            FrontendType::ClusterIp,
        ));
    }
    let on = if remote { "node-2" } else { "node-1" };
    for b in ["10.0.1.5:8080", "10.0.1.5:5353/UDP"] {
        svc.backends
            .push(BackendParams::new(b.parse().unwrap()).on_node(on));
    }
    if affinity {
        svc.session_affinity = SessionAffinity::ClientIp { timeout_secs: 30 };
    }
    let desired = DesiredState::build(&node, &[svc]).unwrap();
    let mut dp = UserspaceDataplane::new(node, config);
    Reconciler::new().apply(&mut dp, &desired).unwrap();
    let w = dp.worker_with_rng(FastRng::new(5));
    (dp, w)
}

fn tcp(src: &str, flags: fn(PacketBuilder) -> PacketBuilder) -> Vec<u8> {
    flags(PacketBuilder::tcp(
        src.parse().unwrap(),
        format!("{VIP}:80").parse().unwrap(),
    ))
    .build()
    .unwrap()
}

fn udp(src: &str) -> Vec<u8> {
    PacketBuilder::udp(src.parse().unwrap(), format!("{VIP}:53").parse().unwrap())
        .payload(b"q")
        .build()
        .unwrap()
}

fn send(w: &mut PacketPath, f: &[u8], now: u64) -> Outcome {
    let mut b = f.to_vec();
    w.process(&mut b, Direction::ToFrontend, now)
}

#[test]
fn idle_flows_expire_by_protocol_and_tcp_state() {
    let (_dp, mut w) = dataplane(Config::default(), false, false);
    let open = tcp("192.168.5.2:40000", |b| b.syn());
    let closing = tcp("192.168.5.2:40001", |b| b.syn());
    let dns = udp("192.168.5.2:40002");
    for f in [&open, &closing, &dns] {
        assert!(matches!(send(&mut w, f, 100), Outcome::Forwarded(_)));
    }
    // The second connection closes (a FIN from the client).
    let fin = tcp("192.168.5.2:40001", |b| b.ack().fin());
    assert!(matches!(send(&mut w, &fin, 100), Outcome::Forwarded(_)));
    assert_eq!(w.flows().len(), 3);
    assert_eq!(w.expire(110, usize::MAX).flows, 0);
    assert_eq!(w.expire(111, usize::MAX).flows, 1, "closing TCP: 10 s");
    assert_eq!(w.expire(160, usize::MAX).flows, 0);
    assert_eq!(w.expire(161, usize::MAX).flows, 1, "UDP: 60 s");
    // Traffic keeps a flow alive: the open connection sends at 6 h.
    assert!(matches!(
        send(&mut w, &open, 6 * 3600),
        Outcome::Forwarded(_)
    ));
    assert_eq!(w.expire(6 * 3600 + 100, usize::MAX).flows, 0);
    assert_eq!(w.expire(12 * 3600 + 1, usize::MAX).flows, 1, "TCP: 6 h");
    assert!(w.flows().is_empty());
}

#[test]
fn a_reply_rst_closes_the_flow() {
    let (_dp, mut w) = dataplane(Config::default(), false, false);
    let syn = tcp("192.168.5.2:40000", |b| b.syn());
    assert!(matches!(send(&mut w, &syn, 0), Outcome::Forwarded(_)));
    let mut rst = PacketBuilder::tcp(
        "10.0.1.5:8080".parse().unwrap(),
        "192.168.5.2:40000".parse().unwrap(),
    )
    .rst()
    .build()
    .unwrap();
    assert!(matches!(
        w.process(&mut rst, Direction::Reply, 5),
        Outcome::ReverseNated { .. }
    ));
    assert_eq!(w.expire(15, usize::MAX).flows, 0);
    assert_eq!(w.expire(16, usize::MAX).flows, 1);
}

#[test]
fn affinity_expires_by_the_service_timeout() {
    let (_dp, mut w) = dataplane(Config::default(), false, true);
    assert!(matches!(
        send(&mut w, &udp("192.168.5.2:40000"), 100),
        Outcome::Forwarded(_)
    ));
    assert_eq!(w.expire(130, usize::MAX).affinity, 0);
    assert_eq!(w.expire(131, usize::MAX).affinity, 1);
}

#[test]
fn snat_flows_get_their_own_ports_until_the_range_runs_out() {
    let config = Config {
        snat_ports: SnatPorts {
            min: 61_000,
            max: 61_001,
            tries: 8,
        },
        ..Config::default()
    };
    let (dp, mut w) = dataplane(config, true, false);
    let mut ports = Vec::new();
    for c in 2..=4 {
        let f = tcp(&format!("192.168.5.{c}:40000"), |b| b.syn());
        let mut b = f.clone();
        let out = w.process(&mut b, Direction::ToFrontend, 0);
        assert!(matches!(out, Outcome::Forwarded(_)), "{out:?}");
        let p = lb_testkit::parse(&b).unwrap();
        assert_eq!(p.src.ip().to_string(), "192.168.1.10");
        ports.push(p.src.port());
        // The reply to that port goes back to this client, on its port.
        let mut reply = PacketBuilder::tcp("10.0.1.5:8080".parse().unwrap(), p.src)
            .ack()
            .build()
            .unwrap();
        assert!(matches!(
            w.process(&mut reply, Direction::Reply, 0),
            Outcome::ReverseNated { .. }
        ));
        let r = lb_testkit::parse(&reply).unwrap();
        assert_eq!(r.dst, format!("192.168.5.{c}:40000").parse().unwrap());
        assert_eq!(r.src, format!("{VIP}:80").parse().unwrap());
        lb_testkit::verify_checksums(&reply).unwrap();
        lb_testkit::verify_checksums(&b).unwrap();
    }
    ports.sort_unstable();
    assert_eq!(ports, vec![40000, 61_000, 61_001]);
    // A fourth client finds no free port: dropped and counted.
    let f = tcp("192.168.5.5:40000", |b| b.syn());
    assert_eq!(send(&mut w, &f, 0), Outcome::Dropped(DropKind::SnatPorts));
    assert_eq!(dp.counters().drops(DropKind::SnatPorts), 1);
    // Once a flow expires its port is free again.
    assert_eq!(w.expire(6 * 3600 + 1, usize::MAX).flows, 3);
    assert!(matches!(
        send(&mut w, &f, 6 * 3600 + 1),
        Outcome::Forwarded(_)
    ));
}
