//! Shared fixture of the lb-ebpf tests: a private bpffs, the loaded
//! programs, an `EbpfDataplane` and lb-core's reconciler, plus test-run
//! helpers. Privileged: every constructor calls `require_privileges`.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};

use aya::programs::{TestRun, TestRunOptions};
use lb_core::*;
use lb_ebpf::{EbpfDataplane, LoadOptions, Loaded};
use lb_testkit::BpffsGuard;

/// The node IP of the packet-level tests.
pub const NODE_IP: &str = "192.168.1.10";

/// Loaded programs (not attached) over maps in a private bpffs.
pub struct Fixture {
    pub loaded: Loaded,
    pub dp: EbpfDataplane,
    pub rec: Reconciler,
    pub node: NodeConfig,
    pub flows: FlowState,
    pub bpffs: BpffsGuard,
}

impl Fixture {
    /// A fixture whose node has [`NODE_IP`] and the given Maglev config.
    pub fn new(maglev: MaglevConfig) -> Self {
        let mut node = NodeConfig::new("node-1", vec![NODE_IP.parse().unwrap()]);
        node.maglev = maglev;
        Self::with_node(node)
    }

    /// A fixture for `node` (its IPs also go into the datapath config).
    pub fn with_node(node: NodeConfig) -> Self {
        Self::with_capacity(node, lb_ebpf::MapCapacity::default())
    }

    /// A fixture for `node` whose maps have the given sizes.
    pub fn with_capacity(node: NodeConfig, capacity: lb_ebpf::MapCapacity) -> Self {
        lb_testkit::require_privileges();
        let bpffs = BpffsGuard::new().expect("bpffs");
        let mut opts = LoadOptions::new(bpffs.pin_path("lb"), &[]);
        opts.capacity = capacity;
        let loaded = lb_ebpf::load(&opts).expect("load");
        let dp = EbpfDataplane::open(loaded.pin_dir(), &node).expect("open dataplane");
        Fixture {
            loaded,
            dp,
            rec: Reconciler::new(),
            node,
            flows: FlowState::new(),
            bpffs,
        }
    }

    /// Reconciles `services` into the maps.
    pub fn apply(&mut self, services: &[Service]) {
        let desired = DesiredState::build(&self.node, services).expect("desired state");
        self.rec.apply(&mut self.dp, &desired).expect("apply");
    }

    /// Runs the ingress program once on `frame`: (return value, output frame).
    pub fn ingress(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        run(self.loaded.ingress(), frame)
    }

    /// Runs the egress program once on `frame`.
    pub fn egress(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        run(self.loaded.egress(), frame)
    }

    /// lb-core's verdict for `key` (scope external, the given time).
    pub fn decide(&mut self, key: &FlowKey, now: u64) -> Verdict {
        let ctx = FlowContext {
            now,
            entropy: 0,
            scope: Scope::External,
        };
        flow::decide(self.rec.current(), &self.node, &mut self.flows, key, ctx)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Err(e) = lb_ebpf::cleanup(self.loaded.pin_dir()) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// One `BPF_PROG_TEST_RUN`: (return value, output frame, kernel ns).
pub fn run_timed(prog: &mut aya::programs::SchedClassifier, frame: &[u8]) -> (u32, Vec<u8>, u128) {
    let mut out = vec![0u8; frame.len() + 256];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat: 1,
            ..Default::default()
        })
        .expect("test_run");
    out.truncate(r.data_size_out as usize);
    (r.return_value, out, r.duration.as_nanos())
}

/// One `BPF_PROG_TEST_RUN`: (return value, output frame).
pub fn run(prog: &mut aya::programs::SchedClassifier, frame: &[u8]) -> (u32, Vec<u8>) {
    let (rv, out, _) = run_timed(prog, frame);
    (rv, out)
}

/// XDP_DROP.
pub const XDP_DROP: u32 = 1;
/// XDP_PASS.
pub const XDP_PASS: u32 = 2;
/// XDP_TX.
pub const XDP_TX: u32 = 3;
/// XDP_REDIRECT.
pub const XDP_REDIRECT: u32 = 4;

/// One `BPF_PROG_TEST_RUN` of `prog` on `frame` arriving on `ifindex`:
/// (verdict, output frame, metadata the program left in front of it).
pub fn xdp_run(
    prog: &mut aya::programs::Xdp,
    frame: &[u8],
    ifindex: u32,
) -> (u32, Vec<u8>, Vec<u8>) {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    let mut ctx_out = [0u8; 24];
    let mut out = vec![0u8; frame.len() + 256];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ctx_out: Some(&mut ctx_out),
            repeat: 1,
            ..Default::default()
        })
        .expect("xdp test_run");
    out.truncate(r.data_size_out as usize);
    // ctx_out.data is the offset of the frame after the metadata.
    let meta_len = u32::from_ne_bytes(ctx_out[0..4].try_into().unwrap()) as usize;
    let frame_out = out.split_off(meta_len);
    (r.return_value, frame_out, out)
}

/// TC_ACT_OK.
pub const TC_ACT_OK: u32 = 0;
/// TC_ACT_SHOT.
pub const TC_ACT_SHOT: u32 = 2;

/// A TCP SYN frame.
pub fn tcp(src: &str, dst: &str) -> Vec<u8> {
    lb_testkit::PacketBuilder::tcp(sa(src), sa(dst))
        .syn()
        .payload(b"hello")
        .build()
        .unwrap()
}

/// A UDP frame.
pub fn udp(src: &str, dst: &str) -> Vec<u8> {
    lb_testkit::PacketBuilder::udp(sa(src), sa(dst))
        .payload(b"hello")
        .build()
        .unwrap()
}

/// Parses `ADDR:PORT`.
pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// (src, dst) of a frame, checking both checksums on the way.
pub fn endpoints(frame: &[u8]) -> (SocketAddr, SocketAddr) {
    lb_testkit::verify_checksums(frame).expect("valid checksums");
    let p = lb_testkit::parse(frame).expect("parse");
    (p.src, p.dst)
}

/// The flow key of a frame.
pub fn flow_key(frame: &[u8]) -> FlowKey {
    let p = lb_testkit::parse(frame).expect("parse");
    let proto = L4Proto::try_from(p.proto.number()).unwrap();
    FlowKey {
        src: p.src.ip(),
        dst: p.dst.ip(),
        sport: p.src.port(),
        dport: p.dst.port(),
        proto,
    }
}

/// A service with frontends `(addr, type)` and backends `addr`s.
pub fn service(name: &str, frontends: &[(&str, FrontendType)], backends: &[&str]) -> Service {
    let mut s = Service::new(name.parse().unwrap());
    for (a, t) in frontends {
        s.frontends
            .push(FrontendParams::new(a.parse().unwrap(), *t));
    }
    for b in backends {
        s.backends.push(BackendParams::new(b.parse().unwrap()));
    }
    s
}

/// The backend address a verdict forwards to.
pub fn forwarded_to(v: &Verdict) -> Option<SocketAddr> {
    match v {
        Verdict::Forward(f) => Some(SocketAddr::new(f.backend.addr, f.backend.port)),
        _ => None,
    }
}

/// The IPv4 address of `s`.
pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Detaches and unpins everything loaded under a bpffs directory on drop,
/// also when the test panics.
pub struct Pins(pub std::path::PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        if let Err(e) = lb_ebpf::cleanup(&self.0) {
            eprintln!("cleanup {}: {e}", self.0.display());
        }
    }
}

/// A service with the given frontends and active backends (`ADDR:PORT[/PROTO]`).
pub fn svc(name: &str, frontends: &[(String, FrontendType)], backends: Vec<String>) -> Service {
    let mut s = Service::new(name.parse().unwrap());
    for (a, t) in frontends {
        s.frontends
            .push(FrontendParams::new(a.parse().unwrap(), *t));
    }
    for b in backends {
        s.backends.push(BackendParams::new(b.parse().unwrap()));
    }
    s
}

/// `web` (TCP, 80 -> 8080) and `dns` (UDP, 53 -> 5353) on the LoadBalancer
/// address `vip` and on NodePorts 30080 / 30053, Maglev over `backends`.
pub fn web_and_dns(vip: std::net::Ipv4Addr, backends: &[std::net::Ipv4Addr]) -> Vec<Service> {
    let backends: Vec<IpAddr> = backends.iter().map(|&b| b.into()).collect();
    web_and_dns_ip(vip.into(), &backends)
}

/// [`web_and_dns`] for either family: the NodePorts are the wildcard of
/// `vip`'s family (`0.0.0.0` or `::`).
pub fn web_and_dns_ip(vip: IpAddr, backends: &[IpAddr]) -> Vec<Service> {
    let be = |port: u16, udp: &str| -> Vec<String> {
        backends
            .iter()
            .map(|&b| format!("{}{udp}", SocketAddr::new(b, port)))
            .collect()
    };
    let any: IpAddr = if vip.is_ipv6() {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    };
    let mut web = svc(
        "default/web",
        &[
            (
                SocketAddr::new(vip, 80).to_string(),
                FrontendType::LoadBalancer,
            ),
            (
                SocketAddr::new(any, 30080).to_string(),
                FrontendType::NodePort,
            ),
        ],
        be(8080, ""),
    );
    let mut dns = svc(
        "default/dns",
        &[
            (
                format!("{}/UDP", SocketAddr::new(vip, 53)),
                FrontendType::LoadBalancer,
            ),
            (
                format!("{}/UDP", SocketAddr::new(any, 30053)),
                FrontendType::NodePort,
            ),
        ],
        be(5353, "/UDP"),
    );
    web.algorithm = Some(LbAlgorithm::Maglev);
    dns.algorithm = Some(LbAlgorithm::Maglev);
    vec![web, dns]
}

/// The counters of every counter slot the maps' entries name, as sorted
/// debug lines: `svcstats SLOT COUNTERS` for the frontends (slot-0 entries
/// of both services maps), `bestats SLOT COUNTERS` for the backends.
pub fn counter_lines(maps: &lb_ebpf::Maps) -> Vec<String> {
    let fe4 = maps.services.iter().map(|r| {
        let (k, v) = r.unwrap();
        (k.backend_slot, v.stats_slot)
    });
    let fe6 = maps.services6.iter().map(|r| {
        let (k, v) = r.unwrap();
        (k.backend_slot, v.stats_slot)
    });
    let mut out: Vec<String> = fe4
        .chain(fe6)
        .filter(|(backend_slot, _)| *backend_slot == 0)
        .map(|(_, slot)| format!("svcstats {slot} {:?}", maps.service_stats_at(slot).unwrap()))
        .collect();
    let be4 = maps.backends.iter().map(|r| r.unwrap().1.stats_slot);
    let be6 = maps.backends6.iter().map(|r| r.unwrap().1.stats_slot);
    out.extend(
        be4.chain(be6)
            .map(|slot| format!("bestats {slot} {:?}", maps.backend_stats_at(slot).unwrap())),
    );
    out.sort();
    out
}

/// The echo rounds of the XDP end-to-end tests, from the client namespace
/// `client`: to each of `tcp`, four times a 5-byte and a 64 KiB TCP
/// request; to each of `udp`, eight UDP requests whose replies must come
/// from the frontend. Every echo is checked; failures name `what`. Returns
/// the backends (the digit of their `beK:` tag) that answered TCP and UDP.
/// Bounded: 10 s per connect, read and write.
pub fn echo_rounds(
    client: &lb_testkit::NetNs,
    tcp: &[SocketAddr],
    udp: &[SocketAddr],
    what: &str,
) -> (
    std::collections::BTreeSet<u8>,
    std::collections::BTreeSet<u8>,
) {
    const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
    let big = vec![b'x'; 64 * 1024];
    let mut tcp_seen = std::collections::BTreeSet::new();
    let mut udp_seen = std::collections::BTreeSet::new();
    for &dst in tcp {
        for _ in 0..4 {
            for msg in [&b"hello"[..], &big[..]] {
                let r = lb_testkit::tcp_request(client, dst, msg, TIMEOUT)
                    .unwrap_or_else(|e| panic!("{what}: TCP to {dst}: {e}"));
                assert!(r.ends_with(msg), "{dst}: echo of {} bytes", msg.len());
                tcp_seen.insert(r[2]);
            }
        }
    }
    for &dst in udp {
        for i in 0..8 {
            let any: IpAddr = if dst.is_ipv6() {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            };
            let sock = client
                .run_in(|| std::net::UdpSocket::bind(SocketAddr::new(any, 0)))
                .unwrap()
                .unwrap();
            sock.set_read_timeout(Some(TIMEOUT)).unwrap();
            let msg = format!("q{i}");
            sock.send_to(msg.as_bytes(), dst).unwrap();
            let mut buf = [0u8; 2048];
            let (n, from) = sock
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("{what}: UDP to {dst}: {e}"));
            assert_eq!(from, dst, "the reply comes from the frontend");
            assert!(buf[..n].ends_with(msg.as_bytes()));
            udp_seen.insert(buf[2]);
        }
    }
    (tcp_seen, udp_seen)
}

/// `lb_test_flow_hash` of the test object (the C flow hash of a frame)
/// equals lb-core's `FlowKey::hash` for `cases` random TCP or UDP
/// 5-tuples with addresses from `addr` and random seeds (proptest).
pub fn assert_c_flow_hash_is_lb_cores(
    cases: u32,
    addr: impl proptest::strategy::Strategy<Value = IpAddr> + Clone,
) {
    use aya::maps::Array;
    use aya::programs::SchedClassifier;
    use lb_ebpf::abi::LbConfig;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    lb_testkit::require_privileges();
    let mut ebpf = aya::Ebpf::load(lb_ebpf::loader::TEST_OBJECT).expect("load test object");
    let cfg: Array<_, LbConfig> = Array::try_from(ebpf.take_map("lb_config").unwrap()).unwrap();
    let prog: &mut SchedClassifier = ebpf
        .program_mut("lb_test_flow_hash")
        .unwrap()
        .try_into()
        .unwrap();
    prog.load().unwrap();
    let strategy = (
        any::<u32>(),
        addr.clone(),
        addr,
        1u16..,
        1u16..,
        any::<bool>(),
    );
    let mut runner = TestRunner::new(Config::with_cases(cases));
    let cell = std::cell::RefCell::new((cfg, prog));
    runner
        .run(&strategy, |(seed, s, d, sport, dport, is_udp)| {
            let (cfg, prog) = &mut *cell.borrow_mut();
            cfg.set(
                0,
                LbConfig {
                    maglev_seed: seed,
                    ..LbConfig::default()
                },
                0,
            )
            .unwrap();
            let src = SocketAddr::new(s, sport).to_string();
            let dst = SocketAddr::new(d, dport).to_string();
            let frame = if is_udp {
                udp(&src, &dst)
            } else {
                tcp(&src, &dst)
            };
            let (rv, _) = run(prog, &frame);
            prop_assert_eq!(rv, flow_key(&frame).hash(seed));
            Ok(())
        })
        .unwrap();
}
