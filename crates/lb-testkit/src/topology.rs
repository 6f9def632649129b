//! A reusable client → node → backends topology for load-balancer tests.
//!
//! ```text
//!   client ns                node ns (forwarding on)              backend ns K
//!  ┌──────────┐  veth  ┌────────────────────────────┐  veth  ┌──────────────┐
//!  │ client_  ├────────┤ node_client_link   node_   ├────────┤ link         │
//!  │ link     │        │ ("client-facing")  link[K] │        │              │
//!  └──────────┘        └────────────────────────────┘        └──────────────┘
//! ```
//!
//! # Addressing plan
//!
//! | what                         | IPv4              | IPv6                 |
//! |------------------------------|-------------------|----------------------|
//! | client (client link)         | `192.168.10.2/24` | `fd00:10::2/64`      |
//! | node (client link)           | `192.168.10.1/24` | `fd00:10::1/64`      |
//! | node (link to backend K)     | `10.200.K.1/24`   | `fd00:200:K::1/64`   |
//! | backend K                    | `10.200.K.2/24`   | `fd00:200:K::2/64`   |
//! | suggested VIP (not assigned) | [`VIP_V4`] `198.51.100.10` | [`VIP_V6`] `fd00:ffff::10` |
//!
//! `K` is the 1-based backend number (`backends[i]` has `K = i + 1`; in the
//! IPv6 address `K` is the third 16-bit group, i.e. written in hex). Client
//! and backends have default routes (v4 and v6) via the node; the node has no
//! default route, so the VIP is only reachable through a load balancer on the
//! node. DAD is disabled in all namespaces; the node forwards IPv4 and IPv6.
//! No namespace is connected to the root namespace.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::netns::{NetNs, NetnsError};
use crate::unique_name;
use crate::veth::{Link, VethPair};

/// Client address on the client link.
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 2);
/// Client IPv6 address on the client link.
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 2);
/// Node address on the client link.
pub const NODE_CLIENT_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 1);
/// Node IPv6 address on the client link.
pub const NODE_CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 1);
/// Prefix length of every IPv4 link.
pub const PREFIX_V4: u8 = 24;
/// Prefix length of every IPv6 link.
pub const PREFIX_V6: u8 = 64;
/// A VIP (TEST-NET-2) that is assigned nowhere; the client routes it to the node.
pub const VIP_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// An IPv6 VIP that is assigned nowhere; the client routes it to the node.
pub const VIP_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xffff, 0, 0, 0, 0, 0, 0x10);
/// Maximum number of backends (K must fit one IPv4 octet, 1..=254).
pub const MAX_BACKENDS: usize = 254;

/// IPv4 address of backend `k` (1-based): `10.200.k.2`.
pub fn backend_v4(k: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 200, k, 2)
}

/// IPv6 address of backend `k` (1-based): `fd00:200:k::2`.
pub fn backend_v6(k: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x200, u16::from(k), 0, 0, 0, 0, 2)
}

/// Node IPv4 address on the link to backend `k`: `10.200.k.1`.
pub fn node_backend_v4(k: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 200, k, 1)
}

/// Node IPv6 address on the link to backend `k`: `fd00:200:k::1`.
pub fn node_backend_v6(k: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x200, u16::from(k), 0, 0, 0, 0, 1)
}

/// One backend of a [`Topology`].
#[derive(Debug)]
pub struct TopologyBackend {
    /// 0-based position in [`Topology::backends`] (`K = index + 1`).
    pub index: usize,
    /// The backend's namespace.
    pub ns: NetNs,
    /// Backend end of the node↔backend veth (inside [`TopologyBackend::ns`]).
    pub link: Link,
    /// Node end of the node↔backend veth (inside [`Topology::node`]).
    pub node_link: Link,
    /// Backend IPv4 address.
    pub v4: Ipv4Addr,
    /// Backend IPv6 address.
    pub v6: Ipv6Addr,
    /// Node IPv4 address on this link (the backend's gateway).
    pub node_v4: Ipv4Addr,
    /// Node IPv6 address on this link (the backend's gateway).
    pub node_v6: Ipv6Addr,
}

/// Client, node and backend namespaces wired as described in the module
/// docs. Dropping it deletes every namespace (and with them all links and
/// processes), also when a test panics.
#[derive(Debug)]
pub struct Topology {
    /// Client namespace.
    pub client: NetNs,
    /// Node namespace: the load balancer runs here.
    pub node: NetNs,
    /// Backends in order (`backends[i]` is backend `K = i + 1`).
    pub backends: Vec<TopologyBackend>,
    /// Client end of the client↔node veth (inside [`Topology::client`]).
    pub client_link: Link,
    /// Node end of the client↔node veth: the client-facing device.
    pub node_client_link: Link,
    /// Name of the node's client-facing device (same as `node_client_link.name`).
    pub node_client_dev: String,
    /// Client IPv4 address ([`CLIENT_V4`]).
    pub client_v4: Ipv4Addr,
    /// Client IPv6 address ([`CLIENT_V6`]).
    pub client_v6: Ipv6Addr,
    /// Node IPv4 address on the client link ([`NODE_CLIENT_V4`]).
    pub node_v4: Ipv4Addr,
    /// Node IPv6 address on the client link ([`NODE_CLIENT_V6`]).
    pub node_v6: Ipv6Addr,
}

impl Topology {
    /// Builds a topology with `n_backends` backends (0..=254).
    pub fn new(n_backends: usize) -> Result<Self, NetnsError> {
        if n_backends > MAX_BACKENDS {
            return Err(NetnsError::Invalid(format!(
                "{n_backends} backends (max {MAX_BACKENDS})"
            )));
        }
        let client = NetNs::with_label("cli")?;
        let node = NetNs::with_label("node")?;
        for ns in [&client, &node] {
            disable_dad(ns)?;
        }
        node.set_sysctl("net.ipv4.ip_forward", "1")?;
        node.set_sysctl("net.ipv6.conf.all.forwarding", "1")?;

        let pair = VethPair::builder(&client, &node)
            .name_a(unique_name("tc"))
            .name_b(unique_name("tn"))
            .addr_a(format!("{CLIENT_V4}/{PREFIX_V4}"))
            .addr_a(format!("{CLIENT_V6}/{PREFIX_V6}"))
            .addr_b(format!("{NODE_CLIENT_V4}/{PREFIX_V4}"))
            .addr_b(format!("{NODE_CLIENT_V6}/{PREFIX_V6}"))
            .create()?;
        client.add_route(&format!("default via {NODE_CLIENT_V4}"))?;
        client.add_route(&format!("default via {NODE_CLIENT_V6}"))?;

        let mut backends = Vec::with_capacity(n_backends);
        for index in 0..n_backends {
            backends.push(Self::add_backend(&node, index)?);
        }

        let VethPair {
            a: client_link,
            b: node_client_link,
        } = pair;
        Ok(Topology {
            node_client_dev: node_client_link.name.clone(),
            client,
            node,
            backends,
            client_link,
            node_client_link,
            client_v4: CLIENT_V4,
            client_v6: CLIENT_V6,
            node_v4: NODE_CLIENT_V4,
            node_v6: NODE_CLIENT_V6,
        })
    }

    fn add_backend(node: &NetNs, index: usize) -> Result<TopologyBackend, NetnsError> {
        let k = u8::try_from(index + 1)
            .map_err(|_| NetnsError::Invalid(format!("backend index {index}")))?;
        let ns = NetNs::with_label(&format!("be{k}"))?;
        disable_dad(&ns)?;
        let (v4, v6) = (backend_v4(k), backend_v6(k));
        let (node_v4, node_v6) = (node_backend_v4(k), node_backend_v6(k));
        let pair = VethPair::builder(node, &ns)
            .name_a(unique_name("tb"))
            .name_b(unique_name("te"))
            .addr_a(format!("{node_v4}/{PREFIX_V4}"))
            .addr_a(format!("{node_v6}/{PREFIX_V6}"))
            .addr_b(format!("{v4}/{PREFIX_V4}"))
            .addr_b(format!("{v6}/{PREFIX_V6}"))
            .create()?;
        ns.add_route(&format!("default via {node_v4}"))?;
        ns.add_route(&format!("default via {node_v6}"))?;
        Ok(TopologyBackend {
            index,
            ns,
            link: pair.b,
            node_link: pair.a,
            v4,
            v6,
            node_v4,
            node_v6,
        })
    }

    /// Assigns one more IPv4 address (in the client link's /24, e.g.
    /// `192.168.10.3`) to the client, so a test has a second client
    /// source (source ranges); it goes with the namespace.
    pub fn add_client_v4(&self, addr: Ipv4Addr) -> Result<(), NetnsError> {
        self.client.ip(&[
            "addr",
            "add",
            &format!("{addr}/{PREFIX_V4}"),
            "dev",
            &self.client_link.name,
        ])?;
        Ok(())
    }

    /// All namespace names (client, node, backends), e.g. for leak checks.
    pub fn namespace_names(&self) -> Vec<String> {
        let mut v = vec![self.client.name().to_owned(), self.node.name().to_owned()];
        v.extend(self.backends.iter().map(|b| b.ns.name().to_owned()));
        v
    }
}

fn disable_dad(ns: &NetNs) -> Result<(), NetnsError> {
    ns.set_sysctl("net.ipv6.conf.all.accept_dad", "0")?;
    ns.set_sysctl("net.ipv6.conf.default.accept_dad", "0")
}
