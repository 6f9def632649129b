//! The short-connection storm (issue 9): wrk with `Connection: close`, one
//! TCP connection per request, against a pod IP directly, then through
//! lb-ebpf's ClusterIP and NodePort (tc programs on the node's
//! client-facing device), in one lb-testkit topology. Around every phase
//! the TCP counters of the client and backend namespaces are read
//! (`/proc/net/netstat`, `/proc/net/snmp`: what `nstat` reports), so SYN
//! retransmits and resets of the load-balanced phases can be compared with
//! the direct path's.
//!
//! The backends close first (`Connection: close`), so they hold TIME_WAIT
//! sockets for 60 s, and the client reuses its ports (Linux picks them per
//! destination): a new flow from a port the client used towards another
//! frontend of the same backend, within TIME_WAIT, is a collision unless
//! the load balancer gives it another source port (`lb_ctport.h`). The
//! direct phase uses its own backend port (8081) so that its TIME_WAIT
//! sockets do not meet the load-balanced phases' flows (8080).
//!
//! lb-ebpf's gc runs every second during the phases with the default
//! lifetimes (the agent runs it every 30 s), so a closed flow's entries
//! are kept only as long as gc keeps them on purpose (10 s of closing
//! grace, then [`CtTimeouts::time_wait`] for the tuple).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use lb_core::{
    BackendParams, DesiredState, FrontendParams, FrontendType, L3n4Addr, L4Proto, NodeConfig,
    Reconciler, Service, ServiceName,
};
use lb_ebpf::{CtTimeouts, EbpfDataplane, LoadOptions};
use lb_testkit::{BpffsGuard, NetNs, Topology};

use super::http::HttpServer;
use super::load::{self, WrkOptions, WrkResult};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The service's ClusterIP frontend.
pub const CLUSTER_IP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)), 80);
/// The service's NodePort.
pub const NODE_PORT: u16 = 30080;
/// The backends' port behind the service.
pub const SERVICE_BACKEND_PORT: u16 = 8080;
/// The backend port the direct phase uses.
pub const DIRECT_PORT: u16 = 8081;

/// The counters read in every namespace (`TcpExt` from `/proc/net/netstat`,
/// `Tcp` from `/proc/net/snmp`).
pub const COUNTERS: [&str; 10] = [
    "TcpExtTCPSynRetrans",
    "TcpOutRsts",
    "TcpAttemptFails",
    "TcpEstabResets",
    "TcpExtTCPAbortOnData",
    "TcpExtTCPAbortOnClose",
    "TcpExtTCPAbortOnTimeout",
    "TcpExtTCPAbortOnLinger",
    "TcpExtListenOverflows",
    "TcpExtListenDrops",
];

/// How the storm runs.
#[derive(Debug, Clone)]
pub struct StormOptions {
    /// Length of each phase (direct, ClusterIP, NodePort).
    pub phase: Duration,
    /// wrk connections (`-c`).
    pub connections: u32,
    /// wrk threads (`-t`).
    pub threads: u32,
    /// Backend namespaces behind the service.
    pub backends: usize,
    /// [`CtTimeouts::time_wait`] of the gc runs (0 shows what happens when
    /// closed flows' tuples are not kept through TIME_WAIT).
    pub time_wait: u64,
}

impl Default for StormOptions {
    /// 5 s phases, `wrk -t2 -c16`, 3 backends, the default TIME_WAIT
    /// reservation.
    fn default() -> Self {
        StormOptions {
            phase: Duration::from_secs(5),
            connections: 16,
            threads: 2,
            backends: 3,
            time_wait: CtTimeouts::default().time_wait,
        }
    }
}

/// Counter name -> increase over a phase.
pub type Counters = BTreeMap<String, u64>;

/// One phase's figures.
#[derive(Debug, Clone)]
pub struct Phase {
    /// `direct`, `clusterip` or `nodeport`.
    pub name: &'static str,
    /// What wrk targeted.
    pub target: SocketAddr,
    /// wrk's summary.
    pub wrk: WrkResult,
    /// Counter increases in the client namespace.
    pub client: Counters,
    /// Counter increases summed over the backend namespaces.
    pub backends: Counters,
    /// lb-ebpf's connection-tracking entries after the phase.
    pub ct_entries: usize,
    /// lb-ebpf's drops for want of a free source port (SNAT or remap),
    /// over the phase.
    pub port_drops: u64,
}

impl Phase {
    /// `counter` in the client plus the backends.
    pub fn total(&self, counter: &str) -> u64 {
        self.client.get(counter).copied().unwrap_or(0)
            + self.backends.get(counter).copied().unwrap_or(0)
    }

    /// Resets the load balancer may have caused: RSTs the backends sent or
    /// received on established connections, and RSTs the client sent other
    /// than for sockets it closed itself with data unread (wrk closes its
    /// connections in flight when a run ends: `TcpExtTCPAbortOn*`).
    pub fn resets(&self) -> u64 {
        let c = |k: &str| self.client.get(k).copied().unwrap_or(0);
        let b = |k: &str| self.backends.get(k).copied().unwrap_or(0);
        let own =
            c("TcpExtTCPAbortOnClose") + c("TcpExtTCPAbortOnData") + c("TcpExtTCPAbortOnLinger");
        c("TcpOutRsts").saturating_sub(own) + b("TcpOutRsts") + b("TcpEstabResets")
    }

    /// One line: rate, errors, and every non-zero counter.
    pub fn summary(&self) -> String {
        let nz = |c: &Counters| {
            c.iter()
                .filter(|(_, v)| **v > 0)
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        format!(
            "{:9} {:21} {:>8} requests {:>7.0} conn/s, wrk errors {}; client: [{}]; backends: [{}]; LB CT entries {}, port drops {}",
            self.name,
            self.target.to_string(),
            self.wrk.requests,
            self.wrk.rps,
            self.wrk.errors,
            nz(&self.client),
            nz(&self.backends),
            self.ct_entries,
            self.port_drops
        )
    }
}

/// Reads every counter of [`COUNTERS`] in `ns`.
pub fn read_counters(ns: &NetNs) -> Res<Counters> {
    let mut all = Counters::new();
    for (file, prefix) in [("/proc/net/netstat", "TcpExt"), ("/proc/net/snmp", "Tcp")] {
        let out = ns.exec(&["cat", file])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let tag = format!("{prefix}:");
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(&tag)).collect();
        if lines.len() < 2 {
            return Err(format!("no {prefix} lines in {file}").into());
        }
        for (k, v) in lines[0]
            .split_whitespace()
            .zip(lines[1].split_whitespace())
            .skip(1)
        {
            let name = format!("{prefix}{k}");
            if COUNTERS.contains(&name.as_str()) {
                all.insert(name, v.parse().unwrap_or(0));
            }
        }
    }
    Ok(all)
}

fn diff(after: &Counters, before: &Counters) -> Counters {
    after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(before.get(k).copied().unwrap_or(0)),
            )
        })
        .collect()
}

fn sum(list: &[Counters]) -> Counters {
    let mut out = Counters::new();
    for c in list {
        for (k, v) in c {
            *out.entry(k.clone()).or_default() += v;
        }
    }
    out
}

/// The eBPF dataplane attached in the node namespace; unpinned on drop.
struct Attached {
    dp: EbpfDataplane,
    pin_dir: std::path::PathBuf,
    _bpffs: BpffsGuard,
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Err(e) = lb_ebpf::cleanup(&self.pin_dir) {
            eprintln!("storm: cleanup {}: {e}", self.pin_dir.display());
        }
    }
}

fn attach(topo: &Topology) -> Res<Attached> {
    let bpffs = BpffsGuard::new()?;
    let pin_dir = bpffs.pin_path("storm");
    let opts = LoadOptions::new(&pin_dir, &[&topo.node_client_dev]);
    let loaded = topo.node.run_in(|| lb_ebpf::load(&opts))??;
    let node = NodeConfig::new("node-1", vec![topo.node_v4.into()]);
    let mut dp = EbpfDataplane::open(&pin_dir, &node)?;
    let mut svc = Service::new(ServiceName::new("default", "storm"));
    svc.frontends.push(FrontendParams::new(
        L3n4Addr::new(CLUSTER_IP.ip(), CLUSTER_IP.port(), L4Proto::Tcp),
        FrontendType::ClusterIp,
    ));
    svc.frontends.push(FrontendParams::new(
        L3n4Addr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), NODE_PORT, L4Proto::Tcp),
        FrontendType::NodePort,
    ));
    for b in &topo.backends {
        svc.backends.push(BackendParams::new(L3n4Addr::new(
            b.v4.into(),
            SERVICE_BACKEND_PORT,
            L4Proto::Tcp,
        )));
    }
    let desired = DesiredState::build(&node, &[svc])?;
    Reconciler::new().apply(&mut dp, &desired)?;
    drop(loaded); // the programs stay attached through their pinned links
    Ok(Attached {
        dp,
        pin_dir,
        _bpffs: bpffs,
    })
}

/// Runs the three phases and returns their figures. Root only; everything
/// lives in namespaces and a bpffs created here.
pub fn run(opts: &StormOptions, script_dir: &Path) -> Res<Vec<Phase>> {
    let topo = Topology::new(opts.backends)?;
    let script = load::write_script(script_dir)?;
    let mut servers = Vec::new();
    for b in &topo.backends {
        for port in [SERVICE_BACKEND_PORT, DIRECT_PORT] {
            let addr = SocketAddr::new(b.v4.into(), port);
            servers.push(HttpServer::start(
                &b.ns,
                addr,
                "storm\n",
                opts.connections as usize + 8,
            )?);
        }
    }
    let mut lb = attach(&topo)?;
    let wrk = WrkOptions {
        threads: opts.threads,
        connections: opts.connections,
        duration: opts.phase,
        close: true,
    };
    let timeouts = CtTimeouts {
        time_wait: opts.time_wait,
        ..CtTimeouts::default()
    };
    let phases: [(&'static str, SocketAddr); 3] = [
        (
            "direct",
            SocketAddr::new(topo.backends[0].v4.into(), DIRECT_PORT),
        ),
        ("clusterip", CLUSTER_IP),
        ("nodeport", SocketAddr::new(topo.node_v4.into(), NODE_PORT)),
    ];
    let port_drops = |dp: &EbpfDataplane| -> Res<u64> {
        Ok(dp
            .counters()?
            .drops_for(lb_ebpf::abi::DropReason::SnatPorts))
    };
    let mut out = Vec::new();
    for (name, target) in phases {
        let d0 = port_drops(&lb.dp)?;
        let c0 = read_counters(&topo.client)?;
        let b0: Vec<Counters> = topo
            .backends
            .iter()
            .map(|b| read_counters(&b.ns))
            .collect::<Res<_>>()?;
        let r = std::thread::scope(|s| -> Res<WrkResult> {
            let h = s.spawn(|| load::wrk(&topo.client, None, &script, target, &wrk));
            while !h.is_finished() {
                std::thread::sleep(Duration::from_secs(1));
                lb.dp.gc_with(lb_ebpf::now_secs(), &timeouts)?;
            }
            Ok(h.join().map_err(|_| "wrk thread panicked")??)
        })?;
        let c1 = read_counters(&topo.client)?;
        let b1: Vec<Counters> = topo
            .backends
            .iter()
            .map(|b| read_counters(&b.ns))
            .collect::<Res<_>>()?;
        let bdiff: Vec<Counters> = b1.iter().zip(&b0).map(|(a, b)| diff(a, b)).collect();
        out.push(Phase {
            name,
            target,
            wrk: r,
            client: diff(&c1, &c0),
            backends: sum(&bdiff),
            ct_entries: lb.dp.maps().ct.keys().count(),
            port_drops: port_drops(&lb.dp)? - d0,
        });
    }
    drop(lb);
    drop(servers);
    Ok(out)
}
