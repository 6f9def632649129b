//! Dense counter slots: the index of a frontend's or a backend's per-CPU
//! counters in `lb_svc_stats` / `lb_be_stats` (`BPF_MAP_TYPE_PERCPU_ARRAY`).
//!
//! lb-core's ids are not dense (a freed id is reused only after the
//! allocator went round its whole 32-bit space), so they cannot index an
//! array; the dataplane hands every programmed frontend and backend a slot
//! below the array's capacity instead, stores it in the frontend's slot-0
//! services entry and in the backend's value, and gives it back when the
//! frontend or backend is removed. The lowest free slot is taken first, so
//! the slots in use never exceed the peak number of live entries (the batch
//! check bounds that by the array's capacity). A slot is zeroed in the map
//! when it is handed out again; the allocator is rebuilt from the maps when
//! the dataplane is opened ([`SlotAlloc::rebuild`]).

use std::collections::{BTreeSet, HashMap};

/// Slots of one counter array, by owner id (service id or backend id).
#[derive(Debug, Clone, Default)]
pub(crate) struct SlotAlloc {
    /// Slots `0..cap` exist.
    cap: u32,
    /// Every slot below `next` is owned or in `free`.
    next: u32,
    /// Free slots below `next`.
    free: BTreeSet<u32>,
    /// Owner id -> slot.
    owners: HashMap<u32, u32>,
}

impl SlotAlloc {
    /// An empty allocator for an array of `cap` slots.
    pub fn new(cap: u32) -> Self {
        SlotAlloc {
            cap,
            ..SlotAlloc::default()
        }
    }

    /// Rebuilds the allocator from the `(owner, slot)` pairs the maps hold.
    /// Returns it and the owners whose slot cannot be kept (out of range,
    /// or already taken by an owner listed earlier): they need a new slot.
    /// An owner listed twice keeps its first slot.
    pub fn rebuild(cap: u32, pairs: impl IntoIterator<Item = (u32, u32)>) -> (Self, Vec<u32>) {
        let mut a = SlotAlloc::new(cap);
        let mut used = BTreeSet::new();
        let mut conflicts = Vec::new();
        for (owner, slot) in pairs {
            if a.owners.contains_key(&owner) {
                continue;
            }
            if slot >= cap || !used.insert(slot) {
                conflicts.push(owner);
                continue;
            }
            a.owners.insert(owner, slot);
        }
        a.next = used.last().map_or(0, |s| s + 1);
        a.free = (0..a.next).filter(|s| !used.contains(s)).collect();
        (a, conflicts)
    }

    /// The slot of `owner`.
    pub fn get(&self, owner: u32) -> Option<u32> {
        self.owners.get(&owner).copied()
    }

    /// Owners with a slot.
    pub fn len(&self) -> usize {
        self.owners.len()
    }

    /// `(owner, slot)` of every owner.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.owners.iter().map(|(o, s)| (*o, *s))
    }

    /// The slot of `owner`, taking the lowest free one when it has none.
    /// `(slot, true)` when the slot is newly taken (its counters must be
    /// zeroed); `None` when every slot is in use.
    pub fn assign(&mut self, owner: u32) -> Option<(u32, bool)> {
        if let Some(s) = self.get(owner) {
            return Some((s, false));
        }
        let slot = match self.free.pop_first() {
            Some(s) => s,
            None if self.next < self.cap => {
                self.next += 1;
                self.next - 1
            }
            None => return None,
        };
        self.owners.insert(owner, slot);
        Some((slot, true))
    }

    /// Frees the slot of `owner`; returns it.
    pub fn release(&mut self, owner: u32) -> Option<u32> {
        let slot = self.owners.remove(&owner)?;
        self.free.insert(slot);
        Some(slot)
    }

    /// Gives `owner` slot `slot` again (rollback of a [`release`] undone in
    /// reverse order, so the slot is free).
    ///
    /// [`release`]: SlotAlloc::release
    pub fn take(&mut self, owner: u32, slot: u32) {
        if !self.free.remove(&slot) {
            while self.next <= slot {
                if self.next < slot {
                    self.free.insert(self.next);
                }
                self.next += 1;
            }
        }
        self.owners.insert(owner, slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_slot_first_and_reuse_after_release() {
        let mut a = SlotAlloc::new(3);
        assert_eq!(a.assign(10), Some((0, true)));
        assert_eq!(a.assign(20), Some((1, true)));
        assert_eq!(a.assign(10), Some((0, false)), "an owner keeps its slot");
        assert_eq!(a.assign(30), Some((2, true)));
        assert_eq!(a.assign(40), None, "full");
        assert_eq!(a.release(20), Some(1));
        assert_eq!(a.release(20), None);
        assert_eq!(a.assign(40), Some((1, true)), "the freed slot, fresh");
        assert_eq!(a.len(), 3);
    }

    #[test]
    fn take_undoes_release_and_assign_in_reverse_order() {
        let mut a = SlotAlloc::new(8);
        for id in [1, 2, 3] {
            a.assign(id);
        }
        // A batch frees 2's slot and gives it to 9; rollback undoes both.
        let s = a.release(2).unwrap();
        assert_eq!(a.assign(9), Some((s, true)));
        a.release(9);
        a.take(2, s);
        assert_eq!(a.get(2), Some(s));
        assert_eq!(a.get(9), None);
        assert_eq!(a.assign(4), Some((3, true)));
        // Taking a slot above the high-water mark keeps the ones between free.
        let mut b = SlotAlloc::new(8);
        b.take(7, 5);
        assert_eq!(b.assign(1), Some((0, true)));
        assert_eq!(b.assign(2), Some((1, true)));
        assert_eq!(
            (2..5)
                .map(|i| b.assign(10 + i).unwrap().0)
                .collect::<Vec<_>>(),
            [2, 3, 4]
        );
        assert_eq!(b.assign(20), Some((6, true)));
    }

    #[test]
    fn rebuild_keeps_slots_fills_holes_and_reports_conflicts() {
        let (mut a, conflicts) =
            SlotAlloc::rebuild(4, [(100, 0), (200, 2), (300, 2), (400, 9), (100, 3)]);
        assert_eq!(conflicts, [300, 400]);
        assert_eq!(a.get(100), Some(0));
        assert_eq!(a.get(200), Some(2));
        assert_eq!(a.assign(300), Some((1, true)), "the hole first");
        assert_eq!(a.assign(400), Some((3, true)));
        assert_eq!(a.assign(500), None);
    }
}
