//! ICMP errors about NAT46/64 flows, translated to the client's family in
//! place (RFC 7915 §4.2 and §5.2), as lb-ebpf's `bpf/lb_nat46_icmp.h`
//! does.
//!
//! An error from the backends' side quotes the packet the node sent to the
//! backend (node:SNAT port -> backend, in the backend's family); the client
//! gets the error of its own family about the packet it sent:
//!
//! * type and code mapped as RFC 7915 says ([`map_6to4`], [`map_4to6`]):
//!   ICMPv6 destination unreachable -> ICMPv4 host unreachable (no route,
//!   beyond scope, address unreachable), communication administratively
//!   prohibited, port unreachable; packet too big -> fragmentation needed
//!   with the MTU − 20 (at least 68); time exceeded -> time exceeded. And
//!   back: ICMPv4 unreachable codes -> no route, administratively
//!   prohibited or port unreachable; protocol unreachable -> parameter
//!   problem (unrecognized next header); fragmentation needed -> packet too
//!   big with the MTU + 20, at least 1280 (an MTU of 0, from a router older
//!   than RFC 1191, is the RFC 1191 plateau below the quoted length);
//!   time exceeded -> time exceeded. Any other error has no equivalent:
//!   [`IcmpXlateError::Untranslatable`] (the caller drops and counts it).
//! * The outer header: source the frontend (no address of the client's
//!   family names the backend or a router of the other family), destination
//!   the client, traffic class/TOS and hop limit/TTL carried over; IPv4 ID 0
//!   and DF clear (RFC 7915 §5.1: an error of at most 1280 bytes becomes at
//!   most 1240), IPv6 flow label 0.
//! * The quote as the data path translates packets ([`crate::nat46x64`]):
//!   client -> frontend with their ports, lengths from the quoted header
//!   (the quote may be cut), IPv4 ID 0 and DF with a fresh header checksum,
//!   IPv6 flow label 0; the quoted TCP/UDP checksum, when quoted, adjusted
//!   for the new pseudo-header and ports (RFC 1624).
//! * The message (ICMP header and quote) is cut to 1240 bytes: an ICMPv6
//!   error fits the IPv6 minimum MTU (RFC 4443 §2.4 (c)), an ICMPv4 one
//!   1260 bytes (DF clear, RFC 7915 §5.1).
//! * The ICMP checksum is computed over the new message (ICMPv6: with its
//!   pseudo-header).
//!
//! Only errors without IPv4 options or IPv6 extension headers, outer or
//! quoted, and with at least 8 bytes of quoted TCP/UDP, are translated
//! ([`IcmpXlateError::NotOurs`] otherwise), as same-family errors. The
//! frame grows by 40 bytes (ICMPv4 -> ICMPv6): the buffer needs
//! [`HEADROOM`] bytes past it. No allocation.

use std::net::IpAddr;

use crate::nat46x64::Endpoint;
use crate::packet::{addr_sum, fold, sum_words, ETH_HLEN};

/// How many bytes past a frame a buffer needs for any error translation
/// (two IPv4 headers of 20 bytes become two IPv6 headers of 40).
pub const HEADROOM: usize = 40;

/// The largest ICMPv6 error (the IPv6 minimum MTU).
const IPV6_MIN_MTU: u32 = 1280;
/// The largest translated message (ICMP header and quote).
const MSG_MAX: usize = IPV6_MIN_MTU as usize - 40;
/// The IPv4 minimum MTU.
const IPV4_MIN_MTU: u32 = 68;
/// RFC 1191's MTU plateaus, largest first.
const PLATEAUS: [u16; 11] = [
    65535, 32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68,
];

/// Why an error was not translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpXlateError {
    /// Not an ICMP error quoting a TCP/UDP packet this module handles (no
    /// options or extension headers, 8 bytes of L4), or endpoints not of
    /// the other family: leave it alone.
    NotOurs,
    /// An error with no equivalent in the client's family: drop it.
    Untranslatable,
    /// The buffer has no room for the bigger headers: drop it.
    NoRoom,
}

/// ICMPv6 `(type, code, rest of header)` -> ICMPv4 (RFC 7915 §5.2).
pub fn map_6to4(ty: u8, code: u8, rest: [u8; 4]) -> Option<(u8, u8, [u8; 4])> {
    Some(match (ty, code) {
        (1, 0 | 2 | 3) => (3, 1, [0; 4]),
        (1, 1) => (3, 10, [0; 4]),
        (1, 4) => (3, 3, [0; 4]),
        (2, _) => {
            let mtu = u32::from_be_bytes(rest).saturating_sub(20);
            let m = (mtu.clamp(IPV4_MIN_MTU, 0xffff) as u16).to_be_bytes();
            (3, 4, [0, 0, m[0], m[1]])
        }
        (3, 0 | 1) => (11, code, [0; 4]),
        _ => return None,
    })
}

/// ICMPv4 `(type, code, rest of header)` -> ICMPv6 (RFC 7915 §4.2);
/// `quoted_total` is the quoted IPv4 total length (for a fragmentation
/// needed without an MTU).
pub fn map_4to6(ty: u8, code: u8, rest: [u8; 4], quoted_total: u16) -> Option<(u8, u8, [u8; 4])> {
    Some(match (ty, code) {
        (3, 0 | 1 | 5 | 6 | 7 | 8 | 11 | 12) => (1, 0, [0; 4]),
        (3, 9 | 10 | 13 | 15) => (1, 1, [0; 4]),
        (3, 3) => (1, 4, [0; 4]),
        (3, 2) => (4, 1, 6u32.to_be_bytes()),
        (3, 4) => {
            let mut mtu = u16::from_be_bytes([rest[2], rest[3]]);
            if mtu == 0 {
                mtu = PLATEAUS
                    .into_iter()
                    .find(|&p| p < quoted_total)
                    .unwrap_or(68);
            }
            (2, 0, (u32::from(mtu) + 20).max(IPV6_MIN_MTU).to_be_bytes())
        }
        (11, 0 | 1) => (3, code, [0; 4]),
        _ => return None,
    })
}

fn word(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The fields of the error the translation needs, read before any byte
/// moves.
struct Parsed {
    v6: bool,
    tos: u8,
    ttl: u8,
    ty: u8,
    code: u8,
    rest: [u8; 4],
    q_tos: u8,
    q_ttl: u8,
    q_len: u16,
    proto: u8,
    q_src: IpAddr,
    q_dst: IpAddr,
    l4: usize,
    end: usize,
}

fn ip_at(b: &[u8], at: usize, v6: bool) -> IpAddr {
    if v6 {
        let a: [u8; 16] = b[at..at + 16].try_into().unwrap_or([0; 16]);
        IpAddr::from(a)
    } else {
        let a: [u8; 4] = b[at..at + 4].try_into().unwrap_or([0; 4]);
        IpAddr::from(a)
    }
}

fn parse(frame: &[u8]) -> Option<Parsed> {
    let ip = ETH_HLEN;
    let v6 = match frame.get(12..14)? {
        [0x08, 0x00] => false,
        [0x86, 0xdd] => true,
        _ => return None,
    };
    let (tos, ttl, icmp, end) = if v6 {
        let h = frame.get(ip..ip + 40)?;
        if h[0] >> 4 != 6 || h[6] != 58 {
            return None;
        }
        let end = ip + 40 + usize::from(word(h, 4));
        ((h[0] << 4) | (h[1] >> 4), h[7], ip + 40, end)
    } else {
        let h = frame.get(ip..ip + 20)?;
        if h[0] != 0x45 || h[9] != 1 || word(h, 6) & 0x3fff != 0 {
            return None;
        }
        (h[1], h[8], ip + 20, ip + usize::from(word(h, 2)))
    };
    let end = end.min(frame.len());
    let m = frame.get(icmp..icmp + 8)?;
    let (ty, code, rest) = (m[0], m[1], [m[4], m[5], m[6], m[7]]);
    let inner = icmp + 8;
    let (q_tos, q_ttl, q_len, proto, l4) = if v6 {
        let h = frame.get(inner..inner + 40)?;
        if h[0] >> 4 != 6 {
            return None;
        }
        (
            (h[0] << 4) | (h[1] >> 4),
            h[7],
            word(h, 4),
            h[6],
            inner + 40,
        )
    } else {
        let h = frame.get(inner..inner + 20)?;
        if h[0] != 0x45 {
            return None;
        }
        (h[1], h[8], word(h, 2), h[9], inner + 20)
    };
    if (proto != 6 && proto != 17) || l4 + 8 > end {
        return None;
    }
    let (s, d) = if v6 { (8, 24) } else { (12, 16) };
    Some(Parsed {
        v6,
        tos,
        ttl,
        ty,
        code,
        rest,
        q_tos,
        q_ttl,
        q_len,
        proto,
        q_src: ip_at(frame, inner + s, v6),
        q_dst: ip_at(frame, inner + d, v6),
        l4,
        end,
    })
}

/// Translates the ICMP error `buf[..len]` about a NAT46/64 flow for
/// `client`, which sent its packet to `frontend` (both of the other
/// family). Returns the new frame length; on error `buf` is unchanged.
pub fn translate_error(
    buf: &mut [u8],
    len: usize,
    client: Endpoint,
    frontend: Endpoint,
) -> Result<usize, IcmpXlateError> {
    let len = len.min(buf.len());
    let p = parse(&buf[..len]).ok_or(IcmpXlateError::NotOurs)?;
    if client.addr.is_ipv6() == p.v6 || frontend.addr.is_ipv6() == p.v6 {
        return Err(IcmpXlateError::NotOurs);
    }
    let (ty, code, rest) = if p.v6 {
        map_6to4(p.ty, p.code, p.rest)
    } else {
        map_4to6(p.ty, p.code, p.rest, p.q_len)
    }
    .ok_or(IcmpXlateError::Untranslatable)?;
    // The new layout: outer header, ICMP header, quoted header, quoted L4.
    let (ohl, qhl) = if p.v6 { (20, 20) } else { (40, 40) };
    let icmp = ETH_HLEN + ohl;
    let inner = icmp + 8;
    let new_l4 = inner + qhl;
    // The message fits MSG_MAX (an ICMPv6 error the IPv6 minimum MTU).
    let l4_len = (p.end - p.l4).min(MSG_MAX - 8 - qhl);
    if new_l4 + l4_len > buf.len() {
        return Err(IcmpXlateError::NoRoom);
    }

    // The quoted L4 header: ports, and the checksum when quoted.
    let l4 = p.l4;
    let csum_at = l4 + if p.proto == 6 { 16 } else { 6 };
    if csum_at + 2 <= l4 + l4_len {
        let c = word(buf, csum_at);
        if !(p.proto == 17 && c == 0) {
            let old = addr_sum(p.q_src) + addr_sum(p.q_dst) + sum_words(&buf[l4..l4 + 4]);
            let new = addr_sum(client.addr)
                + addr_sum(frontend.addr)
                + u32::from(client.port)
                + u32::from(frontend.port);
            let mut n = !fold(u32::from(!c) + u32::from(!fold(old)) + u32::from(fold(new)));
            if p.proto == 17 && n == 0 {
                n = 0xffff;
            }
            buf[csum_at..csum_at + 2].copy_from_slice(&n.to_be_bytes());
        }
    }
    buf[l4..l4 + 2].copy_from_slice(&client.port.to_be_bytes());
    buf[l4 + 2..l4 + 4].copy_from_slice(&frontend.port.to_be_bytes());
    buf.copy_within(l4..l4 + l4_len, new_l4);

    // The quoted header.
    match (client.addr, frontend.addr) {
        (IpAddr::V4(c), IpAddr::V4(f)) => {
            let h = &mut buf[inner..new_l4];
            h.fill(0);
            h[0] = 0x45;
            h[1] = p.q_tos;
            h[2..4].copy_from_slice(&p.q_len.saturating_add(20).to_be_bytes());
            h[6] = 0x40;
            h[8] = p.q_ttl;
            h[9] = p.proto;
            h[12..16].copy_from_slice(&c.octets());
            h[16..20].copy_from_slice(&f.octets());
            let hc = !fold(sum_words(h));
            h[10..12].copy_from_slice(&hc.to_be_bytes());
        }
        (IpAddr::V6(c), IpAddr::V6(f)) => {
            let h = &mut buf[inner..new_l4];
            h[0] = 0x60 | (p.q_tos >> 4);
            h[1] = p.q_tos << 4;
            h[2] = 0;
            h[3] = 0;
            h[4..6].copy_from_slice(&p.q_len.saturating_sub(20).to_be_bytes());
            h[6] = p.proto;
            h[7] = p.q_ttl;
            h[8..24].copy_from_slice(&c.octets());
            h[24..40].copy_from_slice(&f.octets());
        }
        _ => return Err(IcmpXlateError::NotOurs),
    }
    // The ICMP header and checksum.
    let end = new_l4 + l4_len;
    buf[icmp] = ty;
    buf[icmp + 1] = code;
    buf[icmp + 2..icmp + 4].copy_from_slice(&[0, 0]);
    buf[icmp + 4..icmp + 8].copy_from_slice(&rest);
    let msg_len = end - icmp;
    let mut sum = sum_words(&buf[icmp..end]);
    if !p.v6 {
        sum += addr_sum(frontend.addr) + addr_sum(client.addr) + 58 + msg_len as u32;
    }
    let c = !fold(sum);
    buf[icmp + 2..icmp + 4].copy_from_slice(&c.to_be_bytes());
    // The outer header.
    match (frontend.addr, client.addr) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let h = &mut buf[ETH_HLEN..icmp];
            h.fill(0);
            h[0] = 0x45;
            h[1] = p.tos;
            h[2..4].copy_from_slice(&((20 + msg_len) as u16).to_be_bytes());
            h[8] = p.ttl;
            h[9] = 1;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            let hc = !fold(sum_words(h));
            h[10..12].copy_from_slice(&hc.to_be_bytes());
            buf[12..14].copy_from_slice(&[0x08, 0x00]);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let h = &mut buf[ETH_HLEN..icmp];
            h[0] = 0x60 | (p.tos >> 4);
            h[1] = p.tos << 4;
            h[2] = 0;
            h[3] = 0;
            h[4..6].copy_from_slice(&(msg_len as u16).to_be_bytes());
            h[6] = 58;
            h[7] = p.ttl;
            h[8..24].copy_from_slice(&s.octets());
            h[24..40].copy_from_slice(&d.octets());
            buf[12..14].copy_from_slice(&[0x86, 0xdd]);
        }
        _ => return Err(IcmpXlateError::NotOurs),
    }
    Ok(end)
}
