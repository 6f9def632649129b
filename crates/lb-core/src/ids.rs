//! Identifiers the dataplane keys its tables by, and their deterministic,
//! stable allocation.
//!
//! As in Cilium, every programmed frontend (address, port, protocol, scope)
//! has a [`ServiceId`] and a [`RevNatId`] of the same value, and every distinct
//! backend address has one [`BackendId`] shared by all services using it.
//! An identifier stays the same for as long as its key exists, the same
//! history always produces the same identifiers, and a freed identifier is
//! reused only after the allocator has gone round the whole space (see
//! [`IdAllocator`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::ConfigError;

/// Identifies one programmed frontend (Cilium's service ID). Never 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ServiceId(pub u32);

/// Identifies the reverse-NAT entry of a frontend; equal to its [`ServiceId`]. Never 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RevNatId(pub u32);

/// Identifies one backend address across all services. Never 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct BackendId(pub u32);

impl ServiceId {
    /// The reverse-NAT ID paired with this service.
    pub const fn rev_nat(self) -> RevNatId {
        RevNatId(self.0)
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for RevNatId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Hands out identifiers in `1..=max` per key and keeps each while its key is live.
///
/// New identifiers come from a cursor that only moves forward (wrapping at
/// `max`), so a freed identifier is not handed out again until every other
/// one has been: a dataplane entry that still names a removed backend (a
/// connection-tracking entry, say) never silently starts pointing at a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdAllocator<K: Ord + Clone> {
    kind: &'static str,
    max: u32,
    by_key: BTreeMap<K, u32>,
    used: BTreeSet<u32>,
    cursor: u32,
}

impl<K: Ord + Clone> IdAllocator<K> {
    /// An empty allocator for identifiers `1..=max`; `kind` names the space in errors.
    pub fn new(kind: &'static str, max: u32) -> Self {
        IdAllocator {
            kind,
            max,
            by_key: BTreeMap::new(),
            used: BTreeSet::new(),
            cursor: 1,
        }
    }

    /// The identifier of `key`, if it has one.
    pub fn get(&self, key: &K) -> Option<u32> {
        self.by_key.get(key).copied()
    }

    /// The identifier of `key`, allocating the next free one if needed.
    pub fn acquire(&mut self, key: &K) -> Result<u32, ConfigError> {
        if let Some(id) = self.get(key) {
            return Ok(id);
        }
        if self.used.len() as u64 >= u64::from(self.max) {
            return Err(ConfigError::IdsExhausted {
                kind: self.kind,
                max: self.max,
            });
        }
        let mut id = self.cursor;
        while self.used.contains(&id) {
            id = if id >= self.max { 1 } else { id + 1 };
        }
        self.cursor = if id >= self.max { 1 } else { id + 1 };
        self.used.insert(id);
        self.by_key.insert(key.clone(), id);
        Ok(id)
    }

    /// Records that `key` already holds `id` (restoring state a dataplane
    /// kept across a restart). New identifiers then start after the highest
    /// restored one. Fails if `id` is out of range or held by another key.
    pub fn restore(&mut self, key: &K, id: u32) -> Result<(), ConfigError> {
        if id == 0 || id > self.max || (self.used.contains(&id) && self.get(key) != Some(id)) {
            return Err(ConfigError::IdConflict {
                kind: self.kind,
                id,
            });
        }
        if let Some(old) = self.by_key.insert(key.clone(), id) {
            self.used.remove(&old);
        }
        self.used.insert(id);
        if id >= self.cursor {
            self.cursor = if id >= self.max { 1 } else { id + 1 };
        }
        Ok(())
    }

    /// Starts a tentative allocation on top of this allocator: identifiers
    /// handed out by the preview are not taken here until
    /// [`IdAllocator::commit_preview`] (used by the incremental reconciler).
    pub(crate) fn preview(&self) -> IdPreview<'_, K> {
        IdPreview {
            base: self,
            cursor: self.cursor,
            added: BTreeMap::new(),
            taken: BTreeSet::new(),
        }
    }

    /// Makes a preview's allocations real and frees `removed` keys.
    pub(crate) fn commit_preview(&mut self, preview: IdDelta<K>, removed: &[K]) {
        for k in removed {
            if let Some(id) = self.by_key.remove(k) {
                self.used.remove(&id);
            }
        }
        for (k, id) in preview.added {
            self.used.insert(id);
            self.by_key.insert(k, id);
        }
        self.cursor = preview.cursor;
    }

    /// Frees every identifier whose key `keep` rejects.
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        let used = &mut self.used;
        self.by_key.retain(|k, id| {
            let kept = keep(k);
            if !kept {
                used.remove(id);
            }
            kept
        });
    }

    /// Number of identifiers in use.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True when no identifier is in use.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// A tentative allocation over an [`IdAllocator`]; see [`IdAllocator::preview`].
#[derive(Debug)]
pub(crate) struct IdPreview<'a, K: Ord + Clone> {
    base: &'a IdAllocator<K>,
    cursor: u32,
    added: BTreeMap<K, u32>,
    taken: BTreeSet<u32>,
}

/// What a preview allocated, detached from its allocator.
#[derive(Debug, Clone)]
pub(crate) struct IdDelta<K> {
    cursor: u32,
    added: BTreeMap<K, u32>,
}

impl<K: Ord + Clone> IdPreview<'_, K> {
    /// The identifier of `key`: its existing one, or the next free one.
    pub(crate) fn acquire(&mut self, key: &K) -> Result<u32, ConfigError> {
        if let Some(id) = self.base.get(key).or_else(|| self.added.get(key).copied()) {
            return Ok(id);
        }
        let max = self.base.max;
        if (self.base.used.len() + self.taken.len()) as u64 >= u64::from(max) {
            return Err(ConfigError::IdsExhausted {
                kind: self.base.kind,
                max,
            });
        }
        let mut id = self.cursor;
        while self.base.used.contains(&id) || self.taken.contains(&id) {
            id = if id >= max { 1 } else { id + 1 };
        }
        self.cursor = if id >= max { 1 } else { id + 1 };
        self.taken.insert(id);
        self.added.insert(key.clone(), id);
        Ok(id)
    }

    /// Detaches the allocations for a later commit.
    pub(crate) fn into_delta(self) -> IdDelta<K> {
        IdDelta {
            cursor: self.cursor,
            added: self.added,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_not_reused_early() {
        let mut ids = IdAllocator::new("test", 3);
        assert_eq!(ids.acquire(&"a").unwrap(), 1);
        assert_eq!(ids.acquire(&"b").unwrap(), 2);
        assert_eq!(ids.acquire(&"a").unwrap(), 1);
        ids.retain(|k| *k != "a");
        // 1 is free again, but 3 has never been used: it comes first.
        assert_eq!(ids.acquire(&"c").unwrap(), 3);
        assert_eq!(ids.acquire(&"d").unwrap(), 1);
        assert!(matches!(
            ids.acquire(&"e"),
            Err(ConfigError::IdsExhausted { max: 3, .. })
        ));
        assert_eq!(ids.get(&"b"), Some(2));
    }

    /// Service ids are 32 bits: the allocator goes past 65535.
    #[test]
    fn service_ids_go_past_16_bits() {
        let mut ids = IdAllocator::new("service", crate::MAX_SERVICE_ID);
        ids.restore(&"a", u32::from(u16::MAX)).unwrap();
        assert_eq!(ids.acquire(&"b").unwrap(), 65_536);
        ids.restore(&"c", 1 << 24).unwrap();
        assert_eq!(ids.acquire(&"d").unwrap(), (1 << 24) + 1);
    }
}
