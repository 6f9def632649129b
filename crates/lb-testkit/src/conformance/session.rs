//! [`Session`]: drives one dataplane under test next to lb-core's oracle and
//! checks every frame it sends.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use lb_core::{
    decide, BackendId, DesiredState, FlowContext, FlowKey, FlowState, L4Proto, LbAlgorithm,
    NodeConfig, ReconcileError, Reconciler, Scope, Selection, Service, Verdict,
};

use super::dut::{AsDataplane, DataplaneUnderTest, Direction, Features, PacketCtx, PacketResult};
use super::reference::{classify, endpoints, rewrite, Class};
use crate::packets::PacketBuilder;

/// One dataplane, the reconciler that programs it, and the oracle's flow
/// state. Every `send` is compared with [`lb_core::decide`].
pub struct Session<'a> {
    /// The dataplane.
    pub dut: &'a mut dyn DataplaneUnderTest,
    /// Programs the dataplane; its tables are the oracle's.
    pub rec: Reconciler,
    /// The node.
    pub node: NodeConfig,
    /// The oracle's connection tracking and affinity.
    pub flows: FlowState,
    /// What the dataplane supports.
    pub features: Features,
    /// The current time (seconds).
    pub now: u64,
    entropy: u64,
    /// Reply tuples the dataplane gave flows (SNATed, and DNATed ones:
    /// client port kept or remapped): by tuple and by flow.
    snat_owner: HashMap<SnatTuple, FlowKey>,
    snat_of: HashMap<FlowKey, SnatTuple>,
}

/// (protocol, backend, source address and port the backend sees): a
/// flow's reply tuple.
type SnatTuple = (L4Proto, SocketAddr, IpAddr, u16);

/// What happened to one frame sent to a frontend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The oracle's verdict (after following the dataplane's random choice
    /// when it cannot take entropy); `Pass` for frames that are not an IPv4
    /// TCP/UDP flow (ignored or malformed: see `out`).
    pub verdict: Verdict,
    /// The frame the dataplane let through, if any.
    pub out: Option<Vec<u8>>,
}

impl Sent {
    /// The backend the frame was forwarded to.
    pub fn backend(&self) -> Option<SocketAddr> {
        match self.verdict {
            Verdict::Forward(f) => Some(SocketAddr::new(f.backend.addr, f.backend.port)),
            _ => None,
        }
    }
}

impl<'a> Session<'a> {
    /// A session over `dut` for `node`.
    pub fn new(dut: &'a mut dyn DataplaneUnderTest, node: NodeConfig) -> Self {
        let features = dut.features();
        Session {
            dut,
            rec: Reconciler::new(),
            node,
            flows: FlowState::new(),
            features,
            now: 1000,
            entropy: 0x9e37_79b9_7f4a_7c15,
            snat_owner: HashMap::new(),
            snat_of: HashMap::new(),
        }
    }

    /// Reconciles `services` into the dataplane.
    pub fn apply(&mut self, services: &[Service]) -> Result<usize, ReconcileError> {
        let desired = DesiredState::build(&self.node, services)?;
        self.rec.apply(&mut AsDataplane(&mut *self.dut), &desired)
    }

    /// Like [`Session::apply`], panicking on error.
    pub fn program(&mut self, services: &[Service]) {
        if let Err(e) = self.apply(services) {
            panic!("{}: apply: {e}", self.dut.name());
        }
    }

    /// Forgets flows in the dataplane and the oracle.
    pub fn reset_flows(&mut self) {
        self.dut.reset_flows();
        self.flows = FlowState::new();
        self.snat_owner.clear();
        self.snat_of.clear();
    }

    /// Checks the source port a dataplane gave a SNATed flow (lb-core's
    /// model leaves it to the dataplane): an established flow keeps its
    /// port, and no two flows the oracle tracks share a reply tuple.
    fn check_snat_port(&mut self, key: &FlowKey, f: &lb_core::Forward, port: u16) {
        let name = self.dut.name();
        let (Some(snat), backend) = (f.snat, SocketAddr::new(f.backend.addr, f.backend.port))
        else {
            return;
        };
        let tuple = (key.proto, backend, snat, port);
        if f.selection == Selection::Established {
            if let Some(prev) = self.snat_of.get(key) {
                assert_eq!(
                    *prev, tuple,
                    "{name}: established flow {key:?} changed its SNAT tuple"
                );
                return;
            }
        }
        if let Some(owner) = self.snat_owner.get(&tuple) {
            let live = owner != key
                && self.flows.ct.contains_key(owner)
                && self.snat_of.get(owner) == Some(&tuple);
            assert!(
                !live,
                "{name}: {key:?} got the SNAT tuple {tuple:?} of the live flow {owner:?}: \
                 replies cannot tell them apart"
            );
        }
        if let Some(old) = self.snat_of.insert(*key, tuple) {
            if self.snat_owner.get(&old) == Some(key) {
                self.snat_owner.remove(&old);
            }
        }
        self.snat_owner.insert(tuple, *key);
    }

    /// Records that the DNATed flow `key` kept the client's port: it holds
    /// that reply tuple (the newest such flow does, in lb-core's model).
    fn record_dnat_tuple(&mut self, key: &FlowKey, f: &lb_core::Forward) {
        let backend = SocketAddr::new(f.backend.addr, f.backend.port);
        let tuple = (key.proto, backend, key.src, key.sport);
        if let Some(old) = self.snat_of.insert(*key, tuple) {
            if old != tuple && self.snat_owner.get(&old) == Some(key) {
                self.snat_owner.remove(&old);
            }
        }
        self.snat_owner.insert(tuple, *key);
    }

    /// Checks the other source port a dataplane gave a DNATed flow
    /// (lb-ebpf's `lb_ctport.h`, lb-userspace's `alloc_remap_port`):
    /// allowed only when the flow's own reply tuple (backend → client:port)
    /// is another flow's, as with one client port to two frontends of one
    /// backend; an established flow keeps its port, and no two flows the
    /// oracle tracks share a reply tuple.
    fn check_remap(&mut self, key: &FlowKey, f: &lb_core::Forward, port: u16) {
        let name = self.dut.name();
        let backend = SocketAddr::new(f.backend.addr, f.backend.port);
        let tuple = (key.proto, backend, key.src, port);
        if f.selection == Selection::Established {
            if let Some(prev) = self.snat_of.get(key) {
                assert_eq!(
                    *prev, tuple,
                    "{name}: established flow {key:?} changed its source port"
                );
                return;
            }
        }
        let own = (key.proto, backend, key.src, key.sport);
        assert!(
            self.snat_owner.get(&own).is_some_and(|o| o != key),
            "{name}: {key:?} got source port {port} towards {backend} though no other \
             flow holds its reply tuple {own:?}"
        );
        if let Some(owner) = self.snat_owner.get(&tuple) {
            let live = owner != key
                && self.flows.ct.contains_key(owner)
                && self.snat_of.get(owner) == Some(&tuple);
            assert!(
                !live,
                "{name}: {key:?} was remapped to the reply tuple {tuple:?} of the live flow \
                 {owner:?}"
            );
        }
        if let Some(old) = self.snat_of.insert(*key, tuple) {
            if self.snat_owner.get(&old) == Some(key) {
                self.snat_owner.remove(&old);
            }
        }
        self.snat_owner.insert(tuple, *key);
    }

    fn next_entropy(&mut self) -> u32 {
        // splitmix64
        self.entropy = self.entropy.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.entropy;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) as u32
    }

    /// Sends `frame` towards the frontends with fresh entropy and checks the
    /// result against the oracle: untouched for `Pass`, dropped for `Drop`,
    /// and for `Forward` exactly the reference rewrite (addresses, ports,
    /// checksums; every other byte the same).
    pub fn send(&mut self, frame: &[u8]) -> Sent {
        let ctx = PacketCtx {
            now: self.now,
            entropy: self.next_entropy(),
        };
        self.send_with(frame, ctx)
    }

    /// [`Session::send`] with the given time and entropy.
    pub fn send_with(&mut self, frame: &[u8], ctx: PacketCtx) -> Sent {
        let name = self.dut.name();
        let got = self.dut.process(Direction::ToFrontend, frame, ctx);
        let key = match classify(frame) {
            Class::Flow(key) => key,
            Class::Ignore => {
                assert_eq!(
                    got,
                    PacketResult::Accept(frame.to_vec()),
                    "{name}: ignored frame changed"
                );
                return Sent {
                    verdict: Verdict::Pass,
                    out: Some(frame.to_vec()),
                };
            }
            Class::Malformed => {
                assert_eq!(
                    got,
                    PacketResult::Drop,
                    "{name}: malformed frame not dropped"
                );
                return Sent {
                    verdict: Verdict::Pass,
                    out: None,
                };
            }
        };
        let fctx = FlowContext {
            now: ctx.now,
            entropy: ctx.entropy,
            scope: Scope::External,
        };
        let before = self.flows.clone();
        let mut verdict = decide(self.rec.current(), &self.node, &mut self.flows, &key, fctx);
        if !self.features.entropy {
            if let Some(v) = self.follow_random_choice(&key, &verdict, &got, before, fctx) {
                verdict = v;
            }
        }
        match verdict {
            Verdict::Pass => {
                assert_eq!(
                    got,
                    PacketResult::Accept(frame.to_vec()),
                    "{name}: {key:?} should pass untouched"
                );
                Sent {
                    verdict,
                    out: Some(frame.to_vec()),
                }
            }
            Verdict::Drop { .. } => {
                assert_eq!(
                    got,
                    PacketResult::Drop,
                    "{name}: {key:?} should be dropped ({verdict:?})"
                );
                Sent { verdict, out: None }
            }
            Verdict::Forward(f) => {
                assert!(
                    f.snat.is_none() || self.features.snat,
                    "{name}: the scenario needs SNAT, which this dataplane does not do: declare it unsupported"
                );
                let dst = SocketAddr::new(f.backend.addr, f.backend.port);
                let PacketResult::Accept(out) = got else {
                    panic!("{name}: {key:?} should be forwarded to {dst} but was dropped");
                };
                if let Some(encap) = f.encap {
                    let (outer_src, outer_dst) = encap.outer();
                    let want = super::reference::encap(frame, encap, f.backend.port)
                        .expect("reference encapsulation");
                    assert_eq!(
                        out, want,
                        "{name}: {key:?}: DSR to {dst} must leave unchanged inside {encap:?} \
                         {outer_src} -> {outer_dst} (oracle {f:?})"
                    );
                    return Sent {
                        verdict,
                        out: Some(out),
                    };
                }
                // The source port of a SNATed flow is the dataplane's
                // choice; a DNATed one keeps the client's unless its reply
                // tuple is another flow's (`check_remap`).
                let sport = match (f.snat, classify(&out)) {
                    (Some(_), Class::Flow(k)) => {
                        self.check_snat_port(&key, &f, k.sport);
                        k.sport
                    }
                    (None, Class::Flow(k)) if k.sport != key.sport && k.src == key.src => {
                        self.check_remap(&key, &f, k.sport);
                        k.sport
                    }
                    (None, _) => {
                        self.record_dnat_tuple(&key, &f);
                        key.sport
                    }
                    _ => key.sport,
                };
                let src = SocketAddr::new(f.snat.unwrap_or(key.src), sport);
                let want = rewrite(frame, src, dst).expect("reference rewrite");
                assert_eq!(
                    classify(&out),
                    classify(&want),
                    "{name}: {key:?} forwarded to the wrong place (oracle {f:?})"
                );
                assert_eq!(
                    out, want,
                    "{name}: {key:?}: headers or checksums differ from the reference"
                );
                Sent {
                    verdict,
                    out: Some(out),
                }
            }
        }
    }

    /// For a dataplane with its own randomness: when the oracle chose a new
    /// backend at random and the dataplane another selectable one, record
    /// the dataplane's choice in the oracle and return the matching verdict.
    fn follow_random_choice(
        &mut self,
        key: &FlowKey,
        verdict: &Verdict,
        got: &PacketResult,
        before: FlowState,
        fctx: FlowContext,
    ) -> Option<Verdict> {
        let Verdict::Forward(f) = verdict else {
            return None;
        };
        if f.selection != Selection::New {
            return None;
        }
        let tables = self.rec.current();
        let fe = tables.frontends.get(&f.service)?;
        if fe.algorithm != LbAlgorithm::Random {
            return None;
        }
        let PacketResult::Accept(out) = got else {
            return None;
        };
        let Class::Flow(k) = classify(out) else {
            return None;
        };
        let chosen = tables
            .backends
            .values()
            .find(|b| b.addr.addr == k.dst && b.addr.port == k.dport)?;
        if chosen.id == f.backend_id {
            return None;
        }
        assert!(
            fe.selectable_backends()
                .iter()
                .any(|s| s.id == chosen.id && s.weight > 0),
            "{}: {key:?} went to {}, which is not selectable",
            self.dut.name(),
            chosen.addr
        );
        // Replay the decision with entropy that picks the dataplane's backend.
        self.flows = before;
        let entropy = entropy_for(fe.selectable_backends(), chosen.id)?;
        Some(decide(
            tables,
            &self.node,
            &mut self.flows,
            key,
            FlowContext { entropy, ..fctx },
        ))
    }

    /// Sends the backend's reply to a frame this session forwarded (`out` of
    /// [`Sent`]) and checks that it comes back from the frontend the client
    /// used to the client. Returns the rewritten reply.
    pub fn reply(&mut self, client_frame: &[u8], forwarded: &[u8]) -> Vec<u8> {
        let name = self.dut.name();
        let (Class::Flow(orig), Class::Flow(fwd)) = (classify(client_frame), classify(forwarded))
        else {
            panic!("reply() needs two IPv4 TCP/UDP frames");
        };
        let (backend, target) = (
            SocketAddr::new(fwd.dst, fwd.dport),
            SocketAddr::new(fwd.src, fwd.sport),
        );
        let reply = frame(orig.proto, backend, target);
        let got = self.dut.process(
            Direction::Reply,
            &reply,
            PacketCtx {
                now: self.now,
                entropy: 0,
            },
        );
        let (client, frontend) = endpoints(&orig);
        let want = rewrite(&reply, frontend, client).expect("reference rewrite");
        assert_eq!(
            got,
            PacketResult::Accept(want.clone()),
            "{name}: reply of {orig:?} not reverse-NATed"
        );
        want
    }

    /// Sends a frame and its reply; returns the backend (`None` if not forwarded).
    pub fn roundtrip(&mut self, frame: &[u8]) -> Option<SocketAddr> {
        let sent = self.send(frame);
        if let (Some(out), Some(_)) = (&sent.out, sent.backend()) {
            self.reply(frame, out);
        }
        sent.backend()
    }

    /// Sends `frame` from the backends' side at the session's time and
    /// returns what the dataplane made of it, unchecked (for frames lb-core's
    /// model has no answer for, such as ICMP errors).
    pub fn process_reply(&mut self, frame: &[u8]) -> PacketResult {
        self.dut.process(
            Direction::Reply,
            frame,
            PacketCtx {
                now: self.now,
                entropy: 0,
            },
        )
    }

    /// The name of the dataplane under test.
    pub fn dut_name(&self) -> String {
        self.dut.name()
    }

    /// Sends a reply no flow expects and checks it passes untouched.
    pub fn stray_reply(&mut self, frame: &[u8]) {
        let got = self.dut.process(
            Direction::Reply,
            frame,
            PacketCtx {
                now: self.now,
                entropy: 0,
            },
        );
        assert_eq!(
            got,
            PacketResult::Accept(frame.to_vec()),
            "{}: stray reply changed",
            self.dut.name()
        );
    }
}

/// Entropy that makes weighted random selection pick `id` from `slots`.
fn entropy_for(slots: &[lb_core::BackendSlot], id: BackendId) -> Option<u32> {
    let mut start = 0u32;
    for s in slots {
        if s.id == id && s.weight > 0 {
            return Some(start);
        }
        start += u32::from(s.weight);
    }
    None
}

/// A TCP SYN or UDP frame with a 5-byte payload.
pub fn frame(proto: L4Proto, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let b = match proto {
        L4Proto::Udp => PacketBuilder::udp(src, dst),
        _ => PacketBuilder::tcp(src, dst).syn(),
    };
    b.payload(b"hello").build().expect("valid frame")
}

/// A TCP SYN frame `src` → `dst` (`ADDR:PORT` strings).
pub fn tcp(src: &str, dst: &str) -> Vec<u8> {
    frame(L4Proto::Tcp, sa(src), sa(dst))
}

/// A UDP frame `src` → `dst`.
pub fn udp(src: &str, dst: &str) -> Vec<u8> {
    frame(L4Proto::Udp, sa(src), sa(dst))
}

/// Parses `ADDR:PORT`.
pub fn sa(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| panic!("bad socket address {s:?}"))
}
