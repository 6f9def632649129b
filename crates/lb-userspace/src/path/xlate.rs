//! The NAT46/64 steps of the packet path: a client packet of a flow whose
//! backend is of the other family, and its replies, translated with
//! [`crate::nat46x64::translate`].

use lb_core::{Forward, L3n4Addr, RevNatId, Selection};

use super::{Outcome, PacketPath};
use crate::counters::DropKind;
use crate::nat46x64::{translate, Endpoint};
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
        match translate(buf, len, info, src, to) {
            Ok(n) => {
                self.out_len = n;
                Outcome::ReverseNated { rev_nat }
            }
            Err(_) => self.xlate_drop(),
        }
    }

    fn xlate_drop(&mut self) -> Outcome {
        self.counters.count_drop(DropKind::Nat46x64);
        Outcome::Dropped(DropKind::Nat46x64)
    }
}
