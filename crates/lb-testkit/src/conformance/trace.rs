//! Recorded packet traces and their replay through several dataplanes.
//!
//! A [`Trace`] is a list of [`Step`]s: program services, send a frame in a
//! direction with a time and entropy, or reset flows. [`replay`] runs it
//! through one dataplane and records every result; [`assert_same`] compares
//! the records of two dataplanes frame by frame.

use lb_core::{DesiredState, NodeConfig, Reconciler, Service};

use super::dut::{AsDataplane, DataplaneUnderTest, Direction, PacketCtx, PacketResult};

/// One step of a trace.
#[derive(Debug, Clone)]
pub enum Step {
    /// Reconcile to these services.
    Program(Vec<Service>),
    /// Process a frame.
    Packet {
        /// Which way.
        dir: Direction,
        /// The frame.
        frame: Vec<u8>,
        /// Time and entropy.
        ctx: PacketCtx,
    },
    /// Forget flows.
    ResetFlows,
}

/// A recorded packet trace.
#[derive(Debug, Clone)]
pub struct Trace {
    /// The node the trace was recorded on.
    pub node: NodeConfig,
    /// The steps.
    pub steps: Vec<Step>,
}

/// What one step produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// The result of programming (`Err` text on failure).
    Programmed(Result<usize, String>),
    /// The result of a packet.
    Packet(PacketResult),
    /// Flows were reset.
    Reset,
}

/// Replays `trace` through `dut`.
pub fn replay(dut: &mut dyn DataplaneUnderTest, trace: &Trace) -> Vec<Record> {
    let mut rec = Reconciler::new();
    trace
        .steps
        .iter()
        .map(|step| match step {
            Step::Program(services) => Record::Programmed(
                DesiredState::build(&trace.node, services)
                    .map_err(|e| e.to_string())
                    .and_then(|d| {
                        rec.apply(&mut AsDataplane(&mut *dut), &d)
                            .map_err(|e| e.to_string())
                    }),
            ),
            Step::Packet { dir, frame, ctx } => Record::Packet(dut.process(*dir, frame, *ctx)),
            Step::ResetFlows => {
                dut.reset_flows();
                Record::Reset
            }
        })
        .collect()
}

/// Asserts that two replays of `trace` are identical, naming the first
/// step where they differ.
pub fn assert_same(trace: &Trace, a: (&str, &[Record]), b: (&str, &[Record])) {
    assert_eq!(a.1.len(), b.1.len());
    for (i, (x, y)) in a.1.iter().zip(b.1).enumerate() {
        assert_eq!(
            x, y,
            "step {i} ({:?}) differs between {} and {}",
            trace.steps[i], a.0, b.0
        );
    }
}

/// Records a trace of `packets` frames with a seeded generator: several
/// services (random with affinity, Maglev, NodePort with an SNATed remote
/// backend, source ranges, traffic policy Local), clients that reuse ports
/// (established flows), replies to what lb-core's oracle forwarded, a
/// backend that turns terminating and one that is removed halfway, flow
/// resets, and damaged frames.
///
/// ```
/// use lb_testkit::conformance::{trace, OracleDataplane};
/// let t = trace::record(7, 50);
/// let mut a = OracleDataplane::new(&trace::setup(&t));
/// let mut b = OracleDataplane::new(&trace::setup(&t));
/// trace::assert_same(&t, ("a", &trace::replay(&mut a, &t)), ("b", &trace::replay(&mut b, &t)));
/// ```
pub fn record(seed: u64, packets: usize) -> Trace {
    record_with(seed, packets, true)
}

/// [`record`], with or without a flow that lb-core SNATs (a remote backend
/// under traffic policy Cluster), for dataplanes that do not SNAT.
pub fn record_with(seed: u64, packets: usize, snat: bool) -> Trace {
    record_opts(
        seed,
        packets,
        Recording {
            snat,
            ..Recording::DEFAULT
        },
    )
}

/// How [`record_opts`] records a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recording {
    /// Include a remote backend that lb-core SNATs (traffic policy Cluster).
    pub snat: bool,
    /// Every service with more than one selectable backend uses Maglev, and
    /// affinity outlives the trace: the verdicts do not depend on
    /// [`PacketCtx`], so a dataplane that draws its own random numbers and
    /// reads its own clock (lb-ebpf) must agree frame for frame.
    pub deterministic: bool,
    /// Let a new flow take the reply tuple (backend, source the backend
    /// sees: the node IP when SNATed, else the client, and the client's
    /// port) of another flow still tracked: a SNATed one, or one from the
    /// same client port to another frontend of the same backend. lb-core's
    /// model keeps the client's port, so two such flows share one reply
    /// tuple (the newer owns it); a dataplane that gives the new flow
    /// another source port on such a collision (lb-ebpf, as Cilium's SNAT
    /// and netfilter's clash resolution) differs there by design. `false`
    /// leaves such packets out of the trace.
    pub snat_collisions: bool,
    /// Damage some frames so that their network header is cut short: an
    /// IPv4 header truncated, or a frame too short for an IPv6 header
    /// relabelled IPv6. `BPF_PROG_TEST_RUN` refuses both (EINVAL); `false`
    /// damages those frames another way.
    pub short_l3_headers: bool,
    /// The dataplanes parse IPv6: some IPv4 frames are relabelled IPv6
    /// (version 4 in an IPv6 frame: malformed, dropped). `false` (an
    /// IPv4-only dataplane, which passes every IPv6 frame) relabels them
    /// ARP instead.
    pub ipv6: bool,
    /// Dual stack: the node has an IPv6 address too, every service gets
    /// IPv6 frontends and backends beside its IPv4 ones (the same kinds:
    /// ClusterIP with affinity, Maglev UDP, a wildcard NodePort with an
    /// SNATed remote backend, a LoadBalancer with source ranges, one with
    /// traffic policy Local, and the same changes halfway), and about half
    /// the packets are IPv6 (clients `fd00:5::/64` and `fd00:6::/64`),
    /// damaged IPv6 ways too (version not 6, TCP/UDP header cut short,
    /// relabelled ARP or ICMPv6, a fragment header), and some get IPv6
    /// extension headers (hop-by-hop, destination options, routing). `false` records exactly what it did before.
    pub dual_stack: bool,
}

impl Recording {
    /// What [`record`] does: random selection, SNAT, collisions allowed.
    pub const DEFAULT: Recording = Recording {
        snat: true,
        deterministic: false,
        snat_collisions: true,
        short_l3_headers: true,
        ipv6: true,
        dual_stack: false,
    };
    /// For lb-ebpf through `BPF_PROG_TEST_RUN`: SNAT, Maglev everywhere, no
    /// SNAT tuple collisions, no IPv4 headers cut short, IPv4 only
    /// ([`Recording::DETERMINISTIC_DUAL_STACK`] adds IPv6).
    pub const DETERMINISTIC: Recording = Recording {
        snat: true,
        deterministic: true,
        snat_collisions: false,
        short_l3_headers: false,
        ipv6: false,
        dual_stack: false,
    };
    /// [`Recording::DETERMINISTIC`] with IPv6: dual-stack services and
    /// IPv4 and IPv6 packets ([`Recording::dual_stack`]).
    pub const DETERMINISTIC_DUAL_STACK: Recording = Recording {
        ipv6: true,
        dual_stack: true,
        ..Recording::DETERMINISTIC
    };
}

/// [`record`] with the given [`Recording`] options.
pub fn record_opts(seed: u64, packets: usize, opts: Recording) -> Trace {
    use super::session::{frame, sa};
    use super::OracleDataplane;
    use lb_core::{L4Proto, MaglevConfig};

    let mut rng = SplitMix(seed);
    let mut node_ips = vec![sa("192.168.1.10:0").ip()];
    if opts.dual_stack {
        node_ips.push(sa("[fd00:1::10]:0").ip());
    }
    let mut node = NodeConfig::new(super::scenarios::NODE, node_ips);
    node.maglev = MaglevConfig::new(251, rng.next() as u32).expect("maglev config");
    let v1 = trace_services(false, opts);
    let v2 = trace_services(true, opts);
    // Reply tuple (proto, backend, source after NAT) -> the client's flow,
    // since the last flow reset.
    let mut snat_tuples = std::collections::HashMap::new();
    let mut trace = Trace {
        node,
        steps: vec![Step::Program(v1.clone())],
    };
    let mut oracle = OracleDataplane::new(&setup(&trace));
    let mut rec = Reconciler::new();
    let mut program = |oracle: &mut OracleDataplane, services: &[Service]| {
        if let Ok(d) = DesiredState::build(&trace.node, services) {
            let _ = rec.apply(&mut AsDataplane(oracle), &d);
        }
    };
    program(&mut oracle, &v1);
    let dsts = [
        ("10.96.0.10:80", L4Proto::Tcp),
        ("10.96.0.53:53", L4Proto::Udp),
        ("192.168.1.10:30080", L4Proto::Tcp),
        ("127.0.0.1:30080", L4Proto::Tcp),
        ("203.0.113.7:80", L4Proto::Tcp),
        ("203.0.113.8:80", L4Proto::Tcp),
        ("10.96.0.99:80", L4Proto::Tcp),
    ];
    let dsts6 = [
        ("[fd00:96::10]:80", L4Proto::Tcp),
        ("[fd00:96::53]:53", L4Proto::Udp),
        ("[fd00:1::10]:30080", L4Proto::Tcp),
        ("[::1]:30080", L4Proto::Tcp),
        ("[fd00:cb::7]:80", L4Proto::Tcp),
        ("[fd00:cb::8]:80", L4Proto::Tcp),
        ("[fd00:96::99]:80", L4Proto::Tcp),
    ];
    let mut now = 100u64;
    for i in 0..packets {
        let mut extra = Vec::new();
        if i == packets / 2 {
            extra.push(Step::Program(v2.clone()));
        } else if rng.next().is_multiple_of(97) {
            extra.push(Step::ResetFlows);
        }
        now += rng.next() % 3;
        let v6 = opts.dual_stack && rng.next().is_multiple_of(2);
        let client = if v6 {
            format!(
                "[fd00:{}::{}]:{}",
                5 + rng.next() % 2,
                1 + rng.next() % 6,
                40000 + rng.next() % 8
            )
        } else {
            format!(
                "192.168.{}.{}:{}",
                5 + rng.next() % 2,
                1 + rng.next() % 6,
                40000 + rng.next() % 8
            )
        };
        let (dst, proto) = if v6 {
            dsts6[(rng.next() % dsts6.len() as u64) as usize]
        } else {
            dsts[(rng.next() % dsts.len() as u64) as usize]
        };
        let mut f = frame(proto, sa(&client), sa(dst));
        if rng.next().is_multiple_of(13) {
            if v6 {
                damage6(&mut f, rng.next());
            } else {
                damage(&mut f, rng.next(), opts);
            }
        }
        let ctx = PacketCtx {
            now,
            entropy: rng.next() as u32,
        };
        extra.push(Step::Packet {
            dir: Direction::ToFrontend,
            frame: f.clone(),
            ctx,
        });
        // Keep the oracle in step to build the replies.
        let mut part = Trace {
            node: trace.node.clone(),
            steps: extra,
        };
        let mut out = None;
        let mut before = None;
        for step in &part.steps {
            match step {
                Step::Program(s) => program(&mut oracle, s),
                Step::ResetFlows => {
                    oracle.reset_flows();
                    snat_tuples.clear();
                }
                Step::Packet { dir, frame, ctx } => {
                    if !opts.snat_collisions {
                        before = Some(oracle.clone());
                    }
                    out = Some(oracle.process(*dir, frame, *ctx));
                }
            }
        }
        if let (Some(PacketResult::Accept(fwd)), Some(saved)) = (&out, before) {
            use super::reference::{classify, Class};
            if let (Class::Flow(orig), Class::Flow(k)) = (classify(&f), classify(fwd)) {
                // SNATed or only DNATed: the reply tuple is (backend, the
                // source the backend sees).
                if k != orig {
                    let tuple = (k.proto, k.dst, k.dport, k.src, k.sport);
                    if *snat_tuples.entry(tuple).or_insert(orig) != orig {
                        // Another tracked flow has this reply tuple: leave
                        // the packet out (and the oracle as it was).
                        oracle = saved;
                        part.steps.pop();
                        trace.steps.append(&mut part.steps);
                        continue;
                    }
                }
            }
        }
        if let (Some(PacketResult::Accept(fwd)), true) = (out, rng.next().is_multiple_of(2)) {
            if let super::reference::Class::Flow(k) = super::reference::classify(&fwd) {
                if fwd != f {
                    let reply = frame(
                        proto,
                        std::net::SocketAddr::new(k.dst, k.dport),
                        std::net::SocketAddr::new(k.src, k.sport),
                    );
                    oracle.process(Direction::Reply, &reply, ctx);
                    part.steps.push(Step::Packet {
                        dir: Direction::Reply,
                        frame: reply,
                        ctx,
                    });
                }
            }
        }
        trace.steps.append(&mut part.steps);
    }
    trace
}

/// The setup a trace's dataplanes are built with.
pub fn setup(trace: &Trace) -> super::Setup {
    super::Setup {
        node: trace.node.clone(),
        capacity: lb_core::Capacity::default(),
    }
}

fn trace_services(later: bool, opts: Recording) -> Vec<Service> {
    use super::scenarios::service;
    use lb_core::{
        BackendParams, BackendState, FrontendType, LbAlgorithm, SessionAffinity, TrafficPolicy,
    };
    let mut web = service(
        "default/web",
        &[("10.96.0.10:80", FrontendType::ClusterIp)],
        &["10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80", "10.0.1.4:80"],
    );
    web.algorithm = Some(LbAlgorithm::Random);
    web.session_affinity = SessionAffinity::ClientIp { timeout_secs: 5 };
    web.backends[1].weight = 3;
    let mut dns = service(
        "default/dns",
        &[("10.96.0.53:53/UDP", FrontendType::ClusterIp)],
        &["10.0.2.1:53/UDP", "10.0.2.2:53/UDP", "10.0.2.3:53/UDP"],
    );
    dns.algorithm = Some(LbAlgorithm::Maglev);
    let mut np = service(
        "default/np",
        &[("0.0.0.0:30080", FrontendType::NodePort)],
        &["10.0.3.1:8080"],
    );
    let remote = if opts.snat {
        "node-2"
    } else {
        super::scenarios::NODE
    };
    np.backends
        .push(BackendParams::new("10.0.4.1:8080".parse().expect("addr")).on_node(remote));
    np.algorithm = Some(LbAlgorithm::Maglev);
    let mut lb = service(
        "default/lb",
        &[("203.0.113.7:80", FrontendType::LoadBalancer)],
        &["10.0.5.1:80"],
    );
    lb.source_ranges = vec!["192.168.5.0/24".parse().expect("net")];
    let mut local = service(
        "default/local",
        &[("203.0.113.8:80", FrontendType::LoadBalancer)],
        &["10.0.6.1:80"],
    );
    local
        .backends
        .push(BackendParams::new("10.0.6.2:80".parse().expect("addr")).on_node("node-2"));
    local.ext_traffic_policy = TrafficPolicy::Local;
    if opts.deterministic {
        web.algorithm = Some(LbAlgorithm::Maglev);
        web.session_affinity = SessionAffinity::ClientIp {
            timeout_secs: 10_800,
        };
    }
    if later {
        web.backends[0].state = BackendState::Terminating;
        web.backends.remove(2);
        dns.backends.remove(0);
        np.backends[0].state = BackendState::Terminating;
    }
    if opts.dual_stack {
        add_ipv6(
            &mut web, &mut dns, &mut np, &mut lb, &mut local, later, remote,
        );
    }
    vec![web, dns, np, lb, local]
}

/// The IPv6 half of the dual-stack trace services: each service gets an
/// IPv6 frontend of the same type and IPv6 backends (on this node,
/// `fd00:1:B::N`, but for the SNATed `np` one and `local`'s remote one,
/// `fd00:2:B::N`, as in the IPv6 scenarios), changed halfway as the IPv4
/// ones are.
fn add_ipv6(
    web: &mut Service,
    dns: &mut Service,
    np: &mut Service,
    lb: &mut Service,
    local: &mut Service,
    later: bool,
    remote: &str,
) {
    use lb_core::{BackendParams, BackendState, FrontendParams, FrontendType};
    let fe = |s: &mut Service, addr: &str, t: FrontendType| {
        s.frontends
            .push(FrontendParams::new(addr.parse().expect("frontend"), t));
    };
    let be = |s: &mut Service, addr: &str, node: &str| {
        s.backends
            .push(BackendParams::new(addr.parse().expect("backend")).on_node(node));
    };
    let here = super::scenarios::NODE;
    fe(web, "[fd00:96::10]:80", FrontendType::ClusterIp);
    let first = web.backends.len();
    for k in 1..=4 {
        be(web, &format!("[fd00:1:1::{k}]:80"), here);
    }
    web.backends[first + 1].weight = 3;
    fe(dns, "[fd00:96::53]:53/UDP", FrontendType::ClusterIp);
    let first_dns = dns.backends.len();
    for k in 1..=3 {
        be(dns, &format!("[fd00:1:2::{k}]:53/UDP"), here);
    }
    fe(np, "[::]:30080", FrontendType::NodePort);
    let first_np = np.backends.len();
    be(np, "[fd00:1:3::1]:8080", here);
    be(np, "[fd00:2:4::1]:8080", remote);
    fe(lb, "[fd00:cb::7]:80", FrontendType::LoadBalancer);
    be(lb, "[fd00:1:5::1]:80", here);
    lb.source_ranges.push("fd00:5::/64".parse().expect("net"));
    fe(local, "[fd00:cb::8]:80", FrontendType::LoadBalancer);
    be(local, "[fd00:1:6::1]:80", here);
    be(local, "[fd00:2:6::2]:80", "node-2");
    if later {
        web.backends[first].state = BackendState::Terminating;
        web.backends.remove(first + 2);
        dns.backends.remove(first_dns);
        np.backends[first_np].state = BackendState::Terminating;
    }
}

/// Damages a frame the way the bad-packet cases do.
fn damage(f: &mut Vec<u8>, how: u64, opts: Recording) {
    let short_l3_headers = opts.short_l3_headers;
    match how % 6 {
        0 => f[14] = 0x44,                            // IHL below 5
        1 => f.truncate(14 + 20 + 4),                 // L4 header cut short
        2 => f[14 + 6] = 0x20,                        // a fragment
        3 => f[14 + 9] = 1,                           // ICMP
        4 if short_l3_headers => f.truncate(14 + 10), // IPv4 header cut short
        4 => f[14] = 0x4f,                            // IHL beyond the frame
        _ if opts.ipv6 && (short_l3_headers || f.len() >= 14 + 40) => {
            f[12..14].copy_from_slice(&[0x86, 0xdd]) // claims IPv6
        }
        _ => f[12..14].copy_from_slice(&[0x08, 0x06]), // claims ARP
    }
}

/// Damages an IPv6 frame: a version other than 6 (malformed), the TCP or
/// UDP header cut short (malformed), relabelled ARP (not IP), relabelled
/// ICMPv6 (an informational message, or a destination-unreachable error
/// whose quote is the TCP/UDP bytes: no tracked flow), or given a fragment
/// header (a first or a later fragment): none of these is a flow's packet,
/// every dataplane passes them untouched. Or not damaged but given an
/// extension header before its L4 header: hop-by-hop or destination
/// options (skipped: still the flow's packet), or a routing header with no
/// segments left (skipped) or with one left (not ours).
fn damage6(f: &mut Vec<u8>, how: u64) {
    const IP6: usize = 14;
    const NEXT_HEADER: usize = IP6 + 6;
    const L4: usize = IP6 + 40;
    let variant = how / 8;
    match how % 8 {
        0 => f[IP6] = 0x40 | (f[IP6] & 0x0f), // version 4
        1 => f.truncate(L4 + 4),              // L4 header cut short
        2 => f[NEXT_HEADER] = 58,             // ICMPv6, type as it falls
        3 => {
            // ICMPv6 port unreachable quoting garbage.
            f[NEXT_HEADER] = 58;
            f[L4] = 1;
            f[L4 + 1] = 4;
        }
        4 => {
            // A first fragment (offset 0, more fragments) or a later one.
            let offset_flags: u16 = if variant.is_multiple_of(2) {
                1
            } else {
                185 << 3
            };
            let [o0, o1] = offset_flags.to_be_bytes();
            let [i0, i1, i2, i3] = (variant as u32).to_be_bytes();
            insert_extension_header(f, 44, [o0, o1, i0, i1, i2, i3]);
        }
        5 | 6 => match variant % 4 {
            // PadN options (6 bytes of padding).
            0 => insert_extension_header(f, 0, [1, 4, 0, 0, 0, 0]),
            1 => insert_extension_header(f, 60, [1, 4, 0, 0, 0, 0]),
            // Routing type 253 (experimental), segments left 0 or 1.
            2 => insert_extension_header(f, 43, [253, 0, 0, 0, 0, 0]),
            _ => insert_extension_header(f, 43, [253, 1, 0, 0, 0, 0]),
        },
        _ => f[12..14].copy_from_slice(&[0x08, 0x06]), // claims ARP
    }
}

/// Puts an 8-byte IPv6 extension header of type `kind` (its next header
/// the old one, length 0, then `rest`) between the fixed header and the L4
/// header, and updates the payload length.
fn insert_extension_header(f: &mut Vec<u8>, kind: u8, rest: [u8; 6]) {
    const IP6: usize = 14;
    let mut header = vec![f[IP6 + 6], 0];
    header.extend_from_slice(&rest);
    f.splice(IP6 + 40..IP6 + 40, header);
    f[IP6 + 6] = kind;
    let payload = u16::from_be_bytes([f[IP6 + 4], f[IP6 + 5]]) + 8;
    f[IP6 + 4..IP6 + 6].copy_from_slice(&payload.to_be_bytes());
}

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
