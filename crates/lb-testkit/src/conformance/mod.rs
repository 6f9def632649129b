//! One conformance suite for every dataplane.
//!
//! A dataplane implements [`DataplaneUnderTest`] (apply ops; process one
//! frame in a [`Direction`]; reset flow state). [`run_suite`] builds one per
//! [`Scenario`] and drives it through a [`Session`], which compares every
//! frame with lb-core's oracle [`lb_core::decide`] and a reference rewrite
//! ([`reference::rewrite`]): same verdict, same bytes. A scenario the
//! dataplane cannot run is declared by [`DataplaneUnderTest::unsupported`]
//! with a reason; the [`Report`] lists it and the caller asserts the list —
//! nothing is skipped silently.
//!
//! ```
//! use lb_testkit::conformance::{run_suite, OracleDataplane, Scenario};
//! let report = run_suite(|setup| OracleDataplane::new(setup));
//! // lb-core's model keeps the client's port, SNATed or not.
//! // It has no ICMP either.
//! report.assert_unsupported(&[
//!     Scenario::SnatPortCollision,
//!     Scenario::ReplyTupleClash,
//!     Scenario::SnatPortCollisionV6,
//!     Scenario::IcmpErrors,
//!     Scenario::Nat46x64Icmp,
//! ]);
//! assert_eq!(report.passed.len(), Scenario::ALL.len() - 5);
//! ```
//!
//! # Writing an adapter for a kernel dataplane
//!
//! lb-ebpf (`crates/lb-ebpf/tests/common/dut.rs`): build the dataplane for
//! [`Setup`] (its node, `capacity.backends` as the backends map size) in a
//! network namespace whose routes send remote backends through a device
//! listed in `lb_devices`, run [`DataplaneUnderTest::process`] there with
//! `BPF_PROG_TEST_RUN` on the ingress program ([`Direction::ToFrontend`],
//! and replies addressed to the node IP, i.e. of SNATed flows) or the
//! egress program (other [`Direction::Reply`]s), and map `TC_ACT_OK` and
//! `TC_ACT_REDIRECT` to `Accept(output)` and `TC_ACT_SHOT` to `Drop`. It
//! takes neither entropy nor time from the caller, so its [`Features`] have
//! `entropy` and `clock` `false`; the suite then follows its random choices
//! (checking they are selectable), and it declares
//! [`Scenario::AffinityTimeout`] (kernel clock) and [`Scenario::ShortFrames`]
//! (test-run refuses such frames) unsupported, with those reasons. Traces
//! for it come from [`trace::record_opts`] with
//! [`trace::Recording::DETERMINISTIC`].
//!
//! [`trace`] replays recorded packet traces through several dataplanes and
//! compares their outputs frame by frame (the differential test).

pub mod dut;
pub mod oracle;
pub mod reference;
pub mod reference_icmp;
pub mod scenarios;
pub mod scenarios_icmp;
pub mod scenarios_nat46x64;
pub mod scenarios_nat46x64_icmp;
pub mod scenarios_v6;
pub mod session;
pub mod trace;

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

pub use dut::{
    AsDataplane, DataplaneUnderTest, Direction, Drops, Features, PacketCtx, PacketResult, Setup,
};
pub use oracle::OracleDataplane;
pub use session::{Sent, Session};

/// Every scenario of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scenario {
    /// ClusterIP, TCP and UDP, with reverse NAT of replies.
    ClusterIp,
    /// NodePort on the node IP.
    NodePortNodeIp,
    /// NodePort through the wildcard entry.
    NodePortWildcard,
    /// LoadBalancer ingress IP.
    LoadBalancer,
    /// externalIPs.
    ExternalIp,
    /// HostPort.
    HostPort,
    /// ClientIP session affinity.
    Affinity,
    /// Affinity expiry (needs an injectable clock).
    AffinityTimeout,
    /// Maglev: same 5-tuple, same backend, equal to the oracle.
    MaglevStability,
    /// Weighted random selection (exact with injectable entropy).
    WeightedRandom,
    /// Terminating backends keep established flows only.
    GracefulTermination,
    /// Removed backends lose their flows.
    BackendRemoval,
    /// A batch over capacity is refused whole.
    Capacity,
    /// loadBalancerSourceRanges.
    SourceRanges,
    /// externalTrafficPolicy Local.
    TrafficPolicyLocal,
    /// internalTrafficPolicy Local on a ClusterIP; Cluster uses every backend.
    InternalTrafficPolicyLocal,
    /// Maglev weighted by table entries; weight 0 takes no new flow.
    WeightedMaglev,
    /// Topology-aware routing: zone hints and PreferClose on a node in a zone.
    ZoneHints,
    /// SNAT of flows to remote backends.
    SnatRemoteBackend,
    /// Two clients with one source port SNATed to one remote backend: each
    /// flow gets a source port (reply tuple) of its own, and its own replies.
    SnatPortCollision,
    /// One client port to two frontends of one local backend: the second
    /// flow gets another source port towards the backend, and each flow its
    /// own replies.
    ReplyTupleClash,
    /// DSR mode: remote backends reached in IPIP (IPv6 ones in
    /// IPv6-in-IPv6), ClusterIP still SNAT.
    DsrRemoteBackend,
    /// Hybrid mode: DSR for TCP, SNAT for UDP.
    HybridMode,
    /// Traffic not for a frontend passes untouched.
    UnknownTraffic,
    /// Malformed packets dropped and counted.
    MalformedPackets,
    /// Frames shorter than an Ethernet or IPv4 header (`BPF_PROG_TEST_RUN`
    /// refuses to run such frames).
    ShortFrames,
    /// ClusterIP over IPv6, TCP and UDP.
    ClusterIpV6,
    /// NodePort on `[::]`: the node's IPv6 address and the wildcard.
    NodePortV6,
    /// LoadBalancer ingress IPv6 address.
    LoadBalancerV6,
    /// externalIPs over IPv6.
    ExternalIpV6,
    /// HostPort on `[::]`.
    HostPortV6,
    /// Maglev over IPv6 5-tuples.
    MaglevV6,
    /// ClientIP affinity of IPv6 clients.
    AffinityV6,
    /// SNAT of IPv6 flows to remote backends (node IPv6 address).
    SnatRemoteBackendV6,
    /// Two IPv6 clients with one source port SNATed to one remote backend.
    SnatPortCollisionV6,
    /// A dual-stack service: each family to its own backends.
    DualStack,
    /// IPv6 frames dropped (broken headers) or passed (extension headers).
    MalformedPacketsV6,
    /// NAT46: IPv4 frontends served by IPv6 backends (node with NAT46/64 on).
    Nat46,
    /// NAT64: IPv6 frontends served by IPv4 backends (node with NAT46/64 on).
    Nat64,
    /// NAT46/64 off: an IPv4 frontend with only IPv6 backends has none.
    Nat46x64Off,
    /// ICMP errors about DNATed and SNATed IPv4 flows, and ICMPv6 errors
    /// about IPv6 ones, reach the client translated ([`scenarios_icmp`]).
    IcmpErrors,
    /// ICMPv6 errors about NAT46 flows reach the IPv4 client as ICMPv4
    /// errors, and ICMPv4 errors about NAT64 flows the IPv6 client as
    /// ICMPv6 ones ([`scenarios_nat46x64_icmp`]).
    Nat46x64Icmp,
}

impl Scenario {
    /// All scenarios, in the order the suite runs them.
    pub const ALL: [Scenario; 42] = [
        Scenario::ClusterIp,
        Scenario::NodePortNodeIp,
        Scenario::NodePortWildcard,
        Scenario::LoadBalancer,
        Scenario::ExternalIp,
        Scenario::HostPort,
        Scenario::Affinity,
        Scenario::AffinityTimeout,
        Scenario::MaglevStability,
        Scenario::WeightedRandom,
        Scenario::GracefulTermination,
        Scenario::BackendRemoval,
        Scenario::Capacity,
        Scenario::SourceRanges,
        Scenario::TrafficPolicyLocal,
        Scenario::InternalTrafficPolicyLocal,
        Scenario::WeightedMaglev,
        Scenario::ZoneHints,
        Scenario::SnatRemoteBackend,
        Scenario::SnatPortCollision,
        Scenario::ReplyTupleClash,
        Scenario::DsrRemoteBackend,
        Scenario::HybridMode,
        Scenario::UnknownTraffic,
        Scenario::MalformedPackets,
        Scenario::ShortFrames,
        Scenario::ClusterIpV6,
        Scenario::NodePortV6,
        Scenario::LoadBalancerV6,
        Scenario::ExternalIpV6,
        Scenario::HostPortV6,
        Scenario::MaglevV6,
        Scenario::AffinityV6,
        Scenario::SnatRemoteBackendV6,
        Scenario::SnatPortCollisionV6,
        Scenario::DualStack,
        Scenario::MalformedPacketsV6,
        Scenario::Nat46,
        Scenario::Nat64,
        Scenario::Nat46x64Off,
        Scenario::IcmpErrors,
        Scenario::Nat46x64Icmp,
    ];

    /// True for the scenarios with IPv6 traffic ([`scenarios_v6`]); their
    /// node has an IPv6 address too.
    pub const fn uses_ipv6(self) -> bool {
        matches!(
            self,
            Scenario::ClusterIpV6
                | Scenario::NodePortV6
                | Scenario::LoadBalancerV6
                | Scenario::ExternalIpV6
                | Scenario::HostPortV6
                | Scenario::MaglevV6
                | Scenario::AffinityV6
                | Scenario::SnatRemoteBackendV6
                | Scenario::SnatPortCollisionV6
                | Scenario::DualStack
                | Scenario::MalformedPacketsV6
                | Scenario::Nat46
                | Scenario::Nat64
                | Scenario::Nat46x64Off
                | Scenario::DsrRemoteBackend
                | Scenario::IcmpErrors
                | Scenario::Nat46x64Icmp
        )
    }

    /// True for the NAT46/64 scenarios ([`scenarios_nat46x64`]); they also
    /// use IPv6 ([`Scenario::uses_ipv6`]).
    pub const fn uses_nat46x64(self) -> bool {
        matches!(
            self,
            Scenario::Nat46 | Scenario::Nat64 | Scenario::Nat46x64Off | Scenario::Nat46x64Icmp
        )
    }

    /// Runs the scenario on a session (panics on a difference).
    pub fn run(self, s: &mut Session) {
        use scenarios::*;
        match self {
            Scenario::ClusterIp => cluster_ip(s),
            Scenario::NodePortNodeIp => node_port_node_ip(s),
            Scenario::NodePortWildcard => node_port_wildcard(s),
            Scenario::LoadBalancer => load_balancer(s),
            Scenario::ExternalIp => external_ip(s),
            Scenario::HostPort => host_port(s),
            Scenario::Affinity => affinity(s),
            Scenario::AffinityTimeout => affinity_timeout(s),
            Scenario::MaglevStability => maglev_stability(s),
            Scenario::WeightedRandom => weighted_random(s),
            Scenario::GracefulTermination => graceful_termination(s),
            Scenario::BackendRemoval => backend_removal(s),
            Scenario::Capacity => capacity(s),
            Scenario::SourceRanges => source_ranges(s),
            Scenario::TrafficPolicyLocal => traffic_policy_local(s),
            Scenario::InternalTrafficPolicyLocal => internal_traffic_policy_local(s),
            Scenario::WeightedMaglev => weighted_maglev(s),
            Scenario::ZoneHints => zone_hints(s),
            Scenario::SnatRemoteBackend => snat_remote_backend(s),
            Scenario::SnatPortCollision => snat_port_collision(s),
            Scenario::ReplyTupleClash => reply_tuple_clash(s),
            Scenario::DsrRemoteBackend => dsr_remote_backend(s),
            Scenario::HybridMode => hybrid_mode(s),
            Scenario::UnknownTraffic => unknown_traffic(s),
            Scenario::MalformedPackets => malformed_packets(s),
            Scenario::ShortFrames => short_frames(s),
            Scenario::ClusterIpV6 => scenarios_v6::cluster_ip_v6(s),
            Scenario::NodePortV6 => scenarios_v6::node_port_v6(s),
            Scenario::LoadBalancerV6 => scenarios_v6::load_balancer_v6(s),
            Scenario::ExternalIpV6 => scenarios_v6::external_ip_v6(s),
            Scenario::HostPortV6 => scenarios_v6::host_port_v6(s),
            Scenario::MaglevV6 => scenarios_v6::maglev_v6(s),
            Scenario::AffinityV6 => scenarios_v6::affinity_v6(s),
            Scenario::SnatRemoteBackendV6 => scenarios_v6::snat_remote_backend_v6(s),
            Scenario::SnatPortCollisionV6 => scenarios_v6::snat_port_collision_v6(s),
            Scenario::DualStack => scenarios_v6::dual_stack(s),
            Scenario::MalformedPacketsV6 => scenarios_v6::malformed_packets_v6(s),
            Scenario::Nat46 => scenarios_nat46x64::nat46(s),
            Scenario::Nat64 => scenarios_nat46x64::nat64(s),
            Scenario::Nat46x64Off => scenarios_nat46x64::nat46x64_off(s),
            Scenario::IcmpErrors => scenarios_icmp::icmp_errors(s),
            Scenario::Nat46x64Icmp => scenarios_nat46x64_icmp::nat46x64_icmp(s),
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The result of [`run_suite`].
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The dataplane's name.
    pub dataplane: String,
    /// Scenarios that passed.
    pub passed: Vec<Scenario>,
    /// Scenarios the dataplane declared it cannot run, with the reason.
    pub unsupported: Vec<(Scenario, String)>,
}

impl Report {
    /// Asserts that exactly `expected` were declared unsupported.
    pub fn assert_unsupported(&self, expected: &[Scenario]) {
        let got: Vec<Scenario> = self.unsupported.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            got, expected,
            "{}: unsupported scenarios: {:?}",
            self.dataplane, self.unsupported
        );
    }

    /// Asserts that exactly `unsupported` were declared unsupported and
    /// every other scenario of [`Scenario::ALL`] passed, in order.
    pub fn assert_all_passed_except(&self, unsupported: &[Scenario]) {
        self.assert_unsupported(unsupported);
        let expected: Vec<Scenario> = Scenario::ALL
            .into_iter()
            .filter(|s| !unsupported.contains(s))
            .collect();
        assert_eq!(self.passed, expected, "{}: passed", self.dataplane);
    }
}

/// Runs every scenario on a fresh dataplane from `make`, prints what passed
/// and what was declared unsupported, and panics listing every failure.
pub fn run_suite<D, F>(mut make: F) -> Report
where
    D: DataplaneUnderTest,
    F: FnMut(&Setup) -> D,
{
    let mut report = Report::default();
    let mut failures = Vec::new();
    for scenario in Scenario::ALL {
        let setup = scenarios::setup(scenario);
        let mut dut = make(&setup);
        report.dataplane = dut.name();
        if let Some(reason) = dut.unsupported(scenario) {
            println!(
                "conformance [{}] {scenario}: UNSUPPORTED: {reason}",
                report.dataplane
            );
            report.unsupported.push((scenario, reason));
            continue;
        }
        let result = catch_unwind(AssertUnwindSafe(|| {
            let mut session = Session::new(&mut dut, setup.node.clone());
            scenario.run(&mut session);
        }));
        match result {
            Ok(()) => {
                println!("conformance [{}] {scenario}: ok", report.dataplane);
                report.passed.push(scenario);
            }
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                println!(
                    "conformance [{}] {scenario}: FAILED: {msg}",
                    report.dataplane
                );
                failures.push(format!("{scenario}: {msg}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{}: {} scenario(s) failed:\n{}",
        report.dataplane,
        failures.len(),
        failures.join("\n")
    );
    report
}
