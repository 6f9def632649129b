//! Packet-level tests: `BPF_PROG_TEST_RUN` on the tc programs with crafted
//! frames, checked against lb-core's `flow::decide`. Privileged (root).

mod common;

use common::*;
use lb_core::*;
use lb_ebpf::abi::DropReason;

fn web(frontends: &[(&str, FrontendType)], backends: &[&str]) -> Service {
    service("default/web", frontends, backends)
}

#[test]
fn clusterip_tcp_is_dnated_and_reply_reverse_nated() {
    let mut fx = Fixture::new(MaglevConfig::default());
    fx.apply(&[web(
        &[("10.96.0.10:80", FrontendType::ClusterIp)],
        &["10.0.1.5:8080"],
    )]);
    let (rv, out) = fx.ingress(&tcp("192.168.5.2:40000", "10.96.0.10:80"));
    assert_eq!(rv, TC_ACT_OK);
    assert_eq!(
        endpoints(&out),
        (sa("192.168.5.2:40000"), sa("10.0.1.5:8080"))
    );
    let p = lb_testkit::parse(&out).unwrap();
    assert_eq!(p.payload, b"hello");

    let (rv, back) = fx.egress(&tcp("10.0.1.5:8080", "192.168.5.2:40000"));
    assert_eq!(rv, TC_ACT_OK);
    assert_eq!(
        endpoints(&back),
        (sa("10.96.0.10:80"), sa("192.168.5.2:40000"))
    );
    // Traffic from the backend to another client port is not ours.
    let (_, other) = fx.egress(&tcp("10.0.1.5:8080", "192.168.5.2:40001"));
    assert_eq!(endpoints(&other).0, sa("10.0.1.5:8080"));
}

#[test]
fn udp_dnat_keeps_a_zero_checksum_zero() {
    let mut fx = Fixture::new(MaglevConfig::default());
    fx.apply(&[web(
        &[("10.96.0.11:53/UDP", FrontendType::ClusterIp)],
        &["10.0.1.6:5353/UDP"],
    )]);
    let frame = udp("192.168.5.2:40000", "10.96.0.11:53");
    let (_, out) = fx.ingress(&frame);
    assert_eq!(
        endpoints(&out),
        (sa("192.168.5.2:40000"), sa("10.0.1.6:5353"))
    );

    let mut zero = frame.clone();
    let off = 14 + 20 + 6;
    zero[off..off + 2].copy_from_slice(&[0, 0]);
    let (_, out) = fx.ingress(&zero);
    assert_eq!(
        &out[off..off + 2],
        &[0, 0],
        "zero UDP checksum must stay zero"
    );
    assert_eq!(endpoints(&out).1, sa("10.0.1.6:5353"));

    let (_, back) = fx.egress(&udp("10.0.1.6:5353", "192.168.5.2:40000"));
    assert_eq!(endpoints(&back).0, sa("10.96.0.11:53"));
}

#[test]
fn nodeport_loadbalancer_and_external_ip_frontends() {
    // The datapath also answers on 192.168.1.99, which the desired state
    // does not expand onto: packets to it use the wildcard entry.
    let mut node = NodeConfig::new("node-1", vec![ip(NODE_IP), ip("192.168.1.99")]);
    node.maglev = MaglevConfig::default();
    let mut fx = Fixture::with_node(node);
    fx.node.node_ips.pop();
    fx.apply(&[web(
        &[
            ("0.0.0.0:30080", FrontendType::NodePort),
            ("203.0.113.7:80", FrontendType::LoadBalancer),
            ("198.51.100.20:8443", FrontendType::ExternalIp),
        ],
        &["10.0.1.5:8080"],
    )]);
    fx.node.node_ips.push(ip("192.168.1.99"));
    for (i, dst) in [
        "192.168.1.10:30080",
        "192.168.1.99:30080",
        "127.0.0.1:30080",
        "203.0.113.7:80",
        "198.51.100.20:8443",
    ]
    .iter()
    .enumerate()
    {
        let src = format!("192.168.5.2:{}", 41000 + i);
        let frame = tcp(&src, dst);
        let verdict = fx.decide(&flow_key(&frame), 0);
        assert_eq!(forwarded_to(&verdict), Some(sa("10.0.1.5:8080")), "{dst}");
        let (rv, out) = fx.ingress(&frame);
        assert_eq!(rv, TC_ACT_OK);
        assert_eq!(endpoints(&out), (sa(&src), sa("10.0.1.5:8080")), "{dst}");
        let (_, back) = fx.egress(&tcp("10.0.1.5:8080", &src));
        assert_eq!(endpoints(&back), (sa(dst), sa(&src)), "reply of {dst}");
    }
    // Not a node address: the wildcard does not apply.
    let frame = tcp("192.168.5.2:42000", "192.168.1.50:30080");
    assert_eq!(fx.decide(&flow_key(&frame), 0), Verdict::Pass);
    let (rv, out) = fx.ingress(&frame);
    assert_eq!((rv, out), (TC_ACT_OK, frame));
}

#[test]
fn unknown_traffic_passes_and_malformed_is_dropped_and_counted() {
    let mut fx = Fixture::new(MaglevConfig::default());
    fx.apply(&[web(
        &[("10.96.0.10:80", FrontendType::ClusterIp)],
        &["10.0.1.5:8080"],
    )]);
    let frame = tcp("192.168.5.2:40000", "10.96.0.99:80");
    assert_eq!(fx.ingress(&frame), (TC_ACT_OK, frame.clone()));
    // An IPv4 header length below 20 bytes (test-run itself refuses frames
    // whose IPv4 header is cut short, so that case cannot be crafted here).
    let mut bad_ihl = frame.clone();
    bad_ihl[14] = 0x44;
    let (rv, _) = fx.ingress(&bad_ihl);
    assert_eq!(rv, TC_ACT_SHOT);
    // TCP header cut short.
    let (rv, _) = fx.ingress(&frame[..14 + 20 + 8]);
    assert_eq!(rv, TC_ACT_SHOT);
    // A non-IP frame is not ours.
    let mut arp = frame.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(fx.ingress(&arp).0, TC_ACT_OK);
    let c = fx.dp.counters().unwrap();
    assert_eq!(c.drops_for(DropReason::Malformed), 2);
}

#[test]
fn frontend_without_backends_drops_and_counts() {
    let mut fx = Fixture::new(MaglevConfig::default());
    fx.apply(&[web(&[("10.96.0.10:80", FrontendType::ClusterIp)], &[])]);
    let frame = tcp("192.168.5.2:40000", "10.96.0.10:80");
    assert!(matches!(
        fx.decide(&flow_key(&frame), 0),
        Verdict::Drop {
            reason: lb_core::DropReason::NoBackend,
            ..
        }
    ));
    assert_eq!(fx.ingress(&frame).0, TC_ACT_SHOT);
    let c = fx.dp.counters().unwrap();
    assert_eq!(c.drops_for(DropReason::NoBackend), 1);
    assert_eq!(c.services.values().map(|s| s.packets).sum::<u64>(), 1);
}

#[test]
fn service_counters_count_packets_bytes_and_new_flows() {
    let mut fx = Fixture::new(MaglevConfig::default());
    fx.apply(&[web(
        &[("10.96.0.10:80", FrontendType::ClusterIp)],
        &["10.0.1.5:8080"],
    )]);
    let frame = tcp("192.168.5.2:40000", "10.96.0.10:80");
    for _ in 0..3 {
        fx.ingress(&frame);
    }
    fx.ingress(&tcp("192.168.5.2:40001", "10.96.0.10:80"));
    let c = fx.dp.counters().unwrap();
    let s = c.services.values().next().copied().unwrap();
    assert_eq!((s.packets, s.new_flows), (4, 2));
    assert_eq!(s.bytes, 4 * frame.len() as u64);
}

#[test]
fn backend_counters_count_packets_bytes_and_new_flows() {
    let mut fx = Fixture::new(MaglevConfig::default());
    fx.apply(&[web(
        &[("10.96.0.10:80", FrontendType::ClusterIp)],
        &["10.0.1.5:8080", "10.0.1.6:8080"],
    )]);
    let mut sent: std::collections::BTreeMap<std::net::SocketAddr, (u64, u64, u64)> =
        Default::default();
    for port in 40000..40010u16 {
        let frame = tcp(&format!("192.168.5.2:{port}"), "10.96.0.10:80");
        let be = bpf_backend(&mut fx, &frame);
        bpf_backend(&mut fx, &frame); // a second packet of the same flow
        let e = sent.entry(be).or_default();
        *e = (e.0 + 2, e.1 + 2 * frame.len() as u64, e.2 + 1);
    }
    let c = fx.dp.counters().unwrap();
    assert_eq!(c.backends.len(), 2);
    let backends = &fx.rec.current().backends;
    for (id, st) in &c.backends {
        let addr = backends[id].addr;
        let want = sent
            .get(&std::net::SocketAddr::new(addr.addr, addr.port))
            .copied()
            .unwrap_or_default();
        assert_eq!((st.packets, st.bytes, st.new_flows), want, "backend {id}");
    }
    // A removed backend's counters go with it.
    fx.apply(&[web(
        &[("10.96.0.10:80", FrontendType::ClusterIp)],
        &["10.0.1.5:8080"],
    )]);
    assert_eq!(fx.dp.counters().unwrap().backends.len(), 1);
}

/// The backend the ingress program sends `frame` to.
fn bpf_backend(fx: &mut Fixture, frame: &[u8]) -> std::net::SocketAddr {
    let (rv, out) = fx.ingress(frame);
    assert_eq!(rv, TC_ACT_OK);
    endpoints(&out).1
}

/// `lb_test_flow_hash` (the C flow hash) equals lb-core's
/// `FlowKey::hash` for 512 random IPv4 5-tuples and seeds.
#[test]
fn c_flow_hash_equals_lb_core_flow_key_hash() {
    use proptest::prelude::*;
    assert_c_flow_hash_is_lb_cores(512, any::<[u8; 4]>().prop_map(std::net::IpAddr::from));
}

mod maglev_agrees_with_lb_core {
    use super::*;
    use proptest::prelude::*;

    fn backends() -> impl Strategy<Value = Vec<(u8, u16, u8)>> {
        // (last octet, weight, state: 0 active, 1 terminating, 2 quarantined)
        prop::collection::btree_map(
            1u8..200,
            (prop_oneof![Just(100u16), 1u16..500], 0u8..3),
            1..8,
        )
        .prop_map(|m| m.into_iter().map(|(o, (w, s))| (o, w, s)).collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn chosen_backend_equals_decide(
            seed in any::<u32>(),
            bes in backends(),
            flows in prop::collection::vec((any::<[u8; 4]>(), 1024u16.., any::<bool>()), 1..24),
        ) {
            let mut fx = Fixture::new(MaglevConfig::new(251, seed).unwrap());
            let mut tcp_svc = web(
                &[("10.96.0.10:80", FrontendType::ClusterIp), ("0.0.0.0:30080", FrontendType::NodePort)],
                &[],
            );
            tcp_svc.algorithm = Some(LbAlgorithm::Maglev);
            let mut udp_svc = service("default/dns", &[("10.96.0.53:53/UDP", FrontendType::ClusterIp)], &[]);
            udp_svc.algorithm = Some(LbAlgorithm::Maglev);
            for (o, w, s) in &bes {
                let state = [BackendState::Active, BackendState::Terminating, BackendState::Quarantined][*s as usize];
                let b = |port: &str| BackendParams::new(format!("10.0.3.{o}:{port}").parse().unwrap())
                    .with_weight(*w).with_state(state);
                tcp_svc.backends.push(b("8080"));
                udp_svc.backends.push(b("5353/UDP"));
            }
            fx.apply(&[tcp_svc, udp_svc]);
            for (i, (src, sport, is_udp)) in flows.iter().enumerate() {
                let src = std::net::SocketAddr::from((*src, *sport)).to_string();
                let dst = match (is_udp, i % 2) {
                    (true, _) => "10.96.0.53:53",
                    (false, 0) => "10.96.0.10:80",
                    (false, _) => "192.168.1.10:30080",
                };
                let frame = if *is_udp { udp(&src, dst) } else { tcp(&src, dst) };
                let verdict = fx.decide(&flow_key(&frame), 0);
                let (rv, out) = fx.ingress(&frame);
                match forwarded_to(&verdict) {
                    Some(expected) => {
                        prop_assert_eq!(rv, TC_ACT_OK);
                        prop_assert_eq!(endpoints(&out).1, expected);
                    }
                    None => prop_assert_eq!(rv, TC_ACT_SHOT, "{:?}", verdict),
                }
            }
        }
    }
}

fn random_service(backends: &[&str]) -> Service {
    let mut s = web(&[("10.96.0.10:80", FrontendType::ClusterIp)], backends);
    s.algorithm = Some(LbAlgorithm::Random);
    s
}

const FOUR: [&str; 4] = ["10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80", "10.0.1.4:80"];

#[test]
fn affinity_pins_a_client_until_timeout_or_not_selectable() {
    let mut fx = Fixture::new(MaglevConfig::default());
    let mut svc = random_service(&FOUR);
    svc.session_affinity = SessionAffinity::ClientIp { timeout_secs: 30 };
    fx.apply(&[svc.clone()]);
    let first = bpf_backend(&mut fx, &tcp("192.168.5.2:40000", "10.96.0.10:80"));
    for port in 40001..40030 {
        let src = format!("192.168.5.2:{port}");
        assert_eq!(bpf_backend(&mut fx, &tcp(&src, "10.96.0.10:80")), first);
    }
    // Another client is balanced on its own: over many clients, more than one backend.
    let spread: std::collections::BTreeSet<_> = (1..40)
        .map(|i| {
            bpf_backend(
                &mut fx,
                &tcp(&format!("192.168.6.{i}:40000"), "10.96.0.10:80"),
            )
        })
        .collect();
    assert!(spread.len() > 1, "{spread:?}");

    // An expired entry is replaced by a fresh one.
    let key = lb_ebpf::abi::Lb4AffinityKey {
        client: lb_ebpf::dataplane::be32("192.168.5.2".parse().unwrap()),
        rev_nat_index: fx.rec.current().frontends.keys().next().unwrap().0,
    };
    let mut entry = fx.dp.maps().affinity.get(&key, 0).unwrap();
    let now = lb_ebpf::now_secs();
    // (The coarse monotonic clock starts at boot: keep the subtraction small.)
    entry.last_used = now.checked_sub(35).expect("uptime above 35 s");
    fx.dp.maps().affinity.insert(key, entry, 0).unwrap();
    bpf_backend(&mut fx, &tcp("192.168.5.2:41000", "10.96.0.10:80"));
    let fresh = fx.dp.maps().affinity.get(&key, 0).unwrap();
    assert!(fresh.last_used >= now, "{fresh:?}");

    // A backend that is no longer selectable is not used by affinity.
    let pinned = bpf_backend(&mut fx, &tcp("192.168.5.2:41001", "10.96.0.10:80"));
    for b in &mut svc.backends {
        if b.addr.port == pinned.port() && b.addr.addr == pinned.ip() {
            b.state = BackendState::Terminating;
        }
    }
    fx.apply(&[svc]);
    for port in 42000..42020 {
        let src = format!("192.168.5.2:{port}");
        assert_ne!(bpf_backend(&mut fx, &tcp(&src, "10.96.0.10:80")), pinned);
    }
}

#[test]
fn terminating_keeps_established_flows_and_removed_backends_get_none() {
    let mut fx = Fixture::new(MaglevConfig::default());
    let mut svc = random_service(&FOUR);
    fx.apply(&[svc.clone()]);
    let established = tcp("192.168.5.2:40000", "10.96.0.10:80");
    let x = bpf_backend(&mut fx, &established);
    let is_x = |b: &BackendParams| b.addr.addr == x.ip() && b.addr.port == x.port();
    for b in svc.backends.iter_mut().filter(|b| is_x(b)) {
        b.state = BackendState::Terminating;
    }
    fx.apply(&[svc.clone()]);
    for port in 41000..41060 {
        let src = format!("192.168.5.3:{port}");
        assert_ne!(bpf_backend(&mut fx, &tcp(&src, "10.96.0.10:80")), x);
    }
    for _ in 0..5 {
        assert_eq!(
            bpf_backend(&mut fx, &established),
            x,
            "established flow moved"
        );
    }
    // Removed: the established flow is re-balanced, nobody reaches x.
    svc.backends.retain(|b| !is_x(b));
    fx.apply(&[svc]);
    assert_ne!(bpf_backend(&mut fx, &established), x);
    for port in 42000..42060 {
        let src = format!("192.168.5.4:{port}");
        assert_ne!(bpf_backend(&mut fx, &tcp(&src, "10.96.0.10:80")), x);
    }
}

#[test]
fn weighted_random_never_picks_weight_zero_and_respects_weights() {
    let mut fx = Fixture::new(MaglevConfig::default());
    let mut svc = random_service(&FOUR[..3]);
    svc.backends[0].weight = 0;
    svc.backends[1].weight = 10;
    svc.backends[2].weight = 30;
    fx.apply(&[svc]);
    let mut hits = std::collections::BTreeMap::new();
    for port in 40000..40400 {
        let b = bpf_backend(
            &mut fx,
            &tcp(&format!("192.168.5.2:{port}"), "10.96.0.10:80"),
        );
        *hits.entry(b.to_string()).or_insert(0u32) += 1;
    }
    assert!(!hits.contains_key("10.0.1.1:80"), "{hits:?}");
    let (b2, b3) = (hits["10.0.1.2:80"], hits["10.0.1.3:80"]);
    assert!(b3 > 2 * b2, "weights 10:30 gave {b2}:{b3}");
}

#[test]
fn capacity_is_checked_for_the_whole_batch() {
    lb_testkit::require_privileges();
    let bpffs = lb_testkit::BpffsGuard::new().unwrap();
    let mut opts = lb_ebpf::LoadOptions::new(bpffs.pin_path("lb"), &[]);
    opts.capacity.backends = 3;
    let loaded = lb_ebpf::load(&opts).unwrap();
    let node = NodeConfig::new("node-1", vec![ip(NODE_IP)]);
    let mut dp = lb_ebpf::EbpfDataplane::open(loaded.pin_dir(), &node).unwrap();
    let desired = DesiredState::build(&node, &[random_service(&FOUR)]).unwrap();
    let mut rec = Reconciler::new();
    let err = rec.apply(&mut dp, &desired).unwrap_err();
    assert!(
        matches!(
            err,
            ReconcileError::Dataplane(DataplaneError::CapacityExceeded {
                capacity: 3,
                needed: 4,
                ..
            })
        ),
        "{err}"
    );
    // Nothing was written.
    assert_eq!(dp.maps().backends.keys().count(), 0);
    assert_eq!(dp.maps().services.keys().count(), 0);
    let desired = DesiredState::build(&node, &[random_service(&FOUR[..3])]).unwrap();
    rec.apply(&mut dp, &desired).unwrap();
    drop(dp);
    lb_ebpf::cleanup(loaded.pin_dir()).unwrap();
}

#[test]
fn source_ranges_admit_only_listed_clients() {
    let mut fx = Fixture::new(MaglevConfig::default());
    let mut svc = web(
        &[("203.0.113.7:80", FrontendType::LoadBalancer)],
        &["10.0.1.5:8080"],
    );
    svc.source_ranges = vec![
        "192.168.5.0/24".parse().unwrap(),
        "10.9.9.9/32".parse().unwrap(),
    ];
    fx.apply(&[svc.clone()]);
    for (src, allowed) in [
        ("192.168.5.2:40000", true),
        ("10.9.9.9:40000", true),
        ("10.9.9.8:40000", false),
        ("192.168.6.2:40000", false),
    ] {
        let frame = tcp(src, "203.0.113.7:80");
        let verdict = fx.decide(&flow_key(&frame), 0);
        assert_eq!(
            forwarded_to(&verdict).is_some(),
            allowed,
            "{src}: {verdict:?}"
        );
        let (rv, _) = fx.ingress(&frame);
        assert_eq!(rv, if allowed { TC_ACT_OK } else { TC_ACT_SHOT }, "{src}");
    }
    assert_eq!(
        fx.dp.counters().unwrap().drops_for(DropReason::SourceRange),
        2
    );
    // Narrowing the ranges removes the stale prefix.
    svc.source_ranges.pop();
    fx.apply(&[svc]);
    assert_eq!(
        fx.ingress(&tcp("10.9.9.9:40001", "203.0.113.7:80")).0,
        TC_ACT_SHOT
    );
    assert_eq!(fx.dp.maps().src_range.keys().count(), 1);
}

/// Per-packet cost from single `BPF_PROG_TEST_RUN`s (the kernel's own
/// timing of the program, averaged). Printed for BENCHMARKS.md; run with
/// `cargo test -p lb-ebpf --release --test prog_run per_packet_cost -- --nocapture`.
#[test]
fn per_packet_cost() {
    const N: u16 = 20_000;
    for alg in [LbAlgorithm::Random, LbAlgorithm::Maglev] {
        let mut fx = Fixture::new(MaglevConfig::new(16381, 7).unwrap());
        let backends: Vec<String> = (1..=10).map(|i| format!("10.0.2.{i}:8080")).collect();
        let refs: Vec<&str> = backends.iter().map(String::as_str).collect();
        let mut svc = web(&[("10.96.0.10:80", FrontendType::ClusterIp)], &refs);
        svc.algorithm = Some(alg);
        fx.apply(&[svc]);
        let mut first = 0u128;
        for i in 0..N {
            let frame = tcp(
                &format!("192.168.7.{}:{}", 1 + i % 200, 10_000 + i),
                "10.96.0.10:80",
            );
            let (rv, _, ns) = run_timed(fx.loaded.ingress(), &frame);
            assert_eq!(rv, TC_ACT_OK);
            first += ns;
        }
        let frame = tcp("192.168.7.1:10000", "10.96.0.10:80");
        let backend = bpf_backend(&mut fx, &frame);
        let reply = tcp(&backend.to_string(), "192.168.7.1:10000");
        let (mut est, mut rev) = (0u128, 0u128);
        for _ in 0..N {
            est += run_timed(fx.loaded.ingress(), &frame).2;
            rev += run_timed(fx.loaded.egress(), &reply).2;
        }
        let n = u128::from(N);
        println!(
            "lb-ebpf tc {alg}: first packet {} ns, established {} ns, reply (egress rev-NAT) {} ns",
            first / n,
            est / n,
            rev / n
        );
    }
}

#[test]
fn weighted_random_falls_back_when_slot_zero_is_ahead_of_the_slots() {
    // A frontend rewrite writes the slots before slot 0: while the weights
    // shrink, slot 0 still carries the old (larger) total weight and the
    // walk over the slots finds nothing. The datapath must still forward.
    use lb_ebpf::abi::SVC_F_UNIFORM;
    let mut fx = Fixture::new(MaglevConfig::default());
    let mut svc = web(
        &[("10.96.0.10:80", FrontendType::ClusterIp)],
        &["10.0.1.5:8080", "10.0.1.6:8080"],
    );
    svc.algorithm = Some(LbAlgorithm::Random);
    fx.apply(&[svc]);
    let maps = fx.dp.maps();
    let (key, mut slot0) = maps
        .services
        .iter()
        .map(Result::unwrap)
        .find(|(k, _)| k.backend_slot == 0)
        .unwrap();
    slot0.flags &= !SVC_F_UNIFORM;
    slot0.total_weight = 1_000_000;
    maps.services.insert(key, slot0, 0).unwrap();
    let backends = [sa("10.0.1.5:8080"), sa("10.0.1.6:8080")];
    for port in 40000..40032u16 {
        let frame = tcp(&format!("192.168.5.2:{port}"), "10.96.0.10:80");
        let (rv, out) = fx.ingress(&frame);
        assert_eq!(rv, TC_ACT_OK, "flow from port {port} dropped");
        assert!(backends.contains(&endpoints(&out).1));
    }
    let c = fx.dp.counters().unwrap();
    assert_eq!(c.drops_for(DropReason::NoBackend), 0);
}

#[test]
fn an_evicted_reply_entry_is_recreated_by_the_next_client_packet() {
    use lb_ebpf::abi::CT_REPLY;
    let mut fx = Fixture::new(MaglevConfig::default());
    fx.apply(&[web(
        &[("10.96.0.10:80", FrontendType::ClusterIp)],
        &["10.0.1.5:8080"],
    )]);
    let (client, vip, be) = ("192.168.5.2:40000", "10.96.0.10:80", "10.0.1.5:8080");
    fx.ingress(&tcp(client, vip));
    // The LRU evicts the reply direction.
    let reply_key = fx
        .dp
        .maps()
        .ct
        .keys()
        .map(Result::unwrap)
        .find(|k| k.dir == CT_REPLY)
        .unwrap();
    fx.dp.maps().ct.remove(&reply_key).unwrap();
    // A packet in the same coarse second as the flow's last one skips the
    // reply entry (lb_ct_fresh): it is refreshed, or recreated, by the
    // first packet of a later second. Age the client's entry instead of
    // waiting for the clock.
    let (svc_key, mut svc_ct) = fx
        .dp
        .maps()
        .ct
        .iter()
        .map(Result::unwrap)
        .find(|(k, _)| k.dir != CT_REPLY)
        .unwrap();
    svc_ct.last_seen -= 2;
    fx.dp.maps().ct.insert(svc_key, svc_ct, 0).unwrap();
    // The next client packet of the established flow recreates it ...
    let ack = lb_testkit::PacketBuilder::tcp(sa(client), sa(vip))
        .ack()
        .build()
        .unwrap();
    let (rv, out) = fx.ingress(&ack);
    assert_eq!(rv, TC_ACT_OK);
    assert_eq!(endpoints(&out).1, sa(be));
    let ct = fx
        .dp
        .maps()
        .ct
        .get(&reply_key, 0)
        .expect("reply entry recreated");
    assert!(ct.last_seen.abs_diff(lb_ebpf::now_secs()) <= 1);
    // ... so the backend's replies are reverse-NATed again.
    let (_, back) = fx.egress(&tcp(be, client));
    assert_eq!(endpoints(&back), (sa(vip), sa(client)));
}

#[test]
fn sctp_frontends_and_backends_are_refused() {
    let mut fx = Fixture::new(MaglevConfig::default());
    let svc = web(
        &[("10.96.0.10:80/SCTP", FrontendType::ClusterIp)],
        &["10.0.1.5:8080/SCTP"],
    );
    let desired = DesiredState::build(&fx.node, &[svc]).expect("desired state");
    let err = fx.rec.apply(&mut fx.dp, &desired).unwrap_err();
    assert!(
        matches!(err, ReconcileError::Dataplane(DataplaneError::Unsupported(ref m)) if m.contains("SCTP")),
        "{err}"
    );
    assert_eq!(fx.dp.maps().services.keys().count(), 0, "nothing written");
    assert_eq!(fx.dp.maps().backends.keys().count(), 0, "nothing written");
}

#[test]
fn default_snat_ports_stay_clear_of_linux_ephemeral_ports() {
    use lb_ebpf::abi::{SNAT_PORT_MAX, SNAT_PORT_MIN};
    // net.ipv4.ip_local_port_range defaults to 32768-60999.
    const { assert!(SNAT_PORT_MIN > 60999 && SNAT_PORT_MAX == 65535) };
    let mut fx = Fixture::new(MaglevConfig::default());
    let cfg = fx.dp.maps().config.get(&0, 0).unwrap();
    assert_eq!((cfg.snat_port_min, cfg.snat_port_max), (61000, 65535));
}

#[test]
fn a_maglev_size_change_over_programmed_tables_is_refused_on_open() {
    use lb_ebpf::EbpfDataplane;
    let mut fx = Fixture::new(MaglevConfig::new(251, 7).unwrap());
    let pin_dir = fx.loaded.pin_dir().to_owned();
    // No Maglev tables yet: the size may change.
    let other = |m| {
        let mut n = fx.node.clone();
        n.maglev = MaglevConfig::new(m, 7).unwrap();
        n
    };
    let (n251, n509) = (other(251), other(509));
    EbpfDataplane::open(&pin_dir, &n509).expect("no tables: any size");
    EbpfDataplane::open(&pin_dir, &n251).expect("back to 251");
    let mut svc = web(
        &[("10.96.0.10:80", FrontendType::ClusterIp)],
        &["10.0.1.5:8080"],
    );
    svc.algorithm = Some(LbAlgorithm::Maglev);
    fx.apply(&[svc]);
    let err = EbpfDataplane::open(&pin_dir, &n509).unwrap_err();
    assert!(
        matches!(err, DataplaneError::Unsupported(ref m) if m.contains("cleanup")),
        "{err}"
    );
    // The configured size was left alone: the datapath still selects.
    let cfg = fx.dp.maps().config.get(&0, 0).unwrap();
    assert_eq!(cfg.maglev_table_size, 251);
    let (rv, out) = fx.ingress(&tcp("192.168.5.2:40000", "10.96.0.10:80"));
    assert_eq!(rv, TC_ACT_OK);
    assert_eq!(endpoints(&out).1, sa("10.0.1.5:8080"));
    EbpfDataplane::open(&pin_dir, &n251).expect("same size");
}

/// Service ids above 16 bits (issue 8): a Maglev LoadBalancer frontend with
/// source ranges and ClientIP affinity, numbered 70000 and up, is balanced,
/// reverse-NATed, filtered, pinned and counted under its id, and a restore
/// gives the ids back. Bounded: a handful of test runs.
#[test]
fn service_ids_above_16_bits_are_programmed_and_balanced() {
    let mut fx = Fixture::new(MaglevConfig::default());
    let mut svc = web(
        &[("203.0.113.7:80", FrontendType::LoadBalancer)],
        &["10.0.1.5:8080", "10.0.1.6:8080"],
    );
    svc.source_ranges = vec!["192.168.5.0/24".parse().unwrap()];
    svc.session_affinity = SessionAffinity::ClientIp { timeout_secs: 30 };
    svc.algorithm = Some(LbAlgorithm::Maglev);
    let desired = DesiredState::build(&fx.node, &[svc]).unwrap();
    let built = Tables::new().realize(&desired).unwrap();
    let mut fes: Vec<Frontend> = built.frontends.values().cloned().collect();
    for (i, fe) in fes.iter_mut().enumerate() {
        fe.id = ServiceId(70_000 + i as u32);
    }
    let tables = Tables::restore(fes, built.backends.values().cloned(), built.maglev).unwrap();
    fx.dp.apply(&diff(&Tables::new(), &tables)).unwrap();
    fx.rec = Reconciler::with_tables(tables);
    let ids: Vec<u32> = fx.rec.current().frontends.keys().map(|id| id.0).collect();
    assert!(ids.iter().all(|&id| id >= 70_000), "{ids:?}");

    // Balanced as lb-core decides (Maglev), reverse-NATed back.
    let frame = tcp("192.168.5.2:40000", "203.0.113.7:80");
    let want = forwarded_to(&fx.decide(&flow_key(&frame), 0)).unwrap();
    let be = bpf_backend(&mut fx, &frame);
    assert_eq!(be, want);
    let (rv, back) = fx.egress(&tcp(&be.to_string(), "192.168.5.2:40000"));
    assert_eq!(rv, TC_ACT_OK);
    assert_eq!(
        endpoints(&back),
        (sa("203.0.113.7:80"), sa("192.168.5.2:40000"))
    );
    // Affinity pins the client's other flows.
    for port in 40001..40005 {
        let src = format!("192.168.5.2:{port}");
        assert_eq!(bpf_backend(&mut fx, &tcp(&src, "203.0.113.7:80")), be);
    }
    // Source ranges keyed by the wide id.
    let (rv, _) = fx.ingress(&tcp("192.168.6.2:40000", "203.0.113.7:80"));
    assert_eq!(rv, TC_ACT_SHOT);
    // Counted under the wide id.
    let c = fx.dp.counters().unwrap();
    let (id, st) = c.services.iter().next().unwrap();
    assert!(id.0 >= 70_000, "{id}");
    assert_eq!((st.packets, st.new_flows), (5, 5));
    // A restarted agent gets the same ids back.
    let restored = fx.dp.restore().unwrap();
    assert_eq!(restored, *fx.rec.current());
    assert_eq!(
        restored.frontends.keys().map(|id| id.0).collect::<Vec<_>>(),
        ids
    );
}
