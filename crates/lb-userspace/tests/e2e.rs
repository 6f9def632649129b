//! End to end in network namespaces: real TCP and UDP clients reach echo
//! servers behind a ClusterIP through lb-userspace's I/O loop, which runs
//! in the node namespace of an `lb_testkit::Topology`. Privileged.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use lb_core::*;
use lb_testkit::topology::{backend_v4, VIP_V4};
use lb_testkit::{tcp_request, udp_request, EchoServer, Topology};
use lb_userspace::ct::CtTimeouts;
use lb_userspace::{Config, UserspaceDataplane};

use common::io_rig::{node_devices, with_io_loop};

#[test]
fn tcp_and_udp_clients_reach_backends_through_the_io_loop() {
    lb_testkit::require_privileges();
    let topo = Topology::new(2).expect("topology");
    let node = NodeConfig::new("node-1", vec![IpAddr::V4(topo.node_v4)]);

    let mut svc = Service::new("default/echo".parse().unwrap());
    for fe in [
        format!("{VIP_V4}:80"),
        format!("{VIP_V4}:53/UDP"),
        "0.0.0.0:30080".into(),
    ] {
        let kind = if fe.starts_with("0.0.0.0") {
            FrontendType::NodePort
        } else {
            FrontendType::ClusterIp
        };
        svc.frontends
            .push(FrontendParams::new(fe.parse().unwrap(), kind));
    }
    let mut servers = Vec::new();
    for k in 1..=2u8 {
        let ip = backend_v4(k);
        let tag = format!("backend-{k}:");
        servers.push(
            EchoServer::tcp(
                &topo.backends[usize::from(k) - 1].ns,
                SocketAddr::from((ip, 8080)),
                tag.as_bytes(),
            )
            .unwrap(),
        );
        servers.push(
            EchoServer::udp(
                &topo.backends[usize::from(k) - 1].ns,
                SocketAddr::from((ip, 5353)),
                tag.as_bytes(),
            )
            .unwrap(),
        );
        svc.backends
            .push(BackendParams::new(format!("{ip}:8080").parse().unwrap()).on_node("node-1"));
        svc.backends
            .push(BackendParams::new(format!("{ip}:5353/UDP").parse().unwrap()).on_node("node-1"));
    }
    let desired = DesiredState::build(&node, &[svc]).unwrap();
    // UDP flows live 1 s here, so the loop's periodic expiry is seen.
    let config = Config {
        timeouts: CtTimeouts {
            other: 1,
            ..CtTimeouts::default()
        },
        ..Config::default()
    };
    let mut dp = UserspaceDataplane::new(node, config);
    Reconciler::new().apply(&mut dp, &desired).unwrap();

    let devices = node_devices(&topo, None);
    let (stats, ()) = with_io_loop(&topo, devices, dp.worker(), || {
        let t = Duration::from_secs(5);
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..12 {
            let msg = format!("ping-{i}");
            let vip = SocketAddr::from((VIP_V4, 80));
            let out =
                tcp_request(&topo.client, vip, msg.as_bytes(), t).expect("tcp through the VIP");
            let out = String::from_utf8(out).unwrap();
            assert!(out.ends_with(&msg), "{out}");
            seen.insert(out.split(':').next().unwrap().to_string());
            let out = udp_request(
                &topo.client,
                SocketAddr::from((VIP_V4, 53)),
                msg.as_bytes(),
                t,
            )
            .expect("udp through the VIP");
            assert!(String::from_utf8(out).unwrap().ends_with(&msg));
        }
        let np = SocketAddr::from((topo.node_v4, 30080));
        let out = tcp_request(&topo.client, np, b"np", t).expect("tcp through the NodePort");
        assert!(out.ends_with(b"np"));
        assert_eq!(seen.len(), 2, "both backends served: {seen:?}");
        // Idle UDP flows expire (1 s, whole seconds) while the loop runs.
        std::thread::sleep(Duration::from_millis(3500));
    });
    println!("counters: {:?}", dp.counters().services());
    assert!(stats.sent > 0 && stats.send_errors == 0, "{stats:?}");
    assert!(stats.expired_flows >= 12, "UDP flows expired: {stats:?}");
    let services = dp.counters().services();
    assert!(
        services.values().map(|s| s.new_flows).sum::<u64>() >= 25,
        "{services:?}"
    );
}

/// A TCP connection from client port `port` (SO_REUSEADDR, so another
/// connection to another destination may use the same port) to `dst`, in
/// the client namespace, with 5 s timeouts.
fn connect_from_port(topo: &Topology, port: u16, dst: SocketAddr) -> std::net::TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(dst) = dst else {
        panic!("IPv4 only")
    };
    topo.client
        .run_in(move || {
            // SAFETY: plain socket calls on a descriptor this closure owns;
            // it is handed to TcpStream, which closes it.
            unsafe {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
                assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
                let s = std::net::TcpStream::from_raw_fd(fd);
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
                let rc = libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_REUSEADDR,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
                assert_eq!(rc, 0, "SO_REUSEADDR");
                let local = sa(std::net::Ipv4Addr::UNSPECIFIED, port);
                let rc = libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len);
                assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
                let remote = sa(*dst.ip(), dst.port());
                let rc = libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len);
                assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
                s
            }
        })
        .unwrap()
}

/// Reads the echo server's greeting `tag[PEER]` and returns the peer
/// (the client address the backend saw).
fn greeting(conn: &mut std::net::TcpStream) -> SocketAddr {
    use std::io::Read;
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"]") {
        conn.read_exact(&mut b).expect("greeting");
        got.push(b[0]);
    }
    let s = String::from_utf8(got).unwrap();
    let peer = &s[s.find('[').unwrap() + 1..s.len() - 1];
    peer.parse().unwrap()
}

fn exchange(conn: &mut std::net::TcpStream, msg: &[u8]) {
    use std::io::{Read, Write};
    conn.write_all(msg).expect("send");
    let mut back = vec![0u8; msg.len()];
    conn.read_exact(&mut back).expect("echo");
    assert_eq!(back, msg);
}

/// lb-ebpf's `one_client_port_to_two_frontends_of_one_backend` through
/// lb-userspace's I/O loop: one client port to the ClusterIP and the
/// NodePort of a one-backend service. The second connection's reply tuple
/// (backend -> client:port) is the first one's, so the backend sees it from
/// another port; both keep echoing, interleaved, and either closing first
/// leaves the other whole (before the fix the newer flow took the older
/// one's replies: its echo timed out). Privileged; a few seconds.
#[test]
fn one_client_port_to_two_frontends_of_one_backend() {
    lb_testkit::require_privileges();
    let topo = Topology::new(1).expect("topology");
    let node = NodeConfig::new("node-1", vec![IpAddr::V4(topo.node_v4)]);
    let ip = backend_v4(1);
    let _server = EchoServer::tcp_with_peer(
        &topo.backends[0].ns,
        SocketAddr::from((ip, 8080)),
        b"backend-1:",
    )
    .unwrap();
    let mut svc = Service::new("default/web".parse().unwrap());
    svc.frontends.push(FrontendParams::new(
        format!("{VIP_V4}:80").parse().unwrap(),
        FrontendType::ClusterIp,
    ));
    svc.frontends.push(FrontendParams::new(
        "0.0.0.0:30080".parse().unwrap(),
        FrontendType::NodePort,
    ));
    svc.backends
        .push(BackendParams::new(format!("{ip}:8080").parse().unwrap()).on_node("node-1"));
    let desired = DesiredState::build(&node, &[svc]).unwrap();
    let mut dp = UserspaceDataplane::new(node, Config::default());
    Reconciler::new().apply(&mut dp, &desired).unwrap();
    let devices = node_devices(&topo, Some(1));
    with_io_loop(&topo, devices, dp.worker(), || {
        let vip = SocketAddr::from((VIP_V4, 80));
        let node_port = SocketAddr::from((topo.node_v4, 30080));
        for port in [40001u16, 40002] {
            let mut a = connect_from_port(&topo, port, vip);
            let seen_a = greeting(&mut a);
            exchange(&mut a, b"first");
            let mut b = connect_from_port(&topo, port, node_port);
            let seen_b = greeting(&mut b);
            assert_eq!(seen_a.port(), port, "the first keeps its port");
            assert_ne!(seen_b.port(), port, "the second gets another: {seen_b}");
            let r = lb_userspace::ct::RemapPorts::default();
            assert!(
                (r.min..=r.max).contains(&seen_b.port()),
                "{seen_b}: below the client's ephemeral ports"
            );
            assert_eq!(seen_a.ip(), seen_b.ip(), "neither is SNATed");
            for i in 0..5 {
                exchange(&mut a, format!("a{i}").as_bytes());
                exchange(&mut b, format!("b{i}").as_bytes());
            }
            if port % 2 == 1 {
                drop(a);
                exchange(&mut b, b"b after a closed");
            } else {
                drop(b);
                exchange(&mut a, b"a after b closed");
            }
        }
    });
}
