//! Backend selection for new flows: [`LbAlgorithm::Random`] (weighted, with
//! injected entropy) and [`LbAlgorithm::Maglev`] (consistent hashing).

pub mod maglev;
pub mod random;

use std::fmt;
use std::str::FromStr;

use crate::{BackendId, Frontend};

pub use maglev::{MaglevConfig, MAGLEV_TABLE_SIZES};

/// How a frontend picks a backend for a new flow (Cilium's `--bpf-lb-algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum LbAlgorithm {
    /// Weighted random choice among the selectable backends.
    #[default]
    Random,
    /// Maglev consistent hashing of the flow's 5-tuple.
    Maglev,
}

impl LbAlgorithm {
    /// The lower-case name (`random`, `maglev`).
    pub const fn as_str(self) -> &'static str {
        match self {
            LbAlgorithm::Random => "random",
            LbAlgorithm::Maglev => "maglev",
        }
    }
}

impl fmt::Display for LbAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LbAlgorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "random" => Ok(LbAlgorithm::Random),
            "maglev" => Ok(LbAlgorithm::Maglev),
            _ => Err(format!(
                "unknown backend selection {s:?}: expected random or maglev"
            )),
        }
    }
}

/// Picks the backend for a new flow of `frontend`.
///
/// `flow_hash` is [`crate::FlowKey::hash`] under the node's Maglev seed;
/// `entropy` is the caller's random number (injected so tests are
/// deterministic). Returns `None` when nothing is selectable. Does not allocate.
pub fn select_backend(frontend: &Frontend, flow_hash: u32, entropy: u32) -> Option<BackendId> {
    if frontend.selectable == 0 {
        return None;
    }
    match (frontend.algorithm, &frontend.maglev) {
        (LbAlgorithm::Maglev, Some(table)) if !table.is_empty() => {
            Some(table[(flow_hash % table.len() as u32) as usize])
        }
        (LbAlgorithm::Maglev, _) => None,
        (LbAlgorithm::Random, _) => random::select(frontend.selectable_backends(), entropy),
    }
}
