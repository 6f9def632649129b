//! Packets per second through lb-userspace's I/O loop over veth pairs,
//! beside the kernel forwarding the same traffic with no load balancer.
//!
//! Builds an `lb_testkit::Topology` (client, node, one backend), then for
//! each variant blasts 64-byte UDP datagrams from 64 client flows for a few
//! seconds and counts what the backend receives:
//! - `direct`: client → backend IP, forwarded by the node's kernel;
//! - `userspace`: client → ClusterIP, DNATed by lb-userspace's I/O loop.
//!
//! Root only; everything stays in the namespaces it creates. Run with
//! `cargo run --release -p lb-userspace --example veth_pps -- [SECONDS] [ROUNDS]`.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_core::*;
use lb_testkit::topology::{backend_v4, VIP_V4};
use lb_testkit::Topology;
use lb_userspace::io::{Device, IoLoop, Role};
use lb_userspace::{Config, UserspaceDataplane};

const PORT: u16 = 5353;

/// Sends datagrams from 64 sockets to `dst` for `secs`; returns how many were sent.
fn blast(topo: &Topology, dst: SocketAddr, secs: f64) -> u64 {
    topo.client
        .spawn_thread(move || {
            let socks: Vec<UdpSocket> = (0..64)
                .map(|_| UdpSocket::bind("0.0.0.0:0").expect("bind"))
                .collect();
            let payload = [0u8; 64];
            let end = Instant::now() + Duration::from_secs_f64(secs);
            let mut sent = 0u64;
            while Instant::now() < end {
                for s in &socks {
                    if s.send_to(&payload, dst).is_ok() {
                        sent += 1;
                    }
                }
            }
            sent
        })
        .expect("client thread")
        .join()
        .expect("client")
}

/// Counts datagrams arriving at the backend until `stop`.
fn sink(topo: &Topology, count: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> lb_testkit::NsThread<()> {
    let addr = SocketAddr::from((backend_v4(1), PORT));
    topo.backends[0]
        .ns
        .spawn_thread(move || {
            let s = UdpSocket::bind(addr).expect("bind sink");
            s.set_read_timeout(Some(Duration::from_millis(100))).ok();
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if s.recv(&mut buf).is_ok() {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .expect("sink thread")
}

/// Runs one variant: returns (sent, received) per second.
fn measure(topo: &Topology, dst: SocketAddr, secs: f64) -> (f64, f64) {
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let t = sink(topo, count.clone(), stop.clone());
    std::thread::sleep(Duration::from_millis(200));
    let sent = blast(topo, dst, secs);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    t.join().expect("sink");
    let got = count.load(Ordering::Relaxed);
    (sent as f64 / secs, got as f64 / secs)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let rounds: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    lb_testkit::require_privileges();
    let topo = Topology::new(1).expect("topology");
    let node = NodeConfig::new("node-1", vec![IpAddr::V4(topo.node_v4)]);
    let mut svc = Service::new("default/sink".parse().expect("name"));
    svc.frontends.push(FrontendParams::new(
        L3n4Addr::new(IpAddr::V4(VIP_V4), PORT, L4Proto::Udp),
        FrontendType::ClusterIp,
    ));
    svc.backends.push(
        BackendParams::new(L3n4Addr::new(IpAddr::V4(backend_v4(1)), PORT, L4Proto::Udp))
            .on_node("node-1"),
    );
    let desired = DesiredState::build(&node, &[svc]).expect("desired");
    let mut dp = UserspaceDataplane::new(node, Config::default());
    Reconciler::new().apply(&mut dp, &desired).expect("apply");

    let direct = SocketAddr::from((backend_v4(1), PORT));
    let vip = SocketAddr::from((VIP_V4, PORT));
    let (mut d_rx, mut u_rx, mut d_tx, mut u_tx) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        // Direct: the node's kernel forwards, no load balancer.
        let (tx, rx) = measure(&topo, direct, secs);
        d_tx.push(tx);
        d_rx.push(rx);
        // Userspace: the I/O loop captures, rewrites and re-injects.
        let devices = vec![
            Device {
                name: topo.node_client_dev.clone(),
                role: Role::Client,
            },
            Device {
                name: topo.backends[0].node_link.name.clone(),
                role: Role::Backend,
            },
        ];
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let worker = dp.worker();
        let io = topo
            .node
            .spawn_thread(move || {
                let mut io = IoLoop::new(&devices, worker, true).expect("io loop");
                io.run(&stop2)
            })
            .expect("io thread");
        std::thread::sleep(Duration::from_millis(300));
        let (tx, rx) = measure(&topo, vip, secs);
        stop.store(true, Ordering::Relaxed);
        let stats = io.join().expect("io");
        u_tx.push(tx);
        u_rx.push(rx);
        println!(
            "round {round}: direct {:.0} pps delivered ({:.0} sent); userspace {:.0} pps delivered ({:.0} sent); io loop {stats:?}",
            d_rx[round], d_tx[round], u_rx[round], u_tx[round]
        );
    }
    println!(
        "median over {rounds} rounds of {secs} s: direct {:.0} pps, userspace {:.0} pps delivered",
        median(d_rx),
        median(u_rx)
    );
}
