//! The command line: every subcommand and flag, parsed by clap (wrong flags
//! exit with code 2).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use lb_core::LbAlgorithm;

/// Default `--state-dir`.
pub const DEFAULT_STATE_DIR: &str = "/run/lb-agent";
/// Default `--bpffs`.
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf/lb";

/// `lb-agent`: the bundled node agent.
#[derive(Debug, Parser)]
#[command(
    name = "lb-agent",
    version,
    about = "An embeddable kube-proxy replacement's node agent",
    long_about = "An embeddable kube-proxy replacement's node agent: reads Kubernetes \
Service, EndpointSlice and Pod manifests and programs an eBPF load balancer \
(or, with `run --dataplane userspace`, the userspace one).\n\n\
Try `lb-agent demo` (as root) for a throw-away topology in network namespaces."
)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Output format of the query commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned text.
    Text,
    /// JSON.
    Json,
}

/// Which dataplane `run` programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DataplaneKind {
    /// tc programs and BPF maps (lb-ebpf).
    Ebpf,
    /// The userspace dataplane (lb-userspace): an I/O loop thread captures
    /// on the devices and re-injects rewritten packets.
    Userspace,
}

/// XDP acceleration of external service traffic (`--acceleration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Acceleration {
    /// Native XDP in the driver (veth, most physical NICs).
    Native,
    /// Generic XDP in the stack: any device, less gain.
    Generic,
    /// tc only.
    Disabled,
}

impl Acceleration {
    /// The XDP mode, `None` when disabled.
    pub fn xdp_mode(self) -> Option<lb_ebpf::xdp::XdpMode> {
        match self {
            Acceleration::Native => Some(lb_ebpf::xdp::XdpMode::Native),
            Acceleration::Generic => Some(lb_ebpf::xdp::XdpMode::Generic),
            Acceleration::Disabled => None,
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
pub enum Command {
    /// Run the agent in the current network namespace until SIGINT/SIGTERM.
    Run(RunArgs),
    /// Query the running agent's services.
    Service {
        /// What to do.
        #[command(subcommand)]
        command: ServiceCommand,
    },
    /// Show the running agent's KubeProxyReplacement status.
    Status(StatusArgs),
    /// Detach the programs and unpin every map recorded under --bpffs
    /// (idempotent; run it in the agent's network namespace).
    Cleanup(CleanupArgs),
    /// Build a throw-away topology in network namespaces, run the agent on it
    /// with the bundled manifests, send traffic to every frontend type and
    /// tear everything down (needs root).
    Demo(DemoArgs),
    /// Read manifests and print what would be programmed, without touching
    /// the system.
    Plan(PlanArgs),
    /// Attach the backend side of DSR (IPIP/IPv6-in-IPv6 decapsulation and reply
    /// translation) to a backend's device in the current network namespace
    /// and keep it attached until SIGINT/SIGTERM.
    DsrBackend(DsrBackendArgs),
    /// `GET /` and print the body, or the raw reply of a non-HTTP server
    /// (the demo's and tests' client when curl is missing or unsuitable).
    #[command(hide = true)]
    HttpGet {
        /// `ADDR:PORT`.
        addr: SocketAddr,
    },
}

/// Node settings shared by `run` and `plan`.
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// This node's addresses (NodePort and HostPort frontends), comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub node_ip: Vec<IpAddr>,
    /// This node's name (traffic policy Local, HostPort pods) [default: the hostname].
    #[arg(long)]
    pub node_name: Option<String>,
    /// Backend selection algorithm.
    #[arg(long, default_value = "random", value_parser = parse_algorithm)]
    pub backend_selection: LbAlgorithm,
    /// Maglev table size (a prime Cilium accepts, e.g. 251, 509, 1021, 16381).
    #[arg(long, default_value_t = 16381)]
    pub maglev_table_size: u32,
    /// NodePort range, `FIRST-LAST`.
    #[arg(long, default_value = "30000-32767", value_parser = parse_range)]
    pub nodeport_range: (u16, u16),
    /// Maglev hash seed, like Cilium's `maglev.hashSeed`: any string (e.g.
    /// 12 random bytes in base64), the same on every node so that all pick
    /// the same backend for a flow. The u32 seed is derived from it by
    /// `lb_core::MaglevConfig::seed_from_str`; empty or absent means 0.
    #[arg(long, default_value = "")]
    pub maglev_hash_seed: String,
    /// This node's topology zone (the value of its
    /// `topology.kubernetes.io/zone` label), for topology-aware routing
    /// (EndpointSlice zone hints, trafficDistribution: PreferClose and
    /// PreferSameNode's zone fallback).
    /// Without it, topology-aware routing is off.
    #[arg(long)]
    pub zone: Option<String>,
    /// Load-balancer mode, as Cilium's --bpf-lb-mode: `snat`, `dsr` (IPIP,
    /// IPv6-in-IPv6 for IPv6, to remote backends, which answer clients directly; run
    /// `lb-agent dsr-backend` on each backend's device) or `hybrid` (DSR
    /// for TCP, SNAT for UDP).
    #[arg(long, default_value = "snat", value_parser = parse_mode)]
    pub mode: lb_core::LbMode,
    /// NAT46/64 for services, like Cilium's NAT46/64 support: a frontend
    /// whose service has no backend of its own IP family is served by the
    /// backends of the other family, translated (an IPv4 ClusterIP in front
    /// of IPv6-only pods, or the reverse), SNATed to the node's address of
    /// the backend's family. Needs a --node-ip of each family. With
    /// --dataplane ebpf the backends' replies must arrive through a
    /// --device (list the devices towards local backends too). Off by
    /// default.
    #[arg(long)]
    pub enable_nat46x64: bool,
}

/// `lb-agent run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Directory of Service / EndpointSlice / Pod manifests (*.yaml, *.yml,
    /// *.json), watched for changes.
    #[arg(
        long,
        required_unless_present_any = ["kubeconfig", "in_cluster"],
        conflicts_with_all = ["kubeconfig", "in_cluster"]
    )]
    pub manifests: Option<PathBuf>,
    /// Watch an API server instead (Services, EndpointSlices, this node's
    /// Pods), with the credentials of this kubeconfig file.
    #[arg(long, conflicts_with = "in_cluster")]
    pub kubeconfig: Option<PathBuf>,
    /// Watch the API server of the cluster this agent runs in, with the pod's
    /// service account (KUBERNETES_SERVICE_HOST/PORT and the mounted token).
    #[arg(long)]
    pub in_cluster: bool,
    /// Node settings.
    #[command(flatten)]
    pub node: NodeArgs,
    /// Client-facing devices to attach the tc programs to (userspace: to
    /// capture client traffic on), comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub device: Vec<String>,
    /// `--dataplane userspace` only: backend-facing devices, comma-separated,
    /// whose frames get reverse NAT (replies of backends). Default: every
    /// other up, non-loopback Ethernet device of the namespace. A device
    /// also named in --device is one-armed (clients and backends behind
    /// one link, as in DSR setups).
    #[arg(long, value_delimiter = ',')]
    pub backend_device: Vec<String>,
    /// cgroup v2 directory for socket LB; without it socket LB is off. The
    /// root cgroup is refused.
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
    /// Dataplane: `ebpf` (tc programs, pinned maps), or `userspace`
    /// (lb-userspace: AF_PACKET capture on --device and --backend-device, a
    /// TCX program dropping the originals, rewritten packets re-injected
    /// through a raw socket; IPv4, IPv6 and NAT46/64, no socket LB, no pins: its state
    /// goes with the process).
    #[arg(long, value_enum, default_value = "ebpf")]
    pub dataplane: DataplaneKind,
    /// Agent state: the API socket `agent.sock` and the table snapshot.
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Pin directory for maps and links (a bpffs is mounted there if needed).
    #[arg(long, default_value = DEFAULT_BPFFS)]
    pub bpffs: PathBuf,
    /// Serve Prometheus metrics (OpenMetrics text) on `http://ADDR/metrics`.
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
    /// XDP acceleration on every --device: NodePort, LoadBalancer and
    /// ExternalIP traffic to remote backends is forwarded at XDP (`native`
    /// in the driver, `generic` in the stack) over the same maps; tc handles
    /// the rest. `--dataplane ebpf` only.
    #[arg(long, value_enum, default_value = "disabled")]
    pub acceleration: Acceleration,
    /// BPF map sizes.
    #[command(flatten)]
    pub maps: crate::map_sizes::MapSizeArgs,
}

/// `lb-agent service ...`.
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Print what is programmed, shaped like `cilium service list`.
    List(ListArgs),
}

/// `lb-agent service list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The agent's state directory.
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: Output,
}

/// `lb-agent status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The agent's state directory.
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Show details: map pressure, drop counters, devices.
    #[arg(short, long)]
    pub verbose: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: Output,
}

/// `lb-agent cleanup`.
#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// The agent's state directory (its snapshot and socket are removed).
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// The pin directory the agent used.
    #[arg(long, default_value = DEFAULT_BPFFS)]
    pub bpffs: PathBuf,
}

/// `lb-agent demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Manifest directory to use instead of the bundled one.
    #[arg(long)]
    pub manifests: Option<PathBuf>,
    /// Requests per frontend.
    #[arg(long, default_value_t = 6)]
    pub requests: usize,
    /// Send requests with the built-in HTTP client instead of curl (the
    /// default when curl is not installed).
    #[arg(long)]
    pub no_curl: bool,
}

/// `lb-agent plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Directory of Service / EndpointSlice / Pod manifests.
    #[arg(long)]
    pub manifests: PathBuf,
    /// Node settings.
    #[command(flatten)]
    pub node: NodeArgs,
    /// Print the dataplane operations too.
    #[arg(long)]
    pub ops: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: Output,
    /// Say which objects were read from which file.
    #[arg(short, long)]
    pub verbose: bool,
}

impl NodeArgs {
    /// The lb-core node configuration these flags describe.
    pub fn node_config(&self) -> Result<lb_core::NodeConfig, String> {
        let name = match &self.node_name {
            Some(n) => n.clone(),
            None => hostname(),
        };
        let mut node = lb_core::NodeConfig::new(name, self.node_ip.clone());
        node.algorithm = self.backend_selection;
        node.nodeport_range = self.nodeport_range.0..=self.nodeport_range.1;
        node.maglev = lb_core::MaglevConfig::new(
            self.maglev_table_size,
            lb_core::MaglevConfig::seed_from_str(&self.maglev_hash_seed),
        )
        .map_err(|e| format!("--maglev-table-size: {e}"))?;
        node.zone = self.zone.clone().filter(|z| !z.is_empty());
        node.mode = self.mode;
        node.nat46x64 = self.enable_nat46x64;
        Ok(node)
    }
}

/// The kernel's host name (`uname -n`), or `localhost`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn parse_mode(s: &str) -> Result<lb_core::LbMode, String> {
    s.parse().map_err(|e: lb_core::UnknownMode| e.to_string())
}

fn parse_algorithm(s: &str) -> Result<LbAlgorithm, String> {
    s.parse()
}

/// Parses `FIRST-LAST` into a port range.
pub fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?}: expected FIRST-LAST"))?;
    let a: u16 = a.parse().map_err(|_| format!("{a:?} is not a port"))?;
    let b: u16 = b.parse().map_err(|_| format!("{b:?} is not a port"))?;
    if a == 0 || a > b {
        return Err(format!("{s:?} is not a valid range"));
    }
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_flags_parse_with_lists_and_defaults() {
        let cli = Cli::try_parse_from([
            "lb-agent",
            "run",
            "--manifests",
            "/m",
            "--node-ip",
            "192.168.10.1,10.0.0.1",
            "--device",
            "eth0,eth1",
            "--backend-selection",
            "maglev",
            "--nodeport-range",
            "30000-30100",
        ])
        .unwrap();
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        assert_eq!(r.manifests, Some(PathBuf::from("/m")));
        assert_eq!(r.node.node_ip.len(), 2);
        assert_eq!(r.device, ["eth0", "eth1"]);
        assert_eq!(r.node.backend_selection, LbAlgorithm::Maglev);
        assert_eq!(r.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(r.bpffs, PathBuf::from(DEFAULT_BPFFS));
        assert_eq!(r.dataplane, DataplaneKind::Ebpf);
        assert!(r.backend_device.is_empty());
        let node = r.node.node_config().unwrap();
        assert_eq!(node.nodeport_range, 30000..=30100);
        assert_eq!(node.maglev.seed(), 0);
        assert_eq!(node.zone, None);
    }

    #[test]
    fn maglev_hash_seed_and_zone() {
        let parse = |seed: &str| {
            let cli = Cli::try_parse_from([
                "lb-agent",
                "plan",
                "--manifests",
                "/m",
                "--node-ip",
                "192.168.10.1",
                "--maglev-hash-seed",
                seed,
                "--zone",
                "zone-a",
            ])
            .unwrap();
            let Command::Plan(p) = cli.command else {
                panic!("not plan")
            };
            p.node.node_config().unwrap()
        };
        let a = parse("JLfvgnHc2kaSUFaI");
        assert_eq!(a.maglev.seed(), parse("JLfvgnHc2kaSUFaI").maglev.seed());
        assert_ne!(a.maglev.seed(), parse("other").maglev.seed());
        assert_ne!(a.maglev.seed(), 0);
        assert_eq!(a.zone.as_deref(), Some("zone-a"));
    }

    #[test]
    fn mode_flag_sets_the_node_mode() {
        let parse = |extra: &[&str]| {
            let mut args = vec![
                "lb-agent",
                "run",
                "--manifests",
                "/m",
                "--node-ip",
                "10.0.0.1",
                "--device",
                "eth0",
            ];
            args.extend_from_slice(extra);
            let Command::Run(r) = Cli::try_parse_from(args)?.command else {
                panic!("not run")
            };
            Ok::<_, clap::Error>(r.node.node_config().unwrap().mode)
        };
        assert_eq!(parse(&[]).unwrap(), lb_core::LbMode::Snat);
        assert_eq!(parse(&["--mode", "dsr"]).unwrap(), lb_core::LbMode::Dsr);
        assert_eq!(
            parse(&["--mode", "hybrid"]).unwrap(),
            lb_core::LbMode::Hybrid
        );
        assert!(parse(&["--mode", "ipip"]).is_err());
        let Command::Run(r) = Cli::try_parse_from([
            "lb-agent",
            "run",
            "--manifests",
            "/m",
            "--node-ip",
            "10.0.0.1,fd00::1",
            "--device",
            "eth0",
            "--enable-nat46x64",
        ])
        .unwrap()
        .command
        else {
            panic!("not run")
        };
        assert!(r.node.node_config().unwrap().nat46x64);
        let cli = Cli::try_parse_from([
            "lb-agent",
            "dsr-backend",
            "--device",
            "eth0",
            "--lb-nodes",
            "10.0.1.2,10.0.2.2",
        ])
        .unwrap();
        assert!(
            matches!(cli.command, Command::DsrBackend(a) if a.device == "eth0" && a.lb_nodes.len() == 2)
        );
        assert!(Cli::try_parse_from(["lb-agent", "dsr-backend", "--device", "eth0"]).is_err());
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        for args in [
            &["lb-agent", "run", "--manifests", "/m"][..],
            &[
                "lb-agent",
                "run",
                "--manifests",
                "/m",
                "--node-ip",
                "nope",
                "--device",
                "x",
            ],
            &["lb-agent", "service", "list", "-o", "yaml"],
            &[
                "lb-agent",
                "plan",
                "--manifests",
                "/m",
                "--node-ip",
                "1.2.3.4",
                "--nodeport-range",
                "5-1",
            ],
        ] {
            let e = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
    }
}

/// `lb-agent dsr-backend`.
#[derive(Debug, Clone, Args)]
pub struct DsrBackendArgs {
    /// The device the backend receives DSR traffic on.
    #[arg(long)]
    pub device: String,
    /// The load-balancing nodes' addresses (the outer source of their IPIP
    /// packets: each node's first IPv4 --node-ip, and its first IPv6 one
    /// for IPv6-in-IPv6), comma-separated or repeated. Packets from any
    /// other source are dropped and counted.
    #[arg(long, value_delimiter = ',', required = true)]
    pub lb_nodes: Vec<std::net::IpAddr>,
}
