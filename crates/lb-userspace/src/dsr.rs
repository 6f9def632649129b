//! The node side of direct server return: a client's frame wrapped, in
//! place, in the outer IPv4 header of [`lb_core::Encap::Ipip`], byte for
//! byte as lb-ebpf's `bpf/lb_dsr.h` builds it (the conformance suite's
//! reference is `lb_testkit::conformance::reference::encap_ipip`).
//!
//! The outer header: version 4, IHL 5, the inner TOS, total length inner +
//! 20, Identification the backend's port (with DF set the datagram is
//! atomic and the field is free, RFC 6864; the backend side reads it for a
//! flow's first packet), DF, TTL 64, protocol 4 (IPIP), the node's address
//! to the backend's. The inner packet is the client's, unchanged.
//!
//! An IPv6 flow ([`lb_core::Encap::Ip6ip6`], [`encap_ip6ip6`], lb-ebpf's
//! `bpf/lb_dsr6.h`) gets an outer IPv6 header instead: version 6, the inner
//! traffic class, the backend's port as flow label, payload length inner +
//! 40, next header 41 (IPv6-in-IPv6), hop limit 64, node to backend.

use std::net::IpAddr;

/// Ethernet header length.
const ETH_HLEN: usize = 14;
/// The outer header's length: what encapsulation adds to a frame.
pub const OVERHEAD: usize = 20;
/// IPv4's "don't fragment" flag in the flags/fragment-offset field.
const DF: u16 = 0x4000;
/// IP protocol number of IPv4-in-IPv4.
const IPPROTO_IPIP: u8 = 4;

/// The outer IPv6 header's length: what [`encap_ip6ip6`] adds.
pub const OVERHEAD6: usize = 40;
/// IPv6 next header of IPv6-in-IPv6.
const IPPROTO_IPV6: u8 = 41;

/// Wraps the IPv6 frame `buf[..len]` in an outer IPv6 header `outer_src`
/// -> `outer_dst` carrying `port` (the backend's) in its flow label; returns
/// the new frame length (Ethernet padding after the inner packet is
/// dropped). Needs [`OVERHEAD6`] bytes of `buf` past the frame.
///
/// ```
/// use lb_userspace::dsr::{encap_ip6ip6, OVERHEAD6};
/// let mut buf = [0u8; 14 + 40 + 8 + OVERHEAD6];
/// buf[12..14].copy_from_slice(&[0x86, 0xdd]);
/// buf[14] = 0x60;
/// buf[18..20].copy_from_slice(&8u16.to_be_bytes());
/// let n = encap_ip6ip6(&mut buf, 62, "fd00::1".parse().unwrap(),
///                      "fd00::2".parse().unwrap(), 8080).unwrap();
/// assert_eq!(n, 14 + 40 + 48);
/// assert_eq!(buf[14 + 6], 41); // IPv6-in-IPv6
/// assert_eq!(buf[14 + 40], 0x60); // the inner header follows
/// ```
pub fn encap_ip6ip6(
    buf: &mut [u8],
    len: usize,
    outer_src: IpAddr,
    outer_dst: IpAddr,
    port: u16,
) -> Result<usize, EncapError> {
    let (IpAddr::V6(src), IpAddr::V6(dst)) = (outer_src, outer_dst) else {
        return Err(EncapError::FamilyMismatch);
    };
    let frame = buf.get(..len).ok_or(EncapError::NotIpv6)?;
    if frame.len() < ETH_HLEN + 40 || frame[12..14] != [0x86, 0xdd] || frame[ETH_HLEN] >> 4 != 6 {
        return Err(EncapError::NotIpv6);
    }
    let inner_len = 40 + usize::from(u16::from_be_bytes([frame[18], frame[19]]));
    if ETH_HLEN + inner_len > len {
        return Err(EncapError::NotIpv6);
    }
    let out_len = ETH_HLEN + OVERHEAD6 + inner_len;
    if out_len > buf.len() || inner_len > usize::from(u16::MAX) {
        return Err(EncapError::NoRoom);
    }
    let tclass = u32::from(u16::from_be_bytes([buf[ETH_HLEN], buf[ETH_HLEN + 1]]) >> 4) & 0xff;
    buf.copy_within(ETH_HLEN..ETH_HLEN + inner_len, ETH_HLEN + OVERHEAD6);
    let outer = &mut buf[ETH_HLEN..ETH_HLEN + OVERHEAD6];
    outer[0..4].copy_from_slice(&((6u32 << 28) | (tclass << 20) | u32::from(port)).to_be_bytes());
    outer[4..6].copy_from_slice(&(inner_len as u16).to_be_bytes());
    outer[6] = IPPROTO_IPV6;
    outer[7] = 64;
    outer[8..24].copy_from_slice(&src.octets());
    outer[24..40].copy_from_slice(&dst.octets());
    Ok(out_len)
}

/// Why a frame could not be encapsulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncapError {
    /// The buffer has fewer than [`OVERHEAD`] bytes past the frame.
    #[error("no room for the outer header past the frame")]
    NoRoom,
    /// The frame is not an IPv4 packet over Ethernet, or is truncated.
    #[error("not a whole IPv4 frame")]
    NotIpv4,
    /// The outer addresses are IPv6 (IPIP here is over IPv4 only).
    #[error("IPIP encapsulation is over IPv4 only")]
    Ipv6Outer,
    /// The frame is not an IPv6 packet over Ethernet, or is truncated.
    #[error("not a whole IPv6 frame")]
    NotIpv6,
    /// The outer addresses are not both IPv6 ([`encap_ip6ip6`]).
    #[error("IPv6-in-IPv6 encapsulation needs IPv6 outer addresses")]
    FamilyMismatch,
}

/// Wraps the frame `buf[..len]` in an outer IPv4 header `outer_src` ->
/// `outer_dst` carrying `id` (the backend's port) in its Identification
/// field; returns the new frame length (Ethernet padding after the inner
/// packet is dropped). Needs [`OVERHEAD`] bytes of `buf` past the frame.
///
/// ```
/// use lb_userspace::dsr::{encap_ipip, OVERHEAD};
/// let mut buf = [0u8; 14 + 20 + 8 + OVERHEAD];
/// buf[12..14].copy_from_slice(&[0x08, 0x00]);
/// buf[14] = 0x45;
/// buf[16..18].copy_from_slice(&28u16.to_be_bytes());
/// let n = encap_ipip(&mut buf, 42, "192.168.1.10".parse().unwrap(),
///                    "10.200.1.2".parse().unwrap(), 8080).unwrap();
/// assert_eq!(n, 14 + 20 + 28);
/// assert_eq!(buf[14 + 9], 4); // protocol IPIP
/// assert_eq!(buf[14 + 20], 0x45); // the inner header follows
/// ```
pub fn encap_ipip(
    buf: &mut [u8],
    len: usize,
    outer_src: IpAddr,
    outer_dst: IpAddr,
    id: u16,
) -> Result<usize, EncapError> {
    let (IpAddr::V4(src), IpAddr::V4(dst)) = (outer_src, outer_dst) else {
        return Err(EncapError::Ipv6Outer);
    };
    let frame = buf.get(..len).ok_or(EncapError::NotIpv4)?;
    if frame.len() < ETH_HLEN + 20 || frame[12..14] != [0x08, 0x00] || frame[ETH_HLEN] >> 4 != 4 {
        return Err(EncapError::NotIpv4);
    }
    let inner_len = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    if inner_len < 20 || ETH_HLEN + inner_len > len {
        return Err(EncapError::NotIpv4);
    }
    let out_len = ETH_HLEN + OVERHEAD + inner_len;
    if out_len > buf.len() || inner_len + OVERHEAD > usize::from(u16::MAX) {
        return Err(EncapError::NoRoom);
    }
    let tos = buf[ETH_HLEN + 1];
    buf.copy_within(ETH_HLEN..ETH_HLEN + inner_len, ETH_HLEN + OVERHEAD);
    let outer = &mut buf[ETH_HLEN..ETH_HLEN + OVERHEAD];
    outer[0] = 0x45;
    outer[1] = tos;
    outer[2..4].copy_from_slice(&((inner_len + OVERHEAD) as u16).to_be_bytes());
    outer[4..6].copy_from_slice(&id.to_be_bytes());
    outer[6..8].copy_from_slice(&DF.to_be_bytes());
    outer[8] = 64;
    outer[9] = IPPROTO_IPIP;
    outer[10..12].copy_from_slice(&[0, 0]);
    outer[12..16].copy_from_slice(&src.octets());
    outer[16..20].copy_from_slice(&dst.octets());
    let check = header_checksum(outer);
    outer[10..12].copy_from_slice(&check.to_be_bytes());
    Ok(out_len)
}

/// The Internet checksum of an IPv4 header whose checksum field is zero.
fn header_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks_exact(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_testkit::conformance::reference;
    use lb_testkit::packets::PacketBuilder;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sa(s: &str) -> std::net::SocketAddr {
        s.parse().unwrap()
    }

    proptest! {
        /// Byte for byte the reference's (lb-ebpf's) encapsulation, for any
        /// payload, TOS and port.
        #[test]
        fn matches_the_reference(payload in proptest::collection::vec(any::<u8>(), 0..200),
                                 tos in any::<u8>(), id in any::<u16>(), pad in 0usize..8) {
            let mut frame = PacketBuilder::tcp(sa("192.168.5.2:40000"), sa("203.0.113.7:80"))
                .payload(&payload)
                .build()
                .unwrap();
            frame[15] = tos;
            let want = reference::encap_ipip(&frame, ip("192.168.1.10"), ip("10.200.1.2"), id)
                .unwrap();
            // Ethernet padding past the IP packet is not carried over.
            frame.extend(std::iter::repeat_n(0xee, pad));
            let len = frame.len();
            frame.resize(len + OVERHEAD, 0);
            let n = encap_ipip(&mut frame, len, ip("192.168.1.10"), ip("10.200.1.2"), id).unwrap();
            prop_assert_eq!(&frame[..n], &want[..]);
        }
    }

    proptest! {
        /// Byte for byte the reference's (lb-ebpf's) IPv6-in-IPv6
        /// encapsulation, for any payload, traffic class and port.
        #[test]
        fn ip6ip6_matches_the_reference(payload in proptest::collection::vec(any::<u8>(), 0..200),
                                        tclass in any::<u8>(), port in any::<u16>()) {
            let mut frame = PacketBuilder::udp(sa("[2001:db8:5::2]:40000"), sa("[2001:db8::7]:53"))
                .payload(&payload)
                .build()
                .unwrap();
            frame[14] = 0x60 | (tclass >> 4);
            frame[15] = (tclass << 4) | (frame[15] & 0x0f);
            let want = reference::encap_ip6ip6(&frame, ip("fd00:1::10"), ip("fd00:201::2"), port)
                .unwrap();
            let len = frame.len();
            frame.resize(len + OVERHEAD6, 0);
            let n = encap_ip6ip6(&mut frame, len, ip("fd00:1::10"), ip("fd00:201::2"), port)
                .unwrap();
            prop_assert_eq!(&frame[..n], &want[..]);
        }
    }

    #[test]
    fn refuses_what_it_cannot_wrap() {
        let frame = PacketBuilder::udp(sa("192.168.5.2:40000"), sa("203.0.113.7:53"))
            .build()
            .unwrap();
        let len = frame.len();
        let mut tight = frame.clone();
        assert_eq!(
            encap_ipip(&mut tight, len, ip("192.168.1.10"), ip("10.200.1.2"), 53),
            Err(EncapError::NoRoom)
        );
        assert_eq!(tight, frame, "untouched on error");
        let mut roomy = frame.clone();
        roomy.resize(len + OVERHEAD, 0);
        assert_eq!(
            encap_ipip(&mut roomy, len, ip("fd00::1"), ip("fd00::2"), 53),
            Err(EncapError::Ipv6Outer)
        );
        let v6 = PacketBuilder::udp(sa("[fd00::5]:40000"), sa("[fd00::7]:53"))
            .build()
            .unwrap();
        let mut v6buf = v6.clone();
        v6buf.resize(v6.len() + OVERHEAD, 0);
        assert_eq!(
            encap_ipip(
                &mut v6buf,
                v6.len(),
                ip("192.168.1.10"),
                ip("10.200.1.2"),
                53
            ),
            Err(EncapError::NotIpv4)
        );
    }
}
