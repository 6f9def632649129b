//! End-to-end benchmark of kube-proxy replacements, side by side, in one
//! run (root; everything lives in namespaces, a child cgroup and a private
//! bpffs created here, removed on exit):
//!
//! ```text
//! e2e [run] [--services 10,1000,10000] [--duration SECS] [--rounds N]
//!     [--connections C] [--threads T] [--iperf SECS|0] [--out DIR] [--font TTF]
//!     [--iptables RESTORE-BINARY] [--dataplanes direct,ebpf,nftables,iptables]
//! e2e sync [--services 10000] [--reps N] [--out DIR]
//! ```
//!
//! `run` measures wrk latency/throughput and iperf3 throughput through every
//! variant (see `lb_benches::e2e`) and writes `results.md`, `samples.csv`
//! and `e2e.png` into `--out` (default `benches/e2e/results`). `sync` times
//! kube-proxy's full sync and one endpoint change with `iptables-restore`
//! (nft and legacy backends) and `nft -f` in an empty namespace and writes
//! `sync.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lb_benches::e2e::http::HttpServer;
use lb_benches::e2e::load::{self, WrkOptions, WrkResult};
use lb_benches::e2e::report::{self, Cell};
use lb_benches::e2e::scenario::{Scenario, IPERF_PORT};
use lb_benches::kubeproxy::{self, feed, iptables, nftables, ProxyConfig};
use lb_core::{DesiredState, NodeConfig, Reconciler};
use lb_ebpf::{EbpfDataplane, LoadOptions, MapCapacity};
use lb_testkit::{BpffsGuard, CgroupGuard, NetNs, Topology};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Backend namespaces; each serves HTTP on two ports: 10 endpoints.
const BACKEND_NS: usize = 5;
const HTTP_PORTS: [u16; 2] = [8080, 8081];
const CLUSTER_CIDR: &str = "10.0.0.0/8";
const SERVICE_CIDR: &str = "10.96.0.0/12";
const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

#[derive(Debug, Clone)]
struct Args {
    sync: bool,
    services: Vec<usize>,
    duration: Duration,
    rounds: usize,
    connections: u32,
    threads: u32,
    iperf: Duration,
    iptables: String,
    dataplanes: Vec<String>,
    reps: usize,
    out: PathBuf,
    font: PathBuf,
}

fn parse_args() -> Res<Args> {
    let mut a = Args {
        sync: false,
        services: vec![10, 1000, 10_000],
        duration: Duration::from_secs(5),
        rounds: 3,
        connections: 16,
        threads: 2,
        iperf: Duration::from_secs(3),
        iptables: "iptables-restore".into(),
        dataplanes: DATAPLANES.iter().map(|d| d.to_string()).collect(),
        reps: 5,
        out: PathBuf::from("benches/e2e/results"),
        font: PathBuf::from(DEFAULT_FONT),
    };
    let mut it = std::env::args().skip(1).peekable();
    match it.peek().map(String::as_str) {
        Some("sync") => {
            a.sync = true;
            a.services = vec![10_000];
            it.next();
        }
        Some("run") => {
            it.next();
        }
        _ => {}
    }
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--services" => {
                a.services = val()?
                    .split(',')
                    .map(|s| s.trim().parse())
                    .collect::<Result<_, _>>()?
            }
            "--duration" => a.duration = Duration::from_secs_f64(val()?.parse()?),
            "--rounds" => a.rounds = val()?.parse()?,
            "--connections" => a.connections = val()?.parse()?,
            "--threads" => a.threads = val()?.parse()?,
            "--iperf" => a.iperf = Duration::from_secs_f64(val()?.parse()?),
            "--iptables" => a.iptables = val()?,
            "--dataplanes" => {
                a.dataplanes = val()?.split(',').map(|d| d.trim().to_owned()).collect()
            }
            "--reps" => a.reps = val()?.parse()?,
            "--out" => a.out = val()?.into(),
            "--font" => a.font = val()?.into(),
            "-h" | "--help" => {
                println!("see the doc comment of benches/src/bin/e2e.rs");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if a.services.is_empty() || a.rounds == 0 {
        return Err("need at least one services count and one round".into());
    }
    Ok(a)
}

fn main() {
    lb_testkit::require_privileges();
    let result = parse_args().and_then(|a| if a.sync { sync(&a) } else { run(&a) });
    if let Err(e) = result {
        let mut msg = e.to_string();
        let mut src = e.source();
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        eprintln!("e2e: {msg}");
        std::process::exit(1);
    }
}

fn proxy_config(node: std::net::Ipv4Addr) -> ProxyConfig {
    ProxyConfig::new(CLUSTER_CIDR, SERVICE_CIDR, vec![node])
}

fn sh(ns: &NetNs, args: &[&str]) -> Res<()> {
    ns.exec_ok(args)?;
    Ok(())
}

/// The dataplanes in the order of round 0; later rounds rotate it.
const DATAPLANES: [&str; 4] = ["direct", "ebpf", "nftables", "iptables"];

struct Lab {
    topo: Topology,
    cgroup: CgroupGuard,
    bpffs: BpffsGuard,
    node_cfg: NodeConfig,
    proxy: ProxyConfig,
    script: PathBuf,
    iptables: String,
    real: Vec<SocketAddrV4>,
    _servers: Vec<HttpServer>,
    _iperf: lb_testkit::netns::ChildGuard,
}

impl Lab {
    fn new(a: &Args, tmp: &Path) -> Res<Lab> {
        let topo = Topology::new(BACKEND_NS)?;
        for ns in [&topo.client, &topo.node] {
            ns.set_sysctl("net.ipv4.ip_local_port_range", "1024 65000")?;
            ns.set_sysctl("net.ipv4.tcp_tw_reuse", "1")?;
        }
        // Node-local clients need a route for the service range before
        // netfilter's OUTPUT DNAT (a node has its default route for that).
        sh(
            &topo.node,
            &[
                "ip",
                "route",
                "add",
                SERVICE_CIDR,
                "via",
                &topo.backends[0].v4.to_string(),
            ],
        )?;
        let mut servers = Vec::new();
        let mut real = Vec::new();
        for b in &topo.backends {
            // The servers close first (`Connection: close`), so they hold
            // TIME_WAIT sockets; a load balancer that hands a tuple still
            // in TIME_WAIT to another flow costs the client a 1 s SYN
            // retransmit. Within a run they are left on: the SYN
            // retransmit column shows it (lb-ebpf reserves closed flows'
            // tuples through TIME_WAIT, `CtTimeouts::time_wait`). Between
            // runs they are removed (`forget_time_wait`).
            for port in HTTP_PORTS {
                let addr = SocketAddrV4::new(b.v4, port);
                let body = format!("pod {}:{port}\n", b.v4);
                let workers = a.connections as usize + 8;
                servers.push(HttpServer::start(&b.ns, addr.into(), &body, workers)?);
                real.push(addr);
            }
        }
        let iperf = topo.backends[0].ns.spawn(&[
            "iperf3",
            "-s",
            "-B",
            &topo.backends[0].v4.to_string(),
            "-p",
            &IPERF_PORT.to_string(),
        ])?;
        let node_cfg = NodeConfig::new("node-1", vec![topo.node_v4.into()]);
        let proxy = proxy_config(topo.node_v4);
        Ok(Lab {
            cgroup: CgroupGuard::with_label("e2e-sock")?,
            bpffs: BpffsGuard::new()?,
            script: load::write_script(tmp)?,
            iptables: a.iptables.clone(),
            node_cfg,
            proxy,
            real,
            _servers: servers,
            _iperf: iperf,
            topo,
        })
    }

    fn iperf_backend(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.topo.backends[0].v4, IPERF_PORT)
    }
}

/// A programmed dataplane; torn down by [`Active::teardown`].
enum Active {
    None,
    Ebpf { pin_dir: PathBuf },
    Iptables,
    Nftables,
}

fn setup(lab: &Lab, dp: &str, sc: &Scenario) -> Res<(Active, Duration)> {
    let node = &lab.topo.node;
    let start = Instant::now();
    let active = match dp {
        "direct" => Active::None,
        "ebpf" => {
            let pin_dir = lab.bpffs.pin_path("e2e");
            let mut opts = LoadOptions::new(&pin_dir, &[&lab.topo.node_client_dev])
                .with_cgroup(lab.cgroup.path());
            opts.capacity = MapCapacity {
                services: 262_144,
                backends: 131_072,
                rev_nat: 65_536,
                ..MapCapacity::default()
            };
            let loaded = node.run_in(|| lb_ebpf::load(&opts))??;
            let mut ebpf = EbpfDataplane::open(&pin_dir, &lab.node_cfg)?;
            let desired = DesiredState::build(&lab.node_cfg, &sc.services)?;
            Reconciler::new().apply(&mut ebpf, &desired)?;
            drop(ebpf);
            drop(loaded); // the programs stay attached through their pinned links
            Active::Ebpf { pin_dir }
        }
        "iptables" => {
            let ports = kubeproxy::service_ports(&sc.services)?;
            let full = iptables::full_sync(&lab.proxy, &ports);
            let mut restore = node.command(&lab.iptables);
            restore.args(["-w", "--noflush"]);
            feed(&mut restore, &iptables::jump_rules())?;
            let mut restore = node.command(&lab.iptables);
            restore.args(["-w", "--noflush"]);
            feed(&mut restore, &full)?;
            Active::Iptables
        }
        "nftables" => {
            let ports = kubeproxy::service_ports(&sc.services)?;
            let mut nft = node.command("nft");
            nft.args(["-f", "-"]);
            feed(&mut nft, &nftables::full_sync(&lab.proxy, &ports))?;
            Active::Nftables
        }
        other => return Err(format!("unknown dataplane {other}").into()),
    };
    Ok((active, start.elapsed()))
}

impl Active {
    /// Removes the dataplane; for eBPF, returns its drop counters.
    fn teardown(self, lab: &Lab) -> Res<Option<String>> {
        match self {
            Active::None => {}
            Active::Ebpf { pin_dir } => {
                // The datapath's drop counters of this round, for the record.
                let dp = EbpfDataplane::open(&pin_dir, &lab.node_cfg)?;
                let drops: Vec<String> = dp
                    .counters()?
                    .drops
                    .iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(r, n)| format!("{r:?}={n}"))
                    .collect();
                drop(dp);
                lb_ebpf::cleanup(&pin_dir)?;
                return Ok(Some(if drops.is_empty() {
                    "none".into()
                } else {
                    drops.join(", ")
                }));
            }
            // iptables-nft's tables are nftables tables of this namespace.
            Active::Iptables => {
                if lab.iptables.contains("legacy") {
                    for t in ["nat", "filter"] {
                        sh(&lab.topo.node, &["iptables-legacy", "-w", "-t", t, "-F"])?;
                        sh(&lab.topo.node, &["iptables-legacy", "-w", "-t", t, "-X"])?;
                    }
                }
                sh(&lab.topo.node, &["nft", "flush", "ruleset"])?
            }
            Active::Nftables => sh(
                &lab.topo.node,
                &["nft", "delete", "table", "ip", "kube-proxy"],
            )?,
        }
        Ok(None)
    }
}

/// (client, wrk dataplane label, target label, address, in cgroup)
fn cells(
    lab: &Lab,
    dp: &str,
    sc: &Scenario,
) -> Vec<(&'static str, &'static str, &'static str, SocketAddr, bool)> {
    let pod: SocketAddr = lab.real[0].into();
    let cip = sc.cluster_ip_addr();
    let np = SocketAddr::from((lab.topo.node_v4, sc.node_port));
    match dp {
        "direct" => vec![
            ("external", "direct", "pod-ip", pod, false),
            ("node-local", "direct", "pod-ip", pod, false),
        ],
        "ebpf" => vec![
            ("external", "ebpf-tc", "clusterip", cip, false),
            ("external", "ebpf-tc", "nodeport", np, false),
            ("node-local", "ebpf-sock", "clusterip", cip, true),
        ],
        "iptables" => vec![
            ("external", "iptables", "clusterip", cip, false),
            ("external", "iptables", "nodeport", np, false),
            ("node-local", "iptables", "clusterip", cip, false),
        ],
        _ => vec![
            ("external", "nftables", "clusterip", cip, false),
            ("external", "nftables", "nodeport", np, false),
            ("node-local", "nftables", "clusterip", cip, false),
        ],
    }
}

/// Destroys every TIME_WAIT socket of the lab's namespaces (`ss -K`,
/// SOCK_DESTROY), so that each wrk run starts as on fresh pods.
///
/// Every run programs a fresh dataplane (or a fresh cell of one) whose
/// conntrack knows nothing of the previous run, while the pods still hold
/// TIME_WAIT sockets for the tuples they saw in it. A client port reused
/// towards another frontend, or NATed differently, then lands on such a
/// socket and the SYN is answered with an ACK the client resets: a 1 s SYN
/// retransmit that belongs to the harness, not to the dataplane under test
/// (every load-balanced variant showed 300-1 800 of them per cell; the
/// direct one, whose tuples the client's own TIME_WAIT guards, none).
fn forget_time_wait(lab: &Lab) -> Res<()> {
    let namespaces = [&lab.topo.client, &lab.topo.node]
        .into_iter()
        .chain(lab.topo.backends.iter().map(|b| &b.ns));
    for ns in namespaces {
        sh(ns, &["ss", "-K", "-t", "state", "time-wait"])?;
    }
    Ok(())
}

/// The client namespace's `TcpExt: TCPSynRetrans` counter: connects that
/// stalled (wrk's latency does not include connection setup).
fn syn_retrans(ns: &NetNs) -> u64 {
    let Ok(out) = ns.exec(&["cat", "/proc/net/netstat"]) else {
        return 0;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    if lines.len() < 2 {
        return 0;
    }
    lines[0]
        .split_whitespace()
        .zip(lines[1].split_whitespace())
        .find(|(k, _)| *k == "TCPSynRetrans")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn uptime() -> String {
    Command::new("uptime")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn run(a: &Args) -> Res<()> {
    std::fs::create_dir_all(&a.out)?;
    report::register_font(&a.font)?;
    let tmp = std::env::temp_dir().join(format!("lb-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let lab = Lab::new(a, &tmp)?;
    let started = Instant::now();
    let load_before = uptime();
    let mut samples: Vec<(Cell, WrkResult)> = Vec::new();
    let mut iperf: BTreeMap<(usize, &'static str, &'static str), Vec<f64>> = BTreeMap::new();
    let mut setups: BTreeMap<(usize, &'static str), Vec<f64>> = BTreeMap::new();
    let mut ebpf_drops: Vec<String> = Vec::new();
    let mut retries: Vec<String> = Vec::new();
    let mut csv = String::from(
        "services,round,client,dataplane,target,mode,requests,rps,p50_us,p99_us,errors,syn_retransmits\n",
    );
    for &n in &a.services {
        let sc = Scenario::new(n, &lab.real, lab.iperf_backend());
        eprintln!(
            "e2e: {n} services (target svc-{}, NodePort {})",
            sc.target, sc.node_port
        );
        for round in 0..a.rounds {
            for k in 0..DATAPLANES.len() {
                let dp = DATAPLANES[(k + round) % DATAPLANES.len()];
                if !a.dataplanes.iter().any(|d| d == dp) {
                    continue;
                }
                let (active, took) = match setup(&lab, dp, &sc) {
                    Ok(x) => x,
                    Err(e) => {
                        // Seen once at 10k services under memory pressure
                        // from other builds (a BPF map update failed): clean
                        // up and try once more, on the record.
                        eprintln!("  setup of {dp} failed, retrying once: {e}");
                        retries.push(format!("{n} services, round {round}, {dp}: {e}"));
                        if dp == "ebpf" {
                            let _ = lb_ebpf::cleanup(&lab.bpffs.pin_path("e2e"));
                        } else {
                            let _ = sh(&lab.topo.node, &["nft", "flush", "ruleset"]);
                        }
                        setup(&lab, dp, &sc)?
                    }
                };
                setups.entry((n, dp)).or_default().push(took.as_secs_f64());
                let result = measure(
                    a,
                    &lab,
                    dp,
                    &sc,
                    n,
                    round,
                    &mut samples,
                    &mut iperf,
                    &mut csv,
                );
                if let Some(drops) = active.teardown(&lab)? {
                    eprintln!("  eBPF drop counters: {drops}");
                    ebpf_drops.push(format!("| {n} | {round} | {drops} |"));
                }
                result?;
                write_outputs(
                    a,
                    started,
                    &load_before,
                    &samples,
                    &iperf,
                    &setups,
                    &ebpf_drops,
                    &retries,
                    &csv,
                )?;
            }
        }
    }
    let md = write_outputs(
        a,
        started,
        &load_before,
        &samples,
        &iperf,
        &setups,
        &ebpf_drops,
        &retries,
        &csv,
    )?;
    println!("{md}");
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

/// Writes `results.md`, `samples.csv` and `e2e.png` from what was measured
/// so far (called after every round, so an interrupted run keeps its data).
#[allow(clippy::too_many_arguments)]
fn write_outputs(
    a: &Args,
    started: Instant,
    load_before: &str,
    samples: &[(Cell, WrkResult)],
    iperf: &BTreeMap<(usize, &'static str, &'static str), Vec<f64>>,
    setups: &BTreeMap<(usize, &'static str), Vec<f64>>,
    ebpf_drops: &[String],
    retries: &[String],
    csv: &str,
) -> Res<String> {
    let load_after = uptime();
    let summaries = report::summarize(samples);
    let iperf_rows: Vec<_> = iperf
        .iter()
        .map(|((n, c, d), v)| (*n, *c, *d, v.clone()))
        .collect();
    let mut md = String::new();
    let _ = writeln!(md, "# End-to-end results\n");
    let _ = writeln!(
        md,
        "Command: `e2e --services {} --duration {} --rounds {} --connections {} --threads {} --iperf {} --iptables {}`  ",
        a.services.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(","),
        a.duration.as_secs_f64(),
        a.rounds,
        a.connections,
        a.threads,
        a.iperf.as_secs_f64(),
        a.iptables
    );
    let _ = writeln!(md, "Wall time: {:.0} s  ", started.elapsed().as_secs_f64());
    let _ = writeln!(md, "Load before: `{load_before}`  ");
    let _ = writeln!(md, "Load after: `{load_after}`\n");
    md.push_str(&report::markdown(&summaries, &iperf_rows));
    md.push_str("\nProgramming time of each dataplane in this run (median over rounds, s; eBPF: load + attach + reconcile; iptables: jump rules + full `iptables-restore`; nftables: full `nft -f`):\n\n| services | dataplane | median s |\n|---:|---|---:|\n");
    for ((n, dp), v) in setups {
        if *dp != "direct" {
            let _ = writeln!(md, "| {n} | {dp} | {:.3} |", report::median(v));
        }
    }
    md.push_str("\nlb-ebpf drop counters after each eBPF round (all cells of the round):\n\n| services | round | drops |\n|---:|---:|---|\n");
    for row in ebpf_drops {
        md.push_str(row);
        md.push('\n');
    }
    if !retries.is_empty() {
        md.push_str("\nSetups that failed once and were retried:\n\n");
        for r in retries {
            let _ = writeln!(md, "- {r}");
        }
    }
    std::fs::write(a.out.join("results.md"), &md)?;
    std::fs::write(a.out.join("samples.csv"), csv)?;
    let title = format!(
        "HTTP through kube-proxy replacements, wrk -t{} -c{}, median of {} rounds",
        a.threads, a.connections, a.rounds
    );
    report::plot(&summaries, &a.out.join("e2e.png"), &title)?;
    Ok(md)
}

#[allow(clippy::too_many_arguments)]
fn measure(
    a: &Args,
    lab: &Lab,
    dp: &str,
    sc: &Scenario,
    n: usize,
    round: usize,
    samples: &mut Vec<(Cell, WrkResult)>,
    iperf: &mut BTreeMap<(usize, &'static str, &'static str), Vec<f64>>,
    csv: &mut String,
) -> Res<()> {
    for (client, label, target, addr, in_cg) in cells(lab, dp, sc) {
        let ns = if client == "external" {
            &lab.topo.client
        } else {
            &lab.topo.node
        };
        let cg = in_cg.then(|| lab.cgroup.path());
        for close in [false, true] {
            let opts = WrkOptions {
                threads: a.threads,
                connections: a.connections,
                duration: a.duration,
                close,
            };
            forget_time_wait(lab)?;
            let syn_before = syn_retrans(ns);
            let r = load::wrk(ns, cg, &lab.script, addr, &opts)?;
            let syn = syn_retrans(ns).saturating_sub(syn_before);
            let mode = if close { "new-conn" } else { "keep-alive" };
            eprintln!(
                "  round {round} {client:10} {label:9} {target:9} {mode:10} {:>9.0} req/s p50 {:>6.0} µs p99 {:>6.0} µs errors {} SYN retransmits {syn}",
                r.rps, r.p50_us, r.p99_us, r.errors
            );
            let _ = writeln!(
                csv,
                "{n},{round},{client},{label},{target},{mode},{},{:.1},{},{},{},{syn}",
                r.requests, r.rps, r.p50_us, r.p99_us, r.errors
            );
            samples.push((
                Cell {
                    services: n,
                    client,
                    dataplane: label,
                    target,
                    mode,
                },
                r,
            ));
        }
        // One iperf3 row per (client, dataplane): the ClusterIP of the
        // iperf service (direct: the iperf pod).
        if a.iperf > Duration::ZERO && (target != "nodeport") {
            let to: SocketAddr = if label == "direct" {
                lab.iperf_backend().into()
            } else {
                sc.iperf.into()
            };
            let gbps = load::iperf3(ns, cg, to, a.iperf)?;
            eprintln!("  round {round} {client:10} {label:9} iperf3 {gbps:.2} Gbit/s");
            iperf.entry((n, client, label)).or_default().push(gbps);
        }
    }
    Ok(())
}

/// Item 3: kube-proxy's sync cost for the same services, in an empty
/// namespace per repetition.
fn sync(a: &Args) -> Res<()> {
    std::fs::create_dir_all(&a.out)?;
    let mut md = String::new();
    let _ = writeln!(md, "# kube-proxy sync times\n");
    let _ = writeln!(
        md,
        "Command: `e2e sync --services {} --reps {}`  ",
        a.services
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(","),
        a.reps
    );
    let _ = writeln!(md, "Load before: `{}`\n", uptime());
    md.push_str("| services × backends | tool | operation | input lines | input MiB | median ms | min ms | max ms | reps |\n|---|---|---|---:|---:|---:|---:|---:|---:|\n");
    for &n in &a.services {
        let fake: Vec<SocketAddrV4> = (0..10)
            .map(|j| match lb_benches::backend_addr(n / 2, j, 10).addr {
                std::net::IpAddr::V4(ip) => SocketAddrV4::new(ip, 8080),
                _ => unreachable!(),
            })
            .collect();
        let sc = Scenario::new(
            n,
            &fake,
            SocketAddrV4::new("10.200.1.2".parse()?, IPERF_PORT),
        );
        let mut after = sc.services.clone();
        lb_benches::replace_backend(&mut after, sc.target, 3, 0);
        let before_ports = kubeproxy::service_ports(&sc.services)?;
        let after_ports = kubeproxy::service_ports(&after)?;
        let cfg = proxy_config("192.168.10.1".parse()?);
        let ipt_full = iptables::full_sync(&cfg, &before_ports);
        let stale = iptables::stale_chains(&before_ports, &after_ports);
        let t = sc.target;
        let ipt_partial = iptables::partial_sync(&cfg, &after_ports, &|i| i == t, &stale);
        let nft_full = nftables::full_sync(&cfg, &before_ports);
        let nft_ep = nftables::endpoint_change(&cfg, &before_ports[t], &after_ports[t]);
        let mut times: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
        for rep in 0..a.reps {
            for tool in ["iptables-restore", "iptables-legacy-restore", "nft"] {
                let ns = NetNs::with_label("kpsync")?;
                let cmd = |ns: &NetNs| {
                    let mut c = ns.command(tool);
                    if tool == "nft" {
                        c.args(["-f", "-"]);
                    } else {
                        c.args(["-w", "--noflush"]);
                    }
                    c
                };
                let (full, change) = if tool == "nft" {
                    (&nft_full, &nft_ep)
                } else {
                    feed(&mut cmd(&ns), &iptables::jump_rules())?;
                    (&ipt_full, &ipt_partial)
                };
                let t0 = Instant::now();
                feed(&mut cmd(&ns), full)?;
                let t_full = t0.elapsed();
                let t0 = Instant::now();
                feed(&mut cmd(&ns), change)?;
                let t_change = t0.elapsed();
                eprintln!(
                    "sync rep {rep} {tool}: full {:.1} ms, endpoint change {:.1} ms",
                    t_full.as_secs_f64() * 1e3,
                    t_change.as_secs_f64() * 1e3
                );
                times
                    .entry((tool, "full sync"))
                    .or_default()
                    .push(t_full.as_secs_f64() * 1e3);
                times
                    .entry((tool, "one endpoint change"))
                    .or_default()
                    .push(t_change.as_secs_f64() * 1e3);
                if tool != "nft" {
                    // Leave nothing behind in x_tables/nf_tables: the namespace goes.
                    let _ = ns.exec(&[tool.trim_end_matches("-restore"), "-w", "-t", "nat", "-F"]);
                }
                drop(ns);
            }
        }
        for ((tool, op), v) in &times {
            let text = match (*tool, *op) {
                ("nft", "full sync") => &nft_full,
                ("nft", _) => &nft_ep,
                (_, "full sync") => &ipt_full,
                _ => &ipt_partial,
            };
            let min = v.iter().copied().fold(f64::MAX, f64::min);
            let max = v.iter().copied().fold(f64::MIN, f64::max);
            let _ = writeln!(
                md,
                "| {n} × 10 | `{tool}` | {op} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
                text.lines().count(),
                text.len() as f64 / (1024.0 * 1024.0),
                report::median(v),
                min,
                max,
                v.len()
            );
        }
    }
    let _ = writeln!(md, "\nLoad after: `{}`", uptime());
    std::fs::write(a.out.join("sync.md"), &md)?;
    println!("{md}");
    Ok(())
}

#[allow(dead_code)]
fn _assert_io(_: io::Error) {}
