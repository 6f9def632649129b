//! The backend side of direct server return ([`lb_core::LbMode::Dsr`] and
//! `Hybrid`): `bpf/lb_dsr_backend.c` on the device a backend receives its
//! traffic on.
//!
//! A node in DSR mode sends a flow's packets unchanged (destination the
//! frontend, source the client) inside IPIP to the backend's address, with
//! the backend's port in the outer header's Identification field
//! (`bpf/lb_dsr.h`). On the backend's device, the ingress program
//! decapsulates, translates the frontend to the backend's address and port
//! and remembers the flow (an LRU map keyed by the 5-tuple); the egress
//! program gives replies the frontend back as their source, and they leave
//! by the backend's own route, straight to the client. The backend needs no
//! tunnel device and no VIP on an interface.
//!
//! ICMP errors the backend sends about a DSR flow (port unreachable,
//! fragmentation needed, ...) get the same reverse translation on the way
//! out: their quote names the frontend again and they come from it
//! ([`BackendStats::icmp_reversed`]). Errors from routers about the
//! backend's replies are addressed to the frontend and reach the node.
//!
//! IPv6 flows arrive in IPv6-in-IPv6 instead (`bpf/lb_dsr6.h`: the
//! backend's port in the outer flow label) and are handled the same way,
//! with flow and node maps of their own; replies and ICMPv6 errors get the
//! same reverse translation.
//!
//! Only the load-balancing nodes may send DSR traffic: the ingress program
//! drops (and counts, [`BackendStats::unknown_node`]) IPIP packets whose
//! outer source is not one of the node addresses the side was given
//! ([`BackendSide::attach`], [`BackendSide::set_nodes`]), so no other host
//! can have a packet with a forged client source delivered or plant a reply
//! translation.
//!
//! Nothing is pinned: the programs stay attached while the [`BackendSide`]
//! lives (an agent keeps it for its lifetime) and detach when it is dropped.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray};
use aya::programs::tc::TcAttachOptions;
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};

use crate::loader::{interface_exists, prog_err, verifier_err, LoadError};

/// The compiled backend-side object (`bpf/lb_dsr_backend.c`).
pub static DSR_BACKEND_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb_dsr_backend.o"));

/// Name of the backend-side ingress program.
pub const PROG_DSR_INGRESS: &str = "lb_dsr_ingress";
/// Name of the backend-side egress program.
pub const PROG_DSR_EGRESS: &str = "lb_dsr_egress";
/// Its per-CPU counters (`enum lb_dsr_stat`).
pub const MAP_DSR_STATS: &str = "lb_dsr_stats";
/// Its flow map (`struct lb_dsr_key` -> `struct lb_dsr_val`, LRU).
pub const MAP_DSR_FLOWS: &str = "lb_dsr_flows";
/// The allowed outer sources (node address, network order -> 1).
pub const MAP_DSR_NODES: &str = "lb_dsr_nodes";
/// The allowed IPv6 outer sources (16-byte node address -> 1).
pub const MAP_DSR6_NODES: &str = "lb_dsr6_nodes";
/// Its IPv6 flow map (`struct lb_dsr6_key` -> `struct lb_dsr6_val`, LRU).
pub const MAP_DSR6_FLOWS: &str = "lb_dsr6_flows";
/// `LB_DSR_NODES_MAX`: node addresses the allowlist holds (of each family).
pub const DSR_NODES_MAX: usize = 1024;

/// Counters of a [`BackendSide`], summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendStats {
    /// IPIP and IPv6-in-IPv6 packets decapsulated and translated to the
    /// backend.
    pub decapsulated: u64,
    /// Replies translated back to the frontend.
    pub reversed: u64,
    /// IPIP packets dropped (not IPv4 TCP/UDP inside, or a helper failed).
    pub dropped: u64,
    /// IPIP packets dropped because their outer source is not an allowed
    /// node.
    pub unknown_node: u64,
    /// ICMP errors the backend sent about a DSR flow, translated back to
    /// the frontend.
    pub icmp_reversed: u64,
}

/// The backend-side programs attached to one device (in the calling
/// thread's network namespace), or only loaded ([`BackendSide::load`]).
/// Dropping it detaches them.
pub struct BackendSide {
    ebpf: Ebpf,
    device: String,
}

impl std::fmt::Debug for BackendSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendSide")
            .field("device", &self.device)
            .finish()
    }
}

impl BackendSide {
    /// Loads `bpf/lb_dsr_backend.c`, allows DSR traffic from `nodes` (the
    /// load-balancing nodes' addresses, the outer sources of their IPIP
    /// packets, or IPv6 ones for IPv6-in-IPv6; [`Ipv4Addr`], [`Ipv6Addr`]
    /// or [`IpAddr`]) and attaches the ingress and egress programs (TCX)
    /// to `device`. Run it in the device's network namespace.
    ///
    /// ```no_run
    /// use std::net::Ipv4Addr;
    /// let nodes = [Ipv4Addr::new(10, 0, 1, 2), Ipv4Addr::new(10, 0, 2, 2)];
    /// let side = lb_ebpf::dsr::BackendSide::attach("eth0", &nodes)?;
    /// println!("{:?}", side.stats()?);
    /// # Ok::<(), lb_ebpf::LoadError>(())
    /// ```
    pub fn attach<A: Into<IpAddr> + Copy>(device: &str, nodes: &[A]) -> Result<Self, LoadError> {
        if !interface_exists(device) {
            return Err(LoadError::NoInterface(device.to_owned()));
        }
        let mut side = Self::load(nodes)?;
        for (name, attach) in [
            (PROG_DSR_INGRESS, TcAttachType::Ingress),
            (PROG_DSR_EGRESS, TcAttachType::Egress),
        ] {
            side.program_mut(name)?
                .attach_with_options(
                    device,
                    attach,
                    TcAttachOptions::TcxOrder(LinkOrder::default()),
                )
                .map_err(prog_err(format!("attaching {name} to {device}")))?;
        }
        side.device = device.to_owned();
        Ok(side)
    }

    /// Loads the programs (verified, not attached) and allows `nodes`: for
    /// packet tests with `BPF_PROG_TEST_RUN` ([`BackendSide::program_mut`]).
    pub fn load<A: Into<IpAddr> + Copy>(nodes: &[A]) -> Result<Self, LoadError> {
        let mut ebpf = EbpfLoader::new()
            .load(DSR_BACKEND_OBJECT)
            .map_err(|e| LoadError::Object(Box::new(e)))?;
        for name in [PROG_DSR_INGRESS, PROG_DSR_EGRESS] {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or(LoadError::Missing(name))?
                .try_into()
                .map_err(prog_err(format!("{name} is not a classifier")))?;
            crate::retry::on_eagain(|| prog.load()).map_err(verifier_err(name))?;
        }
        let mut side = BackendSide {
            ebpf,
            device: String::new(),
        };
        side.set_nodes(nodes)?;
        Ok(side)
    }

    /// The device the programs are attached to (empty when only loaded).
    pub fn device(&self) -> &str {
        &self.device
    }

    /// One of the programs ([`PROG_DSR_INGRESS`], [`PROG_DSR_EGRESS`]).
    pub fn program_mut(&mut self, name: &'static str) -> Result<&mut SchedClassifier, LoadError> {
        self.ebpf
            .program_mut(name)
            .ok_or(LoadError::Missing(name))?
            .try_into()
            .map_err(prog_err(format!("{name} is not a classifier")))
    }

    /// Replaces the allowed node addresses with `nodes` (added first, then
    /// the ones no longer listed removed, so a node in both lists is never
    /// refused), IPv4 and IPv6 ones alike. More than [`DSR_NODES_MAX`]
    /// addresses of one family are refused and the allowlists are left as
    /// they were.
    pub fn set_nodes<A: Into<IpAddr> + Copy>(&mut self, nodes: &[A]) -> Result<(), LoadError> {
        let mut want4 = BTreeSet::new();
        let mut want6 = BTreeSet::new();
        for a in nodes.iter().map(|a| (*a).into()) {
            match a {
                IpAddr::V4(a) => want4.insert(a),
                IpAddr::V6(a) => want6.insert(a),
            };
        }
        if want4.len().max(want6.len()) > DSR_NODES_MAX {
            return Err(LoadError::Program {
                context: format!("allowing {} DSR nodes", want4.len() + want6.len()),
                source: format!("{MAP_DSR_NODES} holds at most {DSR_NODES_MAX}").into(),
            });
        }
        let have4 = self.nodes()?;
        let have6 = self.nodes6()?;
        let err = |name: &str| {
            let name = name.to_owned();
            move |e: aya::maps::MapError| LoadError::Program {
                context: format!("writing {name}"),
                source: Box::new(e),
            }
        };
        let mut map = self.nodes_map::<u32>(MAP_DSR_NODES)?;
        for a in want4.difference(&have4) {
            map.insert(u32::from_ne_bytes(a.octets()), 1, 0)
                .map_err(err(MAP_DSR_NODES))?;
        }
        for a in have4.difference(&want4) {
            map.remove(&u32::from_ne_bytes(a.octets()))
                .map_err(err(MAP_DSR_NODES))?;
        }
        let mut map = self.nodes_map::<[u8; 16]>(MAP_DSR6_NODES)?;
        for a in want6.difference(&have6) {
            map.insert(a.octets(), 1, 0).map_err(err(MAP_DSR6_NODES))?;
        }
        for a in have6.difference(&want6) {
            map.remove(&a.octets()).map_err(err(MAP_DSR6_NODES))?;
        }
        Ok(())
    }

    /// The allowed IPv4 node addresses.
    pub fn nodes(&self) -> Result<BTreeSet<Ipv4Addr>, LoadError> {
        self.read_nodes::<u32, _>(MAP_DSR_NODES, |k| Ipv4Addr::from(k.to_ne_bytes()))
    }

    /// The allowed IPv6 node addresses.
    pub fn nodes6(&self) -> Result<BTreeSet<Ipv6Addr>, LoadError> {
        self.read_nodes::<[u8; 16], _>(MAP_DSR6_NODES, Ipv6Addr::from)
    }

    fn read_nodes<K: aya::Pod, T: Ord>(
        &self,
        name: &'static str,
        conv: impl Fn(K) -> T,
    ) -> Result<BTreeSet<T>, LoadError> {
        let map = self.ebpf.map(name).ok_or(LoadError::Missing(name))?;
        let map: BpfHashMap<&MapData, K, u32> =
            BpfHashMap::try_from(map).map_err(|e| LoadError::Program {
                context: format!("opening {name}"),
                source: Box::new(e),
            })?;
        map.keys()
            .map(|k| {
                k.map(&conv).map_err(|e| LoadError::Program {
                    context: format!("reading {name}"),
                    source: Box::new(e),
                })
            })
            .collect()
    }

    fn nodes_map<K: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<BpfHashMap<&mut MapData, K, u32>, LoadError> {
        let map = self.ebpf.map_mut(name).ok_or(LoadError::Missing(name))?;
        BpfHashMap::try_from(map).map_err(|e| LoadError::Program {
            context: format!("opening {name}"),
            source: Box::new(e),
        })
    }

    /// Reads the counters.
    pub fn stats(&self) -> Result<BackendStats, LoadError> {
        let err = |e: aya::maps::MapError| LoadError::Program {
            context: format!("reading {MAP_DSR_STATS}"),
            source: Box::new(e),
        };
        let map = self
            .ebpf
            .map(MAP_DSR_STATS)
            .ok_or(LoadError::Missing(MAP_DSR_STATS))?;
        let stats: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map).map_err(err)?;
        let sum =
            |i: u32| -> Result<u64, LoadError> { Ok(stats.get(&i, 0).map_err(err)?.iter().sum()) };
        Ok(BackendStats {
            decapsulated: sum(0)?,
            reversed: sum(1)?,
            dropped: sum(2)?,
            unknown_node: sum(3)?,
            icmp_reversed: sum(4)?,
        })
    }
}
