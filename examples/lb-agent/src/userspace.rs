//! `run --dataplane userspace`: lb-userspace's dataplane, programmed by the
//! reconciler, and its I/O loop on a thread of its own, in the current
//! network namespace.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use lb_core::NodeConfig;
use lb_userspace::io::{Device, IoLoop, IoStats, Role};
use lb_userspace::{Config, UserspaceDataplane};

/// The userspace dataplane and the thread that moves its packets.
pub struct Userspace {
    /// The tables and counters (shared with the loop's packet path).
    pub dp: UserspaceDataplane,
    /// The devices the loop serves.
    pub devices: Vec<Device>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<IoStats>>,
}

/// The backend-facing devices when `--backend-device` is not given: every
/// other up, non-loopback Ethernet device of the namespace.
pub fn derive_backend_devices(client: &[String]) -> Vec<String> {
    pnet_datalink::interfaces()
        .into_iter()
        .filter(|i| {
            i.is_up()
                && !i.is_loopback()
                && i.mac.is_some_and(|m| !m.is_zero())
                && !client.contains(&i.name)
        })
        .map(|i| i.name)
        .collect()
}

/// The loop's devices: client-facing, backend-facing, and one-armed for a
/// device named in both lists (clients and backends behind one link).
pub fn roles(client: &[String], backend: &[String]) -> Vec<Device> {
    let role = |name: &String, listed_as: Role| {
        let both = client.contains(name) && backend.contains(name);
        Device {
            name: name.clone(),
            role: if both { Role::OneArmed } else { listed_as },
        }
    };
    client
        .iter()
        .map(|n| role(n, Role::Client))
        .chain(
            backend
                .iter()
                .filter(|n| !client.contains(n))
                .map(|n| role(n, Role::Backend)),
        )
        .collect()
}

impl Userspace {
    /// Builds an empty dataplane for `node` and starts the I/O loop on
    /// `client` and `backend` devices (TCX drop programs attached); returns
    /// once the loop has opened every device, or its error.
    pub fn start(node: NodeConfig, client: &[String], backend: &[String]) -> Result<Self, String> {
        if backend.is_empty() {
            return Err(
                "the userspace dataplane needs backend-facing devices: none found \
                 besides --device; pass --backend-device (the same device as \
                 --device for a one-armed node)"
                    .into(),
            );
        }
        let devices = roles(client, backend);
        let dp = UserspaceDataplane::new(node, Config::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (worker, devs, stop2) = (dp.worker(), devices.clone(), stop.clone());
        // The thread inherits the caller's network namespace.
        let thread = std::thread::Builder::new()
            .name("lb-userspace-io".into())
            .spawn(move || {
                let mut io = match IoLoop::new(&devs, worker, true) {
                    Ok(io) => io,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return IoStats::default();
                    }
                };
                let _ = ready_tx.send(Ok(()));
                io.run(&stop2)
            })
            .map_err(|e| format!("starting the I/O thread: {e}"))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Userspace {
                dp,
                devices,
                stop,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(format!("starting the userspace I/O loop: {e}"))
            }
            Err(_) => {
                let _ = thread.join();
                Err("the userspace I/O loop died while starting".into())
            }
        }
    }

    /// Stops the loop and waits for it (the drop programs are detached);
    /// its statistics, the first time.
    pub fn stop(&mut self) -> Option<IoStats> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok())
    }
}

impl Drop for Userspace {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_in_both_lists_is_one_armed() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let got: Vec<(String, Role)> = roles(&s(&["eth0", "eth1"]), &s(&["eth1", "eth2"]))
            .into_iter()
            .map(|d| (d.name, d.role))
            .collect();
        assert_eq!(
            got,
            [
                ("eth0".to_string(), Role::Client),
                ("eth1".to_string(), Role::OneArmed),
                ("eth2".to_string(), Role::Backend),
            ]
        );
    }
}
