//! The `service list` table, shaped like `cilium service list`.

use std::fmt::Write;

use lb_core::Tables;

/// One row group: a frontend and its backends.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceRow {
    /// The frontend's service ID.
    pub id: u32,
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
    /// `N => ADDR:PORT (state[, weight W][, zone Z])` per backend; the
    /// weight is shown when it is not the default 100, and an active
    /// backend that takes no new flows although weighted is marked
    /// `other zone` (left out by topology-aware routing).
    pub backends: Vec<String>,
    /// The frontend's policies, comma-separated: `NAT46` or `NAT64` (its
    /// backends are of the other IP family), `Local` (traffic policy
    /// Local), `N source ranges`, the selection algorithm when Maglev.
    #[serde(default)]
    pub policy: String,
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
                    let mut notes = slot.state.to_string();
                    if slot.weight != lb_core::BackendParams::DEFAULT_WEIGHT {
                        let _ = write!(notes, ", weight {}", slot.weight);
                    }
                    if let Some(z) = &b.zone {
                        let _ = write!(notes, ", zone {z}");
                    }
                    if i >= fe.selectable
                        && slot.state == lb_core::BackendState::Active
                        && slot.weight > 0
                    {
                        notes.push_str(", other zone");
                    }
                    Some(format!("{} => {} ({notes})", i + 1, b.addr.host_port()))
                })
                .collect(),
            policy: policy(fe, tables.translation(fe)),
        })
        .collect()
}

fn policy(fe: &lb_core::Frontend, translation: lb_core::Translation) -> String {
    let mut p = Vec::new();
    if translation.is_translated() {
        p.push(translation.to_string());
    }
    if fe.local_only {
        p.push("Local".to_string());
    }
    if fe.has_source_ranges() {
        p.push(format!("{} source ranges", fe.source_ranges.len()));
    }
    if fe.algorithm == lb_core::LbAlgorithm::Maglev {
        p.push("Maglev".to_string());
    }
    p.join(", ")
}

/// Renders rows as the aligned text table.
pub fn render(rows: &[ServiceRow]) -> String {
    let header = ["ID", "Frontend", "Service Type", "Protocol", "Backend"];
    let mut lines: Vec<[String; 5]> = vec![header.map(String::from)];
    for r in rows {
        let first = r.backends.first().cloned().unwrap_or_default();
        let kind = if r.policy.is_empty() {
            r.service_type.clone()
        } else {
            format!("{} ({})", r.service_type, r.policy)
        };
        lines.push([
            r.id.to_string(),
            r.frontend.clone(),
            kind,
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
