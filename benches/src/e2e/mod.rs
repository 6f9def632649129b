//! The end-to-end benchmark (`cargo run --release -p lb-benches --bin e2e`):
//! a client namespace, a node namespace and backend "pods" (lb-testkit's
//! topology) with HTTP servers, measured with wrk and iperf3 through
//! - `direct`: straight to a pod IP, no load balancer (the physical limit),
//! - `ebpf-tc` / `ebpf-sock`: lb-ebpf's tc programs on the node's
//!   client-facing device, and its socket LB for a client process in a
//!   child cgroup on the node,
//! - `iptables` / `nftables`: kube-proxy's rule sets from [`crate::kubeproxy`],
//!
//! for the same services ([`scenario`]), interleaved over rounds.

pub mod http;
pub mod load;
pub mod report;
pub mod scenario;
pub mod storm;
