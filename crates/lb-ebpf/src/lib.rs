//! The eBPF dataplane: lb-core's model compiled onto tc, XDP and cgroup
//! socket-LB programs and their maps, loaded with aya.
//!
//! Work in progress (issue 4): nothing is exported yet.
