//! Privileged test fixtures for the load balancer: the one place that knows
//! how to build and tear down network namespaces, veth links, whole
//! client/node/backend topologies, cgroups, bpffs mounts, and how to build
//! and check raw packets.
//!
//! # Rules the fixtures follow
//!
//! * Every resource is a guard: it is created by a constructor and destroyed
//!   in `Drop`, so cleanup also happens when a test panics (unwinds).
//! * Every name is unique across the threads of one test process *and*
//!   across processes: resources are named `lbt-<label>-<pid>-<counter>`,
//!   interface names come from [`unique_name`] (≤ 15 bytes).
//! * Nothing touches the root network namespace: veth pairs are only ever
//!   created between namespaces owned by a [`NetNs`], so no namespace has a
//!   route out of the machine.
//! * Commands run inside a namespace via `nsenter --net=/var/run/netns/NAME`
//!   (never `ip netns exec`, which remounts `/sys` and hides `/sys/fs/bpf`
//!   and the cgroup tree).
//! * Privileged tests call [`require_privileges`] first; it panics loudly
//!   when the environment cannot run them. Privileged tests never skip.
//!
//! # Modules
//!
//! * [`netns`]: [`NetNs`], thread-local `setns` guards, child/thread helpers.
//! * [`veth`]: [`VethPair`] / [`Link`] and address/route/sysctl helpers.
//! * [`topology`]: [`Topology`], client ↔ node ↔ N backends.
//! * [`cgroup`]: [`CgroupGuard`] on the cgroup v2 hierarchy.
//! * [`bpffs`]: [`BpffsGuard`] and [`ensure_bpffs`].
//! * [`privileges`]: [`require_root`], [`require_privileges`].
//! * [`packets`]: Ethernet/IPv4/IPv6/TCP/UDP/ICMP builders, parser and
//!   checksum verification (pure, no privileges needed).
//! * [`servers`]: tiny TCP/UDP echo servers running inside a namespace.
//! * [`load`]: a load client counting every request's outcome per backend.
//! * [`conformance`]: one scenario suite and packet-trace replay for every
//!   dataplane (lb-core's in-memory oracle, lb-userspace, lb-ebpf).

#![warn(missing_docs)]

pub mod bpffs;
pub mod cgroup;
pub mod conformance;
pub mod dsr_topology;
pub mod load;
pub mod nat46x64_lab;
pub mod netns;
pub mod packets;
pub mod privileges;
pub mod servers;
pub mod topology;
pub mod veth;

use std::sync::atomic::{AtomicU64, Ordering};

pub use bpffs::{ensure_bpffs, is_bpffs, BpffsError, BpffsGuard, BPF_FS_MAGIC};
pub use cgroup::{cgroup2_mount, CgroupError, CgroupGuard};
pub use netns::{ChildGuard, NetNs, NetnsError, NsGuard, NsThread};
pub use packets::{
    internet_checksum, parse, parse_ip, verify_checksums, verify_checksums_strict,
    verify_ip_checksums, ChecksumError, IcmpBuilder, IpProto, PacketBuilder, PacketError,
    ParseError, ParsedPacket, TcpFlags,
};
pub use privileges::{check_privileges, cleanup_stale, require_privileges, require_root};
pub use servers::{
    tcp_connect, tcp_request, tcp_request_from, udp_request, udp_request_from, EchoServer,
};
pub use topology::{Topology, TopologyBackend};
pub use veth::{format_mac, parse_mac, Link, VethBuilder, VethPair};

/// A 48-bit Ethernet MAC address.
pub type MacAddr = [u8; 6];

/// Maximum length of a Linux interface name (`IFNAMSIZ - 1`).
pub const MAX_IFNAME_LEN: usize = 15;

/// Prefix of every namespace, cgroup and bpffs directory created by this crate.
pub const RESOURCE_PREFIX: &str = "lbt";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Next value of the process-wide counter shared by all unique names.
pub(crate) fn next_counter() -> u64 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

fn base36(mut n: u64, min_width: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    while out.len() < min_width {
        out.push(b'0');
    }
    out.reverse();
    out.into_iter().map(char::from).collect()
}

/// Returns a name unique across threads and processes that always fits in a
/// Linux interface name (≤ [`MAX_IFNAME_LEN`] bytes).
///
/// Layout: `prefix` (cut to what fits) + the pid in base36 padded to 5 digits
/// (pids are < 2^22 < 36^5) + a process-wide counter in base36. Only ASCII
/// alphanumerics, `-` and `_` of `prefix` are kept.
pub fn unique_name(prefix: &str) -> String {
    let pid = base36(u64::from(std::process::id()), 5);
    let ctr = base36(next_counter(), 1);
    let room = MAX_IFNAME_LEN.saturating_sub(pid.len() + ctr.len());
    let prefix: String = prefix
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(room)
        .collect();
    format!("{prefix}{pid}{ctr}")
}

/// Name for a long-lived resource (namespace, cgroup, bpffs dir):
/// `lbt-<label>-<pid>-<counter>` (or `lbt-<pid>-<counter>` for an empty label).
/// [`cleanup_stale`] recognises this shape to remove leftovers of dead processes.
pub(crate) fn resource_name(label: &str) -> String {
    let pid = std::process::id();
    let ctr = next_counter();
    if label.is_empty() {
        format!("{RESOURCE_PREFIX}-{pid}-{ctr}")
    } else {
        format!("{RESOURCE_PREFIX}-{label}-{pid}-{ctr}")
    }
}

/// If `name` has the shape produced by [`resource_name`], returns its pid.
pub(crate) fn resource_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(RESOURCE_PREFIX)?.strip_prefix('-')?;
    let mut parts = rest.rsplit('-');
    let ctr = parts.next()?;
    let pid = parts.next()?;
    ctr.parse::<u64>().ok()?;
    pid.parse::<u32>().ok()
}

/// True when `label` is acceptable inside a resource name.
pub(crate) fn valid_label(label: &str) -> bool {
    label
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_fit_ifnamsiz_and_differ() {
        let a = unique_name("veth");
        let b = unique_name("veth");
        assert_ne!(a, b);
        assert!(a.len() <= MAX_IFNAME_LEN, "{a}");
        let long = unique_name("a-very-long-prefix-that-cannot-fit");
        assert!(long.len() <= MAX_IFNAME_LEN, "{long}");
        let weird = unique_name("a/b c");
        assert!(weird.starts_with("abc"), "{weird}");
    }

    #[test]
    fn base36_encoding() {
        assert_eq!(base36(0, 1), "0");
        assert_eq!(base36(35, 1), "z");
        assert_eq!(base36(36, 1), "10");
        assert_eq!(base36(4_194_304, 5), "2hwcg");
        assert_eq!(base36(1, 5), "00001");
    }

    #[test]
    fn resource_names_round_trip_pid() {
        let n = resource_name("cli");
        assert_eq!(resource_pid(&n), Some(std::process::id()));
        let n = resource_name("");
        assert_eq!(resource_pid(&n), Some(std::process::id()));
        assert_eq!(resource_pid("lbt-x-y"), None);
        assert_eq!(resource_pid("other-1-2"), None);
        assert_eq!(resource_pid("lbt-be-0-42-7"), Some(42));
    }
}
