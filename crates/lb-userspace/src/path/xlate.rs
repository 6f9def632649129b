//! The NAT46/64 steps of the packet path: a client packet of a flow whose
//! backend is of the other family, and its replies, translated with
//! [`crate::nat46x64::translate`].

use lb_core::{Forward, L3n4Addr, RevNatId, Selection};

use super::{Outcome, PacketPath};
use crate::counters::DropKind;
use crate::nat46x64::{clamp_mss, frag_needed, translate, Endpoint};
use crate::packet::PacketInfo;

impl PacketPath {
    /// Translates a client packet of `f` (a NAT46/64 flow, always SNATed)
    /// to the backend's family: source the SNAT address and `sport`,
    /// destination the backend.
    pub(super) fn forward_translated(
        &mut self,
        buf: &mut [u8],
        len: usize,
        info: &PacketInfo,
        f: Forward,
        sport: u16,
    ) -> Outcome {
        let Some(snat) = f.snat else {
            return self.xlate_drop();
        };
        self.counters
            .service(f.service, len, f.selection != Selection::Established);
        let src = Endpoint {
            addr: snat,
            port: sport,
        };
        let dst = Endpoint {
            addr: f.backend.addr,
            port: f.backend.port,
        };
        if let Some(answer) = self.size_translated(buf, len, info, dst.addr.is_ipv6()) {
            return answer;
        }
        match translate(buf, len, info, src, dst) {
            Ok(n) => {
                self.out_len = n;
                Outcome::Forwarded(f)
            }
            Err(_) => self.xlate_drop(),
        }
    }

    /// Translates a reply of a NAT46/64 flow back to the frontend's family:
    /// source the frontend `fe`, destination the client `to`.
    pub(super) fn reply_translated(
        &mut self,
        buf: &mut [u8],
        len: usize,
        info: &PacketInfo,
        fe: L3n4Addr,
        to: Endpoint,
        rev_nat: RevNatId,
    ) -> Outcome {
        let src = Endpoint {
            addr: fe.addr,
            port: fe.port,
        };
        if let Some(answer) = self.size_translated(buf, len, info, to.addr.is_ipv6()) {
            return answer;
        }
        match translate(buf, len, info, src, to) {
            Ok(n) => {
                self.out_len = n;
                Outcome::ReverseNated { rev_nat }
            }
            Err(_) => self.xlate_drop(),
        }
    }

    /// Sizes a frame about to be translated (to IPv6 when `to_v6`) for the
    /// link MTU ([`lb_core::nat46x64`]): an IPv4 frame over it once
    /// translated is answered with fragmentation needed (the MTU less 20)
    /// or, without DF, dropped, both counted as [`DropKind::FragNeeded`];
    /// a SYN's MSS is clamped. `Some` when the frame is not to be
    /// translated.
    fn size_translated(
        &mut self,
        buf: &mut [u8],
        len: usize,
        info: &PacketInfo,
        to_v6: bool,
    ) -> Option<Outcome> {
        let mtu = self.link_mtu;
        if to_v6 && len - info.l4_off + crate::packet::IPV6_HLEN > mtu as usize {
            self.counters.count_drop(DropKind::FragNeeded);
            let fits = lb_core::nat46x64::frag_needed_mtu(mtu);
            return Some(match frag_needed(buf, len, fits.min(0xffff) as u16) {
                Some(n) => {
                    self.out_len = n;
                    Outcome::Answered(DropKind::FragNeeded)
                }
                None => Outcome::Dropped(DropKind::FragNeeded),
            });
        }
        if info.tcp_flags & 0x02 != 0 {
            let max = lb_core::nat46x64::mss_limit(to_v6, mtu);
            clamp_mss(&mut buf[info.l4_off..len], max);
        }
        None
    }

    fn xlate_drop(&mut self) -> Outcome {
        self.counters.count_drop(DropKind::Nat46x64);
        Outcome::Dropped(DropKind::Nat46x64)
    }
}
