//! The lb-ebpf adapter of the conformance suite
//! (`lb_testkit::conformance::DataplaneUnderTest`): `BPF_PROG_TEST_RUN` of
//! the tc programs, inside a network namespace whose routes make the remote
//! backends of the suite leave through a device listed in `lb_devices`, so
//! the SNAT path (FIB lookup, source-port allocation, FIB redirect) runs as
//! on a node. Privileged: [`Ebpf::new`] calls `require_privileges`.
#![allow(dead_code)]

use std::net::IpAddr;

use aya::programs::SchedClassifier;
use lb_core::{DataplaneError, Op};
use lb_ebpf::abi::DropReason;
use lb_ebpf::{EbpfDataplane, LoadOptions, Loaded, MapCapacity};
use lb_testkit::conformance::reference::{classify, Class};
use lb_testkit::conformance::{
    DataplaneUnderTest, Direction, Drops, Features, PacketCtx, PacketResult, Scenario, Setup,
};
use lb_testkit::{BpffsGuard, NetNs};

/// The device the remote backends are routed through: one end of a veth
/// pair inside the namespace. Nothing is ever sent (test runs do not
/// transmit), so its neighbours stay unresolved.
pub const DEV: &str = "lbdut0";
pub const PEER: &str = "lbdut1";
/// The device's address and the gateway of the backend routes.
const DEV_ADDR: &str = "172.31.255.1/30";
pub const GATEWAY: &str = "172.31.255.2";
/// Every backend of the suite and the traces is in 10/8; only remote ones
/// (lb-core's `Backend::local` false) are looked up in the FIB.
const BACKENDS: &str = "10.0.0.0/8";
/// The device's IPv6 address and the gateway of the IPv6 backend routes.
const DEV_ADDR6: &str = "fd00:ffff:ffff::1/64";
pub const GATEWAY6: &str = "fd00:ffff:ffff::2";
/// The IPv6 scenarios' remote backends (`fd00:2:B::N`, on another node);
/// their node-local ones are `fd00:1:B::N`.
const BACKENDS6: &str = "fd00:2::/32";
/// The SNAT source ports of the DUT. lb-core's oracle keeps the client's
/// port when it SNATs, and the scenarios' and traces' client ports (40000+)
/// lie below the default range (61000-65535), so the DUT widens it.
pub const SNAT_PORTS: std::ops::RangeInclusive<u16> = 32768..=65535;

/// `TC_ACT_OK`.
pub const TC_ACT_OK: u32 = 0;
/// `TC_ACT_SHOT`.
pub const TC_ACT_SHOT: u32 = 2;
/// `TC_ACT_REDIRECT` (the SNAT path's `bpf_redirect_neigh`).
pub const TC_ACT_REDIRECT: u32 = 7;

/// lb-ebpf under test: the programs and maps of one load, in a namespace of
/// their own.
pub struct Ebpf {
    loaded: Loaded,
    dp: EbpfDataplane,
    node_ips: Vec<IpAddr>,
    bpffs: BpffsGuard,
    netns: NetNs,
}

impl Ebpf {
    /// Loads the programs for `setup`: its node, and `capacity.backends`
    /// (`capacity.frontends`) as the size of the backends (services and
    /// reverse-NAT) map.
    pub fn new(setup: &Setup) -> Self {
        lb_testkit::require_privileges();
        let netns = NetNs::with_label("ebpf-dut").expect("netns");
        netns
            .ip(&["link", "add", DEV, "type", "veth", "peer", "name", PEER])
            .expect("veth pair");
        netns.add_addr(DEV, DEV_ADDR).expect("device address");
        netns.add_addr(DEV, DEV_ADDR6).expect("device IPv6 address");
        netns.link_up(PEER).expect("peer up");
        netns.link_up(DEV).expect("device up");
        netns
            .add_route(&format!("{BACKENDS} via {GATEWAY} dev {DEV}"))
            .expect("backend route");
        netns
            .add_route(&format!("{BACKENDS6} via {GATEWAY6} dev {DEV}"))
            .expect("IPv6 backend route");
        // bpf_fib_lookup() refuses to route for a device that does not forward.
        netns
            .set_sysctl("net.ipv4.ip_forward", "1")
            .expect("ip_forward");
        netns
            .set_sysctl("net.ipv6.conf.all.forwarding", "1")
            .expect("IPv6 forwarding");
        let bpffs = BpffsGuard::new().expect("bpffs");
        let mut opts = LoadOptions::new(bpffs.pin_path("lb"), &[DEV]);
        opts.capacity = MapCapacity {
            services: cap(setup.capacity.frontends),
            backends: cap(setup.capacity.backends),
            rev_nat: cap(setup.capacity.frontends),
            ct: 65_536,
            ..MapCapacity::default()
        };
        let loaded = netns
            .run_in(|| lb_ebpf::load(&opts))
            .expect("enter netns")
            .expect("load");
        let mut dp = EbpfDataplane::open(loaded.pin_dir(), &setup.node).expect("open dataplane");
        dp.set_snat_ports(SNAT_PORTS).expect("SNAT port range");
        Ebpf {
            loaded,
            dp,
            node_ips: setup.node.node_ips.clone(),
            bpffs,
            netns,
        }
    }

    /// The dataplane (maps, counters).
    pub fn dataplane(&mut self) -> &mut EbpfDataplane {
        &mut self.dp
    }

    /// The namespace the programs run in.
    pub fn netns(&self) -> &NetNs {
        &self.netns
    }

    /// The pin directory of the maps.
    pub fn pin_dir(&self) -> &std::path::Path {
        self.loaded.pin_dir()
    }

    /// One test run of `prog` in the namespace: (return value, output).
    fn run(netns: &NetNs, prog: &mut SchedClassifier, frame: &[u8]) -> (u32, Vec<u8>) {
        netns
            .run_in(|| crate::common::run(prog, frame))
            .expect("enter netns")
    }
}

fn cap(n: usize) -> u32 {
    u32::try_from(n).expect("capacity fits a map")
}

impl Drop for Ebpf {
    fn drop(&mut self) {
        if let Err(e) = lb_ebpf::cleanup(self.loaded.pin_dir()) {
            eprintln!("cleanup: {e}");
        }
    }
}

impl DataplaneUnderTest for Ebpf {
    fn name(&self) -> String {
        "lb-ebpf (BPF_PROG_TEST_RUN)".into()
    }

    /// The programs draw their own random numbers (`bpf_get_prandom_u32`)
    /// and read the kernel's clock; they SNAT.
    fn features(&self) -> Features {
        Features {
            entropy: false,
            clock: false,
            snat: true,
        }
    }

    fn unsupported(&self, scenario: Scenario) -> Option<String> {
        match scenario {
            Scenario::AffinityTimeout => Some(
                "affinity expiry reads the kernel's CLOCK_MONOTONIC_COARSE \
                 (bpf_ktime_get_coarse_ns); a test run cannot set it"
                    .into(),
            ),
            Scenario::MalformedPacketsV6 => Some(
                "BPF_PROG_TEST_RUN refuses (EINVAL) IPv6 frames shorter than an IPv6 \
                 header, one of this scenario's frames, so it never reaches the program \
                 (lb_parse6 drops it as malformed); tests/prog_run_v6.rs checks the \
                 scenario's other frames (bad version, TCP header cut short, fragment \
                 header, ICMPv6, SCTP) and extension headers"
                    .into(),
            ),
            Scenario::ShortFrames => Some(
                "BPF_PROG_TEST_RUN refuses (EINVAL) frames shorter than an Ethernet header, \
                 and IPv4 frames shorter than an IPv4 header, so they never reach the \
                 program; lb_parse4 passes the former and drops the latter"
                    .into(),
            ),
            _ => None,
        }
    }

    fn apply(&mut self, ops: &[Op]) -> Result<(), DataplaneError> {
        lb_core::Dataplane::apply(&mut self.dp, ops)
    }

    /// `ToFrontend` runs the ingress program. A reply addressed to a node
    /// IP (a remote backend answering a SNATed flow, or an ICMP error about
    /// one) arrives from the network, so it runs the ingress program too;
    /// every other reply leaves towards the client through the egress
    /// program.
    fn process(&mut self, dir: Direction, frame: &[u8], _ctx: PacketCtx) -> PacketResult {
        let to_node = match classify(frame) {
            Class::Flow(k) => self.node_ips.contains(&k.dst),
            // ICMP errors about SNATed flows are addressed to the node too.
            _ if frame.len() >= 34 && frame[12..14] == [0x08, 0x00] => {
                let dst: [u8; 4] = frame[30..34].try_into().expect("4 bytes");
                self.node_ips.contains(&IpAddr::from(dst))
            }
            // And ICMPv6 errors about SNATed IPv6 flows.
            _ if frame.len() >= 54 && frame[12..14] == [0x86, 0xdd] => {
                let dst: [u8; 16] = frame[38..54].try_into().expect("16 bytes");
                self.node_ips.contains(&IpAddr::from(dst))
            }
            _ => false,
        };
        let prog = match dir {
            Direction::ToFrontend => self.loaded.ingress(),
            Direction::Reply if to_node => self.loaded.ingress(),
            Direction::Reply => self.loaded.egress(),
        };
        let (rv, out) = Self::run(&self.netns, prog, frame);
        match rv {
            // A redirect is the SNAT path's bpf_redirect_neigh(): the frame
            // leaves through the route's device, its L2 header left to the
            // kernel's neighbour code.
            TC_ACT_OK | TC_ACT_REDIRECT => PacketResult::Accept(out),
            TC_ACT_SHOT => PacketResult::Drop,
            other => panic!("unexpected tc verdict {other}"),
        }
    }

    fn reset_flows(&mut self) {
        let maps = self.dp.maps();
        let ct: Vec<_> = maps.ct.keys().collect::<Result<_, _>>().expect("ct keys");
        for k in ct {
            maps.ct.remove(&k).expect("ct remove");
        }
        let aff: Vec<_> = maps
            .affinity
            .keys()
            .collect::<Result<_, _>>()
            .expect("affinity keys");
        for k in aff {
            maps.affinity.remove(&k).expect("affinity remove");
        }
        let snat: Vec<_> = maps
            .snat
            .keys()
            .collect::<Result<_, _>>()
            .expect("snat keys");
        for k in snat {
            maps.snat.remove(&k).expect("snat remove");
        }
        let ct6: Vec<_> = maps.ct6.keys().collect::<Result<_, _>>().expect("ct6 keys");
        for k in ct6 {
            maps.ct6.remove(&k).expect("ct6 remove");
        }
        let aff6: Vec<_> = maps
            .affinity6
            .keys()
            .collect::<Result<_, _>>()
            .expect("affinity6 keys");
        for k in aff6 {
            maps.affinity6.remove(&k).expect("affinity6 remove");
        }
        let snat6: Vec<_> = maps
            .snat6
            .keys()
            .collect::<Result<_, _>>()
            .expect("snat6 keys");
        for k in snat6 {
            maps.snat6.remove(&k).expect("snat6 remove");
        }
    }

    fn drops(&self) -> Option<Drops> {
        let c = self.dp.counters().expect("counters");
        Some(Drops {
            malformed: c.drops_for(DropReason::Malformed),
            no_backend: c.drops_for(DropReason::NoBackend),
            no_local_backend: c.drops_for(DropReason::NoLocalBackend),
            source_range: c.drops_for(DropReason::SourceRange),
        })
    }
}
