//! Software segmentation of GSO frames ([`lb_userspace::gso`]) at packet
//! level: every segment is a valid packet (IPv4 header checksum, L4
//! checksum against lb-testkit's independent implementation), sequence
//! numbers and IPv4 identifications advance, flags are split as the
//! kernel's `tcp_gso_segment` does, and the payloads add up to the
//! original. Also the completion of `CHECKSUM_PARTIAL` checksums.

use std::net::{IpAddr, SocketAddr};

use lb_testkit::packets::{internet_checksum, l4_checksum};
use lb_testkit::PacketBuilder;
use lb_userspace::gso::{complete_checksum, GsoKind, Segments, VnetHdr};

const ETH: usize = 14;

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 256) as u8).collect()
}

struct Seg {
    ip_id: Option<u16>,
    seq: u32,
    flags: u8,
    data: Vec<u8>,
}

/// Checks one segment's lengths and checksums and returns its fields.
fn check(seg: &[u8], v6: bool, proto: u8) -> Seg {
    let ip = &seg[ETH..];
    let (l4, src, dst, ip_id) = if v6 {
        assert_eq!(
            usize::from(u16::from_be_bytes([ip[4], ip[5]])),
            ip.len() - 40
        );
        let s: [u8; 16] = ip[8..24].try_into().unwrap();
        let d: [u8; 16] = ip[24..40].try_into().unwrap();
        (&ip[40..], IpAddr::from(s), IpAddr::from(d), None)
    } else {
        assert_eq!(usize::from(u16::from_be_bytes([ip[2], ip[3]])), ip.len());
        assert_eq!(internet_checksum(&ip[..20]), 0, "IPv4 header checksum");
        let s: [u8; 4] = ip[12..16].try_into().unwrap();
        let d: [u8; 4] = ip[16..20].try_into().unwrap();
        let id = u16::from_be_bytes([ip[4], ip[5]]);
        (&ip[20..], IpAddr::from(s), IpAddr::from(d), Some(id))
    };
    assert_eq!(l4_checksum(src, dst, proto, l4), 0, "L4 checksum");
    if proto == 6 {
        let hl = usize::from(l4[12] >> 4) * 4;
        Seg {
            ip_id,
            seq: u32::from_be_bytes(l4[4..8].try_into().unwrap()),
            flags: l4[13],
            data: l4[hl..].to_vec(),
        }
    } else {
        assert_eq!(usize::from(u16::from_be_bytes([l4[4], l4[5]])), l4.len());
        Seg {
            ip_id,
            seq: 0,
            flags: 0,
            data: l4[8..].to_vec(),
        }
    }
}

fn segment(frame: &[u8], kind: GsoKind, size: usize) -> Vec<Vec<u8>> {
    let mut segs = Segments::new(frame, kind, size).unwrap();
    let count = segs.count();
    let mut out = vec![0u8; 70_000];
    let mut all = Vec::new();
    while let Some(n) = segs.next_into(&mut out) {
        all.push(out[..n].to_vec());
    }
    assert_eq!(all.len(), count);
    all
}

fn tcp_case(src: &str, dst: &str) {
    let src: SocketAddr = src.parse().unwrap();
    let dst: SocketAddr = dst.parse().unwrap();
    let v6 = src.is_ipv6();
    let data = payload(10_000);
    let frame = PacketBuilder::tcp(src, dst)
        .flags(lb_testkit::packets::TcpFlags::ACK)
        .psh()
        .fin()
        .seq(0xffff_f000)
        .ip_id(0xfffe)
        .payload(&data)
        .build()
        .unwrap();
    let segs = segment(&frame, GsoKind::Tcp, 1448);
    assert_eq!(segs.len(), 7);
    let mut joined = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        let seg = check(s, v6, 6);
        assert_eq!(seg.seq, 0xffff_f000u32.wrapping_add(1448 * i as u32));
        if let Some(id) = seg.ip_id {
            assert_eq!(id, 0xfffeu16.wrapping_add(i as u16));
        }
        let last = i == segs.len() - 1;
        assert_eq!(seg.flags & 0x09 != 0, last, "FIN/PSH on the last only");
        assert!(seg.flags & 0x10 != 0, "ACK on every segment");
        assert!(seg.data.len() == 1448 || last);
        joined.extend_from_slice(&seg.data);
    }
    assert_eq!(joined, data);
}

#[test]
fn tcp_gso_frames_become_valid_segments_ipv4() {
    tcp_case("192.168.10.2:40000", "198.51.100.10:80");
}

#[test]
fn tcp_gso_frames_become_valid_segments_ipv6() {
    tcp_case("[fd00:10::2]:40000", "[fd00:ffff::10]:80");
}

#[test]
fn udp_gso_frames_become_datagrams() {
    let data = payload(3000);
    let frame = PacketBuilder::udp(
        "192.168.10.2:5000".parse().unwrap(),
        "198.51.100.10:53".parse().unwrap(),
    )
    .payload(&data)
    .build()
    .unwrap();
    let segs = segment(&frame, GsoKind::Udp, 1200);
    let sizes: Vec<usize> = segs
        .iter()
        .map(|s| check(s, false, 17).data.len())
        .collect();
    assert_eq!(sizes, [1200, 1200, 600]);
    let joined: Vec<u8> = segs.iter().flat_map(|s| check(s, false, 17).data).collect();
    assert_eq!(joined, data);
}

/// The frame is shorter than the header says, or not TCP: no segments.
#[test]
fn frames_that_are_not_tcp_or_udp_are_refused() {
    let frame = PacketBuilder::udp(
        "192.168.10.2:5000".parse().unwrap(),
        "198.51.100.10:53".parse().unwrap(),
    )
    .payload(b"x")
    .build()
    .unwrap();
    assert!(Segments::new(&frame, GsoKind::Tcp, 1000).is_err());
    assert!(Segments::new(&frame[..ETH + 10], GsoKind::Udp, 1000).is_err());
    assert!(Segments::new(&frame, GsoKind::Udp, 0).is_err());
}

/// A `CHECKSUM_PARTIAL` frame (the field holds the pseudo-header sum, as
/// a veth peer leaves it) is completed to the right checksum.
#[test]
fn partial_checksums_are_completed() {
    for (src, dst, proto) in [
        ("192.168.10.2:40000", "198.51.100.10:80", 6u8),
        ("[fd00:10::2]:40000", "[fd00:ffff::10]:53", 17),
    ] {
        let (src, dst): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        let b = if proto == 6 {
            PacketBuilder::tcp(src, dst)
        } else {
            PacketBuilder::udp(src, dst)
        };
        let good = b.payload(payload(333)).build().unwrap();
        let l4 = if src.is_ipv6() { ETH + 40 } else { ETH + 20 };
        let off = if proto == 6 { 16 } else { 6 };
        let len = good.len() - l4;
        // The pseudo-header sum, folded, not inverted.
        let mut pseudo: u32 = [src.ip(), dst.ip()]
            .iter()
            .flat_map(|a| match a {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            })
            .collect::<Vec<u8>>()
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum::<u32>()
            + u32::from(proto)
            + len as u32;
        while pseudo > 0xffff {
            pseudo = (pseudo & 0xffff) + (pseudo >> 16);
        }
        let mut partial = good.clone();
        partial[l4 + off..l4 + off + 2].copy_from_slice(&(pseudo as u16).to_be_bytes());
        assert_ne!(partial, good);
        assert!(complete_checksum(&mut partial, l4, off));
        assert_eq!(partial, good);
        assert!(!complete_checksum(&mut partial, l4, 70_000));
    }
}

#[test]
fn vnet_headers_round_trip() {
    let h = VnetHdr {
        flags: 1,
        gso_type: 0x81,
        hdr_len: 66,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    };
    assert_eq!(VnetHdr::parse(&h.to_bytes()), h);
    assert_eq!(h.gso(), Some((GsoKind::Tcp, 1448)));
    assert!(h.needs_csum() && h.is_gso());
    let plain = VnetHdr::default();
    assert_eq!(plain.gso(), None);
    assert!(!plain.is_gso());
}
