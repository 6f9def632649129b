//! # lb-userspace
//!
//! The userspace load-balancing dataplane: the same semantics as the eBPF
//! one (`crates/lb-ebpf/bpf/lb_tc.c`) and as lb-core's oracle
//! [`lb_core::flow::decide`], run on frames in a process.
//!
//! * [`tables`]: ops are validated all-or-nothing under a mutex and
//!   published as immutable snapshots with `arc-swap`.
//! * [`path`]: the per-worker packet path — parse ([`packet`]), decide,
//!   rewrite in place with incremental checksums; connection tracking and
//!   affinity in [`ct`]; counters in [`counters`].
//! * [`io`]: moves frames between network devices and the packet path;
//!   [`tcx`] keeps the kernel from also forwarding them.
//!
//! IPv4 and IPv6, TCP and UDP, for every frontend type, dual-stack
//! services included (each family's frontends reach that family's
//! backends; SNAT uses the node address of the backend's family). IPv6
//! hop-by-hop, routing (no segments left) and destination-options headers
//! are skipped to the L4 header as lb-ebpf does; fragments and other
//! extension headers pass untouched ([`packet`]). NAT46/64
//! ([`lb_core::nat46x64`], off unless the node config turns it on): a
//! frontend served by backends of the other family gets its packets
//! translated between IPv4 and IPv6 both ways ([`nat46x64`]); the caller
//! gives the path a buffer with room for the bigger header
//! ([`PacketPath::process_in`]). ICMP and ICMPv6 errors about a flow
//! (destination unreachable, fragmentation needed / packet too big, time
//! exceeded) reach its client translated back to what it sent, as
//! lb-ebpf's `lb_icmp.h` does; for a NAT46/64 flow the error is translated
//! to the client's family (RFC 7915, [`nat46x64_icmp`]).
//!
//! Load-balancer modes ([`lb_core::LbMode`]): SNAT, DSR and hybrid. A flow
//! lb-core sends with DSR leaves unchanged inside IPIP, or IPv6-in-IPv6 for
//! an IPv6 flow ([`dsr`], the same bytes as lb-ebpf's), which needs
//! [`dsr::OVERHEAD`] ([`dsr::OVERHEAD6`] for IPv6) bytes of the caller's
//! buffer past the frame ([`PacketPath::process_in`]; without them the
//! frame is dropped and counted as [`DropKind::Unsupported`]). The backend's
//! side of DSR (decapsulation and reply translation) is lb-ebpf's
//! `lb_dsr_backend.c` (`lb-agent dsr-backend`).
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod afpacket;
pub mod counters;
pub mod ct;
pub mod dataplane;
pub mod dsr;
pub mod gso;
pub mod io;
pub mod nat46x64;
pub mod nat46x64_icmp;
pub mod packet;
pub mod path;
pub mod rng;
pub mod tables;
pub mod tcx;

pub use counters::{Counters, DropKind, ServiceStats};
pub use dataplane::{Config, UserspaceDataplane};
pub use path::{Direction, Outcome, PacketMeta, PacketPath};
