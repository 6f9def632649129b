//! ICMP errors end to end through lb-userspace's I/O loop, in network
//! namespaces: a connected UDP socket in the client namespace sends to a
//! frontend whose backend port is closed; the backend's kernel answers
//! with port unreachable about the packet it got (DNATed, or SNATed to the
//! node), and only a correctly translated error (outer and quoted
//! addresses, ports and checksums) makes the client's kernel report
//! `ECONNREFUSED` on the socket. IPv4 and IPv6, through a ClusterIP
//! (backend on this node: DNAT only) and through a NodePort whose backend
//! is on another node (SNATed; checked with an echo server that reports
//! the peer it saw). Privileged; bounded (a few seconds: 2 s timeouts).

mod common;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use lb_core::*;
use lb_testkit::topology::{backend_v4, backend_v6, VIP_V4, VIP_V6};
use lb_testkit::{udp_request, EchoServer, Topology};
use lb_userspace::{Config, UserspaceDataplane};

use common::io_rig::{node_devices, with_io_loop};

const T: Duration = Duration::from_secs(2);

/// Sends on a connected UDP socket in the client namespace until it
/// reports an error (the ICMP error of an earlier datagram) or 5 tries
/// time out; returns the error kind.
fn connected_udp_error(topo: &Topology, to: SocketAddr) -> Option<std::io::ErrorKind> {
    topo.client
        .run_in(|| {
            let bind: SocketAddr = if to.is_ipv4() {
                "0.0.0.0:0".parse().unwrap()
            } else {
                "[::]:0".parse().unwrap()
            };
            let s = UdpSocket::bind(bind).unwrap();
            s.connect(to).unwrap();
            s.set_read_timeout(Some(T)).unwrap();
            let mut buf = [0u8; 64];
            for _ in 0..5 {
                if let Err(e) = s.send(b"anyone?") {
                    return Some(e.kind());
                }
                match s.recv(&mut buf) {
                    Ok(_) => return None,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => return Some(e.kind()),
                }
            }
            None
        })
        .unwrap()
}

fn service(
    name: &str,
    frontends: &[(String, FrontendType)],
    backends: &[String],
    on: &str,
) -> Service {
    let mut svc = Service::new(name.parse().unwrap());
    for (fe, ty) in frontends {
        svc.frontends
            .push(FrontendParams::new(fe.parse().unwrap(), *ty));
    }
    for b in backends {
        svc.backends
            .push(BackendParams::new(b.parse().unwrap()).on_node(on));
    }
    svc
}

#[test]
fn connected_udp_clients_get_econnrefused_through_cluster_ip_and_snated_node_port() {
    lb_testkit::require_privileges();
    let topo = Topology::new(1).expect("topology");
    let node = NodeConfig::new(
        "node-1",
        vec![IpAddr::V4(topo.node_v4), IpAddr::V6(topo.node_v6)],
    );
    let (b4, b6) = (backend_v4(1), backend_v6(1));
    let be = &topo.backends[0].ns;
    // Port 5353 is closed on the backend; 5354 reports the peer it saw.
    let _echo4 = EchoServer::udp_with_peer(be, SocketAddr::from((b4, 5354)), b"b:").unwrap();
    let _echo6 = EchoServer::udp_with_peer(be, SocketAddr::from((b6, 5354)), b"b:").unwrap();
    let local = service(
        "default/dns",
        &[
            (format!("{VIP_V4}:53/UDP"), FrontendType::ClusterIp),
            (format!("[{VIP_V6}]:53/UDP"), FrontendType::ClusterIp),
        ],
        &[format!("{b4}:5353/UDP"), format!("[{b6}]:5353/UDP")],
        "node-1",
    );
    let closed = service(
        "default/remote-closed",
        &[
            ("0.0.0.0:30053/UDP".into(), FrontendType::NodePort),
            ("[::]:30053/UDP".into(), FrontendType::NodePort),
        ],
        &[format!("{b4}:5353/UDP"), format!("[{b6}]:5353/UDP")],
        "node-2",
    );
    let open = service(
        "default/remote-open",
        &[
            ("0.0.0.0:30054/UDP".into(), FrontendType::NodePort),
            ("[::]:30054/UDP".into(), FrontendType::NodePort),
        ],
        &[format!("{b4}:5354/UDP"), format!("[{b6}]:5354/UDP")],
        "node-2",
    );
    let desired = DesiredState::build(&node, &[local, closed, open]).unwrap();
    let mut dp = UserspaceDataplane::new(node, Config::default());
    Reconciler::new().apply(&mut dp, &desired).unwrap();

    let devices = node_devices(&topo, Some(1));
    let (stats, ()) = with_io_loop(&topo, devices, dp.worker(), || {
        // The remote service is SNATed: the backend sees the node's address,
        // not the client's.
        for (np, node_side) in [
            (
                SocketAddr::from((topo.node_v4, 30054)),
                IpAddr::V4(topo.node_v4),
            ),
            (
                SocketAddr::from((topo.node_v6, 30054)),
                IpAddr::V6(topo.node_v6),
            ),
        ] {
            let out = udp_request(&topo.client, np, b"hi", T).expect("udp through the NodePort");
            let out = String::from_utf8(out).unwrap();
            let peer: SocketAddr = out[out.find('[').unwrap() + 1..out.rfind(']').unwrap()]
                .parse()
                .unwrap_or_else(|e| panic!("{out}: {e}"));
            assert_eq!(peer.ip(), node_side, "SNATed: {out}");
        }
        for to in [
            SocketAddr::from((VIP_V4, 53)),
            SocketAddr::from((topo.node_v4, 30053)),
            SocketAddr::from((VIP_V6, 53)),
            SocketAddr::from((topo.node_v6, 30053)),
        ] {
            assert_eq!(
                connected_udp_error(&topo, to),
                Some(std::io::ErrorKind::ConnectionRefused),
                "through {to}"
            );
        }
    });
    assert_eq!(stats.send_errors, 0, "{stats:?}");
}
