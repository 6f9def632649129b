//! Offload metadata of received frames and software segmentation.
//!
//! A frame read from a packet socket with `PACKET_VNET_HDR`
//! ([`crate::afpacket`]) comes with a `struct virtio_net_hdr`
//! ([`VnetHdr`]). Two things in it matter to a dataplane that re-injects
//! frames through a raw IP socket:
//!
//! * `NEEDS_CSUM`: the L4 checksum field holds only the pseudo-header sum
//!   (`CHECKSUM_PARTIAL`, as a veth peer leaves it); [`complete_checksum`]
//!   completes it at the exact offset the kernel gives.
//! * a GSO type and size: the frame is a TCP (or UDP GSO) super-frame
//!   above the MTU that the kernel would have segmented on its way out of
//!   the sender's NIC (TSO/GSO over veth) or that GRO merged on the way in.
//!   A raw IP socket refuses to send it (`EMSGSIZE`), so [`Segments`] cuts
//!   it, as the kernel's `tcp_gso_segment`/`__udp_gso_segment` would, into
//!   frames of `gso_size` payload bytes each: headers copied, IPv4 total
//!   length, identification (+1 per segment) and header checksum, IPv6
//!   payload length, TCP sequence number (+ the payload offset), FIN and
//!   PSH kept on the last segment only and CWR on the first only, UDP
//!   length, and a full L4 checksum per segment.
//!
//! Everything works on caller-provided buffers: no allocation.

use crate::packet::ETH_HLEN;

/// Length of `struct virtio_net_hdr` (no mergeable-buffers field).
pub const VNET_HDR_LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`.
const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_UDP` (UFO: fragmentation, not supported here).
const GSO_UDP: u8 = 3;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_UDP_L4` (UDP GSO, `UDP_SEGMENT`).
const GSO_UDP_L4: u8 = 5;
/// `VIRTIO_NET_HDR_GSO_ECN`: a flag on the GSO type.
const GSO_ECN: u8 = 0x80;

/// `struct virtio_net_hdr` as the kernel fills it for a packet socket
/// (host byte order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// `VIRTIO_NET_HDR_F_*`.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*` (0: not a GSO frame).
    pub gso_type: u8,
    /// Length of the headers (a hint).
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where the checksummed data starts (from the frame start).
    pub csum_start: u16,
    /// Where the checksum field is (from `csum_start`).
    pub csum_offset: u16,
}

/// The L4 protocol of a GSO frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GsoKind {
    /// TCP segmentation (TSO/GRO).
    Tcp,
    /// UDP GSO: every segment is a datagram of its own.
    Udp,
}

impl VnetHdr {
    /// Reads the header's bytes.
    pub fn parse(b: &[u8; VNET_HDR_LEN]) -> Self {
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        }
    }

    /// The header's bytes.
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }

    /// True when the L4 checksum is left to offload (`CHECKSUM_PARTIAL`).
    pub fn needs_csum(&self) -> bool {
        self.flags & F_NEEDS_CSUM != 0
    }

    /// True for a GSO frame of any type.
    pub fn is_gso(&self) -> bool {
        self.gso_type & !GSO_ECN != 0
    }

    /// The segmentation the frame asks for: `None` when it is not a GSO
    /// frame, or of a type [`Segments`] does not handle (UFO).
    pub fn gso(&self) -> Option<(GsoKind, usize)> {
        let kind = match self.gso_type & !GSO_ECN {
            GSO_TCPV4 | GSO_TCPV6 => GsoKind::Tcp,
            GSO_UDP_L4 => GsoKind::Udp,
            0 | GSO_UDP => return None,
            _ => return None,
        };
        (self.gso_size > 0).then_some((kind, usize::from(self.gso_size)))
    }
}

/// Sums 16-bit big-endian words (an odd last byte padded with zero).
fn sum_words(data: &[u8]) -> u32 {
    let mut sum = 0u32;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [b] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(*b) << 8);
    }
    // Folded early: 64 KiB of words cannot overflow, but stay safe.
    fold32(sum)
}

fn fold32(sum: u32) -> u32 {
    let s = (sum & 0xffff) + (sum >> 16);
    (s & 0xffff) + (s >> 16)
}

fn fold(sum: u32) -> u16 {
    fold32(fold32(sum)) as u16
}

/// The end of the IP packet in `frame` (its total or payload length),
/// clamped to the frame: Ethernet padding excluded.
pub fn ip_end(frame: &[u8]) -> Option<usize> {
    let ip = frame.get(ETH_HLEN..)?;
    let len = match ip.first()? >> 4 {
        4 => usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?])),
        6 => 40 + usize::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?])),
        _ => return None,
    };
    Some((ETH_HLEN + len).min(frame.len()))
}

/// Completes a `CHECKSUM_PARTIAL` L4 checksum: the field at
/// `csum_start + csum_offset` holds the pseudo-header sum, so the sum of
/// the data from `csum_start` to the end of the IP packet, field
/// included, is the whole sum. Returns false (and changes nothing) when
/// the offsets do not fit the frame. A UDP checksum (offset 6) that
/// computes to zero is sent as `0xffff`.
pub fn complete_checksum(frame: &mut [u8], csum_start: usize, csum_offset: usize) -> bool {
    let Some(end) = ip_end(frame) else {
        return false;
    };
    let field = csum_start + csum_offset;
    if csum_start < ETH_HLEN || field + 2 > end {
        return false;
    }
    let mut c = !fold(sum_words(&frame[csum_start..end]));
    if c == 0 && csum_offset == 6 {
        c = 0xffff;
    }
    frame[field..field + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// Why a GSO frame cannot be segmented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GsoError {
    /// Not IPv4/IPv6 with TCP or UDP right after the IP header (IPv6
    /// extension headers, IPv4 fragments, another protocol), or headers
    /// cut short.
    #[error("not a TCP/UDP frame this segmentation handles")]
    Unsupported,
}

/// The segments of one GSO frame, written one at a time into the caller's
/// buffer ([`Segments::next_into`]).
#[derive(Debug)]
pub struct Segments<'a> {
    frame: &'a [u8],
    kind: GsoKind,
    v6: bool,
    l4: usize,
    hdr_len: usize,
    end: usize,
    size: usize,
    /// Payload offset of the next segment.
    off: usize,
    index: u16,
}

impl<'a> Segments<'a> {
    /// Prepares the segmentation of the Ethernet frame `frame` into
    /// segments of `size` payload bytes.
    pub fn new(frame: &'a [u8], kind: GsoKind, size: usize) -> Result<Self, GsoError> {
        let end = ip_end(frame).ok_or(GsoError::Unsupported)?;
        let ip = &frame[ETH_HLEN..end];
        let want = match kind {
            GsoKind::Tcp => 6,
            GsoKind::Udp => 17,
        };
        let (v6, l4) = match ip.first().map(|b| b >> 4) {
            Some(4) if ip.len() >= 20 => {
                let ihl = usize::from(ip[0] & 0x0f) * 4;
                let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff;
                if ihl < 20 || ip[9] != want || frag != 0 {
                    return Err(GsoError::Unsupported);
                }
                (false, ETH_HLEN + ihl)
            }
            Some(6) if ip.len() >= 40 && ip[6] == want => (true, ETH_HLEN + 40),
            _ => return Err(GsoError::Unsupported),
        };
        let l4_len = match kind {
            GsoKind::Tcp => usize::from(frame.get(l4 + 12).ok_or(GsoError::Unsupported)? >> 4) * 4,
            GsoKind::Udp => 8,
        };
        let hdr_len = l4 + l4_len;
        if l4_len < 8 || hdr_len > end || size == 0 {
            return Err(GsoError::Unsupported);
        }
        Ok(Segments {
            frame,
            kind,
            v6,
            l4,
            hdr_len,
            end,
            size,
            off: 0,
            index: 0,
        })
    }

    /// How many segments the frame makes.
    pub fn count(&self) -> usize {
        (self.end - self.hdr_len).div_ceil(self.size).max(1)
    }

    /// Writes the next segment (an Ethernet frame) into `out` and returns
    /// its length; `None` when every segment was written or `out` is too
    /// small for one.
    pub fn next_into(&mut self, out: &mut [u8]) -> Option<usize> {
        let payload = self.end - self.hdr_len;
        if self.off >= payload && !(self.off == 0 && self.index == 0) {
            return None;
        }
        let n = self.size.min(payload - self.off);
        let len = self.hdr_len + n;
        let out = out.get_mut(..len)?;
        let (h, first, last) = (self.hdr_len, self.off == 0, self.off + n >= payload);
        out[..h].copy_from_slice(&self.frame[..h]);
        out[h..].copy_from_slice(&self.frame[h + self.off..h + self.off + n]);
        let ip_len = len - ETH_HLEN;
        let l4_len = len - self.l4;
        if self.v6 {
            out[ETH_HLEN + 4..ETH_HLEN + 6].copy_from_slice(&((ip_len - 40) as u16).to_be_bytes());
        } else {
            let ip = &mut out[ETH_HLEN..self.l4];
            ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
            let id = u16::from_be_bytes([ip[4], ip[5]]).wrapping_add(self.index);
            ip[4..6].copy_from_slice(&id.to_be_bytes());
            ip[10..12].copy_from_slice(&[0, 0]);
            let c = !fold(sum_words(ip));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
        }
        let l4 = self.l4;
        let csum_at = match self.kind {
            GsoKind::Tcp => {
                let seq = u32::from_be_bytes([out[l4 + 4], out[l4 + 5], out[l4 + 6], out[l4 + 7]])
                    .wrapping_add(self.off as u32);
                out[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
                if !last {
                    out[l4 + 13] &= !0x09; // FIN, PSH
                }
                if !first {
                    out[l4 + 13] &= !0x80; // CWR
                }
                l4 + 16
            }
            GsoKind::Udp => {
                out[l4 + 4..l4 + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
                l4 + 6
            }
        };
        out[csum_at..csum_at + 2].copy_from_slice(&[0, 0]);
        let (src, dst) = if self.v6 {
            (ETH_HLEN + 8..ETH_HLEN + 24, ETH_HLEN + 24..ETH_HLEN + 40)
        } else {
            (ETH_HLEN + 12..ETH_HLEN + 16, ETH_HLEN + 16..ETH_HLEN + 20)
        };
        let proto = match self.kind {
            GsoKind::Tcp => 6u32,
            GsoKind::Udp => 17,
        };
        let sum = sum_words(&out[src])
            + sum_words(&out[dst])
            + proto
            + l4_len as u32
            + sum_words(&out[l4..len]);
        let mut c = !fold(sum);
        if c == 0 && self.kind == GsoKind::Udp {
            c = 0xffff;
        }
        out[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
        self.off += n.max(1);
        self.index = self.index.wrapping_add(1);
        Some(len)
    }
}
