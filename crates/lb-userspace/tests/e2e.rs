//! End to end in network namespaces: real TCP and UDP clients reach echo
//! servers behind a ClusterIP through lb-userspace's I/O loop, which runs
//! in the node namespace of an `lb_testkit::Topology`. Privileged.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lb_core::*;
use lb_testkit::topology::{backend_v4, VIP_V4};
use lb_testkit::{tcp_request, udp_request, EchoServer, Topology};
use lb_userspace::ct::CtTimeouts;
use lb_userspace::io::{Device, IoLoop, Role};
use lb_userspace::{Config, UserspaceDataplane};

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

    let mut devices = vec![Device {
        name: topo.node_client_dev.clone(),
        role: Role::Client,
    }];
    for b in &topo.backends {
        devices.push(Device {
            name: b.node_link.name.clone(),
            role: Role::Backend,
        });
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let worker = dp.worker();
    let stop2 = stop.clone();
    let io = topo
        .node
        .spawn_thread(move || {
            let mut io = match IoLoop::new(&devices, worker, true) {
                Ok(io) => io,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return Default::default();
                }
            };
            let _ = ready_tx.send(Ok(()));
            io.run(&stop2)
        })
        .unwrap();
    ready_rx.recv().unwrap().expect("io loop");

    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
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
    }));
    stop.store(true, Ordering::Relaxed);
    let stats = io.join().unwrap();
    println!(
        "io loop: {stats:?}, counters: {:?}",
        dp.counters().services()
    );
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    assert!(stats.sent > 0 && stats.send_errors == 0, "{stats:?}");
    assert!(stats.expired_flows >= 12, "UDP flows expired: {stats:?}");
    let services = dp.counters().services();
    assert!(
        services.values().map(|s| s.new_flows).sum::<u64>() >= 25,
        "{services:?}"
    );
}
