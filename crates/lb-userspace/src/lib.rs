//! The userspace (pnet) dataplane with the same semantics as the eBPF one.
//!
//! Work in progress (issue 5): nothing is exported yet.
