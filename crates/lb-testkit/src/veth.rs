//! veth pairs between owned namespaces, plus address / route / sysctl helpers
//! on [`NetNs`].
//!
//! Pairs are created directly inside their namespaces
//! (`ip -n A link add X type veth peer name Y netns B`), so the root
//! namespace never sees them and they vanish with their namespaces.

use std::net::IpAddr;

use crate::netns::{run_checked, NetNs, NetnsError};
use crate::{unique_name, MacAddr, MAX_IFNAME_LEN};

/// One end of a link, as seen inside its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Name of the namespace holding the device.
    pub netns: String,
    /// Interface name (≤ 15 bytes).
    pub name: String,
    /// Interface index inside its namespace.
    pub ifindex: u32,
    /// Hardware address.
    pub mac: MacAddr,
}

/// Both ends of a veth pair: `a` lives in the first namespace, `b` in the second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethPair {
    /// End in the first namespace.
    pub a: Link,
    /// End in the second namespace.
    pub b: Link,
}

impl VethPair {
    /// Creates an up, unaddressed veth pair with generated names between `a` and `b`.
    pub fn new(a: &NetNs, b: &NetNs) -> Result<Self, NetnsError> {
        VethBuilder::new(a, b).create()
    }

    /// Starts configuring a veth pair between `a` and `b`.
    pub fn builder<'a>(a: &'a NetNs, b: &'a NetNs) -> VethBuilder<'a> {
        VethBuilder::new(a, b)
    }
}

/// Configures and creates a [`VethPair`]. Both ends are set up; IPv6
/// addresses are added with `nodad`.
#[derive(Debug, Clone)]
pub struct VethBuilder<'a> {
    ns_a: &'a NetNs,
    ns_b: &'a NetNs,
    name_a: Option<String>,
    name_b: Option<String>,
    mac_a: Option<MacAddr>,
    mac_b: Option<MacAddr>,
    addrs_a: Vec<String>,
    addrs_b: Vec<String>,
    mtu: Option<u32>,
}

impl<'a> VethBuilder<'a> {
    /// A builder for a pair between `a` and `b` (generated names, kernel MACs).
    pub fn new(a: &'a NetNs, b: &'a NetNs) -> Self {
        VethBuilder {
            ns_a: a,
            ns_b: b,
            name_a: None,
            name_b: None,
            mac_a: None,
            mac_b: None,
            addrs_a: Vec::new(),
            addrs_b: Vec::new(),
            mtu: None,
        }
    }

    /// Interface name of end `a` (default: [`unique_name`]`("va")`).
    pub fn name_a(mut self, name: impl Into<String>) -> Self {
        self.name_a = Some(name.into());
        self
    }

    /// Interface name of end `b` (default: [`unique_name`]`("vb")`).
    pub fn name_b(mut self, name: impl Into<String>) -> Self {
        self.name_b = Some(name.into());
        self
    }

    /// MAC address of end `a`.
    pub fn mac_a(mut self, mac: MacAddr) -> Self {
        self.mac_a = Some(mac);
        self
    }

    /// MAC address of end `b`.
    pub fn mac_b(mut self, mac: MacAddr) -> Self {
        self.mac_b = Some(mac);
        self
    }

    /// Adds an address in CIDR form (`10.0.0.1/24`, `fd00::1/64`) to end `a`.
    pub fn addr_a(mut self, cidr: impl Into<String>) -> Self {
        self.addrs_a.push(cidr.into());
        self
    }

    /// Adds an address in CIDR form to end `b`.
    pub fn addr_b(mut self, cidr: impl Into<String>) -> Self {
        self.addrs_b.push(cidr.into());
        self
    }

    /// MTU of both ends.
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }

    /// Creates the pair, sets addresses and brings both ends up.
    pub fn create(self) -> Result<VethPair, NetnsError> {
        let name_a = self.name_a.clone().unwrap_or_else(|| unique_name("va"));
        let name_b = self.name_b.clone().unwrap_or_else(|| unique_name("vb"));
        for n in [&name_a, &name_b] {
            check_ifname(n)?;
        }
        let mac_a = self.mac_a.map(|m| format_mac(&m));
        let mac_b = self.mac_b.map(|m| format_mac(&m));
        let mtu = self.mtu.map(|m| m.to_string());

        let mut args: Vec<&str> = vec!["link", "add", &name_a];
        if let Some(m) = &mac_a {
            args.extend(["address", m]);
        }
        if let Some(m) = &mtu {
            args.extend(["mtu", m]);
        }
        args.extend(["type", "veth", "peer", "name", &name_b]);
        if let Some(m) = &mac_b {
            args.extend(["address", m]);
        }
        if let Some(m) = &mtu {
            args.extend(["mtu", m]);
        }
        args.extend(["netns", self.ns_b.name()]);
        self.ns_a.ip(&args)?;

        let configured = self.configure(&name_a, &name_b);
        if configured.is_err() {
            // Best effort: deleting one end removes the pair.
            let _ = self.ns_a.ip(&["link", "del", "dev", &name_a]);
        }
        configured
    }

    fn configure(&self, name_a: &str, name_b: &str) -> Result<VethPair, NetnsError> {
        for cidr in &self.addrs_a {
            self.ns_a.add_addr(name_a, cidr)?;
        }
        for cidr in &self.addrs_b {
            self.ns_b.add_addr(name_b, cidr)?;
        }
        self.ns_a.link_up(name_a)?;
        self.ns_b.link_up(name_b)?;
        Ok(VethPair {
            a: self.ns_a.link(name_a)?,
            b: self.ns_b.link(name_b)?,
        })
    }
}

fn check_ifname(name: &str) -> Result<(), NetnsError> {
    if name.is_empty()
        || name.len() > MAX_IFNAME_LEN
        || name.contains(|c: char| c == '/' || c.is_whitespace())
    {
        return Err(NetnsError::Invalid(format!("interface name {name:?}")));
    }
    Ok(())
}

fn is_ipv6_spec(s: &str) -> bool {
    s.split_whitespace().any(|tok| {
        let addr = tok.split('/').next().unwrap_or(tok);
        matches!(addr.parse::<IpAddr>(), Ok(IpAddr::V6(_)))
    })
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &MacAddr) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff` (case-insensitive).
pub fn parse_mac(s: &str) -> Option<MacAddr> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Address, route, neighbour, sysctl and link helpers. They only ever act on
/// this (owned) namespace.
impl NetNs {
    /// Adds `cidr` (e.g. `10.0.0.1/24` or `fd00::1/64`) to `dev`; IPv6
    /// addresses get `nodad` so they are usable immediately.
    pub fn add_addr(&self, dev: &str, cidr: &str) -> Result<(), NetnsError> {
        let mut args = vec!["addr", "add", cidr, "dev", dev];
        if is_ipv6_spec(cidr) {
            args.push("nodad");
        }
        self.ip(&args).map(|_| ())
    }

    /// Adds a route given in `ip route` syntax, e.g. `"default via 10.0.0.2"`
    /// or `"fd00:1::/64 via fd00::1 dev eth0"`. IPv6 specs get `-6`.
    pub fn add_route(&self, spec: &str) -> Result<(), NetnsError> {
        let mut args = Vec::new();
        if is_ipv6_spec(spec) {
            args.push("-6");
        }
        args.extend(["route", "add"]);
        args.extend(spec.split_whitespace());
        self.ip(&args).map(|_| ())
    }

    /// Adds a permanent neighbour entry `ip` → `mac` on `dev`.
    pub fn add_neighbor(&self, dev: &str, ip: IpAddr, mac: MacAddr) -> Result<(), NetnsError> {
        let ip = ip.to_string();
        let mac = format_mac(&mac);
        self.ip(&[
            "neigh",
            "replace",
            &ip,
            "lladdr",
            &mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ])
        .map(|_| ())
    }

    /// Sets a sysctl inside the namespace (`nsenter --net=… sysctl -w key=value`).
    pub fn set_sysctl(&self, key: &str, value: &str) -> Result<(), NetnsError> {
        let kv = format!("{key}={value}");
        run_checked(self.command("sysctl").args(["-q", "-w", &kv])).map(|_| ())
    }

    /// Reads a sysctl inside the namespace.
    pub fn sysctl(&self, key: &str) -> Result<String, NetnsError> {
        run_checked(self.command("sysctl").args(["-n", key])).map(|s| s.trim().to_owned())
    }

    /// Brings `dev` up.
    pub fn link_up(&self, dev: &str) -> Result<(), NetnsError> {
        self.ip(&["link", "set", "dev", dev, "up"]).map(|_| ())
    }

    /// Brings `dev` down.
    pub fn link_down(&self, dev: &str) -> Result<(), NetnsError> {
        self.ip(&["link", "set", "dev", dev, "down"]).map(|_| ())
    }

    /// Sets the MAC address of `dev`.
    pub fn set_mac(&self, dev: &str, mac: MacAddr) -> Result<(), NetnsError> {
        let mac = format_mac(&mac);
        self.ip(&["link", "set", "dev", dev, "address", &mac])
            .map(|_| ())
    }

    /// Looks up `dev` in this namespace: ifindex and MAC.
    pub fn link(&self, dev: &str) -> Result<Link, NetnsError> {
        let out = self.ip(&["-o", "link", "show", "dev", dev])?;
        let parse_err = || NetnsError::Parse {
            command: format!("ip -n {} -o link show dev {dev}", self.name()),
            output: out.clone(),
        };
        let ifindex = out
            .split(':')
            .next()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .ok_or_else(parse_err)?;
        let mac = out
            .split_whitespace()
            .skip_while(|t| !t.starts_with("link/"))
            .nth(1)
            .and_then(parse_mac)
            .ok_or_else(parse_err)?;
        Ok(Link {
            netns: self.name().to_owned(),
            name: dev.to_owned(),
            ifindex,
            mac,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip() {
        let m = [0x02, 0xab, 0, 0x10, 0xff, 0x01];
        assert_eq!(format_mac(&m), "02:ab:00:10:ff:01");
        assert_eq!(parse_mac("02:AB:00:10:ff:01"), Some(m));
        assert_eq!(parse_mac("02:ab:00:10:ff"), None);
        assert_eq!(parse_mac("02:ab:00:10:ff:01:02"), None);
        assert_eq!(parse_mac("2:ab:00:10:ff:01"), None);
    }

    #[test]
    fn ipv6_detection() {
        assert!(is_ipv6_spec("default via fd00::1"));
        assert!(is_ipv6_spec("fd00:1::/64 dev x"));
        assert!(!is_ipv6_spec("default via 10.0.0.1"));
        assert!(!is_ipv6_spec("10.0.0.0/24 dev eth0"));
    }

    #[test]
    fn ifname_validation() {
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname("0123456789abcde").is_ok());
        assert!(check_ifname("0123456789abcdef").is_err());
        assert!(check_ifname("a/b").is_err());
        assert!(check_ifname("").is_err());
    }
}
