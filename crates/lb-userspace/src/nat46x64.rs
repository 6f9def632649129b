//! IPv4 <-> IPv6 header translation of a TCP/UDP frame, in place, for
//! NAT46/64 flows ([`lb_core::nat46x64`]).
//!
//! The translation follows RFC 7915 for what a load balancer's flows need:
//!
//! * IPv4 → IPv6: version 6, traffic class = TOS, flow label 0, payload
//!   length = the L4 bytes, next header = the protocol, hop limit = TTL.
//!   IPv4 options are dropped (RFC 7915 §4.1: not translated). The frame
//!   grows by `40 - IHL * 4` bytes, so the buffer needs that much room past
//!   the frame ([`HEADROOM`]); without it the packet is not translated.
//! * IPv6 → IPv4: version 4, IHL 5, TOS = traffic class, total length,
//!   identification 0, DF set (no fragmentation on the way), TTL = hop
//!   limit, protocol = next header, a fresh header checksum.
//! * TTL and hop limit are carried over unchanged: like the rest of the
//!   userspace path the packet is re-injected as the node's own (io docs).
//! * The L4 checksum is updated incrementally for the new pseudo-header
//!   addresses and ports (the pseudo-header's length and protocol sum the
//!   same in both families). An IPv4 UDP datagram without a checksum (0)
//!   gets one computed over the whole datagram, as IPv6 requires one.
//! * The Ethernet addresses are kept and the EtherType changed; the io loop
//!   re-injects only the IP packet and the kernel routes it.
//!
//! * IPv6 extension headers the parser skips (hop-by-hop, routing with no
//!   segments left, destination options: [`crate::packet::ipv6_l4`]) are
//!   dropped (RFC 7915 §5.1), as IPv4 options are.
//!
//! Fragments and ICMP never get here: the packet parser passes them
//! untouched ([`crate::packet`]), as for every flow.
//!
//! Sizes ([`lb_core::nat46x64`]): the packet path clamps a translated SYN's
//! MSS option ([`clamp_mss`]) for its link MTU
//! ([`crate::PacketPath::set_link_mtu`], the I/O loop's devices' smallest
//! MTU: a userspace loop re-injects through raw sockets and cannot see the
//! route a packet will take, so it sizes for the narrowest link it
//! serves), and answers an IPv4 packet over that MTU once translated to
//! IPv6 with ICMP fragmentation needed ([`frag_needed`]) instead of
//! translating it.
//!
//! No allocation: the L4 bytes move with `copy_within` and the new header
//! is written over the old one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_core::L4Proto;

use crate::packet::{addr_sum, fold, sum_words, PacketInfo, ETH_HLEN, IPV6_HLEN};

/// How many bytes past a frame a buffer needs for any translation (an IPv4
/// header of 20 bytes becomes an IPv6 header of 40).
pub const HEADROOM: usize = IPV6_HLEN - 20;

/// One end of a translated packet: address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// The IP address (of the target family).
    pub addr: IpAddr,
    /// The L4 port.
    pub port: u16,
}

/// Why a frame was not translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XlateError {
    /// The buffer has no room for the bigger header.
    NoRoom,
    /// The endpoints are not of one family, or of the frame's own family.
    Family,
}

/// Translates the frame `buf[..len]`, which [`crate::packet::parse`]
/// accepted as `info`, into the other family with source `src` and
/// destination `dst` (both of the other family). Returns the new frame
/// length; on error `buf` is unchanged.
pub fn translate(
    buf: &mut [u8],
    len: usize,
    info: &PacketInfo,
    src: Endpoint,
    dst: Endpoint,
) -> Result<usize, XlateError> {
    if src.addr.is_ipv4() != dst.addr.is_ipv4() || src.addr.is_ipv4() == info.src.is_ipv4() {
        return Err(XlateError::Family);
    }
    let len = len.min(buf.len());
    // The L4 bytes: what the IP header says, never past the frame.
    let l4_len = if info.is_ipv6() {
        let payload = usize::from(u16::from_be_bytes([buf[ETH_HLEN + 4], buf[ETH_HLEN + 5]]));
        payload
            .saturating_sub(info.l4_off - ETH_HLEN - IPV6_HLEN)
            .min(len - info.l4_off)
    } else {
        let total = usize::from(u16::from_be_bytes([buf[ETH_HLEN + 2], buf[ETH_HLEN + 3]]));
        total
            .saturating_sub(info.l4_off - ETH_HLEN)
            .min(len - info.l4_off)
    };
    let min_l4 = if info.proto == L4Proto::Tcp { 20 } else { 8 };
    let l4_len = l4_len.max(min_l4).min(len - info.l4_off);
    let new_hlen = if info.is_ipv6() { 20 } else { IPV6_HLEN };
    let new_l4 = ETH_HLEN + new_hlen;
    if new_l4 + l4_len > buf.len() {
        return Err(XlateError::NoRoom);
    }
    // The old header's fields the new one carries over.
    let ip = &buf[ETH_HLEN..];
    let (tos, ttl) = if info.is_ipv6() {
        (((ip[0] & 0x0f) << 4) | (ip[1] >> 4), ip[7])
    } else {
        (ip[1], ip[8])
    };
    let proto = info.proto.number();

    // L4 checksum and ports, before the bytes move.
    let l4 = info.l4_off;
    let csum_at = l4 + if info.proto == L4Proto::Tcp { 16 } else { 6 };
    let old_ports = [
        u16::from_be_bytes([buf[l4], buf[l4 + 1]]),
        u16::from_be_bytes([buf[l4 + 2], buf[l4 + 3]]),
    ];
    buf[l4..l4 + 2].copy_from_slice(&src.port.to_be_bytes());
    buf[l4 + 2..l4 + 4].copy_from_slice(&dst.port.to_be_bytes());
    let old_csum = u16::from_be_bytes([buf[csum_at], buf[csum_at + 1]]);
    let new_csum = if info.proto == L4Proto::Udp && old_csum == 0 {
        // No checksum in IPv4: compute one (IPv6 requires it).
        buf[csum_at..csum_at + 2].copy_from_slice(&[0, 0]);
        let sum = addr_sum(src.addr)
            + addr_sum(dst.addr)
            + u32::from(proto)
            + l4_len as u32
            + sum_words(&buf[l4..l4 + l4_len]);
        match !fold(sum) {
            0 => 0xffff,
            c => c,
        }
    } else {
        let old_sum = addr_sum(info.src)
            + addr_sum(info.dst)
            + u32::from(old_ports[0])
            + u32::from(old_ports[1]);
        let new_sum =
            addr_sum(src.addr) + addr_sum(dst.addr) + u32::from(src.port) + u32::from(dst.port);
        let c = !fold(u32::from(!old_csum) + u32::from(!fold(old_sum)) + u32::from(fold(new_sum)));
        if info.proto == L4Proto::Udp && c == 0 {
            0xffff
        } else {
            c
        }
    };
    buf[csum_at..csum_at + 2].copy_from_slice(&new_csum.to_be_bytes());

    // Move the L4 bytes behind the new header and write it.
    buf.copy_within(l4..l4 + l4_len, new_l4);
    let hdr = &mut buf[ETH_HLEN..new_l4];
    match (src.addr, dst.addr) {
        (IpAddr::V6(s), IpAddr::V6(d)) => write6(hdr, tos, ttl, proto, l4_len, s, d),
        (IpAddr::V4(s), IpAddr::V4(d)) => write4(hdr, tos, ttl, proto, l4_len, s, d),
        _ => unreachable!("families checked above"),
    }
    let ethertype: u16 = if src.addr.is_ipv6() { 0x86dd } else { 0x0800 };
    buf[12..14].copy_from_slice(&ethertype.to_be_bytes());
    Ok(new_l4 + l4_len)
}

fn write6(hdr: &mut [u8], tc: u8, hop: u8, next: u8, payload: usize, s: Ipv6Addr, d: Ipv6Addr) {
    hdr[0] = 0x60 | (tc >> 4);
    hdr[1] = tc << 4;
    hdr[2] = 0;
    hdr[3] = 0;
    hdr[4..6].copy_from_slice(&(payload as u16).to_be_bytes());
    hdr[6] = next;
    hdr[7] = hop;
    hdr[8..24].copy_from_slice(&s.octets());
    hdr[24..40].copy_from_slice(&d.octets());
}

fn write4(hdr: &mut [u8], tos: u8, ttl: u8, proto: u8, l4_len: usize, s: Ipv4Addr, d: Ipv4Addr) {
    hdr[0] = 0x45;
    hdr[1] = tos;
    hdr[2..4].copy_from_slice(&((20 + l4_len) as u16).to_be_bytes());
    hdr[4..6].copy_from_slice(&[0, 0]);
    hdr[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
    hdr[8] = ttl;
    hdr[9] = proto;
    hdr[10..12].copy_from_slice(&[0, 0]);
    hdr[12..16].copy_from_slice(&s.octets());
    hdr[16..20].copy_from_slice(&d.octets());
    let c = !fold(sum_words(hdr));
    hdr[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Lowers the MSS option of the TCP header at the start of `tcp` (a SYN or
/// SYN-ACK; the header and what follows) to `max_mss` when it is higher,
/// updating the TCP checksum incrementally (RFC 1624). Returns the option's
/// new value when it changed it. Options are walked to the data offset;
/// a malformed length stops the walk.
pub fn clamp_mss(tcp: &mut [u8], max_mss: u16) -> Option<u16> {
    let end = (usize::from(*tcp.get(12)? >> 4) * 4).min(tcp.len());
    let mut i = 20;
    while i < end {
        match tcp[i] {
            0 => return None,
            1 => i += 1,
            kind => {
                let len = usize::from(*tcp.get(i + 1)?);
                if len < 2 || i + len > end {
                    return None;
                }
                if kind == 2 && len == 4 {
                    let at = i + 2;
                    let old = u16::from_be_bytes([tcp[at], tcp[at + 1]]);
                    if old <= max_mss {
                        return None;
                    }
                    tcp[at..at + 2].copy_from_slice(&max_mss.to_be_bytes());
                    // At an odd offset the value straddles two checksum
                    // words: its bytes count swapped.
                    let (o, n) = if at % 2 == 1 {
                        (old.swap_bytes(), max_mss.swap_bytes())
                    } else {
                        (old, max_mss)
                    };
                    let c = u16::from_be_bytes([tcp[16], tcp[17]]);
                    let c = !fold(u32::from(!c) + u32::from(!o) + u32::from(n));
                    tcp[16..18].copy_from_slice(&c.to_be_bytes());
                    return Some(max_mss);
                }
                i += len;
            }
        }
    }
    None
}

/// What an ICMP error quotes of the offending IPv4 packet: its header
/// (without options) and the first 8 bytes after it (RFC 792).
const QUOTE: usize = 20 + 8;

/// Turns the IPv4 frame `buf[..len]` into an ICMP destination unreachable /
/// fragmentation needed (type 3, code 4) carrying `mtu`, from the frame's
/// destination back to its source, quoting its header and first 8 payload
/// bytes; the Ethernet addresses swapped. Returns the answer's length, or
/// `None` (and `buf` unchanged) when the frame cannot be answered: not
/// IPv4, IPv4 options, DF clear (a translator may fragment it; this one
/// drops it), a fragment, or shorter than the quote.
pub fn frag_needed(buf: &mut [u8], len: usize, mtu: u16) -> Option<usize> {
    let ip = buf.get(ETH_HLEN..len)?;
    if buf[12..14] != [0x08, 0x00] || ip.len() < QUOTE || ip[0] != 0x45 {
        return None;
    }
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    if frag & 0x4000 == 0 || frag & 0x3fff != 0 {
        return None;
    }
    let mut quote = [0u8; QUOTE];
    quote.copy_from_slice(&ip[..QUOTE]);
    let (src, dst) = (&quote[12..16], &quote[16..20]);
    let total = 20 + 8 + QUOTE;
    let mut hdr = [0u8; 20];
    hdr[0] = 0x45;
    hdr[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    hdr[8] = 64;
    hdr[9] = 1;
    hdr[12..16].copy_from_slice(dst);
    hdr[16..20].copy_from_slice(src);
    let c = !fold(sum_words(&hdr));
    hdr[10..12].copy_from_slice(&c.to_be_bytes());
    let mut icmp = [0u8; 8 + QUOTE];
    icmp[0] = 3;
    icmp[1] = 4;
    icmp[6..8].copy_from_slice(&mtu.to_be_bytes());
    icmp[8..].copy_from_slice(&quote);
    let c = !fold(sum_words(&icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&buf[6..12]);
    macs[6..].copy_from_slice(&buf[..6]);
    buf[..12].copy_from_slice(&macs);
    buf[ETH_HLEN..ETH_HLEN + 20].copy_from_slice(&hdr);
    buf[ETH_HLEN + 20..ETH_HLEN + total].copy_from_slice(&icmp);
    Some(ETH_HLEN + total)
}
