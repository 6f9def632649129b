//! The node side of the end-to-end tests: lb-userspace's I/O loop serving
//! a topology's devices in the node namespace while a test body runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use lb_testkit::Topology;
use lb_userspace::io::{Device, IoLoop, IoStats, Role};
use lb_userspace::PacketPath;

/// The node's client-facing device and its links to the first `backends`
/// backend namespaces (all of them when `None`).
pub fn node_devices(topo: &Topology, backends: Option<usize>) -> Vec<Device> {
    let n = backends.unwrap_or(topo.backends.len());
    let mut devices = vec![Device {
        name: topo.node_client_dev.clone(),
        role: Role::Client,
    }];
    devices.extend(topo.backends.iter().take(n).map(|b| Device {
        name: b.node_link.name.clone(),
        role: Role::Backend,
    }));
    devices
}

/// Runs `body` while an I/O loop with `worker` serves `devices` in the
/// topology's node namespace. The loop is stopped and joined whether or
/// not `body` panics (the panic is re-raised after the loop's statistics
/// are printed). Returns the loop's statistics and what `body` returned.
pub fn with_io_loop<T>(
    topo: &Topology,
    devices: Vec<Device>,
    worker: PacketPath,
    body: impl FnOnce() -> T,
) -> (IoStats, T) {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let stop_io = stop.clone();
    let io = topo
        .node
        .spawn_thread(move || {
            let mut io = match IoLoop::new(&devices, worker, true) {
                Ok(io) => io,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return IoStats::default();
                }
            };
            let _ = ready_tx.send(Ok(()));
            io.run(&stop_io)
        })
        .expect("spawn the I/O loop in the node namespace");
    ready_rx
        .recv()
        .expect("the I/O loop reports")
        .expect("io loop");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
    stop.store(true, Ordering::Relaxed);
    let stats = io.join().expect("the I/O loop thread");
    println!("io loop: {stats:?}");
    match result {
        Ok(value) => (stats, value),
        Err(e) => std::panic::resume_unwind(e),
    }
}
