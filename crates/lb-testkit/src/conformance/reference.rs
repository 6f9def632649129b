//! Reference packet handling, written independently of any dataplane:
//! the classification of `lb_parse4` (IPv4) and of its IPv6 counterpart,
//! and address rewrites with checksums recomputed from scratch.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use lb_core::{FlowKey, L4Proto};

use crate::packets::{internet_checksum, l4_checksum};

/// The class of a frame (`lb_parse4` in `crates/lb-ebpf/bpf/lb_pkt.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// IPv4 TCP/UDP with complete headers: its 5-tuple.
    Flow(FlowKey),
    /// Not ours: pass untouched.
    Ignore,
    /// Broken IPv4/TCP/UDP header: drop and count.
    Malformed,
}

/// Classifies an Ethernet frame. Never panics.
///
/// IPv6: a fixed header cut short or a version other than 6 is malformed;
/// TCP or UDP after the fixed header and at most 4 hop-by-hop, routing (no
/// segments left) or destination-options headers is a flow (a fragment
/// header, another protocol or an extension header cut short is ignored);
/// a TCP or UDP header cut short is malformed.
pub fn classify(frame: &[u8]) -> Class {
    if frame.len() >= 14 && frame[12..14] == [0x86, 0xdd] {
        return classify6(&frame[14..]);
    }
    if frame.len() < 14 || frame[12..14] != [0x08, 0x00] {
        return Class::Ignore;
    }
    let ip = &frame[14..];
    if ip.len() < 20 {
        return Class::Malformed;
    }
    let ihl = usize::from(ip[0] & 0x0f);
    if ip[0] >> 4 != 4 || ihl < 5 {
        return Class::Malformed;
    }
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return Class::Ignore;
    }
    let proto = match ip[9] {
        6 => L4Proto::Tcp,
        17 => L4Proto::Udp,
        _ => return Class::Ignore,
    };
    let need = if proto == L4Proto::Tcp { 20 } else { 8 };
    let Some(l4) = ip.get(ihl * 4..ihl * 4 + need) else {
        return Class::Malformed;
    };
    let v4 = |o: usize| IpAddr::V4(Ipv4Addr::new(ip[o], ip[o + 1], ip[o + 2], ip[o + 3]));
    Class::Flow(FlowKey {
        src: v4(12),
        dst: v4(16),
        sport: u16::from_be_bytes([l4[0], l4[1]]),
        dport: u16::from_be_bytes([l4[2], l4[3]]),
        proto,
    })
}

/// Where an IPv6 packet's TCP or UDP header starts (from the IPv6
/// header) and its protocol number: past at most 4 hop-by-hop, routing
/// (with no segments left: the fixed header names the final destination)
/// and destination-options headers, the L4 header no further than 256
/// bytes past the fixed header. Anything else (a fragment header, ICMPv6,
/// an extension header cut short, a routing header with segments left) is
/// not a flow's packet.
fn l4_offset6(ip: &[u8]) -> Option<(u8, usize)> {
    let (mut next, mut off) = (*ip.get(6)?, 40);
    for _ in 0..4 {
        match next {
            6 | 17 => break,
            0 | 43 | 60 => {
                let h = ip.get(off..off + 4)?;
                if next == 43 && h[3] != 0 {
                    return None;
                }
                next = h[0];
                off += (usize::from(h[1]) + 1) * 8;
                if off > 40 + 256 {
                    return None;
                }
            }
            _ => return None,
        }
    }
    matches!(next, 6 | 17).then_some((next, off))
}

fn classify6(ip: &[u8]) -> Class {
    if ip.len() < 40 || ip[0] >> 4 != 6 {
        return Class::Malformed;
    }
    let Some((next, off)) = l4_offset6(ip) else {
        return Class::Ignore;
    };
    let proto = if next == 6 {
        L4Proto::Tcp
    } else {
        L4Proto::Udp
    };
    let need = if proto == L4Proto::Tcp { 20 } else { 8 };
    let Some(l4) = ip.get(off..off + need) else {
        return Class::Malformed;
    };
    let v6 = |o: usize| {
        let b: [u8; 16] = ip[o..o + 16].try_into().expect("16 bytes");
        IpAddr::V6(Ipv6Addr::from(b))
    };
    Class::Flow(FlowKey {
        src: v6(8),
        dst: v6(24),
        sport: u16::from_be_bytes([l4[0], l4[1]]),
        dport: u16::from_be_bytes([l4[2], l4[3]]),
        proto,
    })
}

/// A copy of an IPv4 or IPv6 TCP/UDP frame with new endpoints and the
/// checksums recomputed from scratch: the IPv4 header checksum, and the L4
/// checksum with its pseudo-header over the IPv4 total length or the IPv6
/// payload length (a zero UDP checksum stays zero). Endpoints of the other
/// family translate the frame ([`translate`], NAT46/64). `None` for frames
/// [`classify`] does not accept or endpoints of two families.
pub fn rewrite(frame: &[u8], src: SocketAddr, dst: SocketAddr) -> Option<Vec<u8>> {
    let Class::Flow(key) = classify(frame) else {
        return None;
    };
    if src.is_ipv6() != dst.is_ipv6() {
        return None;
    }
    if src.is_ipv6() != key.src.is_ipv6() {
        return translate(frame, key.proto, src, dst);
    }
    if key.src.is_ipv6() {
        return rewrite6(frame, key.proto, src, dst);
    }
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
        return None;
    };
    let mut out = frame.to_vec();
    let ihl = usize::from(out[14] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([out[16], out[17]]));
    let end = (14 + total).clamp(14 + ihl + 8, out.len());
    out[14 + 12..14 + 16].copy_from_slice(&s.octets());
    out[14 + 16..14 + 20].copy_from_slice(&d.octets());
    out[24..26].copy_from_slice(&[0, 0]);
    let c = internet_checksum(&out[14..14 + ihl]);
    out[24..26].copy_from_slice(&c.to_be_bytes());
    let l4 = 14 + ihl;
    out[l4..l4 + 2].copy_from_slice(&src.port().to_be_bytes());
    out[l4 + 2..l4 + 4].copy_from_slice(&dst.port().to_be_bytes());
    let csum = l4 + if key.proto == L4Proto::Tcp { 16 } else { 6 };
    if key.proto == L4Proto::Udp && out[csum..csum + 2] == [0, 0] {
        return Some(out);
    }
    out[csum..csum + 2].copy_from_slice(&[0, 0]);
    let mut c = l4_checksum(src.ip(), dst.ip(), key.proto.number(), &out[l4..end]);
    if key.proto == L4Proto::Udp && c == 0 {
        c = 0xffff;
    }
    out[csum..csum + 2].copy_from_slice(&c.to_be_bytes());
    Some(out)
}

fn rewrite6(frame: &[u8], proto: L4Proto, src: SocketAddr, dst: SocketAddr) -> Option<Vec<u8>> {
    let (IpAddr::V6(s), IpAddr::V6(d)) = (src.ip(), dst.ip()) else {
        return None;
    };
    let mut out = frame.to_vec();
    let (_, off) = l4_offset6(&out[14..])?;
    let payload = usize::from(u16::from_be_bytes([out[18], out[19]]));
    let l4 = 14 + off;
    let end = (l4 + payload.saturating_sub(off - 40)).clamp(l4 + 8, out.len());
    out[14 + 8..14 + 24].copy_from_slice(&s.octets());
    out[14 + 24..14 + 40].copy_from_slice(&d.octets());
    out[l4..l4 + 2].copy_from_slice(&src.port().to_be_bytes());
    out[l4 + 2..l4 + 4].copy_from_slice(&dst.port().to_be_bytes());
    let csum = l4 + if proto == L4Proto::Tcp { 16 } else { 6 };
    if proto == L4Proto::Udp && out[csum..csum + 2] == [0, 0] {
        return Some(out);
    }
    out[csum..csum + 2].copy_from_slice(&[0, 0]);
    let mut c = l4_checksum(src.ip(), dst.ip(), proto.number(), &out[l4..end]);
    if proto == L4Proto::Udp && c == 0 {
        c = 0xffff;
    }
    out[csum..csum + 2].copy_from_slice(&c.to_be_bytes());
    Some(out)
}

/// The frame translated to the other family (NAT46/64, after RFC 7915)
/// with endpoints `src` and `dst` of that family, built from scratch: the
/// Ethernet addresses kept and the EtherType changed; the L4 bytes (as many
/// as the IP header says, never past the frame) with the new ports and a
/// checksum computed over the new pseudo-header (always, so a zero IPv4 UDP
/// checksum gets one); IPv4 → IPv6: traffic class = TOS, flow label 0, hop
/// limit = TTL, IPv4 options dropped; IPv6 → IPv4: IHL 5, TOS = traffic
/// class, identification 0, DF, TTL = hop limit, extension headers
/// dropped. A TCP SYN's (or SYN-ACK's) MSS option is clamped for a route
/// of [`lb_core::nat46x64::DEFAULT_ROUTE_MTU`] bytes, the MTU of every
/// route the suite's dataplanes translate onto ([`translate_mtu`]).
pub fn translate(
    frame: &[u8],
    proto: L4Proto,
    src: SocketAddr,
    dst: SocketAddr,
) -> Option<Vec<u8>> {
    translate_mtu(frame, proto, src, dst, lb_core::nat46x64::DEFAULT_ROUTE_MTU)
}

/// [`translate`] onto a route of `route_mtu` bytes: a TCP SYN's MSS
/// option is lowered to [`lb_core::nat46x64::clamp_mss`] (never raised).
pub fn translate_mtu(
    frame: &[u8],
    proto: L4Proto,
    src: SocketAddr,
    dst: SocketAddr,
    route_mtu: u32,
) -> Option<Vec<u8>> {
    let ip = frame.get(14..)?;
    let (l4_off, l4_len, tos, ttl) = if ip[0] >> 4 == 6 {
        let payload = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
        let (_, off) = l4_offset6(ip)?;
        (
            off,
            payload.saturating_sub(off - 40),
            (ip[0] << 4) | (ip[1] >> 4),
            ip[7],
        )
    } else {
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        (ihl, total.saturating_sub(ihl), ip[1], ip[8])
    };
    let min = if proto == L4Proto::Tcp { 20 } else { 8 };
    let l4_len = l4_len.max(min).min(ip.len() - l4_off);
    let mut seg = ip[l4_off..l4_off + l4_len].to_vec();
    seg[0..2].copy_from_slice(&src.port().to_be_bytes());
    seg[2..4].copy_from_slice(&dst.port().to_be_bytes());
    let csum = if proto == L4Proto::Tcp { 16 } else { 6 };
    seg[csum..csum + 2].copy_from_slice(&[0, 0]);
    if proto == L4Proto::Tcp && seg[13] & 0x02 != 0 {
        if let Some((at, mss)) = find_mss(&seg) {
            let clamped = lb_core::nat46x64::clamp_mss(mss, src.is_ipv6(), route_mtu);
            seg[at..at + 2].copy_from_slice(&clamped.to_be_bytes());
        }
    }
    let mut c = l4_checksum(src.ip(), dst.ip(), proto.number(), &seg);
    if proto == L4Proto::Udp && c == 0 {
        c = 0xffff;
    }
    seg[csum..csum + 2].copy_from_slice(&c.to_be_bytes());
    let mut out = frame[..12].to_vec();
    match (src.ip(), dst.ip()) {
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            out.extend_from_slice(&[0x86, 0xdd]);
            out.push(0x60 | (tos >> 4));
            out.extend_from_slice(&[tos << 4, 0, 0]);
            out.extend_from_slice(&(l4_len as u16).to_be_bytes());
            out.extend_from_slice(&[proto.number(), ttl]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut h = [0u8; 20];
            h[0] = 0x45;
            h[1] = tos;
            h[2..4].copy_from_slice(&((20 + l4_len) as u16).to_be_bytes());
            h[6] = 0x40;
            h[8] = ttl;
            h[9] = proto.number();
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            let hc = internet_checksum(&h);
            h[10..12].copy_from_slice(&hc.to_be_bytes());
            out.extend_from_slice(&[0x08, 0x00]);
            out.extend_from_slice(&h);
        }
        _ => return None,
    }
    out.extend_from_slice(&seg);
    Some(out)
}

/// A frame wrapped in an outer IPv4 header as a DSR node sends it
/// (`lb_core::Encap::Ipip`, lb-ebpf's `bpf/lb_dsr.h`): the Ethernet header,
/// then version 4, IHL 5, the inner TOS, total length inner + 20,
/// Identification `id` (the backend port), DF, TTL 64, protocol 4, a valid
/// header checksum, `outer_src` -> `outer_dst`, then the inner IP packet
/// unchanged. `None` for IPv6 addresses or a frame without an IPv4 header.
pub fn encap_ipip(frame: &[u8], outer_src: IpAddr, outer_dst: IpAddr, id: u16) -> Option<Vec<u8>> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (outer_src, outer_dst) else {
        return None;
    };
    if frame.len() < 14 + 20 {
        return None;
    }
    let inner_len = u16::from_be_bytes([frame[16], frame[17]]);
    let mut outer = [0u8; 20];
    outer[0] = 0x45;
    outer[1] = frame[15];
    outer[2..4].copy_from_slice(&(inner_len + 20).to_be_bytes());
    outer[4..6].copy_from_slice(&id.to_be_bytes());
    outer[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
    outer[8] = 64;
    outer[9] = 4;
    outer[12..16].copy_from_slice(&s.octets());
    outer[16..20].copy_from_slice(&d.octets());
    let c = internet_checksum(&outer);
    outer[10..12].copy_from_slice(&c.to_be_bytes());
    let mut out = Vec::with_capacity(frame.len() + 20);
    out.extend_from_slice(&frame[..14]);
    out.extend_from_slice(&outer);
    out.extend_from_slice(&frame[14..]);
    Some(out)
}

/// A frame wrapped in an outer IPv6 header as a DSR node sends an IPv6 flow
/// (`lb_core::Encap::Ip6ip6`, lb-ebpf's `bpf/lb_dsr6.h`): the Ethernet
/// header, then version 6, the inner traffic class, flow label `port` (the
/// backend port), payload length inner + 40, next header 41, hop limit 64,
/// `outer_src` -> `outer_dst`, then the rest of the frame unchanged. `None`
/// for IPv4 addresses or a frame without an IPv6 header.
pub fn encap_ip6ip6(
    frame: &[u8],
    outer_src: IpAddr,
    outer_dst: IpAddr,
    port: u16,
) -> Option<Vec<u8>> {
    let (IpAddr::V6(s), IpAddr::V6(d)) = (outer_src, outer_dst) else {
        return None;
    };
    if frame.len() < 14 + 40 || frame[12..14] != [0x86, 0xdd] || frame[14] >> 4 != 6 {
        return None;
    }
    let inner_len = 40 + usize::from(u16::from_be_bytes([frame[18], frame[19]]));
    if inner_len > frame.len() - 14 {
        return None;
    }
    let tclass = u32::from(u16::from_be_bytes([frame[14], frame[15]]) >> 4) & 0xff;
    let mut outer = [0u8; 40];
    outer[0..4].copy_from_slice(&((6u32 << 28) | (tclass << 20) | u32::from(port)).to_be_bytes());
    outer[4..6].copy_from_slice(&(inner_len as u16).to_be_bytes());
    outer[6] = 41;
    outer[7] = 64;
    outer[8..24].copy_from_slice(&s.octets());
    outer[24..40].copy_from_slice(&d.octets());
    let mut out = Vec::with_capacity(frame.len() + 40);
    out.extend_from_slice(&frame[..14]);
    out.extend_from_slice(&outer);
    out.extend_from_slice(&frame[14..]);
    Some(out)
}

/// `frame` in `encap` (with the backend's `port`), as a DSR node sends it.
pub fn encap(frame: &[u8], encap: lb_core::Encap, port: u16) -> Option<Vec<u8>> {
    match encap {
        lb_core::Encap::Ipip {
            outer_src,
            outer_dst,
        } => encap_ipip(frame, outer_src, outer_dst, port),
        lb_core::Encap::Ip6ip6 {
            outer_src,
            outer_dst,
        } => encap_ip6ip6(frame, outer_src, outer_dst, port),
    }
}

/// `(src, dst)` of a flow key as socket addresses.
pub fn endpoints(key: &FlowKey) -> (SocketAddr, SocketAddr) {
    (
        SocketAddr::new(key.src, key.sport),
        SocketAddr::new(key.dst, key.dport),
    )
}

/// The offset (in `tcp`, a TCP header and what follows) and value of the
/// MSS option's value, if the header has a well-formed one: options walked
/// from byte 20 to the data offset, stopping at the end-of-list option or
/// a malformed length.
fn find_mss(tcp: &[u8]) -> Option<(usize, u16)> {
    let end = (usize::from(tcp.get(12)? >> 4) * 4).min(tcp.len());
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
                    return Some((i + 2, u16::from_be_bytes([tcp[i + 2], tcp[i + 3]])));
                }
                i += len;
            }
        }
    }
    None
}

/// The MSS option of an Ethernet frame's TCP header (IPv4, or IPv6
/// without extension headers), if it has one.
pub fn tcp_mss(frame: &[u8]) -> Option<u16> {
    let l4 = tcp_offset(frame)?;
    find_mss(frame.get(l4..)?).map(|(_, mss)| mss)
}

fn tcp_offset(frame: &[u8]) -> Option<usize> {
    match classify(frame) {
        Class::Flow(k) if k.proto == L4Proto::Tcp => Some(if k.src.is_ipv6() {
            14 + 40
        } else {
            14 + usize::from(frame[14] & 0x0f) * 4
        }),
        _ => None,
    }
}

/// An MSS option (kind 2, length 4).
pub fn mss_option(mss: u16) -> [u8; 4] {
    let [a, b] = mss.to_be_bytes();
    [2, 4, a, b]
}

/// `frame`, a TCP frame (IPv4 or IPv6) whose header has no options, with
/// `opts` added to the TCP header (padded with end-of-list bytes to a
/// multiple of 4, at most 40 bytes), the data offset, IP length, IPv4
/// header checksum and TCP checksum recomputed. `None` for another frame.
pub fn with_tcp_options(frame: &[u8], opts: &[u8]) -> Option<Vec<u8>> {
    let l4 = tcp_offset(frame)?;
    if frame.get(l4 + 12)? >> 4 != 5 || opts.len() > 40 {
        return None;
    }
    let mut padded = opts.to_vec();
    padded.resize(opts.len().div_ceil(4) * 4, 0);
    let mut out = frame[..l4 + 20].to_vec();
    out.extend_from_slice(&padded);
    out.extend_from_slice(&frame[l4 + 20..]);
    out[l4 + 12] = ((5 + padded.len() / 4) as u8) << 4;
    let v6 = out[12..14] == [0x86, 0xdd];
    let (src, dst): (IpAddr, IpAddr) = if v6 {
        let a: [u8; 16] = out[22..38].try_into().ok()?;
        let b: [u8; 16] = out[38..54].try_into().ok()?;
        let len = u16::from_be_bytes([out[18], out[19]]) + padded.len() as u16;
        out[18..20].copy_from_slice(&len.to_be_bytes());
        (Ipv6Addr::from(a).into(), Ipv6Addr::from(b).into())
    } else {
        let len = u16::from_be_bytes([out[16], out[17]]) + padded.len() as u16;
        out[16..18].copy_from_slice(&len.to_be_bytes());
        out[24..26].copy_from_slice(&[0, 0]);
        let c = internet_checksum(&out[14..l4]);
        out[24..26].copy_from_slice(&c.to_be_bytes());
        let a: [u8; 4] = out[26..30].try_into().ok()?;
        let b: [u8; 4] = out[30..34].try_into().ok()?;
        (Ipv4Addr::from(a).into(), Ipv4Addr::from(b).into())
    };
    out[l4 + 16..l4 + 18].copy_from_slice(&[0, 0]);
    let c = l4_checksum(src, dst, 6, &out[l4..]);
    out[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
    Some(out)
}
