//! `lb-agent dsr-backend --device X --lb-nodes A,B`: the backend side of
//! DSR ([`lb_ebpf::dsr::BackendSide`]) on a backend's device, taking IPIP (and IPv6-in-IPv6)
//! only from the listed load-balancing nodes, attached until SIGINT or
//! SIGTERM, with its counters logged every 10 s and at exit.

use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use crate::cli::DsrBackendArgs;

/// Attaches the backend side to `args.device` and waits for a signal.
pub fn run(args: &DsrBackendArgs) -> Result<(), String> {
    if !crate::state::is_root() {
        return Err("lb-agent dsr-backend needs root (CAP_BPF, CAP_NET_ADMIN)".into());
    }
    let side = lb_ebpf::dsr::BackendSide::attach(&args.device, &args.lb_nodes)
        .map_err(|e| format!("--device {}: {e}", args.device))?;
    tracing::info!(device = %args.device, lb_nodes = ?args.lb_nodes, "DSR backend side attached");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    rt.block_on(async {
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = tick.tick() => log(&side),
            }
        }
        Ok::<(), String>(())
    })?;
    log(&side);
    drop(side);
    tracing::info!(device = %args.device, "DSR backend side detached");
    Ok(())
}

fn log(side: &lb_ebpf::dsr::BackendSide) {
    match side.stats() {
        Ok(s) => tracing::info!(
            decapsulated = s.decapsulated,
            reversed = s.reversed,
            dropped = s.dropped,
            unknown_node = s.unknown_node,
            "DSR backend counters"
        ),
        Err(e) => tracing::warn!("reading DSR counters: {e}"),
    }
}
