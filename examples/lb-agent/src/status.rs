//! `lb-agent status`: the agent's KubeProxyReplacement report, in the spirit
//! of `cilium status --verbose`.

use std::fmt::Write;

/// Entries and capacity of one BPF map.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MapFill {
    /// The map's name.
    pub name: String,
    /// Entries in use.
    pub entries: u64,
    /// `max_entries`.
    pub capacity: u64,
}

/// Fill (percent of `max_entries`) from which `status` warns about a
/// connection-tracking map: LRU maps start evicting before they are
/// strictly full (per-CPU free lists).
pub const FLOW_MAP_WARN_PCT: f64 = 80.0;

impl MapFill {
    /// Entries in percent of the capacity.
    pub fn fill_pct(&self) -> f64 {
        if self.capacity == 0 {
            0.0
        } else {
            self.entries as f64 * 100.0 / self.capacity as f64
        }
    }

    /// True for a connection-tracking map (`lb4_ct`, `lb4_snat`) filled to
    /// [`FLOW_MAP_WARN_PCT`] or more.
    pub fn flow_map_under_pressure(&self) -> bool {
        matches!(
            self.name.as_str(),
            "lb4_ct" | "lb4_snat" | "lb6_ct" | "lb6_snat"
        ) && self.fill_pct() >= FLOW_MAP_WARN_PCT
    }
}

/// The last reconciliation.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SyncInfo {
    /// Completed syncs since start.
    pub count: u64,
    /// Seconds since the Unix epoch of the last sync.
    pub last_unix: u64,
    /// Its duration in microseconds.
    pub duration_us: u64,
    /// Dataplane ops it applied.
    pub ops: usize,
    /// Problems it logged (bad files, left-out services).
    pub problems: Vec<String>,
    /// The last error, when the last sync failed.
    pub error: Option<String>,
    /// The report was taken at the end of the last completed sync, because
    /// a sync in progress holds the agent.
    #[serde(default)]
    pub from_cache: bool,
}

/// Everything `status` shows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Status {
    /// Agent version.
    pub version: String,
    /// Node name.
    pub node_name: String,
    /// Node addresses.
    pub node_ips: Vec<String>,
    /// `eBPF (tc ...)` or `userspace (...)`.
    pub dataplane: String,
    /// Devices the programs are attached to.
    pub devices: Vec<String>,
    /// Socket LB: `Disabled (...)` or `Enabled (cgroup PATH)`.
    pub socket_lb: String,
    /// Translation mode.
    pub mode: String,
    /// `Random` or `Maglev (table size N, seed S)`.
    pub backend_selection: String,
    /// Session affinity support.
    pub session_affinity: String,
    /// Graceful termination support.
    pub graceful_termination: String,
    /// NodePort range.
    pub nodeport_range: String,
    /// Manifest directory.
    pub source: String,
    /// Pin directory.
    pub bpffs: String,
    /// Distinct services programmed.
    pub services: usize,
    /// Frontend entries programmed.
    pub frontends: usize,
    /// Backends programmed.
    pub backends: usize,
    /// Map pressure (empty with the userspace dataplane).
    pub maps: Vec<MapFill>,
    /// Drops by reason.
    pub drops: Vec<(String, u64)>,
    /// The Maglev hash seed in use and where it came from.
    #[serde(default)]
    pub maglev_hash_seed: String,
    /// Topology-aware routing: the node's zone, or why it is off.
    #[serde(default)]
    pub topology: String,
    /// How many frontends use traffic policy Local, source ranges, weights
    /// and zone filtering.
    #[serde(default)]
    pub policies: String,
    /// XDP acceleration: `Native`/`Generic` and the devices, or `Disabled`.
    #[serde(default)]
    pub xdp_acceleration: String,
    /// NAT46/64 for services: `Disabled`, or `Enabled (...)` with how many
    /// frontends are translated each way.
    #[serde(default)]
    pub nat46x64: String,
    /// Last sync.
    pub sync: SyncInfo,
}

/// Renders `status` as text; `verbose` adds map pressure, drops and problems.
pub fn render(s: &Status, verbose: bool) -> String {
    let mut o = String::new();
    let kv = |o: &mut String, k: &str, v: &str| {
        let _ = writeln!(o, "{:<26}{v}", format!("{k}:"));
    };
    let ok = if s.sync.error.is_none() {
        "True"
    } else {
        "Degraded"
    };
    kv(
        &mut o,
        "KubeProxyReplacement",
        &format!("{ok}   [{}]", s.devices.join(", ")),
    );
    kv(
        &mut o,
        "Services",
        &format!(
            "{} services, {} frontends, {} backends",
            s.services, s.frontends, s.backends
        ),
    );
    let last = match &s.sync.error {
        Some(e) => format!("failed: {e}"),
        None => format!(
            "ok, {} ops in {} us ({} syncs, {} problems)",
            s.sync.ops,
            s.sync.duration_us,
            s.sync.count,
            s.sync.problems.len()
        ),
    };
    let last = if s.sync.from_cache {
        format!("{last} (a sync is in progress; this report is from the last one)")
    } else {
        last
    };
    kv(&mut o, "Last sync", &last);
    if !verbose {
        return o;
    }
    let _ = writeln!(o, "KubeProxyReplacement Details:");
    let d = |o: &mut String, k: &str, v: &str| {
        let _ = writeln!(o, "  {:<24}{v}", format!("{k}:"));
    };
    d(&mut o, "Status", ok);
    d(&mut o, "Dataplane", &s.dataplane);
    d(&mut o, "Socket LB", &s.socket_lb);
    d(&mut o, "XDP Acceleration", &s.xdp_acceleration);
    d(&mut o, "Devices", &s.devices.join(", "));
    d(&mut o, "Mode", &s.mode);
    d(&mut o, "Backend Selection", &s.backend_selection);
    d(&mut o, "Maglev Hash Seed", &s.maglev_hash_seed);
    d(&mut o, "Topology", &s.topology);
    d(&mut o, "Policies", &s.policies);
    d(&mut o, "Session Affinity", &s.session_affinity);
    d(&mut o, "Graceful Termination", &s.graceful_termination);
    if s.nat46x64.is_empty() || s.nat46x64 == "Disabled" {
        d(&mut o, "NAT46/64 Support", "Disabled");
    } else {
        // Cilium's shape: the services part, then the (stateless) gateway,
        // which this agent does not have.
        let _ = writeln!(o, "  NAT46/64 Support:");
        let _ = writeln!(o, "  - {:<22}{}", "Services:", s.nat46x64);
        let _ = writeln!(o, "  - {:<22}Disabled", "Gateway:");
    }
    d(&mut o, "NodePort Range", &s.nodeport_range);
    d(
        &mut o,
        "Node",
        &format!("{} ({})", s.node_name, s.node_ips.join(", ")),
    );
    d(&mut o, "Source", &s.source);
    d(&mut o, "BPF pins", &s.bpffs);
    if !s.maps.is_empty() {
        let _ = writeln!(o, "  BPF Maps:");
        let _ = writeln!(
            o,
            "    {:<20}{:>10}{:>10}{:>8}",
            "Name", "Entries", "Max", "Fill"
        );
    }
    for m in &s.maps {
        let _ = writeln!(
            o,
            "    {:<20}{:>10}{:>10}{:>7.1}%{}",
            m.name,
            m.entries,
            m.capacity,
            m.fill_pct(),
            if m.flow_map_under_pressure() {
                "  !"
            } else {
                ""
            }
        );
    }
    for m in s.maps.iter().filter(|m| m.flow_map_under_pressure()) {
        let _ = writeln!(
            o,
            "    Warning: {} is {:.0}% full: the LRU evicts closed flows' TIME_WAIT \
             reservations, then idle flows (their packets lose their NAT); each short \
             connection holds entries for about 105 s (RELIABILITY.md, CT sizing): \
             raise --bpf-ct-global-max",
            m.name,
            m.fill_pct()
        );
    }
    let _ = writeln!(o, "  Drops:");
    for (r, n) in &s.drops {
        let _ = writeln!(o, "    {:<20}{n:>10}", r);
    }
    if !s.sync.problems.is_empty() {
        let _ = writeln!(o, "  Problems in the last sync:");
        for p in &s.sync.problems {
            let _ = writeln!(o, "    {p}");
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbose_shows_the_kpr_details() {
        let s = Status {
            version: "0.1.0".into(),
            node_name: "node-1".into(),
            node_ips: vec!["192.168.10.1".into()],
            dataplane: "eBPF (tc)".into(),
            devices: vec!["eth0".into()],
            socket_lb: "Disabled (no --cgroup)".into(),
            mode: "DNAT".into(),
            backend_selection: "Random".into(),
            session_affinity: "Enabled".into(),
            graceful_termination: "Enabled".into(),
            nodeport_range: "30000-32767".into(),
            source: "/m".into(),
            bpffs: "/sys/fs/bpf/lb".into(),
            services: 1,
            frontends: 5,
            backends: 3,
            maps: vec![MapFill {
                name: "lb4_services".into(),
                entries: 20,
                capacity: 65536,
            }],
            drops: vec![("no_backend".into(), 2)],
            maglev_hash_seed: "305419896 (--maglev-hash-seed)".into(),
            topology: "zone zone-a".into(),
            policies: "1 Local".into(),
            xdp_acceleration: "Native (eth0)".into(),
            nat46x64: String::new(),
            sync: SyncInfo::default(),
        };
        let short = render(&s, false);
        assert!(
            short.starts_with("KubeProxyReplacement:     True   [eth0]"),
            "{short}"
        );
        let long = render(&s, true);
        for want in [
            "  Socket LB:              Disabled (no --cgroup)",
            "  XDP Acceleration:       Native (eth0)",
            "  Backend Selection:      Random",
            "    lb4_services                20     65536    0.0%",
            "    no_backend                   2",
            "  Maglev Hash Seed:       305419896 (--maglev-hash-seed)",
            "  Topology:               zone zone-a",
            "  NAT46/64 Support:       Disabled",
        ] {
            assert!(long.contains(want), "{want:?} in\n{long}");
        }
        let on = Status {
            nat46x64: "Enabled (1 NAT46 frontends, 0 NAT64)".into(),
            ..s
        };
        let long = render(&on, true);
        for want in [
            "  NAT46/64 Support:\n",
            "  - Services:             Enabled (1 NAT46 frontends, 0 NAT64)",
            "  - Gateway:              Disabled",
        ] {
            assert!(long.contains(want), "{want:?} in\n{long}");
        }
        assert!(!long.contains("Warning"), "{long}");
    }

    #[test]
    fn a_nearly_full_connection_tracking_map_is_flagged() {
        let fill = |name: &str, entries| MapFill {
            name: name.into(),
            entries,
            capacity: 1000,
        };
        let mut s = Status {
            version: "0.1.0".into(),
            node_name: "node-1".into(),
            node_ips: vec![],
            dataplane: "eBPF (tc)".into(),
            devices: vec![],
            socket_lb: String::new(),
            mode: String::new(),
            backend_selection: String::new(),
            session_affinity: String::new(),
            graceful_termination: String::new(),
            nodeport_range: String::new(),
            source: String::new(),
            bpffs: String::new(),
            services: 0,
            frontends: 0,
            backends: 0,
            maps: vec![
                fill("lb4_services", 990),
                fill("lb4_ct", 790),
                fill("lb4_snat", 10),
            ],
            drops: vec![],
            maglev_hash_seed: String::new(),
            topology: String::new(),
            policies: String::new(),
            xdp_acceleration: String::new(),
            nat46x64: String::new(),
            sync: SyncInfo::default(),
        };
        // A full services map is a capacity matter (admission), not LRU.
        assert!(!render(&s, true).contains("Warning"));
        s.maps[1].entries = 850;
        s.maps[2].entries = 1000;
        let long = render(&s, true);
        assert!(
            long.contains("    lb4_ct                     850      1000   85.0%  !"),
            "{long}"
        );
        assert!(long.contains("Warning: lb4_ct is 85% full"), "{long}");
        assert!(long.contains("Warning: lb4_snat is 100% full"), "{long}");
        assert!(long.contains("raise --bpf-ct-global-max"), "{long}");
        assert!(!long.contains("Warning: lb4_services"), "{long}");
    }
}
