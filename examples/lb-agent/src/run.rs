//! `lb-agent run`: load the eBPF dataplane (or start the userspace one) in
//! the current network namespace, program the manifest directory, keep it in
//! sync with every change, answer API queries, and exit on SIGINT/SIGTERM
//! (eBPF: leaving the pins in place; userspace: stopping the I/O loop, which
//! detaches its drop programs).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lb_agent::capacity::MapLimits;
use lb_core::{Dataplane, LbAlgorithm, NodeConfig, Reconciler};
use lb_ebpf::{EbpfDataplane, LoadOptions, MapCapacity};
use tokio::signal::unix::{signal, SignalKind};

use crate::answers::{Answer, Answerer, Shared};
use crate::api::{self, Request, Response};
use crate::cli::{DataplaneKind, RunArgs};
use crate::kube_source::KubeSource;
use crate::metrics::{self, FrontendStats};
use crate::service_list;
use crate::sources::Sources;
use crate::state;
use crate::status::{MapFill, Status, SyncInfo};
use crate::userspace::{self, Userspace};
use crate::watch;

/// How long events are coalesced before the directory is re-read.
const SETTLE: Duration = Duration::from_millis(100);
/// Periodic re-read, in case an event was missed.
const RESYNC: Duration = Duration::from_secs(10);
/// How long an API query waits for a busy agent before it is answered
/// from the last sync's answers.
const API_WAIT: Duration = Duration::from_millis(200);
/// How long it waits when no earlier answer exists (under the client's 5 s).
const API_WAIT_UNCACHED: Duration = Duration::from_secs(4);
/// How often expired connection-tracking, SNAT and affinity entries of the
/// eBPF dataplane are removed (the userspace I/O loop expires its own).
const GC: Duration = Duration::from_secs(30);

/// An error that ends `run`, already worded for the user.
pub type RunError = String;

/// The dataplane `run` programs.
enum Dp {
    /// tc programs and pinned BPF maps.
    Ebpf(Box<EbpfDataplane>),
    /// lb-userspace and its I/O loop.
    Userspace(Userspace),
}

impl Dp {
    fn as_dataplane(&mut self) -> &mut dyn Dataplane {
        match self {
            Dp::Ebpf(d) => &mut **d,
            Dp::Userspace(u) => &mut u.dp,
        }
    }
}

/// The running agent: the dataplane, the reconciler and what was last done.
pub struct Agent {
    args: RunArgs,
    node: NodeConfig,
    dp: Dp,
    rec: Reconciler,
    sources: Sources,
    sync: SyncInfo,
    reported: BTreeSet<String>,
    socket_lb: String,
    kube: Option<KubeSource>,
    /// Where the zone in `node` came from (flag or Node label).
    zone_source: Option<crate::sources::ZoneSource>,
}

/// Checks `--cgroup`: an existing cgroup v2 directory that is not the root.
fn check_cgroup(path: &Path) -> Result<(), RunError> {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    let on_cgroup2 = |p: &Path| -> Result<bool, String> {
        let c =
            std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
        // SAFETY: valid NUL-terminated path; `st` is written by the kernel.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        #[allow(clippy::unnecessary_cast)]
        Ok(st.f_type as i64 == CGROUP2_SUPER_MAGIC)
    };
    let p = path
        .canonicalize()
        .map_err(|e| format!("--cgroup {}: {e}", path.display()))?;
    if !on_cgroup2(&p).map_err(|e| format!("--cgroup {}: {e}", p.display()))? {
        return Err(format!(
            "--cgroup {}: not a cgroup v2 directory",
            p.display()
        ));
    }
    let parent_is_cgroup = p
        .parent()
        .map(|q| on_cgroup2(q).unwrap_or(false))
        .unwrap_or(false);
    if !parent_is_cgroup {
        return Err(format!(
            "--cgroup {}: refusing the root cgroup (socket LB would apply to every process); \
             pass a child cgroup",
            p.display()
        ));
    }
    Ok(())
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Agent {
    /// Checks flags, privileges and directories (cheap; before the API is up).
    pub fn precheck(args: &RunArgs) -> Result<(), RunError> {
        let userspace = args.dataplane == DataplaneKind::Userspace;
        if userspace && args.cgroup.is_some() {
            return Err(
                "--cgroup: socket LB is not available with the userspace dataplane \
                        (use --dataplane ebpf, or drop --cgroup)"
                    .into(),
            );
        }
        if !userspace && !args.backend_device.is_empty() {
            return Err("--backend-device is for --dataplane userspace only".into());
        }
        if userspace && args.acceleration != crate::cli::Acceleration::Disabled {
            return Err("--acceleration: XDP needs --dataplane ebpf".into());
        }
        if let Some(cg) = &args.cgroup {
            check_cgroup(cg)?;
        }
        let node = args.node.node_config()?;
        let has = |v4: bool| node.node_ips.iter().any(|ip| ip.is_ipv4() == v4);
        if node.nat46x64 && !(has(true) && has(false)) {
            return Err("--enable-nat46x64 needs a --node-ip of each family \
                        (IPv4 and IPv6): translated flows are SNATed to the \
                        node address of the backend's family"
                .into());
        }
        if let Some(m) = &args.manifests {
            if !m.is_dir() {
                return Err(format!("--manifests {}: not a directory", m.display()));
            }
        }
        if !state::is_root() {
            return Err(if userspace {
                "lb-agent run needs root (CAP_NET_RAW for the packet sockets, \
                 CAP_BPF and CAP_NET_ADMIN for the TCX drop programs)"
            } else {
                "lb-agent run needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN \
                        to load and attach BPF programs)"
            }
            .into());
        }
        state::prepare_state_dir(&args.state_dir).map_err(|e| e.to_string())?;
        if userspace {
            return Ok(());
        }
        state::check_private_dir(&args.bpffs).map_err(|e| e.to_string())
    }

    /// Starts the userspace dataplane and its I/O loop (after
    /// [`Agent::precheck`]); it starts empty, the first sync programs it.
    fn start_userspace(args: RunArgs, kube: Option<KubeSource>) -> Result<Agent, RunError> {
        let node = args.node.node_config()?;
        let backend = if args.backend_device.is_empty() {
            userspace::derive_backend_devices(&args.device)
        } else {
            args.backend_device.clone()
        };
        let us = Userspace::start(node.clone(), &args.device, &backend)?;
        tracing::info!(
            client_devices = %args.device.join(","),
            backend_devices = %backend.join(","),
            node = %node.node_name,
            "userspace dataplane started (I/O loop running)"
        );
        Ok(Agent::new(
            args,
            kube,
            node,
            Dp::Userspace(us),
            Reconciler::new(),
            "Not available with the userspace dataplane".into(),
            None,
        ))
    }

    fn new(
        args: RunArgs,
        kube: Option<KubeSource>,
        node: NodeConfig,
        dp: Dp,
        rec: Reconciler,
        socket_lb: String,
        limits: Option<MapLimits>,
    ) -> Agent {
        let sources = Sources::new(
            args.manifests.clone().unwrap_or_else(|| "kube".into()),
            node.clone(),
        );
        // Both dataplanes serve both families (lb-ebpf: the lb6_* maps).
        Agent {
            sources: match limits {
                Some(l) => sources.with_limits(l),
                None => sources,
            },
            kube,
            args,
            node,
            dp,
            rec,
            sync: SyncInfo::default(),
            reported: BTreeSet::new(),
            socket_lb,
            zone_source: None,
        }
    }

    /// Stops the dataplane's own threads (userspace: the I/O loop; eBPF:
    /// nothing, the pinned programs keep working).
    pub fn shutdown(&mut self) {
        if let Dp::Userspace(u) = &mut self.dp {
            if let Some(stats) = u.stop() {
                tracing::info!(
                    received = stats.received,
                    sent = stats.sent,
                    dropped = stats.dropped,
                    send_errors = stats.send_errors,
                    "userspace I/O loop stopped"
                );
            }
        }
    }

    /// Loads and attaches the dataplane and reopens what a previous run left
    /// pinned (after [`Agent::precheck`]).
    pub fn start(args: RunArgs, kube: Option<KubeSource>) -> Result<Agent, RunError> {
        if args.dataplane == DataplaneKind::Userspace {
            return Self::start_userspace(args, kube);
        }
        let node = args.node.node_config()?;
        // Like Cilium: the standard bpffs is mounted when the system has not.
        let std_bpffs = Path::new("/sys/fs/bpf");
        if args.bpffs.starts_with(std_bpffs) && !args.bpffs.exists() {
            lb_ebpf::loader::ensure_bpffs(std_bpffs)
                .map_err(|e| format!("mounting a bpffs on {}: {e}", std_bpffs.display()))?;
        }
        let maps_dir = lb_ebpf::loader::maps_dir(&args.bpffs);
        let had_pins = std::fs::read_dir(&maps_dir).is_ok_and(|mut d| d.next().is_some());
        let mut opts = LoadOptions::new(&args.bpffs, &[]);
        opts.interfaces = args.device.clone();
        opts.capacity = args.maps.capacity();
        opts.cgroup = args.cgroup.clone();
        let loaded = lb_ebpf::load(&opts).map_err(|e| {
            format!(
                "loading the eBPF dataplane (pins under {}): {e}",
                args.bpffs.display()
            )
        })?;
        let socket_lb = match (&args.cgroup, loaded.has_socket_lb()) {
            // Cilium's "Socket LB: Enabled", with what it covers.
            (Some(cg), true) => format!(
                "Enabled (cgroup {}; protocols TCP, UDP; IPv4, IPv6; hooks {})",
                cg.display(),
                lb_ebpf::SOCK_HOOKS.join(", ")
            ),
            _ => "Disabled (no --cgroup)".to_string(),
        };
        // XDP in front of tc on the same devices, or none (a previous run's
        // links are detached when acceleration is now disabled).
        match args.acceleration.xdp_mode() {
            Some(mode) => {
                lb_ebpf::xdp::attach(&args.bpffs, &args.device, mode, &opts.capacity).map_err(
                    |e| {
                        format!(
                            "--acceleration {mode}: attaching XDP to {:?}: {e}",
                            args.device
                        )
                    },
                )?;
            }
            None => lb_ebpf::xdp::detach(&args.bpffs)
                .map_err(|e| format!("detaching a previous run's XDP programs: {e}"))?,
        }
        drop(loaded); // the links are pinned; the maps are reopened below
        state::make_private(&args.bpffs).map_err(|e| e.to_string())?;
        let mut dp = EbpfDataplane::open(&args.bpffs, &node)
            .map_err(|e| format!("opening the pinned maps: {e}"))?;
        let limits = map_limits(&mut dp, &opts.capacity);

        let rec = if had_pins {
            match dp.restore() {
                Ok(tables) => {
                    tracing::info!(
                        frontends = tables.frontends.len(),
                        backends = tables.backends.len(),
                        "reopened the pinned maps; restored the programmed state from them"
                    );
                    Reconciler::with_tables(tables)
                }
                Err(e) => {
                    tracing::warn!(
                        "could not restore the programmed state from the pinned maps ({e}): \
                         reprogramming every entry; entries of services deleted meanwhile \
                         stay until `lb-agent cleanup`"
                    );
                    Reconciler::new()
                }
            }
        } else {
            Reconciler::new()
        };
        tracing::info!(
            devices = %args.device.join(","),
            bpffs = %args.bpffs.display(),
            node = %node.node_name,
            "eBPF dataplane attached"
        );
        Ok(Agent::new(
            args,
            kube,
            node,
            Dp::Ebpf(Box::new(dp)),
            rec,
            socket_lb,
            Some(limits),
        ))
    }

    /// Removes expired flow state from the eBPF maps.
    pub fn gc(&mut self) {
        if let Dp::Ebpf(d) = &mut self.dp {
            match d.gc(lb_ebpf::now_secs()) {
                Ok(stats) => tracing::debug!(?stats, "gc"),
                Err(e) => tracing::warn!("gc: {e}"),
            }
        }
    }

    /// Re-reads the manifests and applies the difference.
    pub fn sync(&mut self) {
        let start = Instant::now();
        let pass = match &self.kube {
            Some(k) => self.sources.pass_loaded(k.objects()),
            None => self.sources.pass(),
        };
        let result = pass.and_then(|pass| {
            let problems: BTreeSet<String> = pass.problems.iter().cloned().collect();
            for p in problems.difference(&self.reported) {
                tracing::warn!("{p}");
            }
            self.reported = problems;
            let n = apply_in_steps(&mut self.rec, self.dp.as_dataplane(), &self.node, &pass)
                .map_err(|e| {
                    format!("programming the dataplane: {e} (the last good state stays)")
                })?;
            Ok((n, pass))
        });
        self.sync.count += 1;
        self.sync.last_unix = now_unix();
        self.sync.duration_us = start.elapsed().as_micros() as u64;
        match result {
            Ok((n, pass)) => {
                if n > 0 {
                    tracing::info!(
                        ops = n,
                        services = pass.services,
                        frontends = self.rec.current().frontends.len(),
                        backends = self.rec.current().backends.len(),
                        "applied"
                    );
                }
                self.sync.ops = n;
                if self.node.zone.as_ref() != pass.zone.as_ref().map(|(z, _)| z) {
                    tracing::info!(zone = ?pass.zone, "topology zone");
                }
                self.zone_source = pass.zone.as_ref().map(|(_, src)| *src);
                self.node.zone = pass.zone.map(|(z, _)| z);
                self.sync.problems = pass.problems;
                self.sync.error = None;
            }
            Err(e) => {
                if self.sync.error.as_ref() != Some(&e) {
                    tracing::error!("{e}");
                }
                self.sync.error = Some(e);
            }
        }
    }
}

impl Answer for Agent {
    /// Answers an API query.
    fn answer(&mut self, req: Request) -> Response {
        match req {
            Request::ServiceList => Response::ServiceList(service_list::rows(self.rec.current())),
            Request::Status => Response::Status(Box::new(self.status())),
        }
    }
}

impl Agent {
    fn map_fill(&mut self) -> Vec<MapFill> {
        use lb_ebpf::abi::*;
        let Dp::Ebpf(dp) = &mut self.dp else {
            return Vec::new();
        };
        // The counter arrays' entries in use: the slots handed out.
        let (svc_slots, be_slots) = dp.counter_slots_used();
        let m = dp.maps();
        let counts = [
            (MAP_SERVICES, m.services.keys().count()),
            (MAP_SERVICES6, m.services6.keys().count()),
            (MAP_BACKENDS, m.backends.keys().count()),
            (MAP_BACKENDS6, m.backends6.keys().count()),
            (MAP_REV_NAT, m.rev_nat.keys().count()),
            (MAP_REV_NAT6, m.rev_nat6.keys().count()),
            (MAP_CT, m.ct.keys().count()),
            (MAP_CT6, m.ct6.keys().count()),
            (MAP_AFFINITY, m.affinity.keys().count()),
            (MAP_AFFINITY6, m.affinity6.keys().count()),
            (MAP_MAGLEV, m.maglev.keys().count()),
            (MAP_SRC_RANGE, m.src_range.keys().count()),
            (MAP_SRC_RANGE6, m.src_range6.keys().count()),
            (MAP_SOCK_REV, m.sock_rev.keys().count()),
            (MAP_SOCK_REV6, m.sock_rev6.keys().count()),
            (MAP_SNAT, m.snat.keys().count()),
            (MAP_SNAT6, m.snat6.keys().count()),
            (MAP_SVC_STATS, svc_slots),
            (MAP_BE_STATS, be_slots),
            (MAP_SVC_META, m.svc_meta.keys().count()),
            (MAP_BE_META, m.be_meta.keys().count()),
        ];
        counts
            .into_iter()
            .map(|(name, n)| MapFill {
                name: name.to_string(),
                entries: n as u64,
                capacity: u64::from(m.capacity(name).unwrap_or(0)),
            })
            .collect()
    }

    /// The Prometheus metrics text.
    pub fn metrics(&mut self) -> String {
        let status = self.status();
        // (packets, bytes, new flows) per service ID.
        let counters: std::collections::BTreeMap<lb_core::ServiceId, (u64, u64, u64)> =
            match &self.dp {
                Dp::Ebpf(dp) => dp
                    .counters()
                    .unwrap_or_default()
                    .services
                    .iter()
                    .map(|(id, c)| (*id, (c.packets, c.bytes, c.new_flows)))
                    .collect(),
                Dp::Userspace(u) => {
                    u.dp.counters()
                        .services()
                        .into_iter()
                        .map(|(id, c)| (id, (c.packets, c.bytes, c.new_flows)))
                        .collect()
                }
            };
        let t = self.rec.current();
        let frontends: Vec<FrontendStats> = t
            .frontends
            .values()
            .map(|fe| {
                let (packets, bytes, flows) = counters.get(&fe.id).copied().unwrap_or_default();
                FrontendStats {
                    frontend: fe.key.addr.to_string(),
                    kind: fe.kind.as_str().to_string(),
                    service: fe.service.to_string(),
                    packets,
                    bytes,
                    flows,
                }
            })
            .collect();
        metrics::render(&status, &frontends)
    }

    /// The status report.
    pub fn status(&mut self) -> Status {
        let t = self.rec.current();
        let services: BTreeSet<_> = t.frontends.values().map(|f| &f.service).collect();
        let (services, frontends, backends) = (services.len(), t.frontends.len(), t.backends.len());
        let drops = match &self.dp {
            Dp::Ebpf(dp) => match dp.counters() {
                Ok(c) => c
                    .drops
                    .iter()
                    .map(|(r, n)| (format!("{r:?}"), *n))
                    .collect(),
                Err(e) => vec![(format!("unreadable: {e}"), 0)],
            },
            Dp::Userspace(u) => lb_userspace::DropKind::ALL
                .iter()
                .map(|r| (format!("{r:?}"), u.dp.counters().drops(*r)))
                .collect(),
        };
        let (dataplane, devices, bpffs) = match &self.dp {
            Dp::Ebpf(_) => (
                "eBPF (tc ingress/egress, TCX links)".to_string(),
                self.args.device.clone(),
                self.args.bpffs.display().to_string(),
            ),
            Dp::Userspace(u) => (
                "userspace (lb-userspace: AF_PACKET capture, TCX drop of the originals, \
                 raw-socket re-injection; one I/O thread)"
                    .to_string(),
                u.devices
                    .iter()
                    .map(|d| match d.role {
                        lb_userspace::io::Role::Client => d.name.clone(),
                        lb_userspace::io::Role::Backend => format!("{} (backend)", d.name),
                        lb_userspace::io::Role::OneArmed => {
                            format!("{} (clients and backends)", d.name)
                        }
                    })
                    .collect(),
                "none (userspace dataplane)".to_string(),
            ),
        };
        let maps = self.map_fill();
        let node = &self.node;
        Status {
            version: env!("CARGO_PKG_VERSION").into(),
            node_name: node.node_name.clone(),
            node_ips: node.node_ips.iter().map(|i| i.to_string()).collect(),
            dataplane,
            devices,
            socket_lb: self.socket_lb.clone(),
            mode: match node.mode {
                lb_core::LbMode::Snat => {
                    "SNAT (to the node IP for remote backends; node-local backends see the client)"
                        .into()
                }
                lb_core::LbMode::Dsr => "DSR (IPIP, IPv6-in-IPv6 for IPv6, to remote backends, \
                                         which answer clients directly; ClusterIP and \
                                         node-local backends as SNAT)"
                    .into(),
                lb_core::LbMode::Hybrid => "Hybrid (DSR with IPIP or IPv6-in-IPv6 for TCP, SNAT \
                                            for UDP; ClusterIP as SNAT)"
                    .into(),
            },
            backend_selection: match node.algorithm {
                LbAlgorithm::Random => "Random".into(),
                LbAlgorithm::Maglev => format!(
                    "Maglev (table size {}, seed {})",
                    node.maglev.table_size(),
                    node.maglev.seed()
                ),
            },
            session_affinity: "Enabled".into(),
            graceful_termination: "Enabled".into(),
            nodeport_range: format!(
                "{}-{}",
                node.nodeport_range.start(),
                node.nodeport_range.end()
            ),
            source: match (&self.kube, &self.args.kubeconfig) {
                (Some(_), Some(k)) => format!("API server (kubeconfig {})", k.display()),
                (Some(_), None) => "API server (in-cluster service account)".into(),
                _ => format!("manifests {}", self.sources.dir().display()),
            },
            bpffs,
            services,
            frontends,
            backends,
            maps,
            drops,
            maglev_hash_seed: if self.args.node.maglev_hash_seed.is_empty() {
                "0 (default; set --maglev-hash-seed, the same on every node)".into()
            } else {
                format!("{} (from --maglev-hash-seed)", node.maglev.seed())
            },
            topology: match &node.zone {
                Some(z) => format!(
                    "node {}, zone {z} from {} (EndpointSlice node and zone hints; \
                     trafficDistribution PreferSameNode, PreferClose)",
                    node.node_name,
                    match self.zone_source {
                        Some(crate::sources::ZoneSource::NodeLabel) => {
                            "the Node's topology.kubernetes.io/zone label"
                        }
                        _ => "--zone",
                    }
                ),
                None => format!(
                    "node {} (EndpointSlice node hints, trafficDistribution \
                     PreferSameNode; zone hints off: no --zone and no zone label \
                     on Node {})",
                    node.node_name, node.node_name
                ),
            },
            policies: policy_summary(self.rec.current()),
            xdp_acceleration: self.xdp_acceleration(),
            nat46x64: nat46x64_summary(node, self.rec.current()),
            sync: self.sync.clone(),
        }
    }
}

impl Agent {
    /// `XDP Acceleration:` of `status --verbose`, from the pinned XDP links:
    /// `Native [dev, ...]`, `Generic [...]` or `Disabled`, the families
    /// lb_xdp forwards (IPv4 and IPv6), and lb_xdp's counters.
    fn xdp_acceleration(&self) -> String {
        if !matches!(self.dp, Dp::Ebpf(_)) {
            return "Disabled (userspace dataplane)".into();
        }
        let attached = match lb_ebpf::xdp::attachments(&self.args.bpffs) {
            Ok(a) => a,
            Err(e) => return format!("unknown ({e})"),
        };
        let Some((_, mode)) = attached.first() else {
            return "Disabled".into();
        };
        let devices: Vec<&str> = attached.iter().map(|(d, _)| d.as_str()).collect();
        let mode = match mode {
            lb_ebpf::xdp::XdpMode::Native => "Native",
            lb_ebpf::xdp::XdpMode::Generic => "Generic",
        };
        let stats = match lb_ebpf::xdp::stats(&self.args.bpffs) {
            Ok(s) => format!(
                "forwarded {} (tx {}, redirect {}), passed to tc {}, dropped {}",
                s.forwarded(),
                s.tx,
                s.redirect,
                s.pass,
                s.drop
            ),
            Err(e) => format!("counters unreadable: {e}"),
        };
        format!("{mode}   [{}]   IPv4+IPv6   {stats}", devices.join(", "))
    }
}

/// The sizes of the maps a service takes entries in, as the kernel reports
/// them (pinned maps keep the size they were created with: a warning says
/// when that differs from the flags).
fn map_limits(dp: &mut EbpfDataplane, asked: &MapCapacity) -> MapLimits {
    use lb_ebpf::abi::*;
    let m = dp.maps();
    let mut differ = Vec::new();
    let mut cap = |name: &str, want: u32| {
        let have = m.capacity(name).unwrap_or(want);
        if have != want {
            differ.push(format!("{name} {have} (asked {want})"));
        }
        have as usize
    };
    // The limits hold for each family's maps (lb4_* and lb6_*, created
    // with the same sizes): the smaller of the two.
    let limits = MapLimits {
        services: cap(MAP_SERVICES, asked.services).min(cap(MAP_SERVICES6, asked.services)),
        backends: cap(MAP_BACKENDS, asked.backends).min(cap(MAP_BACKENDS6, asked.backends)),
        rev_nat: cap(MAP_REV_NAT, asked.rev_nat).min(cap(MAP_REV_NAT6, asked.rev_nat)),
        maglev: cap(MAP_MAGLEV, asked.maglev),
        src_range: cap(MAP_SRC_RANGE, asked.src_range).min(cap(MAP_SRC_RANGE6, asked.src_range)),
    };
    let _ = cap(MAP_CT, asked.ct);
    let _ = cap(MAP_CT6, asked.ct);
    let _ = cap(MAP_AFFINITY, asked.affinity);
    let _ = cap(MAP_AFFINITY6, asked.affinity);
    if !differ.is_empty() {
        tracing::warn!(
            "pinned maps keep the size they were created with: {}; run `lb-agent cleanup` \
             to recreate them with the --bpf-*-max sizes",
            differ.join(", ")
        );
    }
    limits
}

/// Applies a pass. When the whole change does not fit the maps at its peak
/// (new entries are written before stale ones go), the services it drops
/// are removed first (a delete-only step), then the rest is applied.
fn apply_in_steps(
    rec: &mut Reconciler,
    dp: &mut dyn Dataplane,
    node: &NodeConfig,
    pass: &lb_agent::sources::Pass,
) -> Result<usize, lb_core::ReconcileError> {
    match rec.apply(dp, &pass.desired) {
        Err(lb_core::ReconcileError::Dataplane(lb_core::DataplaneError::CapacityExceeded {
            table,
            capacity,
            needed,
        })) => {
            tracing::info!(
                table,
                capacity,
                needed,
                "the change does not fit the maps at its peak: removing dropped services first"
            );
            let step = lb_core::DesiredState::build(node, &pass.kept_before)?;
            let removed = rec.apply(dp, &step)?;
            Ok(removed + rec.apply(dp, &pass.desired)?)
        }
        other => other,
    }
}

/// How many frontend entries use each policy, for `status --verbose`.
/// The `NAT46/64 Support` line: `Disabled`, or how many frontends are
/// served across families.
fn nat46x64_summary(node: &lb_core::NodeConfig, t: &lb_core::Tables) -> String {
    if !node.nat46x64 {
        return "Disabled".into();
    }
    let count = |want: lb_core::Translation| {
        t.frontends
            .values()
            .filter(|f| t.translation(f) == want)
            .count()
    };
    format!(
        "Enabled ({} NAT46 frontends, {} NAT64; SNAT to the node address of the backend family)",
        count(lb_core::Translation::Nat46),
        count(lb_core::Translation::Nat64)
    )
}

fn policy_summary(t: &lb_core::Tables) -> String {
    let fes = t.frontends.values();
    let local = fes.clone().filter(|f| f.local_only).count();
    let ranges = fes.clone().filter(|f| f.has_source_ranges()).count();
    let weighted = fes
        .clone()
        .filter(|f| {
            let w: Vec<u16> = f.selectable_backends().iter().map(|b| b.weight).collect();
            w.windows(2).any(|p| p[0] != p[1])
        })
        .count();
    // An active, weighted backend that takes no new flows was left out by
    // topology-aware routing (node or zone hints).
    let topo = fes
        .filter(|f| {
            f.backends[f.selectable.min(f.backends.len())..]
                .iter()
                .any(|b| b.state == lb_core::BackendState::Active && b.weight > 0)
        })
        .count();
    format!(
        "{local} frontends with traffic policy Local, {ranges} with source ranges, \
         {weighted} with unequal weights, {topo} topology-filtered"
    )
}

/// The next change of either source (a directory or an API server).
async fn next_event(
    watch: &mut Option<watch::DirWatch>,
    kube: &mut Option<tokio::sync::mpsc::UnboundedReceiver<()>>,
) -> Option<()> {
    match (watch, kube) {
        (Some(w), _) => w.events.recv().await,
        (None, Some(k)) => k.recv().await,
        (None, None) => std::future::pending().await,
    }
}

fn drain(
    watch: &mut Option<watch::DirWatch>,
    kube: &mut Option<tokio::sync::mpsc::UnboundedReceiver<()>>,
) {
    if let Some(w) = watch {
        while w.events.try_recv().is_ok() {}
    }
    if let Some(k) = kube {
        while k.try_recv().is_ok() {}
    }
}

/// A client for the API server of the kubeconfig at `path`.
async fn kube_client(path: &Path) -> Result<kube::Client, RunError> {
    let err = |e: &dyn std::fmt::Display| format!("--kubeconfig {}: {e}", path.display());
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| err(&e))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| err(&e))?;
    kube::Client::try_from(cfg).map_err(|e| err(&e))
}

/// A client for the API server of the cluster the agent runs in.
fn in_cluster_client() -> Result<kube::Client, RunError> {
    let err = |e: &dyn std::fmt::Display| format!("--in-cluster: {e}");
    let cfg = kube::Config::incluster().map_err(|e| err(&e))?;
    kube::Client::try_from(cfg).map_err(|e| err(&e))
}

/// Runs the agent until SIGINT or SIGTERM.
pub fn run(args: RunArgs) -> Result<(), RunError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    rt.block_on(run_async(args))
}

async fn run_async(args: RunArgs) -> Result<(), RunError> {
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let state_dir = args.state_dir.clone();
    let manifests = args.manifests.clone();
    let metrics_addr = args.metrics_addr;
    let client = match (&args.kubeconfig, args.in_cluster) {
        (Some(path), _) => Some(kube_client(path).await?),
        (None, true) => Some(in_cluster_client()?),
        (None, false) => None,
    };
    let (kube, mut kube_events) = match client {
        Some(client) => {
            let node_name = args.node.node_config()?.node_name;
            let (k, ev) = KubeSource::start(client, &node_name);
            (Some(k), Some(ev))
        }
        None => (None, None),
    };
    Agent::precheck(&args)?;
    // The API answers from the start ("starting" until the dataplane is up).
    let listener =
        api::bind(&state_dir).map_err(|e| format!("API socket in {}: {e}", state_dir.display()))?;
    let agent: Shared<Agent> = Arc::new(Mutex::new(None));
    let answerer = Arc::new(Answerer::new(agent.clone(), API_WAIT, API_WAIT_UNCACHED));
    let handler_answerer = answerer.clone();
    let handler: api::Handler = Arc::new(move |req| handler_answerer.answer(req));
    let server = tokio::spawn(api::serve(listener, handler));
    tracing::info!(socket = %api::socket_path(&state_dir).display(), "API up");
    let started = tokio::task::spawn_blocking(move || Agent::start(args, kube))
        .await
        .map_err(|e| e.to_string())?;
    let started = match started {
        Ok(a) => a,
        Err(e) => {
            server.abort();
            let _ = std::fs::remove_file(api::socket_path(&state_dir));
            return Err(e);
        }
    };
    *agent.lock() = Some(started);
    let metrics_server = match metrics_addr {
        Some(addr) => {
            let l = metrics::bind(addr)
                .await
                .map_err(|e| format!("--metrics-addr {addr}: {e}"))?;
            let a = agent.clone();
            let source: metrics::Source = Arc::new(move || {
                let mut g = a.lock();
                g.as_mut().map(Agent::metrics).unwrap_or_default()
            });
            tracing::info!(%addr, "metrics up");
            Some(tokio::spawn(metrics::serve(l, source)))
        }
        None => None,
    };
    let mut watch = match &manifests {
        Some(dir) => {
            Some(watch::watch_dir(dir).map_err(|e| format!("watching {}: {e}", dir.display()))?)
        }
        None => None,
    };

    let do_sync = |agent: &Shared<Agent>| {
        tokio::task::block_in_place(|| {
            if let Some(a) = agent.lock().as_mut() {
                a.sync();
                answerer.refresh(a);
            }
        })
    };
    do_sync(&agent);
    let mut tick = tokio::time::interval(RESYNC);
    tick.tick().await;
    let mut gc_tick = tokio::time::interval(GC);
    gc_tick.tick().await;
    loop {
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: exiting"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: exiting"); break; }
            ev = next_event(&mut watch, &mut kube_events) => {
                if ev.is_none() { return Err("the source watch stopped".into()); }
                tokio::time::sleep(SETTLE).await;
                drain(&mut watch, &mut kube_events);
                do_sync(&agent);
            }
            _ = tick.tick() => do_sync(&agent),
            _ = gc_tick.tick() => tokio::task::block_in_place(|| {
                if let Some(a) = agent.lock().as_mut() {
                    a.gc();
                }
            }),
        }
    }
    server.abort();
    if let Some(m) = metrics_server {
        m.abort();
    }
    // eBPF: the pins stay, so traffic keeps flowing; userspace: the I/O loop
    // stops and its drop programs are detached (the kernel forwards again).
    tokio::task::block_in_place(|| {
        if let Some(a) = agent.lock().as_mut() {
            a.shutdown();
        }
    });
    let _ = std::fs::remove_file(api::socket_path(&state_dir));
    Ok(())
}
