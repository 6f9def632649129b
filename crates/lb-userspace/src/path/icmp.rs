//! ICMP errors about load-balanced flows, translated on their way to the
//! client, as lb-ebpf's `lb_icmp.h`/`lb_icmp_quote.h` do for IPv4 (and
//! here for IPv6 as well).
//!
//! An error (IPv4: destination unreachable incl. fragmentation needed,
//! time exceeded; ICMPv6: destination unreachable, packet too big, time
//! exceeded) from a backend or a router on the way quotes the packet the
//! node sent to the backend: `(SNAT address or client):port -> backend`.
//! Its flow is found by the reply tuple (`backend -> (SNAT address or
//! client):port`, [`crate::ct::FlowTable::by_reply`]); the quote then goes
//! back to what the client sent — source the client and its own port
//! (also for a SNATed or port-remapped flow), destination the frontend —
//! the outer destination to the client (it was the node's SNAT address),
//! and an error sent by the backend itself comes from the frontend, as the
//! flow's replies do. Checksums are updated incrementally (RFC 1624): the
//! outer IPv4 header's, the ICMP one (every rewritten inner word; for
//! ICMPv6 also the outer addresses of its pseudo-header), the quoted IPv4
//! header's, and the quoted TCP/UDP one when it was quoted (a zero UDP
//! checksum stays zero; a computed zero is sent as `0xffff`).
//!
//! Only quotes of TCP/UDP right after the IP header are translated (no
//! IPv4 options, no IPv6 extension headers, outer or inner), with at least
//! the first 8 bytes of the L4 header, as in lb-ebpf. Everything else is
//! not ours and passes untouched.
//!
//! An error about a NAT46/64 flow (its quote of the backend's family, its
//! client of the other one) is translated to the client's family by
//! [`crate::nat46x64_icmp`]; one with no equivalent there is dropped as
//! [`DropKind::Nat46x64Icmp`].

use std::net::IpAddr;

use lb_core::{FlowKey, L4Proto};

use super::{Outcome, PacketPath};
use crate::counters::DropKind;
use crate::nat46x64::Endpoint;
use crate::nat46x64_icmp::{translate_error, IcmpXlateError};
use crate::packet::ETH_HLEN;

const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP6_DST_UNREACH: u8 = 1;
const ICMP6_PACKET_TOO_BIG: u8 = 2;
const ICMP6_TIME_EXCEEDED: u8 = 3;

/// Where the parts of an ICMP error sit in the frame.
#[derive(Debug, Clone, Copy)]
struct Quote {
    v6: bool,
    /// Offset of the ICMP header.
    icmp: usize,
    /// Offset of the quoted IP header.
    inner: usize,
    /// Offset of the quoted L4 header.
    inner_l4: usize,
    /// Offset of the quoted L4 checksum (none: not quoted, or a zero UDP one).
    l4_csum: Option<usize>,
    proto: L4Proto,
}

fn word(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn addr(b: &[u8], at: usize, v6: bool) -> IpAddr {
    if v6 {
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[at..at + 16]);
        IpAddr::from(a)
    } else {
        let mut a = [0u8; 4];
        a.copy_from_slice(&b[at..at + 4]);
        IpAddr::from(a)
    }
}

impl Quote {
    /// Parses `frame` as an ICMP error quoting a TCP/UDP packet.
    fn parse(frame: &[u8]) -> Option<Quote> {
        let ip = ETH_HLEN;
        let (v6, icmp) = match frame.get(12..14)? {
            [0x08, 0x00] => {
                let b = frame.get(ip..ip + 20)?;
                if b[0] != 0x45 || b[9] != 1 || word(b, 6) & 0x3fff != 0 {
                    return None;
                }
                (false, ip + 20)
            }
            [0x86, 0xdd] => {
                let b = frame.get(ip..ip + 40)?;
                if b[0] >> 4 != 6 || b[6] != 58 {
                    return None;
                }
                (true, ip + 40)
            }
            _ => return None,
        };
        let ty = *frame.get(icmp)?;
        let error = if v6 {
            matches!(
                ty,
                ICMP6_DST_UNREACH | ICMP6_PACKET_TOO_BIG | ICMP6_TIME_EXCEEDED
            )
        } else {
            matches!(ty, ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED)
        };
        if !error {
            return None;
        }
        let inner = icmp + 8;
        let (proto_byte, inner_l4) = if v6 {
            let b = frame.get(inner..inner + 40)?;
            if b[0] >> 4 != 6 {
                return None;
            }
            (b[6], inner + 40)
        } else {
            let b = frame.get(inner..inner + 20)?;
            if b[0] != 0x45 {
                return None;
            }
            (b[9], inner + 20)
        };
        let proto = match proto_byte {
            6 => L4Proto::Tcp,
            17 => L4Proto::Udp,
            _ => return None,
        };
        frame.get(inner_l4..inner_l4 + 8)?;
        let l4_csum = match proto {
            L4Proto::Udp => Some(inner_l4 + 6).filter(|&at| word(frame, at) != 0),
            _ => Some(inner_l4 + 16).filter(|&at| at + 2 <= frame.len()),
        };
        Some(Quote {
            v6,
            icmp,
            inner,
            inner_l4,
            l4_csum,
            proto,
        })
    }

    fn addr_len(&self) -> usize {
        if self.v6 {
            16
        } else {
            4
        }
    }

    /// Offsets of the source and destination addresses of the IP header at `ip`.
    fn addrs(&self, ip: usize) -> (usize, usize) {
        if self.v6 {
            (ip + 8, ip + 24)
        } else {
            (ip + 12, ip + 16)
        }
    }
}

/// The checksum after the 16-bit words `old` became `new` (RFC 1624 eqn. 3).
fn replace(check: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut sum = u32::from(!check);
    for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        sum += u32::from(!u16::from_be_bytes([o[0], o[1]]));
        sum += u32::from(u16::from_be_bytes([n[0], n[1]]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn update(frame: &mut [u8], csum_at: usize, old: &[u8], new: &[u8]) {
    let c = replace(word(frame, csum_at), old, new);
    frame[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
}

/// Writes `new` (2, 4 or 16 bytes) at `at` and updates every checksum in
/// `csums` (offsets of checksum fields) for the change.
fn store(frame: &mut [u8], at: usize, new: &[u8], csums: &[Option<usize>]) {
    let mut old = [0u8; 16];
    let n = new.len();
    old[..n].copy_from_slice(&frame[at..at + n]);
    if old[..n] == *new {
        return;
    }
    frame[at..at + n].copy_from_slice(new);
    for c in csums.iter().flatten() {
        update(frame, *c, &old[..n], new);
    }
}

fn octets(a: IpAddr, buf: &mut [u8; 16]) -> usize {
    match a {
        IpAddr::V4(a) => {
            buf[..4].copy_from_slice(&a.octets());
            4
        }
        IpAddr::V6(a) => {
            buf.copy_from_slice(&a.octets());
            16
        }
    }
}

/// What the error's quote goes back to.
#[derive(Debug, Clone, Copy)]
struct Target {
    client: IpAddr,
    client_port: u16,
    frontend: IpAddr,
    frontend_port: u16,
}

/// Rewrites the error `q` in `frame` for the client ([`Target`]).
fn rewrite(frame: &mut [u8], q: &Quote, t: Target) {
    let icmp_csum = q.icmp + 2;
    let (inner_src, inner_dst) = q.addrs(q.inner);
    let (outer_src, outer_dst) = q.addrs(ETH_HLEN);
    let n = q.addr_len();
    let inner_ip_csum = (!q.v6).then_some(q.inner + 10);
    let outer_ip_csum = (!q.v6).then_some(ETH_HLEN + 10);
    // The quoted checksums' values before, for the ICMP checksum after.
    let old_inner_ip = inner_ip_csum.map(|at| word(frame, at));
    let old_l4 = q.l4_csum.map(|at| word(frame, at));
    let be = frame[inner_dst..inner_dst + n].to_owned_array();
    let node = frame[inner_src..inner_src + n].to_owned_array();

    let mut b = [0u8; 16];
    // Quoted addresses: in the quoted IP header (its checksum), the quoted
    // L4 pseudo-header, and the ICMP message.
    let k = octets(t.client, &mut b);
    store(
        frame,
        inner_src,
        &b[..k],
        &[inner_ip_csum, q.l4_csum, Some(icmp_csum)],
    );
    let k = octets(t.frontend, &mut b);
    store(
        frame,
        inner_dst,
        &b[..k],
        &[inner_ip_csum, q.l4_csum, Some(icmp_csum)],
    );
    // Quoted ports.
    store(
        frame,
        q.inner_l4,
        &t.client_port.to_be_bytes(),
        &[q.l4_csum, Some(icmp_csum)],
    );
    store(
        frame,
        q.inner_l4 + 2,
        &t.frontend_port.to_be_bytes(),
        &[q.l4_csum, Some(icmp_csum)],
    );
    // The quoted checksums are part of the ICMP message too.
    if let (Some(at), Some(old)) = (q.l4_csum, old_l4) {
        let mut new = word(frame, at);
        if q.proto == L4Proto::Udp && new == 0 {
            new = 0xffff;
            frame[at..at + 2].copy_from_slice(&new.to_be_bytes());
        }
        update(frame, icmp_csum, &old.to_be_bytes(), &new.to_be_bytes());
    }
    if let (Some(at), Some(old)) = (inner_ip_csum, old_inner_ip) {
        let new = word(frame, at);
        update(frame, icmp_csum, &old.to_be_bytes(), &new.to_be_bytes());
    }
    // Outer addresses: the outer IPv4 header's checksum, or the ICMPv6
    // pseudo-header.
    let outer_csums = [outer_ip_csum, q.v6.then_some(icmp_csum)];
    if frame[outer_dst..outer_dst + n] == node[..n] {
        let k = octets(t.client, &mut b);
        store(frame, outer_dst, &b[..k], &outer_csums);
    }
    if frame[outer_src..outer_src + n] == be[..n] {
        let k = octets(t.frontend, &mut b);
        store(frame, outer_src, &b[..k], &outer_csums);
    }
}

/// A copy of up to 16 bytes on the stack.
trait ToOwnedArray {
    fn to_owned_array(&self) -> [u8; 16];
}

impl ToOwnedArray for [u8] {
    fn to_owned_array(&self) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[..self.len()].copy_from_slice(self);
        a
    }
}

impl PacketPath {
    /// Translates the frame `buf[..len]`, arriving from the backends' side,
    /// when it is an ICMP error about a tracked flow; [`Outcome::Pass`]
    /// (untouched) otherwise.
    pub(super) fn icmp_error(&mut self, buf: &mut [u8], len: usize) -> Outcome {
        let frame = &mut buf[..len];
        let Some(q) = Quote::parse(frame) else {
            return Outcome::Pass;
        };
        let (inner_src, inner_dst) = q.addrs(q.inner);
        let reply = FlowKey {
            src: addr(frame, inner_dst, q.v6),
            dst: addr(frame, inner_src, q.v6),
            sport: word(frame, q.inner_l4 + 2),
            dport: word(frame, q.inner_l4),
            proto: q.proto,
        };
        let Some((orig, entry)) = self.flows.by_reply(&reply).map(|(k, e)| (*k, *e)) else {
            return Outcome::Pass;
        };
        let snap = self.tables.load();
        let fe = match snap.rev_nat.get(&entry.rev_nat) {
            Some(a) if !a.addr.is_unspecified() => *a,
            _ => orig.frontend(),
        };
        if fe.addr.is_ipv6() != q.v6 || orig.src.is_ipv6() != q.v6 {
            // A NAT46/64 flow: the error goes to the client in its family.
            let client = Endpoint {
                addr: orig.src,
                port: orig.sport,
            };
            let frontend = Endpoint {
                addr: fe.addr,
                port: fe.port,
            };
            return match translate_error(buf, len, client, frontend) {
                Ok(n) => {
                    self.out_len = n;
                    Outcome::ReverseNated {
                        rev_nat: entry.rev_nat,
                    }
                }
                Err(IcmpXlateError::NotOurs) => Outcome::Pass,
                Err(_) => {
                    self.counters.count_drop(DropKind::Nat46x64Icmp);
                    Outcome::Dropped(DropKind::Nat46x64Icmp)
                }
            };
        }
        rewrite(
            frame,
            &q,
            Target {
                client: orig.src,
                client_port: orig.sport,
                frontend: fe.addr,
                frontend_port: fe.port,
            },
        );
        Outcome::ReverseNated {
            rev_nat: entry.rev_nat,
        }
    }
}
