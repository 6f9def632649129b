//! The NAT46/64 lab the dataplanes' end-to-end tests share: on a
//! [`Topology`], an IPv4 service served only by IPv6 backends (NAT46) and
//! an IPv6 service served only by IPv4 backends (NAT64), TCP and UDP, with
//! echo servers that report the peer they saw, and the client-side check
//! (every answer came from the node's address of the backend's family,
//! both backends of each family served).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use lb_core::{BackendParams, FrontendParams, FrontendType, NodeConfig, Service};

use crate::topology::{VIP_V4, VIP_V6};
use crate::{tcp_request, udp_request, EchoServer, Topology};

/// NodePorts of the lab's services: `nat46` on `0.0.0.0`, `nat64` on `::`.
#[derive(Debug, Clone, Copy)]
pub struct NodePorts {
    /// The NAT46 service's NodePort.
    pub nat46: u16,
    /// The NAT64 service's NodePort.
    pub nat64: u16,
}

/// The lab's node (`node-1`, an address of each family, NAT46/64 on), its
/// two services and the echo servers behind them (kept alive by holding
/// the value).
pub struct Nat46x64Lab {
    /// The node configuration.
    pub node: NodeConfig,
    /// `default/v6only` (IPv4 frontends) and `default/v4only` (IPv6 ones).
    pub services: Vec<Service>,
    /// TCP 8080 and UDP 5353 echo servers of both families per backend.
    pub servers: Vec<EchoServer>,
}

fn fe(addr: String, kind: FrontendType) -> FrontendParams {
    FrontendParams::new(addr.parse().expect("frontend"), kind)
}

impl Nat46x64Lab {
    /// Builds the lab on `topo`: ClusterIPs on the topology's VIPs (TCP 80,
    /// UDP 53 -> 8080, 5353) and, when given, the NodePorts.
    pub fn new(topo: &Topology, node_ports: Option<NodePorts>) -> Self {
        let mut node = NodeConfig::new(
            "node-1",
            vec![IpAddr::V4(topo.node_v4), IpAddr::V6(topo.node_v6)],
        );
        node.nat46x64 = true;
        // NAT46: IPv4 frontends, IPv6 backends only.
        let mut s46 = Service::new("default/v6only".parse().expect("name"));
        s46.frontends = vec![
            fe(format!("{VIP_V4}:80"), FrontendType::ClusterIp),
            fe(format!("{VIP_V4}:53/UDP"), FrontendType::ClusterIp),
        ];
        // NAT64: IPv6 frontends, IPv4 backends only.
        let mut s64 = Service::new("default/v4only".parse().expect("name"));
        s64.frontends = vec![
            fe(format!("[{VIP_V6}]:80"), FrontendType::ClusterIp),
            fe(format!("[{VIP_V6}]:53/UDP"), FrontendType::ClusterIp),
        ];
        if let Some(np) = node_ports {
            s46.frontends
                .push(fe(format!("0.0.0.0:{}", np.nat46), FrontendType::NodePort));
            s64.frontends
                .push(fe(format!("[::]:{}", np.nat64), FrontendType::NodePort));
        }
        let be =
            |addr: String| BackendParams::new(addr.parse().expect("backend")).on_node("node-1");
        let mut servers = Vec::new();
        for b in &topo.backends {
            let tag = format!("backend-{}:", b.index + 1);
            for (svc, ip) in [(&mut s46, IpAddr::V6(b.v6)), (&mut s64, IpAddr::V4(b.v4))] {
                let tcp = SocketAddr::new(ip, 8080);
                servers
                    .push(EchoServer::tcp_with_peer(&b.ns, tcp, tag.as_bytes()).expect("tcp echo"));
                svc.backends.push(be(tcp.to_string()));
                let udp = SocketAddr::new(ip, 5353);
                servers
                    .push(EchoServer::udp_with_peer(&b.ns, udp, tag.as_bytes()).expect("udp echo"));
                svc.backends.push(be(format!("{udp}/UDP")));
            }
        }
        Nat46x64Lab {
            node,
            services: vec![s46, s64],
            servers,
        }
    }
}

/// From the client namespace, 16 rounds of: TCP to the NAT46 ClusterIP
/// (and NodePort), UDP to the NAT46 ClusterIP, the same for NAT64. Panics
/// unless every answer echoes the message and names the node's address of
/// the backend's family as the peer, and both backends of each family
/// served. Bounded: every request has a 5 s timeout.
pub fn check_nat46x64_clients(topo: &Topology, node_ports: Option<NodePorts>) {
    let t = Duration::from_secs(5);
    let node4 = topo.node_v4.to_string();
    let node6 = topo.node_v6.to_string();
    let text = |b: Vec<u8>| String::from_utf8(b).expect("utf-8 answer");
    let mut tcp46 = vec![SocketAddr::from((VIP_V4, 80))];
    let mut tcp64 = vec![SocketAddr::from((VIP_V6, 80))];
    if let Some(np) = node_ports {
        tcp46.push(SocketAddr::from((topo.node_v4, np.nat46)));
        tcp64.push(SocketAddr::from((topo.node_v6, np.nat64)));
    }
    let mut seen46 = BTreeSet::new();
    let mut seen64 = BTreeSet::new();
    // Random selection over two backends: with 16 rounds a family sees
    // only one backend with probability 2^-15 (6 gave 3%).
    for i in 0..16 {
        let msg = format!("ping-{i}");
        for &dst in &tcp46 {
            // NAT46: the IPv6 backend sees the node's IPv6 address.
            let out = text(
                tcp_request(&topo.client, dst, msg.as_bytes(), t)
                    .unwrap_or_else(|e| panic!("TCP NAT46 to {dst}: {e}")),
            );
            assert!(out.ends_with(&msg), "{out}");
            assert!(
                out.contains(&format!("[[{node6}]:")),
                "not from the node's IPv6: {out}"
            );
            seen46.insert(out.split(':').next().unwrap_or_default().to_string());
        }
        let out = text(
            udp_request(&topo.client, SocketAddr::from((VIP_V4, 53)), b"u46", t)
                .expect("UDP NAT46"),
        );
        assert!(
            out.contains(&format!("[[{node6}]:")) && out.ends_with("u46"),
            "{out}"
        );
        for &dst in &tcp64 {
            // NAT64: the IPv4 backend sees the node's IPv4 address.
            let out = text(
                tcp_request(&topo.client, dst, msg.as_bytes(), t)
                    .unwrap_or_else(|e| panic!("TCP NAT64 to {dst}: {e}")),
            );
            assert!(out.ends_with(&msg), "{out}");
            assert!(
                out.contains(&format!("[{node4}:")),
                "not from the node's IPv4: {out}"
            );
            seen64.insert(out.split(':').next().unwrap_or_default().to_string());
        }
        let out = text(
            udp_request(&topo.client, SocketAddr::from((VIP_V6, 53)), b"u64", t)
                .expect("UDP NAT64"),
        );
        assert!(
            out.contains(&format!("[{node4}:")) && out.ends_with("u64"),
            "{out}"
        );
    }
    assert_eq!(seen46.len(), 2, "both IPv6 backends served: {seen46:?}");
    assert_eq!(seen64.len(), 2, "both IPv4 backends served: {seen64:?}");
}

/// The UDP port the lab's backends have no listener on.
pub const CLOSED_PORT: u16 = 5999;
/// The UDP frontend port of [`closed_services`].
pub const CLOSED_FE_PORT: u16 = 54;

/// Two services whose backends do not listen: `default/v6closed` (NAT46,
/// `VIP_V4:54/UDP` -> each backend's IPv6 address, port [`CLOSED_PORT`])
/// and `default/v4closed` (NAT64, `[VIP_V6]:54/UDP` -> their IPv4 ones).
/// A datagram through them gets the backend's port unreachable, which the
/// dataplane must translate to the client's family.
pub fn closed_services(topo: &Topology) -> Vec<Service> {
    let mut s46 = Service::new("default/v6closed".parse().expect("name"));
    s46.frontends = vec![fe(
        format!("{VIP_V4}:{CLOSED_FE_PORT}/UDP"),
        FrontendType::ClusterIp,
    )];
    let mut s64 = Service::new("default/v4closed".parse().expect("name"));
    s64.frontends = vec![fe(
        format!("[{VIP_V6}]:{CLOSED_FE_PORT}/UDP"),
        FrontendType::ClusterIp,
    )];
    for b in &topo.backends {
        for (svc, ip) in [(&mut s46, IpAddr::V6(b.v6)), (&mut s64, IpAddr::V4(b.v4))] {
            let addr = SocketAddr::new(ip, CLOSED_PORT);
            svc.backends.push(
                BackendParams::new(format!("{addr}/UDP").parse().expect("backend"))
                    .on_node("node-1"),
            );
        }
    }
    vec![s46, s64]
}

/// From the client namespace, a connected UDP socket sends to each of
/// [`closed_services`]' frontends (IPv4 to the NAT46 one, IPv6 to the
/// NAT64 one) and must get `ECONNREFUSED`: the backend's ICMPv6 (ICMPv4)
/// port unreachable reached the client as an ICMPv4 (ICMPv6) one about
/// the datagram it sent (the kernel matches the quote to the socket).
/// Bounded: up to 3 datagrams per frontend (a lost error is retried), each
/// with a 3 s timeout.
pub fn check_closed_ports_refused(topo: &Topology) {
    for dst in [
        SocketAddr::from((VIP_V4, CLOSED_FE_PORT)),
        SocketAddr::from((VIP_V6, CLOSED_FE_PORT)),
    ] {
        let any: SocketAddr = if dst.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let sock = topo
            .client
            .run_in(|| std::net::UdpSocket::bind(any))
            .expect("netns")
            .expect("UDP socket");
        sock.connect(dst).expect("connect");
        sock.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        let mut last = None;
        for i in 0..3 {
            // A pending error of an earlier datagram may fail the send.
            if let Err(e) = sock.send(format!("closed-{i}").as_bytes()) {
                last = Some(e);
                break;
            }
            let mut buf = [0u8; 64];
            match sock.recv(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    last = Some(e);
                    break;
                }
                Err(e) => last = Some(e),
                Ok(n) => panic!("{dst}: an answer from a closed port: {:?}", &buf[..n]),
            }
        }
        let e = last.expect("an error");
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{dst}: no port unreachable reached the client: {e}"
        );
    }
}

// ---- The MTU lab: MSS clamping and too-big packets end to end ----

/// The MTU of the client's and the backends' own ends of their links in
/// the MTU lab ([`jumbo_ends`]); the node's ends keep 1500.
pub const JUMBO_MTU: u32 = 9000;

/// Turns `topo` into the MTU lab: the client's and the backends' ends of
/// their links get [`JUMBO_MTU`] (so their TCP advertises an MSS near
/// 9000 and sends segments that size, which the node's 1500-byte ends
/// drop: a veth drops a frame over the receiving end's MTU), and TSO, GSO
/// and GRO are off on every veth end (`ethtool -K`), so every packet
/// travels as the one segment its sender made. Without MSS clamping a TCP
/// transfer through a NAT46/64 node then stalls in both directions; with
/// clamping for 1500-byte routes, the IPv4 side's full segments are still
/// 20 bytes too big as IPv6 and need the node's fragmentation-needed
/// answers.
pub fn jumbo_ends(topo: &Topology) -> Result<(), crate::NetnsError> {
    let mut ends = vec![
        (&topo.client, topo.client_link.name.clone(), true),
        (&topo.node, topo.node_client_dev.clone(), false),
    ];
    for b in &topo.backends {
        ends.push((&b.ns, b.link.name.clone(), true));
        ends.push((&topo.node, b.node_link.name.clone(), false));
    }
    for (ns, dev, jumbo) in ends {
        if jumbo {
            ns.ip(&["link", "set", "dev", &dev, "mtu", &JUMBO_MTU.to_string()])?;
        }
        ns.exec_ok(&[
            "ethtool", "-K", &dev, "tso", "off", "gso", "off", "gro", "off",
        ])?;
    }
    Ok(())
}

/// A TCP echo server for the MTU lab: per connection, it records the
/// send MSS its kernel settled on (`TCP_INFO`'s `tcpi_snd_mss`: at most
/// the MSS option the client's SYN arrived with, less TCP options), then
/// echoes everything until EOF. Stopped and joined on drop.
pub struct MssEchoServer {
    addr: SocketAddr,
    seen: std::sync::Arc<std::sync::Mutex<Vec<u32>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The send MSS of a connected socket (`TCP_INFO`).
fn snd_mss(s: &std::net::TcpStream) -> u32 {
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_info is plain data; all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, which
    // lives across the call.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        info.tcpi_snd_mss
    } else {
        0
    }
}

impl MssEchoServer {
    /// Binds `bind` inside `ns` and serves from a thread of this process
    /// (a socket stays in the namespace it was made in).
    pub fn start(ns: &crate::NetNs, bind: SocketAddr) -> Result<Self, crate::NetnsError> {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = ns
            .run_in(|| std::net::TcpListener::bind(bind))?
            .map_err(|e| crate::NetnsError::io(format!("bind {bind}"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| crate::NetnsError::io("local address", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| crate::NetnsError::io("nonblocking", e))?;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let Ok((mut s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                seen2.lock().expect("lock").push(snd_mss(&s));
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                let _ = s.set_write_timeout(Some(Duration::from_secs(30)));
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = s.shutdown(std::net::Shutdown::Write);
            }
        });
        Ok(MssEchoServer {
            addr,
            seen,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The send MSS of every connection accepted so far.
    pub fn seen_mss(&self) -> Vec<u32> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Drop for MssEchoServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// From inside `ns`, sends `len` bytes to `dst` (a writer thread) while
/// reading the echo back until EOF, and returns what came back. Bounded:
/// every read and write times out after `timeout` (a stalled transfer is
/// an error).
pub fn bulk_echo(
    ns: &crate::NetNs,
    dst: SocketAddr,
    len: usize,
    timeout: Duration,
) -> Result<(Vec<u8>, Vec<u8>), crate::NetnsError> {
    use std::io::{Read, Write};
    let ctx = || format!("bulk echo from {} to {dst}", ns.name());
    let mut s = crate::tcp_connect(ns, dst, timeout)?;
    s.set_read_timeout(Some(timeout))
        .and_then(|_| s.set_write_timeout(Some(timeout)))
        .map_err(|e| crate::NetnsError::io(ctx(), e))?;
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut w = s.try_clone().map_err(|e| crate::NetnsError::io(ctx(), e))?;
    let sent = data.clone();
    let writer = std::thread::spawn(move || {
        let r = w.write_all(&sent);
        let _ = w.shutdown(std::net::Shutdown::Write);
        r
    });
    let mut out = Vec::with_capacity(len);
    let read = s.read_to_end(&mut out);
    let wrote = writer
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("writer panicked")));
    read.and(wrote).map_err(|e| {
        crate::NetnsError::io(format!("{} ({} of {len} bytes back)", ctx(), out.len()), e)
    })?;
    Ok((data, out))
}

/// How many bytes [`check_mtu_transfers`] sends through each service.
pub const TRANSFER: usize = 256 * 1024;

/// The MTU lab's node and services on a [`Topology`] (after
/// [`jumbo_ends`]): `default/mtu46` (the IPv4 VIP, TCP 80, served by the
/// first backend's IPv6 address, NAT46) and `default/mtu64` (the IPv6 VIP,
/// TCP 80, served by its IPv4 address, NAT64), port 9090, with
/// [`MssEchoServer`]s.
pub struct MtuLab {
    /// The node configuration (NAT46/64 on).
    pub node: NodeConfig,
    /// The two services.
    pub services: Vec<Service>,
    /// The NAT46 service's (IPv6) server and the NAT64 service's (IPv4).
    pub servers: [MssEchoServer; 2],
}

impl MtuLab {
    /// Builds the lab on `topo` (at least one backend).
    pub fn new(topo: &Topology) -> Self {
        let mut node = NodeConfig::new(
            "node-1",
            vec![IpAddr::V4(topo.node_v4), IpAddr::V6(topo.node_v6)],
        );
        node.nat46x64 = true;
        let b = &topo.backends[0];
        let mut services = Vec::new();
        let mut servers = Vec::new();
        for (name, fe_addr, be_ip) in [
            ("default/mtu46", format!("{VIP_V4}:80"), IpAddr::V6(b.v6)),
            ("default/mtu64", format!("[{VIP_V6}]:80"), IpAddr::V4(b.v4)),
        ] {
            let be_addr = SocketAddr::new(be_ip, 9090);
            let mut s = Service::new(name.parse().expect("name"));
            s.frontends = vec![fe(fe_addr, FrontendType::ClusterIp)];
            s.backends.push(
                BackendParams::new(be_addr.to_string().parse().expect("backend")).on_node("node-1"),
            );
            services.push(s);
            servers.push(MssEchoServer::start(&b.ns, be_addr).expect("MSS echo server"));
        }
        let servers: [MssEchoServer; 2] = servers.try_into().ok().expect("two servers");
        MtuLab {
            node,
            services,
            servers,
        }
    }
}

/// From the client namespace, [`TRANSFER`] bytes echoed through the
/// NAT46 service and then the NAT64 one: panics unless every byte comes
/// back in order and each backend's kernel settled on a send MSS within
/// the clamp for a 1500-byte route of its family
/// ([`lb_core::nat46x64::mss_limit`]; unclamped it would be near
/// [`JUMBO_MTU`]). Bounded: each transfer's reads and writes time out
/// after 20 s (a stalled transfer fails).
pub fn check_mtu_transfers(topo: &Topology, lab: &MtuLab) {
    let t = Duration::from_secs(20);
    for (i, dst) in [
        SocketAddr::from((VIP_V4, 80)),
        SocketAddr::from((VIP_V6, 80)),
    ]
    .into_iter()
    .enumerate()
    {
        let (sent, back) = bulk_echo(&topo.client, dst, TRANSFER, t)
            .unwrap_or_else(|e| panic!("transfer through {dst}: {e}"));
        assert!(
            back == sent,
            "{dst}: {} bytes back, not the {} sent",
            back.len(),
            sent.len()
        );
        let backend_v6 = i == 0;
        let limit = u32::from(lb_core::nat46x64::mss_limit(
            backend_v6,
            lb_core::nat46x64::DEFAULT_ROUTE_MTU,
        ));
        let seen = lab.servers[i].seen_mss();
        assert!(
            !seen.is_empty() && seen.iter().all(|&m| m > 0 && m <= limit),
            "{dst}: the backend's send MSS {seen:?} is not clamped to {limit}"
        );
    }
}
