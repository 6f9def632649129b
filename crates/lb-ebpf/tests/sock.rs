//! Socket LB end to end: `bpf/lb_sock.c` on a child cgroup inside the node
//! namespace. A client process (python3, moved into the cgroup before it
//! starts) connects to ClusterIP TCP/UDP, localhost:NodePort and
//! nodeIP:NodePort, over IPv4, IPv6 and IPv4-mapped IPv6; it reaches a
//! backend, getpeername/recvfrom show the frontend, and no packet went
//! through the tc NAT. Privileged (root); everything lives in the test's
//! namespaces (ULA and documentation addresses, DAD off), cgroup and
//! private bpffs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

mod common;

use common::{svc, Pins};
use lb_core::*;
use lb_ebpf::{EbpfDataplane, LoadError, LoadOptions, Loaded};
use lb_testkit::topology::VIP_V4;
use lb_testkit::{cgroup2_mount, BpffsGuard, CgroupGuard, EchoServer, Topology};

/// The client: one line per request, `peer=<addr> reply=<text>` or
/// `error=<text>`. Requests: `tcp|udp|udp3|udpc HOST PORT` (udp: unconnected
/// sendto/recvfrom; udp3: three of them on one socket; udpc: connected UDP,
/// then getpeername; `tcp@SRC`: bound to SRC first). A HOST with a colon
/// (IPv6, or IPv4-mapped `::ffff:a.b.c.d`) uses an AF_INET6 socket, and the
/// peer is printed as Rust prints a `SocketAddr` (`[addr]:port`).
const CLIENT: &str = r#"
import socket, sys
a = sys.argv[1:]
for i in range(0, len(a), 3):
    kind, host, port = a[i], a[i + 1], int(a[i + 2])
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        if kind.startswith("tcp"):
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.settimeout(5)
            if "@" in kind:
                s.bind((kind.split("@")[1], 0))
            s.connect((host, port))
            peer = s.getpeername()
            s.sendall(b"hi")
            s.shutdown(socket.SHUT_WR)
            data = b""
            while True:
                d = s.recv(512)
                if not d:
                    break
                data += d
        elif kind in ("udp", "udp3"):
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.settimeout(5)
            for _ in range(3 if kind == "udp3" else 1):
                s.sendto(b"q", (host, port))
                data, peer = s.recvfrom(512)
        else:
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.settimeout(5)
            s.connect((host, port))
            s.send(b"q")
            data = s.recv(512)
            peer = s.getpeername()
        fmt = "peer=[%s]:%d" if fam == socket.AF_INET6 else "peer=%s:%d"
        print((fmt + " reply=%s") % (peer[0], peer[1], data.decode()), flush=True)
    except Exception as e:
        print("error=%s" % e, flush=True)
"#;

/// Runs the client in `ns`, inside `cgroup` when given; returns its lines.
fn client(ns: &lb_testkit::NetNs, cgroup: Option<&Path>, requests: &[String]) -> Vec<String> {
    let join = match cgroup {
        Some(cg) => format!("echo $$ > {}/cgroup.procs && ", cg.display()),
        None => String::new(),
    };
    let out = ns
        .command("sh")
        .arg("-c")
        .arg(format!("{join}exec /usr/bin/python3 -c \"$0\" \"$@\""))
        .arg(CLIENT)
        .args(requests)
        .stdin(Stdio::null())
        .output()
        .expect("run the python client");
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn req(kind: &str, addr: SocketAddr) -> Vec<String> {
    vec![kind.into(), addr.ip().to_string(), addr.port().to_string()]
}

/// One client process in `cg` sends each `(kind, frontend, message)` of
/// `targets`: the application sees the frontend as its peer, and a
/// backend's answer.
fn answered_by_backends(ns: &lb_testkit::NetNs, cg: &Path, targets: &[(&str, SocketAddr, &str)]) {
    let requests: Vec<String> = targets.iter().flat_map(|(k, a, _)| req(k, *a)).collect();
    let lines = client(ns, Some(cg), &requests);
    assert_eq!(lines.len(), targets.len(), "{lines:?}");
    for ((kind, addr, msg), line) in targets.iter().zip(&lines) {
        let want = format!("peer={addr} reply=be");
        assert!(line.starts_with(&want), "{kind} {addr}: {line}");
        assert!(line.ends_with(msg), "{kind} {addr}: {line}");
    }
}

/// A private bpffs and a child cgroup (named after `label`) for the socket
/// LB; dropped, the cgroup goes first, then the pins, then the bpffs.
struct SockLab {
    cg: CgroupGuard,
    pin_dir: PathBuf,
    _pins: Pins,
    _bpffs: BpffsGuard,
}

impl SockLab {
    fn new(label: &str) -> Self {
        let bpffs = BpffsGuard::new().expect("bpffs");
        let pin_dir = bpffs.pin_path("lb");
        let pins = Pins(pin_dir.clone());
        let cg = CgroupGuard::with_label(label).expect("child cgroup");
        SockLab {
            cg,
            pin_dir,
            _pins: pins,
            _bpffs: bpffs,
        }
    }

    /// Loads the tc programs on the node's client device and attaches the
    /// socket programs to the cgroup.
    fn load(&self, topo: &Topology) -> Loaded {
        let dev = topo.node_client_dev.clone();
        let opts = LoadOptions::new(&self.pin_dir, &[&dev]).with_cgroup(self.cg.path());
        topo.node
            .run_in(|| lb_ebpf::load(&opts))
            .unwrap()
            .expect("load and attach")
    }
}

#[test]
fn local_processes_are_connected_straight_to_backends() {
    lb_testkit::require_privileges();
    let topo = Topology::new(2).expect("topology");
    let lab = SockLab::new("sock");
    let (cg, pin_dir) = (&lab.cg, &lab.pin_dir);
    let loaded = lab.load(&topo);
    assert!(loaded.has_socket_lb());

    let mut servers = Vec::new();
    for b in &topo.backends {
        let tag = format!("be{}:", b.index + 1);
        let tag = tag.as_bytes();
        servers.push(EchoServer::tcp(&b.ns, SocketAddr::from((b.v4, 8080)), tag).unwrap());
        servers.push(EchoServer::udp(&b.ns, SocketAddr::from((b.v4, 5353)), tag).unwrap());
    }
    let tcp: Vec<String> = topo
        .backends
        .iter()
        .map(|b| format!("{}:8080", b.v4))
        .collect();
    let udp: Vec<String> = topo
        .backends
        .iter()
        .map(|b| format!("{}:5353/UDP", b.v4))
        .collect();
    let services = [
        svc(
            "default/web",
            &[
                (format!("{VIP_V4}:80"), FrontendType::ClusterIp),
                ("0.0.0.0:30080".into(), FrontendType::NodePort),
            ],
            tcp,
        ),
        svc(
            "default/dns",
            &[(format!("{VIP_V4}:53/UDP"), FrontendType::ClusterIp)],
            udp,
        ),
    ];
    let node = NodeConfig::new("node-1", vec![topo.node_v4.into()]);
    let desired = DesiredState::build(&node, &services).unwrap();
    let mut dp = EbpfDataplane::open(pin_dir, &node).expect("open dataplane");
    Reconciler::new()
        .apply(&mut dp, &desired)
        .expect("reconcile");

    let targets = [
        ("tcp", SocketAddr::from((VIP_V4, 80)), "hi"),
        ("tcp", "127.0.0.1:30080".parse().unwrap(), "hi"),
        ("tcp", SocketAddr::from((topo.node_v4, 30080)), "hi"),
        ("udp", SocketAddr::from((VIP_V4, 53)), "q"),
        ("udpc", SocketAddr::from((VIP_V4, 53)), "q"),
    ];
    answered_by_backends(&topo.node, cg.path(), &targets);

    // No per-packet NAT: the tc programs neither tracked nor counted any of
    // it, while the socket programs left reverse entries.
    assert_eq!(dp.maps().ct.keys().count(), 0, "no CT entries");
    let counters = dp.counters().unwrap();
    assert!(
        counters.services.values().all(|s| s.packets == 0),
        "{counters:?}"
    );
    assert!(dp.maps().sock_rev.keys().count() >= targets.len());
    // Per-backend counters: every translated socket is a new flow.
    let flows: u64 = counters.backends.values().map(|s| s.new_flows).sum();
    assert_eq!(flows, targets.len() as u64, "{counters:?}");
    // Several datagrams of one unconnected socket are one new flow.
    let lines = client(
        &topo.node,
        Some(cg.path()),
        &req("udp3", SocketAddr::from((VIP_V4, 53))),
    );
    assert!(
        lines[0].starts_with(&format!("peer={VIP_V4}:53 reply=be")),
        "{lines:?}"
    );
    let counters = dp.counters().unwrap();
    let flows: u64 = counters.backends.values().map(|s| s.new_flows).sum();
    assert_eq!(flows, targets.len() as u64 + 1, "{counters:?}");

    // Processes outside the cgroup are not balanced: the VIP is not routed.
    let outside = client(
        &topo.node,
        None,
        &req("tcp", SocketAddr::from((VIP_V4, 80))),
    );
    assert!(outside[0].starts_with("error="), "{outside:?}");

    // Reload: the cgroup links are swapped in place and keep working.
    drop(loaded);
    let loaded = lab.load(&topo);
    let again = client(
        &topo.node,
        Some(cg.path()),
        &req("tcp", SocketAddr::from((VIP_V4, 80))),
    );
    assert!(
        again[0].starts_with(&format!("peer={VIP_V4}:80 reply=be")),
        "{again:?}"
    );
    drop(loaded);

    // Cleanup detaches: the cgroup's processes are no longer balanced.
    lb_ebpf::cleanup(pin_dir).expect("cleanup");
    let after = client(
        &topo.node,
        Some(cg.path()),
        &req("tcp", SocketAddr::from((VIP_V4, 80))),
    );
    assert!(after[0].starts_with("error="), "{after:?}");
}

#[test]
fn the_root_cgroup_and_non_cgroups_are_refused() {
    lb_testkit::require_privileges();
    let bpffs = BpffsGuard::new().expect("bpffs");
    let pin_dir = bpffs.pin_path("lb");
    let _pins = Pins(pin_dir.clone());
    let root = cgroup2_mount().expect("cgroup2 mount");
    let err = lb_ebpf::load(&LoadOptions::new(&pin_dir, &[]).with_cgroup(&root)).unwrap_err();
    assert!(matches!(err, LoadError::RootCgroup(_)), "{err}");
    let err = lb_ebpf::load(&LoadOptions::new(&pin_dir, &[]).with_cgroup("/tmp")).unwrap_err();
    assert!(matches!(err, LoadError::NotACgroup(_)), "{err}");
    assert_eq!(
        std::fs::read_dir(pin_dir.join("maps"))
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "nothing loaded"
    );
}

/// loadBalancerSourceRanges on the socket path: the node's own processes
/// are the client, so an unbound socket counts as the node's first address
/// and a bound one as its bound address. Inside the ranges: connected
/// straight to a backend; outside: refused (EPERM) and counted as a
/// source-range drop; the verdicts equal lb-core's `decide` in the internal
/// scope. TCP and UDP (unconnected and connected). Bounded: a few requests
/// with 5 s timeouts.
#[test]
fn socket_lb_checks_load_balancer_source_ranges() {
    lb_testkit::require_privileges();
    let topo = Topology::new(1).expect("topology");
    let lab = SockLab::new("sockrange");
    let (cg, pin_dir) = (&lab.cg, &lab.pin_dir);
    let _loaded = lab.load(&topo);
    let b = &topo.backends[0];
    let _tcp = EchoServer::tcp(&b.ns, SocketAddr::from((b.v4, 8080)), b"be1:").unwrap();
    let _udp = EchoServer::udp(&b.ns, SocketAddr::from((b.v4, 5353)), b"be1:").unwrap();
    let lb = |name: &str, vip: &str, range: String| {
        let mut s = svc(
            name,
            &[
                (format!("{vip}:80"), FrontendType::LoadBalancer),
                (format!("{vip}:53/UDP"), FrontendType::LoadBalancer),
            ],
            vec![format!("{}:8080", b.v4), format!("{}:5353/UDP", b.v4)],
        );
        s.source_ranges = vec![range.parse().unwrap()];
        s
    };
    let node_ip = topo.node_v4;
    let services = [
        lb("default/mine", "198.51.100.21", format!("{node_ip}/32")),
        lb("default/theirs", "198.51.100.22", "10.99.0.0/16".into()),
    ];
    let node = NodeConfig::new("node-1", vec![node_ip.into()]);
    let desired = DesiredState::build(&node, &services).unwrap();
    let mut dp = EbpfDataplane::open(pin_dir, &node).expect("open dataplane");
    let mut rec = Reconciler::new();
    rec.apply(&mut dp, &desired).expect("reconcile");
    let before = dp.counters().unwrap().drops;

    let mine = |p: u16| SocketAddr::from(([198, 51, 100, 21], p));
    let theirs = |p: u16| SocketAddr::from(([198, 51, 100, 22], p));
    let other_src = format!("tcp@{}", b.node_v4);
    let cases: [(&str, SocketAddr, bool); 7] = [
        ("tcp", mine(80), true),
        ("udp", mine(53), true),
        ("udpc", mine(53), true),
        ("tcp", theirs(80), false),
        ("udp", theirs(53), false),
        ("udpc", theirs(53), false),
        // Bound to the node's other address: outside node_ip/32.
        (&other_src, mine(80), false),
    ];
    let requests: Vec<String> = cases.iter().flat_map(|(k, a, _)| req(k, *a)).collect();
    let lines = client(&topo.node, Some(cg.path()), &requests);
    assert_eq!(lines.len(), cases.len(), "{lines:?}");
    for ((kind, addr, allowed), line) in cases.iter().zip(&lines) {
        if *allowed {
            assert!(
                line.starts_with(&format!("peer={addr} reply=be1:")),
                "{kind} {addr}: {line}"
            );
        } else {
            assert!(line.starts_with("error="), "{kind} {addr}: {line}");
        }
        // lb-core agrees (the internal scope: the node is the client).
        let src: std::net::IpAddr = match kind.split_once('@') {
            Some((_, s)) => s.parse().unwrap(),
            None => node_ip.into(),
        };
        let key = FlowKey {
            src,
            dst: addr.ip(),
            sport: 40000,
            dport: addr.port(),
            proto: if kind.starts_with("tcp") {
                L4Proto::Tcp
            } else {
                L4Proto::Udp
            },
        };
        let ctx = FlowContext {
            now: 0,
            entropy: 0,
            scope: Scope::Internal,
        };
        let v = decide(rec.current(), &node, &mut FlowState::new(), &key, ctx);
        assert_eq!(
            matches!(v, Verdict::Forward(_)),
            *allowed,
            "{kind} {addr}: {v:?}"
        );
    }
    let after = dp.counters().unwrap().drops;
    let sr = |d: &[(lb_ebpf::abi::DropReason, u64)]| {
        d.iter()
            .find(|(r, _)| *r == lb_ebpf::abi::DropReason::SourceRange)
            .map_or(0, |(_, n)| *n)
    };
    assert!(sr(&after) >= sr(&before) + 4, "{before:?} -> {after:?}");
}

/// IPv6 socket LB end to end, and IPv4-mapped destinations of AF_INET6
/// sockets: python3 clients in the child cgroup reach backends over TCP,
/// connected and unconnected UDP at an IPv6 ClusterIP, at a NodePort on
/// `::1` and on the node's IPv6 address, and at an IPv4 ClusterIP written
/// as `::ffff:a.b.c.d`; getpeername/recvfrom show the frontend. As for
/// IPv4: the internal scope of a two-scope frontend (internal traffic
/// policy Local), session affinity (lb6_affinity, one entry for the node),
/// Maglev, source ranges (lb6_src_range, an unbound socket counts as the
/// node's first IPv6 address), per-backend new-flow counters; the verdicts
/// equal lb-core's `decide` in the internal scope; no packet went through
/// the tc NAT; processes outside the cgroup are not translated.
/// Privileged; bounded: about 40 requests with 5 s timeouts.
#[test]
fn ipv6_and_ipv4_mapped_sockets_are_connected_straight_to_backends() {
    use lb_testkit::topology::VIP_V6;
    use std::net::{IpAddr, Ipv6Addr};

    lb_testkit::require_privileges();
    let topo = Topology::new(2).expect("topology");
    let lab = SockLab::new("sock6");
    let (cg, pin_dir) = (&lab.cg, &lab.pin_dir);
    let _loaded = lab.load(&topo);

    let mut servers = Vec::new();
    for b in &topo.backends {
        let tag = format!("be{}:", b.index + 1);
        let tag = tag.as_bytes();
        for ip in [IpAddr::from(b.v4), b.v6.into()] {
            servers.push(EchoServer::tcp(&b.ns, SocketAddr::from((ip, 8080)), tag).unwrap());
            servers.push(EchoServer::udp(&b.ns, SocketAddr::from((ip, 5353)), tag).unwrap());
        }
    }
    let be = |suffix: &str, v4: bool| -> Vec<String> {
        topo.backends
            .iter()
            .flat_map(|b| {
                let mut v = vec![format!("[{}]:{suffix}", b.v6)];
                if v4 {
                    v.push(format!("{}:{suffix}", b.v4));
                }
                v
            })
            .collect()
    };
    let vip6 = |n: u16| Ipv6Addr::new(0xfd00, 0xffff, 0, 0, 0, 0, 0, 0x20 + n);
    let (local_np, sticky, mine, theirs, maglev) = (
        SocketAddr::from((topo.node_v6, 30081)),
        SocketAddr::from((vip6(2), 80)),
        SocketAddr::from((vip6(3), 80)),
        SocketAddr::from((vip6(4), 80)),
        SocketAddr::from((vip6(5), 80)),
    );
    let mut local = svc(
        "default/local",
        &[("[::]:30081".into(), FrontendType::NodePort)],
        vec![],
    );
    for (b, node) in topo.backends.iter().zip(["node-1", "node-2"]) {
        local
            .backends
            .push(BackendParams::new(format!("[{}]:8080", b.v6).parse().unwrap()).on_node(node));
    }
    local.int_traffic_policy = TrafficPolicy::Local;
    let mut sticky_svc = svc(
        "default/sticky",
        &[(sticky.to_string(), FrontendType::ClusterIp)],
        be("8080", false),
    );
    sticky_svc.session_affinity = SessionAffinity::ClientIp { timeout_secs: 300 };
    let lb = |name: &str, addr: SocketAddr, range: &str| {
        let mut s = svc(
            name,
            &[(addr.to_string(), FrontendType::LoadBalancer)],
            be("8080", false),
        );
        s.source_ranges = vec![range.parse().unwrap()];
        s
    };
    let mut maglev_svc = svc(
        "default/maglev",
        &[(maglev.to_string(), FrontendType::ClusterIp)],
        be("8080", false),
    );
    maglev_svc.algorithm = Some(LbAlgorithm::Maglev);
    let services = [
        svc(
            "default/web",
            &[
                (format!("[{VIP_V6}]:80"), FrontendType::ClusterIp),
                ("[::]:30080".into(), FrontendType::NodePort),
                (format!("{VIP_V4}:80"), FrontendType::ClusterIp),
            ],
            be("8080", true),
        ),
        svc(
            "default/dns",
            &[
                (format!("[{VIP_V6}]:53/UDP"), FrontendType::ClusterIp),
                (format!("{VIP_V4}:53/UDP"), FrontendType::ClusterIp),
            ],
            be("5353/UDP", true),
        ),
        local,
        sticky_svc,
        lb("default/mine", mine, &format!("{}/128", topo.node_v6)),
        lb("default/theirs", theirs, "fd00:99::/64"),
        maglev_svc,
    ];
    let node = NodeConfig::new("node-1", vec![topo.node_v6.into(), topo.node_v4.into()]);
    let desired = DesiredState::build(&node, &services).unwrap();
    let mut dp = EbpfDataplane::open(pin_dir, &node).expect("open dataplane");
    let mut rec = Reconciler::new();
    rec.apply(&mut dp, &desired).expect("reconcile");
    let drops_before = dp.counters().unwrap().drops;

    let mapped = |p: u16| SocketAddr::from((VIP_V4.to_ipv6_mapped(), p));
    let targets = [
        ("tcp", SocketAddr::from((VIP_V6, 80)), "hi"),
        ("tcp", "[::1]:30080".parse().unwrap(), "hi"),
        ("tcp", SocketAddr::from((topo.node_v6, 30080)), "hi"),
        ("udp", SocketAddr::from((VIP_V6, 53)), "q"),
        ("udpc", SocketAddr::from((VIP_V6, 53)), "q"),
        ("tcp", mapped(80), "hi"),
        ("udp", mapped(53), "q"),
        ("udpc", mapped(53), "q"),
    ];
    answered_by_backends(&topo.node, cg.path(), &targets);
    // Translated at the socket: no CT entry of either family; reverse
    // entries for the IPv6 sockets in lb6_sock_rev and for the mapped ones
    // in lb4_sock_rev; one new flow per socket.
    assert_eq!(dp.maps().ct.keys().count(), 0, "no IPv4 CT entries");
    assert_eq!(dp.maps().ct6.keys().count(), 0, "no IPv6 CT entries");
    assert!(dp.maps().sock_rev6.keys().count() >= 5);
    assert!(dp.maps().sock_rev.keys().count() >= 3);
    let counters = dp.counters().unwrap();
    let flows: u64 = counters.backends.values().map(|s| s.new_flows).sum();
    assert_eq!(flows, targets.len() as u64, "{counters:?}");

    // The internal scope, affinity, Maglev and source ranges.
    let cases: Vec<(SocketAddr, usize)> = vec![(local_np, 6), (sticky, 6), (maglev, 16)];
    let mut requests = Vec::new();
    for (addr, n) in &cases {
        for _ in 0..*n {
            requests.extend(req("tcp", *addr));
        }
    }
    for addr in [mine, theirs] {
        requests.extend(req("tcp", addr));
    }
    let lines = client(&topo.node, Some(cg.path()), &requests);
    assert_eq!(lines.len(), 6 + 6 + 16 + 2, "{lines:?}");
    let reply = |l: &str| l.split(" reply=").nth(1).unwrap_or_default().to_owned();
    // Internal traffic policy Local: the node reaches its own backend only.
    for line in &lines[..6] {
        assert_eq!(line, &format!("peer={local_np} reply=be1:hi"), "{lines:?}");
    }
    // Affinity: every connection of the node reaches the first one's backend.
    let first = reply(&lines[6]);
    assert!(first.starts_with("be"), "{lines:?}");
    for line in &lines[6..12] {
        assert_eq!(line, &format!("peer={sticky} reply={first}"), "{lines:?}");
    }
    let aff: Vec<_> = dp.maps().affinity6.keys().map(|k| k.unwrap()).collect();
    assert_eq!(aff.len(), 1, "{aff:?}");
    assert_eq!(aff[0].client, [0; 16], "the node is one client: {aff:?}");
    // Maglev: random TCP selectors spread over both backends.
    let answered: std::collections::BTreeSet<String> =
        lines[12..28].iter().map(|l| reply(l)).collect();
    assert_eq!(
        answered,
        ["be1:hi".to_string(), "be2:hi".to_string()].into(),
        "{lines:?}"
    );
    // Source ranges: inside (the node's IPv6 address) reaches a backend,
    // outside is refused at connect (EPERM) and counted.
    assert!(
        lines[28].starts_with(&format!("peer={mine} reply=be")),
        "{lines:?}"
    );
    assert!(
        lines[29].starts_with("error=") && lines[29].contains("not permitted"),
        "{lines:?}"
    );
    let drops_after = dp.counters().unwrap().drops;
    let sr = |d: &[(lb_ebpf::abi::DropReason, u64)]| {
        d.iter()
            .find(|(r, _)| *r == lb_ebpf::abi::DropReason::SourceRange)
            .map_or(0, |(_, n)| *n)
    };
    assert_eq!(
        sr(&drops_after),
        sr(&drops_before) + 1,
        "{drops_before:?} -> {drops_after:?}"
    );
    // lb-core agrees (the internal scope: the node is the client, its
    // source the node's IPv6 address).
    for (addr, allowed, only) in [
        (local_np, true, Some(topo.backends[0].v6)),
        (mine, true, None),
        (theirs, false, None),
    ] {
        let key = FlowKey {
            src: topo.node_v6.into(),
            dst: addr.ip(),
            sport: 40000,
            dport: addr.port(),
            proto: L4Proto::Tcp,
        };
        let ctx = FlowContext {
            now: 0,
            entropy: 0,
            scope: Scope::Internal,
        };
        let v = decide(rec.current(), &node, &mut FlowState::new(), &key, ctx);
        assert_eq!(matches!(v, Verdict::Forward(_)), allowed, "{addr}: {v:?}");
        if let (Some(ip), Verdict::Forward(f)) = (only, &v) {
            assert_eq!(f.backend.addr, IpAddr::from(ip), "{addr}: {v:?}");
        }
    }

    // Outside the cgroup nothing is translated: the VIPs are not routed.
    let outside = client(
        &topo.node,
        None,
        &[
            req("tcp", SocketAddr::from((VIP_V6, 80))),
            req("tcp", mapped(80)),
        ]
        .concat(),
    );
    assert!(
        outside.iter().all(|l| l.starts_with("error=")),
        "{outside:?}"
    );
    drop(servers);
}
