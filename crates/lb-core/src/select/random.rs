//! Weighted random selection with caller-supplied entropy.

use crate::{BackendId, BackendSlot};

/// Picks a backend from `slots` with probability proportional to its weight.
///
/// `entropy` is any 32-bit random number; the same entropy always picks the
/// same backend. Weight-0 slots are never picked. Returns `None` when the
/// total weight is 0. Runs in O(len) without allocating.
///
/// ```
/// use lb_core::{BackendId, BackendSlot, BackendState};
/// let slot = |id, weight| BackendSlot { id: BackendId(id), state: BackendState::Active, weight };
/// let slots = [slot(1, 1), slot(2, 0), slot(3, 3)];
/// assert_eq!(lb_core::select::random::select(&slots, 0), Some(BackendId(1)));
/// assert_eq!(lb_core::select::random::select(&slots, 1), Some(BackendId(3)));
/// ```
pub fn select(slots: &[BackendSlot], entropy: u32) -> Option<BackendId> {
    let total: u64 = slots.iter().map(|s| u64::from(s.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut point = u64::from(entropy) % total;
    for slot in slots {
        let w = u64::from(slot.weight);
        if point < w {
            return Some(slot.id);
        }
        point -= w;
    }
    None
}
