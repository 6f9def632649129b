//! # lb-core
//!
//! The sans-IO model of a layer-4 load balancer that replaces kube-proxy:
//! services and their frontends (ClusterIP, NodePort, LoadBalancer,
//! externalIPs, HostPort), backends and their lifecycle, random and Maglev
//! backend selection, ClientIP session affinity, traffic policies and source
//! ranges, and a reconciler that turns a desired state into the minimal,
//! safely ordered list of dataplane writes.
//!
//! This crate does no I/O, reads no clock and draws no randomness: time and
//! entropy are arguments, so everything here is deterministic and easy to
//! test. Dataplanes (`lb-ebpf`, `lb-userspace`, or [`MemoryDataplane`])
//! implement [`Dataplane`]; [`flow::decide`] is the per-packet oracle they
//! are tested against.
//!
//! Data flow: [`Service`]s + [`NodeConfig`] → [`DesiredState::build`]
//! (validate, expand) → [`Reconciler::plan`] (assign IDs, build Maglev
//! tables, [`diff`]) → [`Op`]s → [`Dataplane::apply`].
//!
//! ```
//! use lb_core::*;
//!
//! let node = NodeConfig::new("node-1", vec!["192.168.1.10".parse().unwrap()]);
//! let mut web = Service::new("default/web".parse().unwrap());
//! web.frontends.push(FrontendParams::new("10.96.0.10:80".parse().unwrap(), FrontendType::ClusterIp));
//! web.frontends.push(FrontendParams::new("0.0.0.0:30080".parse().unwrap(), FrontendType::NodePort));
//! for ip in ["10.0.1.5", "10.0.2.5"] {
//!     web.backends.push(BackendParams::new(format!("{ip}:8080").parse().unwrap()).on_node("node-1"));
//! }
//! let desired = DesiredState::build(&node, &[web]).unwrap();
//!
//! let mut dataplane = MemoryDataplane::new();
//! let mut reconciler = Reconciler::new();
//! reconciler.apply(&mut dataplane, &desired).unwrap();
//!
//! // Which backend does a new connection to the ClusterIP get?
//! let flow = FlowKey {
//!     src: "10.0.9.9".parse().unwrap(), sport: 40000,
//!     dst: "10.96.0.10".parse().unwrap(), dport: 80, proto: L4Proto::Tcp,
//! };
//! // Random selection: entropy 150 falls in the second half of the total weight 200.
//! let ctx = FlowContext { now: 0, entropy: 150, scope: Scope::External };
//! let mut flows = FlowState::new();
//! match flow::decide(dataplane.tables(), &node, &mut flows, &flow, ctx) {
//!     Verdict::Forward(f) => assert_eq!(f.backend.to_string(), "10.0.2.5:8080/TCP"),
//!     other => panic!("unexpected {other:?}"),
//! }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod addr;
mod backend;
mod builder;
mod dataplane;
mod desired;
mod error;
pub mod flow;
mod frontend;
pub mod hash;
mod ids;
pub mod mode;
pub mod nat46x64;
mod ops;
mod reconcile;
pub mod select;
mod service;
mod tables;
pub mod topology;

pub use addr::{HostPort, L3n4Addr, L4Proto, Scope};
pub use backend::{Backend, BackendParams, BackendState};
pub use builder::{Changes, DesiredBuilder};
pub use dataplane::{Capacity, Dataplane, MemoryDataplane};
pub use desired::{BackendPlacement, DesiredBackend, DesiredFrontend, DesiredState, NodeConfig};
pub use error::{ConfigError, DataplaneError, ParseError};
pub use flow::{
    decide, egress, DropReason, FlowContext, FlowKey, FlowState, Forward, Selection, Verdict,
};
pub use frontend::{BackendSlot, Frontend, FrontendKey, FrontendParams, FrontendType};
pub use ids::{BackendId, IdAllocator, RevNatId, ServiceId};
pub use mode::{Encap, LbMode, UnknownMode};
pub use nat46x64::Translation;
pub use ops::Op;
pub use reconcile::{diff, Plan, ReconcileError, Reconciler};
pub use select::{LbAlgorithm, MaglevConfig, MAGLEV_TABLE_SIZES};
pub use service::{Service, ServiceName, SessionAffinity, TrafficPolicy};
pub use tables::{Tables, MAX_BACKEND_ID, MAX_SERVICE_ID};
pub use topology::TrafficDistribution;

/// The README's example, compiled and run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
