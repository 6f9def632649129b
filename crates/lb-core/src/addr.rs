//! Layer-3/4 addresses: [`L4Proto`], [`L3n4Addr`] and the lookup [`Scope`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::error::ParseError;

/// A layer-4 protocol a frontend or backend speaks.
///
/// The discriminants are the IANA protocol numbers, the values the
/// datapath sees in the IP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(u8)]
pub enum L4Proto {
    /// Transmission Control Protocol (6).
    Tcp = 6,
    /// User Datagram Protocol (17).
    Udp = 17,
    /// Stream Control Transmission Protocol (132).
    Sctp = 132,
}

impl L4Proto {
    /// Every protocol, in IANA number order.
    pub const ALL: [L4Proto; 3] = [L4Proto::Tcp, L4Proto::Udp, L4Proto::Sctp];

    /// The IANA protocol number.
    pub const fn number(self) -> u8 {
        self as u8
    }

    /// The upper-case name Kubernetes uses (`TCP`, `UDP`, `SCTP`).
    pub const fn as_str(self) -> &'static str {
        match self {
            L4Proto::Tcp => "TCP",
            L4Proto::Udp => "UDP",
            L4Proto::Sctp => "SCTP",
        }
    }
}

impl TryFrom<u8> for L4Proto {
    type Error = ParseError;

    fn try_from(n: u8) -> Result<Self, ParseError> {
        match n {
            6 => Ok(L4Proto::Tcp),
            17 => Ok(L4Proto::Udp),
            132 => Ok(L4Proto::Sctp),
            other => Err(ParseError::UnknownProtocol(other.to_string())),
        }
    }
}

impl FromStr for L4Proto {
    type Err = ParseError;

    /// Parses `TCP`, `UDP` or `SCTP` in any case.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        L4Proto::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| ParseError::UnknownProtocol(s.to_string()))
    }
}

impl fmt::Display for L4Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An IP address, a port and a protocol: the identity of a frontend or a backend.
///
/// ```
/// use lb_core::{L3n4Addr, L4Proto};
/// let a: L3n4Addr = "[2001:db8::1]:443/TCP".parse().unwrap();
/// assert_eq!(a.port, 443);
/// assert_eq!(a.proto, L4Proto::Tcp);
/// assert_eq!(a.to_string(), "[2001:db8::1]:443/TCP");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct L3n4Addr {
    /// The IPv4 or IPv6 address.
    pub addr: IpAddr,
    /// The layer-4 port.
    pub port: u16,
    /// The layer-4 protocol.
    pub proto: L4Proto,
}

impl L3n4Addr {
    /// Builds an address from its parts.
    pub const fn new(addr: IpAddr, port: u16, proto: L4Proto) -> Self {
        L3n4Addr { addr, port, proto }
    }

    /// True for an IPv6 address.
    pub const fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }

    /// The same port and protocol on the unspecified address of the same family
    /// (`0.0.0.0` or `::`), the key of a wildcard NodePort or HostPort frontend.
    pub const fn wildcard(&self) -> Self {
        let addr = match self.addr {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        L3n4Addr::new(addr, self.port, self.proto)
    }

    /// `ADDR:PORT`, with IPv6 in brackets, as `cilium service list` prints it.
    pub fn host_port(&self) -> HostPort<'_> {
        HostPort(self)
    }
}

/// Display adapter printing `ADDR:PORT` (IPv6 as `[ADDR]:PORT`), see [`L3n4Addr::host_port`].
pub struct HostPort<'a>(&'a L3n4Addr);

impl fmt::Display for HostPort<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.addr {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.0.port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.0.port),
        }
    }
}

impl fmt::Display for L3n4Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host_port(), self.proto)
    }
}

impl FromStr for L3n4Addr {
    type Err = ParseError;

    /// Parses `ADDR:PORT/PROTO` (IPv6 as `[ADDR]:PORT/PROTO`); `/PROTO` defaults to TCP.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bad = || ParseError::Address(s.to_string());
        let (sock, proto) = match s.rsplit_once('/') {
            Some((sock, proto)) => (sock, proto.parse()?),
            None => (s, L4Proto::Tcp),
        };
        let sock: std::net::SocketAddr = sock.parse().map_err(|_| bad())?;
        Ok(L3n4Addr::new(sock.ip(), sock.port(), proto))
    }
}

/// Which view of a service a lookup wants, after Cilium's two-scope services.
///
/// A frontend whose external and internal traffic policies differ is
/// programmed twice: the [`Scope::External`] entry (traffic from outside the
/// cluster, selected by `externalTrafficPolicy`) and the [`Scope::Internal`]
/// entry (traffic from the node and its pods, selected by
/// `internalTrafficPolicy`). Every other frontend has only the external entry,
/// which then serves both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(u8)]
pub enum Scope {
    /// The default entry; traffic from outside the cluster.
    #[default]
    External = 0,
    /// The entry for in-cluster traffic of a two-scope service.
    Internal = 1,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_both_families() {
        let v4: L3n4Addr = "10.0.0.1:80/UDP".parse().unwrap();
        assert_eq!(v4.to_string(), "10.0.0.1:80/UDP");
        assert_eq!(v4.host_port().to_string(), "10.0.0.1:80");
        let v6: L3n4Addr = "[::1]:8080".parse().unwrap();
        assert_eq!(v6.proto, L4Proto::Tcp);
        assert_eq!(v6.host_port().to_string(), "[::1]:8080");
        assert_eq!(v6.wildcard().host_port().to_string(), "[::]:8080");
    }

    #[test]
    fn rejects_unknown_protocols() {
        assert!(matches!(
            "10.0.0.1:80/ICMP".parse::<L3n4Addr>(),
            Err(ParseError::UnknownProtocol(p)) if p == "ICMP"
        ));
        assert!(L4Proto::try_from(1).is_err());
        assert_eq!(L4Proto::try_from(132).unwrap(), L4Proto::Sctp);
        assert_eq!("sctp".parse::<L4Proto>().unwrap(), L4Proto::Sctp);
        assert!("10.0.0.1/TCP".parse::<L3n4Addr>().is_err());
    }
}
