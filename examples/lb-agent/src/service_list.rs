//! The `service list` table, shaped like `cilium service list`.

use std::fmt::Write;

use lb_core::Tables;

/// One row group: a frontend and its backends.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceRow {
    /// The frontend's service ID.
    pub id: u16,
    /// `ADDR:PORT` (IPv6 as `[ADDR]:PORT`).
    pub frontend: String,
    /// `ClusterIP`, `NodePort`, `LoadBalancer`, `ExternalIPs` or `HostPort`.
    pub service_type: String,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// `external` or `internal` (two-scope services only list both).
    pub scope: String,
    /// The owning service, `NAMESPACE/NAME`.
    pub service: String,
    /// `N => ADDR:PORT (state)` per backend.
    pub backends: Vec<String>,
}

/// The rows of everything programmed in `tables`, by ID.
pub fn rows(tables: &Tables) -> Vec<ServiceRow> {
    tables
        .frontends
        .values()
        .map(|fe| ServiceRow {
            id: fe.id.0,
            frontend: fe.key.addr.host_port().to_string(),
            service_type: fe.kind.as_str().to_string(),
            protocol: fe.key.addr.proto.as_str().to_string(),
            scope: match fe.key.scope {
                lb_core::Scope::External => "external".into(),
                lb_core::Scope::Internal => "internal".into(),
            },
            service: fe.service.to_string(),
            backends: fe
                .backends
                .iter()
                .enumerate()
                .filter_map(|(i, slot)| {
                    let b = tables.backends.get(&slot.id)?;
                    Some(format!(
                        "{} => {} ({})",
                        i + 1,
                        b.addr.host_port(),
                        slot.state
                    ))
                })
                .collect(),
        })
        .collect()
}

/// Renders rows as the aligned text table.
pub fn render(rows: &[ServiceRow]) -> String {
    let header = ["ID", "Frontend", "Service Type", "Protocol", "Backend"];
    let mut lines: Vec<[String; 5]> = vec![header.map(String::from)];
    for r in rows {
        let first = r.backends.first().cloned().unwrap_or_default();
        lines.push([
            r.id.to_string(),
            r.frontend.clone(),
            r.service_type.clone(),
            r.protocol.clone(),
            first,
        ]);
        for b in r.backends.iter().skip(1) {
            lines.push([
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                b.clone(),
            ]);
        }
    }
    let widths: Vec<usize> = (0..4)
        .map(|c| lines.iter().map(|l| l[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for l in &lines {
        let mut line = String::new();
        for c in 0..4 {
            let _ = write!(line, "{:<w$}   ", l[c], w = widths[c]);
        }
        line.push_str(&l[4]);
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}
