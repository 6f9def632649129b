//! Reference translation of an ICMP/ICMPv6 error about a NAT46/64 flow to
//! the client's family (after RFC 7915 §4.2 and §5.2), written
//! independently of any dataplane and built from scratch.
//!
//! The error arrives from the backends' side about the packet the node
//! sent (SNAT address:port -> backend, in the backend's family); the
//! client gets the error of its own family about the packet it sent
//! (client -> frontend):
//!
//! * type and code mapped as [`map_6to4`] and [`map_4to6`] say (an error
//!   they do not map is dropped);
//! * the outer header: source the frontend (the only address of the
//!   client's family the error can come from), destination the client,
//!   traffic class/TOS and hop limit/TTL carried over; IPv4: ID 0, DF
//!   clear (RFC 7915 §5.1: the packet is at most 1260 bytes); IPv6: flow
//!   label 0;
//! * the quote translated as the data path translates packets
//!   ([`super::reference::translate`]): client -> frontend, lengths from
//!   the quoted header (the quote may be cut), IPv4: ID 0, DF, a fresh
//!   header checksum; IPv6: flow label 0; the quoted TCP/UDP checksum,
//!   when quoted, adjusted for the new pseudo-header and ports (RFC 1624:
//!   a cut quote cannot be summed again);
//! * the message (ICMP header and quote) is cut to [`MSG_MAX`] bytes: an
//!   ICMPv6 error fits the IPv6 minimum MTU (RFC 4443 §2.4 (c)), an ICMPv4
//!   one 1260 bytes (so DF stays clear, RFC 7915 §5.1);
//! * the ICMP checksum computed (ICMPv6: with its pseudo-header).

use std::net::{IpAddr, SocketAddr};

use crate::packets::{internet_checksum, l4_checksum};

/// RFC 1191's MTU plateaus, largest first.
pub const PLATEAUS: [u16; 11] = [
    65535, 32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68,
];

/// The largest translated message (ICMP header and quote): an IPv6 error
/// of 1280 bytes.
pub const MSG_MAX: usize = 1280 - 40;

/// The IPv6 minimum MTU.
pub const IPV6_MIN_MTU: u32 = 1280;
/// The IPv4 minimum MTU.
pub const IPV4_MIN_MTU: u32 = 68;

/// ICMPv6 `(type, code, rest of header)` -> ICMPv4 (RFC 7915 §5.2), `None`
/// when it has no ICMPv4 equivalent.
pub fn map_6to4(ty: u8, code: u8, rest: [u8; 4]) -> Option<(u8, u8, [u8; 4])> {
    match (ty, code) {
        // Destination unreachable.
        (1, 0 | 2 | 3) => Some((3, 1, [0; 4])),
        (1, 1) => Some((3, 10, [0; 4])),
        (1, 4) => Some((3, 3, [0; 4])),
        // Packet too big: fragmentation needed, MTU - 20.
        (2, _) => {
            let mtu = u32::from_be_bytes(rest)
                .saturating_sub(20)
                .clamp(IPV4_MIN_MTU, 0xffff) as u16;
            let m = mtu.to_be_bytes();
            Some((3, 4, [0, 0, m[0], m[1]]))
        }
        // Time exceeded.
        (3, 0 | 1) => Some((11, code, [0; 4])),
        _ => None,
    }
}

/// ICMPv4 `(type, code, rest of header)` -> ICMPv6 (RFC 7915 §4.2), `None`
/// when it has no ICMPv6 equivalent. `quoted_total` is the quoted IPv4
/// header's total length (for a fragmentation needed without an MTU).
pub fn map_4to6(ty: u8, code: u8, rest: [u8; 4], quoted_total: u16) -> Option<(u8, u8, [u8; 4])> {
    match (ty, code) {
        (3, 0 | 1 | 5 | 6 | 7 | 8 | 11 | 12) => Some((1, 0, [0; 4])),
        (3, 9 | 10 | 13 | 15) => Some((1, 1, [0; 4])),
        (3, 3) => Some((1, 4, [0; 4])),
        // Protocol unreachable: parameter problem, unrecognized next
        // header, pointing at the next header field.
        (3, 2) => Some((4, 1, 6u32.to_be_bytes())),
        // Fragmentation needed: packet too big, MTU + 20, at least the
        // IPv6 minimum; no MTU (a pre-RFC 1191 router): the plateau below
        // the quoted length.
        (3, 4) => {
            let mut mtu = u16::from_be_bytes([rest[2], rest[3]]);
            if mtu == 0 {
                mtu = PLATEAUS
                    .into_iter()
                    .find(|&p| p < quoted_total)
                    .unwrap_or(68);
            }
            Some((2, 0, (u32::from(mtu) + 20).max(IPV6_MIN_MTU).to_be_bytes()))
        }
        (11, 0 | 1) => Some((3, code, [0; 4])),
        _ => None,
    }
}

fn sum16(bytes: &[u8]) -> u32 {
    bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut s: u32) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fn octets(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The quoted L4 bytes `l4` (ports and maybe a checksum) with new ports,
/// the checksum adjusted from the old pseudo-header addresses and ports to
/// the new ones.
fn quoted_l4(
    l4: &[u8],
    proto: u8,
    old: (IpAddr, IpAddr),
    new: (SocketAddr, SocketAddr),
) -> Vec<u8> {
    let mut out = l4.to_vec();
    let at = match proto {
        6 => 16,
        _ => 6,
    };
    if let Some(c) = l4.get(at..at + 2) {
        let c = u16::from_be_bytes([c[0], c[1]]);
        if !(proto == 17 && c == 0) {
            let old_sum = sum16(&octets(old.0)) + sum16(&octets(old.1)) + sum16(&l4[0..4]);
            let mut ports = new.0.port().to_be_bytes().to_vec();
            ports.extend_from_slice(&new.1.port().to_be_bytes());
            let new_sum = sum16(&octets(new.0.ip())) + sum16(&octets(new.1.ip())) + sum16(&ports);
            // RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m').
            let mut n = !fold(u32::from(!c) + u32::from(!fold(old_sum)) + u32::from(fold(new_sum)));
            if proto == 17 && n == 0 {
                n = 0xffff;
            }
            out[at..at + 2].copy_from_slice(&n.to_be_bytes());
        }
    }
    out[0..2].copy_from_slice(&new.0.port().to_be_bytes());
    out[2..4].copy_from_slice(&new.1.port().to_be_bytes());
    out
}

/// The error frame `frame` (Ethernet, then an ICMP or ICMPv6 error quoting
/// a TCP/UDP packet with at least 8 bytes of L4) translated for `client`,
/// which sent its packet to `frontend` (both of the other family). `None`
/// when the error has no equivalent (the dataplane drops it) or the frame
/// is not such an error.
pub fn translate_icmp_error(
    frame: &[u8],
    client: SocketAddr,
    frontend: SocketAddr,
) -> Option<Vec<u8>> {
    let ip = frame.get(14..)?;
    let v6 = frame.get(12..14)? == [0x86, 0xdd];
    if client.is_ipv6() == v6 || frontend.is_ipv6() == v6 {
        return None;
    }
    let (ohl, tos, ttl) = if v6 {
        (40, (ip[0] << 4) | (ip[1] >> 4), ip[7])
    } else {
        (usize::from(ip[0] & 0x0f) * 4, ip[1], ip[8])
    };
    let icmp = ip.get(ohl..)?;
    let (ty, code, rest) = (icmp[0], icmp[1], [icmp[4], icmp[5], icmp[6], icmp[7]]);
    let inner = icmp.get(8..)?;
    // The quoted header and what it says.
    let (ihl, proto, q_tos, q_ttl, q_len, q_src, q_dst) = if v6 {
        let h = inner.get(..40)?;
        let s: [u8; 16] = h[8..24].try_into().ok()?;
        let d: [u8; 16] = h[24..40].try_into().ok()?;
        let len = u16::from_be_bytes([h[4], h[5]]);
        (
            40,
            h[6],
            (h[0] << 4) | (h[1] >> 4),
            h[7],
            len,
            IpAddr::from(s),
            IpAddr::from(d),
        )
    } else {
        let h = inner.get(..20)?;
        let s: [u8; 4] = h[12..16].try_into().ok()?;
        let d: [u8; 4] = h[16..20].try_into().ok()?;
        let total = u16::from_be_bytes([h[2], h[3]]);
        (
            20,
            h[9],
            h[1],
            h[8],
            total,
            IpAddr::from(s),
            IpAddr::from(d),
        )
    };
    let l4 = inner.get(ihl..)?;
    if l4.len() < 8 || (proto != 6 && proto != 17) {
        return None;
    }
    let (nty, ncode, nrest) = if v6 {
        map_6to4(ty, code, rest)?
    } else {
        map_4to6(ty, code, rest, q_len)?
    };
    let l4 = quoted_l4(l4, proto, (q_src, q_dst), (client, frontend));
    // The translated quote's IP header.
    let mut quote = Vec::new();
    match (client.ip(), frontend.ip()) {
        (IpAddr::V4(c), IpAddr::V4(f)) => {
            let mut h = [0u8; 20];
            h[0] = 0x45;
            h[1] = q_tos;
            h[2..4].copy_from_slice(&q_len.saturating_add(20).to_be_bytes());
            h[6] = 0x40;
            h[8] = q_ttl;
            h[9] = proto;
            h[12..16].copy_from_slice(&c.octets());
            h[16..20].copy_from_slice(&f.octets());
            let hc = internet_checksum(&h);
            h[10..12].copy_from_slice(&hc.to_be_bytes());
            quote.extend_from_slice(&h);
        }
        (IpAddr::V6(c), IpAddr::V6(f)) => {
            quote.push(0x60 | (q_tos >> 4));
            quote.extend_from_slice(&[q_tos << 4, 0, 0]);
            quote.extend_from_slice(&q_len.saturating_sub(20).to_be_bytes());
            quote.extend_from_slice(&[proto, q_ttl]);
            quote.extend_from_slice(&c.octets());
            quote.extend_from_slice(&f.octets());
        }
        _ => return None,
    }
    quote.extend_from_slice(&l4);
    let mut msg = vec![nty, ncode, 0, 0];
    msg.extend_from_slice(&nrest);
    msg.extend_from_slice(&quote);
    msg.truncate(MSG_MAX);
    let mut out = frame[..12].to_vec();
    match (frontend.ip(), client.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let c = internet_checksum(&msg);
            msg[2..4].copy_from_slice(&c.to_be_bytes());
            let mut h = [0u8; 20];
            h[0] = 0x45;
            h[1] = tos;
            h[2..4].copy_from_slice(&((20 + msg.len()) as u16).to_be_bytes());
            h[8] = ttl;
            h[9] = 1;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            let hc = internet_checksum(&h);
            h[10..12].copy_from_slice(&hc.to_be_bytes());
            out.extend_from_slice(&[0x08, 0x00]);
            out.extend_from_slice(&h);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let c = l4_checksum(frontend.ip(), client.ip(), 58, &msg);
            msg[2..4].copy_from_slice(&c.to_be_bytes());
            out.extend_from_slice(&[0x86, 0xdd]);
            out.push(0x60 | (tos >> 4));
            out.extend_from_slice(&[tos << 4, 0, 0]);
            out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
            out.extend_from_slice(&[58, ttl]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        _ => return None,
    }
    out.extend_from_slice(&msg);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtus_follow_rfc_7915() {
        assert_eq!(
            map_6to4(2, 0, 1400u32.to_be_bytes()),
            Some((3, 4, [0, 0, 0x05, 0x64]))
        );
        assert_eq!(
            map_4to6(3, 4, [0, 0, 0x05, 0x78], 1500),
            Some((2, 0, 1420u32.to_be_bytes()))
        );
        // Below the IPv6 minimum: clamped.
        assert_eq!(
            map_4to6(3, 4, [0, 0, 0x03, 0xe8], 1500),
            Some((2, 0, 1280u32.to_be_bytes()))
        );
        // No MTU: the plateau below 4000 is 2002.
        assert_eq!(
            map_4to6(3, 4, [0; 4], 4000),
            Some((2, 0, 2022u32.to_be_bytes()))
        );
        assert_eq!(map_4to6(3, 14, [0; 4], 100), None);
        assert_eq!(map_6to4(1, 5, [0; 4]), None);
        assert_eq!(map_6to4(4, 0, [0; 4]), None);
    }
}
