//! The agent's input side as a library: reading manifests ([`manifests`]),
//! translating Kubernetes objects to lb-core services ([`translate`]) and
//! isolating bad input ([`sources`]). The `lb-agent` binary uses these
//! modules; the fuzz targets under `fuzz/` drive them with arbitrary input.

pub mod capacity;
pub mod manifests;
pub mod sources;
pub mod translate;
