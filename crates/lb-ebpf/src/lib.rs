//! The eBPF dataplane: lb-core's model compiled onto tc programs and BPF
//! maps, loaded with aya (issue 4, first slice: IPv4, tc, no SNAT).
//!
//! * `bpf/lb_abi.h` defines every map layout; [`abi`] mirrors it.
//! * [`loader`] loads `bpf/lb_tc.c`, pins maps and TCX links under a bpffs
//!   directory and re-opens them on a second load; [`loader::cleanup`] detaches.
//! * [`maps`] opens the pinned maps with typed aya wrappers.
//! * [`EbpfDataplane`] implements [`lb_core::Dataplane`] by writing those maps.

#![warn(missing_docs)]

pub mod abi;
mod clock;
pub mod dataplane;
pub mod loader;
pub mod maps;

pub use clock::now_secs;
pub use dataplane::EbpfDataplane;
pub use loader::{cleanup, load, LoadError, LoadOptions, Loaded, MapCapacity};
pub use maps::Maps;
