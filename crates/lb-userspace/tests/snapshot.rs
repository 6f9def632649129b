//! Writers publish while a worker thread forwards: every packet sees one
//! whole snapshot (the old backend set or the new one, never a mix), and a
//! refused batch publishes nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use lb_core::*;
use lb_userspace::{Direction, Outcome, UserspaceDataplane};

fn desired(node: &NodeConfig, backend: &str) -> DesiredState {
    let mut s = Service::new("default/web".parse().unwrap());
    s.frontends.push(FrontendParams::new(
        "10.96.0.10:80".parse().unwrap(),
        FrontendType::ClusterIp,
    ));
    s.backends
        .push(BackendParams::new(backend.parse().unwrap()).on_node("node-1"));
    s.algorithm = Some(LbAlgorithm::Maglev);
    DesiredState::build(node, &[s]).unwrap()
}

#[test]
fn workers_see_whole_snapshots_while_writers_publish() {
    let node = NodeConfig::new("node-1", vec!["192.168.1.10".parse().unwrap()]);
    let mut dp = UserspaceDataplane::new(node.clone(), Default::default());
    let mut rec = Reconciler::new();
    rec.apply(&mut dp, &desired(&node, "10.0.1.1:8080"))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut w = dp.worker();
    let stop2 = stop.clone();
    let reader = std::thread::spawn(move || {
        let f = lb_testkit::PacketBuilder::tcp(
            "192.168.5.2:40000".parse().unwrap(),
            "10.96.0.10:80".parse().unwrap(),
        )
        .syn()
        .build()
        .unwrap();
        let mut seen = std::collections::BTreeSet::new();
        let mut buf = f.clone();
        while !stop2.load(Ordering::Relaxed) {
            buf.copy_from_slice(&f);
            w.reset_flows();
            match w.process(&mut buf, Direction::ToFrontend, 0) {
                Outcome::Forwarded(fw) => {
                    seen.insert(fw.backend.to_string());
                }
                other => panic!("{other:?}"),
            }
        }
        seen
    });
    for i in 0..200 {
        let b = if i % 2 == 0 {
            "10.0.1.2:8080"
        } else {
            "10.0.1.1:8080"
        };
        rec.apply(&mut dp, &desired(&node, b)).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let seen = reader.join().unwrap();
    assert!(
        seen.iter()
            .all(|b| b == "10.0.1.1:8080/TCP" || b == "10.0.1.2:8080/TCP"),
        "{seen:?}"
    );
    assert!(dp.snapshot().generation >= 200);
}
