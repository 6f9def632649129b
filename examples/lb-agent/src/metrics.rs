//! Prometheus metrics on `--metrics-addr` (OpenMetrics text via
//! prometheus-client): per-frontend packets, bytes and new flows, drops by
//! reason, sync count and duration, map fill, and what is programmed. A
//! fresh registry is filled from the dataplane's counters on every scrape.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::status::Status;

/// Counters of one frontend entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontendStats {
    /// `ADDR:PORT/PROTO`.
    pub frontend: String,
    /// `ClusterIP`, `NodePort`, ...
    pub kind: String,
    /// `NAMESPACE/NAME`.
    pub service: String,
    /// Packets that matched.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// New flows (backend selections).
    pub flows: u64,
}

type Labels = Vec<(String, String)>;

fn counter_family(reg: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let f = Family::<Labels, Counter>::default();
    reg.register(name, help, f.clone());
    f
}

fn gauge_family(reg: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge> {
    let f = Family::<Labels, Gauge>::default();
    reg.register(name, help, f.clone());
    f
}

fn l(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The OpenMetrics text for `status` and the per-frontend counters.
pub fn render(status: &Status, frontends: &[FrontendStats]) -> String {
    let mut reg = Registry::with_prefix("lb");
    let packets = counter_family(&mut reg, "frontend_packets", "Packets per frontend");
    let bytes = counter_family(&mut reg, "frontend_bytes", "Bytes per frontend");
    let flows = counter_family(&mut reg, "frontend_flows", "New flows per frontend");
    for f in frontends {
        let labels = l(&[
            ("frontend", &f.frontend),
            ("type", &f.kind),
            ("service", &f.service),
        ]);
        packets.get_or_create(&labels).inc_by(f.packets);
        bytes.get_or_create(&labels).inc_by(f.bytes);
        flows.get_or_create(&labels).inc_by(f.flows);
    }
    let drops = counter_family(&mut reg, "drops", "Dropped packets by reason");
    for (reason, n) in &status.drops {
        drops.get_or_create(&l(&[("reason", reason)])).inc_by(*n);
    }
    let syncs = Counter::<u64>::default();
    syncs.inc_by(status.sync.count);
    reg.register("syncs", "Reconciliations since start", syncs);
    let dur = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    dur.set(status.sync.duration_us as f64 / 1e6);
    reg.register(
        "sync_duration_seconds",
        "Duration of the last reconciliation",
        dur,
    );
    let ops = Gauge::<i64>::default();
    ops.set(status.sync.ops as i64);
    reg.register("sync_ops", "Dataplane ops of the last reconciliation", ops);
    let entries = gauge_family(&mut reg, "map_entries", "Entries in use per BPF map");
    let capacity = gauge_family(&mut reg, "map_capacity", "max_entries per BPF map");
    for m in &status.maps {
        let labels = l(&[("map", &m.name)]);
        entries.get_or_create(&labels).set(gauge(m.entries));
        capacity.get_or_create(&labels).set(gauge(m.capacity));
    }
    let programmed = gauge_family(&mut reg, "programmed", "Programmed objects by kind");
    for (kind, n) in [
        ("services", status.services),
        ("frontends", status.frontends),
        ("backends", status.backends),
    ] {
        programmed
            .get_or_create(&l(&[("kind", kind)]))
            .set(n as i64);
    }
    let mut out = String::new();
    if let Err(e) = encode(&mut out, &reg) {
        out = format!("# encoding failed: {e}\n");
    }
    out
}

/// Produces the metrics text on demand (called on a blocking thread).
pub type Source = Arc<dyn Fn() -> String + Send + Sync>;

/// Binds `addr`.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `GET /metrics` until the task is dropped.
pub async fn serve(listener: TcpListener, source: Source) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let source = source.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                match tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    stream.read(&mut buf[n..]),
                )
                .await
                {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                    Ok(Ok(k)) => n += k,
                }
            }
            let req = String::from_utf8_lossy(&buf[..n]);
            let (status, ctype, body) = if req.starts_with("GET /metrics ") {
                let body = tokio::task::spawn_blocking(move || source())
                    .await
                    .unwrap_or_default();
                (
                    "200 OK",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    body,
                )
            } else {
                ("404 Not Found", "text/plain", "try /metrics\n".to_string())
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{MapFill, SyncInfo};

    #[test]
    fn renders_frontends_drops_sync_and_maps() {
        let status = Status {
            version: "0".into(),
            node_name: "n".into(),
            node_ips: vec![],
            dataplane: String::new(),
            devices: vec![],
            socket_lb: String::new(),
            mode: String::new(),
            backend_selection: String::new(),
            session_affinity: String::new(),
            graceful_termination: String::new(),
            nodeport_range: String::new(),
            source: String::new(),
            bpffs: String::new(),
            services: 1,
            frontends: 2,
            backends: 3,
            maps: vec![MapFill {
                name: "lb4_services".into(),
                entries: 5,
                capacity: 65536,
            }],
            drops: vec![("NoBackend".into(), 7)],
            maglev_hash_seed: String::new(),
            topology: String::new(),
            policies: String::new(),
            xdp_acceleration: String::new(),
            nat46x64: String::new(),
            sync: SyncInfo {
                count: 4,
                duration_us: 1500,
                ..SyncInfo::default()
            },
        };
        let fe = FrontendStats {
            frontend: "10.96.0.10:80/TCP".into(),
            kind: "ClusterIP".into(),
            service: "default/web".into(),
            packets: 10,
            bytes: 1000,
            flows: 2,
        };
        let text = render(&status, &[fe]);
        for want in [
            "lb_frontend_packets_total{frontend=\"10.96.0.10:80/TCP\",type=\"ClusterIP\",service=\"default/web\"} 10",
            "lb_frontend_flows_total{frontend=\"10.96.0.10:80/TCP\",type=\"ClusterIP\",service=\"default/web\"} 2",
            "lb_drops_total{reason=\"NoBackend\"} 7",
            "lb_syncs_total 4",
            "lb_sync_duration_seconds 0.0015",
            "lb_map_entries{map=\"lb4_services\"} 5",
            "lb_programmed{kind=\"backends\"} 3",
            "# EOF",
        ] {
            assert!(text.contains(want), "{want:?} in\n{text}");
        }
    }
}
