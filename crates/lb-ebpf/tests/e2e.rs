//! End-to-end: real sockets through the tc programs in namespaces built by
//! lb-testkit (client ns -> node ns with the programs on its client-facing
//! veth -> backend namespaces running echo servers that answer with their
//! name). Privileged (root); everything lives in the test's own namespaces
//! and private bpffs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

mod common;

use common::{svc, Pins};
use lb_core::*;
use lb_ebpf::{EbpfDataplane, LoadOptions};
use lb_testkit::topology::VIP_V4;
use lb_testkit::{tcp_connect, tcp_request, udp_request, BpffsGuard, EchoServer, Topology};

const TIMEOUT: Duration = Duration::from_secs(5);

fn tag(k: usize) -> Vec<u8> {
    format!("be{k}:").into_bytes()
}

/// Which backend answered (the reply starts with its tag).
fn who(reply: &[u8]) -> usize {
    let s = String::from_utf8_lossy(reply);
    let k = s
        .strip_prefix("be")
        .and_then(|r| r.split(':').next())
        .unwrap_or_else(|| panic!("unexpected reply {s:?}"));
    k.parse().unwrap()
}

/// Sends one datagram from a socket bound to `src_port` in the client ns.
fn udp_from_port(topo: &Topology, src_port: u16, dst: SocketAddr) -> Vec<u8> {
    let sock = topo
        .client
        .run_in(|| UdpSocket::bind(("0.0.0.0", src_port)))
        .unwrap()
        .unwrap();
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    sock.send_to(b"ping", dst).unwrap();
    let mut buf = [0u8; 512];
    let (n, from) = sock.recv_from(&mut buf).expect("UDP reply");
    assert_eq!(from, dst, "reply must come from the frontend");
    buf[..n].to_vec()
}

/// Writes `msg` on an echo connection and reads the same bytes back.
fn exchange(conn: &mut TcpStream, msg: &[u8]) {
    conn.write_all(msg)
        .expect("send on the long-lived connection");
    let mut back = vec![0u8; msg.len()];
    conn.read_exact(&mut back)
        .expect("echo on the long-lived connection");
    assert_eq!(back, msg);
}

#[test]
fn clusterip_nodeport_and_maglev_across_reload() {
    lb_testkit::require_privileges();
    let topo = Topology::new(3).expect("topology");
    let bpffs = BpffsGuard::new().expect("bpffs");
    let pin_dir = bpffs.pin_path("lb");
    let _pins = Pins(pin_dir.clone());
    let dev = topo.node_client_dev.clone();
    let opts = LoadOptions::new(&pin_dir, &[&dev]);
    let loaded = topo
        .node
        .run_in(|| lb_ebpf::load(&opts))
        .unwrap()
        .expect("load and attach");

    let mut servers = Vec::new();
    for b in &topo.backends {
        let k = b.index + 1;
        servers.push(EchoServer::tcp(&b.ns, SocketAddr::from((b.v4, 8080)), &tag(k)).unwrap());
        servers.push(EchoServer::udp(&b.ns, SocketAddr::from((b.v4, 5353)), &tag(k)).unwrap());
    }
    let tcp_backends: Vec<String> = topo
        .backends
        .iter()
        .map(|b| format!("{}:8080", b.v4))
        .collect();
    let udp_backends: Vec<String> = topo
        .backends
        .iter()
        .map(|b| format!("{}:5353/UDP", b.v4))
        .collect();
    let maglev_vip = "198.51.100.11";
    let web = svc(
        "default/web",
        &[
            (format!("{VIP_V4}:80"), FrontendType::ClusterIp),
            ("0.0.0.0:30080".into(), FrontendType::NodePort),
        ],
        tcp_backends,
    );
    let dns = svc(
        "default/dns",
        &[(format!("{VIP_V4}:53/UDP"), FrontendType::ClusterIp)],
        udp_backends.clone(),
    );
    let mut sticky = svc(
        "default/sticky",
        &[(format!("{maglev_vip}:53/UDP"), FrontendType::ClusterIp)],
        udp_backends,
    );
    sticky.algorithm = Some(LbAlgorithm::Maglev);
    let services = [web, dns, sticky];

    let mut node = NodeConfig::new("node-1", vec![topo.node_v4.into()]);
    node.maglev = MaglevConfig::new(251, 7).unwrap();
    let desired = DesiredState::build(&node, &services).unwrap();
    let mut dp = EbpfDataplane::open(&pin_dir, &node).expect("open dataplane");
    let mut rec = Reconciler::new();
    rec.apply(&mut dp, &desired).expect("reconcile");

    // ClusterIP TCP and UDP, NodePort on the node IP: every backend serves.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let r = tcp_request(&topo.client, SocketAddr::from((VIP_V4, 80)), b"hi", TIMEOUT)
            .expect("ClusterIP TCP");
        assert!(r.ends_with(b"hi"), "{r:?}");
        seen.insert(who(&r));
    }
    assert_eq!(seen.len(), 3, "random selection reached {seen:?}");
    let r = udp_request(&topo.client, SocketAddr::from((VIP_V4, 53)), b"q", TIMEOUT)
        .expect("ClusterIP UDP");
    assert!((1..=3).contains(&who(&r)) && r.ends_with(b"q"), "{r:?}");
    let r = tcp_request(
        &topo.client,
        SocketAddr::from((topo.node_v4, 30080)),
        b"np",
        TIMEOUT,
    )
    .expect("NodePort TCP");
    assert!((1..=3).contains(&who(&r)) && r.ends_with(b"np"), "{r:?}");

    // Maglev: the 5-tuple decides, as lb-core predicts.
    let dst = SocketAddr::new(maglev_vip.parse().unwrap(), 53);
    let key = FlowKey {
        src: topo.client_v4.into(),
        dst: dst.ip(),
        sport: 45000,
        dport: 53,
        proto: L4Proto::Udp,
    };
    let ctx = FlowContext {
        now: 0,
        entropy: 0,
        scope: Scope::External,
    };
    let verdict = flow::decide(rec.current(), &node, &mut FlowState::new(), &key, ctx);
    let Verdict::Forward(f) = verdict else {
        panic!("{verdict:?}")
    };
    let expected = topo
        .backends
        .iter()
        .position(|b| std::net::IpAddr::V4(b.v4) == f.backend.addr)
        .unwrap()
        + 1;
    assert_eq!(who(&udp_from_port(&topo, 45000, dst)), expected);

    // A long-lived TCP connection spans the restart below.
    let mut conn = tcp_connect(&topo.client, SocketAddr::from((VIP_V4, 80)), TIMEOUT)
        .expect("long-lived connection");
    let mut tag_buf = [0u8; 4];
    conn.read_exact(&mut tag_buf).expect("tag");
    let serving = who(&tag_buf);
    exchange(&mut conn, b"before");

    // Restart: the agent goes away (programs stay attached through the
    // pinned links), then a new loader re-opens the pins and a new agent
    // restores its tables from the maps.
    drop(dp);
    drop(loaded);
    exchange(&mut conn, b"no agent");
    assert_eq!(
        who(&udp_from_port(&topo, 45000, dst)),
        expected,
        "without agent"
    );
    let loaded = topo
        .node
        .run_in(|| lb_ebpf::load(&opts))
        .unwrap()
        .expect("reload");
    exchange(&mut conn, b"reloaded");
    let mut dp = EbpfDataplane::open(&pin_dir, &node).expect("reopen dataplane");
    // The restarted agent knows nothing but the maps: restore, then
    // re-applying the same desired state is a no-op.
    let mut rec2 = Reconciler::with_tables(dp.restore().expect("restore"));
    assert_eq!(rec2.apply(&mut dp, &desired).unwrap(), 0);
    exchange(&mut conn, b"restored");
    let r = tcp_request(
        &topo.client,
        SocketAddr::from((VIP_V4, 80)),
        b"new",
        TIMEOUT,
    )
    .expect("new connection after restore");
    assert!(r.ends_with(b"new"), "{r:?}");
    drop(conn);
    assert!((1..=3).contains(&serving));

    // Connection tracking is flushed so only Maglev can keep the UDP flow
    // on its backend.
    let keys: Vec<_> = dp.maps().ct.keys().collect::<Result<_, _>>().unwrap();
    for k in keys {
        dp.maps().ct.remove(&k).unwrap();
    }
    assert_eq!(
        who(&udp_from_port(&topo, 45000, dst)),
        expected,
        "after reload"
    );
    let counters = dp.counters().unwrap();
    assert!(counters.services.values().any(|s| s.new_flows > 0));
    drop(loaded);
}

/// A client namespace, the node with the programs on its client-facing
/// device, and `n` backends running TCP echo servers on :8080 (tag `beK:`).
/// Fields drop in order: servers, dataplane, pins, bpffs, namespaces.
struct Lab {
    _servers: Vec<EchoServer>,
    dp: EbpfDataplane,
    rec: Reconciler,
    node: NodeConfig,
    _pins: Pins,
    _bpffs: BpffsGuard,
    topo: Topology,
}

impl Lab {
    fn new(n: usize) -> Lab {
        lb_testkit::require_privileges();
        let topo = Topology::new(n).expect("topology");
        let bpffs = BpffsGuard::new().expect("bpffs");
        let pin_dir = bpffs.pin_path("lb");
        let pins = Pins(pin_dir.clone());
        let dev = topo.node_client_dev.clone();
        let opts = LoadOptions::new(&pin_dir, &[&dev]);
        topo.node
            .run_in(|| lb_ebpf::load(&opts))
            .unwrap()
            .expect("load and attach");
        let servers = topo
            .backends
            .iter()
            .map(|b| {
                EchoServer::tcp(&b.ns, SocketAddr::from((b.v4, 8080)), &tag(b.index + 1)).unwrap()
            })
            .collect();
        let node = NodeConfig::new("node-1", vec![topo.node_v4.into()]);
        let dp = EbpfDataplane::open(&pin_dir, &node).expect("open dataplane");
        Lab {
            _servers: servers,
            dp,
            rec: Reconciler::new(),
            node,
            _pins: pins,
            _bpffs: bpffs,
            topo,
        }
    }

    /// `host:8080` of backend `k` (1-based).
    fn backend(&self, k: usize) -> String {
        format!("{}:8080", self.topo.backends[k - 1].v4)
    }

    fn apply(&mut self, services: &[Service]) {
        let desired = DesiredState::build(&self.node, services).unwrap();
        self.rec.apply(&mut self.dp, &desired).expect("reconcile");
    }

    /// Which backend answers a new TCP connection to `dst`.
    fn who_answers(&self, dst: SocketAddr) -> usize {
        let r = tcp_request(&self.topo.client, dst, b"x", TIMEOUT)
            .unwrap_or_else(|e| panic!("TCP to {dst}: {e}"));
        assert!(r.ends_with(b"x"), "{r:?}");
        who(&r)
    }
}

#[test]
fn loadbalancer_external_ip_and_hostport_from_the_client() {
    let mut lab = Lab::new(3);
    let all: Vec<String> = (1..=3).map(|k| lab.backend(k)).collect();
    let lb = svc(
        "default/lb",
        &[("203.0.113.50:80".into(), FrontendType::LoadBalancer)],
        all.clone(),
    );
    let ext = svc(
        "default/ext",
        &[("203.0.113.60:8000".into(), FrontendType::ExternalIp)],
        all,
    );
    // hostPort 8081 on the node maps to the one pod, backend 2.
    let hp = svc(
        "default/pod-2",
        &[("0.0.0.0:8081".into(), FrontendType::HostPort)],
        vec![lab.backend(2)],
    );
    lab.apply(&[lb, ext, hp]);

    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        seen.insert(lab.who_answers("203.0.113.50:80".parse().unwrap()));
    }
    assert_eq!(seen.len(), 3, "LoadBalancer IP reached {seen:?}");
    let k = lab.who_answers("203.0.113.60:8000".parse().unwrap());
    assert!((1..=3).contains(&k), "externalIP");
    for _ in 0..5 {
        let node_hp = SocketAddr::from((lab.topo.node_v4, 8081));
        assert_eq!(lab.who_answers(node_hp), 2, "HostPort maps to its pod");
    }
}

#[test]
fn affinity_keeps_a_client_on_one_backend() {
    let mut lab = Lab::new(3);
    let mut sticky = svc(
        "default/sticky",
        &[(format!("{VIP_V4}:80"), FrontendType::ClusterIp)],
        (1..=3).map(|k| lab.backend(k)).collect(),
    );
    sticky.session_affinity = SessionAffinity::ClientIp { timeout_secs: 300 };
    lab.apply(&[sticky]);
    let first = lab.who_answers(SocketAddr::from((VIP_V4, 80)));
    for _ in 0..15 {
        assert_eq!(lab.who_answers(SocketAddr::from((VIP_V4, 80))), first);
    }
}

#[test]
fn terminating_keeps_connections_and_removed_backends_get_no_new_flows() {
    let mut lab = Lab::new(3);
    let web = |lab: &Lab, states: &[(usize, BackendState)]| {
        let mut s = svc(
            "default/web",
            &[(format!("{VIP_V4}:80"), FrontendType::ClusterIp)],
            Vec::new(),
        );
        for (k, state) in states {
            s.backends
                .push(BackendParams::new(lab.backend(*k).parse().unwrap()).with_state(*state));
        }
        s
    };
    use BackendState::{Active, Terminating};
    lab.apply(&[web(&lab, &[(1, Active), (2, Active), (3, Active)])]);
    let vip = SocketAddr::from((VIP_V4, 80));

    // A long-lived connection, then its backend starts terminating.
    let mut conn = tcp_connect(&lab.topo.client, vip, TIMEOUT).expect("connect");
    let mut tag_buf = [0u8; 4];
    conn.read_exact(&mut tag_buf).expect("tag");
    let t = who(&tag_buf);
    let others: Vec<usize> = (1..=3).filter(|k| *k != t).collect();
    let mut states: Vec<(usize, BackendState)> = others.iter().map(|k| (*k, Active)).collect();
    states.push((t, Terminating));
    lab.apply(&[web(&lab, &states)]);
    exchange(&mut conn, b"still here");
    for _ in 0..20 {
        assert_ne!(
            lab.who_answers(vip),
            t,
            "a terminating backend takes no new flows"
        );
    }
    exchange(&mut conn, b"and still");

    // One active backend is removed: new flows only reach the other one.
    let (gone, kept) = (others[0], others[1]);
    lab.apply(&[web(&lab, &[(kept, Active), (t, Terminating)])]);
    for _ in 0..20 {
        assert_eq!(lab.who_answers(vip), kept, "backend {gone} was removed");
    }
    exchange(&mut conn, b"after removal");
}

/// A TCP connection from client port `port` (SO_REUSEADDR, so another
/// connection to another destination may use the same port) to `dst`.
fn connect_from_port(topo: &Topology, port: u16, dst: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(dst) = dst else {
        panic!("IPv4 only")
    };
    topo.client
        .run_in(move || {
            // SAFETY: plain socket calls on a descriptor this closure owns;
            // it is handed to TcpStream (which closes it) or closed here.
            unsafe {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
                assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
                let s = TcpStream::from_raw_fd(fd);
                let one: libc::c_int = 1;
                let sa = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: port.to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(ip).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                assert_eq!(
                    libc::setsockopt(
                        fd,
                        libc::SOL_SOCKET,
                        libc::SO_REUSEADDR,
                        (&one as *const libc::c_int).cast(),
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    ),
                    0
                );
                let local = sa(std::net::Ipv4Addr::UNSPECIFIED, port);
                let rc = libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len);
                assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
                let remote = sa(*dst.ip(), dst.port());
                let rc = libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len);
                assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
                s.set_read_timeout(Some(TIMEOUT)).unwrap();
                s.set_write_timeout(Some(TIMEOUT)).unwrap();
                s
            }
        })
        .unwrap()
}

/// One client port towards two frontends of the same backend: the two
/// flows' reply tuples (backend -> client:port) are the same, and the
/// second flow must not take the first one's replies (it gets another port
/// towards the backend). Found by the agent's graceful-termination test:
/// a streaming connection stalled when a new connection from the same
/// client port to the other frontend landed on its backend.
#[test]
fn one_client_port_to_two_frontends_of_one_backend() {
    let mut lab = Lab::new(1);
    let node_port = SocketAddr::from((lab.topo.node_v4, 30080));
    let web = svc(
        "default/web",
        &[
            (format!("{VIP_V4}:80"), FrontendType::ClusterIp),
            ("0.0.0.0:30080".to_string(), FrontendType::NodePort),
        ],
        vec![lab.backend(1)],
    );
    lab.apply(&[web]);
    let vip = SocketAddr::from((VIP_V4, 80));
    for port in [40001u16, 40002] {
        let mut a = connect_from_port(&lab.topo, port, vip);
        let mut t = [0u8; 4];
        a.read_exact(&mut t).expect("tag on the first connection");
        exchange(&mut a, b"first");
        let mut b = connect_from_port(&lab.topo, port, node_port);
        b.read_exact(&mut t).expect("tag on the second connection");
        for i in 0..5 {
            exchange(&mut a, format!("a{i}").as_bytes());
            exchange(&mut b, format!("b{i}").as_bytes());
        }
        // Either closing first leaves the other whole.
        if port % 2 == 1 {
            drop(a);
            exchange(&mut b, b"b after a closed");
        } else {
            drop(b);
            exchange(&mut a, b"a after b closed");
        }
    }
}
