//! Large TCP transfers through lb-userspace's I/O loop, end to end in
//! network namespaces: a real TCP client in the client namespace downloads
//! and uploads [`SIZE`] bytes from and to a backend, through a ClusterIP and
//! through a (SNATed) NodePort. The veth peers are GSO-capable, so the
//! senders hand the node frames far above the MTU; the loop must re-inject
//! them as MTU-sized segments. Checks: every byte arrives, the loop reports
//! no send error, and the senders' TCP retransmissions (`RetransSegs` of
//! the client and backend namespaces) stay bounded.
//!
//! Privileged; bounded: four transfers of 8 MiB with 30 s socket timeouts
//! (a few seconds in all on an idle machine). Prints the figures
//! (`--nocapture`); `BENCHMARKS.md` records them.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_core::*;
use lb_testkit::netns::NetNs;
use lb_testkit::topology::{backend_v4, VIP_V4};
use lb_testkit::Topology;
use lb_userspace::{Config, UserspaceDataplane};

use common::io_rig::{node_devices, with_io_loop};

/// Bytes per transfer (8 MiB; `LB_BULK_MIB` sets another size for runs
/// by hand).
static SIZE: std::sync::LazyLock<usize> = std::sync::LazyLock::new(|| {
    std::env::var("LB_BULK_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(8)
        << 20
});
const TIMEOUT: Duration = Duration::from_secs(30);

/// `Tcp: RetransSegs` of the namespace `ns`.
fn retrans(ns: &NetNs) -> u64 {
    ns.run_in(|| {
        let s = std::fs::read_to_string("/proc/thread-self/net/snmp").expect("snmp");
        let mut tcp = s.lines().filter(|l| l.starts_with("Tcp:"));
        let (names, values) = (tcp.next().unwrap(), tcp.next().unwrap());
        let i = names
            .split_whitespace()
            .position(|n| n == "RetransSegs")
            .unwrap();
        values.split_whitespace().nth(i).unwrap().parse().unwrap()
    })
    .unwrap()
}

fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

/// A server on the backend: `D` sends [`SIZE`] bytes and closes; `U` reads
/// to EOF and answers with the byte count (8 bytes, big endian) and
/// whether every byte matched the pattern.
fn serve(listener: TcpListener, stop: Arc<AtomicBool>) {
    listener.set_nonblocking(true).unwrap();
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut c, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        c.set_nonblocking(false).unwrap();
        c.set_read_timeout(Some(TIMEOUT)).unwrap();
        c.set_write_timeout(Some(TIMEOUT)).unwrap();
        let mut cmd = [0u8; 1];
        if c.read_exact(&mut cmd).is_err() {
            continue;
        }
        let mut buf = vec![0u8; 1 << 16];
        if cmd[0] == b'D' {
            let mut sent = 0;
            while sent < *SIZE {
                let n = buf.len().min(*SIZE - sent);
                for (j, b) in buf[..n].iter_mut().enumerate() {
                    *b = pattern(sent + j);
                }
                if c.write_all(&buf[..n]).is_err() {
                    break;
                }
                sent += n;
            }
        } else {
            let (mut got, mut ok) = (0usize, true);
            while let Ok(n) = c.read(&mut buf) {
                if n == 0 {
                    break;
                }
                ok &= buf[..n]
                    .iter()
                    .enumerate()
                    .all(|(j, &b)| b == pattern(got + j));
                got += n;
            }
            let mut answer = (got as u64).to_be_bytes().to_vec();
            answer.push(u8::from(ok));
            let _ = c.write_all(&answer);
        }
    }
}

/// One download or upload through `to`; returns its duration.
fn transfer(topo: &Topology, to: SocketAddr, download: bool) -> Duration {
    let mut c = topo
        .client
        .run_in(|| TcpStream::connect_timeout(&to, TIMEOUT))
        .unwrap()
        .unwrap_or_else(|e| panic!("connect {to}: {e}"));
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    c.set_write_timeout(Some(TIMEOUT)).unwrap();
    let t = Instant::now();
    let mut buf = vec![0u8; 1 << 16];
    if download {
        c.write_all(b"D").unwrap();
        let mut got = 0;
        loop {
            let n = c.read(&mut buf).expect("download");
            if n == 0 {
                break;
            }
            assert!(
                buf[..n]
                    .iter()
                    .enumerate()
                    .all(|(j, &b)| b == pattern(got + j)),
                "download corrupted near byte {got}"
            );
            got += n;
        }
        assert_eq!(got, *SIZE, "download through {to}");
    } else {
        c.write_all(b"U").unwrap();
        let mut sent = 0;
        while sent < *SIZE {
            let n = buf.len().min(*SIZE - sent);
            for (j, b) in buf[..n].iter_mut().enumerate() {
                *b = pattern(sent + j);
            }
            c.write_all(&buf[..n]).expect("upload");
            sent += n;
        }
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = [0u8; 9];
        c.read_exact(&mut answer).expect("upload answer");
        let got = u64::from_be_bytes(answer[..8].try_into().unwrap());
        assert_eq!(got as usize, *SIZE, "upload through {to}");
        assert_eq!(answer[8], 1, "upload corrupted");
    }
    t.elapsed()
}

#[test]
fn large_tcp_transfers_through_cluster_ip_and_node_port() {
    lb_testkit::require_privileges();
    let topo = Topology::new(1).expect("topology");
    let node = NodeConfig::new("node-1", vec![IpAddr::V4(topo.node_v4)]);
    let ip = backend_v4(1);
    let mut svc = Service::new("default/bulk".parse().unwrap());
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

    let stop = Arc::new(AtomicBool::new(false));
    let listener = topo.backends[0]
        .ns
        .run_in(|| TcpListener::bind(SocketAddr::from((ip, 8080))))
        .unwrap()
        .unwrap();
    let stop_server = stop.clone();
    let server = std::thread::spawn(move || serve(listener, stop_server));

    let devices = node_devices(&topo, Some(1));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        with_io_loop(&topo, devices, dp.worker(), || {
            let mut retransmits = 0;
            for (name, to) in [
                ("ClusterIP", SocketAddr::from((VIP_V4, 80))),
                ("NodePort", SocketAddr::from((topo.node_v4, 30080))),
            ] {
                for download in [true, false] {
                    let before = retrans(&topo.client) + retrans(&topo.backends[0].ns);
                    let took = transfer(&topo, to, download);
                    let r = retrans(&topo.client) + retrans(&topo.backends[0].ns) - before;
                    retransmits += r;
                    let what = if download { "download" } else { "upload" };
                    println!(
                        "{name} {what} {} MiB: {:.3} s, {r} retransmitted segments",
                        *SIZE >> 20,
                        took.as_secs_f64()
                    );
                }
            }
            retransmits
        })
    }));
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
    let (stats, retransmits) = match result {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e),
    };
    assert_eq!(stats.send_errors, 0, "{stats:?}");
    // A busy shared machine may still lose a few frames to a full socket
    // buffer; thousands (one per oversized frame) mean the bug is back.
    assert!(retransmits <= 200, "{retransmits} retransmitted segments");
}
