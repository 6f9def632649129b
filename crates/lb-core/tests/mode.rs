//! Load-balancer modes (SNAT, DSR, hybrid) in lb-core's decision function,
//! and the multi-node property DSR relies on: every node with the same
//! services and Maglev seed picks the same backend for a flow.

use std::net::IpAddr;

use lb_core::*;
use proptest::prelude::*;

const NODE_IP: &str = "192.168.1.10";
const OTHER_NODE_IP: &str = "192.168.1.11";

fn web() -> Service {
    let mut svc = Service::new("default/web".parse().unwrap());
    for (addr, kind) in [
        ("10.96.0.10:80", FrontendType::ClusterIp),
        ("0.0.0.0:30080", FrontendType::NodePort),
        ("203.0.113.7:80", FrontendType::LoadBalancer),
        ("198.51.100.7:80", FrontendType::ExternalIp),
        ("10.96.0.10:53/UDP", FrontendType::ClusterIp),
        ("203.0.113.7:53/UDP", FrontendType::LoadBalancer),
    ] {
        svc.frontends
            .push(FrontendParams::new(addr.parse().unwrap(), kind));
    }
    for addr in ["10.0.1.1:8080", "10.0.2.1:8080", "10.0.3.1:8080"] {
        svc.backends
            .push(BackendParams::new(addr.parse().unwrap()).on_node("node-b"));
    }
    for addr in ["10.0.1.1:5353/UDP", "10.0.2.1:5353/UDP"] {
        svc.backends
            .push(BackendParams::new(addr.parse().unwrap()).on_node("node-b"));
    }
    svc.algorithm = Some(LbAlgorithm::Maglev);
    svc
}

fn node(name: &str, ip: &str, mode: LbMode) -> NodeConfig {
    let mut n = NodeConfig::new(name, vec![ip.parse().unwrap()]);
    n.mode = mode;
    n.maglev = MaglevConfig::new(251, 42).unwrap();
    n
}

fn program(node: &NodeConfig, services: &[Service]) -> MemoryDataplane {
    let mut dp = MemoryDataplane::new();
    Reconciler::new()
        .apply(&mut dp, &DesiredState::build(node, services).unwrap())
        .unwrap();
    dp
}

fn key(dst: &str, dport: u16, proto: L4Proto, sport: u16) -> FlowKey {
    FlowKey {
        src: "172.16.0.5".parse().unwrap(),
        dst: dst.parse().unwrap(),
        sport,
        dport,
        proto,
    }
}

fn forward(node: &NodeConfig, key: &FlowKey, scope: Scope) -> Forward {
    let dp = program(node, &[web()]);
    let ctx = FlowContext {
        now: 0,
        entropy: 0,
        scope,
    };
    match decide(dp.tables(), node, &mut FlowState::new(), key, ctx) {
        Verdict::Forward(f) => f,
        other => panic!("{key:?}: {other:?}"),
    }
}

fn ipip(f: &Forward) -> Encap {
    Encap::Ipip {
        outer_src: NODE_IP.parse().unwrap(),
        outer_dst: f.backend.addr,
    }
}

#[test]
fn snat_is_the_default_mode() {
    assert_eq!(NodeConfig::new("n", vec![]).mode, LbMode::Snat);
    let n = node("node-a", NODE_IP, LbMode::Snat);
    let f = forward(
        &n,
        &key("203.0.113.7", 80, L4Proto::Tcp, 1000),
        Scope::External,
    );
    assert_eq!(f.snat, Some(NODE_IP.parse().unwrap()));
    assert_eq!(f.encap, None);
}

#[test]
fn dsr_encapsulates_external_traffic_to_nodeport_lb_and_external_ip() {
    let n = node("node-a", NODE_IP, LbMode::Dsr);
    for (dst, dport, proto) in [
        (NODE_IP, 30080, L4Proto::Tcp),
        ("203.0.113.7", 80, L4Proto::Tcp),
        ("198.51.100.7", 80, L4Proto::Tcp),
        ("203.0.113.7", 53, L4Proto::Udp),
    ] {
        let k = key(dst, dport, proto, 1000);
        let f = forward(&n, &k, Scope::External);
        assert_eq!(f.snat, None, "{k:?}");
        assert_eq!(f.encap, Some(ipip(&f)), "{k:?}");
        // The packet keeps the frontend the client used; the backend's side
        // translates it to f.backend.
        assert_eq!(f.frontend, k.frontend());
        assert_ne!(f.backend.addr, k.dst);
    }
}

#[test]
fn dsr_leaves_cluster_ip_and_internal_traffic_to_snat() {
    let n = node("node-a", NODE_IP, LbMode::Dsr);
    let snat = Some(NODE_IP.parse::<IpAddr>().unwrap());
    let f = forward(
        &n,
        &key("10.96.0.10", 80, L4Proto::Tcp, 1000),
        Scope::External,
    );
    assert_eq!((f.snat, f.encap), (snat, None), "ClusterIP");
    let f = forward(
        &n,
        &key("203.0.113.7", 80, L4Proto::Tcp, 1000),
        Scope::Internal,
    );
    assert_eq!((f.snat, f.encap), (snat, None), "from the node's pods");
}

#[test]
fn dsr_never_touches_local_backends_or_traffic_policy_local() {
    let n = node("node-b", NODE_IP, LbMode::Dsr);
    let f = forward(
        &n,
        &key("203.0.113.7", 80, L4Proto::Tcp, 1000),
        Scope::External,
    );
    assert_eq!((f.snat, f.encap), (None, None), "local backend");

    let mut svc = web();
    svc.ext_traffic_policy = TrafficPolicy::Local;
    for b in &mut svc.backends {
        b.node_name = Some("node-a".into());
    }
    let n = node("node-a", NODE_IP, LbMode::Dsr);
    let dp = program(&n, &[svc]);
    let ctx = FlowContext {
        now: 0,
        entropy: 0,
        scope: Scope::External,
    };
    let k = key("203.0.113.7", 80, L4Proto::Tcp, 1000);
    let Verdict::Forward(f) = decide(dp.tables(), &n, &mut FlowState::new(), &k, ctx) else {
        panic!()
    };
    assert_eq!((f.snat, f.encap), (None, None), "traffic policy Local");
}

#[test]
fn hybrid_is_dsr_for_tcp_and_snat_for_udp() {
    let n = node("node-a", NODE_IP, LbMode::Hybrid);
    let f = forward(
        &n,
        &key("203.0.113.7", 80, L4Proto::Tcp, 1000),
        Scope::External,
    );
    assert_eq!((f.snat, f.encap), (None, Some(ipip(&f))));
    let f = forward(
        &n,
        &key("203.0.113.7", 53, L4Proto::Udp, 1000),
        Scope::External,
    );
    assert_eq!((f.snat, f.encap), (Some(NODE_IP.parse().unwrap()), None));
}

#[test]
fn dsr_encapsulates_ipv6_flows_in_ipv6() {
    let mut svc = Service::new("default/v6".parse().unwrap());
    svc.frontends.push(FrontendParams::new(
        "[2001:db8::7]:80".parse().unwrap(),
        FrontendType::LoadBalancer,
    ));
    svc.backends
        .push(BackendParams::new("[fd00::1]:8080".parse().unwrap()).on_node("node-b"));
    let mut n = NodeConfig::new(
        "node-a",
        vec![NODE_IP.parse().unwrap(), "fd00:1::10".parse().unwrap()],
    );
    n.mode = LbMode::Dsr;
    let dp = program(&n, &[svc]);
    let k = FlowKey {
        src: "2001:db8:1::5".parse().unwrap(),
        dst: "2001:db8::7".parse().unwrap(),
        sport: 1000,
        dport: 80,
        proto: L4Proto::Tcp,
    };
    let ctx = FlowContext {
        now: 0,
        entropy: 0,
        scope: Scope::External,
    };
    let Verdict::Forward(f) = decide(dp.tables(), &n, &mut FlowState::new(), &k, ctx) else {
        panic!()
    };
    assert_eq!(
        (f.snat, f.encap),
        (
            None,
            Some(Encap::Ip6ip6 {
                outer_src: "fd00:1::10".parse().unwrap(),
                outer_dst: "fd00::1".parse().unwrap(),
            })
        )
    );
}

#[test]
fn modes_parse_and_print() {
    for m in [LbMode::Snat, LbMode::Dsr, LbMode::Hybrid] {
        assert_eq!(m.to_string().parse::<LbMode>(), Ok(m));
    }
    assert_eq!("DSR".parse::<LbMode>(), Ok(LbMode::Dsr));
    assert!("ipip".parse::<LbMode>().is_err());
}

fn any_mode() -> impl Strategy<Value = LbMode> {
    prop_oneof![Just(LbMode::Snat), Just(LbMode::Dsr), Just(LbMode::Hybrid)]
}

fn any_frontend() -> impl Strategy<Value = (&'static str, u16, L4Proto)> {
    prop_oneof![
        Just(("10.96.0.10", 80, L4Proto::Tcp)),
        Just((NODE_IP, 30080, L4Proto::Tcp)),
        Just(("203.0.113.7", 80, L4Proto::Tcp)),
        Just(("198.51.100.7", 80, L4Proto::Tcp)),
        Just(("10.96.0.10", 53, L4Proto::Udp)),
        Just(("203.0.113.7", 53, L4Proto::Udp)),
    ]
}

proptest! {
    /// The mode only changes how a packet leaves: the backend is the same
    /// in every mode, SNAT and encapsulation never combine, and
    /// encapsulation happens exactly where `LbMode::dsr_applies` says.
    #[test]
    fn mode_changes_only_the_way_out(
        mode in any_mode(),
        (dst, dport, proto) in any_frontend(),
        sport in 1u16..,
        internal in any::<bool>(),
    ) {
        let scope = if internal { Scope::Internal } else { Scope::External };
        let k = key(dst, dport, proto, sport);
        let n = node("node-a", NODE_IP, mode);
        let f = forward(&n, &k, scope);
        let base = forward(&node("node-a", NODE_IP, LbMode::Snat), &k, scope);
        prop_assert_eq!(f.backend, base.backend);
        prop_assert!(f.snat.is_none() || f.encap.is_none());
        let kind = if dst == "10.96.0.10" {
            FrontendType::ClusterIp
        } else if dst == NODE_IP {
            FrontendType::NodePort
        } else if dst == "198.51.100.7" {
            FrontendType::ExternalIp
        } else {
            FrontendType::LoadBalancer
        };
        if mode.dsr_applies(proto, kind, scope) {
            prop_assert_eq!(f.encap, Some(ipip(&f)));
        } else {
            prop_assert_eq!(f.encap, None);
            prop_assert_eq!(f.snat, Some(NODE_IP.parse().unwrap()));
        }
    }

    /// Two nodes with the same services and Maglev seed send every flow to
    /// a LoadBalancer VIP to the same backend, with no state shared: a flow
    /// may switch nodes (DSR keeps no reply state on the node).
    #[test]
    fn nodes_with_the_same_seed_agree(
        sport in 1u16..,
        src in any::<[u8; 4]>(),
        proto in prop_oneof![Just(L4Proto::Tcp), Just(L4Proto::Udp)],
    ) {
        let a = node("node-a", NODE_IP, LbMode::Dsr);
        let b = node("node-c", OTHER_NODE_IP, LbMode::Dsr);
        let dport = if proto == L4Proto::Tcp { 80 } else { 53 };
        let mut k = key("203.0.113.7", dport, proto, sport);
        k.src = IpAddr::from(src);
        let fa = forward(&a, &k, Scope::External);
        let fb = forward(&b, &k, Scope::External);
        prop_assert_eq!(fa.backend, fb.backend);
        prop_assert_eq!(fb.encap, Some(Encap::Ipip {
            outer_src: OTHER_NODE_IP.parse().unwrap(),
            outer_dst: fb.backend.addr,
        }));
    }
}
