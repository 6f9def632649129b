//! A routed topology for direct server return (DSR) and multi-node tests:
//! a router in the middle, the client, `N` node namespaces and the backends
//! each on a link of their own, so a backend's replies can reach the client
//! without passing through any node.
//!
//! ```text
//!                         ┌──────────┐
//!   client ──────────────►│          ├──────── node 1 (load balancer)
//!   192.168.10.2          │  router  ├──────── node 2 (load balancer)
//!                         │          ├──────── backend K
//!                         └──────────┘
//! ```
//!
//! # Addressing plan (IPv4)
//!
//! | what                    | address                       |
//! |-------------------------|-------------------------------|
//! | client                  | [`CLIENT`] `192.168.10.2/24`  |
//! | router (client link)    | `192.168.10.1/24`             |
//! | node `n` (1-based)      | `10.0.n.2/24`, router `10.0.n.1` |
//! | backend `K` (1-based)   | `10.201.K.2/24`, router `10.201.K.1` |
//! | VIP (assigned nowhere)  | [`VIP`] `198.51.100.10`       |
//!
//! # Addressing plan (IPv6)
//!
//! | what                    | address                          |
//! |-------------------------|----------------------------------|
//! | client                  | [`CLIENT6`] `fd00:10::2/64`      |
//! | router (client link)    | `fd00:10::1/64`                  |
//! | node `n` (1-based)      | `fd00:a0:n::2/64`, router `fd00:a0:n::1` |
//! | backend `K` (1-based)   | `fd00:c9:K::2/64`, router `fd00:c9:K::1` |
//! | VIP (assigned nowhere)  | [`VIP6`] `2001:db8:51::10`       |
//!
//! (`n` and `K` as the third 16-bit group, i.e. written in hex.) DAD is off
//! in every namespace; the router and the nodes forward IPv6 too, and the
//! router routes [`VIP6`] like [`VIP`].
//!
//! Everyone's default route is the router. The router routes the VIP to
//! one node ([`DsrTopology::route_vip_via`] switches it, as an upstream
//! router or ECMP change would) and has reverse-path filtering off: replies
//! from a backend carry the frontend (a VIP or a node's NodePort address)
//! as their source. The client link has MTU [`CLIENT_MTU`], 20 bytes below
//! the rest, so full-sized client packets still fit once a node wraps them
//! in IPIP (not IPv6 ones in IPv6-in-IPv6, 40 bytes: their first full-sized
//! packet gets a Packet Too Big). No namespace is connected to the root
//! namespace.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::netns::{NetNs, NetnsError};
use crate::unique_name;
use crate::veth::{Link, VethPair};

/// The client's address.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 2);
/// The router's address on the client link (the client's gateway).
pub const ROUTER_CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 1);
/// The VIP the router sends to the current node.
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// The client's IPv6 address.
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 2);
/// The router's IPv6 address on the client link.
pub const ROUTER_CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 1);
/// The IPv6 VIP the router sends to the current node.
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x51, 0, 0, 0, 0, 0x10);

/// IPv6 address of node `n` (1-based): `fd00:a0:n::2`.
pub fn node_v6(n: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0xa0, u16::from(n), 0, 0, 0, 0, 2)
}

/// IPv6 address of backend `k` (1-based): `fd00:c9:k::2`.
pub fn backend_v6(k: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0xc9, u16::from(k), 0, 0, 0, 0, 2)
}

/// MTU of the client link: 1500 minus the 20 bytes of an IPIP header.
pub const CLIENT_MTU: u32 = 1480;

/// Address of node `n` (1-based): `10.0.n.2`.
pub fn node_v4(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, n, 2)
}

/// Address of backend `k` (1-based): `10.201.k.2`.
pub fn backend_v4(k: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 201, k, 2)
}

/// A namespace on a link to the router.
#[derive(Debug)]
pub struct Host {
    /// Its namespace.
    pub ns: NetNs,
    /// Its end of the link to the router (its only device).
    pub link: Link,
    /// The router's end.
    pub router_link: Link,
    /// Its address.
    pub v4: Ipv4Addr,
    /// Its IPv6 address.
    pub v6: Ipv6Addr,
}

/// The topology of the module docs. Dropping it deletes every namespace.
#[derive(Debug)]
pub struct DsrTopology {
    /// The router.
    pub router: NetNs,
    /// The client.
    pub client: Host,
    /// The nodes (`nodes[i]` is node `n = i + 1`); a load balancer goes
    /// on each node's [`Host::link`].
    pub nodes: Vec<Host>,
    /// The backends (`backends[i]` is backend `K = i + 1`).
    pub backends: Vec<Host>,
}

impl DsrTopology {
    /// Builds `n_nodes` nodes (1..=254) and `n_backends` backends (0..=254);
    /// the VIP is routed via node 1.
    pub fn new(n_nodes: usize, n_backends: usize) -> Result<Self, NetnsError> {
        if !(1..=254).contains(&n_nodes) || n_backends > 254 {
            return Err(NetnsError::Invalid(format!(
                "{n_nodes} nodes and {n_backends} backends"
            )));
        }
        let router = NetNs::with_label("rtr")?;
        disable_dad(&router)?;
        router.set_sysctl("net.ipv4.ip_forward", "1")?;
        router.set_sysctl("net.ipv6.conf.all.forwarding", "1")?;
        for key in ["all", "default"] {
            router.set_sysctl(&format!("net.ipv4.conf.{key}.rp_filter"), "0")?;
            router.set_sysctl(&format!("net.ipv4.conf.{key}.send_redirects"), "0")?;
        }
        let client = Self::host(
            &router,
            "cli",
            (CLIENT, ROUTER_CLIENT),
            (CLIENT6, ROUTER_CLIENT6),
            Some(CLIENT_MTU),
        )?;
        let mut nodes = Vec::with_capacity(n_nodes);
        for i in 0..n_nodes {
            let n = (i + 1) as u8;
            let node = Self::host(
                &router,
                &format!("nd{n}"),
                (node_v4(n), Ipv4Addr::new(10, 0, n, 1)),
                (node_v6(n), gw6(node_v6(n))),
                None,
            )?;
            node.ns.set_sysctl("net.ipv4.ip_forward", "1")?;
            node.ns.set_sysctl("net.ipv6.conf.all.forwarding", "1")?;
            nodes.push(node);
        }
        let mut backends = Vec::with_capacity(n_backends);
        for i in 0..n_backends {
            let k = (i + 1) as u8;
            backends.push(Self::host(
                &router,
                &format!("be{k}"),
                (backend_v4(k), Ipv4Addr::new(10, 201, k, 1)),
                (backend_v6(k), gw6(backend_v6(k))),
                None,
            )?);
        }
        let topo = DsrTopology {
            router,
            client,
            nodes,
            backends,
        };
        topo.route_vip_via(0)?;
        Ok(topo)
    }

    fn host(
        router: &NetNs,
        label: &str,
        (v4, gw): (Ipv4Addr, Ipv4Addr),
        (v6, gw6): (Ipv6Addr, Ipv6Addr),
        mtu: Option<u32>,
    ) -> Result<Host, NetnsError> {
        let ns = NetNs::with_label(label)?;
        disable_dad(&ns)?;
        let mut b = VethPair::builder(&ns, router)
            .name_a(unique_name("da"))
            .name_b(unique_name("dr"))
            .addr_a(format!("{v4}/24"))
            .addr_b(format!("{gw}/24"))
            .addr_a(format!("{v6}/64"))
            .addr_b(format!("{gw6}/64"));
        if let Some(mtu) = mtu {
            b = b.mtu(mtu);
        }
        let pair = b.create()?;
        for dev in ["all", "default", pair.b.name.as_str()] {
            router.set_sysctl(&format!("net.ipv4.conf.{dev}.rp_filter"), "0")?;
        }
        ns.add_route(&format!("default via {gw}"))?;
        ns.add_route(&format!("default via {gw6}"))?;
        Ok(Host {
            ns,
            link: pair.a,
            router_link: pair.b,
            v4,
            v6,
        })
    }

    /// Routes the VIP and [`VIP6`] via node `index` (0-based) on the
    /// router, replacing the previous routes: the client's packets to the
    /// VIPs switch nodes.
    pub fn route_vip_via(&self, index: usize) -> Result<(), NetnsError> {
        let node = self
            .nodes
            .get(index)
            .ok_or_else(|| NetnsError::Invalid(format!("node index {index}")))?;
        self.router.ip(&[
            "route",
            "replace",
            &format!("{VIP}/32"),
            "via",
            &node.v4.to_string(),
        ])?;
        self.router.ip(&[
            "-6",
            "route",
            "replace",
            &format!("{VIP6}/128"),
            "via",
            &node.v6.to_string(),
        ])?;
        Ok(())
    }

    /// Packets received by `host`'s device so far (its `rx_packets`,
    /// counted before any tc program runs).
    pub fn rx_packets(host: &Host) -> Result<u64, NetnsError> {
        let out = host
            .ns
            .ip(&["-j", "-s", "link", "show", "dev", &host.link.name])?;
        let bad = || NetnsError::Invalid(format!("no rx packets in {out:?}"));
        let rx = out.find("\"rx\":{").ok_or_else(bad)?;
        let rest = &out[rx..];
        let at = rest.find("\"packets\":").ok_or_else(bad)? + "\"packets\":".len();
        let digits: String = rest[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().map_err(|_| bad())
    }
}

/// The router's address on a host's IPv6 link: the host's with `::1`.
fn gw6(host: Ipv6Addr) -> Ipv6Addr {
    let mut s = host.segments();
    s[7] = 1;
    Ipv6Addr::from(s)
}

fn disable_dad(ns: &NetNs) -> Result<(), NetnsError> {
    ns.set_sysctl("net.ipv6.conf.all.accept_dad", "0")?;
    ns.set_sysctl("net.ipv6.conf.default.accept_dad", "0")
}

/// Client-side knobs of the end-to-end tests.
impl DsrTopology {
    /// Sets the MTU of the client link (both ends).
    pub fn set_client_mtu(&self, mtu: u32) -> Result<(), NetnsError> {
        let mtu = mtu.to_string();
        self.client
            .ns
            .ip(&["link", "set", "dev", &self.client.link.name, "mtu", &mtu])?;
        self.router.ip(&[
            "link",
            "set",
            "dev",
            &self.client.router_link.name,
            "mtu",
            &mtu,
        ])?;
        Ok(())
    }

    /// Turns transmit checksum offload (and with it TSO) off on the
    /// client's device: its frames then carry complete TCP/UDP checksums,
    /// as frames from a wire do (what an XDP program that updates them
    /// incrementally needs).
    pub fn client_full_checksums(&self) -> Result<(), NetnsError> {
        self.client
            .ns
            .exec_ok(&["ethtool", "-K", &self.client.link.name, "tx", "off"])?;
        Ok(())
    }

    /// A counter of the client's `/proc/net/snmp6` (`Icmp6InPktTooBigs`, ...).
    pub fn client_snmp6(&self, name: &str) -> Result<u64, NetnsError> {
        let out = self.client.ns.exec_ok(&["cat", "/proc/net/snmp6"])?;
        out.lines()
            .find_map(|l| {
                let mut it = l.split_whitespace();
                (it.next() == Some(name)).then(|| it.next()?.parse().ok())?
            })
            .ok_or_else(|| NetnsError::Invalid(format!("{name} not in /proc/net/snmp6")))
    }
}
