//! The DSR step of the packet path: a client packet of a flow lb-core sends
//! with [`lb_core::Encap::Ipip`] leaves unchanged inside IPIP
//! ([`crate::dsr::encap_ipip`]), one with [`lb_core::Encap::Ip6ip6`] inside
//! IPv6-in-IPv6 ([`crate::dsr::encap_ip6ip6`]); the backend answers the
//! client directly.

use lb_core::{Encap, Forward, Selection};

use super::{Outcome, PacketPath};
use crate::counters::DropKind;
use crate::dsr::{encap_ip6ip6, encap_ipip};

impl PacketPath {
    /// Wraps the frame `buf[..len]` of the DSR flow `f` in its outer header;
    /// a frame that cannot be wrapped (no room past it in `buf`) is dropped
    /// as [`DropKind::Unsupported`].
    pub(super) fn forward_encapsulated(
        &mut self,
        buf: &mut [u8],
        len: usize,
        f: Forward,
    ) -> Outcome {
        let wrapped = match f.encap {
            Some(Encap::Ipip {
                outer_src,
                outer_dst,
            }) => encap_ipip(buf, len, outer_src, outer_dst, f.backend.port),
            Some(Encap::Ip6ip6 {
                outer_src,
                outer_dst,
            }) => encap_ip6ip6(buf, len, outer_src, outer_dst, f.backend.port),
            None => return self.encap_drop(),
        };
        match wrapped {
            Ok(n) => {
                self.counters
                    .service(f.service, len, f.selection != Selection::Established);
                self.out_len = n;
                Outcome::Forwarded(f)
            }
            Err(_) => self.encap_drop(),
        }
    }

    fn encap_drop(&mut self) -> Outcome {
        self.counters.count_drop(DropKind::Unsupported);
        Outcome::Dropped(DropKind::Unsupported)
    }
}
