//! The eBPF dataplane: lb-core's model compiled onto tc programs, cgroup
//! socket programs and BPF maps, loaded with aya (issue 4; IPv4 and IPv6).
//!
//! * `bpf/lb_abi.h` defines every map layout; [`abi`] mirrors it.
//! * [`loader`] loads `bpf/lb_tc.c` (DNAT, connection tracking, SNAT to the
//!   node IP for remote backends, ICMP and ICMPv6 error translation), pins maps and TCX
//!   links under a bpffs directory and re-opens them on a second load;
//!   [`loader::cleanup`] detaches.
//! * with [`LoadOptions::with_cgroup`], `bpf/lb_sock.c` (connect, sendmsg,
//!   recvmsg, getpeername; IPv4 and IPv6, [`SOCK_HOOKS`]) balances the
//!   sockets of that cgroup's processes.
//! * [`maps`] opens the pinned maps with typed aya wrappers.
//! * [`EbpfDataplane`] implements [`lb_core::Dataplane`] by writing those maps
//!   (IPv4 frontends into the `lb4_*` maps, IPv6 ones into the `lb6_*` maps;
//!   a frontend with backends of the other family, NAT46/64, is translated
//!   by the tc datapath when [`lb_core::NodeConfig::nat46x64`] is on, see
//!   below),
//!   and [`EbpfDataplane::restore`] reads them back after an agent restart;
//!   [`EbpfDataplane::gc`] expires idle flows; [`EbpfDataplane::counters`]
//!   reads drop, service and backend counters.
//! * load-balancer modes ([`lb_core::LbMode`]): in DSR and hybrid mode the
//!   tc ingress program sends flows to remote backends inside IPIP
//!   (`bpf/lb_dsr.h`), IPv6 ones inside IPv6-in-IPv6 (`bpf/lb_dsr6.h`,
//!   with ICMPv6 Packet Too Big for a packet that no longer fits), and
//!   [`dsr::BackendSide`] attaches the backend's half
//!   (`bpf/lb_dsr_backend.c`, both families) to a backend's device.
//! * [`xdp`] accelerates external traffic to remote backends at XDP
//!   (`bpf/lb_xdp.c`, native or generic mode, IPv4 and IPv6, SNAT and DSR)
//!   over the same maps.
//! * NAT46/64 ([`lb_core::nat46x64`], off by default: open the dataplane
//!   with [`lb_core::NodeConfig::nat46x64`] on and a node address of each
//!   family): an IPv4 frontend served by IPv6 backends, or the reverse. The
//!   control plane marks such a frontend ([`abi::SVC_F_NAT46X64`]; its
//!   slots name backends of the other family's map) and refuses one that
//!   mixes families; the tc ingress program (`bpf/lb_nat46.h`) chooses the
//!   backend as for any flow, always SNATs to the node's address of the
//!   backend's family, records the flow in the client family's CT map and
//!   the reverse entry in the backend family's SNAT map, translates the
//!   packet (RFC 7915 style: `bpf_skb_change_proto`, a new IP header, the
//!   L4 checksum fixed for the new pseudo-header, a zero IPv4 UDP checksum
//!   computed) and redirects it through the FIB; replies are translated
//!   back to the client: they are addressed to the node, so they must
//!   arrive through a device the programs are attached to (load them on the
//!   devices towards local backends too). XDP passes such frontends'
//!   packets to tc. Not
//!   done: ICMP/ICMPv6 errors about translated flows pass untranslated, the
//!   TCP MSS is not clamped (with equal MTUs the advertised MSS fits both
//!   families; a full-size IPv4 datagram grows by 20 bytes as IPv6 and is
//!   dropped over the route's MTU, without an ICMP error), and IPv4 UDP
//!   datagrams without a checksum longer than 9216 bytes are dropped.

#![warn(missing_docs)]

pub mod abi;
mod batch;
mod cgroup;
mod clock;
pub mod dataplane;
pub mod dsr;
mod family;
mod gc;
pub mod loader;
pub mod maps;
mod nat46;
mod restore;
mod retry;
mod shadow;
mod slots;
pub mod xdp;

pub use cgroup::SOCK_HOOKS;
pub use clock::now_secs;
pub use dataplane::EbpfDataplane;
pub use gc::{CtTimeouts, GcStats};
pub use loader::{cleanup, load, LoadError, LoadOptions, Loaded, MapCapacity};
pub use maps::Maps;
