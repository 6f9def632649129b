//! Differential test: the same recorded packet traces through lb-core's
//! oracle (`MemoryDataplane` + `flow::decide` + a from-scratch rewrite),
//! lb-userspace and lb-ebpf (`BPF_PROG_TEST_RUN`, see `common/dut.rs`) give
//! identical verdicts and identical frames (addresses, ports, checksums).
//!
//! lb-ebpf draws its own random numbers and reads the kernel's clock, so its
//! traces are recorded with [`trace::Recording::DETERMINISTIC`]: every
//! service with several selectable backends uses Maglev and affinity
//! outlives the trace. They keep the SNATed remote backend, but leave out
//! a new flow that would share the reply tuple of a tracked one (lb-core
//! keeps the client's port there, lb-ebpf allocates another: see
//! `tests/snat.rs` and, for one client port to two frontends of one
//! backend, `one_client_port_to_two_frontends_of_one_backend` in
//! `tests/e2e.rs`), and IPv4 headers cut short (test runs refuse them).
//! The same over IPv6 with [`trace::Recording::DETERMINISTIC_DUAL_STACK`]:
//! a dual-stack node and services (IPv4 and IPv6 frontends and backends of
//! every kind above, an SNATed remote IPv6 backend, IPv6 source ranges) and
//! IPv4 and IPv6 packets mixed.
//!
//! `props`: property tests of the SNAT and ICMP-error paths against
//! `decide` (random services with local and remote backends, random flows,
//! ICMP errors about random tracked flows; SNAT also over IPv6 and for
//! dual-stack services). Privileged (root).
//!
//! Bounded: a fixed number of traces (4 x 600 + 2 x 400 IPv4 packets,
//! 3 x 600 dual-stack ones) and proptest cases (8 IPv4 + 6 dual-stack
//! random traces of 300 packets, 24 SNAT and 24 ICMP cases of at most 24
//! flows); each trace or case loads the programs once. The whole file took
//! 133 s on the shared 2-core CI machine under load.

mod common;
#[path = "common/dut.rs"]
mod dut;
/// lb-userspace's own adapter (one worker; time and entropy from the trace).
#[path = "../../lb-userspace/tests/common/mod.rs"]
mod userspace;

use lb_testkit::conformance::trace::{self, Record, Recording, Trace};
use lb_testkit::conformance::{Direction, OracleDataplane, PacketResult};
use proptest::prelude::*;

/// Replays `t` through the three dataplanes and compares them pairwise.
fn compare(t: &Trace) -> Vec<Record> {
    let setup = trace::setup(t);
    let oracle = trace::replay(&mut OracleDataplane::new(&setup), t);
    let userspace = trace::replay(&mut userspace::Userspace::new(&setup), t);
    let ebpf = trace::replay(&mut dut::Ebpf::new(&setup), t);
    trace::assert_same(t, ("oracle", &oracle), ("lb-userspace", &userspace));
    trace::assert_same(t, ("oracle", &oracle), ("lb-ebpf", &ebpf));
    ebpf
}

/// (dropped, rewritten, passed untouched) packets of a replay.
fn outcomes(t: &Trace, records: &[Record]) -> (usize, usize, usize) {
    let (mut dropped, mut changed, mut same) = (0, 0, 0);
    for (step, r) in t.steps.iter().zip(records) {
        if let (trace::Step::Packet { frame, .. }, Record::Packet(p)) = (step, r) {
            match p {
                PacketResult::Drop => dropped += 1,
                PacketResult::Accept(out) if out == frame => same += 1,
                PacketResult::Accept(_) => changed += 1,
            }
        }
    }
    (dropped, changed, same)
}

/// How many forwarded frames of the replay were SNATed (their source
/// became a node IP) and how many replies to them were translated back;
/// with `v6`, the IPv6 ones only.
fn snat_exercised(t: &Trace, records: &[Record], v6: bool) -> (usize, usize) {
    let is_node = |ip: std::net::IpAddr| t.node.node_ips.contains(&ip) && ip.is_ipv6() == v6;
    let (mut fwd, mut back) = (0, 0);
    for (step, r) in t.steps.iter().zip(records) {
        let (trace::Step::Packet { frame, dir, .. }, Record::Packet(PacketResult::Accept(out))) =
            (step, r)
        else {
            continue;
        };
        let (Ok(i), Ok(o)) = (lb_testkit::parse(frame), lb_testkit::parse(out)) else {
            continue;
        };
        match dir {
            Direction::ToFrontend if is_node(o.src.ip()) => fwd += 1,
            Direction::Reply if is_node(i.dst.ip()) && out != frame => back += 1,
            _ => {}
        }
    }
    (fwd, back)
}

#[test]
fn recorded_traces_agree_across_oracle_userspace_and_ebpf() {
    for seed in 0..4 {
        let t = trace::record_opts(seed, 600, Recording::DETERMINISTIC);
        let ebpf = compare(&t);
        let (dropped, changed, same) = outcomes(&t, &ebpf);
        assert!(
            dropped > 10 && changed > 300 && same > 30,
            "seed {seed}: {dropped} {changed} {same}"
        );
        let (snat_fwd, snat_back) = snat_exercised(&t, &ebpf, false);
        assert!(
            snat_fwd > 5 && snat_back > 2,
            "seed {seed}: SNAT {snat_fwd} forwarded, {snat_back} replies"
        );
    }
}

#[test]
fn traces_without_snat_agree_too() {
    for seed in 100..102 {
        let t = trace::record_opts(
            seed,
            400,
            Recording {
                snat: false,
                ..Recording::DETERMINISTIC
            },
        );
        compare(&t);
    }
}

/// IPv6 frames of a replay that were rewritten (DNATed, SNATed or reverse
/// translated) and that were dropped.
fn ipv6_outcomes(t: &Trace, records: &[Record]) -> (usize, usize) {
    let (mut changed, mut dropped) = (0, 0);
    for (step, r) in t.steps.iter().zip(records) {
        let (trace::Step::Packet { frame, .. }, Record::Packet(p)) = (step, r) else {
            continue;
        };
        if frame.get(12..14) != Some(&[0x86, 0xdd][..]) {
            continue;
        }
        match p {
            PacketResult::Drop => dropped += 1,
            PacketResult::Accept(out) if out != frame => changed += 1,
            PacketResult::Accept(_) => {}
        }
    }
    (changed, dropped)
}

#[test]
fn dual_stack_traces_agree_across_oracle_userspace_and_ebpf() {
    for seed in 0..3 {
        let t = trace::record_opts(seed, 600, Recording::DETERMINISTIC_DUAL_STACK);
        let ebpf = compare(&t);
        let (dropped, changed, same) = outcomes(&t, &ebpf);
        assert!(
            dropped > 10 && changed > 300 && same > 30,
            "seed {seed}: {dropped} {changed} {same}"
        );
        let (changed6, dropped6) = ipv6_outcomes(&t, &ebpf);
        assert!(
            changed6 > 100 && dropped6 > 5,
            "seed {seed}: IPv6 {changed6} rewritten, {dropped6} dropped"
        );
        println!(
            "seed {seed}: {dropped} dropped, {changed} rewritten, {same} passed; \
             IPv6: {changed6} rewritten, {dropped6} dropped"
        );
        for v6 in [false, true] {
            let (snat_fwd, snat_back) = snat_exercised(&t, &ebpf, v6);
            assert!(
                snat_fwd > 2 && snat_back > 0,
                "seed {seed} (IPv6 {v6}): SNAT {snat_fwd} forwarded, {snat_back} replies"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]
    #[test]
    fn random_traces_agree(seed in any::<u64>()) {
        compare(&trace::record_opts(seed, 300, Recording::DETERMINISTIC));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]
    #[test]
    fn random_dual_stack_traces_agree(seed in any::<u64>()) {
        compare(&trace::record_opts(seed, 300, Recording::DETERMINISTIC_DUAL_STACK));
    }
}

// ---------------------------------------------------------------------------
// Property tests of the SNAT and ICMP paths against lb-core's `decide`:
// random services (Maglev, local and remote backends, both traffic
// policies) and random flows through lb-ebpf, every frame compared byte for
// byte with a from-scratch rewrite of what `decide` says.

mod props {
    use std::collections::HashSet;
    use std::net::{IpAddr, SocketAddr};

    use lb_core::*;
    use lb_testkit::conformance::reference::{classify, rewrite, Class};
    use lb_testkit::conformance::{
        AsDataplane, DataplaneUnderTest, Direction, PacketCtx, PacketResult, Setup,
    };
    use lb_testkit::packets::ICMP_PORT_UNREACH;
    use lb_testkit::{verify_checksums_strict, IcmpBuilder, PacketBuilder};
    use proptest::prelude::*;

    use crate::dut::Ebpf;

    const NODE_IP: &str = "192.168.1.10";
    /// The node's IPv6 address.
    const NODE_IP6: &str = "fd00:1::10";

    /// One generated service: (kind, UDP?, policy Local?, backends on this
    /// node?, family: 0 IPv4, 1 IPv6, 2 dual stack).
    type SvcSpec = (u8, bool, bool, Vec<bool>, u8);
    /// One generated flow: (client host, client port, service, loopback
    /// NodePort?); the host's parity picks the family of a dual-stack
    /// service's frontend.
    type FlowSpec = (u8, u16, usize, bool);

    fn node() -> NodeConfig {
        NodeConfig::new(
            "node-1",
            vec![NODE_IP.parse().unwrap(), NODE_IP6.parse().unwrap()],
        )
    }

    /// Service `i` of `spec`: a ClusterIP, NodePort or LoadBalancer
    /// frontend, Maglev, backends `10.0.<i>.<j>` on node-1 or node-2; over
    /// IPv6 the same with `fd00:96::`, `[::]` and `fd00:cb::` frontends and
    /// `fd00:2:<i>::<j>` backends (the DUT routes `fd00:2::/32` through its
    /// device, as `10/8`); dual stack: both.
    fn service(i: usize, (kind, udp, local, backends, family): &SvcSpec) -> Service {
        let proto = if *udp { "/UDP" } else { "" };
        let (fe, fe6, kind) = match kind % 3 {
            0 => (
                format!("10.96.0.{}:80", 10 + i),
                format!("[fd00:96::{:x}]:80", 10 + i),
                FrontendType::ClusterIp,
            ),
            1 => (
                format!("0.0.0.0:{}", 30080 + i),
                format!("[::]:{}", 30080 + i),
                FrontendType::NodePort,
            ),
            _ => (
                format!("203.0.113.{}:80", 10 + i),
                format!("[fd00:cb::{:x}]:80", 10 + i),
                FrontendType::LoadBalancer,
            ),
        };
        let (v4, v6) = (*family != 1, *family != 0);
        let mut s = Service::new(format!("default/s{i}").parse().unwrap());
        for (on, fe) in [(v4, fe), (v6, fe6)] {
            if on {
                s.frontends.push(FrontendParams::new(
                    format!("{fe}{proto}").parse().unwrap(),
                    kind,
                ));
            }
        }
        for (j, here) in backends.iter().enumerate() {
            let on = if *here { "node-1" } else { "node-2" };
            let mut addrs = Vec::new();
            if v4 {
                addrs.push(format!("10.0.{i}.{}:8080{proto}", j + 1));
            }
            if v6 {
                addrs.push(format!("[fd00:2:{i}::{:x}]:8080{proto}", j + 1));
            }
            for a in addrs {
                s.backends
                    .push(BackendParams::new(a.parse().unwrap()).on_node(on));
            }
        }
        s.algorithm = Some(LbAlgorithm::Maglev);
        if *local {
            s.ext_traffic_policy = TrafficPolicy::Local;
        }
        s
    }

    /// The frame of flow `spec` to a frontend of `svc`.
    fn flow_frame(services: &[Service], (host, port, svc, lo): FlowSpec) -> Vec<u8> {
        let s = &services[svc % services.len()];
        let fe = &s.frontends[usize::from(host) % s.frontends.len()];
        let addr = fe.addr;
        let v6 = addr.addr.is_ipv6();
        let dst_ip: IpAddr = if addr.addr.is_unspecified() {
            match (lo, v6) {
                (true, false) => "127.0.0.1".parse().unwrap(),
                (true, true) => "::1".parse().unwrap(),
                (false, false) => NODE_IP.parse().unwrap(),
                (false, true) => NODE_IP6.parse().unwrap(),
            }
        } else {
            addr.addr
        };
        let client = if v6 {
            format!("fd00:5::{:x}", 1 + host % 200)
        } else {
            format!("192.168.5.{}", 1 + host % 200)
        };
        let src = SocketAddr::new(client.parse().unwrap(), port);
        let dst = SocketAddr::new(dst_ip, addr.port);
        let b = if addr.proto == L4Proto::Udp {
            PacketBuilder::udp(src, dst)
        } else {
            PacketBuilder::tcp(src, dst).syn()
        };
        b.payload(b"hello").build().unwrap()
    }

    /// lb-ebpf and the oracle, programmed alike.
    struct Pair {
        dut: Ebpf,
        rec: Reconciler,
        node: NodeConfig,
        flows: FlowState,
    }

    impl Pair {
        fn new(services: &[Service]) -> Self {
            let node = node();
            let setup = Setup {
                node: node.clone(),
                capacity: Capacity::default(),
            };
            let mut p = Pair {
                dut: Ebpf::new(&setup),
                rec: Reconciler::new(),
                node,
                flows: FlowState::new(),
            };
            let desired = DesiredState::build(&p.node, services).expect("desired state");
            p.rec
                .apply(&mut AsDataplane(&mut p.dut), &desired)
                .expect("apply");
            p
        }

        fn decide(&mut self, frame: &[u8]) -> Verdict {
            let Class::Flow(key) = classify(frame) else {
                panic!("not a flow")
            };
            let ctx = FlowContext {
                now: 0,
                entropy: 0,
                scope: Scope::External,
            };
            flow::decide(self.rec.current(), &self.node, &mut self.flows, &key, ctx)
        }

        fn run(&mut self, dir: Direction, frame: &[u8]) -> PacketResult {
            self.dut.process(dir, frame, PacketCtx::default())
        }
    }

    fn accepted(r: PacketResult) -> Vec<u8> {
        match r {
            PacketResult::Accept(out) => out,
            PacketResult::Drop => panic!("dropped"),
        }
    }

    fn sa(ip: IpAddr, port: u16) -> SocketAddr {
        SocketAddr::new(ip, port)
    }

    /// A service of any family.
    fn svc_spec() -> impl Strategy<Value = SvcSpec> {
        (
            0u8..3,
            any::<bool>(),
            any::<bool>(),
            prop::collection::vec(any::<bool>(), 1..5),
            0u8..3,
        )
    }

    /// An IPv4 service (lb-ebpf translates no ICMPv6 errors yet).
    fn svc_spec4() -> impl Strategy<Value = SvcSpec> {
        (
            0u8..3,
            any::<bool>(),
            any::<bool>(),
            prop::collection::vec(any::<bool>(), 1..5),
            Just(0u8),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// SNAT, for IPv4, IPv6 and dual-stack services: every flow is
        /// forwarded, SNATed or dropped as `decide` says; a SNATed flow keeps the client's port when it is in the
        /// SNAT range and free, else gets a free one from the range; the
        /// frame is exactly the reference rewrite; the established flow
        /// keeps its translation; the backend's reply comes back from the
        /// frontend the client used.
        #[test]
        fn snat_follows_decide(
            specs in prop::collection::vec(svc_spec(), 1..5),
            flows in prop::collection::vec((any::<u8>(), 1024u16.., any::<usize>(), any::<bool>()), 1..24),
        ) {
            let services: Vec<Service> =
                specs.iter().enumerate().map(|(i, s)| service(i, s)).collect();
            let mut p = Pair::new(&services);
            // SNAT tuples in use: (proto, backend, node port).
            let mut used: HashSet<(L4Proto, SocketAddr, u16)> = HashSet::new();
            let mut ports = HashSet::new();
            for spec in flows {
                // One flow per client port: two clients sharing a port would
                // share lb-core's SNAT tuple (see `Recording::snat_collisions`).
                if !ports.insert(spec.1) {
                    continue;
                }
                let frame = flow_frame(&services, spec);
                let Class::Flow(key) = classify(&frame) else { unreachable!() };
                let verdict = p.decide(&frame);
                let got = p.run(Direction::ToFrontend, &frame);
                let f = match verdict {
                    Verdict::Pass => {
                        prop_assert_eq!(got, PacketResult::Accept(frame.clone()));
                        continue;
                    }
                    Verdict::Drop { .. } => {
                        prop_assert_eq!(got, PacketResult::Drop);
                        continue;
                    }
                    Verdict::Forward(f) => f,
                };
                let out = accepted(got);
                let backend = sa(f.backend.addr, f.backend.port);
                let src = match f.snat {
                    None => sa(key.src, key.sport),
                    Some(ip) => {
                        let node_ip: IpAddr = if key.src.is_ipv6() {
                            NODE_IP6.parse().unwrap()
                        } else {
                            NODE_IP.parse().unwrap()
                        };
                        prop_assert_eq!(ip, node_ip);
                        let Class::Flow(k) = classify(&out) else { panic!("{out:?}") };
                        let port = k.sport;
                        let keep = crate::dut::SNAT_PORTS.contains(&key.sport)
                            && !used.contains(&(key.proto, backend, key.sport));
                        if keep {
                            prop_assert_eq!(port, key.sport, "client port kept");
                        } else {
                            prop_assert!(crate::dut::SNAT_PORTS.contains(&port));
                        }
                        prop_assert!(used.insert((key.proto, backend, port)), "SNAT tuple reused");
                        sa(ip, port)
                    }
                };
                let want = rewrite(&frame, src, backend).unwrap();
                prop_assert_eq!(&out, &want, "{:?} -> {:?}", key, f);
                // Established: the same translation.
                prop_assert_eq!(accepted(p.run(Direction::ToFrontend, &frame)), want);
                // The reply, from the frontend the client used.
                let reply = PacketBuilder::tcp(backend, src);
                let reply = if key.proto == L4Proto::Udp {
                    PacketBuilder::udp(backend, src)
                } else {
                    reply.syn().ack()
                }
                .payload(b"world")
                .build()
                .unwrap();
                let back = accepted(p.run(Direction::Reply, &reply));
                let want = rewrite(&reply, sa(key.dst, key.dport), sa(key.src, key.sport)).unwrap();
                prop_assert_eq!(back, want, "reply of {:?}", key);
            }
        }

        /// ICMP errors about tracked flows (DNATed, and SNATed for remote
        /// backends), from the backend or a router, with the quote whole or
        /// cut to 8 bytes of L4: the client gets exactly the error it would
        /// get about the frontend `decide` says it used. Errors about
        /// untracked flows pass unchanged.
        #[test]
        fn icmp_errors_follow_decide(
            specs in prop::collection::vec(svc_spec4(), 1..5),
            flows in prop::collection::vec((any::<u8>(), 1024u16.., any::<usize>(), any::<bool>()), 1..12),
            errors in prop::collection::vec((any::<usize>(), 0u8..3, any::<bool>(), any::<bool>(), 576u16..1500), 1..12),
        ) {
            let services: Vec<Service> =
                specs.iter().enumerate().map(|(i, s)| service(i, s)).collect();
            let mut p = Pair::new(&services);
            // (flow, decision, the client as the backend sees it).
            let mut tracked = Vec::new();
            let mut ports = HashSet::new();
            for spec in flows {
                if !ports.insert(spec.1) {
                    continue;
                }
                let frame = flow_frame(&services, spec);
                let verdict = p.decide(&frame);
                let got = p.run(Direction::ToFrontend, &frame);
                if let Verdict::Forward(f) = verdict {
                    let out = accepted(got);
                    let (Class::Flow(key), Class::Flow(k)) = (classify(&frame), classify(&out)) else {
                        unreachable!()
                    };
                    prop_assert_eq!(sa(k.dst, k.dport), sa(f.backend.addr, f.backend.port));
                    prop_assert_eq!(k.src, f.snat.unwrap_or(key.src));
                    tracked.push((key, f, sa(k.src, k.sport)));
                }
            }
            let router: IpAddr = "10.255.0.1".parse().unwrap();
            for (pick, kind, from_backend, cut, mtu) in errors {
                // An untracked flow when nothing is tracked.
                let (key, frontend, backend, seen) = match tracked.get(pick % tracked.len().max(1)) {
                    Some((key, f, seen)) => (
                        *key,
                        sa(f.frontend.addr, f.frontend.port),
                        sa(f.backend.addr, f.backend.port),
                        *seen,
                    ),
                    None => {
                        let Class::Flow(key) = classify(&flow_frame(&services, (1, 1024, 0, false))) else { unreachable!() };
                        (key, sa(key.dst, key.dport), "10.0.9.9:9".parse().unwrap(), sa(key.src, key.sport))
                    }
                };
                let untracked = tracked.is_empty();
                let client = sa(key.src, key.sport);
                let quote = |src: SocketAddr, dst: SocketAddr| {
                    let b = if key.proto == L4Proto::Udp {
                        PacketBuilder::udp(src, dst)
                    } else {
                        PacketBuilder::tcp(src, dst).syn()
                    };
                    b.payload(b"hello").build_ip().unwrap()
                };
                let error = |src: IpAddr, dst: IpAddr, quoted: &[u8]| {
                    let b = match kind {
                        0 => IcmpBuilder::packet_too_big(src, dst, u32::from(mtu), quoted),
                        1 => IcmpBuilder::time_exceeded(src, dst, quoted),
                        _ => IcmpBuilder::dest_unreachable(src, dst, ICMP_PORT_UNREACH, quoted),
                    };
                    let b = if cut { b.truncate_inner(20 + 8) } else { b };
                    b.build().unwrap()
                };
                let src = if from_backend { backend.ip() } else { router };
                let err = error(src, seen.ip(), &quote(seen, backend));
                let out = accepted(p.run(Direction::Reply, &err));
                if untracked {
                    prop_assert_eq!(out, err);
                    continue;
                }
                let new_src = if from_backend { frontend.ip() } else { router };
                let want = error(new_src, client.ip(), &quote(client, frontend));
                prop_assert_eq!(&out, &want, "error about {:?}", key);
                if !cut {
                    prop_assert!(verify_checksums_strict(&out).is_ok());
                }
            }
        }
    }
}
