//! The lb-userspace adapter of the conformance suite.
#![allow(dead_code)]

pub mod io_rig;

use lb_core::{DataplaneError, Op, Scope};
use lb_testkit::conformance::{
    DataplaneUnderTest, Direction, Drops, PacketCtx, PacketResult, Scenario, Setup,
};
use lb_userspace::{Config, DropKind, PacketMeta, PacketPath, UserspaceDataplane};

/// lb-userspace with one worker; time and entropy come from the suite.
pub struct Userspace {
    pub dp: UserspaceDataplane,
    pub worker: PacketPath,
}

impl Userspace {
    pub fn new(setup: &Setup) -> Self {
        let config = Config {
            capacity: setup.capacity,
            flows: 65_536,
            ..Config::default()
        };
        let dp = UserspaceDataplane::new(setup.node.clone(), config);
        let worker = dp.worker_with_rng(lb_userspace::rng::FastRng::new(1));
        Userspace { dp, worker }
    }
}

impl DataplaneUnderTest for Userspace {
    fn name(&self) -> String {
        "lb-userspace".into()
    }

    fn unsupported(&self, _scenario: Scenario) -> Option<String> {
        None
    }

    fn apply(&mut self, ops: &[Op]) -> Result<(), DataplaneError> {
        self.dp.apply_ops(ops)
    }

    fn process(&mut self, dir: Direction, frame: &[u8], ctx: PacketCtx) -> PacketResult {
        let mut buf = frame.to_vec();
        let dir = match dir {
            Direction::ToFrontend => lb_userspace::Direction::ToFrontend,
            Direction::Reply => lb_userspace::Direction::Reply,
        };
        let meta = PacketMeta {
            now: ctx.now,
            entropy: ctx.entropy,
            scope: Scope::External,
        };
        // Room past the frame for a NAT46/64 translation or a DSR header.
        let len = buf.len();
        let room = lb_userspace::nat46x64::HEADROOM
            .max(lb_userspace::dsr::OVERHEAD)
            .max(lb_userspace::dsr::OVERHEAD6)
            .max(lb_userspace::nat46x64_icmp::HEADROOM);
        buf.resize(len + room, 0);
        let (outcome, len) = self.worker.process_in(&mut buf, len, dir, meta);
        buf.truncate(len);
        if outcome.keeps() {
            PacketResult::Accept(buf)
        } else {
            PacketResult::Drop
        }
    }

    fn reset_flows(&mut self) {
        self.worker.reset_flows();
    }

    fn drops(&self) -> Option<Drops> {
        let c = self.dp.counters();
        Some(Drops {
            malformed: c.drops(DropKind::Malformed),
            no_backend: c.drops(DropKind::NoBackend),
            no_local_backend: c.drops(DropKind::NoLocalBackend),
            source_range: c.drops(DropKind::SourceRange),
        })
    }
}
