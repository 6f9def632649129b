//! Hand-written packet builders, a parser and checksum verification for
//! `BPF_PROG_TEST_RUN` and userspace tests. Pure code, no privileges needed.
//!
//! ```
//! use lb_testkit::packets::{parse, verify_checksums, PacketBuilder, TcpFlags};
//!
//! let frame = PacketBuilder::tcp("10.0.0.1:1234".parse().unwrap(), "10.0.0.2:80".parse().unwrap())
//!     .syn()
//!     .payload(b"hi")
//!     .build()
//!     .unwrap();
//! verify_checksums(&frame).unwrap();
//! let p = parse(&frame).unwrap();
//! assert_eq!(p.dst, "10.0.0.2:80".parse().unwrap());
//! assert_eq!(p.tcp_flags(), Some(TcpFlags::SYN));
//! assert_eq!(p.payload, b"hi");
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::{BitOr, BitOrAssign};

use thiserror::Error;

use crate::MacAddr;

/// EtherType of IPv4.
pub const ETH_P_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// EtherType of an 802.1Q VLAN tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// Ethernet header length.
pub const ETH_HLEN: usize = 14;
/// IPv4 header length without options.
pub const IPV4_HLEN: usize = 20;
/// IPv6 fixed header length.
pub const IPV6_HLEN: usize = 40;
/// TCP header length without options.
pub const TCP_HLEN: usize = 20;
/// UDP header length.
pub const UDP_HLEN: usize = 8;
/// ICMP / ICMPv6 header length (type, code, checksum, 4 bytes "rest").
pub const ICMP_HLEN: usize = 8;
/// Default source MAC of built frames (locally administered).
pub const DEFAULT_SRC_MAC: MacAddr = [0x02, 0, 0, 0, 0, 0x01];
/// Default destination MAC of built frames (locally administered).
pub const DEFAULT_DST_MAC: MacAddr = [0x02, 0, 0, 0, 0, 0x02];

/// ICMPv4 echo reply type.
pub const ICMP_ECHO_REPLY: u8 = 0;
/// ICMPv4 destination unreachable type.
pub const ICMP_DEST_UNREACH: u8 = 3;
/// ICMPv4 echo request type.
pub const ICMP_ECHO_REQUEST: u8 = 8;
/// ICMPv4 time exceeded type.
pub const ICMP_TIME_EXCEEDED: u8 = 11;
/// ICMPv4 destination unreachable code: host unreachable.
pub const ICMP_HOST_UNREACH: u8 = 1;
/// ICMPv4 destination unreachable code: port unreachable.
pub const ICMP_PORT_UNREACH: u8 = 3;
/// ICMPv4 destination unreachable code: fragmentation needed (carries the MTU).
pub const ICMP_FRAG_NEEDED: u8 = 4;
/// ICMPv6 destination unreachable type.
pub const ICMPV6_DEST_UNREACH: u8 = 1;
/// ICMPv6 packet too big type.
pub const ICMPV6_PACKET_TOO_BIG: u8 = 2;
/// ICMPv6 time exceeded type.
pub const ICMPV6_TIME_EXCEEDED: u8 = 3;
/// ICMPv6 parameter problem type.
pub const ICMPV6_PARAM_PROBLEM: u8 = 4;
/// ICMPv6 echo request type.
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
/// ICMPv6 echo reply type.
pub const ICMPV6_ECHO_REPLY: u8 = 129;
/// ICMPv6 destination unreachable code: address unreachable.
pub const ICMPV6_ADDR_UNREACH: u8 = 3;
/// ICMPv6 destination unreachable code: port unreachable.
pub const ICMPV6_PORT_UNREACH: u8 = 4;

/// IP protocol / IPv6 next header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpProto {
    /// ICMP (1).
    Icmp,
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// ICMPv6 (58).
    Icmpv6,
    /// Anything else.
    Other(u8),
}

impl IpProto {
    /// The protocol number.
    pub fn number(self) -> u8 {
        match self {
            IpProto::Icmp => 1,
            IpProto::Tcp => 6,
            IpProto::Udp => 17,
            IpProto::Icmpv6 => 58,
            IpProto::Other(n) => n,
        }
    }
}

impl From<u8> for IpProto {
    fn from(n: u8) -> Self {
        match n {
            1 => IpProto::Icmp,
            6 => IpProto::Tcp,
            17 => IpProto::Udp,
            58 => IpProto::Icmpv6,
            n => IpProto::Other(n),
        }
    }
}

/// TCP flag bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// No flags.
    pub const NONE: TcpFlags = TcpFlags(0);
    /// FIN.
    pub const FIN: TcpFlags = TcpFlags(0x01);
    /// SYN.
    pub const SYN: TcpFlags = TcpFlags(0x02);
    /// RST.
    pub const RST: TcpFlags = TcpFlags(0x04);
    /// PSH.
    pub const PSH: TcpFlags = TcpFlags(0x08);
    /// ACK.
    pub const ACK: TcpFlags = TcpFlags(0x10);
    /// URG.
    pub const URG: TcpFlags = TcpFlags(0x20);
    /// ECE.
    pub const ECE: TcpFlags = TcpFlags(0x40);
    /// CWR.
    pub const CWR: TcpFlags = TcpFlags(0x80);

    /// True if every bit of `other` is set.
    pub fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The raw bits.
    pub fn bits(self) -> u8 {
        self.0
    }
}

impl BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for TcpFlags {
    fn bitor_assign(&mut self, rhs: TcpFlags) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
        let set: Vec<&str> = NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, n)| *n)
            .collect();
        if set.is_empty() {
            f.write_str("TcpFlags(NONE)")
        } else {
            write!(f, "TcpFlags({})", set.join("|"))
        }
    }
}

// ---------------------------------------------------------------- checksums

fn sum_words(mut acc: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(u16::from_be_bytes([*last, 0]));
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// RFC 1071 Internet checksum (one's complement of the one's complement sum).
pub fn internet_checksum(data: &[u8]) -> u16 {
    !fold(sum_words(0, data))
}

fn pseudo_header_sum(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u64 {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let acc = sum_words(sum_words(0, &s.octets()), &d.octets());
            acc + u64::from(proto) + (len as u64 & 0xffff)
        }
        (s, d) => {
            let acc = sum_words(sum_words(0, &ip_octets16(s)), &ip_octets16(d));
            acc + sum_words(0, &(len as u32).to_be_bytes()) + u64::from(proto)
        }
    }
}

fn ip_octets16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Checksum of an L4 segment (TCP, UDP, ICMPv6) including the pseudo-header;
/// the segment's checksum field must be zero (or is included as is).
pub fn l4_checksum(src: IpAddr, dst: IpAddr, proto: u8, segment: &[u8]) -> u16 {
    !fold(sum_words(
        pseudo_header_sum(src, dst, proto, segment.len()),
        segment,
    ))
}

// ----------------------------------------------------------------- building

/// Errors of the packet builders.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PacketError {
    /// Source and destination are of different IP families.
    #[error("source {src} and destination {dst} are of different IP families")]
    FamilyMismatch {
        /// Source address.
        src: IpAddr,
        /// Destination address.
        dst: IpAddr,
    },
    /// The packet would exceed the IP length limits.
    #[error("packet too long: {0} bytes of IP payload")]
    TooLong(usize),
}

#[derive(Debug, Clone, Copy)]
struct IpParams {
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    tos: u8,
    ip_id: u16,
    dont_fragment: bool,
    flow_label: u32,
}

impl IpParams {
    fn new(src: IpAddr, dst: IpAddr, dont_fragment: bool) -> Self {
        IpParams {
            src,
            dst,
            ttl: 64,
            tos: 0,
            ip_id: 0,
            dont_fragment,
            flow_label: 0,
        }
    }

    /// Prepends an IPv4/IPv6 header to the L4 `segment`.
    fn wrap(&self, proto: u8, segment: &[u8]) -> Result<Vec<u8>, PacketError> {
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let total = IPV4_HLEN + segment.len();
                let total16 = u16::try_from(total).map_err(|_| PacketError::TooLong(total))?;
                let mut out = Vec::with_capacity(total);
                out.extend_from_slice(&[0x45, self.tos]);
                out.extend_from_slice(&total16.to_be_bytes());
                out.extend_from_slice(&self.ip_id.to_be_bytes());
                let frag: u16 = if self.dont_fragment { 0x4000 } else { 0 };
                out.extend_from_slice(&frag.to_be_bytes());
                out.extend_from_slice(&[self.ttl, proto, 0, 0]);
                out.extend_from_slice(&s.octets());
                out.extend_from_slice(&d.octets());
                let c = internet_checksum(&out[..IPV4_HLEN]);
                out[10..12].copy_from_slice(&c.to_be_bytes());
                out.extend_from_slice(segment);
                Ok(out)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let plen = u16::try_from(segment.len())
                    .map_err(|_| PacketError::TooLong(segment.len()))?;
                let mut out = Vec::with_capacity(IPV6_HLEN + segment.len());
                let first: u32 =
                    (6 << 28) | (u32::from(self.tos) << 20) | (self.flow_label & 0x000f_ffff);
                out.extend_from_slice(&first.to_be_bytes());
                out.extend_from_slice(&plen.to_be_bytes());
                out.extend_from_slice(&[proto, self.ttl]);
                out.extend_from_slice(&s.octets());
                out.extend_from_slice(&d.octets());
                out.extend_from_slice(segment);
                Ok(out)
            }
            (src, dst) => Err(PacketError::FamilyMismatch { src, dst }),
        }
    }
}

fn ethernet(src: MacAddr, dst: MacAddr, ip: &[u8]) -> Vec<u8> {
    let ethertype = if ip.first().map(|b| b >> 4) == Some(6) {
        ETH_P_IPV6
    } else {
        ETH_P_IPV4
    };
    let mut out = Vec::with_capacity(ETH_HLEN + ip.len());
    out.extend_from_slice(&dst);
    out.extend_from_slice(&src);
    out.extend_from_slice(&ethertype.to_be_bytes());
    out.extend_from_slice(ip);
    out
}

#[derive(Debug, Clone, Copy)]
enum L4Spec {
    Tcp {
        flags: TcpFlags,
        seq: u32,
        ack: u32,
        window: u16,
    },
    Udp,
}

/// The Ethernet and IP header setters and `build` of [`PacketBuilder`] and
/// [`IcmpBuilder`] (both have `src_mac`, `dst_mac`, `ip: IpParams` and
/// `build_ip`).
macro_rules! header_setters {
    () => {
        /// Source MAC address.
        pub fn src_mac(mut self, mac: MacAddr) -> Self {
            self.src_mac = mac;
            self
        }

        /// Destination MAC address.
        pub fn dst_mac(mut self, mac: MacAddr) -> Self {
            self.dst_mac = mac;
            self
        }

        /// IPv4 TTL / IPv6 hop limit.
        pub fn ttl(mut self, ttl: u8) -> Self {
            self.ip.ttl = ttl;
            self
        }

        /// IPv4 TOS / IPv6 traffic class.
        pub fn tos(mut self, tos: u8) -> Self {
            self.ip.tos = tos;
            self
        }

        /// IPv4 identification field (ignored for IPv6).
        pub fn ip_id(mut self, id: u16) -> Self {
            self.ip.ip_id = id;
            self
        }

        /// IPv4 don't-fragment bit (ignored for IPv6; the default is the
        /// builder's).
        pub fn dont_fragment(mut self, df: bool) -> Self {
            self.ip.dont_fragment = df;
            self
        }

        /// IPv6 flow label (20 bits; ignored for IPv4).
        pub fn flow_label(mut self, label: u32) -> Self {
            self.ip.flow_label = label;
            self
        }

        /// The full Ethernet frame.
        pub fn build(&self) -> Result<Vec<u8>, PacketError> {
            Ok(ethernet(self.src_mac, self.dst_mac, &self.build_ip()?))
        }
    };
}

/// Builds Ethernet + IPv4/IPv6 + TCP/UDP frames with correct checksums.
///
/// Defaults: MACs [`DEFAULT_SRC_MAC`] → [`DEFAULT_DST_MAC`], TTL/hop limit
/// 64, TOS 0, IPv4 id 0 with DF set, TCP seq 1 / ack 0 / window 65535 / no
/// flags / no options, empty payload.
#[derive(Debug, Clone)]
pub struct PacketBuilder {
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: SocketAddr,
    dst: SocketAddr,
    ip: IpParams,
    l4: L4Spec,
    payload: Vec<u8>,
}

impl PacketBuilder {
    fn new(src: SocketAddr, dst: SocketAddr, l4: L4Spec) -> Self {
        PacketBuilder {
            src_mac: DEFAULT_SRC_MAC,
            dst_mac: DEFAULT_DST_MAC,
            src,
            dst,
            ip: IpParams::new(src.ip(), dst.ip(), true),
            l4,
            payload: Vec::new(),
        }
    }

    /// A TCP packet from `src` to `dst` (no flags set yet).
    pub fn tcp(src: SocketAddr, dst: SocketAddr) -> Self {
        Self::new(
            src,
            dst,
            L4Spec::Tcp {
                flags: TcpFlags::NONE,
                seq: 1,
                ack: 0,
                window: 65535,
            },
        )
    }

    /// A UDP datagram from `src` to `dst`.
    pub fn udp(src: SocketAddr, dst: SocketAddr) -> Self {
        Self::new(src, dst, L4Spec::Udp)
    }

    header_setters!();

    /// L4 payload.
    pub fn payload(mut self, data: impl AsRef<[u8]>) -> Self {
        self.payload = data.as_ref().to_vec();
        self
    }

    fn with_tcp(mut self, f: impl FnOnce(&mut TcpFlags, &mut u32, &mut u32, &mut u16)) -> Self {
        if let L4Spec::Tcp {
            flags,
            seq,
            ack,
            window,
        } = &mut self.l4
        {
            f(flags, seq, ack, window);
        }
        self
    }

    /// Replaces the TCP flags (no effect on UDP builders).
    pub fn flags(self, new: TcpFlags) -> Self {
        self.with_tcp(|f, _, _, _| *f = new)
    }

    /// Sets SYN (no effect on UDP builders).
    pub fn syn(self) -> Self {
        self.with_tcp(|f, _, _, _| *f |= TcpFlags::SYN)
    }

    /// Sets ACK (no effect on UDP builders).
    pub fn ack(self) -> Self {
        self.with_tcp(|f, _, _, _| *f |= TcpFlags::ACK)
    }

    /// Sets FIN (no effect on UDP builders).
    pub fn fin(self) -> Self {
        self.with_tcp(|f, _, _, _| *f |= TcpFlags::FIN)
    }

    /// Sets RST (no effect on UDP builders).
    pub fn rst(self) -> Self {
        self.with_tcp(|f, _, _, _| *f |= TcpFlags::RST)
    }

    /// Sets PSH (no effect on UDP builders).
    pub fn psh(self) -> Self {
        self.with_tcp(|f, _, _, _| *f |= TcpFlags::PSH)
    }

    /// TCP sequence number (no effect on UDP builders).
    pub fn seq(self, n: u32) -> Self {
        self.with_tcp(|_, s, _, _| *s = n)
    }

    /// TCP acknowledgment number (no effect on UDP builders; does not set ACK).
    pub fn ack_number(self, n: u32) -> Self {
        self.with_tcp(|_, _, a, _| *a = n)
    }

    /// TCP window (no effect on UDP builders).
    pub fn window(self, w: u16) -> Self {
        self.with_tcp(|_, _, _, win| *win = w)
    }

    fn segment(&self) -> Result<(u8, Vec<u8>), PacketError> {
        let (sp, dp) = (self.src.port(), self.dst.port());
        match self.l4 {
            L4Spec::Tcp {
                flags,
                seq,
                ack,
                window,
            } => {
                let mut seg = Vec::with_capacity(TCP_HLEN + self.payload.len());
                seg.extend_from_slice(&sp.to_be_bytes());
                seg.extend_from_slice(&dp.to_be_bytes());
                seg.extend_from_slice(&seq.to_be_bytes());
                seg.extend_from_slice(&ack.to_be_bytes());
                seg.extend_from_slice(&[(TCP_HLEN as u8 / 4) << 4, flags.0]);
                seg.extend_from_slice(&window.to_be_bytes());
                seg.extend_from_slice(&[0, 0, 0, 0]);
                seg.extend_from_slice(&self.payload);
                let c = l4_checksum(self.src.ip(), self.dst.ip(), 6, &seg);
                seg[16..18].copy_from_slice(&c.to_be_bytes());
                Ok((6, seg))
            }
            L4Spec::Udp => {
                let len = UDP_HLEN + self.payload.len();
                let len16 = u16::try_from(len).map_err(|_| PacketError::TooLong(len))?;
                let mut seg = Vec::with_capacity(len);
                seg.extend_from_slice(&sp.to_be_bytes());
                seg.extend_from_slice(&dp.to_be_bytes());
                seg.extend_from_slice(&len16.to_be_bytes());
                seg.extend_from_slice(&[0, 0]);
                seg.extend_from_slice(&self.payload);
                let c = match l4_checksum(self.src.ip(), self.dst.ip(), 17, &seg) {
                    0 => 0xffff,
                    c => c,
                };
                seg[6..8].copy_from_slice(&c.to_be_bytes());
                Ok((17, seg))
            }
        }
    }

    /// The IP packet (no Ethernet header), e.g. as the inner packet of an
    /// ICMP error or for an L3 device.
    pub fn build_ip(&self) -> Result<Vec<u8>, PacketError> {
        if self.src.is_ipv4() != self.dst.is_ipv4() {
            return Err(PacketError::FamilyMismatch {
                src: self.src.ip(),
                dst: self.dst.ip(),
            });
        }
        let (proto, seg) = self.segment()?;
        self.ip.wrap(proto, &seg)
    }
}

/// Builds ICMP / ICMPv6 messages (errors carrying an inner packet, echo).
/// The family follows the addresses; the checksum (with pseudo-header for
/// ICMPv6) is computed. Defaults: MACs as in [`PacketBuilder`], TTL 64, no DF.
#[derive(Debug, Clone)]
pub struct IcmpBuilder {
    src_mac: MacAddr,
    dst_mac: MacAddr,
    ip: IpParams,
    ty: u8,
    code: u8,
    rest: [u8; 4],
    body: Vec<u8>,
}

impl IcmpBuilder {
    /// A raw ICMP message: `ty`, `code`, the 4 "rest of header" bytes and a body.
    pub fn raw(src: IpAddr, dst: IpAddr, ty: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Self {
        IcmpBuilder {
            src_mac: DEFAULT_SRC_MAC,
            dst_mac: DEFAULT_DST_MAC,
            ip: IpParams::new(src, dst, false),
            ty,
            code,
            rest,
            body: body.to_vec(),
        }
    }

    /// Destination unreachable (ICMPv4 type 3 / ICMPv6 type 1) with `code`
    /// (e.g. [`ICMP_PORT_UNREACH`] / [`ICMPV6_PORT_UNREACH`]) sent by `src`
    /// (a router or host) to `dst`, quoting the IP packet `inner` (no
    /// Ethernet header; see [`PacketBuilder::build_ip`]).
    pub fn dest_unreachable(src: IpAddr, dst: IpAddr, code: u8, inner: &[u8]) -> Self {
        let ty = if src.is_ipv4() {
            ICMP_DEST_UNREACH
        } else {
            ICMPV6_DEST_UNREACH
        };
        Self::raw(src, dst, ty, code, [0; 4], inner)
    }

    /// "Fragmentation needed" (ICMPv4 3/4, MTU in the low 16 bits) or
    /// "packet too big" (ICMPv6 2/0, 32-bit MTU), quoting `inner`.
    pub fn packet_too_big(src: IpAddr, dst: IpAddr, mtu: u32, inner: &[u8]) -> Self {
        if src.is_ipv4() {
            let mtu16 = u16::try_from(mtu).unwrap_or(u16::MAX).to_be_bytes();
            Self::raw(
                src,
                dst,
                ICMP_DEST_UNREACH,
                ICMP_FRAG_NEEDED,
                [0, 0, mtu16[0], mtu16[1]],
                inner,
            )
        } else {
            Self::raw(src, dst, ICMPV6_PACKET_TOO_BIG, 0, mtu.to_be_bytes(), inner)
        }
    }

    /// Time exceeded in transit (ICMPv4 11/0, ICMPv6 3/0), quoting `inner`.
    pub fn time_exceeded(src: IpAddr, dst: IpAddr, inner: &[u8]) -> Self {
        let ty = if src.is_ipv4() {
            ICMP_TIME_EXCEEDED
        } else {
            ICMPV6_TIME_EXCEEDED
        };
        Self::raw(src, dst, ty, 0, [0; 4], inner)
    }

    fn echo(src: IpAddr, dst: IpAddr, id: u16, seq: u16, data: &[u8], reply: bool) -> Self {
        let ty = match (src.is_ipv4(), reply) {
            (true, false) => ICMP_ECHO_REQUEST,
            (true, true) => ICMP_ECHO_REPLY,
            (false, false) => ICMPV6_ECHO_REQUEST,
            (false, true) => ICMPV6_ECHO_REPLY,
        };
        let (i, s) = (id.to_be_bytes(), seq.to_be_bytes());
        Self::raw(src, dst, ty, 0, [i[0], i[1], s[0], s[1]], data)
    }

    /// Echo request ("ping") with identifier `id` and sequence `seq`.
    pub fn echo_request(src: IpAddr, dst: IpAddr, id: u16, seq: u16, data: &[u8]) -> Self {
        Self::echo(src, dst, id, seq, data, false)
    }

    /// Echo reply with identifier `id` and sequence `seq`.
    pub fn echo_reply(src: IpAddr, dst: IpAddr, id: u16, seq: u16, data: &[u8]) -> Self {
        Self::echo(src, dst, id, seq, data, true)
    }

    header_setters!();

    /// Cuts the body (the quoted inner packet) to at most `len` bytes, as
    /// routers do (RFC 792: IP header + 8 bytes; Linux: up to 576/1280 total).
    pub fn truncate_inner(mut self, len: usize) -> Self {
        self.body.truncate(len);
        self
    }

    /// The IP packet (no Ethernet header).
    pub fn build_ip(&self) -> Result<Vec<u8>, PacketError> {
        let mut msg = Vec::with_capacity(ICMP_HLEN + self.body.len());
        msg.extend_from_slice(&[self.ty, self.code, 0, 0]);
        msg.extend_from_slice(&self.rest);
        msg.extend_from_slice(&self.body);
        let (proto, c) = match (self.ip.src, self.ip.dst) {
            (IpAddr::V4(_), IpAddr::V4(_)) => (1, internet_checksum(&msg)),
            (IpAddr::V6(_), IpAddr::V6(_)) => (58, l4_checksum(self.ip.src, self.ip.dst, 58, &msg)),
            (src, dst) => return Err(PacketError::FamilyMismatch { src, dst }),
        };
        msg[2..4].copy_from_slice(&c.to_be_bytes());
        self.ip.wrap(proto, &msg)
    }
}

// ------------------------------------------------------------------ parsing

/// Why a packet could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    /// Fewer bytes than a header needs.
    #[error("{layer}: need {needed} bytes, have {got}")]
    TooShort {
        /// The layer being parsed.
        layer: &'static str,
        /// Bytes required.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// The EtherType is neither IPv4 nor IPv6.
    #[error("unsupported ethertype {0:#06x}")]
    UnsupportedEtherType(u16),
    /// The IP version nibble is not 4 or 6 (or does not match the EtherType).
    #[error("bad IP version {0}")]
    BadIpVersion(u8),
    /// A header length field is invalid.
    #[error("{layer}: invalid length field {value}")]
    BadLength {
        /// The layer being parsed.
        layer: &'static str,
        /// The offending value.
        value: usize,
    },
}

/// Ethernet header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetInfo {
    /// Destination MAC.
    pub dst_mac: MacAddr,
    /// Source MAC.
    pub src_mac: MacAddr,
    /// VLAN id of a single 802.1Q tag, if present.
    pub vlan: Option<u16>,
    /// EtherType of the payload (after any VLAN tag).
    pub ethertype: u16,
}

/// TCP header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpInfo {
    /// Flags.
    pub flags: TcpFlags,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Window.
    pub window: u16,
    /// Checksum field as found.
    pub checksum: u16,
    /// Header length including options.
    pub header_len: usize,
}

/// UDP header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpInfo {
    /// Length field.
    pub length: u16,
    /// Checksum field as found.
    pub checksum: u16,
}

/// ICMP / ICMPv6 header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpInfo {
    /// Type.
    pub ty: u8,
    /// Code.
    pub code: u8,
    /// Checksum field as found.
    pub checksum: u16,
    /// The 4 bytes after the checksum (echo id/seq, MTU, pointer, unused).
    pub rest: [u8; 4],
}

impl IcmpInfo {
    /// Echo identifier (first two bytes of `rest`).
    pub fn echo_id(&self) -> u16 {
        u16::from_be_bytes([self.rest[0], self.rest[1]])
    }

    /// MTU of an ICMPv4 "fragmentation needed" (low 16 bits) or ICMPv6
    /// "packet too big" (all 32 bits) message.
    pub fn mtu(&self, ipv6: bool) -> u32 {
        if ipv6 {
            u32::from_be_bytes(self.rest)
        } else {
            u32::from(u16::from_be_bytes([self.rest[2], self.rest[3]]))
        }
    }
}

fn is_icmp_error(ipv6: bool, ty: u8) -> bool {
    if ipv6 {
        (1..=4).contains(&ty)
    } else {
        matches!(ty, 3 | 4 | 5 | 11 | 12)
    }
}

/// A parsed packet. Ports are 0 for protocols without ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedPacket {
    /// Ethernet header, if parsed from a frame.
    pub eth: Option<EthernetInfo>,
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// L4 protocol (after IPv6 extension headers).
    pub proto: IpProto,
    /// IPv4 TTL / IPv6 hop limit.
    pub ttl: u8,
    /// IPv4 TOS / IPv6 traffic class.
    pub tos: u8,
    /// IPv4 identification (None for IPv6).
    pub ip_id: Option<u16>,
    /// IPv4 DF bit (false for IPv6).
    pub dont_fragment: bool,
    /// True for any fragment (MF set or offset ≠ 0); L4 is then only parsed
    /// for the first fragment.
    pub fragment: bool,
    /// IP header length including IPv4 options / IPv6 extension headers.
    pub ip_header_len: usize,
    /// Total IP length as declared in the header.
    pub ip_total_len: usize,
    /// TCP header, for (complete-header) TCP.
    pub tcp: Option<TcpInfo>,
    /// UDP header, for UDP.
    pub udp: Option<UdpInfo>,
    /// ICMP header, for ICMP / ICMPv6.
    pub icmp: Option<IcmpInfo>,
    /// L4 payload (for ICMP: everything after the 8-byte header, i.e. the
    /// quoted packet of an error).
    pub payload: Vec<u8>,
    /// True if fewer bytes were present than the headers declare (only
    /// possible for packets quoted inside ICMP errors).
    pub truncated: bool,
}

impl ParsedPacket {
    /// TCP flags, for TCP packets.
    pub fn tcp_flags(&self) -> Option<TcpFlags> {
        self.tcp.map(|t| t.flags)
    }

    /// True for IPv6.
    pub fn is_ipv6(&self) -> bool {
        self.src.is_ipv6()
    }

    /// True for an ICMP/ICMPv6 error message (which quotes a packet).
    pub fn is_icmp_error(&self) -> bool {
        self.icmp
            .is_some_and(|i| is_icmp_error(self.is_ipv6(), i.ty))
    }

    /// Parses the packet quoted by an ICMP error (tolerating truncation);
    /// `None` if this is not an ICMP error.
    pub fn icmp_inner(&self) -> Option<Result<ParsedPacket, ParseError>> {
        self.is_icmp_error()
            .then(|| parse_ip_inner(&self.payload, true).map(|l| l.pkt))
    }
}

/// Internal parse result with the offsets checksum verification needs.
struct Layout {
    pkt: ParsedPacket,
    /// IPv4 header length (0 for IPv6).
    v4_ihl: usize,
    l4_off: usize,
    l4_end: usize,
}

fn need(layer: &'static str, b: &[u8], needed: usize) -> Result<(), ParseError> {
    if b.len() < needed {
        Err(ParseError::TooShort {
            layer,
            needed,
            got: b.len(),
        })
    } else {
        Ok(())
    }
}

fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn parse_ethernet(frame: &[u8]) -> Result<(EthernetInfo, &[u8]), ParseError> {
    need("ethernet", frame, ETH_HLEN)?;
    let mut dst_mac = [0u8; 6];
    let mut src_mac = [0u8; 6];
    dst_mac.copy_from_slice(&frame[0..6]);
    src_mac.copy_from_slice(&frame[6..12]);
    let mut ethertype = be16(frame, 12);
    let mut off = ETH_HLEN;
    let mut vlan = None;
    if ethertype == ETH_P_8021Q {
        need("802.1Q", frame, ETH_HLEN + 4)?;
        vlan = Some(be16(frame, 14) & 0x0fff);
        ethertype = be16(frame, 16);
        off += 4;
    }
    Ok((
        EthernetInfo {
            dst_mac,
            src_mac,
            vlan,
            ethertype,
        },
        &frame[off..],
    ))
}

/// Parses an IP packet; `lenient` accepts truncation (ICMP-quoted packets).
fn parse_ip_inner(b: &[u8], lenient: bool) -> Result<Layout, ParseError> {
    need("ip", b, 1)?;
    match b[0] >> 4 {
        4 => parse_v4(b, lenient),
        6 => parse_v6(b, lenient),
        v => Err(ParseError::BadIpVersion(v)),
    }
}

fn parse_v4(b: &[u8], lenient: bool) -> Result<Layout, ParseError> {
    need("ipv4", b, IPV4_HLEN)?;
    let ihl = usize::from(b[0] & 0x0f) * 4;
    if ihl < IPV4_HLEN {
        return Err(ParseError::BadLength {
            layer: "ipv4 ihl",
            value: ihl,
        });
    }
    need("ipv4 options", b, ihl)?;
    let total = usize::from(be16(b, 2));
    if total < ihl {
        return Err(ParseError::BadLength {
            layer: "ipv4 total length",
            value: total,
        });
    }
    if !lenient {
        need("ipv4 payload", b, total)?;
    }
    let end = total.min(b.len());
    let frag = be16(b, 6);
    let fragment = frag & 0x2000 != 0 || frag & 0x1fff != 0;
    let first_fragment = frag & 0x1fff == 0;
    let src = Ipv4Addr::new(b[12], b[13], b[14], b[15]);
    let dst = Ipv4Addr::new(b[16], b[17], b[18], b[19]);
    let mut pkt = empty_packet(src.into(), dst.into(), b[9], b[8], b[1]);
    pkt.ip_id = Some(be16(b, 4));
    pkt.dont_fragment = frag & 0x4000 != 0;
    pkt.fragment = fragment;
    pkt.ip_header_len = ihl;
    pkt.ip_total_len = total;
    pkt.truncated = b.len() < total;
    if first_fragment {
        parse_l4(&mut pkt, &b[ihl..end], lenient)?;
    } else {
        pkt.payload = b[ihl..end].to_vec();
    }
    Ok(Layout {
        pkt,
        v4_ihl: ihl,
        l4_off: ihl,
        l4_end: end,
    })
}

fn parse_v6(b: &[u8], lenient: bool) -> Result<Layout, ParseError> {
    need("ipv6", b, IPV6_HLEN)?;
    let total = IPV6_HLEN + usize::from(be16(b, 4));
    if !lenient {
        need("ipv6 payload", b, total)?;
    }
    let end = total.min(b.len());
    let tos = ((b[0] & 0x0f) << 4) | (b[1] >> 4);
    let mut s = [0u8; 16];
    let mut d = [0u8; 16];
    s.copy_from_slice(&b[8..24]);
    d.copy_from_slice(&b[24..40]);
    let mut next = b[6];
    let mut off = IPV6_HLEN;
    let mut fragment = false;
    let mut first_fragment = true;
    // Hop-by-hop, routing, fragment and destination options headers.
    while matches!(next, 0 | 43 | 44 | 60) {
        need("ipv6 extension header", &b[..end], off + 8)?;
        let hlen = if next == 44 {
            let fo = be16(b, off + 2);
            fragment = true;
            first_fragment = fo >> 3 == 0;
            8
        } else {
            (usize::from(b[off + 1]) + 1) * 8
        };
        next = b[off];
        off += hlen;
        need("ipv6 extension header", &b[..end], off)?;
    }
    let mut pkt = empty_packet(
        Ipv6Addr::from(s).into(),
        Ipv6Addr::from(d).into(),
        next,
        b[7],
        tos,
    );
    pkt.fragment = fragment;
    pkt.ip_header_len = off;
    pkt.ip_total_len = total;
    pkt.truncated = b.len() < total;
    if first_fragment {
        parse_l4(&mut pkt, &b[off..end], lenient)?;
    } else {
        pkt.payload = b[off..end].to_vec();
    }
    Ok(Layout {
        pkt,
        v4_ihl: 0,
        l4_off: off,
        l4_end: end,
    })
}

fn empty_packet(src: IpAddr, dst: IpAddr, proto: u8, ttl: u8, tos: u8) -> ParsedPacket {
    ParsedPacket {
        eth: None,
        src: SocketAddr::new(src, 0),
        dst: SocketAddr::new(dst, 0),
        proto: IpProto::from(proto),
        ttl,
        tos,
        ip_id: None,
        dont_fragment: false,
        fragment: false,
        ip_header_len: 0,
        ip_total_len: 0,
        tcp: None,
        udp: None,
        icmp: None,
        payload: Vec::new(),
        truncated: false,
    }
}

fn parse_l4(pkt: &mut ParsedPacket, l4: &[u8], lenient: bool) -> Result<(), ParseError> {
    let set_ports = |pkt: &mut ParsedPacket| {
        if l4.len() >= 4 {
            pkt.src.set_port(be16(l4, 0));
            pkt.dst.set_port(be16(l4, 2));
        }
    };
    match pkt.proto {
        IpProto::Tcp => {
            if lenient && l4.len() < TCP_HLEN {
                set_ports(pkt);
                return Ok(());
            }
            need("tcp", l4, TCP_HLEN)?;
            let hl = usize::from(l4[12] >> 4) * 4;
            if hl < TCP_HLEN {
                return Err(ParseError::BadLength {
                    layer: "tcp data offset",
                    value: hl,
                });
            }
            if lenient && l4.len() < hl {
                set_ports(pkt);
                return Ok(());
            }
            need("tcp options", l4, hl)?;
            set_ports(pkt);
            pkt.tcp = Some(TcpInfo {
                flags: TcpFlags(l4[13]),
                seq: be32(l4, 4),
                ack: be32(l4, 8),
                window: be16(l4, 14),
                checksum: be16(l4, 16),
                header_len: hl,
            });
            pkt.payload = l4[hl..].to_vec();
        }
        IpProto::Udp => {
            if lenient && l4.len() < UDP_HLEN {
                set_ports(pkt);
                return Ok(());
            }
            need("udp", l4, UDP_HLEN)?;
            set_ports(pkt);
            let length = be16(l4, 4);
            let len = usize::from(length);
            if len < UDP_HLEN || (!lenient && len > l4.len()) {
                return Err(ParseError::BadLength {
                    layer: "udp length",
                    value: len,
                });
            }
            pkt.udp = Some(UdpInfo {
                length,
                checksum: be16(l4, 6),
            });
            pkt.payload = l4[UDP_HLEN..len.min(l4.len())].to_vec();
        }
        IpProto::Icmp | IpProto::Icmpv6 => {
            if lenient && l4.len() < ICMP_HLEN {
                return Ok(());
            }
            need("icmp", l4, ICMP_HLEN)?;
            pkt.icmp = Some(IcmpInfo {
                ty: l4[0],
                code: l4[1],
                checksum: be16(l4, 2),
                rest: [l4[4], l4[5], l4[6], l4[7]],
            });
            pkt.payload = l4[ICMP_HLEN..].to_vec();
        }
        IpProto::Other(_) => pkt.payload = l4.to_vec(),
    }
    Ok(())
}

/// Parses an Ethernet frame (optionally with one 802.1Q tag) carrying
/// IPv4/IPv6. Bytes beyond the IP total length (Ethernet padding) are ignored.
pub fn parse(frame: &[u8]) -> Result<ParsedPacket, ParseError> {
    let (eth, ip) = parse_ethernet(frame)?;
    let mut pkt = parse_l3_for(eth.ethertype, ip)?.pkt;
    pkt.eth = Some(eth);
    Ok(pkt)
}

fn parse_l3_for(ethertype: u16, ip: &[u8]) -> Result<Layout, ParseError> {
    let want = match ethertype {
        ETH_P_IPV4 => 4,
        ETH_P_IPV6 => 6,
        other => return Err(ParseError::UnsupportedEtherType(other)),
    };
    need("ip", ip, 1)?;
    if ip[0] >> 4 != want {
        return Err(ParseError::BadIpVersion(ip[0] >> 4));
    }
    parse_ip_inner(ip, false)
}

/// Parses an IP packet without Ethernet header.
pub fn parse_ip(packet: &[u8]) -> Result<ParsedPacket, ParseError> {
    parse_ip_inner(packet, false).map(|l| l.pkt)
}

// ------------------------------------------------------------- verification

/// A checksum that does not match (or a packet that cannot be checked).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChecksumError {
    /// The packet could not be parsed.
    #[error("cannot parse packet: {0}")]
    Parse(#[from] ParseError),
    /// Bad IPv4 header checksum.
    #[error("bad IPv4 header checksum: found {found:#06x}, expected {expected:#06x}")]
    Ipv4Header {
        /// Correct value.
        expected: u16,
        /// Value in the packet.
        found: u16,
    },
    /// Bad TCP/UDP/ICMP/ICMPv6 checksum.
    #[error("bad {proto:?} checksum: found {found:#06x}, expected {expected:#06x}")]
    L4 {
        /// Protocol.
        proto: IpProto,
        /// Correct value.
        expected: u16,
        /// Value in the packet.
        found: u16,
    },
    /// A checksum of the packet quoted in an ICMP error is wrong.
    #[error("in packet quoted by ICMP error: {0}")]
    Inner(Box<ChecksumError>),
}

/// Verifies the IPv4 header checksum and the TCP/UDP/ICMP/ICMPv6 checksum
/// of an Ethernet frame. For ICMP errors it also verifies the IPv4 header
/// checksum of the quoted packet (if present in full). IPv4 UDP checksum 0
/// ("none") is accepted; IPv6 UDP checksum 0 is an error. L4 checksums of
/// fragments are not checked.
pub fn verify_checksums(frame: &[u8]) -> Result<(), ChecksumError> {
    let (eth, ip) = parse_ethernet(frame)?;
    let layout = parse_l3_for(eth.ethertype, ip)?;
    verify_layout(ip, &layout, false)
}

/// Like [`verify_checksums`], and additionally verifies the L4 checksum of
/// the packet quoted by an ICMP error when it is quoted completely.
pub fn verify_checksums_strict(frame: &[u8]) -> Result<(), ChecksumError> {
    let (eth, ip) = parse_ethernet(frame)?;
    let layout = parse_l3_for(eth.ethertype, ip)?;
    verify_layout(ip, &layout, true)
}

/// [`verify_checksums`] for an IP packet without Ethernet header.
pub fn verify_ip_checksums(packet: &[u8]) -> Result<(), ChecksumError> {
    let layout = parse_ip_inner(packet, false)?;
    verify_layout(packet, &layout, false)
}

/// Returns `Some((expected, found))` if the 16-bit checksum at `csum_off`
/// of `region` is wrong. `udp` maps a computed 0 to 0xffff.
fn mismatch(
    region: &[u8],
    csum_off: usize,
    udp: bool,
    compute: impl Fn(&[u8]) -> u16,
) -> Option<(u16, u16)> {
    if compute(region) == 0 {
        return None;
    }
    let found = be16(region, csum_off);
    let mut zeroed = region.to_vec();
    zeroed[csum_off..csum_off + 2].copy_from_slice(&[0, 0]);
    let mut expected = compute(&zeroed);
    if udp && expected == 0 {
        expected = 0xffff;
    }
    (found != expected).then_some((expected, found))
}

fn check_ipv4_header(header: &[u8]) -> Result<(), ChecksumError> {
    match mismatch(header, 10, false, internet_checksum) {
        None => Ok(()),
        Some((expected, found)) => Err(ChecksumError::Ipv4Header { expected, found }),
    }
}

fn check_l4(
    proto: IpProto,
    region: &[u8],
    csum_off: usize,
    compute: impl Fn(&[u8]) -> u16,
) -> Result<(), ChecksumError> {
    match mismatch(region, csum_off, proto == IpProto::Udp, compute) {
        None => Ok(()),
        Some((expected, found)) => Err(ChecksumError::L4 {
            proto,
            expected,
            found,
        }),
    }
}

fn verify_layout(ip: &[u8], layout: &Layout, deep: bool) -> Result<(), ChecksumError> {
    let pkt = &layout.pkt;
    if layout.v4_ihl > 0 {
        check_ipv4_header(&ip[..layout.v4_ihl])?;
    }
    if pkt.fragment || pkt.truncated {
        return Ok(());
    }
    let l4 = &ip[layout.l4_off..layout.l4_end];
    let (src, dst) = (pkt.src.ip(), pkt.dst.ip());
    let pseudo = |proto: u8| move |seg: &[u8]| l4_checksum(src, dst, proto, seg);
    match pkt.proto {
        IpProto::Tcp if pkt.tcp.is_some() => check_l4(IpProto::Tcp, l4, 16, pseudo(6))?,
        IpProto::Udp if pkt.udp.is_some() => {
            let found = be16(l4, 6);
            // IPv4 UDP may omit the checksum (0); IPv6 UDP may not.
            if found != 0 || pkt.is_ipv6() {
                let len = usize::from(be16(l4, 4));
                let dgram = l4.get(..len).ok_or(ParseError::BadLength {
                    layer: "udp length",
                    value: len,
                })?;
                check_l4(IpProto::Udp, dgram, 6, pseudo(17))?;
            }
        }
        IpProto::Icmp if pkt.icmp.is_some() => check_l4(IpProto::Icmp, l4, 2, internet_checksum)?,
        IpProto::Icmpv6 if pkt.icmp.is_some() => check_l4(IpProto::Icmpv6, l4, 2, pseudo(58))?,
        _ => {}
    }
    if pkt.is_icmp_error() {
        let inner_bytes = &l4[ICMP_HLEN..];
        if let Ok(inner) = parse_ip_inner(inner_bytes, true) {
            let wrap = |e| ChecksumError::Inner(Box::new(e));
            if inner.v4_ihl > 0 {
                check_ipv4_header(&inner_bytes[..inner.v4_ihl]).map_err(wrap)?;
            }
            if deep && !inner.pkt.truncated {
                verify_layout(inner_bytes, &inner, true).map_err(wrap)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the sum of these words is 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&data), !0xddf2);
        // Odd length pads with a zero byte.
        assert_eq!(internet_checksum(&[0x01]), !0x0100);
    }

    #[test]
    fn known_ipv4_header_checksum() {
        // The classic example header (192.168.0.1 -> 192.168.0.199, UDP).
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(internet_checksum(&h), 0xb861);
        h[10..12].copy_from_slice(&[0xb8, 0x61]);
        assert_eq!(internet_checksum(&h), 0);
    }

    // Reference values below were computed independently (Python, RFC 1071).

    #[test]
    fn known_tcp_syn_v4() {
        let f = PacketBuilder::tcp(sa("10.0.0.1:12345"), sa("10.0.0.2:80"))
            .syn()
            .build()
            .unwrap();
        assert_eq!(f.len(), ETH_HLEN + IPV4_HLEN + TCP_HLEN);
        assert_eq!(&f[0..6], &DEFAULT_DST_MAC);
        assert_eq!(&f[6..12], &DEFAULT_SRC_MAC);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(be16(&f, ETH_HLEN + 10), 0x26ce);
        assert_eq!(be16(&f, ETH_HLEN + IPV4_HLEN + 16), 0x6b56);
        verify_checksums(&f).unwrap();
    }

    #[test]
    fn known_udp_v4() {
        let f = PacketBuilder::udp(sa("192.168.10.2:5353"), sa("198.51.100.10:53"))
            .payload(b"hello")
            .build()
            .unwrap();
        assert_eq!(be16(&f, ETH_HLEN + 10), 0x45e4);
        assert_eq!(be16(&f, ETH_HLEN + IPV4_HLEN + 6), 0xb1fb);
        verify_checksums(&f).unwrap();
    }

    #[test]
    fn known_udp_v6() {
        let f = PacketBuilder::udp(sa("[fd00:10::2]:40000"), sa("[fd00:ffff::10]:8080"))
            .payload(b"ping")
            .build()
            .unwrap();
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(f.len(), ETH_HLEN + IPV6_HLEN + UDP_HLEN + 4);
        assert_eq!(be16(&f, ETH_HLEN + IPV6_HLEN + 6), 0x6b11);
        verify_checksums(&f).unwrap();
    }

    #[test]
    fn known_tcp_v6() {
        let f = PacketBuilder::tcp(sa("[fd00:10::2]:40000"), sa("[fd00:200:1::2]:443"))
            .psh()
            .ack()
            .seq(1000)
            .ack_number(2000)
            .window(512)
            .payload(b"abc")
            .build()
            .unwrap();
        assert_eq!(be16(&f, ETH_HLEN + IPV6_HLEN + 16), 0x439d);
        verify_checksums(&f).unwrap();
    }

    #[test]
    fn parse_round_trip() {
        let f = PacketBuilder::tcp(sa("10.1.2.3:4000"), sa("10.9.8.7:443"))
            .src_mac([1, 2, 3, 4, 5, 6])
            .dst_mac([6, 5, 4, 3, 2, 1])
            .syn()
            .ack()
            .seq(7)
            .ack_number(9)
            .ttl(17)
            .ip_id(0x1234)
            .payload(b"data")
            .build()
            .unwrap();
        let p = parse(&f).unwrap();
        let eth = p.eth.unwrap();
        assert_eq!(eth.src_mac, [1, 2, 3, 4, 5, 6]);
        assert_eq!(eth.dst_mac, [6, 5, 4, 3, 2, 1]);
        assert_eq!(p.src, sa("10.1.2.3:4000"));
        assert_eq!(p.dst, sa("10.9.8.7:443"));
        assert_eq!(p.proto, IpProto::Tcp);
        assert_eq!(p.ttl, 17);
        assert_eq!(p.ip_id, Some(0x1234));
        assert!(p.dont_fragment);
        assert_eq!(p.tcp_flags(), Some(TcpFlags::SYN | TcpFlags::ACK));
        let t = p.tcp.unwrap();
        assert_eq!((t.seq, t.ack, t.window), (7, 9, 65535));
        assert_eq!(p.payload, b"data");
        assert!(!p.truncated);

        let f = PacketBuilder::udp(sa("[fd00::1]:1"), sa("[fd00::2]:2"))
            .ttl(3)
            .tos(0xb8)
            .flow_label(0xabcde)
            .payload(b"x")
            .build()
            .unwrap();
        let p = parse(&f).unwrap();
        assert!(p.is_ipv6());
        assert_eq!((p.ttl, p.tos, p.proto), (3, 0xb8, IpProto::Udp));
        assert_eq!(p.payload, b"x");
        assert_eq!(p.udp.unwrap().length, 9);
    }

    #[test]
    fn padding_is_ignored() {
        let mut f = PacketBuilder::udp(sa("10.0.0.1:1"), sa("10.0.0.2:2"))
            .build()
            .unwrap();
        f.resize(60, 0);
        verify_checksums(&f).unwrap();
        assert!(parse(&f).unwrap().payload.is_empty());
    }

    #[test]
    fn corruption_is_detected() {
        let f = PacketBuilder::tcp(sa("10.0.0.1:1"), sa("10.0.0.2:2"))
            .payload(b"abcdef")
            .build()
            .unwrap();
        let mut bad = f.clone();
        bad[ETH_HLEN + 8] ^= 1; // TTL: IPv4 header checksum breaks
        assert!(matches!(
            verify_checksums(&bad),
            Err(ChecksumError::Ipv4Header { .. })
        ));
        let mut bad = f.clone();
        *bad.last_mut().unwrap() ^= 0x40; // payload: TCP checksum breaks
        match verify_checksums(&bad) {
            Err(ChecksumError::L4 {
                proto: IpProto::Tcp,
                expected,
                found,
            }) => {
                assert_ne!(expected, found);
                // Fixing the field with the reported value repairs it.
                let off = ETH_HLEN + IPV4_HLEN + 16;
                bad[off..off + 2].copy_from_slice(&expected.to_be_bytes());
                verify_checksums(&bad).unwrap();
            }
            other => panic!("unexpected {other:?}"),
        }
        let mut bad = PacketBuilder::udp(sa("[fd00::1]:1"), sa("[fd00::2]:2"))
            .build()
            .unwrap();
        let off = ETH_HLEN + IPV6_HLEN + 6;
        bad[off..off + 2].copy_from_slice(&[0, 0]);
        assert!(matches!(
            verify_checksums(&bad),
            Err(ChecksumError::L4 {
                proto: IpProto::Udp,
                found: 0,
                ..
            })
        ));
    }

    #[test]
    fn udp_v4_zero_checksum_is_accepted() {
        let mut f = PacketBuilder::udp(sa("10.0.0.1:1"), sa("10.0.0.2:2"))
            .payload(b"q")
            .build()
            .unwrap();
        let off = ETH_HLEN + IPV4_HLEN + 6;
        f[off..off + 2].copy_from_slice(&[0, 0]);
        verify_checksums(&f).unwrap();
    }

    #[test]
    fn icmp_dest_unreachable_v4() {
        let inner = PacketBuilder::udp(sa("192.168.10.2:5000"), sa("10.200.1.2:53"))
            .payload(b"query")
            .build_ip()
            .unwrap();
        let f = IcmpBuilder::dest_unreachable(
            "10.200.1.2".parse().unwrap(),
            "192.168.10.2".parse().unwrap(),
            ICMP_PORT_UNREACH,
            &inner,
        )
        .build()
        .unwrap();
        verify_checksums_strict(&f).unwrap();
        let p = parse(&f).unwrap();
        assert_eq!(p.proto, IpProto::Icmp);
        let icmp = p.icmp.unwrap();
        assert_eq!((icmp.ty, icmp.code), (ICMP_DEST_UNREACH, ICMP_PORT_UNREACH));
        assert!(p.is_icmp_error());
        let q = p.icmp_inner().unwrap().unwrap();
        assert_eq!(q.src, sa("192.168.10.2:5000"));
        assert_eq!(q.dst, sa("10.200.1.2:53"));
        assert_eq!(q.payload, b"query");

        // A broken inner IPv4 header checksum is reported even though the
        // outer ICMP checksum is correct.
        let mut bad_inner = inner.clone();
        bad_inner[10] ^= 0xff;
        let f = IcmpBuilder::dest_unreachable(
            "10.200.1.2".parse().unwrap(),
            "192.168.10.2".parse().unwrap(),
            ICMP_PORT_UNREACH,
            &bad_inner,
        )
        .build()
        .unwrap();
        assert!(matches!(verify_checksums(&f), Err(ChecksumError::Inner(_))));
        // A broken inner L4 checksum only fails the strict check.
        let mut bad_l4 = inner.clone();
        let last = bad_l4.len() - 1;
        bad_l4[last] ^= 1;
        let f = IcmpBuilder::dest_unreachable(
            "10.200.1.2".parse().unwrap(),
            "192.168.10.2".parse().unwrap(),
            ICMP_PORT_UNREACH,
            &bad_l4,
        )
        .build()
        .unwrap();
        verify_checksums(&f).unwrap();
        assert!(matches!(
            verify_checksums_strict(&f),
            Err(ChecksumError::Inner(_))
        ));
    }

    #[test]
    fn icmp_truncated_inner_tcp_v6() {
        let inner = PacketBuilder::tcp(sa("[fd00:10::2]:40000"), sa("[fd00:ffff::10]:80"))
            .syn()
            .payload([7u8; 100])
            .build_ip()
            .unwrap();
        let f = IcmpBuilder::packet_too_big(
            "fd00:10::1".parse().unwrap(),
            "fd00:10::2".parse().unwrap(),
            1280,
            &inner,
        )
        .truncate_inner(IPV6_HLEN + 8)
        .build()
        .unwrap();
        verify_checksums_strict(&f).unwrap();
        let p = parse(&f).unwrap();
        let icmp = p.icmp.unwrap();
        assert_eq!(icmp.ty, ICMPV6_PACKET_TOO_BIG);
        assert_eq!(icmp.mtu(true), 1280);
        let q = p.icmp_inner().unwrap().unwrap();
        assert!(q.truncated);
        assert_eq!(q.src, sa("[fd00:10::2]:40000"));
        assert_eq!(q.dst, sa("[fd00:ffff::10]:80"));
        assert_eq!(q.tcp, None);

        // Strict parsing of a truncated packet fails.
        assert!(parse_ip(&inner[..IPV6_HLEN + 8]).is_err());
    }

    #[test]
    fn icmp_frag_needed_and_echo() {
        let inner = PacketBuilder::tcp(sa("10.0.0.1:1"), sa("10.0.0.2:2"))
            .build_ip()
            .unwrap();
        let f = IcmpBuilder::packet_too_big(
            "10.0.0.254".parse().unwrap(),
            "10.0.0.1".parse().unwrap(),
            1400,
            &inner,
        )
        .build()
        .unwrap();
        verify_checksums_strict(&f).unwrap();
        let icmp = parse(&f).unwrap().icmp.unwrap();
        assert_eq!((icmp.ty, icmp.code, icmp.mtu(false)), (3, 4, 1400));

        for (src, dst) in [("10.0.0.1", "10.0.0.2"), ("fd00::1", "fd00::2")] {
            let f =
                IcmpBuilder::echo_request(src.parse().unwrap(), dst.parse().unwrap(), 77, 3, b"pp")
                    .build()
                    .unwrap();
            verify_checksums(&f).unwrap();
            let p = parse(&f).unwrap();
            assert!(!p.is_icmp_error());
            assert_eq!(p.icmp.unwrap().echo_id(), 77);
            assert_eq!(p.payload, b"pp");
        }
    }

    #[test]
    fn family_mismatch_is_an_error() {
        let e = PacketBuilder::tcp(sa("10.0.0.1:1"), sa("[fd00::1]:2")).build();
        assert!(matches!(e, Err(PacketError::FamilyMismatch { .. })));
    }

    #[test]
    fn parse_errors() {
        assert!(matches!(parse(&[0; 10]), Err(ParseError::TooShort { .. })));
        let mut f = PacketBuilder::udp(sa("10.0.0.1:1"), sa("10.0.0.2:2"))
            .build()
            .unwrap();
        f[12] = 0x12;
        assert!(matches!(
            parse(&f),
            Err(ParseError::UnsupportedEtherType(0x1200))
        ));
        let f = PacketBuilder::udp(sa("10.0.0.1:1"), sa("10.0.0.2:2"))
            .payload(b"abc")
            .build()
            .unwrap();
        assert!(matches!(
            parse(&f[..f.len() - 1]),
            Err(ParseError::TooShort { .. })
        ));
    }

    #[test]
    fn vlan_tag_is_skipped() {
        let f = PacketBuilder::udp(sa("10.0.0.1:1"), sa("10.0.0.2:2"))
            .build()
            .unwrap();
        let mut tagged = f[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x2a]);
        tagged.extend_from_slice(&f[12..]);
        let p = parse(&tagged).unwrap();
        assert_eq!(p.eth.unwrap().vlan, Some(42));
        verify_checksums(&tagged).unwrap();
    }

    #[test]
    fn flags_debug() {
        assert_eq!(
            format!("{:?}", TcpFlags::SYN | TcpFlags::ACK),
            "TcpFlags(SYN|ACK)"
        );
        assert_eq!(format!("{:?}", TcpFlags::NONE), "TcpFlags(NONE)");
    }
}
