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
