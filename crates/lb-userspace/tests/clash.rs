//! Reply-tuple clashes and TIME_WAIT through the packet path (lb-ebpf's
//! `lb_ctport.h` and gc reservations, issue 9): one client port to two
//! frontends of one backend gets two reply tuples, replies come back to
//! the client's own port; and a short-connection storm model in which the
//! backends close first (TIME_WAIT) never hands a new flow a tuple a
//! backend still holds for another client flow. Bounded: well under a
//! second of CPU.

use std::collections::HashMap;
use std::net::SocketAddr;

use lb_core::*;
use lb_testkit::PacketBuilder;
use lb_userspace::ct::CtTimeouts;
use lb_userspace::rng::FastRng;
use lb_userspace::{Config, Direction, DropKind, Outcome, PacketPath, UserspaceDataplane};

const VIP: &str = "10.96.0.10:80";
const NODE_PORT: &str = "192.168.1.10:30080";

/// A ClusterIP and a NodePort to `backends` node-local backends on port 8080.
fn dataplane(config: Config, backends: u8) -> (UserspaceDataplane, PacketPath) {
    let node = NodeConfig::new("node-1", vec!["192.168.1.10".parse().unwrap()]);
    let mut svc = Service::new("default/web".parse().unwrap());
    svc.frontends.push(FrontendParams::new(
        VIP.parse().unwrap(),
        FrontendType::ClusterIp,
    ));
    svc.frontends.push(FrontendParams::new(
        "0.0.0.0:30080".parse().unwrap(),
        FrontendType::NodePort,
    ));
    for k in 1..=backends {
        svc.backends.push(
            BackendParams::new(format!("10.0.1.{k}:8080").parse().unwrap()).on_node("node-1"),
        );
    }
    let desired = DesiredState::build(&node, &[svc]).unwrap();
    let mut dp = UserspaceDataplane::new(node, config);
    Reconciler::new().apply(&mut dp, &desired).unwrap();
    let w = dp.worker_with_rng(FastRng::new(9));
    (dp, w)
}

fn seg(src: SocketAddr, dst: SocketAddr, flags: fn(PacketBuilder) -> PacketBuilder) -> Vec<u8> {
    flags(PacketBuilder::tcp(src, dst)).build().unwrap()
}

/// Sends `frame` towards the frontends; the (source, destination) the
/// backend sees.
fn forward(
    w: &mut PacketPath,
    frame: &[u8],
    now: u64,
) -> Result<(SocketAddr, SocketAddr), Outcome> {
    let mut b = frame.to_vec();
    match w.process(&mut b, Direction::ToFrontend, now) {
        Outcome::Forwarded(_) => {
            lb_testkit::verify_checksums(&b).unwrap();
            let p = lb_testkit::parse(&b).unwrap();
            Ok((p.src, p.dst))
        }
        o => Err(o),
    }
}

/// The backend `from` answers `to` (what it saw as the source); the
/// (source, destination) the client gets.
fn reply(
    w: &mut PacketPath,
    from: SocketAddr,
    to: SocketAddr,
    flags: fn(PacketBuilder) -> PacketBuilder,
    now: u64,
) -> (SocketAddr, SocketAddr) {
    let mut b = seg(from, to, flags);
    let out = w.process(&mut b, Direction::Reply, now);
    assert!(matches!(out, Outcome::ReverseNated { .. }), "{out:?}");
    lb_testkit::verify_checksums(&b).unwrap();
    let p = lb_testkit::parse(&b).unwrap();
    (p.src, p.dst)
}

/// The scenario of lb-ebpf's `one_client_port_to_two_frontends_of_one_backend`
/// (e2e) at the packet level: each flow's replies, interleaved, reach the
/// client's own port from the frontend it used, whichever closes first.
#[test]
fn one_client_port_to_two_frontends_of_one_backend() {
    let (_dp, mut w) = dataplane(Config::default(), 1);
    let (vip, np): (SocketAddr, SocketAddr) = (VIP.parse().unwrap(), NODE_PORT.parse().unwrap());
    for (now, port) in [(0, 40_001u16), (100, 40_002)] {
        let client = SocketAddr::from(([192, 168, 5, 2], port));
        let (a_src, be) = forward(&mut w, &seg(client, vip, |b| b.syn()), now).unwrap();
        let (b_src, be2) = forward(&mut w, &seg(client, np, |b| b.syn()), now).unwrap();
        assert_eq!(
            (be, a_src),
            (be2, client),
            "one backend; the first keeps its port"
        );
        assert_eq!(b_src.ip(), client.ip(), "not SNATed");
        assert_ne!(b_src.port(), port, "the second flow gets another port");
        for _ in 0..3 {
            assert_eq!(reply(&mut w, be, a_src, |b| b.ack(), now), (vip, client));
            assert_eq!(reply(&mut w, be, b_src, |b| b.ack(), now), (np, client));
            // Established packets keep their tuples.
            let a = forward(&mut w, &seg(client, vip, |b| b.ack()), now);
            let b = forward(&mut w, &seg(client, np, |b| b.ack()), now);
            assert_eq!((a, b), (Ok((a_src, be)), Ok((b_src, be))));
        }
        // Either closing first leaves the other whole, through TIME_WAIT.
        let (closing, other, fe) = if port % 2 == 1 {
            (vip, b_src, np)
        } else {
            (np, a_src, vip)
        };
        forward(&mut w, &seg(client, closing, |b| b.ack().fin()), now).unwrap();
        w.expire(now + 11, usize::MAX);
        assert_eq!(
            reply(&mut w, be, other, |b| b.ack(), now + 11),
            (fe, client)
        );
        w.expire(now + 80, usize::MAX);
        assert_eq!(
            reply(&mut w, be, other, |b| b.ack(), now + 80),
            (fe, client)
        );
    }
}

/// What the storm model saw.
#[derive(Debug, Default)]
struct Storm {
    connections: u64,
    remapped: u64,
    /// New flows whose tuple a backend held in TIME_WAIT for another client
    /// flow (its SYN would be answered with an ACK, then retransmitted).
    time_wait_hits: u64,
    dropped: u64,
}

/// A model of `lb_benches::e2e::storm` on the packet path: one client
/// with a small pool of ports connects 30 times a second, alternating
/// between the ClusterIP and the NodePort every 20 s, for 200 s; each
/// connection is a SYN, the backend's SYN-ACK, the backend's FIN (it
/// closes first and holds the tuple in TIME_WAIT for 60 s), the client's
/// FIN. The worker expires flows every second.
fn storm(timeouts: CtTimeouts) -> Storm {
    let config = Config {
        timeouts,
        ..Config::default()
    };
    let (dp, mut w) = dataplane(config, 3);
    let (vip, np): (SocketAddr, SocketAddr) = (VIP.parse().unwrap(), NODE_PORT.parse().unwrap());
    // (backend, source it saw) -> (client flow, end of TIME_WAIT).
    let mut time_wait: HashMap<(SocketAddr, SocketAddr), ((SocketAddr, SocketAddr), u64)> =
        HashMap::new();
    let mut rng = FastRng::new(42);
    let mut out = Storm::default();
    for now in 0..200u64 {
        let fe = if (now / 20) % 2 == 0 { vip } else { np };
        for _ in 0..30 {
            let client =
                SocketAddr::from(([192, 168, 5, 2], 40_000 + (rng.next_u32() % 300) as u16));
            let (seen, be) = match forward(&mut w, &seg(client, fe, |b| b.syn()), now) {
                Ok(t) => t,
                Err(Outcome::Dropped(DropKind::SnatPorts)) => {
                    out.dropped += 1;
                    continue;
                }
                Err(o) => panic!("{o:?}"),
            };
            out.connections += 1;
            out.remapped += u64::from(seen != client);
            if let Some((owner, until)) = time_wait.get(&(be, seen)) {
                if *until > now && *owner != (client, fe) {
                    out.time_wait_hits += 1;
                }
            }
            assert_eq!(
                reply(&mut w, be, seen, |b| b.syn().ack(), now),
                (fe, client)
            );
            assert_eq!(
                reply(&mut w, be, seen, |b| b.ack().fin(), now),
                (fe, client)
            );
            forward(&mut w, &seg(client, fe, |b| b.ack().fin()), now).unwrap();
            time_wait.insert((be, seen), ((client, fe), now + 60));
        }
        w.expire(now, usize::MAX);
    }
    assert_eq!(dp.counters().drops(DropKind::SnatPorts), out.dropped);
    out
}

/// The storm model: with the default reservation no new flow meets a
/// backend's TIME_WAIT and none is dropped; without it (time_wait 0, the
/// behaviour before) the model does see such hits, so it can tell.
#[test]
fn a_storm_never_gets_a_tuple_a_backend_holds_in_time_wait() {
    let with = storm(CtTimeouts::default());
    eprintln!("time_wait 65: {with:?}");
    assert_eq!((with.time_wait_hits, with.dropped), (0, 0), "{with:?}");
    assert!(
        with.remapped > 100,
        "the model exercises remapping: {with:?}"
    );
    let without = storm(CtTimeouts {
        time_wait: 0,
        ..CtTimeouts::default()
    });
    eprintln!("time_wait 0: {without:?}");
    assert!(without.time_wait_hits > 100, "{without:?}");
}
