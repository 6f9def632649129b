//! Frame parsing and in-place rewriting with `pnet_packet` views.
//!
//! [`parse`] classifies a frame exactly like `lb_parse4` in
//! `crates/lb-ebpf/bpf/lb_pkt.h` (IPv4) and the conformance suite's
//! reference classifier (both families): neither IPv4 nor IPv6 (or shorter
//! than an Ethernet header) is [`Parsed::Ignore`].
//!
//! * IPv4: a header cut short, a version other than 4 or an IHL below 5 is
//!   [`Parsed::Malformed`]; fragments and protocols other than TCP and UDP
//!   are ignored.
//! * IPv6: a fixed header cut short or a version other than 6 is
//!   malformed. Up to [`IPV6_EXT_MAX`] hop-by-hop, routing (with no
//!   segments left) and destination-options headers are skipped before the
//!   L4 header ([`ipv6_l4`], as `lb_parse6`); anything else (a fragment
//!   header, ICMPv6, another protocol, a routing header with segments left,
//!   an extension header cut short or reaching past [`IPV6_L4_OFF_MAX`]) is
//!   ignored.
//!
//! In both families a TCP or UDP header cut short is malformed. Nothing
//! else is checked (the IPv4 total length, the IPv6 payload length and the
//! UDP length field are not, as in the BPF program).
//!
//! [`set_addr`] and [`set_port`] rewrite one address or port and update the
//! IPv4 header checksum (IPv6 has none) and the L4 checksum incrementally
//! (RFC 1624), as `bpf_l3_csum_replace` and `bpf_l4_csum_replace` do: the
//! L4 checksum covers the addresses through the pseudo-header in both
//! families. A zero UDP checksum ("none") stays zero and a computed zero
//! becomes `0xffff`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_core::L4Proto;
use pnet_packet::ethernet::{EtherTypes, EthernetPacket, MutableEthernetPacket};
use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv4::{Ipv4Flags, Ipv4Packet, MutableIpv4Packet};
use pnet_packet::ipv6::{Ipv6Packet, MutableIpv6Packet};
use pnet_packet::tcp::{MutableTcpPacket, TcpPacket};
use pnet_packet::udp::{MutableUdpPacket, UdpPacket};
use pnet_packet::Packet;

/// Length of an Ethernet header.
pub const ETH_HLEN: usize = 14;
/// Length of the IPv6 fixed header.
pub const IPV6_HLEN: usize = 40;

/// What the packet path needs of an IPv4 or IPv6 TCP/UDP frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketInfo {
    /// IP source (the family of the frame).
    pub src: IpAddr,
    /// IP destination (same family as `src`).
    pub dst: IpAddr,
    /// L4 source port.
    pub sport: u16,
    /// L4 destination port.
    pub dport: u16,
    /// TCP or UDP.
    pub proto: L4Proto,
    /// Offset of the L4 header from the start of the frame.
    pub l4_off: usize,
    /// The TCP flags byte (0 for UDP).
    pub tcp_flags: u8,
}

impl PacketInfo {
    /// True for a TCP segment with FIN or RST (the flow is closing).
    pub fn fin_or_rst(&self) -> bool {
        self.tcp_flags & 0x05 != 0
    }

    /// True for an IPv6 frame.
    pub fn is_ipv6(&self) -> bool {
        self.src.is_ipv6()
    }
}

/// The class of a frame, as `lb_parse4` returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// IPv4 or IPv6 TCP or UDP with complete headers.
    Ok(PacketInfo),
    /// Not ours (not IP, a fragment, an IPv6 extension header, another
    /// protocol): pass untouched.
    Ignore,
    /// IPv4 or IPv6 with a broken header: drop and count.
    Malformed,
}

/// Classifies `frame` (an Ethernet frame). Never panics.
///
/// ```
/// use lb_userspace::packet::{parse, Parsed};
/// assert_eq!(parse(&[0u8; 10]), Parsed::Ignore);
/// let mut ipv4_cut_short = vec![0u8; 20];
/// ipv4_cut_short[12..14].copy_from_slice(&[0x08, 0x00]);
/// assert_eq!(parse(&ipv4_cut_short), Parsed::Malformed);
/// ```
pub fn parse(frame: &[u8]) -> Parsed {
    let Some(eth) = EthernetPacket::new(frame) else {
        return Parsed::Ignore;
    };
    match eth.get_ethertype() {
        EtherTypes::Ipv4 => parse4(frame),
        EtherTypes::Ipv6 => parse6(frame),
        _ => Parsed::Ignore,
    }
}

fn l4_proto(next: pnet_packet::ip::IpNextHeaderProtocol) -> Option<L4Proto> {
    match next {
        IpNextHeaderProtocols::Tcp => Some(L4Proto::Tcp),
        IpNextHeaderProtocols::Udp => Some(L4Proto::Udp),
        _ => None,
    }
}

/// Ports and TCP flags of the L4 header at `l4_off`, or `None` when cut short.
fn ports(frame: &[u8], proto: L4Proto, l4_off: usize) -> Option<(u16, u16, u8)> {
    let l4 = frame.get(l4_off..).unwrap_or(&[]);
    match proto {
        L4Proto::Tcp => TcpPacket::new(l4).map(|t| (t.get_source(), t.get_destination(), l4[13])),
        _ => UdpPacket::new(l4).map(|u| (u.get_source(), u.get_destination(), 0)),
    }
}

/// IPv6 extension headers skipped before the L4 header at the most
/// (`LB_IP6_EXT_MAX` in `lb_pkt.h`).
pub const IPV6_EXT_MAX: usize = 4;

/// The furthest into a frame an IPv6 packet's L4 header may start
/// (`LB_IP6_L4_OFF_MAX` in `lb_pkt.h`).
pub const IPV6_L4_OFF_MAX: usize = ETH_HLEN + IPV6_HLEN + 256;

/// The L4 protocol number (6 or 17) and offset of an IPv6 frame's TCP or
/// UDP header, past up to [`IPV6_EXT_MAX`] hop-by-hop, routing (no segments
/// left) and destination-options headers; `None` when the packet is not a
/// TCP or UDP one this way. The frame's fixed header must be whole.
///
/// ```
/// use lb_userspace::packet::{ipv6_l4, ETH_HLEN};
///
/// let mut f = vec![0u8; ETH_HLEN + 40 + 8 + 20];
/// f[ETH_HLEN + 6] = 0; // hop-by-hop options, 8 bytes, then TCP
/// f[ETH_HLEN + 40] = 6;
/// assert_eq!(ipv6_l4(&f), Some((6, ETH_HLEN + 48)));
/// f[ETH_HLEN + 6] = 44; // a fragment header: not ours
/// assert_eq!(ipv6_l4(&f), None);
/// ```
pub fn ipv6_l4(frame: &[u8]) -> Option<(u8, usize)> {
    const HOP_BY_HOP: u8 = 0;
    const ROUTING: u8 = 43;
    const DEST_OPTS: u8 = 60;
    let mut next = *frame.get(ETH_HLEN + 6)?;
    let mut off = ETH_HLEN + IPV6_HLEN;
    for _ in 0..IPV6_EXT_MAX {
        if next == 6 || next == 17 {
            break;
        }
        if ![HOP_BY_HOP, ROUTING, DEST_OPTS].contains(&next) {
            return None;
        }
        let h = frame.get(off..off + 4)?;
        if next == ROUTING && h[3] != 0 {
            return None;
        }
        next = h[0];
        off += (usize::from(h[1]) + 1) * 8;
        if off > IPV6_L4_OFF_MAX {
            return None;
        }
    }
    (next == 6 || next == 17).then_some((next, off))
}

fn parse6(frame: &[u8]) -> Parsed {
    let Some(ip) = Ipv6Packet::new(&frame[ETH_HLEN..]) else {
        return Parsed::Malformed;
    };
    if ip.get_version() != 6 {
        return Parsed::Malformed;
    }
    let Some((next, l4_off)) = ipv6_l4(frame) else {
        return Parsed::Ignore;
    };
    let proto = if next == 6 {
        L4Proto::Tcp
    } else {
        L4Proto::Udp
    };
    let Some((sport, dport, tcp_flags)) = ports(frame, proto, l4_off) else {
        return Parsed::Malformed;
    };
    Parsed::Ok(PacketInfo {
        src: IpAddr::V6(ip.get_source()),
        dst: IpAddr::V6(ip.get_destination()),
        sport,
        dport,
        proto,
        l4_off,
        tcp_flags,
    })
}

fn parse4(frame: &[u8]) -> Parsed {
    let Some(ip) = Ipv4Packet::new(&frame[ETH_HLEN..]) else {
        return Parsed::Malformed;
    };
    let ihl = usize::from(ip.get_header_length());
    if ip.get_version() != 4 || ihl < 5 {
        return Parsed::Malformed;
    }
    if ip.get_flags() & Ipv4Flags::MoreFragments != 0 || ip.get_fragment_offset() != 0 {
        return Parsed::Ignore;
    }
    let Some(proto) = l4_proto(ip.get_next_level_protocol()) else {
        return Parsed::Ignore;
    };
    let l4_off = ETH_HLEN + ihl * 4;
    let Some((sport, dport, tcp_flags)) = ports(frame, proto, l4_off) else {
        return Parsed::Malformed;
    };
    Parsed::Ok(PacketInfo {
        src: IpAddr::V4(ip.get_source()),
        dst: IpAddr::V4(ip.get_destination()),
        sport,
        dport,
        proto,
        l4_off,
        tcp_flags,
    })
}

/// Which end of a packet to rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The source address or port.
    Src,
    /// The destination address or port.
    Dst,
}

/// Folds a 32-bit one's-complement sum to 16 bits.
pub(crate) fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// RFC 1624 eqn. 3: the checksum after a 16-bit word changed from `old` to `new`.
pub fn csum_replace2(check: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!check) + u32::from(!old) + u32::from(new))
}

/// The checksum after a 32-bit word changed from `old` to `new`.
pub fn csum_replace4(check: u16, old: u32, new: u32) -> u16 {
    let sum = u32::from(!check)
        + u32::from(!(old >> 16) as u16)
        + u32::from(!(old as u16))
        + (new >> 16)
        + (new & 0xffff);
    !fold(sum)
}

/// Applies a checksum update to the L4 header at `info.l4_off`, keeping a
/// zero UDP checksum zero and turning a computed UDP zero into `0xffff`.
fn update_l4_csum(frame: &mut [u8], info: &PacketInfo, update: impl Fn(u16) -> u16) {
    let Some(l4) = frame.get_mut(info.l4_off..) else {
        return;
    };
    match info.proto {
        L4Proto::Tcp => {
            if let Some(mut tcp) = MutableTcpPacket::new(l4) {
                let c = tcp.get_checksum();
                tcp.set_checksum(update(c));
            }
        }
        _ => {
            if let Some(mut udp) = MutableUdpPacket::new(l4) {
                let c = udp.get_checksum();
                if c != 0 {
                    let n = update(c);
                    udp.set_checksum(if n == 0 { 0xffff } else { n });
                }
            }
        }
    }
}

/// The checksum after the 16-byte `old` changed to `new` (eight 16-bit words).
pub fn csum_replace16(check: u16, old: &[u8; 16], new: &[u8; 16]) -> u16 {
    let mut sum = u32::from(!check);
    for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        sum += u32::from(!u16::from_be_bytes([o[0], o[1]]));
        sum += u32::from(u16::from_be_bytes([n[0], n[1]]));
    }
    !fold(sum)
}

/// Rewrites the source or destination address of a frame [`parse`]
/// accepted as `info`, updating the IPv4 header checksum and the L4
/// checksum (pseudo-header). Returns false (and changes nothing) when the
/// frame does not match `info`'s layout or `new` is of the other family.
pub fn set_addr(frame: &mut [u8], info: &PacketInfo, end: End, new: IpAddr) -> bool {
    match (info.src, new) {
        (IpAddr::V4(_), IpAddr::V4(new)) => set_addr4(frame, info, end, new),
        (IpAddr::V6(_), IpAddr::V6(new)) => set_addr6(frame, info, end, new),
        _ => false,
    }
}

fn set_addr4(frame: &mut [u8], info: &PacketInfo, end: End, new: Ipv4Addr) -> bool {
    let Some(mut ip) = frame.get_mut(ETH_HLEN..).and_then(MutableIpv4Packet::new) else {
        return false;
    };
    let old = match end {
        End::Src => ip.get_source(),
        End::Dst => ip.get_destination(),
    };
    if old == new {
        return true;
    }
    let (o, n) = (u32::from(old), u32::from(new));
    let c = ip.get_checksum();
    ip.set_checksum(csum_replace4(c, o, n));
    match end {
        End::Src => ip.set_source(new),
        End::Dst => ip.set_destination(new),
    }
    update_l4_csum(frame, info, |c| csum_replace4(c, o, n));
    true
}

fn set_addr6(frame: &mut [u8], info: &PacketInfo, end: End, new: Ipv6Addr) -> bool {
    let Some(mut ip) = frame.get_mut(ETH_HLEN..).and_then(MutableIpv6Packet::new) else {
        return false;
    };
    let old = match end {
        End::Src => ip.get_source(),
        End::Dst => ip.get_destination(),
    };
    if old == new {
        return true;
    }
    match end {
        End::Src => ip.set_source(new),
        End::Dst => ip.set_destination(new),
    }
    let (o, n) = (old.octets(), new.octets());
    update_l4_csum(frame, info, |c| csum_replace16(c, &o, &n));
    true
}

/// Rewrites the source or destination port, updating the L4 checksum.
/// Returns false (and changes nothing) when the L4 header is missing.
pub fn set_port(frame: &mut [u8], info: &PacketInfo, end: End, new: u16) -> bool {
    let Some(l4) = frame.get_mut(info.l4_off..) else {
        return false;
    };
    let old = match info.proto {
        L4Proto::Tcp => match MutableTcpPacket::new(l4) {
            Some(mut t) => {
                let old = match end {
                    End::Src => t.get_source(),
                    End::Dst => t.get_destination(),
                };
                match end {
                    End::Src => t.set_source(new),
                    End::Dst => t.set_destination(new),
                }
                old
            }
            None => return false,
        },
        _ => match MutableUdpPacket::new(l4) {
            Some(mut u) => {
                let old = match end {
                    End::Src => u.get_source(),
                    End::Dst => u.get_destination(),
                };
                match end {
                    End::Src => u.set_source(new),
                    End::Dst => u.set_destination(new),
                }
                old
            }
            None => return false,
        },
    };
    if old != new {
        update_l4_csum(frame, info, |c| csum_replace2(c, old, new));
    }
    true
}

/// Sums 16-bit big-endian words (an odd last byte is padded with zero),
/// unfolded.
pub(crate) fn sum_words(data: &[u8]) -> u32 {
    let mut sum = 0u32;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        sum += u32::from(*b) << 8;
    }
    sum
}

/// The unfolded sum of an address's 16-bit words (its part of a
/// pseudo-header).
pub(crate) fn addr_sum(a: IpAddr) -> u32 {
    match a {
        IpAddr::V4(a) => sum_words(&a.octets()),
        IpAddr::V6(a) => sum_words(&a.octets()),
    }
}

/// Completes an L4 checksum left for offload (Linux `CHECKSUM_PARTIAL`:
/// the field holds the folded, non-inverted pseudo-header sum, as frames
/// from a veth peer carry it when captured with `AF_PACKET`). Returns true
/// when it completed the checksum. Runs before the packet path, outside it.
///
/// For frames whose capture gives no offload metadata. (The I/O loop
/// reads the kernel's own answer from the virtio-net header instead:
/// [`crate::gso::complete_checksum`].) pnet's datalink channel does not
/// expose the kernel's own answer
/// (`PACKET_AUXDATA`'s `TP_STATUS_CSUMNOTREADY`), so the frame is judged
/// by its bytes: a frame whose checksum already verifies is complete and
/// left alone — also when its correct checksum happens to equal the
/// pseudo-header sum (about one valid frame in 65536) — and only a frame
/// that does not verify but carries exactly the pseudo-header sum is
/// completed. Any other frame is left alone (a bad checksum stays bad).
pub fn complete_partial_checksum(frame: &mut [u8], info: &PacketInfo) -> bool {
    // The length the pseudo-header counts: from the IPv4 total length, or
    // the IPv6 payload length less the extension headers before L4.
    let l4_len = match info.src {
        IpAddr::V4(_) => {
            let Some(ip) = frame.get(ETH_HLEN..).and_then(Ipv4Packet::new) else {
                return false;
            };
            usize::from(ip.get_total_length()).saturating_sub(info.l4_off - ETH_HLEN)
        }
        IpAddr::V6(_) => {
            let Some(ip) = frame.get(ETH_HLEN..).and_then(Ipv6Packet::new) else {
                return false;
            };
            usize::from(ip.get_payload_length()).saturating_sub(info.l4_off - ETH_HLEN - IPV6_HLEN)
        }
    };
    let end = info.l4_off + l4_len;
    let csum_off = info.l4_off + if info.proto == L4Proto::Tcp { 16 } else { 6 };
    if l4_len == 0 || end > frame.len() || csum_off + 2 > end {
        return false;
    }
    let addr_sum = |a: IpAddr| match a {
        IpAddr::V4(a) => sum_words(&a.octets()),
        IpAddr::V6(a) => sum_words(&a.octets()),
    };
    // RFC 768 / RFC 8200 8.1: the same one's-complement sum in both
    // families (the IPv6 32-bit length and next header add up alike).
    let pseudo = u32::from(fold(
        addr_sum(info.src) + addr_sum(info.dst) + u32::from(info.proto.number()) + l4_len as u32,
    ));
    let field = u16::from_be_bytes([frame[csum_off], frame[csum_off + 1]]);
    if u32::from(field) != pseudo || (field == 0 && info.proto == L4Proto::Udp) {
        return false;
    }
    // The field is the pseudo-header sum: complete unless it already verifies.
    if fold(pseudo + sum_words(&frame[info.l4_off..end])) == 0xffff {
        return false;
    }
    frame[csum_off..csum_off + 2].copy_from_slice(&[0, 0]);
    let mut c = !fold(pseudo + sum_words(&frame[info.l4_off..end]));
    if c == 0 && info.proto == L4Proto::Udp {
        c = 0xffff;
    }
    frame[csum_off..csum_off + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// The source MAC address of a frame, if it has an Ethernet header.
pub fn src_mac(frame: &[u8]) -> Option<[u8; 6]> {
    EthernetPacket::new(frame).map(|e| e.get_source().octets())
}

/// The Ethernet payload (the IP packet) of a frame.
pub fn l3(frame: &[u8]) -> Option<&[u8]> {
    EthernetPacket::new(frame).map(|e| &frame[ETH_HLEN..ETH_HLEN + e.payload().len()])
}

/// Sets the MAC addresses of a frame (used when a frame is sent on another link).
pub fn set_macs(frame: &mut [u8], src: [u8; 6], dst: [u8; 6]) -> bool {
    match MutableEthernetPacket::new(frame) {
        Some(mut e) => {
            e.set_source(src.into());
            e.set_destination(dst.into());
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_csum(words: &[u16]) -> u16 {
        !fold(words.iter().map(|w| u32::from(*w)).sum())
    }

    #[test]
    fn incremental_equals_full_recompute() {
        let mut words = [
            0x4500u16, 0x0073, 0, 0x4000, 0x4011, 0, 0xc0a8, 0x0001, 0xc0a8, 0x00c7,
        ];
        let c = full_csum(&words);
        let c2 = csum_replace4(c, 0xc0a8_00c7, 0x0a00_0105);
        words[8] = 0x0a00;
        words[9] = 0x0105;
        assert_eq!(c2, full_csum(&words));
        let c3 = csum_replace2(c2, 0x0a00, 0x1234);
        words[8] = 0x1234;
        assert_eq!(c3, full_csum(&words));
    }

    #[test]
    fn partial_checksums_are_completed_and_others_left_alone() {
        // 10.0.0.1:1000 -> 10.0.0.2:80, TCP, 20-byte header, no payload.
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&40u16.to_be_bytes());
        f[14 + 9] = 6;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[34..36].copy_from_slice(&1000u16.to_be_bytes());
        f[36..38].copy_from_slice(&80u16.to_be_bytes());
        f[34 + 12] = 0x50;
        let Parsed::Ok(info) = parse(&f) else {
            panic!()
        };
        let pseudo = fold(sum_words(&[10, 0, 0, 1, 10, 0, 0, 2]) + 6 + 20);
        f[50..52].copy_from_slice(&pseudo.to_be_bytes());
        assert!(complete_partial_checksum(&mut f, &info));
        let full = !fold(
            u32::from(pseudo)
                + sum_words(&{
                    let mut seg = f[34..54].to_vec();
                    seg[16] = 0;
                    seg[17] = 0;
                    seg
                }),
        );
        assert_eq!(u16::from_be_bytes([f[50], f[51]]), full);
        // Now complete: left alone.
        assert!(!complete_partial_checksum(&mut f, &info));
    }

    /// A valid TCP frame 10.0.0.1:1000 -> 10.0.0.2:80 with 2 payload bytes
    /// chosen so that its correct checksum equals the pseudo-header sum.
    fn valid_frame_whose_checksum_is_the_pseudo_sum() -> (Vec<u8>, u16) {
        let mut f = vec![0u8; 14 + 20 + 20 + 2];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&42u16.to_be_bytes());
        f[14 + 9] = 6;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[34..36].copy_from_slice(&1000u16.to_be_bytes());
        f[36..38].copy_from_slice(&80u16.to_be_bytes());
        f[34 + 12] = 0x50;
        let pseudo = fold(sum_words(&[10, 0, 0, 1, 10, 0, 0, 2]) + 6 + 22);
        f[50..52].copy_from_slice(&pseudo.to_be_bytes());
        // Pick the payload word so that the whole segment verifies.
        let s = fold(u32::from(pseudo) + sum_words(&f[34..56]));
        f[54..56].copy_from_slice(&(!s).to_be_bytes());
        assert_eq!(fold(u32::from(pseudo) + sum_words(&f[34..56])), 0xffff);
        (f, pseudo)
    }

    #[test]
    fn a_valid_checksum_equal_to_the_pseudo_header_sum_is_left_alone() {
        let (mut f, pseudo) = valid_frame_whose_checksum_is_the_pseudo_sum();
        assert_eq!(u16::from_be_bytes([f[50], f[51]]), pseudo);
        let Parsed::Ok(info) = parse(&f) else {
            panic!()
        };
        let before = f.clone();
        assert!(!complete_partial_checksum(&mut f, &info));
        assert_eq!(f, before, "a valid frame was changed");
        // The reference checker agrees that the frame is valid.
        let mut seg = f[34..56].to_vec();
        seg[16] = 0;
        seg[17] = 0;
        assert_eq!(!fold(u32::from(pseudo) + sum_words(&seg)), pseudo);
    }

    /// A TCP or UDP IPv6 frame fd00::1:1000 -> fd00::2:80 with a payload
    /// and a valid checksum.
    fn frame6(proto: u8) -> Vec<u8> {
        let l4_len = if proto == 6 { 20 } else { 8 } + 3;
        let mut f = vec![0u8; 14 + 40 + l4_len];
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        f[14] = 0x60;
        f[18..20].copy_from_slice(&(l4_len as u16).to_be_bytes());
        f[20] = proto;
        f[21] = 64;
        f[22..38].copy_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        f[38..54].copy_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        f[54..56].copy_from_slice(&1000u16.to_be_bytes());
        f[56..58].copy_from_slice(&80u16.to_be_bytes());
        if proto == 6 {
            f[54 + 12] = 0x50;
        } else {
            f[58..60].copy_from_slice(&(l4_len as u16).to_be_bytes());
        }
        let n = f.len();
        f[n - 3..].copy_from_slice(b"abc");
        let c = full_l4_csum6(&f, proto);
        let off = 54 + if proto == 6 { 16 } else { 6 };
        f[off..off + 2].copy_from_slice(&c.to_be_bytes());
        f
    }

    /// The L4 checksum of an IPv6 frame computed from scratch.
    fn full_l4_csum6(f: &[u8], proto: u8) -> u16 {
        let mut seg = f[54..].to_vec();
        let off = if proto == 6 { 16 } else { 6 };
        seg[off] = 0;
        seg[off + 1] = 0;
        let sum = sum_words(&f[22..54]) + u32::from(proto) + seg.len() as u32 + sum_words(&seg);
        !fold(sum)
    }

    #[test]
    fn ipv6_rewrites_keep_the_l4_checksum_valid() {
        for proto in [6u8, 17] {
            let mut f = frame6(proto);
            let Parsed::Ok(info) = parse(&f) else {
                panic!("{proto}")
            };
            assert_eq!(info.src, "fd00::1".parse::<IpAddr>().unwrap());
            assert_eq!((info.sport, info.dport, info.l4_off), (1000, 80, 54));
            let backend: IpAddr = "2001:db8:1::5".parse().unwrap();
            let node: IpAddr = "fd00:10::1".parse().unwrap();
            assert!(set_addr(&mut f, &info, End::Dst, backend));
            assert!(set_port(&mut f, &info, End::Dst, 8080));
            assert!(set_addr(&mut f, &info, End::Src, node));
            assert!(set_port(&mut f, &info, End::Src, 61000));
            let off = 54 + if proto == 6 { 16 } else { 6 };
            let got = u16::from_be_bytes([f[off], f[off + 1]]);
            assert_eq!(got, full_l4_csum6(&f, proto), "proto {proto}");
            let Parsed::Ok(after) = parse(&f) else {
                panic!()
            };
            assert_eq!((after.src, after.dst), (node, backend));
            assert_eq!((after.sport, after.dport), (61000, 8080));
            // The other family is refused and nothing changes.
            let before = f.clone();
            assert!(!set_addr(
                &mut f,
                &info,
                End::Dst,
                "10.0.0.1".parse().unwrap()
            ));
            assert_eq!(f, before);
        }
    }

    #[test]
    fn ipv6_partial_checksums_are_completed() {
        let mut f = frame6(6);
        let Parsed::Ok(info) = parse(&f) else {
            panic!()
        };
        let want = u16::from_be_bytes([f[70], f[71]]);
        let l4_len = (f.len() - 54) as u32;
        let pseudo = fold(sum_words(&f[22..54]) + 6 + l4_len);
        f[70..72].copy_from_slice(&pseudo.to_be_bytes());
        assert!(complete_partial_checksum(&mut f, &info));
        assert_eq!(u16::from_be_bytes([f[70], f[71]]), want);
        assert!(!complete_partial_checksum(&mut f, &info));
    }

    #[test]
    fn ipv6_classification() {
        let f = frame6(6);
        assert!(matches!(parse(&f), Parsed::Ok(_)));
        assert!(matches!(parse(&frame6(17)), Parsed::Ok(_)));
        assert_eq!(parse(&f[..14 + 39]), Parsed::Malformed);
        assert_eq!(parse(&f[..14 + 40 + 19]), Parsed::Malformed);
        let mut v = f.clone();
        v[14] = 0x40;
        assert_eq!(parse(&v), Parsed::Malformed);
        for next in [0u8, 43, 44, 58, 60, 132] {
            let mut x = f.clone();
            x[20] = next;
            assert_eq!(parse(&x), Parsed::Ignore, "next header {next}");
        }
    }

    #[test]
    fn classification_matches_lb_parse4() {
        assert_eq!(parse(&[]), Parsed::Ignore);
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[14 + 9] = 6;
        assert!(matches!(parse(&f), Parsed::Ok(_)));
        assert_eq!(parse(&f[..14 + 20 + 19]), Parsed::Malformed);
        f[14] = 0x44;
        assert_eq!(parse(&f), Parsed::Malformed);
        f[14] = 0x65;
        assert_eq!(parse(&f), Parsed::Malformed);
        f[14] = 0x45;
        f[14 + 6] = 0x20; // more fragments
        assert_eq!(parse(&f), Parsed::Ignore);
        f[14 + 6] = 0;
        f[14 + 9] = 1; // ICMP
        assert_eq!(parse(&f), Parsed::Ignore);
        f[14] = 0x4f; // IHL 15: the TCP header would start past the end
        f[14 + 9] = 6;
        assert_eq!(parse(&f), Parsed::Malformed);
    }
}
