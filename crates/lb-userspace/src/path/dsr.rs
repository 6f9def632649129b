//! The DSR step of the packet path: a client packet of a flow lb-core sends
//! with [`lb_core::Encap::Ipip`] leaves unchanged inside IPIP
//! ([`crate::dsr::encap_ipip`]); the backend answers the client directly.

use lb_core::{Encap, Forward, Selection};

use super::{Outcome, PacketPath};
use crate::counters::DropKind;
use crate::dsr::encap_ipip;

impl PacketPath {
    /// Wraps the frame `buf[..len]` of the DSR flow `f` in its outer header;
    /// a frame that cannot be wrapped (no room past it in `buf`, an IPv6
    /// flow) is dropped as [`DropKind::Unsupported`].
    pub(super) fn forward_encapsulated(
        &mut self,
        buf: &mut [u8],
        len: usize,
        f: Forward,
    ) -> Outcome {
        let Some(Encap::Ipip {
            outer_src,
            outer_dst,
        }) = f.encap
        else {
            return self.encap_drop();
        };
        match encap_ipip(buf, len, outer_src, outer_dst, f.backend.port) {
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
